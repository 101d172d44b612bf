//! `cargo bench --bench scale [-- OPTIONS]`: how edgefwd's cost grows with idle connections
//! (issue 21, part 4), and what one wait call costs with `select`, `poll` and `epoll_wait` over the
//! same kind of idle sets. See docs/epoll.md §1 for the figures and how to read them.
//!
//! # Layout
//! - `pairs`   N idle pairs held by one edgefwd while rr100 runs through it: memory per pair,
//!   rr100 latency, CPU and wakeups per request
//! - `wait`    the select/poll/epoll_wait curves (FFI through `libc`)
//! - `limits`  raising RLIMIT_NOFILE (and fs.nr_open) as far as the largest size needs
//! - `stats`   medians with their spread, per-pair and per-request arithmetic
//! - `report`  markdown, JSON and the SVG chart
//! - from the compare bench (`benches/compare/`, included by path, not copied): the echo backend,
//!   the rr engine and idle-pair opener, /proc readers, the JSON printer, the byte pattern; and
//!   `tests/support/` that tests and benches share.
//!
//! The modules' `#[cfg(test)]` tests run in `tests/scale_harness.rs`, which compiles `stats`,
//! `limits` and `wait` again as a test crate (the compare modules' own tests run in `tests/bench_harness.rs`).
//! Here, without a test harness, the test modules vanish and allow the helpers they leave unused.

#[path = "compare/backend.rs"]
#[allow(dead_code)] // shared with the compare bench, which uses the rest
mod backend;
#[path = "compare/json.rs"]
#[allow(dead_code)] // shared with the compare bench, which uses the rest
mod json;
#[path = "scale/limits.rs"]
mod limits;
#[path = "compare/load.rs"]
#[allow(dead_code)] // shared with the compare bench, which uses the rest
mod load;
#[path = "scale/pairs.rs"]
mod pairs;
#[path = "compare/pattern.rs"]
#[allow(dead_code)] // shared with the compare bench, which uses the rest
mod pattern;
#[path = "scale/report.rs"]
mod report;
#[path = "scale/stats.rs"]
mod stats;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "compare/sys.rs"]
#[allow(dead_code)] // shared with the compare bench, which uses the rest
mod sys;
#[path = "compare/util.rs"]
#[allow(dead_code)] // shared with the compare bench, which uses the rest
mod util;
#[path = "scale/wait.rs"]
mod wait;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use json::Json;
use pairs::{PairsRun, Setup};
use pattern::Pattern;
use report::Skipped;
use stats::{count_label, destinations_for, largest_fitting, parse_count};
use support::args::{command_line, Flags};
use util::{fail, BenchResult, Context};

const USAGE: &str = "\
How edgefwd's cost grows with idle connections, and select/poll/epoll_wait per call.

usage: cargo bench --bench scale [-- OPTIONS]

parts (both by default):
  pairs   for each N: one edgefwd holds N idle pairs while rr100 (100 connections, 1 KiB
          request/response) runs through it: RSS per idle pair, rr100 p50/p99, edgefwd CPU and
          wakeups per request. N = 0 is the baseline. Sizes and repeats are interleaved.
  wait    one select/poll/epoll_wait call over N idle loopback sockets plus one ready socket:
          CPU ns per call (select only while every fd is below FD_SETSIZE = 1024)

options:
  --quick             short run: sizes 0,1k,10k, 1 repeat, 0.5 s warm-up, 1 s measured; wait sizes
                      10,100,1k, 3 rounds
  --parts LIST        pairs,wait (default both)
  --sizes LIST        idle pairs per run (default 0,1k,10k,100k; 0 is always added)
  --repeats N         runs per size (default 3)
  --warmup S          rr100 unmeasured seconds per run (default 1)
  --measure S         rr100 measured seconds per run (default 5)
  --wait-sizes LIST   idle sockets for the wait part (default 10,30,100,300,1k,3k,10k,30k,100k)
  --wait-rounds N     samples per waiter and size (default 7)
  --out DIR           where results go (default: <crate>/bench-results)
  -h, --help          this text

