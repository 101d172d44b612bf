//! Faults on one pair do not touch the others; socket option flags are applied.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::*;

const MARK: &[u8; 4] = b"RST!";

/// Echoes, except a connection that starts with [`MARK`]: that one is read for a while, then reset.
fn echo_or_reset(mut s: TcpStream) {
    let mut head = [0u8; 4];
    if s.read_exact(&mut head).is_err() {
        return;
    }
    if &head == MARK {
        let mut left = 256 * 1024;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
        reset(s);
        return;
    }
    if s.write_all(&head).is_ok() {
        echo_conn(s);
    }
}

/// Ten clients each echo 8 MiB, checked byte by byte.
fn start_ten(addr: SocketAddr) -> Vec<JoinHandle<()>> {
    (0..10)
        .map(|_| thread::spawn(move || echo_roundtrip(addr, 8 << 20, 64 * 1024)))
        .collect()
}

fn join_all(clients: Vec<JoinHandle<()>>) {
    let failed = clients
        .into_iter()
        .map(JoinHandle::join)
        .filter(Result::is_err)
        .count();
    assert_eq!(failed, 0, "{failed} of 10 healthy pairs failed");
}

/// After one pair closed with `cause`: the ten others finished intact, the forwarder still runs and
/// serves a new client, and all eleven of those closed with a client FIN.
fn others_were_spared(fwd: &mut Forwarder, others: Vec<JoinHandle<()>>, cause: &str) {
    join_all(others);
    fwd.wait_for_close(cause, Duration::from_secs(5));
    assert!(fwd.is_running());
    echo_roundtrip(fwd.addr(), 1 << 20, 64 * 1024);
    let closes = fwd.wait_for_n_closes(12, Duration::from_secs(5));
    assert_eq!(
        closes.iter().filter(|c| c.cause == "client-fin").count(),
        11,
        "{closes:?}"
    );
}

#[test]
fn test_client_reset_mid_transfer_spares_others() {
    let echo = Backend::spawn(loopback4(), echo_or_reset);
    let mut fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    let others = start_ten(fwd.addr());

    let mut bad = connect(fwd.addr());
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..4u64 {
        bad.write_all(pattern(i * 64 * 1024, 64 * 1024))
            .expect("write");
    }
    bad.read_exact(&mut buf).expect("some echo arrives");
    reset(bad);

    others_were_spared(&mut fwd, others, "client-reset");
}

#[test]
fn test_upstream_reset_mid_transfer_spares_others() {
    let echo = Backend::spawn(loopback4(), echo_or_reset);
    let mut fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    let others = start_ten(fwd.addr());

    let mut bad = connect(fwd.addr());
    let mut writer_side = bad.try_clone().expect("try_clone");
    let writer = thread::spawn(move || -> io::Result<()> {
        writer_side.write_all(MARK)?;
        write_pattern(&mut writer_side, 64 << 20, 64 * 1024)
    });
    let (_, end) = read_until_end(&mut bad, Duration::from_secs(10));
    let written = writer.join().expect("writer thread");
    // Linux reports a received RST once (sock_error() clears sk_err), to whichever call comes
    // first: here the writer may get ECONNRESET and the reader a plain EOF afterwards. That the
    // forwarder passes a reset on as a reset is asserted in reset.rs, without a second thread.
    let write_err = written.expect_err("the writer must fail: its upstream was reset");
    assert!(
        end == End::Reset || write_err.kind() == io::ErrorKind::ConnectionReset,
        "no ECONNRESET on the client: reader {end:?}, writer {write_err}"
    );

    others_were_spared(&mut fwd, others, "upstream-reset");
}

/// The forwarder's two established sockets, once they have settled (no retransmit/probe timer).
fn settled_sockets(fwd: &Forwarder, want_timer: Option<u8>) -> Vec<TcpRow> {
    let mut rows = Vec::new();
    wait_until(Duration::from_secs(3), || {
        rows = tcp_sockets_of(fwd.pid())
            .into_iter()
            .filter(|r| r.state == 1)
            .collect();
        rows.len() == 2
            && rows.iter().all(|r| match want_timer {
                Some(t) => r.timer == t,
                None => r.timer != 1 && r.timer != 4,
            })
    });
    rows
}

/// `--keepalive 30s` arms the keepalive timer (sk_timer, shown as timer 2 in /proc/net/tcp) of
/// both sockets with about 30s left; `--no-nodelay` is accepted (Nagle is not observable from
/// outside without timing).
#[test]
fn test_keepalive_and_no_nodelay_applied() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--keepalive",
        "30s",
        "--no-nodelay",
    ]);
    let mut client = connect(fwd.addr());
    client.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    client.read_exact(&mut buf).expect("echo");

    let rows = settled_sockets(&fwd, Some(2));
    let hz = clock_ticks_per_sec();
    assert_eq!(rows.len(), 2, "established sockets of edgefwd: {rows:?}");
    for row in &rows {
        assert_eq!(row.timer, 2, "keepalive timer not armed: {rows:?}");
        assert!(
            (20 * hz..=31 * hz).contains(&row.timer_ticks),
            "keepalive fires in {} ticks, not ~30s: {rows:?}",
            row.timer_ticks
        );
    }
    let ports: Vec<u16> = rows.iter().map(|r| r.remote_port).collect();
    assert!(ports.contains(&echo.addr().port()), "{rows:?}");
    assert!(
        ports.contains(&client.local_addr().expect("addr").port()),
        "{rows:?}"
    );
    drop(client);
    echo_roundtrip(fwd.addr(), 4 << 20, 1000);
}

#[test]
fn test_keepalive_off_by_default() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    let mut client = connect(fwd.addr());
    client.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    client.read_exact(&mut buf).expect("echo");
    let rows = settled_sockets(&fwd, None);
    assert_eq!(rows.len(), 2, "established sockets of edgefwd: {rows:?}");
    assert!(
        rows.iter().all(|r| r.timer == 0),
        "a timer is armed without --keepalive: {rows:?}"
    );
}
