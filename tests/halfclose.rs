//! Half-close: a FIN from one side is passed on as shutdown(Write) once its ring drained, and the
//! other direction keeps flowing until it closes too; a half-closed pair with no traffic is closed
//! after --fin-timeout.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn test_client_half_closed_upstream_keeps_sending() {
    let up = Upstream::bind();
    let fwd = Forwarder::start(&["--upstream", &up.addr().to_string()]);
    let mut client = connect(fwd.addr());
    let request = pattern_vec(100 * 1024);
    client.write_all(&request).expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown");

    let mut server = up.accept(WAIT);
    let (got, end) = read_until_end(&mut server, WAIT);
    assert_eq!(end, End::Eof, "upstream must see the client's FIN");
    assert!(
        got == request,
        "upstream got {} bytes, not the request",
        got.len()
    );

    // The other direction is still open after a pause, and is not cut short.
    thread::sleep(Duration::from_millis(300));
    let reply = pattern_vec(200 * 1024);
    server
        .write_all(&reply)
        .expect("upstream writes after the client's FIN");
    drop(server);

    let (got, end) = read_until_end(&mut client, WAIT);
    assert!(
        got == reply,
        "client got {} bytes, not the reply",
        got.len()
    );
    assert_eq!(end, End::Eof, "client must see a clean EOF");

    let close = fwd.wait_for_close("client-fin", Duration::from_secs(5));
    assert_eq!(close.c2u, Some(100 * 1024));
    assert_eq!(close.u2c, Some(200 * 1024));
}

#[test]
fn test_upstream_half_closed_client_keeps_sending() {
    let up = Upstream::bind();
    let fwd = Forwarder::start(&["--upstream", &up.addr().to_string()]);
    let mut client = connect(fwd.addr());
    let mut server = up.accept(WAIT);
    let banner = pattern_vec(100 * 1024);
    server.write_all(&banner).expect("write");
    server.shutdown(Shutdown::Write).expect("shutdown");

    let (got, end) = read_until_end(&mut client, WAIT);
    assert_eq!(end, End::Eof, "client must see the upstream's FIN");
    assert!(
        got == banner,
        "client got {} bytes, not the banner",
        got.len()
    );

    thread::sleep(Duration::from_millis(300));
    let request = pattern_vec(200 * 1024);
    client
        .write_all(&request)
        .expect("client writes after the upstream's FIN");
    drop(client);

    let (got, end) = read_until_end(&mut server, WAIT);
    assert!(
        got == request,
        "upstream got {} bytes, not the request",
        got.len()
    );
    assert_eq!(end, End::Eof, "upstream must see a clean EOF");

    let close = fwd.wait_for_close("upstream-fin", Duration::from_secs(5));
    assert_eq!(close.c2u, Some(200 * 1024));
    assert_eq!(close.u2c, Some(100 * 1024));
}

#[test]
fn test_half_closed_fin_timeout() {
    let up = Upstream::bind();
    let fwd = Forwarder::start(&["--upstream", &up.addr().to_string(), "--fin-timeout", "1s"]);
    let mut client = connect(fwd.addr());
    client.write_all(b"x").expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let mut server = up.accept(WAIT);
    let (got, end) = read_until_end(&mut server, WAIT);
    assert_eq!((got.as_slice(), end), (&b"x"[..], End::Eof));

    // Still alive while half-closed: the other direction moves.
    server.write_all(b"y").expect("write");
    let mut buf = [0u8; 1];
    client.read_exact(&mut buf).expect("read y");
    assert_eq!(&buf, b"y");
    let last_traffic = Instant::now();

    // Then nothing moves: the pair is closed after about a second.
    let end = expect_closed_without_data(&mut client, Duration::from_secs(5));
    let after = last_traffic.elapsed();
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}, before --fin-timeout 1s ({end:?})"
    );
    let (_, end) = read_until_end(&mut server, Duration::from_secs(5));
    assert!(
        matches!(end, End::Eof | End::Reset),
        "upstream side not closed: {end:?}"
    );
    let close = fwd.wait_for_close("fin-timeout", Duration::from_secs(2));
    assert_eq!((close.c2u, close.u2c), (Some(1), Some(1)));
}

/// The upstream sends its whole reply and FIN; the client never reads, so the forwarder holds the rest
/// of the reply and cannot pass the FIN on. That pair is half-closed too: --fin-timeout ends it (with a
/// reset, since bytes are undelivered) instead of keeping it forever.
#[test]
fn test_fin_timeout_covers_a_fin_stuck_behind_undelivered_bytes() {
    // 6 MiB fit in an 8 MiB ring (so the forwarder reads up to the FIN) but not in the client's
    // socket buffers (so it cannot deliver them all).
    let total = 6 << 20;
    let (source, reports) = Backend::source(total);
    let fwd = Forwarder::start(&[
        "--upstream",
        &source.upstream_arg(),
        "--buffer-size",
        "8m",
        "--splice",
        "off",
        "--fin-timeout",
        "1s",
    ]);
    let mut client = connect(fwd.addr());
    let report = reports
        .recv_timeout(Duration::from_secs(10))
        .expect("the source finished writing");
    assert_eq!(report.end, End::Eof);
    let close = fwd.wait_for_close("fin-timeout", Duration::from_secs(10));
    assert!(
        close.u2c.is_some_and(|n| n < total),
        "the client read nothing, so not all could be delivered: {close:?}"
    );
    let (_, end) = read_until_end(&mut client, Duration::from_secs(10));
    assert_eq!(end, End::Reset, "a truncated stream ended with a clean FIN");
}
