//! The scenarios, the metrics each one reports, and how one (scenario, peer) run goes:
//! start a backend, start the forwarder in front of it, sample the forwarder's /proc
//! counters around the measured work, stop everything.
//!
//! A fresh forwarder process is started for every run, so CPU and RSS of one scenario
//! never include leftovers of another.

use std::sync::{Arc, LazyLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{is_data_error, start_bulk, start_echo, SinkReport};
use crate::http;
use crate::load::{bulk_duplex, bulk_send, open_idle, Edge, RrConfig, RrEngine, RrOutcome};
use crate::pattern::Pattern;
use crate::peer::{self, Launch, Peer, Running};
use crate::sys::{cpus_busy_seconds, fd_count, rss_bytes, wait_until, Snapshot};
use crate::util::{fail, percentile, BenchError, BenchResult, Context};

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// The workloads, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// One stream, client to upstream, `bulk_mib` MiB.
    BulkUp,
    /// One connection carrying `bulk_mib` MiB each way at the same time.
    BulkDuplex,
    /// One connection, 64 B ping-pong: latency.
    Rr1,
    /// 100 connections, 1 KiB ping-pong: request rate and CPU per request.
    Rr100,
    /// 50 workers: connect, 64 B echo, close, repeat: connection rate and CPU per connection.
    Churn,
    /// As many idle established pairs as the fd limit allows: memory per pair.
    Idle,
    /// wrk (50 keep-alive connections) fetching 1 KiB from nginx, nothing pinned: requests/s
    /// and latency when the forwarder shares the cores with its client and server.
    Http,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::BulkUp,
        Scenario::BulkDuplex,
        Scenario::Rr1,
        Scenario::Rr100,
        Scenario::Churn,
        Scenario::Idle,
        Scenario::Http,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::BulkUp => "bulk-up",
            Scenario::BulkDuplex => "bulk-duplex",
            Scenario::Rr1 => "rr1",
            Scenario::Rr100 => "rr100",
            Scenario::Churn => "churn",
            Scenario::Idle => "idle",
            Scenario::Http => "http",
        }
    }

    /// Accepts the exact names plus `bulk` (both bulk scenarios).
    pub fn parse_list(s: &str) -> BenchResult<Vec<Scenario>> {
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "bulk" => out.extend([Scenario::BulkUp, Scenario::BulkDuplex]),
                _ => match Scenario::ALL.iter().find(|sc| sc.name() == name) {
                    Some(sc) => out.push(*sc),
                    None => {
                        return fail(format!(
                            "unknown scenario {name:?}; known: bulk, bulk-up, bulk-duplex, rr1, rr100, churn, idle, http"
                        ))
                    }
                },
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Which way is good for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Informational (a count), no direction.
    Neither,
}

/// A project target for edgefwd on one metric.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// edgefwd / tokio-current must be >= this.
    RatioAtLeast(f64),
    /// edgefwd / tokio-current must be <= this.
    RatioAtMost(f64),
    /// edgefwd's own value must be <= this (in the metric's unit).
    AtMost(f64),
}

/// Where a metric is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Main table and a group in the SVG chart.
    Chart,
    /// Main table only.
    Table,
    /// The evidence table (explains the main figures).
    Evidence,
}

/// Describes one reported number.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub scenario: Scenario,
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub better: Better,
    pub target: Option<Target>,
    pub show: Show,
}

impl MetricDef {
    pub fn evidence(&self) -> bool {
        self.show == Show::Evidence
    }
}

const fn m(
    scenario: Scenario,
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    better: Better,
    target: Option<Target>,
    show: Show,
) -> MetricDef {
    MetricDef {
        scenario,
        key,
        label,
        unit,
        better,
        target,
        show,
    }
}

use Better::{Higher, Lower, Neither};
use Scenario::{BulkDuplex, BulkUp, Churn, Http, Idle, Rr1, Rr100};
use Show::{Chart, Evidence, Table};
use Target::{AtMost, RatioAtLeast, RatioAtMost};

/// Every metric, in table order. The targets are the ones the project set in issue 3;
/// "rr1 p50 no worse" is read strictly as a ratio <= 1.00, "RSS back within a few MiB"
/// as <= 4 MiB.
pub static METRICS: LazyLock<Vec<MetricDef>> = LazyLock::new(|| {
    let mut all = Vec::new();
    all.extend(bulk_metrics(BulkUp, "throughput"));
    all.extend(bulk_metrics(BulkDuplex, "throughput (sum of both ways)"));
    all.extend_from_slice(OTHER_METRICS);
    all
});

