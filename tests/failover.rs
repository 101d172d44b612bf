//! Failover and health: a refused or timed-out upstream connect moves on to the next upstream, a failing
//! upstream is marked down, and it comes back (by probe or by retry) once it accepts again.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;

/// A port that refuses now, and can be listened on again later (nothing else is bound to it).
fn vacant_port() -> SocketAddr {
    refused_addr()
}

/// A forwarder over two upstreams, a [`vacant_port`] first (round-robin tries it first) and an echo
/// backend, with `extra` flags.
fn vacant_then_echo(extra: &[&str]) -> (SocketAddr, Backend, Forwarder) {
    let vacant = vacant_port();
    let echo = Backend::echo();
    let (vacant_arg, echo_arg) = (vacant.to_string(), echo.upstream_arg());
    let mut args = vec!["--upstream", &vacant_arg, "--upstream", &echo_arg];
    args.extend_from_slice(extra);
    let fwd = Forwarder::start(&args);
    (vacant, echo, fwd)
}

/// Waits for the log line saying that `upstream` of the default route is `state` ("up" or "down").
fn expect_marked(fwd: &Forwarder, upstream: SocketAddr, state: &str, timeout: Duration) {
    fwd.expect_log(
        &format!("upstream {upstream} of route default is {state}"),
        timeout,
    );
}

/// Asserts that /metrics shows `upstream` of the default route with `edgefwd_upstream_up` `up`.
fn expect_up_gauge(fwd: &Forwarder, upstream: SocketAddr, up: u8) {
    let (_, body) = http_fetch(fwd.metrics_addr(), "/metrics");
    assert!(
        body.contains(&format!(
            "edgefwd_upstream_up{{route=\"default\",upstream=\"{upstream}\"}} {up}"
        )),
        "{body}"
    );
}

#[test]
fn test_refused_upstream_fails_over_and_is_marked_down() {
    let (down, echo, fwd) = vacant_then_echo(&["--fall", "2"]);
    for _ in 0..10 {
        echo_roundtrip(fwd.addr(), 4096, 4096);
    }
    assert_eq!(echo.accepted(), 10);
    // Clients' connects took it down (no probes run): the line says so.
    expect_marked(
        &fwd,
        down,
        "down after 2 failed connects",
        Duration::from_secs(5),
    );
    assert!(
        fwd.closes().iter().all(|c| c.cause == "client-fin"),
        "no client may see the down upstream:\n{}",
        fwd.logs()
    );
    assert!(fwd.logs().contains("failing over to upstream="));
}

#[test]
fn test_timed_out_connect_fails_over() {
    let hole = Blackhole::new();
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &hole.addr().to_string(),
        "--upstream",
        &echo.upstream_arg(),
        "--connect-timeout",
        "300ms",
    ]);
    // Round-robin tries the black hole first; its connect times out and the client lands on the echo.
    echo_roundtrip(fwd.addr(), 4096, 4096);
    assert_eq!(echo.accepted(), 1);
    fwd.expect_log("connect-timeout: failing over", Duration::from_secs(5));
}

#[test]
fn test_attempts_are_bounded() {
    let a = vacant_port();
    let b = vacant_port();
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &a.to_string(),
        "--upstream",
        &b.to_string(),
        "--upstream",
        &echo.upstream_arg(),
        "--connect-attempts",
        "2",
        "--fall",
        "100",
    ]);
    // Round-robin order a, b, echo: the first client tries a then b, and is refused. The reset can
    // reach the client before its own connect() returns, hence try_connect.
    if let Ok(mut s) = try_connect(fwd.addr()) {
        expect_closed_without_data(&mut s, Duration::from_secs(10));
    }
    fwd.wait_for_close("connect-refused", Duration::from_secs(5));
    assert_eq!(echo.accepted(), 0, "a third attempt was made");
}

