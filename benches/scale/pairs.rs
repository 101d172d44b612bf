//! The idle-pairs experiment: N established, silent pairs held by one edgefwd process while a fixed
//! rr100 load (100 connections, 1 KiB request/response, as `cargo bench --bench compare`'s rr100)
//! runs through the same process. One run per (N, repeat), each with a fresh edgefwd, so that
//! every RSS delta starts from the same state.
//!
//! A run: start the echo backends and edgefwd; a short unmeasured rr100 run warms the buffer pool
//! and allocator; edgefwd's RSS is read; the idle pairs are opened (each carries one verified echo,
//! so both of its sockets exist in edgefwd) and RSS is read again; then the measured rr100 window:
//! latency from the load generator, CPU and wakeups of the edgefwd process from /proc, and its
//! `epoll_wait` calls and events from its own counters (`--metrics`).
//!
//! Loopback sets its own limit: every connection to one address and port needs its own ephemeral
//! source port, and `ip_local_port_range` has ~28k of them. So past that edgefwd listens on several
//! ports (one route, several `listen` addresses) and forwards round-robin to as many echo backends;
//! the number is fixed for a whole benchmark so every N sees the same topology.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::backend::start_echo;
use crate::load::{open_idle, Edge, RrConfig, RrEngine};
use crate::pattern::Pattern;
use crate::stats::{bytes_per_pair, counter_per_request, cpu_us_per_request, parse_counters};
use crate::support::logs::{listen_addr, metrics_addr};
use crate::sys::{fd_count, rss_bytes, wait_until, Snapshot};
use crate::util::{fail, percentile, BenchResult, Context};

/// rr100's connections and message size (`scenario::rr_config` in the compare bench).
const RR_CONNS: usize = 100;
const RR_MSG: usize = 1024;

