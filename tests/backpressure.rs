//! Backpressure: a stalled reader makes the forwarder stop reading the other side instead of
//! buffering; memory stays bounded by the rings; and every ring size works.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const TOTAL: u64 = 200 << 20;
/// What the forwarder may add to its RSS while one pair is stalled with 64 KiB rings.
const RSS_BOUND_KIB: u64 = 32 * 1024;

/// The largest RSS seen over `period`, sampled every 20ms.
fn max_rss_over(fwd: &Forwarder, period: Duration) -> u64 {
    let deadline = Instant::now() + period;
    let mut max = 0;
    while Instant::now() < deadline {
        max = max.max(fwd.rss_kib());
        thread::sleep(Duration::from_millis(20));
    }
    max
}

#[test]
fn test_established_client_stalled_upstream_floods() {
    let (source, reports) = Backend::source(TOTAL);
    let fwd = Forwarder::start(&["--upstream", &source.upstream_arg(), "--buffer-size", "64k"]);
    let baseline = fwd.rss_kib();
    let mut client = connect(fwd.addr());
    assert!(wait_until(Duration::from_secs(5), || source.accepted() == 1));

    let peak = max_rss_over(&fwd, Duration::from_secs(2));
    assert!(
        peak < baseline + RSS_BOUND_KIB,
        "RSS grew from {baseline} KiB to {peak} KiB while the client did not read"
    );
    assert_eq!(
        reports.try_recv().err(),
        Some(TryRecvError::Empty),
        "the upstream could write all {TOTAL} bytes to a client that reads nothing"
    );

    let mut checker = PatternChecker::default();
    let mut buf = vec![0u8; 256 * 1024];
    let end = loop {
        match client.read(&mut buf) {
            Ok(0) => break End::Eof,
            Ok(n) => checker.check(&buf[..n]),
            Err(e) => break classify(&e),
        }
    };
    assert_eq!(end, End::Eof, "after {} bytes", checker.offset);
    assert_eq!(checker.offset, TOTAL);
    assert_eq!(checker.mismatch, None);
    let report = reports
        .recv_timeout(Duration::from_secs(5))
        .expect("source report");
    assert_eq!(report.end, End::Eof);
    client.shutdown(Shutdown::Write).expect("shutdown");
    fwd.wait_for_close("upstream-fin", Duration::from_secs(5));
}

#[test]
fn test_established_upstream_stalled_client_floods() {
    let stall = Duration::from_secs(3);
    let (sink, reports) = Backend::sink_stalled(stall);
    let fwd = Forwarder::start(&["--upstream", &sink.upstream_arg(), "--buffer-size", "64k"]);
    let baseline = fwd.rss_kib();
    let mut client = connect(fwd.addr());
    let mut writer_side = client.try_clone().expect("try_clone");
    let writer = thread::spawn(move || -> io::Result<()> {
        write_pattern(&mut writer_side, TOTAL, 256 * 1024)?;
        writer_side.shutdown(Shutdown::Write)
    });
    assert!(wait_until(Duration::from_secs(5), || sink.accepted() == 1));

    let peak = max_rss_over(&fwd, Duration::from_secs(2));
    assert!(
        peak < baseline + RSS_BOUND_KIB,
        "RSS grew from {baseline} KiB to {peak} KiB while the upstream did not read"
    );
    assert!(
        !writer.is_finished(),
        "the client could write all {TOTAL} bytes to an upstream that reads nothing"
    );

    let report = reports
        .recv_timeout(Duration::from_secs(60))
        .expect("sink report");
    writer
        .join()
        .expect("writer thread")
        .expect("client writes everything");
    assert_eq!(report.end, End::Eof, "{report:?}");
    assert_eq!(report.bytes, TOTAL);
    assert_eq!(report.mismatch, None);
    let (data, end) = read_until_end(&mut client, Duration::from_secs(10));
    assert!(data.is_empty());
    assert_eq!(end, End::Eof);
    fwd.wait_for_close("client-fin", Duration::from_secs(5));
}

