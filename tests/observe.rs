//! Reactor introspection: the `--metrics` endpoint, `--trace` and `--stats-interval`, over real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{echo_roundtrip, http_get, sample, scrape, Backend, Forwarder, Options, IO_TIMEOUT};

/// An echo backend and a forwarder to it serving `--metrics` (plus `extra` flags), and the metrics
/// address. The backend is returned to keep it alive.
fn echo_with_metrics(extra: &[&str]) -> (Backend, Forwarder, std::net::SocketAddr) {
    let backend = Backend::echo();
    let upstream = backend.upstream_arg();
    let mut args = vec!["--upstream", &upstream, "--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let fwd = Forwarder::start(&args);
    let metrics = fwd.metrics_addr();
    (backend, fwd, metrics)
}

#[test]
fn test_metrics_scrape_is_prometheus_text_and_counters_move() {
    let (_backend, fwd, metrics) = echo_with_metrics(&[]);

    let before = scrape(metrics);
    for line in before.lines() {
        let well_formed = line.starts_with("# HELP edgefwd_")
            || line.starts_with("# TYPE edgefwd_")
            || (line.starts_with("edgefwd_")
                && line
                    .rsplit_once(' ')
                    .is_some_and(|(_, value)| value.parse::<u64>().is_ok()));
        assert!(well_formed, "not Prometheus text format: {line:?}");
    }
    assert_eq!(sample(&before, "edgefwd_accepts_total"), 0);
    assert_eq!(sample(&before, "edgefwd_pairs_open"), 0);

    echo_roundtrip(fwd.addr(), 300_000, 16 * 1024);
    fwd.wait_for_close("client-fin", Duration::from_secs(10));

    let after = scrape(metrics);
    assert_eq!(sample(&after, "edgefwd_accepts_total"), 1);
    assert_eq!(sample(&after, "edgefwd_connects_ok_total"), 1);
    assert_eq!(
        sample(&after, "edgefwd_bytes_total{direction=\"c2u\"}"),
        300_000
    );
    assert_eq!(
        sample(&after, "edgefwd_bytes_total{direction=\"u2c\"}"),
        300_000
    );
    assert_eq!(
        sample(&after, "edgefwd_closes_total{cause=\"client-fin\"}"),
        1
    );
    assert_eq!(sample(&after, "edgefwd_pairs_open"), 0);
    assert!(sample(&after, "edgefwd_polls_total") > sample(&before, "edgefwd_polls_total"));
    assert!(
        sample(&after, "edgefwd_reads_total") >= 2,
        "at least one data read and the EOF read"
    );
    assert!(
        sample(&after, "edgefwd_reads_eof_total") >= 2,
        "one FIN each way"
    );
    assert_eq!(
        sample(&after, "edgefwd_read_bytes_sum"),
        600_000,
        "the read-size histogram saw every byte"
    );
    assert_eq!(sample(&after, "edgefwd_loop_guard_trips_total"), 0);
}

#[test]
fn test_metrics_unknown_path_and_method() {
    let (_backend, _fwd, metrics) = echo_with_metrics(&[]);
    assert_eq!(http_get(metrics, "/").0, "HTTP/1.1 404 Not Found");
    let mut stream = TcpStream::connect(metrics).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
        .write_all(b"DELETE /metrics HTTP/1.1\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
}

#[test]
fn test_idle_process_makes_no_wakeups() {
    // epoll_wait must block without a timeout when nothing is pending: over a second of idleness the
    // only polls are the ones the scrapes themselves cause (the first one's last: its client's FIN,
    // which the endpoint waits for before closing).
    let (_backend, _fwd, metrics) = echo_with_metrics(&[]);
    let first = sample(&scrape(metrics), "edgefwd_polls_total");
    std::thread::sleep(Duration::from_millis(1500));
    let second = sample(&scrape(metrics), "edgefwd_polls_total");
    assert!(
        second - first <= 5,
        "{} polls while idle: something wakes the loop periodically",
        second - first
    );
}

#[test]
fn test_trace_shows_events_and_transitions() {
    let backend = Backend::echo();
    let opts = Options {
        rust_log: Some("info".into()),
        ..Options::default()
    };
    let fwd = Forwarder::start_with(&["--upstream", &backend.upstream_arg(), "--trace"], &opts);
    echo_roundtrip(fwd.addr(), 10_000, 4096);
    for needle in [
        "event conn=1 side=Client slot=0 readable",
        "event conn=1 side=Upstream slot=0 ",
        "conn=1 Connecting => Established",
        "conn=1 c2u Open => Draining",
        "conn=1 c2u Draining => Closed",
        "conn=1 u2c Draining => Closed",
    ] {
        fwd.expect_log(needle, Duration::from_secs(10));
    }
}

#[test]
fn test_no_trace_lines_without_the_flag() {
    let backend = Backend::echo();
    let opts = Options {
        rust_log: Some("debug".into()),
        ..Options::default()
    };
    let fwd = Forwarder::start_with(&["--upstream", &backend.upstream_arg()], &opts);
    echo_roundtrip(fwd.addr(), 10_000, 4096);
    fwd.wait_for_close("client-fin", Duration::from_secs(10));
    assert_eq!(fwd.count_log("TRACE"), 0, "{}", fwd.logs());
}

#[test]
fn test_stats_interval_logs_deltas() {
    let backend = Backend::echo();
    let opts = Options {
        rust_log: Some("info".into()),
        ..Options::default()
    };
    let fwd = Forwarder::start_with(
        &[
            "--upstream",
            &backend.upstream_arg(),
            "--stats-interval",
            "200ms",
        ],
        &opts,
    );
    echo_roundtrip(fwd.addr(), 50_000, 4096);
    // The exchange may straddle two intervals, so add the deltas of every line.
    let total = |key: &str| -> u64 {
        fwd.logs()
            .lines()
            .filter(|line| line.contains("stats: "))
            .filter_map(|line| {
                let value = line.split_once(&format!(" {key}=+"))?.1;
                value.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
    };
    let complete = common::wait_until(Duration::from_secs(10), || {
        total("closes") == 1 && total("u2c") == 50_000
    });
    assert!(complete, "stats lines:\n{}", fwd.logs());
    assert_eq!(total("accepts"), 1);
    assert_eq!(total("c2u"), 50_000);
}

/// Starts a forwarder with `args` (and `--metrics`), opens 20 pairs that each send `preamble(i)` and one
/// echoed ping, then leaves them idle for `idle`; returns how many polls the loop made meanwhile.
fn polls_over_idle_pairs(args: &[&str], preamble: impl Fn(usize) -> String, idle: Duration) -> u64 {
    let (_backend, fwd, metrics) = echo_with_metrics(args);
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut client = common::connect(fwd.addr());
        client.write_all(preamble(i).as_bytes()).expect("preamble");
        client.write_all(b"ping").expect("write");
        let mut back = [0u8; 4];
        client.read_exact(&mut back).expect("echo");
        clients.push(client);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Besides the second scrape, the first one's FIN (its lingering close) costs a poll.
    let first = sample(&scrape(metrics), "edgefwd_polls_total");
    std::thread::sleep(idle);
    let second = sample(&scrape(metrics), "edgefwd_polls_total");
    second - first
}

#[test]
fn test_established_idle_pair_makes_no_wakeups() {
    // The connect deadline of an established pair (with no idle timeout) must be cancelled, not left
    // to wake the loop once for nothing when it comes due.
    let polls = polls_over_idle_pairs(
        &["--connect-timeout", "300ms"],
        |_| String::new(),
        Duration::from_millis(1200),
    );
    assert!(
        polls <= 5,
        "{polls} polls with 20 idle pairs: stale connect deadlines woke the loop"
    );
}

#[test]
fn test_greeted_idle_pair_makes_no_wakeups() {
    // A greeting pair arms its header deadline, then the earlier connect deadline replaces it. The
    // replaced entry must go too, or it wakes the loop when the header timeout would have come due.
    let polls = polls_over_idle_pairs(
        &[
            "--accept-proxy",
            "--header-timeout",
            "1s",
            "--connect-timeout",
            "300ms",
        ],
        |i| format!("PROXY TCP4 192.0.2.1 127.0.0.1 {} 80\r\n", 1000 + i),
        Duration::from_millis(1500),
    );
    assert!(
        polls <= 5,
        "{polls} polls with 20 idle greeted pairs: replaced deadlines woke the loop"
    );
}

#[test]
fn test_idle_metrics_connections_cannot_starve_a_scrape() {
    // A client holds more connections to the metrics port than the responder keeps, sending
    // nothing; a real scrape must still be answered (the oldest idler makes room).
    let (_backend, _fwd, metrics) = echo_with_metrics(&[]);
    let idlers: Vec<_> = (0..80).map(|_| common::connect(metrics)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let body = scrape(metrics);
    assert!(body.contains("edgefwd_polls_total"), "{body}");
    drop(idlers);
}

/// A scrape that arrives while the process is out of fds waits out the accept pause and is answered
/// once fds are free, with no second scrape to announce it: the metrics listener's edge is kept, not
/// dropped, when accept(2) fails with EMFILE.
#[test]
fn test_scrape_queued_under_emfile_is_answered_when_fds_free() {
    let backend = Backend::echo();
    let upstream = backend.upstream_arg();
    let args = [
        "--upstream",
        &upstream,
        "--metrics",
        "127.0.0.1:0",
        "--max-connections",
        "1000",
    ];
    // Room for exactly one pair's two sockets.
    let fwd = Forwarder::start_leaving_free(&args, 2);
    let mut client = common::connect(fwd.addr());
    client.write_all(b"ping").expect("write");
    let mut back = [0u8; 4];
    client.read_exact(&mut back).expect("echo");

    let mut scrape = TcpStream::connect(fwd.metrics_addr()).expect("connect to metrics");
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("request");
    fwd.expect_log("metrics accept failed", Duration::from_secs(5));
    // Out of fds for a while: several pauses go by with the scrape still queued.
    scrape
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let early = scrape.read(&mut [0u8; 1]);
    assert!(early.is_err(), "answered while out of fds: {early:?}");

    drop(client);
    fwd.wait_for_close("client-fin", Duration::from_secs(10));
    scrape.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut response = String::new();
    scrape
        .read_to_string(&mut response)
        .expect("the queued scrape is answered once fds are free");
    assert!(
        response.starts_with("HTTP/1.1 200 OK"),
        "response: {response:?}"
    );
}

/// A client that sends more than the request head (a body, or pipelined requests) and reads slowly
/// still gets the whole response and a clean end of stream. Closing with unread bytes makes the kernel
/// send RST and drop whatever of the response it has not sent yet; with a small receive window most of
/// it is still queued then. The endpoint sends FIN after the response and reads what is left before
/// closing (a lingering close).
#[test]
fn test_scrape_with_unread_bytes_is_not_cut_by_a_reset() {
    use socket2::{Domain, Socket, Type};
    let (_backend, _fwd, metrics) = echo_with_metrics(&[]);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(1).expect("SO_RCVBUF");
    socket.connect(&metrics.into()).expect("connect to metrics");
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut request = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'x'; 8192]);
    stream
        .write_all(&request)
        .expect("a request head and 8 KiB more in one write");
    // Let the endpoint write its response into a window too small for it, and close.
    std::thread::sleep(Duration::from_millis(300));
    let mut response = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&chunk[..n]);
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(err) => panic!("after {} bytes: {err}", response.len()),
        }
    }
    let text = String::from_utf8(response).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .expect("a number");
    assert_eq!(body.len(), length, "the response was cut short");
}

