//! RLIMIT_NOFILE. A load test or bench holds thousands of sockets (each client and each backend
//! connection is a descriptor), far past the usual soft limit of 1,024, so every harness raises its
//! own; children inherit the raised limit. A test that needs a forwarder to run out of fds lowers
//! the child's with prlimit(2) instead.

use std::io;

fn get() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

fn set(soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the struct we pass, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises this process's soft limit to its hard limit (which needs no privilege) and returns the
/// soft limit now in force: what the product itself does at start.
pub fn raise_to_hard() -> io::Result<u64> {
    edgefwd::reactor::fdlimit::raise_nofile_limit()
}

/// Raises this process's limit towards `want`: soft and, if needed, hard (which takes root with
/// CAP_SYS_RESOURCE, and `fs.nr_open` caps it); where the hard limit cannot be raised, the soft one
/// goes up to it. Returns the soft limit in force, and why it is below `want` if it is.
pub fn raise_towards(want: u64) -> (u64, Option<String>) {
    let lim = match get() {
        Ok(lim) => lim,
        Err(err) => return (0, Some(format!("getrlimit(RLIMIT_NOFILE): {err}"))),
    };
    if lim.rlim_cur >= want {
        return (lim.rlim_cur, None);
    }
    match set(want, lim.rlim_max.max(want)) {
        Ok(()) => (want, None),
        Err(err) => {
            let why = format!(
                "cannot raise RLIMIT_NOFILE from {}/{} to {want}: {err}",
                lim.rlim_cur, lim.rlim_max
            );
            match set(lim.rlim_max, lim.rlim_max) {
                Ok(()) => (lim.rlim_max, Some(why)),
                Err(_) => (lim.rlim_cur, Some(why)),
            }
        }
    }
}

/// Sets a running child's limit, soft and hard, to `limit` with prlimit(2). Done after the child
/// has started, so whatever it sized from its limit at start stays as it was while it can now run
/// out of descriptors for real (EMFILE).
pub fn set_for(pid: u32, limit: u64) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid does not fit pid_t"))?;
    let lim = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: limit as libc::rlim_t,
    };
    // SAFETY: prlimit(2) reads `lim` and writes nothing (null old limit). The callers pass their own
    // child, not yet reaped, so the pid cannot have been reused.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
