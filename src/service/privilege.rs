//! `--user NAME [--group NAME]`: drop root once every listener is bound and every file the process
//! opens at start is open, as HAProxy and nginx do, so that a forwarder on port 80 does not forward as
//! root.
//!
//! The order is the one that works: supplementary groups (`setgroups`), then the group (`setgid`),
//! then the user (`setuid`) last, because after `setuid` the process may no longer change its groups.
//! glibc applies each call to every thread of the process (the worker threads already exist), and the
//! result is verified rather than trusted: real and effective ids are the asked ones, and `setuid(0)`
//! now fails. A drop that does not hold is an error, never a warning: a forwarder told to run as
//! `nobody` must not go on as root.
//!
//! What the drop means afterwards: a SIGHUP reload re-reads the `--config` file as that user (it must be
//! readable by it), and a reload that adds a listener on a port below 1024 cannot bind it and is
//! rejected with the running configuration kept.

use std::ffi::{CStr, CString};
use std::io;

use log::info;

/// The user and group to run as, looked up by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    user: String,
    uid: libc::uid_t,
    group: String,
    gid: libc::gid_t,
}

/// The most a passwd or group entry's strings may take before the lookup gives up (ERANGE doubles the
/// buffer up to this).
const MAX_ENTRY_BUFFER: usize = 1 << 20;

impl Identity {
    /// Looks `user` up, and `group` if given, else the user's primary group. An unknown name is an
    /// error naming it (a usage error: `main` exits 2).
    pub(crate) fn lookup(user: &str, group: Option<&str>) -> Result<Identity, String> {
        let (uid, primary_gid) =
            lookup_user(user)?.ok_or_else(|| format!("--user {user}: no such user"))?;
        let (group, gid) = match group {
            Some(name) => {
                let gid =
                    lookup_group(name)?.ok_or_else(|| format!("--group {name}: no such group"))?;
                (name.to_string(), gid)
            }
            None => (
                group_name(primary_gid)?.unwrap_or_else(|| primary_gid.to_string()),
                primary_gid,
            ),
        };
        Ok(Identity {
            user: user.to_string(),
            uid,
            group,
            gid,
        })
    }

    /// Becomes this user and group for good, or says why not. Already being exactly them (a process
    /// that is not root and was asked to be itself) is no error.
    pub(crate) fn assume(&self) -> Result<(), String> {
        if self.is_current() && !is_root() {
            return Ok(());
        }
        let fail = |step: &str, err: io::Error| {
            format!(
                "cannot drop privileges to user {} group {}: {step}: {err}",
                self.user, self.group
            )
        };
        let groups = [self.gid];
        // SAFETY: setgroups(2) reads `groups.len()` (1) gids from the pointer, a live local array.
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
            return Err(fail("setgroups", io::Error::last_os_error()));
        }
        // SAFETY: setgid(2) and setuid(2) take a plain integer and touch no memory.
        if unsafe { libc::setgid(self.gid) } != 0 {
            return Err(fail("setgid", io::Error::last_os_error()));
        }
        // SAFETY: as above.
        if unsafe { libc::setuid(self.uid) } != 0 {
            return Err(fail("setuid", io::Error::last_os_error()));
        }
        self.verify()?;
        info!(
            "running as user {} (uid {}) group {} (gid {})",
            self.user, self.uid, self.group, self.gid
        );
        Ok(())
    }

    /// Checks the drop held: the real and effective ids are ours, and root cannot be regained.
    fn verify(&self) -> Result<(), String> {
        if !self.is_current() {
            return Err(format!(
                "dropping privileges to user {} group {} did not hold (uid {} euid {} gid {} egid {}): refusing to run",
                self.user,
                self.group,
                // SAFETY: these getters take no argument and cannot fail.
                unsafe { libc::getuid() },
                unsafe { libc::geteuid() },
                unsafe { libc::getgid() },
                unsafe { libc::getegid() },
            ));
        }
        // SAFETY: setuid(2) takes a plain integer. It must fail here; if it succeeds the process is root
        // again, and the caller exits at once.
        if self.uid != 0 && unsafe { libc::setuid(0) } == 0 {
            return Err(format!(
                "after dropping to user {} the process could become root again: refusing to run",
                self.user
            ));
        }
        Ok(())
    }

    /// Whether the real and effective user and group ids are already these.
    fn is_current(&self) -> bool {
        // SAFETY: these getters take no argument and cannot fail.
        unsafe {
            libc::getuid() == self.uid
                && libc::geteuid() == self.uid
                && libc::getgid() == self.gid
                && libc::getegid() == self.gid
        }
    }
}

