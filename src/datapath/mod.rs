//! Moving bytes: everything between a readable socket and a writable one.
//!
//! - [`ring`]: fixed-capacity byte ring with vectored I/O; storage borrowed from a pool while non-empty.
//! - [`readiness`]: one socket's cached readiness (edge-triggered: a bit is cleared only when a syscall
//!   proves it stale).
//! - [`pump`]: one direction, `src -> ring (or pipe) -> dst`, its state machine.
//! - [`splice`]: `--splice` zero-copy pipes (Linux).
//! - [`stream`]: the socket seam: what a pump and a pair need of a socket, as traits.
//! - [`unix`]: Unix domain listeners: the file's mode, stale files replaced, live ones refused.
//! - [`net`]: socket2 setup (listener, non-blocking connect, options) and `io::Error` -> outcome.
//! - [`budget`]: the process's fd budget, in slots of two fds, shared by pairs and pipes.
//! - [`sockmap`]: in-kernel forwarding through a BPF sockhash (Linux); measured, not wired into the
//!   reactor (docs/sockmap.md says why).

pub mod budget;
pub(crate) mod net;
pub(crate) mod pump;
pub(crate) mod readiness;
pub(crate) mod ring;
#[cfg(target_os = "linux")]
pub mod sockmap;
pub(crate) mod splice;
pub(crate) mod stream;
pub mod unix;
