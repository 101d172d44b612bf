//! Per-client limits and listener access, over loopback: `--max-conns-per-client` by address and by
//! prefix, `--conn-rate-per-client` and its window, `--client-allow`/`--client-deny` (most specific
//! rule wins), the PROXY header's address used with `--accept-proxy`, `--queue-timeout`, a reload
//! changing a limit, and `edgefwd_client_rejects_total{limit}`. A client turned away sees RST.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use socket2::{Domain, Socket, Type};

/// A client of `addr` from the loopback address `source` (127.0.0.x, or ::1). A client reset at once
/// may see the RST before connect(2) returns: then the error.
fn try_connect_from(source: &str, addr: SocketAddr) -> io::Result<TcpStream> {
    let source: SocketAddr = SocketAddr::new(source.parse().expect("source address"), 0);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.bind(&source.into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    set_timeouts(&stream, Duration::from_secs(5));
    Ok(stream)
}

fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    try_connect_from(source, addr).unwrap_or_else(|e| panic!("connect {addr} from {source}: {e}"))
}

fn ping(client: &mut TcpStream, msg: &[u8]) {
    client.write_all(msg).expect("write");
    let mut buf = vec![0u8; msg.len()];
    client.read_exact(&mut buf).expect("read echo");
    assert_eq!(buf, msg);
}

/// The client is served: its bytes come back from the echo upstream.
fn served(source: &str, addr: SocketAddr) -> TcpStream {
    let mut client = connect_from(source, addr);
    ping(&mut client, b"hello");
    client
}

/// The client from `source` is reset without a byte.
fn reset_at_once(source: &str, addr: SocketAddr) {
    let client = match try_connect_from(source, addr) {
        Ok(client) => client,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
        Err(e) => panic!("connect {addr} from {source}: {e}"),
    };
    expect_reset(client)
}

/// `client` is reset without a byte.
fn expect_reset(mut client: TcpStream) {
    // A reset that arrives before this write is reported by the write itself, once: a read after it
    // would see only the end of the stream.
    if let Err(err) = client.write_all(b"hello") {
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset,
            "a refused client must see RST: {err}"
        );
        return;
    }
    let end = expect_closed_without_data(&mut client, Duration::from_secs(5));
    assert_eq!(end, End::Reset, "a refused client must see RST");
}

/// `edgefwd_client_rejects_total{route="default",limit=LIMIT}`.
fn rejects(fwd: &Forwarder, limit: &str) -> u64 {
    sample(
        &scrape(fwd.metrics_addr()),
        &format!("edgefwd_client_rejects_total{{route=\"default\",limit=\"{limit}\"}}"),
    )
}

#[test]
fn test_max_conns_per_client_by_address() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--max-conns-per-client",
        "2",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let first = served("127.0.0.1", fwd.addr());
    let _second = served("127.0.0.1", fwd.addr());
    reset_at_once("127.0.0.1", fwd.addr());
    // Another address is another client.
    let _other = served("127.0.0.2", fwd.addr());
    assert_eq!(echo.accepted(), 3, "a refused client reached the upstream");
    // A connection closing gives its client room again.
    drop(first);
    fwd.wait_for_close("client-fin", Duration::from_secs(5));
    let _third = served("127.0.0.1", fwd.addr());
    assert_eq!(rejects(&fwd, "max-conns"), 1);
    assert_eq!(rejects(&fwd, "rate"), 0);
}

#[test]
fn test_max_conns_per_client_by_prefix_v4_and_v6() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--max-conns-per-client",
        "1",
        "--per-client-prefix",
        "24,64",
    ]);
    let _first = served("127.0.0.1", fwd.addr());
    // Same /24: the same client.
    reset_at_once("127.0.0.2", fwd.addr());
    let _other_24 = served("127.0.1.1", fwd.addr());

    let fwd6 = Forwarder::start(&[
        "--listen",
        "[::1]:0",
        "--upstream",
        &echo.upstream_arg(),
        "--max-conns-per-client",
        "1",
    ]);
    let _v6 = served("::1", fwd6.addr());
    reset_at_once("::1", fwd6.addr());
}

