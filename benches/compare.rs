//! `cargo bench --bench compare [-- OPTIONS]`: edgefwd against tokio forwarders, side by
//! side, on the user's machine (issue 3). See docs/benchmarks.md for the method.
//!
//! # Layout
//! - `cli`       options (`--quick`, `--only`, `--scenarios`, `--against`, `--strace`, ...)
//! - `peer`      starting the forwarders as child processes (edgefwd, tokio via `--role`,
//!   `--against` commands) and cleaning them up
//! - `tokio_fwd` the tokio baseline forwarder, run when this binary is re-executed with
//!   `--role tokio-current|tokio-multi`
//! - `backend`   bulk sink/source behind the forwarder (the echo server is `support::echo`)
//! - `load`      the load generator (bulk clients, the rr/churn engine, idle connections)
//! - `scenario`  the scenarios, their metrics and targets, and one measured run
//! - `sys`       /proc counters (CPU, RSS, fds, wakeups), CPU pinning, RLIMIT_NOFILE
//! - `report`, `json`, `svg`  the markdown tables, results JSON and the chart
//! - `probe`     `--strace` / `--perf`: syscall counts and CPU profiles per forwarder
//! - `udp`       `--udp`: the UDP scenarios, their peers (socat, a tokio UDP forwarder) and table
//! - `support`   `tests/support/` shared with the tests and the other benches (included
//!   by path): RLIMIT_NOFILE, /proc readers, the echo server, CPU pinning, `strace -c`, flags
//!
//! Why separate processes: CPU time is read per process from /proc/<pid>/stat, so each
//! forwarder must be alone in its process, and the load generator must not be in it.
//!
//! The modules' `#[cfg(test)]` tests run in `tests/bench_harness.rs`, which compiles them again as a
//! test crate. Cargo builds this `harness = false` target with `cfg(test)` too, but without a test
//! harness, so there the `#[test]` functions vanish and each test module allows the dead helpers
//! and imports they leave.

#[path = "compare/backend.rs"]
mod backend;
#[path = "compare/cli.rs"]
mod cli;
#[path = "compare/http.rs"]
mod http;
#[path = "compare/json.rs"]
mod json;
#[path = "compare/load.rs"]
mod load;
#[path = "compare/pattern.rs"]
mod pattern;
#[path = "compare/peer.rs"]
mod peer;
#[path = "compare/probe.rs"]
mod probe;
#[path = "compare/report.rs"]
mod report;
#[path = "compare/scenario.rs"]
mod scenario;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "compare/svg.rs"]
mod svg;
#[path = "compare/sys.rs"]
mod sys;
#[path = "compare/tokio_fwd.rs"]
mod tokio_fwd;
#[path = "compare/udp.rs"]
mod udp;
#[path = "compare/util.rs"]
mod util;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cli::{Options, Parsed};
use json::Json;
use pattern::Pattern;
use peer::{Launch, Peer, PeerKind};
use probe::{Probes, Tool};
use report::{Record, Results, RunInfo};
use scenario::{RunCtx, Scenario, Settings, METRICS};
use tokio_fwd::Flavor;
use util::{fail, BenchError, BenchResult, Context};

/// File descriptors kept free in the bench process beyond the two per idle pair it holds
/// (client socket and echo-server socket).
const FD_HEADROOM: u64 = 1024;

/// edgefwd's `--max-connections` never goes below this, so a small `--idle-max` or fd limit cannot
/// cap it under the 100 connections of rr100 (and churn's 50), which would flatter its figures.
const MIN_MAX_CONNECTIONS: usize = 1000;

/// How long a run waits for other processes to quiet down before starting anyway.
const QUIET_WAIT: Duration = Duration::from_secs(15);

/// Total time spent waiting for quiet and re-running, over the whole benchmark.
const QUIET_BUDGET: Duration = Duration::from_secs(240);