#[test]
fn test_active_probe_brings_a_backend_back() {
    let (port, _echo, fwd) = vacant_then_echo(&[
        "--health-interval",
        "100ms",
        "--fall",
        "1",
        "--metrics",
        "127.0.0.1:0",
    ]);
    // No client came yet: the probe took it down, and the line says so.
    expect_marked(
        &fwd,
        port,
        "down after 1 failed probes",
        Duration::from_secs(10),
    );
    expect_up_gauge(&fwd, port, 0);
    // The backend comes back on the same port; a probe notices without any client.
    let back = Backend::echo_on(port);
    expect_marked(&fwd, port, "up", Duration::from_secs(40));
    for _ in 0..6 {
        echo_roundtrip(fwd.addr(), 1024, 1024);
    }
    // Probes connect too, so count at least the three clients round-robin sends there.
    assert!(back.accepted() >= 3, "{} accepted", back.accepted());
    expect_up_gauge(&fwd, port, 1);
}

#[test]
fn test_passive_retry_brings_a_backend_back() {
    let (port, _echo, fwd) = vacant_then_echo(&["--fall", "1"]);
    echo_roundtrip(fwd.addr(), 1024, 1024);
    expect_marked(&fwd, port, "down", Duration::from_secs(5));
    let back = Backend::echo_on(port);
    // After the 1s backoff the picks that land on it are probation tries; `--rise` (2 by default) of
    // them in a row bring it up.
    let came_back = wait_until(Duration::from_secs(20), || {
        echo_roundtrip(fwd.addr(), 1024, 1024);
        back.accepted() >= 2
    });
    assert!(came_back, "never sent clients to the recovered backend");
    expect_marked(&fwd, port, "up", Duration::from_secs(5));
}

/// With probes, an upstream that comes back gets clients again only after `--rise` probes in a row
/// have succeeded. The recovered upstream tells them apart, in the order they connected (accepted one
/// by one): a probe connects and closes without a byte, a client sends its bytes. With probes every
/// 400 ms and `--rise 3`, the third success comes after the 1 s backoff has run out: a backoff that
/// let clients try it (probation) would show here.
#[test]
fn test_rise_probes_in_a_row_before_clients_come_back() {
    let (port, _echo, fwd) =
        vacant_then_echo(&["--health-interval", "400ms", "--fall", "1", "--rise", "3"]);
    expect_marked(&fwd, port, "down", Duration::from_secs(10));
    let back = Upstream::bind_on(port);
    let seen: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = {
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(mut conn) = back.try_accept(Duration::from_millis(50)) else {
                    continue;
                };
                let mut first = [0u8; 1];
                if matches!(conn.read(&mut first), Ok(1)) {
                    seen.lock().expect("log").push("client");
                    let _ = conn.write_all(&first);
                    thread::spawn(move || echo_conn(conn));
                } else {
                    seen.lock().expect("log").push("probe");
                }
            }
        })
    };
    // Clients all along, round-robin over both upstreams: the recovered one is skipped while down.
    let served = wait_until(Duration::from_secs(30), || {
        echo_roundtrip(fwd.addr(), 1024, 1024);
        seen.lock().expect("log").contains(&"client")
    });
    stop.store(true, Ordering::Relaxed);
    recorder.join().expect("recorder");
    assert!(served, "no client reached the recovered upstream");
    let seen = seen.lock().expect("log").clone();
    let probes_first = seen.iter().take_while(|what| **what == "probe").count();
    assert!(
        probes_first >= 3,
        "a client came after {probes_first} probes ({seen:?}); --rise 3"
    );
    expect_marked(&fwd, port, "up", Duration::from_secs(5));
}

#[test]
fn test_all_down_fails_open() {
    let a = vacant_port();
    let b = vacant_port();
    let fwd = Forwarder::start(&[
        "--upstream",
        &a.to_string(),
        "--upstream",
        &b.to_string(),
        "--fall",
        "1",
    ]);
    // The reset can reach the client before its own connect() returns, hence try_connect.
    if let Ok(mut s) = try_connect(fwd.addr()) {
        expect_closed_without_data(&mut s, Duration::from_secs(10));
    }
    fwd.expect_log("route default is down", Duration::from_secs(5));
    // Both are down now (each refused once). A backend appears on one of them: the next client is
    // still sent there, since with every upstream down they are tried anyway.
    let back = Backend::echo_on(a);
    wait_until(Duration::from_secs(10), || {
        fwd.count_log("route default is down") >= 2
    });
    echo_roundtrip(fwd.addr(), 1024, 1024);
    assert_eq!(back.accepted(), 1);
    fwd.expect_log(
        "all upstreams of route default are down; trying them anyway",
        Duration::from_secs(5),
    );
}