/// A `--config` file of two routes on loopback: `web` to `web_upstream`, `dead` to `dead_upstream`.
fn two_routes(web_upstream: &str, dead_upstream: &str) -> common::ConfigFile {
    common::ConfigFile::new(&format!(
        "[[route]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{web_upstream}\"]\n\
         [[route]]\nname = \"dead\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{dead_upstream}\"]\n\
         connect_timeout = \"300ms\"\n"
    ))
}

/// The per-route and per-upstream series, with `threads` reactors: traffic counts on its route and
/// upstream while the pair is still open, a refused connect on the other route, closes by route and
/// cause, and both histograms; the `--threads` reactors' figures add up.
fn check_route_series(threads: &str) {
    let echo = Backend::echo();
    let dead = common::refused_addr().to_string();
    let file = two_routes(&echo.upstream_arg(), &dead);
    let fwd = Forwarder::start(&[
        "--config",
        file.path(),
        "--metrics",
        "127.0.0.1:0",
        "--threads",
        threads,
    ]);
    let metrics = fwd.metrics_addr();
    let (web, dead_route) = (fwd.route_addr("web"), fwd.route_addr("dead"));
    for _ in 0..3 {
        echo_roundtrip(web, 100_000, 16 * 1024);
    }
    // A pair still open: what it forwarded so far is counted already.
    let mut open = common::connect(web);
    let chunk = vec![7u8; 65_536];
    open.write_all(&chunk).expect("write");
    let mut back = vec![0u8; chunk.len()];
    open.read_exact(&mut back).expect("echo");
    // Reset at once, the client may see it as its connect fails.
    if let Ok(mut refused) = common::try_connect(dead_route) {
        common::expect_closed_without_data(&mut refused, IO_TIMEOUT);
    }
    let web_label = |name: &str, rest: &str| format!("{name}{{route=\"web\"{rest}}}");
    let upstream = format!("route=\"web\",upstream=\"{}\"", echo.upstream_arg());
    let expected = [
        (web_label("edgefwd_route_accepts_total", ""), 4),
        (web_label("edgefwd_route_pairs_total", ""), 4),
        (web_label("edgefwd_route_connects_ok_total", ""), 4),
        (
            web_label("edgefwd_route_bytes_total", ",direction=\"c2u\""),
            365_536,
        ),
        (
            web_label("edgefwd_route_bytes_total", ",direction=\"u2c\""),
            365_536,
        ),
        (
            web_label("edgefwd_route_closes_total", ",cause=\"client-fin\""),
            3,
        ),
        (web_label("edgefwd_upstream_connect_seconds_count", ""), 4),
        (
            web_label("edgefwd_connection_duration_seconds_count", ""),
            3,
        ),
        (
            web_label("edgefwd_connection_duration_seconds_bucket", ",le=\"+Inf\""),
            3,
        ),
        (
            format!("edgefwd_upstream_bytes_total{{{upstream},direction=\"c2u\"}}"),
            365_536,
        ),
        (
            format!("edgefwd_upstream_connects_ok_total{{{upstream}}}"),
            4,
        ),
        (
            format!("edgefwd_upstream_closes_total{{{upstream},cause=\"client-fin\"}}"),
            3,
        ),
        ("edgefwd_route_accepts_total{route=\"dead\"}".into(), 1),
        ("edgefwd_route_connects_ok_total{route=\"dead\"}".into(), 0),
        (
            "edgefwd_route_connect_failures_total{route=\"dead\"}".into(),
            1,
        ),
        (
            "edgefwd_route_closes_total{route=\"dead\",cause=\"connect-refused\"}".into(),
            1,
        ),
        (
            "edgefwd_route_closes_total{route=\"web\",cause=\"connect-refused\"}".into(),
            0,
        ),
        ("edgefwd_bytes_total{direction=\"c2u\"}".into(), 365_536),
    ];
    let mismatches = || -> Vec<String> {
        let body = scrape(metrics);
        expected
            .iter()
            .filter(|(series, value)| sample(&body, series) != *value)
            .map(|(series, value)| format!("{series}: {} != {value}", sample(&body, series)))
            .collect()
    };
    // With --threads, a reactor's last close may land just after the client saw it.
    let agreed = common::wait_until(Duration::from_secs(10), || mismatches().is_empty());
    assert!(agreed, "{:?}\n{}", mismatches(), scrape(metrics));
    drop(open);
}

