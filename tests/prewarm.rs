//! `--prewarm N`: never-used upstream connections kept ready, each handed to one client only.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect, echo_conn, loopback4, wait_until, Backend, Forwarder, IO_TIMEOUT};

/// A backend that greets every connection with `conn-PORT\n` (the forwarder's port on that
/// connection), then echoes; `greeted` lists the ports greeted so far. Names come from the connection
/// itself, not from the order the backend's threads happen to run in.
fn greeting_echo() -> (Backend, Arc<Mutex<Vec<String>>>) {
    let greeted = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&greeted);
    let backend = Backend::spawn(loopback4(), move |mut stream: TcpStream| {
        let name = match stream.peer_addr() {
            Ok(peer) => format!("conn-{}", peer.port()),
            Err(_) => return,
        };
        record.lock().expect("greeted list").push(name.clone());
        if stream.write_all(format!("{name}\n").as_bytes()).is_ok() {
            echo_conn(stream);
        }
    });
    (backend, greeted)
}

/// Reads the greeting line a client receives first.
fn greeting(client: &TcpStream) -> String {
    let mut line = String::new();
    BufReader::new(client.try_clone().expect("clone"))
        .read_line(&mut line)
        .expect("greeting");
    line.trim_end().to_string()
}

#[test]
fn test_pool_fills_before_any_client_and_refills_after_use() {
    let (backend, greeted) = greeting_echo();
    let fwd = Forwarder::start(&["--upstream", &backend.upstream_arg(), "--prewarm", "4"]);
    assert!(
        wait_until(Duration::from_secs(5), || greeted
            .lock()
            .expect("greeted list")
            .len()
            == 4),
        "{} upstream connections before any client",
        backend.accepted()
    );
    let warm = greeted.lock().expect("greeted list").clone();
    let mut client = connect(fwd.addr());
    let first = greeting(&client);
    assert!(
        warm.contains(&first),
        "the client got {first}, not one of the warm connections {warm:?}: it waited for a new connect"
    );
    client.write_all(b"ping").expect("write");
    let mut back = [0u8; 4];
    client.read_exact(&mut back).expect("echo");
    assert_eq!(&back, b"ping");
    assert!(
        wait_until(Duration::from_secs(5), || backend.accepted() == 5),
        "the pool was not topped up after handing one out"
    );
}

#[test]
fn test_a_warm_connection_serves_exactly_one_client() {
    let (backend, _) = greeting_echo();
    let fwd = Forwarder::start(&["--upstream", &backend.upstream_arg(), "--prewarm", "2"]);
    assert!(wait_until(Duration::from_secs(5), || backend.accepted() == 2));
    let mut seen = Vec::new();
    for _ in 0..6 {
        let client = connect(fwd.addr());
        seen.push(greeting(&client));
        client.shutdown(Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        let _ = (&client).read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "bytes from another client's stream: {rest:?}"
        );
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an upstream connection was reused: {seen:?}"
    );
}

#[test]
fn test_warm_connection_closed_by_upstream_is_replaced() {
    // The upstream closes the first two connections as soon as it accepts them (an idle timeout of
    // zero); later ones are served. The pool must notice and replace them, and no client may be given
    // a dead connection.
    let counter = Arc::new(AtomicUsize::new(0));
    let backend = Backend::spawn(loopback4(), move |stream: TcpStream| {
        if counter.fetch_add(1, Ordering::SeqCst) >= 2 {
            echo_conn(stream);
        }
    });
    let fwd = Forwarder::start(&["--upstream", &backend.upstream_arg(), "--prewarm", "2"]);
    assert!(
        wait_until(Duration::from_secs(5), || backend.accepted() >= 4),
        "closed warm connections were not replaced: {} accepted",
        backend.accepted()
    );
    let mut client = connect(fwd.addr());
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    client.write_all(b"still alive?").expect("write");
    let mut back = [0u8; 12];
    client
        .read_exact(&mut back)
        .expect("echo through a live connection");
    assert_eq!(&back, b"still alive?");
}

/// A backend that greets every connection with `NAME-N\n`, then echoes.
fn named_greeter(name: &'static str) -> Backend {
    let counter = Arc::new(AtomicUsize::new(0));
    Backend::spawn(loopback4(), move |mut stream: TcpStream| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if stream.write_all(format!("{name}-{n}\n").as_bytes()).is_ok() {
            echo_conn(stream);
        }
    })
}

