//! The steps between binding and running, in their order: write the `--pid-file` (the process is
//! reachable by it once every listener is bound), then drop to `--user`/`--group` (after the last
//! file the start opens as root, the pid file included). `main` asks for them by the flags, checks
//! what can be checked before binding, and runs [`AfterBind::run`] once the reactors are bound.

use std::path::PathBuf;

use super::pidfile::{self, PidFile};
use super::privilege::Identity;

/// The pid file to write and the identity to become once bound; either may be absent.
#[derive(Debug)]
pub struct AfterBind {
    pid_file: Option<PathBuf>,
    identity: Option<Identity>,
}

impl AfterBind {
    /// Looks `user` and `group` up; an unknown name is an error naming it (bad input).
    pub fn new(
        pid_file: Option<PathBuf>,
        user: Option<&str>,
        group: Option<&str>,
    ) -> Result<AfterBind, String> {
        let identity = user.map(|user| Identity::lookup(user, group)).transpose()?;
        Ok(AfterBind { pid_file, identity })
    }

    /// Before binding: the pid file names no running process (a start failure otherwise). A start
    /// with `--upgrade-from` skips this: its predecessor holds the file, and [`AfterBind::run`] checks
    /// once the predecessor's pid is known.
    pub fn check_free(&self) -> Result<(), String> {
        self.pid_file
            .as_deref()
            .map_or(Ok(()), |path| pidfile::check_free(path, None))
    }

    /// For `--check`, which writes nothing: the pid file's directory exists.
    pub fn check_paths(&self) -> Result<(), String> {
        self.pid_file
            .as_deref()
            .map_or(Ok(()), |path| super::check_directory("pid file", path))
    }

    /// Every listener is bound: writes the pid file (taking it from `predecessor`, the `--upgrade-from`
    /// process, if it names that one), then drops privileges. The pid file is removed when the returned
    /// guard drops (on exit, or at once when the drop fails and the start stops).
    pub fn run(&self, predecessor: Option<u32>) -> Result<Option<PidFile>, String> {
        let pid_file = self
            .pid_file
            .as_deref()
            .map(|path| PidFile::write(path, predecessor))
            .transpose()?;
        if let Some(identity) = &self.identity {
            identity.assume()?;
        }
        Ok(pid_file)
    }
}
