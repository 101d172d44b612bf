//! --idle-timeout closes pairs with no traffic and spares active ones; it is off by default.
//! --max-connection-duration closes a pair that has lived too long, however busy; also off by default.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn ping(client: &mut TcpStream, msg: &[u8]) {
    client.write_all(msg).expect("write");
    let mut buf = vec![0u8; msg.len()];
    client.read_exact(&mut buf).expect("read echo");
    assert_eq!(buf, msg);
}

#[test]
fn test_established_idle_timeout() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--idle-timeout", "1s"]);
    let mut client = connect(fwd.addr());
    ping(&mut client, b"ping");
    let last_traffic = Instant::now();
    expect_closed_without_data(&mut client, Duration::from_secs(5));
    let after = last_traffic.elapsed();
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}, before --idle-timeout 1s"
    );
    let close = fwd.wait_for_close("idle-timeout", Duration::from_secs(1));
    assert_eq!((close.c2u, close.u2c), (Some(4), Some(4)));
}

#[test]
fn test_established_active_pair_not_idle() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--idle-timeout", "1s"]);
    let mut client = connect(fwd.addr());
    for i in 0..15 {
        ping(&mut client, format!("tick {i:02}").as_bytes());
        thread::sleep(Duration::from_millis(200));
    }
    assert!(fwd.closes().is_empty(), "log:\n{}", fwd.logs());
    client.shutdown(Shutdown::Write).expect("shutdown");
    let (data, end) = read_until_end(&mut client, Duration::from_secs(5));
    assert!(data.is_empty());
    assert_eq!(end, End::Eof);
    fwd.wait_for_close("client-fin", Duration::from_secs(2));
}

#[test]
fn test_established_no_idle_timeout_by_default() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    let mut client = connect(fwd.addr());
    ping(&mut client, b"first");
    thread::sleep(Duration::from_millis(2500));
    ping(&mut client, b"second");
    assert!(fwd.closes().is_empty(), "log:\n{}", fwd.logs());
}

/// A pair that times out with bytes still in a ring (its reader stalled) must not end with a FIN: the
/// client would take the truncated stream for a complete one. It is reset instead.
#[test]
fn test_established_idle_timeout_with_undelivered_bytes_resets() {
    let (source, _reports) = Backend::source(64 << 20);
    let fwd = Forwarder::start(&["--upstream", &source.upstream_arg(), "--idle-timeout", "1s"]);
    let mut client = connect(fwd.addr());
    // Don't read: the kernel buffers and the ring fill up, traffic stops, the idle timer runs out.
    let close = fwd.wait_for_close("idle-timeout", Duration::from_secs(10));
    assert!(
        close.u2c.is_some_and(|n| n < 64 << 20),
        "the stalled transfer could not have completed: {close:?}"
    );
    let (_, end) = read_until_end(&mut client, Duration::from_secs(10));
    assert_eq!(end, End::Reset, "a truncated stream ended with a clean FIN");
}

/// `--max-connection-duration`: a busy echo pair older than the limit is closed (cause `max-duration`,
/// counted in `/metrics`), while a pair that ends before it is not.
#[test]
fn test_established_max_connection_duration() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--max-connection-duration",
        "2s",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = fwd.metrics_addr();
    let counted = "edgefwd_closes_total{cause=\"max-duration\"} ";
    assert!(scrape(metrics).contains(&format!("{counted}0\n")));

    // A short pair ends on its own, well inside the limit.
    let mut short = connect(fwd.addr());
    ping(&mut short, b"short");
    short.shutdown(Shutdown::Write).expect("shutdown");
    read_until_end(&mut short, Duration::from_secs(5));
    fwd.wait_for_close("client-fin", Duration::from_secs(5));

    // A long pair stays busy (no idle timeout could end it) until the limit closes it.
    let opened = Instant::now();
    let mut long = connect(fwd.addr());
    set_timeouts(&long, Duration::from_secs(5));
    let mut closed = false;
    for i in 0..200 {
        let msg = format!("tick {i:03}");
        if long.write_all(msg.as_bytes()).is_err() {
            closed = true;
            break;
        }
        let mut buf = vec![0u8; msg.len()];
        if long.read_exact(&mut buf).is_err() {
            closed = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let lived = opened.elapsed();
    assert!(closed, "a busy pair outlived --max-connection-duration 2s");
    assert!(
        lived >= Duration::from_millis(1800),
        "closed after {lived:?}, before --max-connection-duration 2s"
    );
    fwd.wait_for_close("max-duration", Duration::from_secs(5));
    let closes = fwd.closes();
    assert_eq!(closes.len(), 2, "log:\n{}", fwd.logs());
    assert!(scrape(metrics).contains(&format!("{counted}1\n")));
}
