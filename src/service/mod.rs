//! The process as a system service: what a service manager (systemd) hands the process and expects
//! back, and the conventions HAProxy and nginx follow once bound.
//!
//! - [`notify`]: `Type=notify`, `READY=1`, reload and stop notices, `STATUS=`, the watchdog.
//! - [`activation`]: listening sockets passed in by socket activation, matched to routes.
//! - [`upgrade`]: listening sockets handed from a running edgefwd to its successor (`--upgrade-from`).
//! - [`pidfile`]: `--pid-file`, written once every listener is bound, removed on exit.
//! - [`privilege`]: dropping root to `--user`/`--group` after binding, verified.
//! - [`after_bind`]: those two steps in their order, which `main` runs once the reactors are bound.
//! - [`check_directory`]: `--check` on a file the process creates once running (the pid file, the
//!   access log): its directory exists.
//!
//! systemd's two speak through environment variables, which [`from_env`] reads once at start, before any thread
//! exists, and unsets: nothing the process starts should take the sockets or speak for it.
//!
//! Nothing here knows about routes or the reactor (it uses no other module of the crate, so any layer
//! may use it): the reactor decides when to notify (`reactor/systemd.rs`) and which route a passed
//! socket serves.

pub(crate) mod activation;
pub mod after_bind;
pub(crate) mod notify;
pub mod pidfile;
pub(crate) mod privilege;
pub mod upgrade;

use std::env;
use std::path::Path;
use std::time::Instant;

use activation::Passed;
use notify::Notifier;

/// What the service manager handed over.
#[derive(Debug, Default)]
pub struct Handed {
    /// Where to send notices; `None` when not run under `Type=notify`.
    pub notifier: Option<Notifier>,
    /// Socket-activated listeners; empty when none were passed.
    pub passed: Vec<Passed>,
}

/// Reads and unsets the variables of both protocols. Call before any thread starts: it takes
/// ownership of the passed descriptors, and changes the environment.
pub fn from_env() -> Result<Handed, String> {
    let pid = std::process::id();
    let var = |name: &str| env::var(name).ok();
    let [listen_pid, listen_fds, names] = activation::VARIABLES.map(var);
    let [socket, usec, watchdog_pid] = notify::VARIABLES.map(var);
    for name in activation::VARIABLES.iter().chain(&notify::VARIABLES) {
        env::remove_var(name);
    }
    let passed = activation::take(
        listen_pid.as_deref(),
        listen_fds.as_deref(),
        names.as_deref(),
        pid,
    )?;
    let notifier = Notifier::from_vars(
        socket.as_deref(),
        usec.as_deref(),
        watchdog_pid.as_deref(),
        pid,
        Instant::now(),
    )
    .map_err(|notify::Unusable(message)| message)?;
    Ok(Handed { notifier, passed })
}

/// For `--check`, which creates nothing: the directory `path` (the `what` file) would be created in
/// exists.
pub(crate) fn check_directory(what: &str, path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "{what} {}: directory {} does not exist",
            path.display(),
            dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_check_directory() {
        assert!(check_directory("pid file", &env::temp_dir().join("edgefwd.pid")).is_ok());
        assert!(check_directory("pid file", Path::new("edgefwd.pid")).is_ok());
        let err = check_directory("pid file", Path::new("/no/such/dir/edgefwd.pid"))
            .expect_err("missing");
        assert_eq!(
            err,
            "pid file /no/such/dir/edgefwd.pid: directory /no/such/dir does not exist"
        );
    }
}