/// An upstream that reads only when told: each offset received on `until` is read up to (pattern-checked),
/// `u64::MAX` reads to EOF and ends with the report.
fn upstream_reading_on_command() -> (Backend, mpsc::Sender<u64>, mpsc::Receiver<ConnReport>) {
    let (until_tx, until_rx) = mpsc::channel::<u64>();
    let (report_tx, reports) = mpsc::channel();
    let (until_rx, report_tx) = (Mutex::new(until_rx), Mutex::new(report_tx));
    let upstream = Backend::spawn(loopback4(), move |mut s| {
        let mut checker = PatternChecker::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut end = None;
        while let Ok(until) = until_rx.lock().expect("commands").recv_timeout(IO_TIMEOUT) {
            while end.is_none() && checker.offset < until {
                let want = (until - checker.offset).min(buf.len() as u64) as usize;
                match s.read(&mut buf[..want]) {
                    Ok(0) => end = Some(End::Eof),
                    Ok(n) => checker.check(&buf[..n]),
                    Err(e) => end = Some(classify(&e)),
                }
            }
            if end.is_some() || until == u64::MAX {
                break;
            }
        }
        let report = ConnReport {
            bytes: checker.offset,
            mismatch: checker.mismatch,
            end: end.unwrap_or(End::TimedOut),
        };
        let _ = report_tx.lock().expect("report").send(report);
    });
    (upstream, until_tx, reports)
}

/// Bytes the forwarder has written upstream.
fn forwarded(metrics: SocketAddr) -> u64 {
    sample(&scrape(metrics), "edgefwd_bytes_total{direction=\"c2u\"}")
}

/// Whether the forwarder's one pair has a socket muted now (pauses minus resumes).
fn muted(metrics: SocketAddr) -> bool {
    let body = scrape(metrics);
    sample(&body, "edgefwd_read_pauses_total") > sample(&body, "edgefwd_read_resumes_total")
}

/// A forwarder with 16 KiB rings in front of [`upstream_reading_on_command`], and one client whose
/// client-to-upstream direction has been filled until stalled and then trickled into until muted.
struct Muted {
    /// Kept alive for the pair's life.
    _upstream: Backend,
    read_until: mpsc::Sender<u64>,
    reports: mpsc::Receiver<ConnReport>,
    fwd: Forwarder,
    metrics: SocketAddr,
    client: TcpStream,
    /// Bytes the client has sent so far.
    sent: u64,
}

impl Muted {
    fn new() -> Muted {
        let (upstream, read_until, reports) = upstream_reading_on_command();
        let upstream_arg = upstream.upstream_arg();
        let fwd = Forwarder::start(&[
            "--upstream",
            &upstream_arg,
            "--buffer-size",
            "16k",
            "--metrics",
            "127.0.0.1:0",
        ]);
        let metrics = fwd.metrics_addr();
        let client = connect(fwd.addr());
        client.set_nodelay(true).expect("nodelay");
        let mut pair = Muted {
            _upstream: upstream,
            read_until,
            reports,
            fwd,
            metrics,
            client,
            sent: 0,
        };
        pair.fill_until_stalled();
        pair.trickle_until_muted();
        pair
    }

    /// One counter of a fresh scrape.
    fn counter(&self, name: &str) -> u64 {
        sample(&scrape(self.metrics), name)
    }

    /// Writes the next `len` pattern bytes of the stream; returns the stream offset after them.
    fn send_next(&mut self, len: usize) -> u64 {
        self.client
            .write_all(pattern(self.sent, len))
            .expect("write");
        self.sent += len as u64;
        self.sent
    }