/// The metrics of a bulk scenario: both report the same, but for what their throughput sums.
#[rustfmt::skip]
const fn bulk_metrics(sc: Scenario, throughput: &'static str) -> [MetricDef; 10] {
    [
        m(sc, "throughput", throughput, "GiB/s", Higher, Some(RatioAtLeast(1.25)), Chart),
        m(sc, "cpu_per_gib", "CPU per GiB", "CPU s/GiB", Lower, Some(RatioAtMost(0.8)), Chart),
        m(sc, "overhead_per_gib", "machine CPU over direct per GiB", "CPU s/GiB", Lower, None, Chart),
        m(sc, "machine_per_gib", "machine CPU per GiB", "CPU s/GiB", Lower, None, Table),
        m(sc, "user_per_gib", "user-space CPU per GiB", "CPU s/GiB", Lower, None, Evidence),
        m(sc, "wakeups_per_gib", "wakeups per GiB", "/GiB", Lower, None, Evidence),
        m(sc, "core_per_gib", "forwarder core busy per GiB", "s/GiB", Lower, None, Evidence),
        m(sc, "loadgen_cpu", "load generator busy", "%", Neither, None, Evidence),
        m(sc, "loadgen_per_gib", "load generator CPU per GiB", "CPU s/GiB", Neither, None, Evidence),
        m(sc, "other_cpu", "other processes busy", "%", Neither, None, Evidence),
    ]
}

/// The metrics of the scenarios after the bulk ones, in table order.
#[rustfmt::skip]
const OTHER_METRICS: &[MetricDef] = &[
    m(Rr1, "p50_us", "latency p50", "µs", Lower, Some(RatioAtMost(1.0)), Chart),
    m(Rr1, "p99_us", "latency p99", "µs", Lower, None, Table),
    m(Rr1, "p999_us", "latency p99.9", "µs", Lower, None, Table),
    m(Rr1, "rps", "requests/s", "req/s", Higher, None, Table),
    m(Rr1, "cpu_per_100k", "CPU per 100k req", "CPU s", Lower, None, Table),
    m(Rr1, "overhead_per_100k", "machine CPU over direct per 100k req", "CPU s", Lower, None, Table),
    m(Rr1, "machine_per_100k", "machine CPU per 100k req", "CPU s", Lower, None, Table),
    m(Rr1, "user_per_100k", "user-space CPU per 100k req", "CPU s", Lower, None, Evidence),
    m(Rr1, "wakeups_per_req", "wakeups per request", "/req", Lower, None, Evidence),
    m(Rr1, "core_per_100k", "forwarder core busy per 100k req", "s", Lower, None, Evidence),
    m(Rr1, "loadgen_cpu", "load generator busy", "%", Neither, None, Evidence),
    m(Rr1, "other_cpu", "other processes busy", "%", Neither, None, Evidence),
    m(Rr100, "rps", "requests/s", "req/s", Higher, None, Chart),
    m(Rr100, "p50_us", "latency p50", "µs", Lower, None, Table),
    m(Rr100, "p99_us", "latency p99", "µs", Lower, None, Table),
    m(Rr100, "cpu_per_100k", "CPU per 100k req", "CPU s", Lower, Some(RatioAtMost(0.8)), Chart),
    m(Rr100, "overhead_per_100k", "machine CPU over direct per 100k req", "CPU s", Lower, None, Chart),
    m(Rr100, "machine_per_100k", "machine CPU per 100k req", "CPU s", Lower, None, Table),
    m(Rr100, "user_per_100k", "user-space CPU per 100k req", "CPU s", Lower, None, Evidence),
    m(Rr100, "wakeups_per_req", "wakeups per request", "/req", Lower, None, Evidence),
    m(Rr100, "core_per_100k", "forwarder core busy per 100k req", "s", Lower, None, Evidence),
    m(Rr100, "loadgen_cpu", "load generator busy", "%", Neither, None, Evidence),
    m(Rr100, "other_cpu", "other processes busy", "%", Neither, None, Evidence),
    m(Churn, "cps", "connections/s", "conn/s", Higher, None, Chart),
    m(Churn, "p99_ms", "connection time p99", "ms", Lower, None, Table),
    m(Churn, "cpu_per_10k", "CPU per 10k conn", "CPU s", Lower, Some(RatioAtMost(0.75)), Chart),
    m(Churn, "overhead_per_10k", "machine CPU over direct per 10k conn", "CPU s", Lower, None, Chart),
    m(Churn, "machine_per_10k", "machine CPU per 10k conn", "CPU s", Lower, None, Table),
    m(Churn, "errors", "failed connections", "", Lower, None, Evidence),
    m(Churn, "user_per_10k", "user-space CPU per 10k conn", "CPU s", Lower, None, Evidence),
    m(Churn, "wakeups_per_conn", "wakeups per connection", "/conn", Lower, None, Evidence),
    m(Churn, "core_per_10k", "forwarder core busy per 10k conn", "s", Lower, None, Evidence),
    m(Churn, "loadgen_cpu", "load generator busy", "%", Neither, None, Evidence),
    m(Churn, "other_cpu", "other processes busy", "%", Neither, None, Evidence),
    m(Idle, "pairs", "idle pairs held", "pairs", Neither, None, Table),
    m(Idle, "rss_per_pair_kib", "RSS per pair", "KiB", Lower, Some(AtMost(1.0)), Chart),
    m(Idle, "rss_peak_mib", "RSS with all pairs open", "MiB", Lower, None, Table),
    m(Idle, "rss_after_close_mib", "RSS after close minus start", "MiB", Lower, Some(AtMost(4.0)), Table),
    m(Http, "rps", "requests/s (wrk, unpinned)", "req/s", Higher, None, Chart),
    m(Http, "p99_ms", "latency p99", "ms", Lower, None, Chart),
    m(Http, "p50_ms", "latency p50", "ms", Lower, None, Table),
    m(Http, "cpu_per_100k", "CPU per 100k req", "CPU s", Lower, None, Table),
    m(Http, "overhead_per_100k", "machine CPU over direct per 100k req", "CPU s", Lower, None, Table),
    m(Http, "machine_per_100k", "machine CPU per 100k req", "CPU s", Lower, None, Table),
    m(Http, "user_per_100k", "user-space CPU per 100k req", "CPU s", Lower, None, Evidence),
    m(Http, "wakeups_per_req", "wakeups per request", "/req", Lower, None, Evidence),
    m(Http, "errors", "socket errors and non-2xx responses", "", Lower, None, Evidence),
    m(Http, "other_cpu", "other processes busy", "%", Neither, None, Evidence),
];

