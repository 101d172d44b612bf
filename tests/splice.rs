//! `--splice`: the zero-copy path's own promises. (Every other end-to-end test also runs with
//! `EDGEFWD_TEST_SPLICE=off` and `=always`, which `.ci/run` does; the default is `auto`.)

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{connect, echo_roundtrip, sample, scrape, splice_forwarder, Backend, Forwarder};

/// Spare pipes a route keeps (src/upstream/route.rs MAX_SPARE_PIPES), two fds each.
const MAX_SPARE_PIPE_FDS: usize = 2 * 32;

#[test]
fn test_splice_forwards_byte_exact_without_fallback() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--splice"]);
    echo_roundtrip(fwd.addr(), 8 << 20, 64 * 1024);
    let close = fwd.wait_for_close("client-fin", Duration::from_secs(10));
    assert_eq!(close.c2u, Some(8 << 20));
    assert_eq!(close.u2c, Some(8 << 20));
    assert_eq!(
        fwd.count_log("falls back to the ring"),
        0,
        "splice fell back on a plain TCP pair:\n{}",
        fwd.logs()
    );
}

#[test]
fn test_splice_idle_pairs_hold_no_pipes() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--splice"]);
    let baseline = fwd.fd_count();
    let mut clients = Vec::new();
    for i in 0..100u32 {
        let mut client = connect(fwd.addr());
        let message = format!("hello {i}");
        client.write_all(message.as_bytes()).expect("write");
        let mut back = vec![0u8; message.len()];
        client.read_exact(&mut back).expect("echo");
        assert_eq!(back, message.as_bytes());
        clients.push(client);
    }
    // 100 idle pairs: two sockets each, plus at most the bounded pool of spare pipes. A pipe held per
    // direction would add 400 fds.
    let fds = fwd.fd_count();
    assert!(
        fds <= baseline + 2 * 100 + MAX_SPARE_PIPE_FDS,
        "{fds} fds for 100 idle pairs (baseline {baseline})"
    );
    drop(clients);
    assert!(
        common::wait_until(Duration::from_secs(10), || fwd.fd_count() <= baseline),
        "fds after every pair closed: {} (baseline {baseline}): spare pipes kept while idle",
        fwd.fd_count()
    );
}

#[test]
fn test_splice_falls_back_loudly_when_no_pipe_can_be_made() {
    let echo = Backend::echo();
    // Measure what the process needs with no pair, then allow exactly one pair's two sockets: the fd
    // budget has no slot for a pipe (and pipe2 would fail with EMFILE), so the pair must still
    // forward, over the ring, saying so.
    let upstream = echo.upstream_arg();
    let args = [
        "--upstream",
        &upstream,
        "--splice",
        "--max-connections",
        "1",
    ];
    let fwd = Forwarder::start_leaving_free(&args, 2);
    echo_roundtrip(fwd.addr(), 1 << 20, 16 * 1024);
    fwd.wait_for_close("client-fin", Duration::from_secs(10));
    fwd.expect_log("falls back to the ring", Duration::from_secs(5));
}

/// Pipes take their fds from the process's fd budget, never from the slots pairs hold: at RLIMIT_NOFILE
/// 42 the budget is (42 - 32) / 2 = 5 slots. Three streams at once hold three and want six pipes: two
/// get one, the others carry on through their rings, byte-exact, and each asks again when its ring next
/// fills (counted as shortages, not as lasting fallbacks).
#[test]
fn test_splice_fd_budget_keeps_extra_streams_on_their_rings() {
    let echo = Backend::echo();
    let fwd = splice_forwarder(&echo, "auto", &["--buffer-size", "4k"], Some(42));
    assert_eq!(fwd.fd_budget(), 5);
    let baseline = fwd.fd_count();
    // Long enough (32 MiB each) that the three overlap even on a loaded machine.
    let streams: Vec<_> = (0..3)
        .map(|_| {
            let addr = fwd.addr();
            std::thread::spawn(move || echo_roundtrip(addr, 32 << 20, 64 * 1024))
        })
        .collect();
    let mut most = baseline;
    while !streams.iter().all(|s| s.is_finished()) {
        most = most.max(fwd.fd_count());
        std::thread::sleep(Duration::from_millis(1));
    }
    for stream in streams {
        stream.join().expect("stream thread");
    }
    // Three pairs' sockets and two pipes. Without the budget, six pipes: 12 fds more than sockets.
    assert!(
        most <= baseline + 2 * 3 + 2 * 2,
        "{most} fds at the peak (baseline {baseline}): more than 2 pipes open"
    );
    let body = scrape(fwd.metrics_addr());
    assert!(
        sample(&body, "edgefwd_pipe_shortages_total") > 0,
        "no direction was kept from a pipe:\n{body}"
    );
    assert!(sample(&body, "edgefwd_splice_switches_total") >= 2);
    assert_eq!(sample(&body, "edgefwd_splice_fallbacks_total"), 0);
}

