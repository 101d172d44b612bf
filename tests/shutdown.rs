//! Graceful shutdown: SIGTERM/SIGINT close the listener, live pairs finish (or are cut after
//! --shutdown-timeout), the exit status is 0; a second signal exits at once with status 1.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const CHUNK: usize = 64 * 1024;

/// Writes chunk `i` of the pattern and reads its echo back.
fn lockstep(client: &mut TcpStream, i: u64) {
    let offset = i * CHUNK as u64;
    client.write_all(pattern(offset, CHUNK)).expect("write");
    let mut buf = vec![0u8; CHUNK];
    client.read_exact(&mut buf).expect("read echo");
    assert!(buf == pattern(offset, CHUNK), "chunk {i} differs");
}

fn ping(client: &mut TcpStream) {
    client.write_all(b"x").expect("write");
    let mut buf = [0u8; 1];
    client.read_exact(&mut buf).expect("read echo");
}

#[test]
fn test_sigterm_drains_live_pair() {
    let echo = Backend::echo();
    let mut fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    let addr = fwd.addr();
    let mut client = connect(addr);
    for i in 0..16 {
        lockstep(&mut client, i);
    }

    fwd.signal(libc::SIGTERM);
    fwd.expect_log("shutting down", Duration::from_secs(5));
    assert!(
        wait_until(Duration::from_secs(2), || matches!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
        )),
        "new connections still accepted after SIGTERM"
    );

    // The live pair keeps working until it finishes by itself.
    for i in 16..32 {
        lockstep(&mut client, i);
    }
    assert!(fwd.is_running(), "exited with a live pair");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let (data, end) = read_until_end(&mut client, Duration::from_secs(5));
    assert!(data.is_empty());
    assert_eq!(end, End::Eof);

    let status = fwd
        .wait_exit(Duration::from_secs(5))
        .expect("exits once the pair is done");
    assert_eq!(status.code(), Some(0), "{status}");
    let logs = fwd.logs();
    assert_eq!(log_counter(&logs, "drained="), Some(1), "log:\n{logs}");
    assert_eq!(log_counter(&logs, "cut="), Some(0), "log:\n{logs}");
    let close = fwd.wait_for_close("client-fin", Duration::ZERO);
    assert_eq!(close.c2u, Some(32 * CHUNK as u64));
}

#[test]
fn test_sigterm_cuts_stuck_pair_after_shutdown_timeout() {
    let echo = Backend::echo();
    let mut fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--shutdown-timeout",
        "1s",
    ]);
    let mut client = connect(fwd.addr());
    ping(&mut client);

    let signalled = Instant::now();
    fwd.signal(libc::SIGTERM);
    let status = fwd
        .wait_exit(Duration::from_secs(4))
        .expect("exits within ~1s of --shutdown-timeout");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        took >= Duration::from_millis(800),
        "exited after {took:?}, before --shutdown-timeout 1s"
    );
    let logs = fwd.logs();
    assert_eq!(log_counter(&logs, "cut="), Some(1), "log:\n{logs}");
    assert_eq!(log_counter(&logs, "drained="), Some(0), "log:\n{logs}");
    fwd.wait_for_close("shutdown", Duration::ZERO);
    expect_closed_without_data(&mut client, Duration::from_secs(2));
}

#[test]
fn test_second_signal_exits_at_once() {
    let echo = Backend::echo();
    let mut fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--shutdown-timeout",
        "30s",
    ]);
    let mut client = connect(fwd.addr());
    ping(&mut client);
    fwd.signal(libc::SIGINT);
    fwd.expect_log("shutting down", Duration::from_secs(5));
    assert!(fwd.is_running(), "the first SIGINT must wait for the pair");
    fwd.signal(libc::SIGINT);
    let status = fwd
        .wait_exit(Duration::from_secs(2))
        .expect("second signal exits at once");
    assert_eq!(status.code(), Some(1), "{status}");
}

fn idle_signal_exits_zero(sig: i32) {
    let echo = Backend::echo();
    let mut fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    fwd.signal(sig);
    let status = fwd
        .wait_exit(Duration::from_secs(2))
        .expect("exits promptly with no pairs");
    assert_eq!(status.code(), Some(0), "{status}");
    let logs = fwd.logs();
    assert!(logs.contains("shutting down"), "log:\n{logs}");
    assert_eq!(log_counter(&logs, "drained="), Some(0), "log:\n{logs}");
    assert_eq!(log_counter(&logs, "cut="), Some(0), "log:\n{logs}");
}

#[test]
fn test_sigterm_idle_exits_zero() {
    idle_signal_exits_zero(libc::SIGTERM);
}

#[test]
fn test_sigint_idle_exits_zero() {
    idle_signal_exits_zero(libc::SIGINT);
}