/// Whether the process runs with an effective uid of 0.
fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no argument and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `getpwnam_r`: the user's uid and primary gid, `None` when there is no such user.
fn lookup_user(name: &str) -> Result<Option<(libc::uid_t, libc::gid_t)>, String> {
    let c_name = c_string(name, "--user")?;
    lookup(name, |buf| {
        // SAFETY: an all-zero passwd is a valid value (integers and null pointers); getpwnam_r fills it.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is to a live local or to `buf`, whose length is passed with it; the
        // strings getpwnam_r stores point into `buf`, and only the integers are read back.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        (
            rc,
            (!found.is_null()).then_some((entry.pw_uid, entry.pw_gid)),
        )
    })
}

/// `getgrnam_r`: the group's gid, `None` when there is no such group.
fn lookup_group(name: &str) -> Result<Option<libc::gid_t>, String> {
    let c_name = c_string(name, "--group")?;
    lookup(name, |buf| {
        // SAFETY: an all-zero group is a valid value (integers and null pointers); getgrnam_r fills it.
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in `lookup_user`: live locals and `buf` with its length; only the gid is read.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        (rc, (!found.is_null()).then_some(entry.gr_gid))
    })
}

/// `getgrgid_r`: the name of group `gid`, for messages; `None` when it has none.
fn group_name(gid: libc::gid_t) -> Result<Option<String>, String> {
    lookup(&gid.to_string(), |buf| {
        // SAFETY: an all-zero group is a valid value (integers and null pointers); getgrgid_r fills it.
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in `lookup_user`: live locals and `buf` with its length.
        let rc =
            unsafe { libc::getgrgid_r(gid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
        // SAFETY: when found, `gr_name` points to a NUL-terminated string inside `buf`, which is alive
        // here; it is copied out before `buf` is reused or freed.
        let name = (!found.is_null() && !entry.gr_name.is_null()).then(|| {
            unsafe { CStr::from_ptr(entry.gr_name) }
                .to_string_lossy()
                .into_owned()
        });
        (rc, name)
    })
}

/// Runs a `get*nam_r` call with a buffer that doubles on ERANGE, up to [`MAX_ENTRY_BUFFER`].
fn lookup<T>(
    name: &str,
    mut call: impl FnMut(&mut [libc::c_char]) -> (libc::c_int, Option<T>),
) -> Result<Option<T>, String> {
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        match call(&mut buf) {
            (0, found) => return Ok(found),
            (libc::ERANGE, _) if buf.len() < MAX_ENTRY_BUFFER => buf.resize(buf.len() * 2, 0),
            (code, _) => {
                let err = io::Error::from_raw_os_error(code);
                return Err(format!("cannot look up '{name}': {err}"));
            }
        }
    }
}

fn c_string(name: &str, flag: &str) -> Result<CString, String> {
    CString::new(name).map_err(|_| format!("{flag} '{}': contains a NUL byte", name.escape_debug()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `root` is uid 0 everywhere; `nobody` is not root; unknown names are refused by name.
    #[test]
    fn test_lookup() {
        let root = Identity::lookup("root", None).expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.group, "root", "the primary group by its name");
        let nobody = Identity::lookup("nobody", Some("root")).expect("nobody exists");
        assert_ne!(nobody.uid, 0);
        assert_eq!(nobody.gid, 0);
        let err = Identity::lookup("no-such-user-edgefwd", None).expect_err("unknown user");
        assert_eq!(err, "--user no-such-user-edgefwd: no such user");
        let err = Identity::lookup("root", Some("no-such-group-edgefwd")).expect_err("unknown");
        assert_eq!(err, "--group no-such-group-edgefwd: no such group");
        assert!(Identity::lookup("a\0b", None).is_err());
    }

    /// Asked to be the identity it already has, a process that is not root changes nothing. (The real
    /// drop from root is tested on the binary, tests/service.rs, since it cannot be undone.)
    #[test]
    fn test_assume_self_when_not_root() {
        if is_root() {
            eprintln!("skipped: runs as root (the drop from root is tested in tests/service.rs)");
            return;
        }
        // SAFETY: these getters take no argument and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let me = Identity {
            user: "self".into(),
            uid,
            group: "self".into(),
            gid,
        };
        assert_eq!(me.assume(), Ok(()));
    }
}