#[test]
fn test_warm_connections_follow_the_balancer() {
    // Two upstreams, round-robin: the pool warms both, and each client gets a warm connection to
    // the upstream the balancer picked for it, so the split stays even.
    let (a, b) = (named_greeter("a"), named_greeter("b"));
    let fwd = Forwarder::start(&[
        "--upstream",
        &a.upstream_arg(),
        "--upstream",
        &b.upstream_arg(),
        "--prewarm",
        "2",
    ]);
    assert!(
        wait_until(Duration::from_secs(5), || a.accepted() == 1
            && b.accepted() == 1),
        "warm connections not spread over both upstreams: a={} b={}",
        a.accepted(),
        b.accepted()
    );
    let mut per_upstream = [0usize; 2];
    for _ in 0..4 {
        let client = connect(fwd.addr());
        let line = greeting(&client);
        match line.split('-').next() {
            Some("a") => per_upstream[0] += 1,
            Some("b") => per_upstream[1] += 1,
            _ => panic!("unexpected greeting {line:?}"),
        }
    }
    assert_eq!(per_upstream, [2, 2], "round-robin split with prewarm");
}

#[test]
fn test_warm_connection_greeted_then_closed_is_replaced() {
    // The first two connections get a greeting and then a FIN while they wait in the pool. A peek
    // would see the greeting and call them open; the pool must notice the FIN and replace them, so
    // the client gets a live connection, not a greeting followed by EOF.
    let counter = Arc::new(AtomicUsize::new(0));
    let backend = Backend::spawn(loopback4(), move |mut stream: TcpStream| {
        if counter.fetch_add(1, Ordering::SeqCst) < 2 {
            let _ = stream.write_all(b"bye\n");
        } else {
            echo_conn(stream);
        }
    });
    let fwd = Forwarder::start(&["--upstream", &backend.upstream_arg(), "--prewarm", "2"]);
    assert!(
        wait_until(Duration::from_secs(5), || backend.accepted() >= 4),
        "greeted-then-closed warm connections were not replaced: {} accepted",
        backend.accepted()
    );
    let mut client = connect(fwd.addr());
    client.write_all(b"live?").expect("write");
    let mut back = [0u8; 5];
    client
        .read_exact(&mut back)
        .expect("echo through a live connection");
    assert_eq!(&back, b"live?");
}

/// A route whose only upstream is down: the pool's connect backoff runs out while there is nothing to
/// connect to. The loop must then sleep (no timers due), not wake up at once on a backoff deadline
/// that has passed.
#[test]
fn test_pool_with_every_upstream_down_does_not_spin() {
    let fwd = Forwarder::start(&[
        "--upstream",
        &common::refused_addr().to_string(),
        "--prewarm",
        "1",
        "--fall",
        "1",
    ]);
    // A client's refused connect marks the upstream down (the warm connect was refused too). When the
    // warm connect's refusal came first, the client is reset at once, and the reset can beat connect(2)
    // on loopback: the client then sees ECONNRESET from connect, not from read.
    match common::try_connect(fwd.addr()) {
        Ok(mut client) => {
            let mut buf = [0u8; 1];
            let _ = client.read(&mut buf);
        }
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "connect: {e}"
        ),
    }
    fwd.wait_for_close("connect-refused", Duration::from_secs(5));
    // Past the pool's backoff.
    std::thread::sleep(Duration::from_millis(1500));
    let ticks = common::clock_ticks_per_sec();
    let before = fwd.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = fwd.cpu_ticks() - before;
    assert!(
        used * 4 < ticks,
        "forwarder used {used} ticks ({ticks}/s) in 2s with nothing to do: a busy loop"
    );
}

/// A warm connect the upstream never answers (SYNs dropped) is given up after --connect-timeout, like
/// a client's, instead of holding its socket through the kernel's two-minute SYN retries.
#[test]
fn test_warm_connect_to_a_blackhole_times_out() {
    let hole = common::Blackhole::new();
    let fwd = Forwarder::start(&[
        "--upstream",
        &hole.addr().to_string(),
        "--prewarm",
        "1",
        "--connect-timeout",
        "300ms",
    ]);
    fwd.expect_log(
        "warm upstream connect failed: connect timed out",
        Duration::from_secs(3),
    );
}