#[test]
fn test_conn_rate_per_client_and_its_window() {
    let echo = Backend::echo();
    // A window long enough that a loaded machine cannot let it turn mid-test by accident.
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--conn-rate-per-client",
        "3/4s",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let start = Instant::now();
    for _ in 0..3 {
        drop(served("127.0.0.1", fwd.addr()));
    }
    reset_at_once("127.0.0.1", fwd.addr());
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "too slow to test the window"
    );
    let _other = served("127.0.0.2", fwd.addr());
    // The window turns: the client is let in again.
    std::thread::sleep(
        Duration::from_secs(4).saturating_sub(start.elapsed()) + Duration::from_millis(200),
    );
    let _again = served("127.0.0.1", fwd.addr());
    assert_eq!(rejects(&fwd, "rate"), 1);
}

#[test]
fn test_client_allow_and_deny_most_specific_rule_wins() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--client-allow",
        "127.0.0.0/8",
        "--client-deny",
        "127.0.0.0/24",
        "--client-allow",
        "127.0.0.3",
        "--metrics",
        "127.0.0.1:0",
    ]);
    reset_at_once("127.0.0.1", fwd.addr());
    let _exception = served("127.0.0.3", fwd.addr());
    let _wider = served("127.0.1.1", fwd.addr());
    assert_eq!(rejects(&fwd, "acl"), 1);

    // An allow list keeps out what it does not name.
    let fwd6 = Forwarder::start(&[
        "--listen",
        "[::1]:0",
        "--upstream",
        &echo.upstream_arg(),
        "--client-allow",
        "127.0.0.0/8",
    ]);
    reset_at_once("::1", fwd6.addr());
    assert_eq!(echo.accepted(), 2);
}

#[test]
fn test_accept_proxy_limits_apply_to_the_header_address() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--accept-proxy",
        "--client-deny",
        "192.0.2.0/24",
        "--max-conns-per-client",
        "1",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let greet = |source: &str| {
        let mut client = connect_from("127.0.0.1", fwd.addr());
        let header = format!("PROXY TCP4 {source} 127.0.0.1 5555 80\r\n");
        client.write_all(header.as_bytes()).expect("header");
        client
    };
    expect_reset(greet("192.0.2.7"));
    // The peer is 127.0.0.1 every time: counted by the header's address, these are two clients.
    let mut first = greet("198.51.100.1");
    ping(&mut first, b"one");
    let mut second = greet("198.51.100.2");
    ping(&mut second, b"two");
    expect_reset(greet("198.51.100.1"));
    assert_eq!(echo.accepted(), 2);
    assert_eq!(rejects(&fwd, "acl"), 1);
    assert_eq!(rejects(&fwd, "max-conns"), 1);
}

#[test]
fn test_queue_timeout_resets_clients_queued_at_max_connections() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--max-connections",
        "1",
        "--queue-timeout",
        "1s",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let mut held = served("127.0.0.1", fwd.addr());
    let start = Instant::now();
    let mut queued = connect_from("127.0.0.1", fwd.addr());
    queued.write_all(b"waiting").expect("write");
    let end = expect_closed_without_data(&mut queued, Duration::from_secs(15));
    assert_eq!(end, End::Reset);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "reset after {:?}, before --queue-timeout",
        start.elapsed()
    );
    ping(&mut held, b"still served");
    assert_eq!(echo.accepted(), 1);
    assert_eq!(rejects(&fwd, "queue-timeout"), 1);
}

