//! The pair's phases, over loopback sockets and over scripted streams.

use super::*;
use crate::observe::metrics::Metrics;
use crate::wire::allow::AllowList;
use crate::wire::greeting::{ConnectRules, Rules};
use mio::net::TcpStream;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

const LIMITS: Deadlines = Deadlines {
    connect: Duration::from_secs(5),
    header: Duration::from_secs(10),
    idle: None,
    fin: Duration::from_secs(60),
    lifetime: None,
};

/// A CONNECT greeting that allows `localhost:*` and nothing else.
fn connect_greeting() -> Greeting {
    Greeting::new(Arc::new(Rules {
        accept_proxy: false,
        carry_tlvs: Default::default(),
        connect: Some(ConnectRules {
            allow: AllowList::new(vec!["localhost:*".parse().expect("rule")]),
            credentials: None,
        }),
        sni: None,
    }))
}

/// A connect-mode pair over real loopback sockets whose client has sent `CONNECT localhost:80`, then
/// `body`, and its FIN with them if `fin`; with what the pair made of that one event, and the
/// client's end.
fn greeted(now: Instant, fin: bool, body: &[u8]) -> (Pair, Outcome, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (accepted, addr) = listener.accept().expect("accept");
    accepted.set_nonblocking(true).expect("nonblocking");
    let stream = TcpStream::from_std(accepted);
    let mut pair = Pair::greeting(
        1,
        (Conn::Tcp(stream), addr),
        0,
        connect_greeting(),
        now,
        Splice::Off,
    );
    let head = [&b"CONNECT localhost:80 HTTP/1.1\r\n\r\n"[..], body].concat();
    client.write_all(&head).expect("write");
    if fin {
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
    }
    let head = Event {
        readable: true,
        read_closed: fin,
        ..Event::default()
    };
    let outcome = run_event(&mut pair, Side::Client, head, now);
    (pair, outcome, client)
}

/// [`greeted`], and the reactor has handed the name to the lookup threads.
pub(crate) fn looking_up(now: Instant) -> (Pair, std::net::TcpStream) {
    let (mut pair, outcome, client) = greeted(now, false, b"");
    assert_eq!(
        outcome,
        Outcome::Connect(Target::Named("localhost:80".into()))
    );
    pair.begin_lookup(now);
    assert!(pair.awaits_address());
    (pair, client)
}

/// A FIN that came with the head was reported once, while the greeting was read: no lookup (or
/// connect) begins for a client that is gone.
#[test]
fn test_a_client_gone_with_its_head_is_not_looked_up() {
    let (_pair, outcome, _client) = greeted(Instant::now(), true, b"");
    assert_eq!(outcome, Outcome::Close(Cause::ClientAbort));
}

/// A FIN after bytes pipelined behind the head is a half-close of an upload that wants its answer:
/// the lookup goes ahead.
#[test]
fn test_a_half_closed_upload_is_still_looked_up() {
    let (_pair, outcome, _client) = greeted(Instant::now(), true, b"upload");
    assert_eq!(
        outcome,
        Outcome::Connect(Target::Named("localhost:80".into()))
    );
}

pub(crate) fn run_event<S: Socket>(
    pair: &mut Pair<S>,
    side: Side,
    event: Event,
    now: Instant,
) -> Outcome {
    let (mut pool, mut metrics) = (BufPool::new(1024), Metrics::default());
    let mut shared = Shared {
        pool: &mut pool,
        pipes: None,
        metrics: &mut metrics,
    };
    pair.on_event(side, event, &mut shared, 1 << 20, now)
}

/// A client that leaves while its destination is looked up frees the pair at once, not when the
/// answer comes.
#[test]
fn test_a_client_that_leaves_during_the_lookup_is_closed() {
    let now = Instant::now();
    let (mut pair, client) = looking_up(now);
    client.shutdown(std::net::Shutdown::Both).expect("shutdown");
    drop(client);
    let hung_up = Event {
        readable: true,
        read_closed: true,
        ..Event::default()
    };
    let outcome = run_event(&mut pair, Side::Client, hung_up, now);
    assert_eq!(outcome, Outcome::Close(Cause::ClientAbort));
}

/// An established pair's lifetime counts from its accept, not from its last byte, and wins over a
/// later idle deadline; without one the pair has no deadline at all.
#[test]
fn test_established_lifetime_deadline() {
    let now = Instant::now();
    let (mut pair, _client) = looking_up(now);
    let live = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let stream = TcpStream::connect(live.local_addr().expect("addr")).expect("connect");
    let upstream = live.local_addr().expect("addr");
    pair.begin_connect((Conn::Tcp(stream), upstream.into()), None, now);
    live.accept().expect("accept");
    let later = now + Duration::from_secs(5);
    let connected = Event {
        writable: true,
        ..Event::default()
    };
    assert_eq!(
        run_event(&mut pair, Side::Upstream, connected, later),
        Outcome::Connected
    );
    let (mut pool, mut metrics) = (BufPool::new(1024), Metrics::default());
    let mut shared = Shared {
        pool: &mut pool,
        pipes: None,
        metrics: &mut metrics,
    };
    pair.establish(&mut shared, 1 << 20, later);
    assert_eq!(pair.phase(), Phase::Established);
    assert_eq!(pair.deadline(&LIMITS), None);
    let limits = Deadlines {
        idle: Some(Duration::from_secs(60)),
        lifetime: Some(Duration::from_secs(30)),
        ..LIMITS
    };
    assert_eq!(
        pair.deadline(&limits),
        Some((now + Duration::from_secs(30), Cause::MaxDuration))
    );
    assert!(
        !Cause::MaxDuration.resets(),
        "a policy close, like idle-timeout"
    );
}

#[test]
fn test_fault_cause_names_the_faulty_socket() {
    let fault_cause = |fault, side| reset_cause(faulty_side(fault, side));
    assert_eq!(fault_cause(Fault::Src, Side::Client), Cause::ClientReset);
    assert_eq!(fault_cause(Fault::Dst, Side::Client), Cause::UpstreamReset);
    assert_eq!(
        fault_cause(Fault::Src, Side::Upstream),
        Cause::UpstreamReset
    );
    assert_eq!(fault_cause(Fault::Dst, Side::Upstream), Cause::ClientReset);
}

#[test]
fn test_clean_ends_do_not_reset() {
    assert!(!Cause::ClientFin.resets());
    assert!(!Cause::UpstreamFin.resets());
    assert!(Cause::UpstreamReset.resets());
    assert!(Cause::ConnectRefused.resets());
    assert!(Cause::Shutdown.resets());
}

mod scripted;
