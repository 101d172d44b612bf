//! SIGHUP reloads the `--config` file: routes come and go, upstream sets change for new connections, a bad
//! file is rejected whole, and no live connection is cut.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

fn route(name: &str, listen: &str, upstreams: &[&Backend]) -> String {
    let list: Vec<String> = upstreams
        .iter()
        .map(|b| format!("\"{}\"", b.upstream_arg()))
        .collect();
    format!(
        "[[route]]\nname = \"{name}\"\nlisten = \"{listen}\"\nupstreams = [{}]\n\n",
        list.join(", ")
    )
}

/// Sends `chunk` pattern bytes from `offset` and reads the echo back, checking it.
fn echo_chunk(s: &mut TcpStream, offset: u64, len: usize) {
    s.write_all(pattern(offset, len)).expect("write");
    let mut back = vec![0u8; len];
    s.read_exact(&mut back).expect("echo");
    assert!(back == pattern(offset, len), "echo differs at {offset}");
}

fn reload(fwd: &Forwarder, file: &ConfigFile, text: &str, expect: &str) {
    let before = fwd.count_log(expect);
    file.write(text);
    fwd.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || fwd.count_log(expect) > before),
        "no {expect:?} after SIGHUP; log:\n{}",
        fwd.logs()
    );
}

fn refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[test]
fn test_reload_adds_and_removes_a_route_while_a_transfer_is_in_flight() {
    let a = Backend::echo();
    let b = Backend::echo();
    let file = ConfigFile::new(&route("old", "127.0.0.1:0", &[&a]));
    let fwd = Forwarder::start(&["--config", file.path()]);
    let old = fwd.addr();
    let mut live = connect(old);
    echo_chunk(&mut live, 0, 64 * 1024);

    reload(
        &fwd,
        &file,
        &route("new", "127.0.0.1:0", &[&b]),
        "reload: 1 routes (+1 -1 ~0)",
    );
    let new = fwd.route_addr("new");
    echo_roundtrip(new, 64 * 1024, 16 * 1024);
    assert_eq!(b.accepted(), 1);
    assert!(refused(old), "the removed route still accepts");

    // The connection accepted before the reload goes on, byte-exact, to its end.
    for i in 1..16u64 {
        echo_chunk(&mut live, i * 64 * 1024, 64 * 1024);
    }
    live.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let (rest, end) = read_until_end(&mut live, Duration::from_secs(10));
    assert_eq!((rest.len(), end), (0, End::Eof));
    fwd.expect_log("route old: drained, removed", Duration::from_secs(5));
    let closes = fwd.closes();
    assert!(
        closes.iter().all(|c| c.cause == "client-fin"),
        "a reload cut a connection: {closes:?}"
    );
    assert_eq!(a.accepted(), 1);
}

#[test]
fn test_changed_upstreams_apply_to_new_connections_only() {
    let a = Backend::echo();
    let b = Backend::echo();
    let file = ConfigFile::new(&route("web", "127.0.0.1:0", &[&a]));
    let fwd = Forwarder::start(&["--config", file.path()]);
    let addr = fwd.addr();
    let mut live = connect(addr);
    echo_chunk(&mut live, 0, 1024);

    // Pin the port the route was given, then change its upstream: each reload replaces the route (~1),
    // which takes the listening socket over, so the address never stops accepting.
    let pinned = addr.to_string();
    reload(
        &fwd,
        &file,
        &route("web", &pinned, &[&a]),
        "reload: 1 routes (+0 -0 ~1)",
    );
    reload(
        &fwd,
        &file,
        &route("web", &pinned, &[&b]),
        "reload: 1 routes (+0 -0 ~1)",
    );
    for _ in 0..3 {
        echo_roundtrip(addr, 4096, 4096);
    }
    assert_eq!(b.accepted(), 3);
    echo_chunk(&mut live, 1024, 1024);
    assert_eq!(a.accepted(), 1, "the live connection stayed where it was");
}

#[test]
fn test_invalid_reload_is_rejected_and_the_old_config_kept() {
    let a = Backend::echo();
    let file = ConfigFile::new(&route("web", "127.0.0.1:0", &[&a]));
    let fwd = Forwarder::start(&["--config", file.path()]);
    let bad = format!(
        "{}balance = \"round-robbin\"\n",
        route("web", "127.0.0.1:0", &[&a])
    );
    reload(&fwd, &file, &bad, "reload rejected");
    assert!(
        fwd.logs().contains(&format!(
            "{}:6: route[0].balance: unknown variant",
            file.path()
        )),
        "{}",
        fwd.logs()
    );
    echo_roundtrip(fwd.addr(), 4096, 4096);
    assert_eq!(a.accepted(), 1);

    // A file whose new listener cannot bind is rejected too, and the running route keeps serving.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let clash = format!(
        "{}{}",
        route("web", "127.0.0.1:0", &[&a]),
        route("extra", &taken_addr, &[&a])
    );
    reload(&fwd, &file, &clash, "reload rejected");
    assert!(fwd
        .logs()
        .contains(&format!("cannot listen on {taken_addr}")));
    echo_roundtrip(fwd.addr(), 4096, 4096);

    // And a good file after that applies.
    let b = Backend::echo();
    let good = format!(
        "{}{}",
        route("web", "127.0.0.1:0", &[&a]),
        route("second", "127.0.0.1:0", &[&b])
    );
    reload(&fwd, &file, &good, "reload: 2 routes (+1 -0 ~0)");
    let second = fwd.route_addr("second");
    echo_roundtrip(second, 4096, 4096);
    assert_eq!(b.accepted(), 1);
}

#[test]
fn test_sighup_without_a_file_is_ignored() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    fwd.signal(libc::SIGHUP);
    fwd.expect_log("SIGHUP ignored", Duration::from_secs(5));
    echo_roundtrip(fwd.addr(), 1024, 1024);
}

/// `--metrics` from the command line is kept by a reload of a file that does not set `metrics`; that
/// is not a change to warn about.
#[test]
fn test_reload_keeps_command_line_metrics_without_a_warning() {
    let a = Backend::echo();
    let text = route("only", "127.0.0.1:0", &[&a]);
    let file = ConfigFile::new(&text);
    let fwd = Forwarder::start(&["--config", file.path(), "--metrics", "127.0.0.1:0"]);
    let metrics = fwd.metrics_addr();
    reload(&fwd, &file, &text, "reload: ");
    assert_eq!(
        fwd.count_log("take effect at the next restart"),
        0,
        "{}",
        fwd.logs()
    );
    assert!(scrape(metrics).contains("edgefwd_reloads_total"));
}