    /// Sends 16 KiB chunks until the c2u direction stalls on an upstream that reads nothing. A run that
    /// ended on a full ring is not enough (a send buffer can be full for a moment, and an upstream whose
    /// receive buffer grew while it read earlier takes megabytes more): stalled means bytes are held back
    /// from the upstream and that stays so for 100 ms.
    fn fill_until_stalled(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let before = self.counter("edgefwd_reads_ring_full_total");
            while self.counter("edgefwd_reads_ring_full_total") == before {
                assert!(
                    Instant::now() < deadline,
                    "no backpressure stall after {} bytes",
                    self.sent
                );
                self.send_next(16 * 1024);
            }
            let held_back = forwarded(self.metrics);
            thread::sleep(Duration::from_millis(100));
            if forwarded(self.metrics) == held_back && held_back < self.sent {
                return;
            }
        }
    }

    /// Sends 512-byte segments, 2 ms apart, until the forwarder has muted the blocked c2u socket (it may
    /// have done so already, on a chunk that arrived after the stall). At most 64: enough to fill a
    /// 16 KiB ring that the last write upstream had partly drained (the first edges then bring data the
    /// ring can take; only the next one is wasted).
    fn trickle_until_muted(&mut self) {
        for _ in 0..64 {
            if muted(self.metrics) {
                return;
            }
            self.send_next(512);
            thread::sleep(Duration::from_millis(2));
        }
        let body = scrape(self.metrics);
        let counters: Vec<String> = [
            "read_pauses_total",
            "read_resumes_total",
            "reads_ring_full_total",
            "reads_total",
            "reads_short_total",
            "reads_would_block_total",
            "polls_total",
            "spurious_wakeups_total",
        ]
        .iter()
        .map(|name| format!("{name}={}", sample(&body, &format!("edgefwd_{name}"))))
        .collect();
        assert!(
            muted(self.metrics),
            "64 segments reached a blocked direction, and its socket was never muted ({} sent, {} forwarded; {})",
            self.sent,
            forwarded(self.metrics),
            counters.join(" ")
        );
    }

    /// Three 16 KiB chunks, each read by the upstream and then forwarded in full; `what` says which
    /// failed.
    fn chunks_flow(&mut self, what: &str) {
        for _ in 0..3 {
            let target = self.send_next(16 * 1024);
            self.read_until.send(target).expect("command");
            assert!(
                wait_until(IO_TIMEOUT, || forwarded(self.metrics) == target),
                "{what}"
            );
        }
    }

    /// The client half-closes, the upstream reads everything: it got all bytes sent intact and then the
    /// FIN (`what` if not), and the pair closes as a client FIN.
    fn fin_passes_with_every_byte(self, what: &str) {
        self.client.shutdown(Shutdown::Write).expect("shutdown");
        self.read_until.send(u64::MAX).expect("command");
        let report = self
            .reports
            .recv_timeout(IO_TIMEOUT)
            .expect("upstream report");
        assert_eq!(report.bytes, self.sent, "{report:?}");
        assert_eq!(report.mismatch, None);
        assert_eq!(report.end, End::Eof, "{what}");
        self.fwd
            .wait_for_close("client-fin", Duration::from_secs(5));
    }
}

/// A direction blocked by a full ring (or pipe) mutes its socket's read events: segments that keep
/// arriving from the client while the upstream reads nothing do not wake the loop one by one. Once the
/// upstream drains it, the socket is read from again on new edges; and a second stall with a FIN arriving
/// while muted still delivers every byte and the FIN.
#[test]
fn test_blocked_direction_is_not_woken_by_each_arriving_segment() {
    let mut pair = Muted::new();
    // Muted: more segments arrive, and the loop sleeps through them. Only the scrapes cost polls.
    let quiet = {
        let first = pair.counter("edgefwd_polls_total");
        thread::sleep(Duration::from_millis(50));
        pair.counter("edgefwd_polls_total") - first
    };
    let before = pair.counter("edgefwd_polls_total");
    for _ in 0..30 {
        pair.send_next(512);
        thread::sleep(Duration::from_millis(5));
    }
    let polls = pair.counter("edgefwd_polls_total") - before;
    assert!(
        polls <= quiet + 3,
        "{polls} polls ({quiet} for the scrapes alone) while 30 segments reached a muted socket"
    );

    // Drained, the socket must be read from again on the next edge, chunk after chunk.
    let (sent, metrics) = (pair.sent, pair.metrics);
    pair.read_until.send(sent).expect("command");
    assert!(
        wait_until(IO_TIMEOUT, || forwarded(metrics) == sent),
        "only {} of {sent} bytes forwarded once the upstream read again",
        forwarded(metrics)
    );
    assert!(!muted(metrics), "drained, yet still muted");
    pair.chunks_flow("a chunk sent after the stall was not forwarded: the socket stayed muted");

    // A second stall, with the FIN arriving while muted.
    pair.fill_until_stalled();
    pair.trickle_until_muted();
    pair.fin_passes_with_every_byte("the FIN that came while muted is passed on");
}

