//! The PROXY protocol on real sockets: `--send-proxy v1|v2` read by a test upstream (with edgefwd's own
//! parser) and by nginx; `--accept-proxy` fed by hand-written v1/v2 headers and by haproxy
//! (`send-proxy-v2`); a malformed header and a missing one; every malformed v2 TLV layout closed at once,
//! nothing sent upstream, and counted by reason in /metrics. nginx and haproxy run on loopback from temp
//! config files when installed (`.ci/run` installs them); their tests say SKIPPED otherwise.

mod common;
#[allow(dead_code)] // shared with the lib's unit tests, which use the rest
#[path = "../src/wire/proxy_protocol/test_headers.rs"]
mod test_headers;

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use edgefwd::wire; // test_headers names the library as `crate::wire`
use edgefwd::wire::proxy_protocol::{self, Parsed, Version};
use test_headers::{done, inet, sealed, ssl, tlv, with_carryable_tlvs, FIRST_VALUE};

/// Reads from `upstream` until a whole PROXY header and `payload_len` more bytes have arrived; returns
/// the header's bytes and the payload.
fn read_raw_header(upstream: &mut std::net::TcpStream, payload_len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Parsed::Done { header_len, .. } = proxy_protocol::parse(&got) {
            if got.len() >= header_len + payload_len {
                let rest = got.split_off(header_len);
                return (got, rest);
            }
        }
        let n = upstream.read(&mut chunk).expect("read from edgefwd");
        assert!(n > 0, "EOF before the header was complete: {got:?}");
        got.extend_from_slice(&chunk[..n]);
    }
}

/// [`read_raw_header`], returning the addresses the header carries and the payload.
fn read_header(
    upstream: &mut std::net::TcpStream,
    payload_len: usize,
) -> (Option<SocketAddr>, Option<SocketAddr>, Vec<u8>) {
    let (header, rest) = read_raw_header(upstream, payload_len);
    let (_, source, destination) = done(&header);
    (source, destination, rest)
}

/// A forwarder to `upstream` that reads each client's PROXY header and sends one of its own (v2) to
/// the upstream; `extra` flags after.
fn relaying(upstream: SocketAddr, extra: &[&str]) -> Forwarder {
    let upstream = upstream.to_string();
    let mut args = vec![
        "--upstream",
        &upstream,
        "--accept-proxy",
        "--send-proxy",
        "v2",
    ];
    args.extend_from_slice(extra);
    Forwarder::start(&args)
}

/// Sends `greeting` and `payload` through `fwd` to `upstream`; returns the header the upstream received
/// and the payload after it.
fn relayed(
    fwd: &Forwarder,
    upstream: &Upstream,
    greeting: &[u8],
    payload: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let mut client = connect(fwd.addr());
    client
        .write_all(&[greeting, payload].concat())
        .expect("write");
    let mut server = upstream.accept(Duration::from_secs(5));
    read_raw_header(&mut server, payload.len())
}

fn send_proxy_reaches_upstream(version: &str) {
    let upstream = Upstream::bind();
    let fwd = Forwarder::start(&[
        "--upstream",
        &upstream.addr().to_string(),
        "--send-proxy",
        version,
    ]);
    let mut client = connect(fwd.addr());
    client.write_all(b"payload").expect("write");
    let mut server = upstream.accept(Duration::from_secs(5));
    let (source, destination, rest) = read_header(&mut server, 7);
    assert_eq!(source, Some(client.local_addr().expect("addr")));
    assert_eq!(destination, Some(fwd.addr()));
    assert_eq!(rest, b"payload");
    server.write_all(b"reply").expect("write");
    let mut reply = [0u8; 5];
    client.read_exact(&mut reply).expect("read");
    assert_eq!(&reply, b"reply");
}

#[test]
fn test_send_proxy_v1() {
    send_proxy_reaches_upstream("v1");
}

#[test]
fn test_send_proxy_v2() {
    send_proxy_reaches_upstream("v2");
}