/// How long edgefwd may take to print all its `listening on` lines, and the pairs to settle.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What every run of one benchmark shares.
pub struct Setup {
    pub edgefwd: PathBuf,
    /// Listeners and echo backends (see the module doc).
    pub destinations: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Where the config files go.
    pub scratch: PathBuf,
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
pub struct PairsRun {
    pub pairs: usize,
    pub repeat: usize,
    /// edgefwd's RSS before and after the idle pairs were opened, bytes.
    pub rss_before: u64,
    pub rss_after: u64,
    /// The machine's kernel slab memory (/proc/meminfo `Slab`) grown while opening the pairs, per
    /// pair: the sockets' kernel side (four per pair, the bench's two included). Machine-wide, so
    /// other processes' allocations land in it too.
    pub slab_per_pair: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub rps: f64,
    pub cpu_us_per_req: f64,
    pub wakeups_per_req: f64,
    /// From edgefwd's own counters (`--metrics`): exact counts, untouched by the machine's noise.
    pub polls_per_req: f64,
    pub events_per_req: f64,
    /// CPU of other processes during the window, % of one core (the machine is shared).
    pub others_pct: f64,
    /// Seconds it took to open the idle pairs.
    pub open_s: f64,
}

impl PairsRun {
    pub fn per_pair_bytes(&self) -> f64 {
        bytes_per_pair(self.rss_before, self.rss_after, self.pairs).unwrap_or(f64::NAN)
    }
}

/// One run with `pairs` idle pairs.
pub fn run(setup: &Setup, pattern: &Pattern, pairs: usize, repeat: usize) -> BenchResult<PairsRun> {
    let echoes = (0..setup.destinations)
        .map(|_| start_echo())
        .collect::<BenchResult<Vec<_>>>()?;
    let upstreams: Vec<SocketAddr> = echoes.iter().map(|e| e.addr()).collect();
    let config = write_config(&setup.scratch, &upstreams, pairs)?;
    let mut fwd = Fwd::start(&setup.edgefwd, &config, setup.destinations)?;
    let result = measure(setup, pattern, &fwd, pairs, repeat);
    let alive = fwd.check_alive();
    drop(fwd);
    for echo in echoes {
        echo.stop().ctx("echo server")?;
    }
    let run = result?;
    alive?;
    Ok(run)
}

fn measure(
    setup: &Setup,
    pattern: &Pattern,
    fwd: &Fwd,
    pairs: usize,
    repeat: usize,
) -> BenchResult<PairsRun> {
    let pid = fwd.pid();
    let rr = |warmup, measure| RrConfig {
        conns: RR_CONNS,
        msg: RR_MSG,
        churn: false,
        warmup,
        measure,
    };
    let idle_fds = fd_count(pid)?;
    RrEngine::new(
        fwd.listen[0],
        pattern,
        rr(setup.warmup, Duration::from_millis(200)),
    )?
    .run(|_| Ok(()))
    .ctx("warm-up rr100")?;
    settle(pid, |fds| fds <= idle_fds, "the warm-up's pairs to close")?;
    let rss_before = rss_bytes(pid)?;
    let slab_before = slab_bytes()?;
    let opened = Instant::now();
    let idle = open_spread(&fwd.listen, pattern, pairs)?;
    let open_s = opened.elapsed().as_secs_f64();
    settle(
        pid,
        |fds| fds >= idle_fds + 2 * pairs,
        "every idle pair's upstream socket",
    )?;
    let rss_after = rss_bytes(pid)?;
    let slab_after = slab_bytes()?;
    let mut window = (None, None);
    let mut outcome = RrEngine::new(fwd.listen[0], pattern, rr(setup.warmup, setup.measure))?
        .run(|edge| {
            let edge_values = (Snapshot::take(Some(pid))?, scrape(fwd.metrics)?);
            match edge {
                Edge::Start => window.0 = Some(edge_values),
                Edge::End => window.1 = Some(edge_values),
            }
            Ok(())
        })
        .ctx("measured rr100")?;
    let (Some((start, counters0)), Some((end, counters1))) = window else {
        return fail("rr100 ended without a measured window");
    };
    drop(idle);
    outcome.latencies_ns.sort_unstable();
    let secs = (end.at - start.at).as_secs_f64();
    let requests = outcome.requests;
    Ok(PairsRun {
        pairs,
        repeat,
        rss_before,
        rss_after,
        slab_per_pair: bytes_per_pair(slab_before, slab_after, pairs).unwrap_or(f64::NAN),
        p50_us: percentile(&outcome.latencies_ns, 50.0) / 1e3,
        p99_us: percentile(&outcome.latencies_ns, 99.0) / 1e3,
        rps: requests as f64 / outcome.elapsed.as_secs_f64(),
        cpu_us_per_req: cpu_us_per_request(end.fwd_cpu_s - start.fwd_cpu_s, requests),
        wakeups_per_req: (end.fwd_wakeups - start.fwd_wakeups) as f64 / requests.max(1) as f64,
        polls_per_req: counter_per_request(&counters0, &counters1, "polls", requests),
        events_per_req: counter_per_request(&counters0, &counters1, "events", requests),
        others_pct: 100.0 * end.others_since(&start) / secs,
        open_s,
    })
}

/// Waits until edgefwd's open fd count satisfies `done`.
fn settle(pid: u32, done: impl Fn(usize) -> bool, what: &str) -> BenchResult<()> {
    let mut last = 0;
    let ok = wait_until(SETTLE_TIMEOUT, || {
        last = fd_count(pid)?;
        Ok(done(last))
    })?;
    if !ok {
        return fail(format!(
            "waited {SETTLE_TIMEOUT:?} for {what}: edgefwd holds {last} fds"
        ));
    }
    Ok(())
}

/// Opens `pairs` idle pairs spread evenly over the listeners.
fn open_spread(
    listen: &[SocketAddr],
    pattern: &Pattern,
    pairs: usize,
) -> BenchResult<Vec<Vec<TcpStream>>> {
    let per = pairs.div_ceil(listen.len());
    let mut left = pairs;
    let mut all = Vec::with_capacity(listen.len());
    for addr in listen {
        let n = per.min(left);
        all.push(
            open_idle(*addr, pattern, n).with_ctx(|| format!("open {n} idle pairs via {addr}"))?,
        );
        left -= n;
    }
    Ok(all)
}

/// One route: a listener per destination, the echo backends round-robin, room for every pair.
fn write_config(dir: &Path, upstreams: &[SocketAddr], pairs: usize) -> BenchResult<PathBuf> {
    let quoted = |items: Vec<String>| {
        items
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "metrics = \"127.0.0.1:0\"\n\n[[route]]\nname = \"scale\"\nlisten = [{}]\nupstreams = [{}]\nmax_connections = {}\n",
        quoted(vec!["127.0.0.1:0".to_string(); upstreams.len()]),
        quoted(upstreams.iter().map(SocketAddr::to_string).collect()),
        pairs + 2 * RR_CONNS + 1000,
    );
    let path = dir.join("scale.toml");
    std::fs::write(&path, text).with_ctx(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// edgefwd's counters, from its /metrics endpoint. The window's edges are read this way, at the cost
/// of two scrapes (a few syscalls each) inside it.
fn scrape(addr: SocketAddr) -> BenchResult<HashMap<String, u64>> {
    const TIMEOUT: Duration = Duration::from_secs(5);
    let what = || format!("scrape http://{addr}/metrics");
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).with_ctx(what)?;
    s.set_read_timeout(Some(TIMEOUT)).with_ctx(what)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: edgefwd\r\n\r\n")
        .with_ctx(what)?;
    let mut text = String::new();
    s.read_to_string(&mut text).with_ctx(what)?;
    let counters = parse_counters(&text);
    if counters.is_empty() {
        return fail(format!("{}: no counters in the reply", what()));
    }
    Ok(counters)
}

/// The machine's kernel slab memory, bytes.
fn slab_bytes() -> BenchResult<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ctx("read /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| crate::util::BenchError("no Slab line in /proc/meminfo".into()))
}

/// The edgefwd process of one run, started from a config file. The compare bench's `peer::start`
/// learns one listen address; this one needs every listener's, from the `listening on` lines.
/// Killed and reaped on drop.
struct Fwd {
    child: Child,
    listen: Vec<SocketAddr>,
    /// Its `--metrics` endpoint.
    metrics: SocketAddr,
}

impl Fwd {
    fn start(bin: &Path, config: &Path, listeners: usize) -> BenchResult<Fwd> {
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(config)
            // Per-connection logs are DEBUG: keep them off, or the run would measure logging.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_ctx(|| format!("start {}", bin.display()))?;
        let (tx, rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            // Drains stderr for the process's whole life, so edgefwd never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut fwd = Fwd {
            child,
            listen: Vec::new(),
            metrics: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        let mut metrics = None;
        while fwd.listen.len() < listeners || metrics.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = listen_addr(&line) {
                        fwd.listen.push(addr);
                    }
                    metrics = metrics.or_else(|| metrics_addr(&line));
                    seen.push(line);
                }
                Err(_) => {
                    return fail(format!(
                        "edgefwd printed {} of {listeners} 'listening on' lines{} in {START_TIMEOUT:?}: {}",
                        fwd.listen.len(),
                        if metrics.is_none() { " and no 'metrics on'" } else { "" },
                        seen.join(" | ")
                    ))
                }
            }
        }
        fwd.metrics = metrics.unwrap_or(fwd.metrics);
        Ok(fwd)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> BenchResult<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => fail(format!("edgefwd exited during the run ({status})")),
            Err(e) => fail(format!("edgefwd: wait: {e}")),
        }
    }
}

impl Drop for Fwd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