#[test]
fn test_route_and_upstream_series() {
    check_route_series("1");
}

#[test]
fn test_route_and_upstream_series_with_threads() {
    check_route_series("2");
}

/// Options for a forwarder whose info lines are what is checked.
fn info_log() -> Options {
    Options {
        rust_log: Some("info".into()),
        ..Options::default()
    }
}

/// Reaching `max_connections` with clients queued logs one warning with how many wait, and the next
/// stop within the interval is counted but not logged again.
#[test]
fn test_connection_limit_is_warned_once_with_the_count_waiting() {
    let echo = Backend::echo();
    let fwd = Forwarder::start_with(
        &[
            "--upstream",
            &echo.upstream_arg(),
            "--max-connections",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
        &info_log(),
    );
    let metrics = fwd.metrics_addr();
    let mut held = common::connect(fwd.addr());
    held.write_all(b"ping").expect("write");
    held.read_exact(&mut [0u8; 4]).expect("echo");
    let queued: Vec<TcpStream> = (0..2).map(|_| common::connect(fwd.addr())).collect();
    fwd.expect_log("at its connection limit", Duration::from_secs(10));
    let logs = fwd.logs();
    let line = logs
        .lines()
        .find(|line| line.contains("at its connection limit"))
        .expect("the warning");
    assert!(
        line.contains(" WARN ") && line.contains("max_connections 1"),
        "{line}"
    );
    let waiting = line
        .split_once("; ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(matches!(waiting, Some(1..=2)), "{line}");
    // The held pair closes: the first queued client takes its place, the second waits: a second stop.
    drop(held);
    let stopped_again = common::wait_until(Duration::from_secs(10), || {
        sample(&scrape(metrics), "edgefwd_accept_pauses_limit_total") >= 2
    });
    assert!(stopped_again, "{}", fwd.logs());
    assert_eq!(
        fwd.count_log("at its connection limit"),
        1,
        "{}",
        fwd.logs()
    );
    drop(queued);
}

/// A refused upstream connect is logged at info with the upstream and the client, at most once a
/// second however many fail.
#[test]
fn test_refused_connect_is_logged_rate_limited() {
    let dead = common::refused_addr();
    let fwd = Forwarder::start_with(&["--upstream", &dead.to_string()], &info_log());
    let start = std::time::Instant::now();
    for _ in 0..20 {
        // Reset at once, the client may see it as its connect fails.
        if let Ok(mut client) = common::try_connect(fwd.addr()) {
            common::expect_closed_without_data(&mut client, IO_TIMEOUT);
        }
    }
    let elapsed = start.elapsed();
    let needle = format!("upstream connect refused: upstream={dead} client=127.0.0.1:");
    fwd.expect_log(&needle, Duration::from_secs(10));
    let lines = fwd.count_log("upstream connect refused");
    let allowed = elapsed.as_secs() as usize + 1;
    assert!(
        lines <= allowed,
        "{lines} lines in {elapsed:?}:\n{}",
        fwd.logs()
    );
    assert!(fwd.logs().contains(" INFO "), "{}", fwd.logs());
}

/// A timed-out upstream connect is logged at info with the upstream and the client.
#[test]
fn test_timed_out_connect_is_logged() {
    let hole = common::Blackhole::new();
    let upstream = hole.addr().to_string();
    let fwd = Forwarder::start_with(
        &["--upstream", &upstream, "--connect-timeout", "200ms"],
        &info_log(),
    );
    let mut client = common::connect(fwd.addr());
    common::expect_closed_without_data(&mut client, IO_TIMEOUT);
    let needle = format!("upstream connect timed out: upstream={upstream} client=127.0.0.1:");
    fwd.expect_log(&needle, Duration::from_secs(10));
}

/// With `--threads 2`, the lines about the process (start, reload, shutdown) are logged once each.
#[test]
fn test_process_lines_are_logged_once_with_threads() {
    let echo = Backend::echo();
    let file = common::ConfigFile::new(&format!(
        "[[route]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{}\"]\n",
        echo.upstream_arg()
    ));
    let mut fwd = Forwarder::start_with(&["--config", file.path(), "--threads", "2"], &info_log());
    echo_roundtrip(fwd.addr(), 1000, 1000);
    fwd.signal(libc::SIGHUP);
    fwd.expect_log("reload: 1 routes", Duration::from_secs(10));
    fwd.signal(libc::SIGTERM);
    let status = fwd.wait_exit(Duration::from_secs(10)).expect("exit");
    let logs = fwd.logs();
    assert_eq!(status.code(), Some(0), "{logs}");
    for line in [
        "listening on",
        "SIGHUP: reloading",
        "reload: 1 routes",
        "SIGTERM: shutting down",
        "shutdown complete: drained=0 cut=0",
    ] {
        assert_eq!(fwd.count_log(line), 1, "{line}:\n{logs}");
    }
}

/// A reload that replaces route `web` (a changed setting) and removes `old`: `web` counts on in its
/// series, `old`'s are no longer shown (the label set stays as small as the configuration).
#[test]
fn test_reload_keeps_a_replaced_routes_series_and_drops_a_removed_ones() {
    let echo = Backend::echo();
    let route = |name: &str, timeout: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{}\"]\nconnect_timeout = \"{timeout}\"\n",
            echo.upstream_arg()
        )
    };
    let file = common::ConfigFile::new(&format!("{}{}", route("web", "5s"), route("old", "5s")));
    let fwd = Forwarder::start(&["--config", file.path(), "--metrics", "127.0.0.1:0"]);
    let metrics = fwd.metrics_addr();
    echo_roundtrip(fwd.route_addr("web"), 1000, 1000);
    let before = scrape(metrics);
    assert!(before.contains("route=\"old\""), "{before}");
    file.write(&route("web", "4s"));
    fwd.signal(libc::SIGHUP);
    fwd.expect_log("reload: 1 routes (+0 -1 ~1)", Duration::from_secs(10));
    echo_roundtrip(fwd.route_addr("web"), 1000, 1000);
    let accepts = "edgefwd_route_accepts_total{route=\"web\"}";
    let counted = common::wait_until(Duration::from_secs(10), || {
        sample(&scrape(metrics), accepts) == 2
    });
    let after = scrape(metrics);
    assert!(counted, "{after}");
    assert!(!after.contains("route=\"old\""), "{after}");
}
