//! Soak and limits: what a long-running edgefwd must not accumulate (fds, memory) and what hostile
//! or merely slow clients must not take from everyone else (CPU, latency). Each test prints its
//! figures (`cargo test --test soak -- --nocapture`); docs/soak.md lists them as measured.
//!
//! Bounds are loose on purpose: they fail on a leak or a stall, not on a busy machine.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use common::soak::{self, Drip, Latency};
use common::support::echo::EchoServer;
use common::support::nofile;
use common::{ConfigFile, Forwarder, Options};

/// Latency bound while slow or hostile clients are about: p99 under 100 ms and no worse than ten
/// times the quiet p99 plus 20 ms. A reactor stalled by them (a blocking read, a busy loop) misses
/// it by far; scheduling noise on a shared machine does not. The quiet samples are taken before and
/// after, so that they see the machine's noise too.
fn assert_latency_kept(what: &str, quiet: &[Duration], loaded: &[Duration]) {
    let (before, during) = (soak::percentile(quiet, 99), soak::percentile(loaded, 99));
    println!(
        "{what}: p99 of 32-byte echoes {:.2} ms quiet, {:.2} ms with them ({} and {} samples)",
        ms(before),
        ms(during),
        quiet.len(),
        loaded.len()
    );
    assert!(
        during < Duration::from_millis(100) && during <= before * 10 + Duration::from_millis(20),
        "{what}: p99 {:.2} ms against {:.2} ms quiet",
        ms(during),
        ms(before)
    );
}

/// How long the quiet latency is sampled, before and again after the slow or hostile clients.
const QUIET: Duration = Duration::from_secs(1);

/// The tests of this file run one at a time: each measures the process it loads, and the others'
/// load (64 client threads, ten thousand sockets) would be noise in its latency and CPU figures.
fn alone() -> MutexGuard<'static, ()> {
    static SOAK: Mutex<()> = Mutex::new(());
    SOAK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn upstream_flags(echo: &EchoServer) -> Vec<String> {
    echo.addrs()
        .iter()
        .flat_map(|addr| [String::from("--upstream"), addr.to_string()])
        .collect()
}

fn info_logs() -> Options {
    Options {
        rust_log: Some("info".into()),
        ..Options::default()
    }
}

/// Connections through edgefwd before the baseline is taken: the slab, the ring and pipe pools and
/// the allocator reach the size this concurrency needs.
const WARM_UP: usize = 2_000;
const SHORT_CONNECTIONS: usize = 100_000;
const CLIENT_THREADS: usize = 64;
/// How far VmRSS may end above the baseline: allocator noise (a freed slab page not returned, a
/// thread's arena). A leak of 32 bytes per connection would be 3 MiB.
const RSS_SLACK_KIB: u64 = 2 * 1024;

#[test]
fn test_100k_short_connections_leave_no_fd_or_memory_behind() {
    let _alone = alone();
    let echo = soak::echo_upstream(4);
    let flags = upstream_flags(&echo);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let fwd = Forwarder::start_with(&args, &info_logs());
    soak::short_connections(fwd.addr(), WARM_UP, CLIENT_THREADS);
    let settled = |fwd: &Forwarder| {
        // Closed pairs release their fds at once; wait for the last close to be processed.
        let mut last = fwd.fd_count();
        common::wait_until(Duration::from_secs(10), || {
            thread::sleep(Duration::from_millis(100));
            let now = fwd.fd_count();
            let stable = now == last;
            last = now;
            stable
        });
        (fwd.fd_count(), fwd.rss_kib())
    };
    let (fds_before, rss_before) = settled(&fwd);
    let started = Instant::now();
    soak::short_connections(fwd.addr(), SHORT_CONNECTIONS, CLIENT_THREADS);
    let took = started.elapsed();
    let back = common::wait_until(Duration::from_secs(15), || fwd.fd_count() <= fds_before);
    let (fds_after, rss_after) = settled(&fwd);
    println!(
        "{SHORT_CONNECTIONS} short connections ({CLIENT_THREADS} at once) in {:.1} s ({:.0}/s): \
         fds {fds_before} -> {fds_after}, VmRSS {rss_before} KiB -> {rss_after} KiB",
        took.as_secs_f64(),
        SHORT_CONNECTIONS as f64 / took.as_secs_f64()
    );
    assert!(
        back && fds_after <= fds_before,
        "fds {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after <= rss_before + RSS_SLACK_KIB,
        "VmRSS {rss_before} KiB -> {rss_after} KiB (more than {RSS_SLACK_KIB} KiB)"
    );
}