/// `--accept-proxy` with a header written by hand, in one write or (`bytewise`) a byte per write: the
/// payload after it is forwarded, and the close line names the carried client.
fn accept_proxy_by_hand(header: &[u8], carried: &str, bytewise: bool) {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--accept-proxy"]);
    let mut client = connect(fwd.addr());
    if bytewise {
        client.set_nodelay(true).expect("nodelay");
        for byte in header {
            client.write_all(&[*byte]).expect("write");
        }
        client.write_all(b"hello").expect("write");
    } else {
        // the payload in the header's segment: what follows the header is forwarded alone
        client
            .write_all(&[header, b"hello"].concat())
            .expect("write");
    }
    let mut got = [0u8; 5];
    client.read_exact(&mut got).expect("read echo");
    assert_eq!(&got, b"hello");
    drop(client);
    let close = fwd.wait_for_close("client-fin", Duration::from_secs(5));
    assert!(
        close.line.contains(&format!("client={carried}")),
        "{}",
        close.line
    );
}

#[test]
fn test_accept_proxy_v1_by_hand() {
    accept_proxy_by_hand(
        b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n",
        "192.0.2.7:5555",
        false,
    );
}

#[test]
fn test_accept_proxy_v2_by_hand() {
    let header = proxy_protocol::encode(
        Version::V2,
        "[2001:db8::9]:4444".parse().expect("addr"),
        "[::1]:80".parse().expect("addr"),
    );
    accept_proxy_by_hand(&header, "[2001:db8::9]:4444", false);
}

/// A received header's client is the one a sent header names.
#[test]
fn test_accept_then_send_carries_the_client_on() {
    let upstream = Upstream::bind();
    let fwd = relaying(upstream.addr(), &[]);
    let greeting = b"PROXY TCP4 198.51.100.3 203.0.113.4 1234 443\r\n";
    let (header, rest) = relayed(&fwd, &upstream, greeting, b"data");
    let (_, source, destination) = done(&header);
    assert_eq!(source, Some("198.51.100.3:1234".parse().expect("addr")));
    assert_eq!(destination, Some("203.0.113.4:443".parse().expect("addr")));
    assert_eq!(rest, b"data");
}

#[test]
fn test_malformed_header_closes_with_a_log_line() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--accept-proxy"]);
    let mut client = connect(fwd.addr());
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    let (bytes, _) = read_until_end(&mut client, Duration::from_secs(5));
    assert!(bytes.is_empty());
    fwd.wait_for_close("rejected", Duration::from_secs(5));
    fwd.expect_log("not a PROXY protocol header", Duration::from_secs(1));
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn test_missing_header_times_out() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--accept-proxy",
        "--header-timeout",
        "300ms",
    ]);
    let mut client = connect(fwd.addr());
    let (bytes, end) = read_until_end(&mut client, Duration::from_secs(5));
    assert!(bytes.is_empty() && end == End::Eof, "{bytes:?} {end:?}");
    fwd.wait_for_close("header-timeout", Duration::from_secs(2));
    fwd.expect_log("no complete PROXY header", Duration::from_secs(1));
}

// ---- strict v2 validation: closed at once, nothing upstream, counted by reason -------------------

