//! The upstream connect: refused, timed out, abandoned by the client while pending, and completed
//! late for a client that already sent its request and half-closed.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn test_connecting_refused() {
    let refused = refused_addr();
    let fwd = Forwarder::start(&["--upstream", &refused.to_string()]);
    let baseline = fwd.fd_count();
    // The forwarder may reset the client before the client's own connect() has returned: the
    // kernel completed the handshake, and SO_ERROR is ECONNRESET by the time it is checked.
    match try_connect(fwd.addr()) {
        Ok(mut client) => {
            expect_closed_without_data(&mut client, Duration::from_secs(2));
        }
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "connect: {e}"
        ),
    }
    let close = fwd.wait_for_close("connect-refused", Duration::from_secs(2));
    assert_eq!((close.c2u, close.u2c), (Some(0), Some(0)));
    assert!(
        wait_until(Duration::from_secs(1), || fwd.fd_count() == baseline),
        "fds: {} now, {baseline} before",
        fwd.fd_count()
    );
}

#[test]
fn test_connecting_timeout() {
    let hole = Blackhole::new();
    let fwd = Forwarder::start(&[
        "--upstream",
        &hole.addr().to_string(),
        "--connect-timeout",
        "500ms",
    ]);
    let started = Instant::now();
    let mut client = connect(fwd.addr());
    expect_closed_without_data(&mut client, Duration::from_secs(3));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "client closed after {took:?}, before --connect-timeout 500ms"
    );
    fwd.wait_for_close("connect-timeout", Duration::from_secs(1));
}

/// The client leaves (FIN without data, or RST) while the connect is pending: both fds are freed
/// at once, long before the 30s connect timeout.
/// `extra` flags may queue bytes for the upstream themselves (a `--send-proxy` header): those are not
/// the client's, and must not make its leaving look like a half-close.
fn client_leaves_while_connecting(with_reset: bool, extra: &[&str]) {
    let hole = Blackhole::new();
    let upstream = hole.addr().to_string();
    let mut args = vec!["--upstream", &upstream, "--connect-timeout", "30s"];
    args.extend_from_slice(extra);
    let fwd = Forwarder::start(&args);
    let baseline = fwd.fd_count();
    let client = connect(fwd.addr());
    assert!(
        wait_until(Duration::from_secs(2), || fwd.fd_count() == baseline + 2),
        "expected client + pending upstream fds: {} now, {baseline} before",
        fwd.fd_count()
    );
    if with_reset {
        reset(client);
    } else {
        drop(client);
    }
    assert!(
        wait_until(Duration::from_secs(1), || fwd.fd_count() == baseline),
        "fds not freed within 1s: {} now, {baseline} before; log:\n{}",
        fwd.fd_count(),
        fwd.logs()
    );
    let close = fwd.wait_for_close("client-abort", Duration::from_secs(1));
    assert_eq!(close.c2u, Some(0));
}

#[test]
fn test_connecting_client_fin() {
    client_leaves_while_connecting(false, &[]);
}

#[test]
fn test_connecting_client_reset() {
    client_leaves_while_connecting(true, &[]);
}

#[test]
fn test_connecting_client_fin_with_send_proxy() {
    client_leaves_while_connecting(false, &["--send-proxy", "v1"]);
}

#[test]
fn test_connecting_client_reset_with_send_proxy() {
    client_leaves_while_connecting(true, &["--send-proxy", "v2"]);
}

/// A client that sent a request and half-closed while the connect is pending is kept, and its
/// request is delivered once the upstream accepts (here: on the first SYN retransmit, ~1s).
#[test]
fn test_connecting_client_half_closed_with_data_is_kept() {
    let hole = Blackhole::new();
    let fwd = Forwarder::start(&[
        "--upstream",
        &hole.addr().to_string(),
        "--connect-timeout",
        "10s",
    ]);
    let baseline = fwd.fd_count();
    let mut client = connect(fwd.addr());
    assert!(wait_until(Duration::from_secs(2), || fwd.fd_count() == baseline + 2));
    client.write_all(b"request").expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(fwd.fd_count(), baseline + 2, "pair must be kept");
    assert!(fwd.closes().is_empty(), "log:\n{}", fwd.logs());

    let up = hole.open();
    let mut server = up.accept(Duration::from_secs(8));
    let (got, end) = read_until_end(&mut server, Duration::from_secs(5));
    assert_eq!(got, b"request");
    assert_eq!(end, End::Eof);
    server.write_all(b"response").expect("write");
    drop(server);
    let (got, end) = read_until_end(&mut client, Duration::from_secs(5));
    assert_eq!(got, b"response");
    assert_eq!(end, End::Eof);
    let close = fwd.wait_for_close("client-fin", Duration::from_secs(2));
    assert_eq!((close.c2u, close.u2c), (Some(7), Some(8)));
}
