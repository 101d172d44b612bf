//! Resets are passed on as resets (never turned into a clean EOF), and a clean FIN right after a
//! burst of data loses none of it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// An established pair: a forwarder in front of `up`, its client, and the upstream's side, which has
/// read the client's first 5 bytes ("hello").
struct Hello {
    up: Upstream,
    fwd: Forwarder,
    client: TcpStream,
    server: TcpStream,
}

fn hello() -> Hello {
    let up = Upstream::bind();
    let fwd = Forwarder::start(&["--upstream", &up.addr().to_string()]);
    let mut client = connect(fwd.addr());
    client.write_all(b"hello").expect("write");
    let mut server = up.accept(WAIT);
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).expect("upstream reads hello");
    Hello {
        up,
        fwd,
        client,
        server,
    }
}

#[test]
fn test_established_upstream_reset() {
    let Hello {
        up: _up,
        fwd,
        mut client,
        server,
    } = hello();
    reset(server);

    let (data, end) = read_until_end(&mut client, WAIT);
    assert!(data.is_empty());
    assert_eq!(
        end,
        End::Reset,
        "client must observe ECONNRESET, not {end:?}"
    );
    fwd.wait_for_close("upstream-reset", Duration::from_secs(5));
}

#[test]
fn test_established_client_reset() {
    let Hello {
        up: _up,
        fwd,
        client,
        mut server,
    } = hello();
    reset(client);

    let (data, end) = read_until_end(&mut server, WAIT);
    assert!(data.is_empty());
    assert_eq!(
        end,
        End::Reset,
        "upstream must observe ECONNRESET, not {end:?}"
    );
    let close = fwd.wait_for_close("client-reset", Duration::from_secs(5));
    assert_eq!(close.c2u, Some(5));
}

/// The upstream answers and closes; the bytes the client sends after that draw a reset from it. The
/// client's FIN then ends the last open direction, whose FIN edgefwd would leave to close(2): because the
/// upstream socket was reported failed, the shutdown is made anyway, and the pair closes as an
/// upstream reset, not as a clean client-fin.
#[test]
fn test_upstream_reset_after_its_fin_is_not_a_clean_close() {
    let Hello {
        up,
        fwd,
        mut client,
        mut server,
    } = hello();
    server.write_all(b"bye").expect("reply");
    drop(server);
    let (data, end) = read_until_end(&mut client, WAIT);
    assert_eq!((data.as_slice(), end), (&b"bye"[..], End::Eof));

    client.write_all(b"late").expect("late bytes");
    // The reset takes the forwarder's upstream socket out of the kernel's tables while edgefwd still
    // holds its fd; from then on its error event is queued ahead of anything the client sends next.
    let upstream_port = up.addr().port();
    assert!(
        wait_until(WAIT, || tcp_sockets_of(fwd.pid())
            .iter()
            .all(|row| row.remote_port != upstream_port)),
        "the upstream never reset the late bytes"
    );
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("client FIN");
    let close = fwd.wait_for_close("upstream-reset", Duration::from_secs(5));
    assert_eq!(close.c2u, Some(9));
}

/// Upstream writes 1 MiB and closes at once; `delay`/`step` make the client a slow reader, so
/// most of the data is still in the forwarder (or in flight) when the FIN arrives.
fn upstream_burst_then_fin(delay: Duration, step: usize, pause: Duration) {
    let up = Upstream::bind();
    let fwd = Forwarder::start(&["--upstream", &up.addr().to_string()]);
    let mut client = connect(fwd.addr());
    let total = 1 << 20;
    let mut server = up.accept(WAIT);
    let writer = thread::spawn(move || {
        write_pattern(&mut server, total, 64 * 1024).expect("upstream writes 1 MiB");
        // Clean close: the client sent nothing, so this is a FIN after the data.
        drop(server);
    });
    thread::sleep(delay);
    let mut checker = PatternChecker::default();
    let mut buf = vec![0u8; step];
    let end = loop {
        match client.read(&mut buf) {
            Ok(0) => break End::Eof,
            Ok(n) => checker.check(&buf[..n]),
            Err(e) => break classify(&e),
        }
        thread::sleep(pause);
    };
    writer.join().expect("upstream writer");
    assert_eq!(end, End::Eof, "after {} bytes", checker.offset);
    assert_eq!(checker.offset, total, "truncated");
    assert_eq!(checker.mismatch, None);
    drop(client);
    let close = fwd.wait_for_close("upstream-fin", Duration::from_secs(5));
    assert_eq!(close.u2c, Some(total));
}

#[test]
fn test_established_upstream_fin_after_1mib() {
    upstream_burst_then_fin(Duration::ZERO, 64 * 1024, Duration::ZERO);
}

#[test]
fn test_established_upstream_fin_after_1mib_slow_reader() {
    upstream_burst_then_fin(
        Duration::from_millis(1000),
        8 * 1024,
        Duration::from_millis(1),
    );
}
