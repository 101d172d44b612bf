//! `--pid-file PATH`: the process's id, written once every listener is bound and removed on exit, so
//! that `kill -HUP "$(cat PATH)"` and init scripts find the running forwarder.
//!
//! Written as a sibling temporary file renamed over `PATH`, so a reader never sees a half-written
//! number. A file left by a process that died without removing it (a crash, `kill -9`) is stale and
//! replaced; one naming a live process is an error, because two forwarders sharing one pid file would
//! make every signal sent through it reach the wrong one. A process is live when `kill(pid, 0)` finds
//! it (`EPERM` included: it exists, under another user). The file is removed on exit only while it
//! still names this process, so a successor that already replaced it keeps its own. The one live
//! process a start may take the file from is its `--upgrade-from` predecessor (its pid learnt from the
//! kernel, `SO_PEERCRED` on the upgrade connection): that one is about to drain and exit.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use log::warn;

/// The pid file this process wrote; removing it is the drop's work.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's id to `path` atomically, unless the file names another live process than
    /// `predecessor`.
    pub(super) fn write(path: &Path, predecessor: Option<u32>) -> Result<PidFile, String> {
        check_free(path, predecessor)?;
        let pid = std::process::id();
        let staging = staging_path(path, pid);
        let written =
            fs::write(&staging, format!("{pid}\n")).and_then(|()| fs::rename(&staging, path));
        if let Err(err) = written {
            let _ = fs::remove_file(&staging);
            return Err(format!("cannot write pid file {}: {err}", path.display()));
        }
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    /// Removes the file if it still names this process. After `--user`, removing needs write access
    /// to its directory; without it the file stays, and the next start replaces it as stale.
    fn drop(&mut self) {
        if read_pid(&self.path) != Some(std::process::id()) {
            return;
        }
        if let Err(err) = fs::remove_file(&self.path) {
            warn!(
                "cannot remove pid file {}: {err} (the next start replaces it as stale)",
                self.path.display()
            );
        }
    }
}

/// Refuses `path` when it names a live process other than this one and `predecessor`; absent,
/// unreadable as a pid, or naming a process that is gone, it is free. `--check` and the start both ask.
pub(super) fn check_free(path: &Path, predecessor: Option<u32>) -> Result<(), String> {
    match read_pid(path) {
        Some(pid) if pid != std::process::id() && Some(pid) != predecessor && is_alive(pid) => Err(format!(
            "pid file {} names process {pid}, which is running: stop it first, or use another --pid-file",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// `PATH.PID.tmp` beside `path`: the same directory, so the rename is atomic.
fn staging_path(path: &Path, pid: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{pid}.tmp"));
    PathBuf::from(name)
}

/// The pid `path` holds: a positive decimal number, surrounded by white space or not.
fn read_pid(path: &Path) -> Option<u32> {
    let text = fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|pid| *pid > 0)
}

/// Whether a process `pid` exists.
fn is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 only checks that the process exists and may be signalled; it takes
    // plain integers and touches no memory. `pid` is positive, so it names one process, not a group.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("edgefwd-pidfile-{}-{tag}", std::process::id()))
    }

    /// Written whole with this pid, removed on drop, and no staging file left behind.
    #[test]
    fn test_written_then_removed() {
        let path = temp_path("write");
        let file = PidFile::write(&path, None).expect("write");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            format!("{}\n", std::process::id())
        );
        assert!(!staging_path(&path, std::process::id()).exists());
        drop(file);
        assert!(!path.exists(), "removed on drop");
    }

    /// A file naming a live process (pid 1 always is) is refused and kept; one naming a process that
    /// is gone, garbage, or this process itself is replaced.
    #[test]
    fn test_live_refused_stale_replaced() {
        let path = temp_path("live");
        fs::write(&path, "1\n").expect("write");
        let err = PidFile::write(&path, None).expect_err("pid 1 is live");
        assert!(
            err.contains("process 1") && err.contains(&*path.to_string_lossy()),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).expect("kept"), "1\n");
        for stale in [
            format!("{}\n", gone_pid()),
            "garbage".into(),
            std::process::id().to_string(),
        ] {
            fs::write(&path, &stale).expect("write");
            let file = PidFile::write(&path, None).unwrap_or_else(|err| panic!("{stale:?}: {err}"));
            assert_eq!(read_pid(&path), Some(std::process::id()), "{stale:?}");
            drop(file);
        }
    }

    /// The live process an upgrade takes over from (pid 1 stands in for it) gives the file up; any
    /// other live process still keeps it.
    #[test]
    fn test_predecessors_file_taken_over() {
        let path = temp_path("predecessor");
        fs::write(&path, "1\n").expect("write");
        assert!(PidFile::write(&path, Some(gone_pid())).is_err());
        let file = PidFile::write(&path, Some(1)).expect("the predecessor's file is taken over");
        assert_eq!(read_pid(&path), Some(std::process::id()));
        drop(file);
        assert!(!path.exists());
    }

    /// A file another process took over since is not removed.
    #[test]
    fn test_successors_file_kept() {
        let path = temp_path("successor");
        let file = PidFile::write(&path, None).expect("write");
        fs::write(&path, "1\n").expect("overwrite");
        drop(file);
        assert_eq!(fs::read_to_string(&path).expect("kept"), "1\n");
        fs::remove_file(&path).expect("clean up");
    }

    /// The pid of a child that has exited and been reaped: no process has it (until reused, which
    /// takes a full turn of the pid space).
    fn gone_pid() -> u32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        pid
    }
}