#[test]
fn test_reload_changes_max_conns_per_client() {
    let echo = Backend::echo();
    let text = |most: u32, listen: &str| {
        format!(
            "metrics = \"127.0.0.1:0\"\n[[route]]\nname = \"web\"\nlisten = \"{listen}\"\nupstreams = [\"{}\"]\nmax_conns_per_client = {most}\n",
            echo.upstream_arg()
        )
    };
    let file = ConfigFile::new(&text(1, "127.0.0.1:0"));
    let fwd = Forwarder::start(&["--config", file.path()]);
    let addr = fwd.addr();
    let _live = served("127.0.0.1", addr);
    reset_at_once("127.0.0.1", addr);

    let before = fwd.count_log("reload: 1 routes (+0 -0 ~1)");
    file.write(&text(2, &addr.to_string()));
    fwd.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || fwd
            .count_log("reload: 1 routes (+0 -0 ~1)")
            > before),
        "no reload; log:\n{}",
        fwd.logs()
    );
    // The replacing route shares the old one's table (by name): the live connection, left with the
    // old, draining route, still counts against the new limit of 2.
    let _a = served("127.0.0.1", addr);
    reset_at_once("127.0.0.1", addr);
    // Counted under the route's name, across the replacement.
    let body = scrape(fwd.metrics_addr());
    assert_eq!(
        sample(
            &body,
            "edgefwd_client_rejects_total{route=\"web\",limit=\"max-conns\"}"
        ),
        2
    );
    // Once it closes, its room is the new route's.
    drop(_live);
    fwd.wait_for_close("client-fin", Duration::from_secs(5));
    let _b = served("127.0.0.1", addr);
}

/// With `--threads 2` both reactors accept from the one socket, and a client's connections are
/// counted once for the route, whichever reactor took them: `--max-conns-per-client 3` lets exactly
/// 3 in. Clients keep coming (every one held open) until each reactor's stats line shows it accepted
/// some and at least 4 came, so that tables per reactor would have let at least 4 in.
#[test]
fn test_threads_share_one_client_table() {
    let echo = Backend::echo();
    let opts = Options {
        rust_log: Some("info".into()),
        ..Options::default()
    };
    let fwd = Forwarder::start_with(
        &[
            "--upstream",
            &echo.upstream_arg(),
            "--threads",
            "2",
            "--stats-interval",
            "50ms",
            "--max-conns-per-client",
            "3",
            "--metrics",
            "127.0.0.1:0",
        ],
        &opts,
    );
    let accepts = |reactor| stats_total(&fwd.logs(), reactor, "accepts");
    let (mut held, mut refused) = (Vec::new(), 0u64);
    for _round in 0..30 {
        for _ in 0..4 {
            match try_connect_from("127.0.0.1", fwd.addr()) {
                Ok(mut client) => {
                    let _ = client.write_all(b"hello");
                    let mut buf = [0u8; 5];
                    match client.read_exact(&mut buf) {
                        Ok(()) => held.push(client),
                        Err(e) if classify(&e) == End::Reset => refused += 1,
                        Err(e) => panic!("neither served nor reset: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => refused += 1,
                Err(e) => panic!("connect: {e}"),
            }
        }
        let total = held.len() as u64 + refused;
        // The stats lines come every 50 ms: wait for them to cover every client so far.
        wait_until(Duration::from_secs(5), || accepts(0) + accepts(1) == total);
        if accepts(0) > 0 && accepts(1) > 0 {
            break;
        }
    }
    let (zero, one) = (accepts(0), accepts(1));
    assert!(
        zero > 0 && one > 0,
        "both reactors must accept for the test to mean anything: {zero} and {one}"
    );
    assert_eq!(
        held.len(),
        3,
        "one client, limit 3, reactors accepted {zero} and {one}"
    );
    assert_eq!(rejects(&fwd, "max-conns"), refused);
    assert_eq!(echo.accepted(), 3);
}

/// A bad value is refused at start, naming it, with status 2.
#[test]
fn test_bad_values_exit_2_naming_them() {
    for (flag, value) in [
        ("--client-deny", "10.0.0.1/8"),
        ("--client-allow", "::1/129"),
        ("--conn-rate-per-client", "5"),
        ("--per-client-prefix", "24"),
        ("--max-conns-per-client", "0"),
        ("--queue-timeout", "soon"),
    ] {
        let (code, stderr) = run_with_upstream_expect_fail(&[flag, value]);
        assert_eq!(code, Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(value), "{flag} {value}: {stderr}");
    }
}