/// A socket known to be writable stops write events once a redundant EPOLLOUT edge has come, and every
/// byte still flows. Taking a muted socket back for reads re-registers it, and `EPOLL_CTL_MOD` reports
/// EPOLLOUT on the writable client socket at once: an edge that used to wake the loop for nothing (a
/// spurious wakeup each stall). Then a second stall, which needs the upstream socket's EPOLLOUT edges
/// whatever the first one dropped, and a FIN.
#[test]
fn test_redundant_epollout_drops_write_interest_and_bytes_still_flow() {
    let mut pair = Muted::new();
    pair.read_until.send(pair.sent).expect("command");
    assert!(
        wait_until(IO_TIMEOUT, || !muted(pair.metrics)),
        "drained, yet still muted"
    );
    assert!(
        wait_until(IO_TIMEOUT, || pair.counter("edgefwd_write_drops_total") >= 1),
        "the client socket was taken back for reads and kept its write interest (write drops {}, spurious wakeups {})",
        pair.counter("edgefwd_write_drops_total"),
        pair.counter("edgefwd_spurious_wakeups_total")
    );
    pair.chunks_flow("a chunk sent after the write interest was dropped was not forwarded");

    pair.fill_until_stalled();
    pair.fin_passes_with_every_byte("the FIN is passed on");
}

#[test]
fn test_buffer_size_flag_forms() {
    let echo = Backend::echo();
    for size in ["4096", "16k", "64K", "1m", "64KiB"] {
        let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--buffer-size", size]);
        echo_roundtrip(fwd.addr(), 4 << 20, 100_003);
        let close = fwd.wait_for_close("client-fin", Duration::from_secs(5));
        assert_eq!(close.c2u, Some(4 << 20), "--buffer-size {size}");
    }
}

/// After a peak of thousands of pairs, all closed, the forwarder's RSS is back near where it started:
/// the slots that held the pairs are given back, not kept for a peak that may never return.
#[test]
fn test_rss_returns_after_a_peak_of_pairs_closes() {
    const PAIRS: usize = 4000;
    let listener = listen_socket(loopback4(), 4096);
    let upstream = listener.local_addr().expect("local_addr");
    // The upstream holds every connection it is given, without traffic.
    let holder = thread::spawn(move || {
        let mut held = Vec::with_capacity(PAIRS + 1);
        while held.len() <= PAIRS {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => break,
            }
        }
        held
    });
    let fwd = Forwarder::start(&["--upstream", &upstream.to_string()]);
    // A warm-up pair, reset so that it closes at once whichever way the race between the client
    // leaving and the upstream connect goes (a FIN that lost that race would leave the pair
    // half-closed until --fin-timeout: the upstream holds on).
    reset(connect(fwd.addr()));
    fwd.wait_for_n_closes(1, Duration::from_secs(5));
    let (fds_before, rss_before) = (fwd.fd_count(), fwd.rss_kib());

    let clients: Vec<_> = (0..PAIRS).map(|_| connect(fwd.addr())).collect();
    assert!(
        wait_until(Duration::from_secs(20), || fwd.fd_count()
            >= fds_before + 2 * PAIRS),
        "{} fds with {PAIRS} pairs open ({fds_before} before)",
        fwd.fd_count()
    );
    let rss_peak = fwd.rss_kib();
    // Resets, so each pair closes at once (a FIN would leave it half-closed: the upstream holds on).
    clients.into_iter().for_each(reset);
    assert!(
        wait_until(Duration::from_secs(20), || fwd.fd_count() <= fds_before),
        "{} fds after every client left ({fds_before} before)",
        fwd.fd_count()
    );
    let rss_after = fwd.rss_kib();
    assert!(
        rss_after < rss_before + 1024,
        "RSS {rss_before} KiB at start, {rss_peak} KiB with {PAIRS} pairs, {rss_after} KiB after they closed"
    );
    drop(fwd);
    let _ = std::net::TcpStream::connect(upstream);
    let _ = holder.join();
}
