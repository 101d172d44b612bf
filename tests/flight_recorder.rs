//! A pair whose own deadline closes it logs why it was not moving (its diagnosis, docs/admin.md) and
//! its flight recorder, at debug level: the per-pair view, the diagnosis and the recorder, run by the
//! real binary over real sockets, in every data-path mode (`EDGEFWD_TEST_SPLICE`).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

/// The debug line an expiry logs: `conn=N CAUSE: DIAGNOSIS; events: ...`.
fn expiry_line(fwd: &Forwarder, cause: &str) -> String {
    let needle = format!(" {cause}: ");
    fwd.expect_log(&needle, Duration::from_secs(10));
    let logs = fwd.logs();
    logs.lines()
        .find(|line| line.contains(&needle) && line.contains("; events: "))
        .unwrap_or_else(|| panic!("no expiry line for {cause}:\n{logs}"))
        .to_string()
}

/// An idle pair: nothing held, measured against the route's idle timeout; its events tell its story
/// from the accept, oldest first.
#[test]
fn test_idle_timeout_logs_the_diagnosis_and_the_events() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--idle-timeout", "1s"]);
    let mut client = connect(fwd.addr());
    client.write_all(b"ping").expect("write");
    let mut echoed = [0u8; 4];
    client.read_exact(&mut echoed).expect("echo");
    let line = expiry_line(&fwd, "idle-timeout");
    assert!(
        line.contains("s of 1 s idle timeout; nothing held; events: 0.0ms accepted (connecting), "),
        "{line}"
    );
    let events = &line[line.find("events: ").expect("events") + "events: ".len()..];
    let established = events
        .find("connecting => established")
        .expect("established");
    let echo = events.rfind("upstream readable").expect("the echo's edge");
    assert!(established < echo, "oldest first: {events}");
    fwd.wait_for_close("idle-timeout", Duration::from_secs(5));
}

/// A client that stops reading: the pair says the client is the one not reading, how much is held
/// toward it, and that the upstream's reads are muted.
#[test]
fn test_stalled_client_names_the_client_and_the_backpressure() {
    let (source, _reports) = Backend::source(64 << 20);
    let fwd = Forwarder::start(&["--upstream", &source.upstream_arg(), "--idle-timeout", "1s"]);
    let _client = connect(fwd.addr());
    let line = expiry_line(&fwd, "idle-timeout");
    assert!(
        line.contains("idle-timeout: client has not read for "),
        "{line}"
    );
    assert!(
        line.contains("; upstream reads muted (backpressure); events: "),
        "{line}"
    );
    // auto (the default) moves to a pipe once a read fills the ring, which this transfer soon does.
    let buffers: &[&str] = match splice_under_test().as_deref() {
        Some("off") => &["ring"],
        Some("always") => &["pipe"],
        _ => &["ring", "pipe"],
    };
    assert!(
        buffers
            .iter()
            .any(|buffer| line.contains(&format!(" held in client-bound {buffer}; "))),
        "{line}"
    );
    let events = &line[line.find("; events: ").expect("events")..];
    assert!(events.contains("upstream reads muted"), "{line}");
}

/// A connect that never completes: the attempt against the route's attempts and connect timeout.
#[test]
fn test_connect_timeout_logs_the_attempt() {
    let hole = Blackhole::new();
    let fwd = Forwarder::start(&[
        "--upstream",
        &hole.addr().to_string(),
        "--connect-timeout",
        "500ms",
        "--connect-attempts",
        "1",
    ]);
    let _client = connect(fwd.addr());
    let line = expiry_line(&fwd, "connect-timeout");
    assert!(
        line.contains("connect-timeout: waiting for upstream connect, attempt 1 of 1, "),
        "{line}"
    );
    assert!(
        line.contains(" of 500 ms; events: 0.0ms accepted (connecting)"),
        "{line}"
    );
}