/// Each malformed layout, with the reason it must be counted under.
fn malformed_layouts() -> Vec<(&'static str, Vec<u8>)> {
    let mut bad_crc = sealed(inet(&tlv(0x03, &[0; 4])), FIRST_VALUE);
    bad_crc[FIRST_VALUE] ^= 0x01;
    let ssl_overrun = [0x01, 0, 0, 0, 0, 0x21, 0x00, 0x09, b'T', b'L', b'S'];
    let mut unknown_family = inet(&[]);
    unknown_family[13] = 0x41;
    vec![
        // a TLV whose value runs past the declared length
        ("tlv-overrun", inet(&[0x04, 0x00, 0x05, 1, 2, 3, 4])),
        // a TLV area that ends inside a 3-byte TLV head
        ("tlv-truncated", inet(&[0x04, 0x00])),
        ("crc32c", bad_crc),
        ("crc32c-length", inet(&tlv(0x03, &[0; 3]))),
        (
            "crc32c-repeated",
            inet(&[tlv(0x03, &[0; 4]), tlv(0x03, &[0; 4])].concat()),
        ),
        (
            "ssl-subtlv",
            inet(&[tlv(0x20, &ssl_overrun), tlv(0x04, &[0; 9])].concat()),
        ),
        ("ssl-short", inet(&tlv(0x20, &[0x01, 0, 0]))),
        ("authority-too-long", inet(&tlv(0x02, &[b'a'; 256]))),
        ("unique-id-too-long", inet(&tlv(0x05, &[b'u'; 129]))),
        ("family", unknown_family),
        ("too-long", inet(&tlv(0x04, &[0; 1000]))),
        ("signature", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
    ]
}

fn rejected(metrics: SocketAddr, reason: &str) -> u64 {
    let name = format!("edgefwd_proxy_header_rejected_total{{reason=\"{reason}\"}}");
    sample(&scrape(metrics), &name)
}

/// Waits (bounded) for the `reason` counter to reach `expected`, failing with the last value seen.
fn expect_rejected(metrics: SocketAddr, reason: &str, expected: u64) {
    let mut seen = 0;
    let reached = wait_until(Duration::from_secs(5), || {
        seen = rejected(metrics, reason);
        seen >= expected
    });
    assert!(
        reached && seen == expected,
        "{reason}: {seen}, expected {expected}"
    );
}

/// A forwarder with `--accept-proxy` and `--metrics` (plus `extra`) in front of an upstream the test
/// accepts from itself, so it can tell whether any connection was made.
fn strict_forwarder(extra: &[&str]) -> (Upstream, Forwarder, SocketAddr) {
    let upstream = Upstream::bind();
    let upstream_arg = upstream.addr().to_string();
    let mut args = vec![
        "--upstream",
        &upstream_arg,
        "--accept-proxy",
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let fwd = Forwarder::start(&args);
    let metrics = fwd.metrics_addr();
    (upstream, fwd, metrics)
}

/// Sends `bytes` (then keeps the connection open) and expects edgefwd to close it within a second,
/// without sending a byte back.
fn expect_closed_at_once(fwd: &Forwarder, bytes: &[u8], what: &str) {
    let mut client = connect(fwd.addr());
    let sent = std::time::Instant::now();
    client.write_all(bytes).expect("write");
    let end = expect_closed_without_data(&mut client, Duration::from_secs(5));
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "{what}: closed ({end:?}) only after {took:?}"
    );
}

/// Every malformed layout from issue 16, whole and followed by payload: the client is closed within a
/// second, no upstream connection is made (so no byte reaches one), and the counter of its reason,
/// present at 0 from the start, goes up by one.
#[test]
fn test_malformed_headers_closed_at_once_and_counted() {
    let (upstream, fwd, metrics) = strict_forwarder(&[]);
    let layouts = malformed_layouts();
    for (reason, _) in &layouts {
        assert_eq!(rejected(metrics, reason), 0, "{reason} before any client");
    }
    for (reason, header) in &layouts {
        expect_closed_at_once(&fwd, &[header.as_slice(), b"payload"].concat(), reason);
        expect_rejected(metrics, reason, 1);
    }
    assert!(
        upstream.try_accept(Duration::from_millis(200)).is_none(),
        "a malformed header reached the upstream"
    );
    fwd.expect_log("(PROXY header rejected, reason=", Duration::from_secs(1));
}

/// A header that is already broken by the bytes present is refused without waiting for the rest: an
/// overrunning TLV's head, or a length field past the bound, then the client waits (the header timeout
/// is 10s: a close within a second is the parser's).
#[test]
fn test_broken_prefix_closed_without_waiting_for_the_rest() {
    let (upstream, fwd, metrics) = strict_forwarder(&[]);
    let overrun = inet(&[0x04, 0x00, 0x05, 1, 2, 3, 4]);
    expect_closed_at_once(&fwd, &overrun[..FIRST_VALUE], "overrun head only");
    expect_rejected(metrics, "tlv-overrun", 1);
    let too_long = inet(&tlv(0x04, &[0; 1000]));
    expect_closed_at_once(&fwd, &too_long[..16], "length field only");
    expect_rejected(metrics, "too-long", 1);
    assert!(upstream.try_accept(Duration::from_millis(200)).is_none());
}

/// Well-formed headers with TLVs (a valid CRC32C, an SSL TLV with sub-TLVs, ALPN, authority), even
/// delivered byte by byte, are accepted and the payload after them forwarded alone.
#[test]
fn test_valid_tlvs_accepted_byte_by_byte() {
    let subs = [tlv(0x21, b"TLSv1.3"), tlv(0x22, b"client.example")].concat();
    let tlvs = [
        tlv(0x03, &[0; 4]),
        tlv(0x01, b"h2"),
        tlv(0x02, b"example.com"),
        ssl(&subs),
    ]
    .concat();
    let header = sealed(inet(&tlvs), FIRST_VALUE);
    accept_proxy_by_hand(&header, "192.0.2.1:5000", true);
}

/// A client that stops in the middle of its header is counted as `timeout`; one that leaves there as
/// `client-closed`; neither reaches the upstream.
#[test]
fn test_timeout_and_client_closed_counted() {
    let (upstream, fwd, metrics) = strict_forwarder(&["--header-timeout", "300ms"]);
    let header = inet(&tlv(0x01, b"h2"));
    let mut waiting = connect(fwd.addr());
    waiting.write_all(&header[..20]).expect("write");
    expect_closed_without_data(&mut waiting, Duration::from_secs(5));
    expect_rejected(metrics, "timeout", 1);
    let mut leaving = connect(fwd.addr());
    leaving.write_all(&header[..20]).expect("write");
    leaving
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    expect_closed_without_data(&mut leaving, Duration::from_secs(5));
    expect_rejected(metrics, "client-closed", 1);
    reset(connect(fwd.addr()));
    expect_rejected(metrics, "client-closed", 2);
    assert!(upstream.try_accept(Duration::from_millis(200)).is_none());
}

/// `--threads 2`: the rejections of both reactors add up in the one exposition.
#[test]
fn test_rejections_merged_across_threads() {
    let (upstream, fwd, metrics) = strict_forwarder(&["--threads", "2"]);
    let overrun = inet(&[0x04, 0x00, 0x05, 1, 2, 3, 4]);
    for _ in 0..20 {
        expect_closed_at_once(&fwd, &overrun, "overrun");
    }
    expect_rejected(metrics, "tlv-overrun", 20);
    assert!(upstream.try_accept(Duration::from_millis(200)).is_none());
}

// ---- --send-proxy-tlvs: the client's TLVs carried into the upstream header --------------------------

/// The value of the first TLV of `kind` in a v2 header, read with a walk of its own (not the parser's).
fn tlv_value(header: &[u8], kind: u8) -> Option<Vec<u8>> {
    let address_len = match header[13] {
        0x11 => 12,
        0x21 => 36,
        other => panic!("family {other:#x}"),
    };
    let mut at = 16 + address_len;
    while at + 3 <= header.len() {
        let len = usize::from(u16::from_be_bytes([header[at + 1], header[at + 2]]));
        if header[at] == kind {
            return Some(header[at + 3..at + 3 + len].to_vec());
        }
        at += 3 + len;
    }
    None
}

/// With `--send-proxy-tlvs alpn,authority` the upstream header repeats exactly those two TLVs of the
/// client's header (read by a raw receiver): not the unique ID, NOOP or custom ones; a client with a
/// v1 header, or a v2 header without TLVs, has none carried.
#[test]
fn test_send_proxy_tlvs_carries_only_what_is_asked() {
    let upstream = Upstream::bind();
    let fwd = relaying(upstream.addr(), &["--send-proxy-tlvs", "alpn,authority"]);
    let (header, rest) = relayed(&fwd, &upstream, &with_carryable_tlvs(), b"payload");
    assert_eq!(rest, b"payload");
    assert_eq!(tlv_value(&header, 0x01).as_deref(), Some(&b"h2"[..]));
    assert_eq!(
        tlv_value(&header, 0x02).as_deref(),
        Some(&b"example.com"[..])
    );
    for absent in [0x04, 0x05, 0xE0] {
        assert_eq!(tlv_value(&header, absent), None, "type {absent:#x} carried");
    }
    assert_eq!(header.len(), 16 + 12 + (3 + 2) + (3 + 11), "{header:?}");
    let (_, source, _) = done(&header);
    assert_eq!(source, Some("192.0.2.1:5000".parse().expect("addr")));

    for (what, greeting) in [
        (
            "v1",
            b"PROXY TCP4 198.51.100.7 127.0.0.1 6000 80\r\n".to_vec(),
        ),
        ("v2 without TLVs", inet(&[])),
    ] {
        let (header, rest) = relayed(&fwd, &upstream, &greeting, b"x");
        assert_eq!(rest, b"x");
        assert_eq!(header.len(), 16 + 12, "{what}: {header:?}");
    }
}

// ---- real peers ---------------------------------------------------------------------------------

/// A server process started from a temp directory, killed and reaped on drop.
struct Peer {
    child: Child,
    dir: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {program} || test -x /usr/sbin/{program}"),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether `program` is missing, so that `test` is skipped (said on stderr). .ci/run installs every
/// peer: in CI a missing one is a failure, not a skip.
fn missing(program: &str, test: &str) -> bool {
    if installed(program) {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is required in CI"
    );
    eprintln!("SKIPPED {test}: {program} is not installed");
    true
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "edgefwd-{name}-{}-{}",
        std::process::id(),
        unused_port()
    ));
    fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn wait_listening(addr: SocketAddr, peer: &mut Peer) {
    let up = wait_until(Duration::from_secs(10), || try_connect(addr).is_ok());
    if !up {
        let _ = peer.child.kill();
        let output = fs::read_to_string(peer.dir.join("error.log")).unwrap_or_default();
        panic!("peer never listened on {addr}: {output}");
    }
}

/// nginx with `listen ... proxy_protocol` answering every request with the address the header carried.
fn start_nginx() -> (Peer, SocketAddr) {
    let dir = temp_dir("nginx");
    let addr: SocketAddr = format!("127.0.0.1:{}", unused_port())
        .parse()
        .expect("addr");
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n    listen {addr} proxy_protocol;\n    location / {{ return 200 \"$proxy_protocol_addr:$proxy_protocol_port\"; }}\n  }}\n}}\n"
    );
    fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    let child = Command::new("nginx")
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nginx");
    let mut peer = Peer { child, dir };
    wait_listening(addr, &mut peer);
    (peer, addr)
}

/// haproxy run from a temp directory named after `name`, with the configuration `conf` makes for the
/// frontend address it is given; its stdout goes to `stdout.log` in that directory when `log_stdout`.
/// Returns once the frontend listens.
fn start_haproxy(
    name: &str,
    log_stdout: bool,
    conf: impl FnOnce(SocketAddr) -> String,
) -> (Peer, SocketAddr) {
    let dir = temp_dir(name);
    let front: SocketAddr = format!("127.0.0.1:{}", unused_port())
        .parse()
        .expect("addr");
    let path = dir.join("haproxy.cfg");
    fs::write(&path, conf(front)).expect("write haproxy.cfg");
    let stdout = if log_stdout {
        Stdio::from(fs::File::create(dir.join("stdout.log")).expect("log file"))
    } else {
        Stdio::null()
    };
    let child = Command::new("haproxy")
        .args(["-db", "-f", &path.display().to_string()])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn haproxy");
    let mut haproxy = Peer { child, dir };
    wait_listening(front, &mut haproxy);
    (haproxy, front)
}

fn nginx_sees_client(version: &str) {
    if missing("nginx", &format!("nginx interop ({version})")) {
        return;
    }
    let (_nginx, addr) = start_nginx();
    let fwd = Forwarder::start(&["--upstream", &addr.to_string(), "--send-proxy", version]);
    let mut client = connect(fwd.addr());
    client
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("write");
    let (bytes, _) = read_until_end(&mut client, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&bytes);
    let expected = client.local_addr().expect("addr").to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with(&expected),
        "nginx saw another client than {expected}: {text}"
    );
}

#[test]
fn test_nginx_reads_send_proxy_v1() {
    nginx_sees_client("v1");
}

#[test]
fn test_nginx_reads_send_proxy_v2() {
    nginx_sees_client("v2");
}

/// haproxy in front of edgefwd with `send-proxy-v2`: edgefwd logs the client haproxy saw, not haproxy.
#[test]
fn test_haproxy_send_proxy_v2_into_accept_proxy() {
    if missing("haproxy", "haproxy interop") {
        return;
    }
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--accept-proxy"]);
    let (_haproxy, front) = start_haproxy("haproxy", false, |front| {
        format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 20s\n  timeout server 20s\nfrontend f\n  bind {front}\n  default_backend b\nbackend b\n  server s {} send-proxy-v2\n",
            fwd.addr()
        )
    });
    let mut client = connect(front);
    client.write_all(b"through haproxy").expect("write");
    let mut got = [0u8; 15];
    client.read_exact(&mut got).expect("read echo");
    assert_eq!(&got, b"through haproxy");
    let me = client.local_addr().expect("addr");
    drop(client);
    assert!(
        fwd.wait_for_log(
            &format!("PROXY header: client={me}"),
            Duration::from_secs(5)
        ),
        "{}",
        fwd.logs()
    );
}

