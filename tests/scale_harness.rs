//! Unit tests of the scale benchmark (`benches/scale/`): the arithmetic behind its figures
//! (`stats`), the select/poll/epoll FFI of its wait curves (`wait`) and raising the fd limit
//! (`limits`), compiled again here as a test crate because a `harness = false` bench runs no
//! `#[test]` (as `tests/bench_harness.rs` does for the compare bench). Running the benchmark end to end is `.ci/run`'s smoke pass.
//!
//! `sys` and `util` come from the compare bench, which the scale bench shares; `util`'s own tests
//! run in `tests/bench_harness.rs` and again here.
#![allow(dead_code)]

#[path = "../benches/scale/limits.rs"]
mod limits;
#[path = "../benches/scale/stats.rs"]
mod stats;
#[path = "support/mod.rs"]
mod support;
#[path = "../benches/compare/sys.rs"]
mod sys;
#[path = "../benches/compare/util.rs"]
mod util;
#[path = "../benches/scale/wait.rs"]
mod wait;
