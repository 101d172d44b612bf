//! Helpers that the integration tests (`tests/`) and the benchmarks (`benches/`) share: one copy of
//! each, where there used to be one per harness.
//!
//! This is not a crate but a module tree that each harness compiles into itself with `#[path]`
//! (`tests/common/mod.rs` declares it as `common::support`; `benches/compare.rs`, `benches/scale.rs`
//! and `benches/epoll_study.rs` as `support`), so `cargo test` and `cargo bench` need nothing more
//! on a fresh clone. Nothing here panics on a run-time failure: every fallible helper returns
//! `io::Result`, and each harness words the error its own way (a test panics, a bench prints it).
//! Its own tests are in `tests/support.rs`, so they run once, not in every crate that includes it.
//!
//! # Layout
//! - `nofile`: raising RLIMIT_NOFILE, this process's and a child's
//! - `cpu`: the CPUs this process may use, and pinning to some of them
//! - `procfs`: /proc readers (fds, VmRSS, the TCP tables, the machine's description)
//! - `echo`: the edge-triggered mio echo server that backs the load tests
//! - `logs`: the addresses in edgefwd's start lines (`listening on`, `metrics on`)
//! - `pattern`: the storage of a repeating byte pattern that streams carry, checked by `memcmp`
//! - `strace`: the `strace -c` summary table
//! - `clock`: UTC calendar time without a date library
//! - `args`: `--flag value` and `--flag=value`
// Each harness uses only part of this tree; what one does not use is dead code in that one.
#![allow(dead_code)]

pub mod args;
pub mod clock;
pub mod cpu;
pub mod echo;
pub mod logs;
pub mod nofile;
pub mod pattern;
pub mod procfs;
pub mod strace;