/// `--balance source-hash` hashes the carried client address, not the proxy's: clients that all come
/// from 127.0.0.1 spread over both upstreams when their headers name different addresses, and one
/// carried address always lands on the same upstream.
#[test]
fn test_source_hash_uses_the_carried_address() {
    let (a, b) = (Backend::echo(), Backend::echo());
    let fwd = Forwarder::start(&[
        "--upstream",
        &a.upstream_arg(),
        "--upstream",
        &b.upstream_arg(),
        "--balance",
        "source-hash",
        "--accept-proxy",
    ]);
    let send = |ip: &str| {
        let mut client = connect(fwd.addr());
        let header = format!("PROXY TCP4 {ip} 127.0.0.1 1000 80\r\nx");
        client.write_all(header.as_bytes()).expect("write");
        let mut got = [0u8; 1];
        client.read_exact(&mut got).expect("read echo");
    };
    for i in 1..=24 {
        send(&format!("10.1.0.{i}"));
    }
    assert!(
        a.accepted() > 0 && b.accepted() > 0,
        "carried addresses all went one way: {} / {}",
        a.accepted(),
        b.accepted()
    );
    let (before_a, before_b) = (a.accepted(), b.accepted());
    for _ in 0..8 {
        send("10.1.0.200");
    }
    let moved = (a.accepted() - before_a, b.accepted() - before_b);
    assert!(
        moved == (8, 0) || moved == (0, 8),
        "one address, two upstreams: {moved:?}"
    );
}