const IDLE_PAIRS: usize = 10_000;
/// Descriptors: this process holds both the client and the upstream end of every pair (2 per pair),
/// edgefwd two per pair; both get room for the rest (the other tests of this file run beside this
/// one in the same process; `--splice always` opens pipes while the pairs' first bytes move).
const FD_RESERVE: u64 = 2_048;
/// Where the hard limit cannot be raised (no CAP_SYS_RESOURCE), fewer pairs are held, but not fewer
/// than this.
const MIN_IDLE_PAIRS: usize = 2_000;

#[test]
fn test_10k_idle_pairs_cost_no_cpu_and_little_memory() {
    let _alone = alone();
    let want = 2 * IDLE_PAIRS as u64 + FD_RESERVE;
    let (limit, short) = nofile::raise_towards(want);
    let count = usize::try_from(limit.saturating_sub(FD_RESERVE) / 2)
        .unwrap_or(IDLE_PAIRS)
        .min(IDLE_PAIRS);
    if let Some(why) = short {
        if count < MIN_IDLE_PAIRS {
            println!("skipped: idle pairs need {want} fds: {why}");
            return;
        }
        println!("{why}: holding {count} idle pairs instead of {IDLE_PAIRS}");
    }
    let echo = soak::echo_upstream(1);
    let mut args = upstream_flags(&echo);
    // The default limit under `--splice` budgets pipes that idle pairs never open.
    args.extend([String::from("--max-connections"), (count + 64).to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let opts = Options {
        nofile: Some(limit),
        ..info_logs()
    };
    let fwd = Forwarder::start_with(&args, &opts);
    let addr = fwd.addr();
    // One pair through, so that what every pair's first bytes allocate is in the baseline.
    Latency::connect(addr, 1).sample(1);
    thread::sleep(Duration::from_millis(300));
    let rss_before = fwd.rss_kib();
    let pairs = hold_pairs(addr, count);
    thread::sleep(Duration::from_millis(500));
    let rss_held = fwd.rss_kib();
    let ticks_before = fwd.cpu_ticks();
    let window = Duration::from_secs(3);
    thread::sleep(window);
    let ticks = fwd.cpu_ticks() - ticks_before;
    let cpu_share = ticks as f64 / common::clock_ticks_per_sec() as f64 / window.as_secs_f64();
    let per_pair = rss_held.saturating_sub(rss_before) as f64 / count as f64;
    println!(
        "{count} idle pairs: VmRSS {rss_before} KiB -> {rss_held} KiB ({per_pair:.3} KiB per \
         pair); CPU over {window:?} idle: {ticks} ticks ({:.2} % of a core)",
        cpu_share * 100.0
    );
    assert!(
        cpu_share < 0.05,
        "idle pairs cost {:.1} % of a core",
        cpu_share * 100.0
    );
    assert!(per_pair < 4.0, "{per_pair:.3} KiB per idle pair");
    let mut pairs = pairs;
    for (n, stream) in pairs.iter_mut().enumerate().step_by(97) {
        let message = format!("pair {n} still works");
        stream.write_all(message.as_bytes()).expect("write");
        let mut back = vec![0u8; message.len()];
        stream.read_exact(&mut back).expect("echo after idling");
        assert_eq!(back, message.as_bytes());
    }
}

/// `count` pairs through edgefwd at `addr`, each proven end to end by a one-byte echo, from four
/// threads.
fn hold_pairs(addr: SocketAddr, count: usize) -> Vec<std::net::TcpStream> {
    let threads = 4;
    let workers: Vec<_> = (0..threads)
        .map(|worker| {
            thread::spawn(move || {
                (worker..count)
                    .step_by(threads)
                    .map(|n| {
                        let mut stream = common::connect(addr);
                        stream.write_all(b"!").expect("write");
                        let mut back = [0u8; 1];
                        stream
                            .read_exact(&mut back)
                            .unwrap_or_else(|err| panic!("pair {n}: {err}"));
                        stream
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|worker| worker.join().expect("pair opener"))
        .collect()
}

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const SLOW_CLIENTS_PER_ROUTE: usize = 150;
/// How late after its header deadline a slow client may be cut: the reactor's timer is exact to the
/// millisecond, the rest is this test's 20 ms polling and a busy machine.
const CUT_SLACK: Duration = Duration::from_millis(1_500);

#[test]
fn test_slow_clients_are_cut_at_the_header_deadline_and_others_keep_their_latency() {
    let _alone = alone();
    let echo = soak::echo_upstream(1);
    let upstream = &echo.addr().to_string();
    let timeout = format!("{}ms", HEADER_TIMEOUT.as_millis());
    let file = ConfigFile::new(&format!(
        "[[route]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{upstream}\"]\n\
         [[route]]\nname = \"proxied\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{upstream}\"]\n\
         accept_proxy = true\nheader_timeout = \"{timeout}\"\n\
         [[route]]\nname = \"connect\"\nlisten = \"127.0.0.1:0\"\nmode = \"connect\"\n\
         allow = [\"127.0.0.1:*\"]\nheader_timeout = \"{timeout}\"\n"
    ));
    let fwd = Forwarder::start_with(&["--config", file.path()], &info_logs());
    assert!(
        common::wait_until(Duration::from_secs(10), || fwd.count_log("listening on")
            == 3),
        "{}",
        fwd.logs()
    );
    let logs = fwd.logs();
    let route = |name| common::route_addr(&logs, name).expect("route address");
    let mut latency = Latency::connect(route("plain"), 4);
    let mut quiet = latency.sample_for(QUIET);
    let drip = Drip::start(
        vec![
            (
                route("proxied"),
                b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 80".to_vec(),
            ),
            (
                route("connect"),
                format!("CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\nX-Slow: yes")
                    .into_bytes(),
            ),
        ],
        SLOW_CLIENTS_PER_ROUTE,
        Duration::from_millis(200),
        HEADER_TIMEOUT * 3 + CUT_SLACK,
    );
    // Sampled until just past the deadline, when every slow client is cut at once.
    let loaded = latency.sample_for(HEADER_TIMEOUT + Duration::from_millis(300));
    let cuts = drip.join();
    quiet.extend(latency.sample_for(QUIET));
    let cut: Vec<Duration> = cuts.iter().flatten().copied().collect();
    let (first, last) = (
        cut.iter().min().copied().unwrap_or_default(),
        cut.iter().max().copied().unwrap_or_default(),
    );
    println!(
        "{} slow clients (PROXY and CONNECT, a byte every 200 ms), header timeout {HEADER_TIMEOUT:?}: \
         cut after {:.0} to {:.0} ms",
        cuts.len(),
        ms(first),
        ms(last)
    );
    assert_eq!(cut.len(), cuts.len(), "slow clients never cut");
    assert!(
        first >= HEADER_TIMEOUT - Duration::from_millis(50) && last <= HEADER_TIMEOUT + CUT_SLACK,
        "cut after {first:?} to {last:?}, deadline {HEADER_TIMEOUT:?}"
    );
    assert_latency_kept("forwarding beside slow clients", &quiet, &loaded);
}

#[test]
fn test_hostile_metrics_clients_neither_slow_forwarding_nor_silence_the_endpoint() {
    let _alone = alone();
    let echo = soak::echo_upstream(1);
    let flags = upstream_flags(&echo);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["--metrics", "127.0.0.1:0"]);
    let fwd = Forwarder::start_with(&args, &info_logs());
    let metrics = fwd.metrics_addr();
    let mut latency = Latency::connect(fwd.addr(), 4);
    let mut quiet = latency.sample_for(QUIET);
    let window = Duration::from_secs(3);
    let hostile = soak::hostile_scrapers(metrics, window);
    thread::sleep(Duration::from_millis(500));
    let loaded = latency.sample_for(window - Duration::from_millis(800));
    hostile.join().expect("hostile clients");
    quiet.extend(latency.sample_for(QUIET));
    assert_latency_kept("forwarding beside hostile scrapers", &quiet, &loaded);
    let body = common::scrape(metrics);
    assert!(
        common::sample(&body, "edgefwd_accepts_total") >= 4,
        "a scrape after the abuse: {body}"
    );
}