/// `--splice auto` (the default): a stream fills a ring and moves to pipes mid-transfer. The bytes read
/// into the ring before the switch must still go out before any spliced byte: the echo is checked
/// byte by byte, so a reordering at the switch fails here. Small rings and small pipes make the switch
/// happen early and the pipes fill often.
#[test]
fn test_splice_auto_switches_a_stream_to_pipes_in_order() {
    let echo = Backend::echo();
    let fwd = splice_forwarder(
        &echo,
        "auto",
        &["--buffer-size", "4k", "--pipe-size", "4k"],
        None,
    );
    echo_roundtrip(fwd.addr(), 8 << 20, 64 * 1024);
    let close = fwd.wait_for_close("client-fin", Duration::from_secs(10));
    assert_eq!(close.c2u, Some(8 << 20));
    assert_eq!(close.u2c, Some(8 << 20));
    let body = scrape(fwd.metrics_addr());
    assert_eq!(
        sample(&body, "edgefwd_splice_switches_total"),
        2,
        "both directions of the stream should have switched to pipes"
    );
    assert_eq!(sample(&body, "edgefwd_splice_fallbacks_total"), 0);
}

/// Request/response traffic never fills a ring, so `--splice auto` keeps it on the ring path (no pipe
/// syscalls per message).
#[test]
fn test_splice_auto_keeps_small_exchanges_on_the_ring() {
    let echo = Backend::echo();
    let fwd = splice_forwarder(&echo, "auto", &[], None);
    let mut client = connect(fwd.addr());
    for i in 0..200u32 {
        let message = format!("request {i}");
        client.write_all(message.as_bytes()).expect("write");
        let mut back = vec![0u8; message.len()];
        client.read_exact(&mut back).expect("echo");
        assert_eq!(back, message.as_bytes());
    }
    let body = scrape(fwd.metrics_addr());
    assert_eq!(sample(&body, "edgefwd_splice_switches_total"), 0);
}

/// `--splice off` never makes a pipe, however much a stream carries.
#[test]
fn test_splice_off_never_switches() {
    let echo = Backend::echo();
    let fwd = splice_forwarder(&echo, "off", &["--buffer-size", "4k"], None);
    echo_roundtrip(fwd.addr(), 4 << 20, 64 * 1024);
    let body = scrape(fwd.metrics_addr());
    assert_eq!(sample(&body, "edgefwd_splice_switches_total"), 0);
}

/// The switch under backpressure: the upstream reads nothing for a while, so the ring that triggered
/// the switch (larger than the socket's send buffer) is written out in pieces as the upstream drains.
/// Until the last piece is out, the pipe must stay empty; the sink checks every byte's position.
#[test]
fn test_splice_auto_switch_behind_a_stalled_reader_keeps_order() {
    let (sink, reports) = Backend::sink_stalled(Duration::from_millis(500));
    let fwd = Forwarder::start(&[
        "--upstream",
        &sink.upstream_arg(),
        "--splice",
        "auto",
        "--buffer-size",
        "8m",
        "--pipe-size",
        "16k",
    ]);
    let total = 32 << 20;
    let mut client = connect(fwd.addr());
    common::write_pattern(&mut client, total, 256 * 1024).expect("write");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let report = reports
        .recv_timeout(Duration::from_secs(20))
        .expect("sink report");
    assert_eq!(report.mismatch, None, "bytes reordered or corrupted");
    assert_eq!(report.bytes, total);
    assert_eq!(report.end, common::End::Eof);
}