As root the benchmark raises RLIMIT_NOFILE (and fs.nr_open if needed) to what the largest size
needs: two fds per pair in edgefwd and two in this process. A size that still does not fit is
skipped with the reason. Writes scale-<stamp>.json, scale-latest.json, scale-latest.md and
scale-wait.svg.
";

/// Most connections to one loopback address and port: below the ~28k ephemeral ports of the
/// default `ip_local_port_range`, with room for whatever else the machine connects.
const PER_DESTINATION: usize = 20_000;

/// The fds a process needs beyond its share of the idle sockets: rr100's 200 sockets in each
/// process, listeners, epoll, stdio, /proc reads.
const FD_HEADROOM: u64 = 512;

#[derive(Debug, Clone)]
struct Options {
    pairs: bool,
    wait: bool,
    sizes: Vec<usize>,
    /// Also run the most idle pairs the fd limit allows (`max` in `--sizes`).
    sizes_max: bool,
    repeats: usize,
    warmup: Duration,
    measure: Duration,
    wait_sizes: Vec<usize>,
    /// Also measure the most idle sockets the fd limit allows (`max` in `--wait-sizes`).
    wait_max: bool,
    wait_rounds: usize,
    /// CPU time each wait sample aims for.
    wait_target_ns: f64,
    quick: bool,
    out_dir: PathBuf,
    command: String,
}

enum Parsed {
    Run(Options),
    Help,
}

fn parse(args: &[String]) -> BenchResult<Parsed> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Options {
        pairs: true,
        wait: true,
        sizes: if quick {
            vec![0, 1_000, 10_000]
        } else {
            vec![0, 1_000, 10_000, 100_000]
        },
        sizes_max: !quick,
        repeats: if quick { 1 } else { 3 },
        warmup: Duration::from_millis(if quick { 500 } else { 1000 }),
        measure: Duration::from_secs(if quick { 1 } else { 5 }),
        wait_sizes: if quick {
            vec![10, 100, 1_000]
        } else {
            vec![10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000]
        },
        wait_max: !quick,
        wait_rounds: if quick { 3 } else { 7 },
        wait_target_ns: if quick { 5e6 } else { 3e7 },
        quick,
        out_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results"),
        command: String::new(),
    };
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        let mut value = || flags.value().or_else(fail);
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--quick" => {}
            "--parts" => {
                let v = value()?;
                let parts: Vec<&str> = v.split(',').map(str::trim).collect();
                if let Some(bad) = parts.iter().find(|p| !["pairs", "wait"].contains(p)) {
                    return fail(format!("--parts: unknown part {bad:?} (pairs, wait)"));
                }
                o.pairs = parts.contains(&"pairs");
                o.wait = parts.contains(&"wait");
            }
            "--sizes" => (o.sizes, o.sizes_max) = counts(&value()?)?,
            "--wait-sizes" => (o.wait_sizes, o.wait_max) = counts(&value()?)?,
            "--repeats" => o.repeats = positive(flag, &value()?)?,
            "--wait-rounds" => o.wait_rounds = positive(flag, &value()?)?,
            "--warmup" => o.warmup = seconds(flag, &value()?)?,
            "--measure" => o.measure = seconds(flag, &value()?)?,
            "--out" => o.out_dir = PathBuf::from(value()?),
            other => return fail(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if o.measure.is_zero() {
        return fail("--measure: must be more than 0 seconds");
    }
    if !o.sizes.contains(&0) {
        o.sizes.insert(0, 0);
    }
    o.sizes.sort_unstable();
    o.sizes.dedup();
    if o.wait_sizes.contains(&0) {
        return fail("--wait-sizes: sizes must be at least 1");
    }
    o.command = command_line("scale", args);
    Ok(Parsed::Run(o))
}

/// A list of counts, where `max` stands for the most the fd limit allows (returned as the flag).
fn counts(text: &str) -> BenchResult<(Vec<usize>, bool)> {
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    let max = items.contains(&"max");
    let counts = items
        .into_iter()
        .filter(|i| *i != "max")
        .map(parse_count)
        .collect::<BenchResult<_>>()?;
    Ok((counts, max))
}