/// Numbers from one run, keyed by `MetricDef::key`.
pub type Values = Vec<(&'static str, f64)>;

/// Sizes and durations of this run (set by `--quick` and the options).
#[derive(Debug, Clone)]
pub struct Settings {
    pub bulk_bytes: u64,
    pub warmup: Duration,
    pub measure: Duration,
    pub idle_pairs: usize,
    /// CPUs the load generator runs on (for its busy %).
    pub load_cpus: usize,
    /// Every CPU the bench was allowed at start, before pinning: the http scenario's processes
    /// all run on these.
    pub all_cpus: Vec<usize>,
    /// The http scenario's wrk duration (5 s, or `--duration` with `--quick`).
    pub http_secs: f64,
}

/// Everything a run needs.
pub struct RunCtx {
    pub settings: Settings,
    pub launch: Launch,
    pub pattern: Arc<Pattern>,
}

/// Runs `sc` against `peer` once.
pub fn run_one(sc: Scenario, peer: &Peer, ctx: &RunCtx) -> BenchResult<Values> {
    match sc {
        Scenario::BulkUp => run_bulk_up(peer, ctx),
        Scenario::BulkDuplex => run_bulk_duplex(peer, ctx),
        Scenario::Rr1 => run_rr(peer, ctx, rr_config(sc, &ctx.settings)),
        Scenario::Rr100 => run_rr(peer, ctx, rr_config(sc, &ctx.settings)),
        Scenario::Churn => run_rr(peer, ctx, rr_config(sc, &ctx.settings)),
        Scenario::Idle => run_idle(peer, ctx),
        Scenario::Http => run_http(peer, ctx),
    }
}

/// The engine settings of the rr-style scenarios.
pub fn rr_config(sc: Scenario, s: &Settings) -> RrConfig {
    let (conns, msg, churn) = match sc {
        Scenario::Rr1 => (1, 64, false),
        Scenario::Churn => (50, 64, true),
        _ => (100, 1024, false),
    };
    RrConfig {
        conns,
        msg,
        churn,
        warmup: s.warmup,
        measure: s.measure,
    }
}

/// CPU and wakeups of the forwarder, the bench and everything else over a window.
pub struct Meter {
    pid: Option<u32>,
    before: Snapshot,
    /// The forwarder's CPUs and their busy seconds at the start (only when pinned).
    cores: Option<(Vec<usize>, f64)>,
}

/// What a `Meter` measured.
pub struct Usage {
    /// Forwarder CPU seconds (NaN without a forwarder process).
    pub cpu_s: f64,
    /// The user-space part of `cpu_s`.
    pub user_s: f64,
    /// Forwarder voluntary context switches (NaN without a process).
    pub wakeups: f64,
    /// Busy time of the forwarder's pinned CPU(s), softirq included (NaN when not pinned
    /// or without a process).
    pub core_s: f64,
    /// The bench process's CPU seconds (load generator and backends).
    pub bench_cpu_s: f64,
    /// CPU seconds of unrelated processes (a build running next to the benchmark).
    pub other_cpu_s: f64,
    /// CPU seconds the whole machine spent on the benchmark: forwarder, load generator,
    /// backends, kernel threads and interrupts, unrelated processes left out
    /// ([`Snapshot::machine_work_since`]). Measured for `direct` too.
    pub machine_s: f64,
    pub elapsed: Duration,
}

impl Meter {
    pub fn start(pid: Option<u32>, launch: &Launch) -> BenchResult<Meter> {
        let cores = match (pid, &launch.forwarder_cpus) {
            (Some(_), Some(cpus)) => Some((cpus.clone(), cpus_busy_seconds(cpus)?)),
            _ => None,
        };
        Ok(Meter {
            pid,
            before: Snapshot::take(pid)?,
            cores,
        })
    }

    pub fn stop(&self) -> BenchResult<Usage> {
        let after = Snapshot::take(self.pid)?;
        let (cpu_s, user_s, wakeups) = match self.pid {
            Some(_) => (
                after.fwd_cpu_s - self.before.fwd_cpu_s,
                after.fwd_user_s - self.before.fwd_user_s,
                after.fwd_wakeups.saturating_sub(self.before.fwd_wakeups) as f64,
            ),
            None => (f64::NAN, f64::NAN, f64::NAN),
        };
        let core_s = match &self.cores {
            Some((cpus, before)) => cpus_busy_seconds(cpus)? - before,
            None => f64::NAN,
        };
        let usage = Usage {
            cpu_s,
            user_s,
            wakeups,
            core_s,
            bench_cpu_s: after.bench_cpu_s - self.before.bench_cpu_s,
            other_cpu_s: after.others_since(&self.before),
            machine_s: after.machine_work_since(&self.before),
            elapsed: after.at - self.before.at,
        };
        // Say who disturbed the run, on the progress line, while the process still exists.
        if other_busy(&usage) > NOISY_PCT {
            if let Some((who, secs)) = after.top_other_since(&self.before) {
                eprint!(
                    "[warning: other processes used {:.0}% of a core, most {who} {secs:.2}s] ",
                    other_busy(&usage)
                );
            }
        }
        Ok(usage)
    }
}

/// Busy % of the load-generator cores over the window: near 100 means the numbers may
/// be limited by the load generator rather than by the forwarder.
fn loadgen_busy(u: &Usage, s: &Settings) -> f64 {
    100.0 * u.bench_cpu_s / (u.elapsed.as_secs_f64() * s.load_cpus.max(1) as f64)
}

/// Above this much CPU (in % of one core) used by unrelated processes during a measured
/// window, the run is flagged: the machine was not quiet.
pub const NOISY_PCT: f64 = 10.0;

/// CPU used by unrelated processes during the window, in % of one core.
fn other_busy(u: &Usage) -> f64 {
    100.0 * u.other_cpu_s / u.elapsed.as_secs_f64()
}

fn run_bulk_up(peer: &Peer, ctx: &RunCtx) -> BenchResult<Values> {
    let bytes = ctx.settings.bulk_bytes;
    let (baddr, backend) = start_bulk(Arc::clone(&ctx.pattern), bytes, 0)?;
    let mut fwd = peer::start(peer, baddr, &ctx.launch)?;
    let meter = Meter::start(fwd.pid(), &ctx.launch)?;
    let t0 = Instant::now();
    let client = match bulk_send(fwd.addr, &ctx.pattern, bytes) {
        Ok(client) => client,
        Err(e) => return Err(with_child_status(backend_cause(e, backend), &mut fwd)),
    };
    let report = join(backend, "bulk backend").map_err(|e| with_child_status(e, &mut fwd))?;
    let usage = meter.stop()?;
    fwd.check_alive()?;
    drop(client);
    let secs = (report.eof_at - t0).as_secs_f64();
    let gib = report.bytes as f64 / GIB;
    Ok(bulk_values(gib, secs, &usage, &ctx.settings))
}

fn run_bulk_duplex(peer: &Peer, ctx: &RunCtx) -> BenchResult<Values> {
    let bytes = ctx.settings.bulk_bytes;
    let (baddr, backend) = start_bulk(Arc::clone(&ctx.pattern), bytes, bytes)?;
    let mut fwd = peer::start(peer, baddr, &ctx.launch)?;
    let meter = Meter::start(fwd.pid(), &ctx.launch)?;
    let t0 = Instant::now();
    let client = match bulk_duplex(fwd.addr, &ctx.pattern, bytes) {
        Ok(client) => client,
        Err(e) => return Err(with_child_status(backend_cause(e, backend), &mut fwd)),
    };
    let server = join(backend, "bulk backend").map_err(|e| with_child_status(e, &mut fwd))?;
    let usage = meter.stop()?;
    fwd.check_alive()?;
    let secs = (client.eof_at.max(server.eof_at) - t0).as_secs_f64();
    let gib = (client.bytes + server.bytes) as f64 / GIB;
    Ok(bulk_values(gib, secs, &usage, &ctx.settings))
}

fn bulk_values(gib: f64, secs: f64, u: &Usage, s: &Settings) -> Values {
    vec![
        ("throughput", gib / secs),
        ("cpu_per_gib", u.cpu_s / gib),
        ("machine_per_gib", u.machine_s / gib),
        ("user_per_gib", u.user_s / gib),
        ("wakeups_per_gib", u.wakeups / gib),
        ("core_per_gib", u.core_s / gib),
        ("loadgen_cpu", loadgen_busy(u, s)),
        // What the sender and sink spent per GiB: with a zero-copy forwarder the sink reads
        // pages the sender wrote the whole chain of socket queues ago (tens of MiB, colder than
        // the L3), so this differs per peer although the load generator's work is the same.
        ("loadgen_per_gib", u.bench_cpu_s / gib),
        ("other_cpu", other_busy(u)),
    ]
}

fn run_rr(peer: &Peer, ctx: &RunCtx, cfg: RrConfig) -> BenchResult<Values> {
    let echo = start_echo()?;
    let mut fwd = peer::start(peer, echo.addr(), &ctx.launch)?;
    let pid = fwd.pid();
    let mut meter = None;
    let mut usage = None;
    let engine = RrEngine::new(fwd.addr, &ctx.pattern, cfg)?;
    let outcome = engine
        .run(|edge| {
            match (edge, &meter) {
                (Edge::Start, _) => meter = Some(Meter::start(pid, &ctx.launch)?),
                (Edge::End, Some(m)) => usage = Some(m.stop()?),
                (Edge::End, None) => {}
            }
            Ok(())
        })
        .map_err(|e| with_child_status(e, &mut fwd))?;
    fwd.check_alive()?;
    drop(fwd);
    echo.stop().ctx("echo server")?;
    let Some(usage) = usage else {
        return fail("rr run ended without a measured window");
    };
    Ok(rr_values(outcome, &usage, cfg, &ctx.settings))
}

fn rr_values(mut o: RrOutcome, u: &Usage, cfg: RrConfig, s: &Settings) -> Values {
    o.latencies_ns.sort_unstable();
    let secs = o.elapsed.as_secs_f64();
    let us = |p: f64| percentile(&o.latencies_ns, p) / 1e3;
    let loadgen = ("loadgen_cpu", loadgen_busy(u, s));
    let other = ("other_cpu", other_busy(u));
    if cfg.churn {
        let conns = o.connections as f64;
        return vec![
            ("cps", conns / secs),
            ("p99_ms", us(99.0) / 1e3),
            ("cpu_per_10k", u.cpu_s / conns * 1e4),
            ("machine_per_10k", u.machine_s / conns * 1e4),
            ("errors", o.errors as f64),
            ("user_per_10k", u.user_s / conns * 1e4),
            ("wakeups_per_conn", u.wakeups / conns),
            ("core_per_10k", u.core_s / conns * 1e4),
            loadgen,
            other,
        ];
    }
    let reqs = o.requests as f64;
    vec![
        ("rps", reqs / secs),
        ("p50_us", us(50.0)),
        ("p99_us", us(99.0)),
        ("p999_us", us(99.9)),
        ("cpu_per_100k", u.cpu_s / reqs * 1e5),
        ("machine_per_100k", u.machine_s / reqs * 1e5),
        ("user_per_100k", u.user_s / reqs * 1e5),
        ("wakeups_per_req", u.wakeups / reqs),
        ("core_per_100k", u.core_s / reqs * 1e5),
        loadgen,
        other,
    ]
}

/// Http: nginx, the forwarder and wrk on all CPUs; a one-second wrk run first (warm-up, not
/// measured: wrk counts whole seconds), then the measured one.
fn run_http(peer: &Peer, ctx: &RunCtx) -> BenchResult<Values> {
    let cpus = &ctx.settings.all_cpus;
    let nginx = http::Nginx::start(cpus)?;
    let launch = Launch {
        forwarder_cpus: Some(cpus.clone()),
        ..ctx.launch.clone()
    };
    let mut fwd = peer::start(peer, nginx.addr, &launch)?;
    http::run_wrk(fwd.addr, 1.0, cpus).map_err(|e| with_child_status(e, &mut fwd))?;
    let meter = Meter::start(fwd.pid(), &launch)?;
    let report = http::run_wrk(fwd.addr, ctx.settings.http_secs, cpus)
        .map_err(|e| with_child_status(e, &mut fwd))?;
    let u = meter.stop()?;
    fwd.check_alive()?;
    drop(fwd);
    drop(nginx);
    if report.requests == 0 {
        return fail("wrk completed no request");
    }
    let reqs = report.requests as f64;
    Ok(vec![
        ("rps", report.rps()),
        ("p99_ms", report.p99_ms),
        ("p50_ms", report.p50_ms),
        ("cpu_per_100k", u.cpu_s / reqs * 1e5),
        ("machine_per_100k", u.machine_s / reqs * 1e5),
        ("user_per_100k", u.user_s / reqs * 1e5),
        ("wakeups_per_req", u.wakeups / reqs),
        ("errors", report.errors as f64),
        ("other_cpu", other_busy(&u)),
    ])
}

/// Idle: RSS before, with `idle_pairs` established pairs, and after they all closed.
fn run_idle(peer: &Peer, ctx: &RunCtx) -> BenchResult<Values> {
    if !peer.has_process() {
        return Ok(Vec::new()); // nothing to measure without a forwarder process
    }
    let echo = start_echo()?;
    let mut fwd = peer::start(peer, echo.addr(), &ctx.launch)?;
    let Some(pid) = fwd.pid() else {
        return Ok(Vec::new());
    };
    // One connection first, so one-time lazy setup is not charged to the pairs; then wait
    // until the forwarder has closed it again.
    let fds0 = fd_count(pid)?;
    drop(open_idle(fwd.addr, &ctx.pattern, 1)?);
    settle_fds(pid, fds0)?;
    let rss0 = rss_bytes(pid)?;
    let n = ctx.settings.idle_pairs;
    let conns = open_idle(fwd.addr, &ctx.pattern, n).map_err(|e| with_child_status(e, &mut fwd))?;
    if !wait_until(Duration::from_secs(10), || {
        Ok(fd_count(pid)? >= fds0 + 2 * n)
    })? {
        return fail(format!(
            "forwarder holds {} fds, expected {} for {n} pairs",
            fd_count(pid)?,
            fds0 + 2 * n
        ));
    }
    std::thread::sleep(Duration::from_millis(200));
    let rss1 = rss_bytes(pid)?;
    drop(conns);
    settle_fds(pid, fds0).map_err(|e| with_child_status(e, &mut fwd))?;
    std::thread::sleep(Duration::from_millis(200));
    let rss2 = rss_bytes(pid)?;
    fwd.check_alive()?;
    drop(fwd);
    echo.stop().ctx("echo server")?;
    Ok(vec![
        ("pairs", n as f64),
        (
            "rss_per_pair_kib",
            (rss1 as f64 - rss0 as f64) / n as f64 / 1024.0,
        ),
        ("rss_peak_mib", rss1 as f64 / MIB),
        ("rss_after_close_mib", (rss2 as f64 - rss0 as f64) / MIB),
    ])
}

/// Waits until the forwarder's fd count is back to `target` (all pairs closed).
fn settle_fds(pid: u32, target: usize) -> BenchResult<()> {
    let mut last = 0;
    let reached = wait_until(Duration::from_secs(20), || {
        last = fd_count(pid)?;
        Ok(last <= target)
    })?;
    if !reached {
        return fail(format!(
            "forwarder still holds {last} fds (started with {target}) 20 s after all clients closed"
        ));
    }
    Ok(())
}

/// Joins a backend thread, turning a panic into an error.
fn join<T>(h: std::thread::JoinHandle<BenchResult<T>>, what: &str) -> BenchResult<T> {
    match h.join() {
        Ok(r) => r.ctx(what),
        Err(_) => fail(format!("{what} thread panicked")),
    }
}

/// How long a failed bulk client waits for the backend to finish, to learn whether it failed first.
const BACKEND_VERDICT: Duration = Duration::from_secs(1);

/// The client side of a bulk run failed (`e`). If the backend failed a byte check, that is the cause
/// to report: a sink that finds a corrupted byte stops reading and closes, and the client then sees
/// a reset, or stalls in a full window until its timeout. The sink's thread ends a moment after its
/// socket closes, so it gets [`BACKEND_VERDICT`] to finish; one still blocked then (both sides
/// waiting on a stalled forwarder) leaves the client's error as the report.
fn backend_cause(e: BenchError, backend: JoinHandle<BenchResult<SinkReport>>) -> BenchError {
    let until = Instant::now() + BACKEND_VERDICT;
    while !backend.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !backend.is_finished() {
        return e;
    }
    match join(backend, "bulk backend") {
        Err(cause) if is_data_error(&cause.0) => {
            BenchError(format!("{cause} (and then the client: {e})"))
        }
        _ => e,
    }
}

/// If the forwarder died, its exit status explains the load error better than the
/// socket error does; prefer it.
fn with_child_status(e: BenchError, fwd: &mut Running) -> BenchError {
    match fwd.check_alive() {
        Err(dead) => BenchError(format!("{e} ({dead})")),
        Ok(()) => e,
    }
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/compare.rs
mod tests {
    use super::*;

    fn finished<T: Send + 'static>(result: BenchResult<T>) -> JoinHandle<BenchResult<T>> {
        let handle = std::thread::spawn(move || result);
        while !handle.is_finished() {
            std::thread::yield_now();
        }
        handle
    }

    /// A bulk run whose backend failed a byte check (or panicked) reports that, not the client's
    /// reset or stall after it; any other backend error, or a backend still running, leaves the
    /// client's error as the report.
    #[test]
    fn test_a_bulk_failure_names_the_backends_error_first() {
        let client = || BenchError("bulk client send: no progress for 15s".into());
        let corrupted = finished(fail::<SinkReport>("corrupted stream: bytes 0..10 differ"));
        let err = backend_cause(client(), corrupted).0;
        assert!(err.starts_with("bulk backend: corrupted stream"), "{err}");
        assert!(
            err.ends_with("(and then the client: bulk client send: no progress for 15s)"),
            "{err}"
        );
        // Finished before it is judged: on a loaded machine a panicking thread (it prints its
        // message) can take longer than BACKEND_VERDICT to end.
        let panicked: JoinHandle<BenchResult<SinkReport>> =
            std::thread::spawn(|| panic!("test: a backend that panics"));
        while !panicked.is_finished() {
            std::thread::yield_now();
        }
        let err = backend_cause(client(), panicked).0;
        assert!(
            err.starts_with("bulk backend thread panicked (and then"),
            "{err}"
        );
        let stalled = finished(fail::<SinkReport>(
            "receive after 5 of 9 bytes: no progress for 15s",
        ));
        assert_eq!(backend_cause(client(), stalled).0, client().0);
        let fine = finished(Ok(SinkReport {
            bytes: 1,
            eof_at: Instant::now(),
        }));
        assert_eq!(backend_cause(client(), fine).0, client().0);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let running = std::thread::spawn(move || {
            let _ = wait.recv();
            fail::<SinkReport>("corrupted stream: too late to be the cause")
        });
        assert_eq!(backend_cause(client(), running).0, client().0);
        let _ = release.send(());
    }
}