/// How often a run disturbed by other processes is done again.
const NOISY_RETRIES: usize = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "tokio-udp") {
        return match udp::run_tokio_role(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("compare role: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.iter().any(|a| a == "--role") {
        return match tokio_fwd::run_role(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("compare role: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let opts = match cli::parse(&args) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("compare: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed::Runs(why)) => {
            eprintln!("compare: {why}");
            ExitCode::from(RUNS_FAILED)
        }
        Err(Failed::Harness(e)) => {
            eprintln!("compare: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status when the report is written but some runs failed (1: the harness could not run;
/// 2: bad options), so a script can tell a broken forwarder from a broken set-up.
const RUNS_FAILED: u8 = 3;

/// How a benchmark ended without success.
enum Failed {
    /// It could not run or write its report.
    Harness(BenchError),
    /// Its report is written, and lists runs that failed.
    Runs(String),
}

impl From<BenchError> for Failed {
    fn from(e: BenchError) -> Failed {
        Failed::Harness(e)
    }
}

/// The whole benchmark: set up, run every (scenario, repeat, peer), report.
fn run(opts: &Options) -> Result<(), Failed> {
    if opts.udp {
        return Ok(udp::run(opts)?);
    }
    let nofile = sys::raise_nofile_limit()?;
    let machine = sys::MachineInfo::collect(nofile);
    // Before pinning narrows them: the http scenario runs everything on all of them.
    let all_cpus = sys::allowed_cpus();
    let mut opts = opts.clone();
    if opts.scenarios.contains(&Scenario::Http) {
        if let Some(why) = http::missing_tools() {
            eprintln!("compare: warning: {why}");
            opts.scenarios.retain(|&sc| sc != Scenario::Http);
        }
    }
    let opts = &opts;
    // Pin before any thread exists: threads and children inherit the mask.
    let (forwarder_cpus, load_cpus, pinning) = plan_pinning(opts.pin)?;
    let peers = select_peers(opts)?;
    if opts.strace {
        probe::check_available(Tool::Strace)?;
    }
    if opts.perf {
        probe::check_available(Tool::Perf)?;
    }
    let idle_pairs = (opts.idle_max as u64).min(nofile.saturating_sub(FD_HEADROOM) / 2) as usize;
    if idle_pairs == 0 && opts.scenarios.contains(&Scenario::Idle) {
        eprintln!(
            "compare: warning: the fd limit ({nofile}) leaves no room for idle pairs beyond the {FD_HEADROOM} kept free; \
             the idle scenario measures nothing (raise it with `ulimit -n`)"
        );
    }
    let ctx = RunCtx {
        settings: Settings {
            bulk_bytes: opts.bulk_mib << 20,
            warmup: opts.warmup,
            measure: opts.measure,
            idle_pairs,
            load_cpus,
            all_cpus,
            // The issue's `wrk -d 5s`; --quick keeps the smoke pass short.
            http_secs: if opts.quick {
                opts.measure.as_secs_f64()
            } else {
                5.0
            },
        },
        launch: Launch {
            buffer_size: opts.buffer_size,
            forwarder_cpus,
            // Never below what rr100 and churn open, whatever --idle-max or the fd limit.
            max_connections: idle_pairs.max(MIN_MAX_CONNECTIONS),
            edgefwd_bin: opts.edgefwd_bin.clone(),
        },
        pattern: Arc::new(Pattern::new()),
    };
    eprintln!(
        "compare: {} CPUs ({}); {pinning}",
        machine.nproc, machine.cpu_model
    );
    eprintln!(
        "compare: peers {}; scenarios {}; buffer {} B; repeats: bulk {}, rr/churn {}, idle {}; idle pairs {idle_pairs}",
        peers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        opts.scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        opts.buffer_size,
        opts.repeats.bulk,
        opts.repeats.rr,
        opts.repeats.idle
    );
    let mut records = run_all(opts, &peers, &ctx);
    report::add_overheads(&mut records);
    let probes = run_probes(opts, &peers, &ctx);
    let results = Results {
        records,
        peers: peers.iter().map(|p| p.name.clone()).collect(),
        scenarios: opts.scenarios.clone(),
    };
    let (date, stamp) = util::utc_now();
    let info = RunInfo {
        date,
        command: opts.command.clone(),
        machine,
        pinning,
        settings: settings_json(opts, &ctx.settings),
    };
    write_outputs(opts, &info, &results, &probes, &stamp)?;
    let failed = results.records.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        // The exit status makes a failed run (a corrupted stream, a stalled forwarder) impossible
        // to miss in a script or in CI. `--strace`/`--perf` passes are evidence, not runs: theirs
        // are reported and do not count.
        return Err(Failed::Runs(format!(
            "{failed} of {} runs failed: see \"Failed runs\" in {}",
            results.records.len(),
            opts.out_dir.join("latest.md").display()
        )));
    }
    Ok(())
}

/// Forwarder on the first allowed CPU, bench (load generator, backends) on the others.
/// Returns (forwarder CPUs, number of load CPUs, sentence for the report).
fn plan_pinning(want: bool) -> BenchResult<(Option<Vec<usize>>, usize, String)> {
    let cpus = sys::allowed_cpus();
    if !want || cpus.len() < 2 {
        let why = if want { "only one CPU" } else { "--no-pin" };
        return Ok((
            None,
            cpus.len().max(1),
            format!("no CPU pinning ({why}): forwarder and load generator share all CPUs"),
        ));
    }
    let (fwd, load) = cpus.split_at(1);
    sys::pin_current_to(load).ctx("pin the load generator (sched_setaffinity)")?;
    let list = |c: &[usize]| c.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    Ok((
        Some(fwd.to_vec()),
        load.len(),
        format!(
            "pinning: forwarder on CPU {}, load generator and backends on CPU {} (tokio-multi's 2 workers share the forwarder CPU)",
            list(fwd),
            list(load)
        ),
    ))
}

/// The built-in peers plus `--against`, filtered by `--only`.
fn select_peers(opts: &Options) -> BenchResult<Vec<Peer>> {
    let mut all = vec![
        Peer {
            name: report::DIRECT.into(),
            kind: PeerKind::Direct,
        },
        Peer {
            name: "edgefwd".into(),
            kind: PeerKind::Edgefwd(opts.edgefwd_bin.clone()),
        },
        Peer {
            name: "tokio-current".into(),
            kind: PeerKind::Tokio(Flavor::Current),
        },
        Peer {
            name: "tokio-multi".into(),
            kind: PeerKind::Tokio(Flavor::Multi),
        },
    ];
    for (name, cmd) in &opts.against {
        all.push(Peer {
            name: name.clone(),
            kind: PeerKind::External(cmd.clone()),
        });
    }
    let Some(only) = &opts.only else {
        return Ok(all);
    };
    if let Some(unknown) = only.iter().find(|n| !all.iter().any(|p| &p.name == *n)) {
        return fail(format!("--only: unknown peer {unknown:?}"));
    }
    all.retain(|p| only.contains(&p.name));
    if all.is_empty() {
        return fail("--only selected no peer");
    }
    Ok(all)
}

/// Runs everything, peers interleaved within each repeat so slow drifts of the machine
/// (thermal, other load) spread over all peers alike. A failed run is recorded and the rest go
/// on; the exit status reports it at the end.
fn run_all(opts: &Options, peers: &[Peer], ctx: &RunCtx) -> Vec<Record> {
    let plan: Vec<(Scenario, usize, &Peer)> = opts
        .scenarios
        .iter()
        .flat_map(|&sc| {
            (0..opts.repeats.of(sc)).flat_map(move |r| peers.iter().map(move |p| (sc, r, p)))
        })
        .filter(|(sc, _, p)| *sc != Scenario::Idle || p.has_process())
        .collect();
    let started = Instant::now();
    let mut budget = QuietBudget {
        left: if opts.wait_quiet {
            QUIET_BUDGET
        } else {
            Duration::ZERO
        },
    };
    let mut records = Vec::with_capacity(plan.len());
    for (i, (sc, repeat, peer)) in plan.iter().enumerate() {
        let label = format!(
            "[{:>2}/{}] {:<11} {:<14} run {}/{}",
            i + 1,
            plan.len(),
            sc.name(),
            peer.name,
            repeat + 1,
            opts.repeats.of(*sc)
        );
        let (values, error) = run_with_retries(*sc, peer, ctx, &label, started, &mut budget);
        records.push(Record {
            scenario: *sc,
            peer: peer.name.clone(),
            repeat: *repeat,
            values,
            error,
        });
    }
    records
}

/// One planned run. Unless `--no-wait-quiet`, it first waits (bounded) for the machine
/// to be quiet, and a run disturbed by other processes is done again (bounded), because
/// a build running next to the benchmark moves every figure.
fn run_with_retries(
    sc: Scenario,
    peer: &Peer,
    ctx: &RunCtx,
    label: &str,
    started: Instant,
    budget: &mut QuietBudget,
) -> (scenario::Values, Option<String>) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if budget.usable() {
            let t = Instant::now();
            if let Err(e) = wait_quiet() {
                eprintln!("{label} ... cannot check machine load: {e}");
            }
            budget.spend(t.elapsed());
        }
        eprint!("{label} ... ");
        let t = Instant::now();
        match scenario::run_one(sc, peer, ctx) {
            Ok(v) => {
                let noisy = v
                    .iter()
                    .any(|(k, x)| *k == "other_cpu" && *x > scenario::NOISY_PCT);
                eprintln!(
                    "{} ({:.1}s, {:.0}s total)",
                    progress_summary(sc, &v),
                    t.elapsed().as_secs_f64(),
                    started.elapsed().as_secs_f64()
                );
                if noisy && attempt <= NOISY_RETRIES && budget.usable() {
                    eprintln!("{label} ... disturbed by other processes, running it again");
                    budget.spend(t.elapsed());
                    continue;
                }
                return (v, None);
            }
            Err(e) => {
                eprintln!("FAILED: {e}");
                return (Vec::new(), Some(e.0));
            }
        }
    }
}

/// Time the whole benchmark may spend waiting for quiet and re-running disturbed runs.
/// On a machine that is busy all along (a long test suite next to it), waiting does not
/// help; the figures are then flagged instead of the run taking an hour.
struct QuietBudget {
    left: Duration,
}

impl QuietBudget {
    fn usable(&self) -> bool {
        !self.left.is_zero()
    }

    fn spend(&mut self, d: Duration) {
        self.left = self.left.saturating_sub(d);
        if self.left.is_zero() {
            eprintln!(
                "          spent {QUIET_BUDGET:?} waiting for a quiet machine: no more waiting or re-runs; busy windows are flagged"
            );
        }
    }
}

/// Waits up to `QUIET_WAIT` until other processes use less than `NOISY_PCT` of a core
/// over a 300 ms sample; says so when it had to wait or gave up.
fn wait_quiet() -> BenchResult<()> {
    let deadline = Instant::now() + QUIET_WAIT;
    let mut waited = false;
    loop {
        let before = sys::Snapshot::take(None)?;
        std::thread::sleep(Duration::from_millis(300));
        let after = sys::Snapshot::take(None)?;
        let pct = 100.0 * after.others_since(&before) / (after.at - before.at).as_secs_f64();
        if pct <= scenario::NOISY_PCT {
            if waited {
                eprintln!("          machine quiet again");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            eprintln!("          machine still busy ({pct:.0}% of a core) after {QUIET_WAIT:?}; running anyway");
            return Ok(());
        }
        if !waited {
            let who = after
                .top_other_since(&before)
                .map(|(w, _)| w)
                .unwrap_or_default();
            eprintln!("          waiting for other processes to calm down ({pct:.0}% of a core, most {who})");
            waited = true;
        }
    }
}

/// The first two table metrics of a run, for the progress line.
fn progress_summary(sc: Scenario, v: &scenario::Values) -> String {
    METRICS
        .iter()
        .filter(|d| d.scenario == sc && !d.evidence())
        .filter_map(|d| {
            let val = v.iter().find(|(k, _)| *k == d.key)?.1;
            val.is_finite()
                .then(|| format!("{} {} {}", d.label, report::fmt_value(d, val), d.unit))
        })
        .take(2)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--strace` / `--perf` passes for every forwarder process and probed scenario selected.
fn run_probes(opts: &Options, peers: &[Peer], ctx: &RunCtx) -> Probes {
    let mut out = Probes::default();
    let scenarios = probe::PROBED
        .iter()
        .filter(|sc| opts.scenarios.contains(sc));
    for sc in scenarios {
        for peer in peers.iter().filter(|p| p.has_process()) {
            if opts.strace {
                eprint!("[strace] {:<11} {:<14} ... ", sc.name(), peer.name);
                match probe::strace(*sc, peer, ctx) {
                    Ok(r) => {
                        eprintln!(
                            "{} syscalls per {}",
                            util::sig3(r.total() as f64 / r.units),
                            r.unit
                        );
                        out.strace.push(r);
                    }
                    Err(e) => eprintln!("FAILED: {e}"),
                }
            }
            if opts.perf {
                eprint!("[perf]   {:<11} {:<14} ... ", sc.name(), peer.name);
                match probe::perf(*sc, peer, ctx) {
                    Ok(r) => {
                        eprintln!("{:.0}% of samples in the kernel", r.kernel_pct());
                        out.perf.push(r);
                    }
                    Err(e) => eprintln!("FAILED: {e}"),
                }
            }
        }
    }
    out
}

fn settings_json(opts: &Options, s: &Settings) -> Vec<(&'static str, Json)> {
    vec![
        ("quick", Json::Bool(opts.quick)),
        ("buffer_size", Json::Num(opts.buffer_size as f64)),
        ("bulk_mib", Json::Num(opts.bulk_mib as f64)),
        ("warmup_s", Json::Num(s.warmup.as_secs_f64())),
        ("measure_s", Json::Num(s.measure.as_secs_f64())),
        ("idle_pairs", Json::Num(s.idle_pairs as f64)),
        ("repeats_bulk", Json::Num(opts.repeats.bulk as f64)),
        ("repeats_rr", Json::Num(opts.repeats.rr as f64)),
        ("repeats_idle", Json::Num(opts.repeats.idle as f64)),
        ("pinned", Json::Bool(opts.pin)),
        ("wait_quiet", Json::Bool(opts.wait_quiet)),
    ]
}

/// Prints the report and writes compare-<stamp>.json, latest.json, latest.md, latest.svg.
fn write_outputs(
    opts: &Options,
    info: &RunInfo,
    res: &Results,
    probes: &Probes,
    stamp: &str,
) -> BenchResult<()> {
    let md = report::markdown_report(info, res, probes);
    println!("\n{md}");
    print_verdicts(res);
    let dir = &opts.out_dir;
    std::fs::create_dir_all(dir).with_ctx(|| format!("create {}", dir.display()))?;
    let json = report::json_report(info, res, probes).pretty();
    write(&dir.join(format!("compare-{stamp}.json")), &json)?;
    write(&dir.join("latest.json"), &json)?;
    write(&dir.join("latest.md"), &md)?;
    let title = format!(
        "edgefwd vs tokio — {} CPUs, {}",
        info.machine.nproc, info.date
    );
    write(&dir.join("latest.svg"), &svg::chart(res, &title))?;
    eprintln!(
        "compare: wrote {}/{{compare-{stamp}.json, latest.json, latest.md, latest.svg}}",
        dir.display()
    );
    Ok(())
}

/// One line per target, so the verdicts are visible without reading the table.
fn print_verdicts(res: &Results) {
    let checks = report::check_targets(res);
    if checks.is_empty() || !res.peers.iter().any(|p| p == report::SUBJECT) {
        return;
    }
    let met = checks.iter().filter(|c| c.met == Some(true)).count();
    println!("Targets for edgefwd: {met} of {} met", checks.len());
    for c in &checks {
        println!(
            "  {:<7} {:<11} {:<28} goal {:<10} got {}",
            c.verdict(),
            c.def.scenario.name(),
            c.def.label,
            c.goal(),
            c.figure_note()
        );
    }
}

fn write(path: &Path, text: &str) -> BenchResult<()> {
    std::fs::write(path, text).with_ctx(|| format!("write {}", path.display()))
}