fn positive(flag: &str, text: &str) -> BenchResult<usize> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => fail(format!("{flag}: {text:?} is not a positive number")),
    }
}

fn seconds(flag: &str, text: &str) -> BenchResult<Duration> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..=600.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => fail(format!("{flag}: {text:?} is not seconds in [0, 600]")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("scale: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> BenchResult<()> {
    let (nofile, raised) = limits::raise_nofile_to(fds_wanted(opts))?;
    let opts = &with_max_sizes(opts, nofile);
    let machine = sys::MachineInfo::collect(nofile);
    let (date, stamp) = util::utc_now();
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let header = format!(
        "<!-- {} -->\n<!-- {date}; {} CPUs, {}; load average at start {load}; RLIMIT_NOFILE {nofile}{raised}; no CPU pinning -->\n",
        opts.command, machine.nproc, machine.cpu_model
    );
    eprint!("{header}");
    let (runs, skipped) = match opts.pairs {
        true => pairs_part(opts, nofile)?,
        false => (Vec::new(), Vec::new()),
    };
    let points = match opts.wait {
        true => wait_part(opts, nofile)?,
        false => Vec::new(),
    };
    let mut md = header;
    if opts.pairs {
        md.push_str("\n### Idle pairs held while rr100 runs through the same edgefwd\n\n");
        md.push_str(&report::pairs_table(&opts.sizes, &runs, &skipped));
    }
    if opts.wait {
        md.push_str(
            "\n### One wait call over N idle sockets and one ready socket (CPU per call)\n\n",
        );
        md.push_str(&report::wait_table(&points));
    }
    println!("\n{md}");
    let info = vec![
        ("date", Json::str(&date)),
        ("command", Json::str(&opts.command)),
        ("cpus", Json::Num(machine.nproc as f64)),
        ("cpu_model", Json::str(&machine.cpu_model)),
        ("load_average_at_start", Json::str(load)),
        ("nofile", Json::Num(nofile as f64)),
        ("quick", Json::Bool(opts.quick)),
        ("warmup_s", Json::Num(opts.warmup.as_secs_f64())),
        ("measure_s", Json::Num(opts.measure.as_secs_f64())),
    ];
    let json = report::json(info, &runs, &skipped, &points).pretty();
    write_outputs(opts, &stamp, &date, &md, &json, &points)
}

/// The fds the largest size needs in one process: this one holds two sockets per idle pair (client
/// and echo backend), edgefwd two; the wait part one per socket.
fn fds_wanted(opts: &Options) -> u64 {
    let largest = |on: bool, sizes: &[usize]| match on {
        true => sizes.iter().copied().max().unwrap_or(0) as u64,
        false => 0,
    };
    (2 * largest(opts.pairs, &opts.sizes)).max(largest(opts.wait, &opts.wait_sizes) + 2)
        + FD_HEADROOM
}

/// The options with `max` resolved to the most the fd limit allows.
fn with_max_sizes(opts: &Options, nofile: u64) -> Options {
    let mut o = opts.clone();
    if o.sizes_max {
        o.sizes.push(largest_fitting(nofile, FD_HEADROOM, 2));
    }
    if o.wait_max {
        o.wait_sizes.push(largest_fitting(nofile, FD_HEADROOM, 1));
    }
    for sizes in [&mut o.sizes, &mut o.wait_sizes] {
        sizes.sort_unstable();
        sizes.dedup();
    }
    o
}

/// Writes scale-<stamp>.json, scale-latest.json, scale-latest.md and (with the wait part) the chart.
fn write_outputs(
    opts: &Options,
    stamp: &str,
    date: &str,
    md: &str,
    json: &str,
    points: &[wait::Point],
) -> BenchResult<()> {
    let dir = &opts.out_dir;
    std::fs::create_dir_all(dir).with_ctx(|| format!("create {}", dir.display()))?;
    write(&dir.join(format!("scale-{stamp}.json")), json)?;
    write(&dir.join("scale-latest.json"), json)?;
    write(&dir.join("scale-latest.md"), md)?;
    if opts.wait {
        let title = format!("select, poll, epoll_wait: one call, one ready socket — {date}");
        write(
            &dir.join("scale-wait.svg"),
            &report::wait_svg(points, &title),
        )?;
    }
    eprintln!(
        "scale: wrote {}/scale-{{{stamp}.json, latest.json, latest.md{}}}",
        dir.display(),
        if opts.wait { ", wait.svg" } else { "" }
    );
    Ok(())
}

/// Every (size, repeat), sizes interleaved within each repeat and their order reversed on every
/// other repeat, so a slow drift of the machine's load does not fall on one size. A size that does
/// not fit the fd limit is skipped; a failed run stops the benchmark (its figures would be wrong).
fn pairs_part(opts: &Options, nofile: u64) -> BenchResult<(Vec<PairsRun>, Vec<Skipped>)> {
    let mut skipped = Vec::new();
    let mut sizes = Vec::new();
    for &pairs in &opts.sizes {
        let need = 2 * pairs as u64 + FD_HEADROOM;
        if need > nofile {
            let why = format!(
                "needs {need} fds in edgefwd and in the bench, RLIMIT_NOFILE is {nofile} and could not be raised"
            );
            eprintln!("scale: skipping {} idle pairs: {why}", count_label(pairs));
            skipped.push(Skipped { pairs, why });
        } else {
            sizes.push(pairs);
        }
    }
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let scratch = std::env::temp_dir().join(format!("edgefwd-scale-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_ctx(|| format!("create {}", scratch.display()))?;
    let setup = Setup {
        edgefwd: PathBuf::from(env!("CARGO_BIN_EXE_edgefwd")),
        destinations: destinations_for(largest + 200, PER_DESTINATION),
        warmup: opts.warmup,
        measure: opts.measure,
        scratch: scratch.clone(),
    };
    let pattern = Pattern::new();
    let mut runs = Vec::new();
    let plan: Vec<(usize, usize)> = (0..opts.repeats)
        .flat_map(|r| {
            let mut order = sizes.clone();
            if r % 2 == 1 {
                order.reverse();
            }
            order.into_iter().map(move |n| (r, n))
        })
        .collect();
    for (i, &(repeat, pairs)) in plan.iter().enumerate() {
        eprint!(
            "[{:>2}/{}] {:>5} idle pairs, run {}/{} ... ",
            i + 1,
            plan.len(),
            count_label(pairs),
            repeat + 1,
            opts.repeats
        );
        let result = pairs::run(&setup, &pattern, pairs, repeat);
        let run = match result {
            Ok(run) => run,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e)
                    .with_ctx(|| format!("{} idle pairs, run {}", count_label(pairs), repeat + 1));
            }
        };
        eprintln!(
            "opened in {:.1}s; {} B RSS per pair; rr100 p50 {:.0} µs p99 {:.0} µs, {:.1} µs CPU per request, others {:.0}%",
            run.open_s, util::sig3(run.per_pair_bytes()), run.p50_us, run.p99_us, run.cpu_us_per_req, run.others_pct
        );
        runs.push(run);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok((runs, skipped))
}

/// The wait curves, for the sizes that fit the fd limit.
fn wait_part(opts: &Options, nofile: u64) -> BenchResult<Vec<wait::Point>> {
    let (fit, over): (Vec<usize>, Vec<usize>) = opts
        .wait_sizes
        .iter()
        .partition(|&&n| n as u64 + FD_HEADROOM <= nofile);
    for n in over {
        eprintln!(
            "scale: skipping the wait curve at {} sockets: RLIMIT_NOFILE is {nofile}",
            count_label(n)
        );
    }
    eprintln!(
        "scale: wait calls over {} idle sockets ...",
        fit.iter()
            .map(|n| count_label(*n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    wait::measure_sizes(&fit, opts.wait_rounds, opts.wait_target_ns, PER_DESTINATION)
        .ctx("wait curves")
}

fn write(path: &Path, text: &str) -> BenchResult<()> {
    std::fs::write(path, text).with_ctx(|| format!("write {}", path.display()))
}
