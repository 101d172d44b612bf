//! Limits: --max-connections leaves extra clients in the backlog and resumes accepting by itself;
//! fd exhaustion (EMFILE) pauses accepting without a busy loop and recovers.

mod common;

use std::io::{self, Read, Write};
use std::thread;
use std::time::Duration;

use common::*;

fn ping(client: &mut std::net::TcpStream, msg: &[u8]) {
    client.write_all(msg).expect("write");
    let mut buf = vec![0u8; msg.len()];
    client.read_exact(&mut buf).expect("read echo");
    assert_eq!(buf, msg);
}

#[test]
fn test_max_connections_extra_client_waits_then_served() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--max-connections", "2"]);
    let mut c1 = connect(fwd.addr());
    ping(&mut c1, b"one");
    let mut c2 = connect(fwd.addr());
    ping(&mut c2, b"two");

    // The kernel completes the handshake (backlog), but the forwarder does not take it.
    let mut c3 = connect(fwd.addr());
    c3.write_all(b"three").expect("write");
    expect_silence(&mut c3, Duration::from_millis(700));
    assert_eq!(echo.accepted(), 2, "a third upstream connection was opened");

    // No new connection arrives from here on: the forwarder must retry the listener itself.
    drop(c1);
    fwd.wait_for_close("client-fin", Duration::from_secs(5));
    let mut buf = [0u8; 5];
    c3.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c3.read_exact(&mut buf)
        .expect("the waiting client is served once a pair closes");
    assert_eq!(&buf, b"three");
    assert_eq!(echo.accepted(), 3);
    ping(&mut c2, b"still two");
}

/// RLIMIT_NOFILE lowered to 32 or 33 after start (so the fd budget, computed from the limit at start,
/// no longer protects the process) and 40 clients: whether accept(2) itself or the upstream socket(2)
/// after it is the call that hits EMFILE depends on how many fds the process holds at rest, which
/// differs between machines; the two limits one apart make sure both paths run everywhere.
#[test]
fn test_emfile_pauses_accepting_without_busy_loop() {
    emfile_pauses_accepting(32);
}

#[test]
fn test_emfile_one_fd_more_pauses_accepting_without_busy_loop() {
    emfile_pauses_accepting(33);
}

/// The forwarder must back off rather than spin on the ever-readable listener, warn
/// (rate-limited), and serve again once fds are free.
fn emfile_pauses_accepting(nofile: u64) {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--max-connections",
        "1000",
    ]);
    fwd.lower_nofile(nofile);
    let baseline = fwd.fd_count();
    // A client the forwarder refuses (EMFILE on its upstream socket) may be reset before its own
    // connect() returns; that client is simply gone.
    let clients: Vec<_> = (0..40)
        .filter_map(|_| match try_connect(fwd.addr()) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("connect: {e}"),
        })
        .collect();
    fwd.expect_log("Too many open files", Duration::from_secs(5));
    thread::sleep(Duration::from_millis(300));

    let ticks = clock_ticks_per_sec();
    let before = fwd.cpu_ticks();
    thread::sleep(Duration::from_secs(2));
    let used = fwd.cpu_ticks() - before;
    assert!(
        used * 2 < ticks,
        "forwarder used {used} ticks ({ticks}/s) of CPU in 2s while out of fds: a busy loop"
    );
    let mut fwd = fwd;
    assert!(fwd.is_running(), "forwarder died on EMFILE");
    // Only the warning is rate-limited: each client refused meanwhile still gets its own
    // debug-level close line, which may carry the same errno text.
    let warnings = fwd
        .logs()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("Too many open files"))
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} EMFILE warnings: not rate-limited?\n{}",
        fwd.logs()
    );

    drop(clients);
    // The backlog drains (those clients are gone: their pairs close at once), then fds are back.
    assert!(
        wait_until(Duration::from_secs(10), || fwd.fd_count() <= baseline),
        "fds: {} now, {baseline} before; log:\n{}",
        fwd.fd_count(),
        fwd.logs()
    );
    let mut client = connect(fwd.addr());
    ping(&mut client, b"after EMFILE");
    assert!(fwd.is_running());
}
