//! `cargo bench --bench epoll_study -- <experiment> [OPTIONS]`: the measurements behind docs/epoll.md.
//!
//! Every figure in that chapter comes from one of these experiments, run against the edgefwd binary
//! cargo built for this bench (release profile), on loopback. The counts (epoll_wait calls, events,
//! read/write syscalls) are read from edgefwd's own `--metrics` endpoint before and after the load and
//! printed as deltas, so they stay meaningful on a busy, shared machine; times are printed as context.
//!
//! # Experiments
//! - `wakeups`: N connections doing small echo ping-pong through edgefwd: epoll_wait calls, events per
//!   call, spurious wakeups, syscalls per request. `--idle N` adds N open, silent pairs.
//! - `buffers`: one bulk stream per `--buffer-size` into a sink: syscalls and epoll_wait calls per MiB,
//!   bytes per syscall, how the reads ended. `--strace` adds `strace -c` counts.
//! - `trace`: small scripted exchanges under `--trace` (half-close, upstream reset, a stale event, a
//!   ring-full stall, EMFILE), printing the log lines (and, with `--strace`, syscall excerpts).
//!
//! # Layout (`benches/epoll_study/`)
//! - `cli`: options and their parsing; `machine`: the header, CPU pinning, the fd limit
//! - `fwd`: the edgefwd child process (stderr drained in a thread, killed on drop)
//! - `sample`: a /metrics scrape, deltas, histogram summaries
//! - `strace`: `strace -p` attached to the child
//! - `backends`: the mio echo server, the sink, one-shot scripted backends
//! - `load`: the mio ping-pong engine, the bulk sender
//! - `wakeups`, `buffers`, `trace`: the three experiments; `table`: the markdown table printer

#[path = "epoll_study/backends.rs"]
mod backends;
#[path = "epoll_study/buffers.rs"]
mod buffers;
#[path = "epoll_study/cli.rs"]
mod cli;
#[path = "epoll_study/fwd.rs"]
mod fwd;
#[path = "epoll_study/load.rs"]
mod load;
#[path = "epoll_study/machine.rs"]
mod machine;
#[path = "epoll_study/sample.rs"]
mod sample;
#[path = "epoll_study/strace.rs"]
mod strace;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "epoll_study/table.rs"]
mod table;
#[path = "epoll_study/trace.rs"]
mod trace;
#[path = "epoll_study/wakeups.rs"]
mod wakeups;

use std::process::ExitCode;

use crate::buffers::buffers;
use crate::cli::{parse_args, Experiment, Parsed, USAGE};
use crate::machine::{pin_self, print_header};
use crate::support::nofile;
use crate::trace::trace;
use crate::wakeups::wakeups;

type R<T> = Result<T, String>;

/// Adds what was being done to an error.
trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|err| format!("{what}: {err}"))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().all(|a| a == "--bench") {
        // A plain `cargo bench` runs every bench target: say what this one does instead of failing.
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut opts = match parse_args(&args) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("epoll_study: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // 5,000 connections need ~10,000 fds here: each client socket and each echo-server socket.
    let raised = nofile::raise_to_hard().ctx("raise RLIMIT_NOFILE to its hard limit");
    let result = raised.and_then(|nofile| {
        if opts.pin {
            opts.fwd_cpu = Some(pin_self()?);
        }
        print_header(&opts, nofile);
        match opts.experiment {
            Experiment::Wakeups => wakeups(&opts),
            Experiment::Buffers => buffers(&opts),
            Experiment::Trace => trace(&opts),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("epoll_study: error: {err}");
            ExitCode::FAILURE
        }
    }
}
