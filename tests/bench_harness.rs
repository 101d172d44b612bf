//! Unit tests of the benchmark harness (`benches/compare/`). A `harness = false` bench target runs
//! no `#[test]`, so its modules are compiled a second time here, as a test crate, and the
//! `#[cfg(test)]` tests inside them run with `cargo test`: the checks and the arithmetic behind every
//! figure the harness reports. Running the harness end to end is `.ci/run`'s smoke pass.
//!
//! Every module is declared, because they refer to each other through `crate::`; what only the
//! bench's `main` uses is dead code here.
#![allow(dead_code)]

#[path = "../benches/compare/backend.rs"]
mod backend;
#[path = "../benches/compare/cli.rs"]
mod cli;
#[path = "../benches/compare/http.rs"]
mod http;
#[path = "../benches/compare/json.rs"]
mod json;
#[path = "../benches/compare/load.rs"]
mod load;
#[path = "../benches/compare/pattern.rs"]
mod pattern;
#[path = "../benches/compare/peer.rs"]
mod peer;
#[path = "../benches/compare/probe.rs"]
mod probe;
#[path = "../benches/compare/report.rs"]
mod report;
#[path = "../benches/compare/scenario.rs"]
mod scenario;
#[path = "support/mod.rs"]
mod support;
#[path = "../benches/compare/svg.rs"]
mod svg;
#[path = "../benches/compare/sys.rs"]
mod sys;
#[path = "../benches/compare/tokio_fwd.rs"]
mod tokio_fwd;
#[path = "../benches/compare/udp.rs"]
mod udp;
#[path = "../benches/compare/util.rs"]
mod util;