/// haproxy behind edgefwd, `accept-proxy` on its frontend, logging the TLVs it received
/// (`fc_pp_authority`, `fc_pp_unique_id`) to its stdout, which the test reads from a file: a real
/// receiver of `--send-proxy-tlvs authority,unique_id`. A client with a v1 header has none carried.
#[test]
fn test_haproxy_reads_carried_tlvs() {
    if missing("haproxy", "haproxy TLV interop") {
        return;
    }
    let echo = Backend::echo();
    let (haproxy, front) = start_haproxy("haproxy-tlv", true, |front| {
        format!(
            "global\n  maxconn 100\n  log stdout format raw local0\ndefaults\n  mode tcp\n  log global\n  timeout connect 5s\n  timeout client 20s\n  timeout server 20s\nfrontend f\n  bind {front} accept-proxy\n  log-format \"pp auth=%[fc_pp_authority] uid=%[fc_pp_unique_id] src=%ci:%cp\"\n  default_backend b\nbackend b\n  server s {}\n",
            echo.addr()
        )
    });
    let log_path = haproxy.dir.join("stdout.log");
    let fwd = relaying(front, &["--send-proxy-tlvs", "authority,unique_id"]);
    let through = |greeting: &[u8]| {
        let mut client = connect(fwd.addr());
        client
            .write_all(&[greeting, b"ping"].concat())
            .expect("write");
        let mut got = [0u8; 4];
        client
            .read_exact(&mut got)
            .expect("read echo through haproxy");
        assert_eq!(&got, b"ping");
    };
    let logged = |line: &str| {
        let found = wait_until(Duration::from_secs(10), || {
            fs::read_to_string(&log_path).is_ok_and(|log| log.lines().any(|l| l == line))
        });
        assert!(
            found,
            "haproxy did not log {line:?}:\n{}",
            fs::read_to_string(&log_path).unwrap_or_default()
        );
    };
    through(&with_carryable_tlvs());
    logged("pp auth=example.com uid=id-1 src=192.0.2.1:5000");
    through(b"PROXY TCP4 198.51.100.7 127.0.0.1 6000 80\r\n");
    logged("pp auth=- uid=- src=198.51.100.7:6000");
}
