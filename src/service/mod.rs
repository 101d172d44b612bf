//! The conventions of a process run as a system service, at the edge between the operating system and
//! the forwarder: the `--pid-file` ([`pidfile`]) and dropping root after binding (`--user`, `--group`:
//! [`privilege`]).
//!
//! Nothing here knows about routes or the reactor: `main` runs [`after_bind`]'s steps at their moment
//! (the pid file once every listener is bound, then the drop), so these modules use std and libc only
//! and any layer may use them. docs/operations.md is the operator's side of the same story.

pub mod after_bind;
pub mod pidfile;
pub mod privilege;
