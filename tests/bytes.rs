//! Byte exactness: every byte arrives, once, in order, in both directions at once, over IPv4, IPv6
//! and a host-name upstream, for one large stream and for many concurrent ones.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::thread;
use std::time::Duration;

use common::*;

#[test]
fn test_established_echo_both_directions_byte_exact() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    let total = 16 << 20;
    // An odd write size, so writes never line up with the ring or the pattern period.
    echo_roundtrip(fwd.addr(), total, 100_003);
    let close = fwd.wait_for_close("client-fin", Duration::from_secs(5));
    assert_eq!(close.c2u, Some(total), "c2u in {:?}", close.line);
    assert_eq!(close.u2c, Some(total), "u2c in {:?}", close.line);
}

/// 256 MiB one way into a sink that checks every byte. In a debug build on 2 cores this takes a
/// few seconds (the check is a memcmp against a precomputed pattern, not a per-byte hash).
#[test]
fn test_established_large_transfer_to_sink() {
    let (sink, reports) = Backend::sink();
    let fwd = Forwarder::start(&["--upstream", &sink.upstream_arg()]);
    let total: u64 = 256 << 20;
    let mut client = connect(fwd.addr());
    write_pattern(&mut client, total, 256 * 1024).expect("write 256 MiB");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let report = reports
        .recv_timeout(Duration::from_secs(60))
        .expect("sink report");
    assert_eq!(report.end, End::Eof, "sink saw {report:?}");
    assert_eq!(report.mismatch, None, "sink saw different bytes");
    assert_eq!(report.bytes, total);
    // The sink closes after EOF: the client gets a clean EOF with no data.
    let (data, end) = read_until_end(&mut client, Duration::from_secs(10));
    assert!(data.is_empty());
    assert_eq!(end, End::Eof);
    let close = fwd.wait_for_close("client-fin", Duration::from_secs(5));
    assert_eq!(close.c2u, Some(total));
    assert_eq!(close.u2c, Some(0));
}

#[test]
fn test_established_200_concurrent_echo_pairs() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    let addr = fwd.addr();
    let clients: Vec<_> = (0..200)
        .map(|_| thread::spawn(move || echo_roundtrip(addr, 256 * 1024, 16 * 1024)))
        .collect();
    let failed = clients
        .into_iter()
        .map(|c| c.join())
        .filter(Result::is_err)
        .count();
    assert_eq!(failed, 0, "{failed} of 200 concurrent pairs failed");
    let closes = fwd.wait_for_n_closes(200, Duration::from_secs(10));
    assert_eq!(closes.len(), 200);
    assert!(
        closes
            .iter()
            .all(|c| c.cause == "client-fin" && c.c2u == Some(256 * 1024)),
        "unexpected close lines: {closes:?}"
    );
    assert_eq!(echo.accepted(), 200);
}

#[test]
fn test_established_all_256_byte_values() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    let mut data: Vec<u8> = (0..=255u8).collect();
    data.extend((0..=255u8).rev());
    // 0x00 runs, CR/LF, 0xff runs: nothing is treated specially.
    data.extend([0u8; 300]);
    data.extend(b"\r\n\r\n\n\r");
    data.extend([0xffu8; 300]);
    let mut client = connect(fwd.addr());
    client.write_all(&data).expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let (echoed, end) = read_until_end(&mut client, Duration::from_secs(10));
    assert_eq!(end, End::Eof);
    assert_eq!(echoed, data);
}

#[test]
fn test_ipv6_listen_and_upstream() {
    let echo = Backend::echo_on(loopback6());
    let fwd = Forwarder::start(&["--listen", "[::1]:0", "--upstream", &echo.upstream_arg()]);
    let expected: SocketAddr = format!("[::1]:{}", fwd.addr().port())
        .parse()
        .expect("addr");
    assert_eq!(fwd.addr(), expected, "start line must name [::1]:PORT");
    echo_roundtrip(fwd.addr(), 1 << 20, 64 * 1024);
    assert_eq!(echo.accepted(), 1);
    fwd.wait_for_close("client-fin", Duration::from_secs(5));
}

#[test]
fn test_ipv4_listen_ipv6_upstream() {
    let echo = Backend::echo_on(loopback6());
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    echo_roundtrip(fwd.addr(), 1 << 20, 64 * 1024);
    assert_eq!(echo.accepted(), 1);
}

#[test]
fn test_upstream_given_as_host_name() {
    let first = ("localhost", 0)
        .to_socket_addrs()
        .expect("resolve localhost")
        .next()
        .expect("localhost has an address");
    let echo = Backend::echo_on(first);
    let upstream = format!("localhost:{}", echo.addr().port());
    let fwd = Forwarder::start(&["--upstream", &upstream]);
    let mut client = connect(fwd.addr());
    client.write_all(b"via a host name").expect("write");
    let mut buf = [0u8; 15];
    client.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"via a host name");
    assert_eq!(echo.accepted(), 1);
}
