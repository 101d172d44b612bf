//! Pairs over scripted streams ([`Scripted`]): each phase x event of the header's table, with every
//! syscall's answer chosen by the test.

use super::*;
use crate::datapath::stream::script::{Connect, Incoming, Outgoing, Scripted};
use crate::observe::metric_kinds::SniReject;
use crate::session::interest::Registration;
use crate::session::refusal::REFUSAL_LINGER;
use crate::upstream::endpoint::Tried;

/// The ring size of these tests' pools.
const RING: usize = 1024;
const CLIENT_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 40000);
const UPSTREAM_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 8000);

fn readable() -> Event {
    Event {
        readable: true,
        ..Event::default()
    }
}

fn writable() -> Event {
    Event {
        writable: true,
        ..Event::default()
    }
}

/// A FIN: EPOLLIN | EPOLLRDHUP.
fn fin() -> Event {
    Event {
        readable: true,
        read_closed: true,
        ..Event::default()
    }
}

/// What the reactor lends a pair while it runs; kept across events, as a route's pool is.
struct Loop {
    pool: BufPool,
    metrics: Metrics,
    now: Instant,
}

impl Loop {
    fn new() -> Loop {
        Loop {
            pool: BufPool::new(RING),
            metrics: Metrics::default(),
            now: Instant::now(),
        }
    }

    fn event(&mut self, pair: &mut Pair<Scripted>, side: Side, event: Event) -> Outcome {
        let mut shared = Shared {
            pool: &mut self.pool,
            pipes: None,
            metrics: &mut self.metrics,
        };
        pair.on_event(side, event, &mut shared, 1 << 20, self.now)
    }

    /// `Outcome::Connected` handed back, as `session::connect` does once the route knows.
    fn establish(&mut self, pair: &mut Pair<Scripted>) -> Outcome {
        let mut shared = Shared {
            pool: &mut self.pool,
            pipes: None,
            metrics: &mut self.metrics,
        };
        pair.establish(&mut shared, 1 << 20, self.now)
    }

    /// The registration the reactor would give `side`'s socket after the run, applied.
    fn settle(&mut self, pair: &mut Pair<Scripted>, side: Side) -> Option<Registration> {
        let wanted = pair.registration_change(side, &self.pool);
        if let Some(registration) = wanted {
            pair.note_registration(side, registration);
        }
        wanted
    }
}

/// A pair whose connect has just been started, and handles on its client and upstream streams.
fn connecting(now: Instant) -> (Pair<Scripted>, Scripted, Scripted) {
    let (client, upstream) = (Scripted::default(), Scripted::default());
    upstream.set_connect(Connect::Pending);
    let pair = Pair::new(
        1,
        (client.clone(), CLIENT_ADDR.into()),
        (
            upstream.clone(),
            SocketAddr::from(UPSTREAM_ADDR).into(),
            None,
        ),
        0,
        Plan::Upstreams {
            tried: Tried::default(),
        },
        now,
        Splice::Off,
    );
    (pair, client, upstream)
}

/// [`connecting`], the client's first EPOLLOUT edge (a fresh socket's, on registration) has
/// come, and the upstream's connect has completed.
fn established(lp: &mut Loop) -> (Pair<Scripted>, Scripted, Scripted) {
    let (mut pair, client, upstream) = connecting(lp.now);
    assert_eq!(lp.event(&mut pair, Side::Client, writable()), Outcome::Open);
    upstream.set_connect(Connect::Connected);
    assert_eq!(
        lp.event(&mut pair, Side::Upstream, readable()),
        Outcome::Connected
    );
    assert_eq!(lp.establish(&mut pair), Outcome::Open);
    assert_eq!(pair.phase(), Phase::Established);
    (pair, client, upstream)
}

/// A connect-mode pair waiting for its client's CONNECT head.
fn greeting(now: Instant) -> (Pair<Scripted>, Scripted) {
    let client = Scripted::default();
    let pair = Pair::greeting(
        1,
        (client.clone(), CLIENT_ADDR.into()),
        0,
        connect_greeting(),
        now,
        Splice::Off,
    );
    (pair, client)
}

/// A head split across two edges: the first part is read to WouldBlock and kept, the second
/// completes it.
#[test]
fn test_greeting_head_split_across_reads() {
    let mut lp = Loop::new();
    let (mut pair, client) = greeting(lp.now);
    client.data(b"CONNECT local");
    assert_eq!(lp.event(&mut pair, Side::Client, readable()), Outcome::Open);
    assert_eq!(client.reads(), 2, "read on to WouldBlock");
    assert!(!pair.client_ready.readable);
    client.data(b"host:80 HTTP/1.1\r\n").data(b"\r\n");
    let outcome = lp.event(&mut pair, Side::Client, readable());
    assert_eq!(
        outcome,
        Outcome::Connect(Target::Named("localhost:80".into()))
    );
}

/// What followed the head in the same read is queued as the c2u preamble, to go upstream
/// before anything the pump reads later.
#[test]
fn test_greeting_pipelined_bytes_go_upstream_first() {
    let mut lp = Loop::new();
    let (mut pair, client) = greeting(lp.now);
    client.data(b"CONNECT localhost:80 HTTP/1.1\r\n\r\nhello");
    let outcome = lp.event(&mut pair, Side::Client, readable());
    assert!(matches!(outcome, Outcome::Connect(_)), "{outcome:?}");
    assert_eq!(pair.c2u.undelivered(), 5);
    assert!(matches!(&pair.stage, Stage::Connecting(c) if c.client_pipelined));
}

#[test]
fn test_greeting_eof_is_client_abort() {
    let mut lp = Loop::new();
    let (mut pair, client) = greeting(lp.now);
    client.data(b"CONNECT loc").incoming([Incoming::Eof]);
    let outcome = lp.event(&mut pair, Side::Client, fin());
    assert_eq!(outcome, Outcome::Close(Cause::ClientAbort));
}

/// An RST may come as EPOLLERR alone: the greeting reads anyway, and the read names it.
#[test]
fn test_greeting_reset_is_client_reset() {
    let mut lp = Loop::new();
    let (mut pair, client) = greeting(lp.now);
    client.incoming([Incoming::Fail(io::ErrorKind::ConnectionReset)]);
    let error = Event {
        error: true,
        ..Event::default()
    };
    let outcome = lp.event(&mut pair, Side::Client, error);
    assert_eq!(outcome, Outcome::Close(Cause::ClientReset));
}

/// A refused CONNECT: the status is written, then `shutdown(Write)`, then the client's bytes are
/// discarded until its FIN, which closes the pair.
#[test]
fn test_refusing_writes_status_then_closes_on_client_fin() {
    let mut lp = Loop::new();
    let (mut pair, client) = greeting(lp.now);
    client.data(b"CONNECT example.com:80 HTTP/1.1\r\n\r\n");
    client.room(usize::MAX);
    assert_eq!(lp.event(&mut pair, Side::Client, readable()), Outcome::Open);
    assert_eq!(pair.phase(), Phase::Refusing);
    let answer = client.written();
    assert!(answer.starts_with(b"HTTP/1.1 403 "), "{answer:?}");
    assert_eq!(client.shutdowns(), 1);
    client.data(b"ignored").incoming([Incoming::Eof]);
    let outcome = lp.event(&mut pair, Side::Client, fin());
    assert_eq!(outcome, Outcome::Close(Cause::Rejected));
}

/// A PROXY route's pair waiting for its client's header.
fn proxy_greeting(now: Instant) -> (Pair<Scripted>, Scripted) {
    let client = Scripted::default();
    let rules = Arc::new(Rules {
        accept_proxy: true,
        carry_tlvs: Default::default(),
        connect: None,
        sni: None,
    });
    let greeting = Greeting::new(rules);
    let addr = CLIENT_ADDR.into();
    let pair = Pair::greeting(1, (client.clone(), addr), 0, greeting, now, Splice::Off);
    (pair, client)
}

/// A PROXY route's client whose first bytes are not a PROXY header: closed as rejected, nothing
/// answered, the reason kept for the reactor to count.
#[test]
fn test_greeting_bad_proxy_header_rejects() {
    let mut lp = Loop::new();
    let (mut pair, client) = proxy_greeting(lp.now);
    client.data(b"GET / HTTP/1.1\r\n\r\n");
    let outcome = lp.event(&mut pair, Side::Client, readable());
    assert_eq!(outcome, Outcome::Close(Cause::Rejected));
    assert_eq!(pair.proxy_header_rejection(), Some(Reason::Signature));
    assert!(client.written().is_empty());
}

/// A PROXY header that does not come in time: closed as header-timeout, nothing answered (a PROXY
/// client speaks no protocol an answer could be written in).
#[test]
fn test_greeting_proxy_header_timeout_closes() {
    let (mut pair, client) = proxy_greeting(Instant::now());
    let (at, cause) = pair.deadline(&LIMITS).expect("a header deadline");
    assert_eq!(cause, Cause::HeaderTimeout);
    assert_eq!(pair.expire(cause, at), Outcome::Close(Cause::HeaderTimeout));
    assert_eq!(pair.proxy_header_rejection(), Some(Reason::Timeout));
    assert!(client.written().is_empty());
}

/// A pair on an SNI listener of two routes: `api` (`api.example.com`, `--send-proxy v1`) and, when
/// `with_default`, `fallback`; waiting for its ClientHello.
fn hello_greeting(now: Instant, with_default: bool) -> (Pair<Scripted>, Scripted) {
    let fixed = "listen = \"127.0.0.1:7000\"\nupstreams = [\"127.0.0.1:9\"]\n";
    let mut text = format!(
        "[[route]]\nname = \"api\"\n{fixed}sni = [\"api.example.com\"]\nsend_proxy = \"v1\"\n"
    );
    if with_default {
        text.push_str(&format!(
            "[[route]]\nname = \"fallback\"\n{fixed}default = true\n"
        ));
    }
    let mut resolve = |name: &str| -> crate::config::Addresses {
        name.parse()
            .map(|addr| vec![addr])
            .map_err(|_| name.to_string())
    };
    let defaults = crate::config::file::Defaults {
        max_connections: 10,
        shutdown_timeout: Duration::from_secs(1),
    };
    let config =
        crate::config::file::parse("test.toml", &text, defaults, &mut resolve).expect("config");
    let rules = crate::upstream::route::sni_rules(&config.routes, 0, config.routes[0].listen[0])
        .expect("an SNI listener");
    let client = Scripted::default();
    let greeting = Greeting::new(rules);
    let pair = Pair::greeting(
        1,
        (client.clone(), CLIENT_ADDR.into()),
        0,
        greeting,
        now,
        Splice::Off,
    );
    (pair, client)
}

/// A ClientHello for `api`: the pair asks to connect to that route, with the route's own
/// `--send-proxy` header first upstream and then the hello, byte for byte; its name is on the pair.
#[test]
fn test_greeting_hello_routes_and_goes_upstream_unchanged() {
    let mut lp = Loop::new();
    let (mut pair, client) = hello_greeting(lp.now, true);
    let hello = include_bytes!("../../../../tests/corpus/tls/curl-resolve.bin");
    client.data(hello);
    let Outcome::Connect(Target::Routed(routed)) = lp.event(&mut pair, Side::Client, readable())
    else {
        panic!("not routed");
    };
    assert_eq!(routed.choice.route, "api");
    assert_eq!(pair.sni.as_deref(), Some("api.example.com"));
    assert!(client.written().is_empty());
    let upstream = Scripted::default();
    let addr = SocketAddr::from(UPSTREAM_ADDR).into();
    pair.begin_connect((upstream.clone(), addr), None, lp.now);
    upstream.set_connect(Connect::Connected);
    upstream.room(usize::MAX);
    assert_eq!(
        lp.event(&mut pair, Side::Upstream, writable()),
        Outcome::Connected
    );
    lp.establish(&mut pair);
    let sent = upstream.written();
    let header = b"PROXY TCP4 127.0.0.1 ";
    assert!(sent.starts_with(header), "{sent:?}");
    assert!(
        sent.ends_with(hello),
        "the hello follows the header unchanged"
    );
    assert_eq!(pair.sni_rejected, None);
}

/// No route takes the name and there is no default: the fatal `unrecognized_name` alert, then the
/// refusal's linger; counted as `no-route`.
#[test]
fn test_greeting_hello_without_route_answers_the_alert() {
    let mut lp = Loop::new();
    let (mut pair, client) = hello_greeting(lp.now, false);
    client.room(usize::MAX);
    client.data(include_bytes!(
        "../../../../tests/corpus/tls/openssl-sni-alpn.bin"
    ));
    let outcome = lp.event(&mut pair, Side::Client, readable());
    assert_ne!(outcome, Outcome::Close(Cause::Rejected), "answered first");
    assert_eq!(pair.phase(), Phase::Refusing);
    assert_eq!(client.written(), crate::wire::sni::UNRECOGNIZED_NAME_ALERT);
    assert_eq!(pair.sni_rejected, Some(SniReject::NoRoute));
}

/// Bytes that are not a ClientHello: closed at once, nothing written, the reason kept.
#[test]
fn test_greeting_junk_instead_of_hello_closes_silently() {
    let mut lp = Loop::new();
    let (mut pair, client) = hello_greeting(lp.now, true);
    client.data(b"GET / HTTP/1.1\r\n\r\n");
    let outcome = lp.event(&mut pair, Side::Client, readable());
    assert_eq!(outcome, Outcome::Close(Cause::Rejected));
    assert!(client.written().is_empty());
    let reason = crate::wire::tls_hello::Reason::NotHandshake;
    assert_eq!(pair.sni_rejected, Some(SniReject::Hello(reason)));
}

/// A hello that does not come within the header timeout: closed, counted as `timeout`; a client
/// that leaves halfway: `client-closed`.
#[test]
fn test_greeting_hello_timeout_and_client_gone() {
    let (mut pair, client) = hello_greeting(Instant::now(), true);
    let (at, cause) = pair.deadline(&LIMITS).expect("a header deadline");
    assert_eq!(cause, Cause::HeaderTimeout);
    assert_eq!(pair.expire(cause, at), Outcome::Close(Cause::HeaderTimeout));
    assert_eq!(pair.sni_rejected, Some(SniReject::Timeout));
    assert!(client.written().is_empty());
    let mut lp = Loop::new();
    let (mut pair, client) = hello_greeting(lp.now, true);
    client.data(&[0x16, 0x03, 0x01]).incoming([Incoming::Eof]);
    assert_eq!(
        lp.event(&mut pair, Side::Client, fin()),
        Outcome::Close(Cause::ClientAbort)
    );
    assert_eq!(pair.sni_rejected, Some(SniReject::ClientClosed));
}

/// A CONNECT head that does not come in time is answered 408; the refusal then lingers for the
/// client's FIN, and its own deadline closes it.
#[test]
fn test_greeting_timeout_answers_408_then_the_linger_closes() {
    let lp = Loop::new();
    let (mut pair, client) = greeting(lp.now);
    client.room(usize::MAX);
    let (at, cause) = pair.deadline(&LIMITS).expect("a header deadline");
    assert_eq!((at, cause), (lp.now + LIMITS.header, Cause::HeaderTimeout));
    assert_eq!(pair.expire(cause, at), Outcome::Open);
    assert_eq!(pair.phase(), Phase::Refusing);
    let answer = client.written();
    assert!(answer.starts_with(b"HTTP/1.1 408 "), "{answer:?}");
    let linger = pair.deadline(&LIMITS);
    assert_eq!(linger, Some((at + REFUSAL_LINGER, Cause::Rejected)));
    let outcome = pair.expire(Cause::Rejected, at + REFUSAL_LINGER);
    assert_eq!(outcome, Outcome::Close(Cause::Rejected));
}

/// A client FIN with nothing sent while the upstream connects: the client is gone, both sockets
/// are freed now.
#[test]
fn test_connecting_client_fin_with_nothing_sent_aborts() {
    let mut lp = Loop::new();
    let (mut pair, client, _upstream) = connecting(lp.now);
    client.incoming([Incoming::Eof]);
    let outcome = lp.event(&mut pair, Side::Client, fin());
    assert_eq!(outcome, Outcome::Close(Cause::ClientAbort));
    assert_eq!(client.reads(), 0, "peeked, never read");
}

/// A FIN behind bytes the client sent is a half-close that wants its answer: the pair waits,
/// and the bytes stay in the kernel until the upstream is up.
#[test]
fn test_connecting_client_fin_after_data_waits() {
    let mut lp = Loop::new();
    let (mut pair, client, upstream) = connecting(lp.now);
    client
        .data(b"GET / HTTP/1.0\r\n\r\n")
        .incoming([Incoming::Eof]);
    assert_eq!(lp.event(&mut pair, Side::Client, fin()), Outcome::Open);
    assert_eq!(pair.phase(), Phase::Connecting);
    assert_eq!(client.reads(), 0);

    upstream.set_connect(Connect::Connected);
    upstream.room(usize::MAX);
    let outcome = lp.event(&mut pair, Side::Upstream, writable());
    assert_eq!(outcome, Outcome::Connected);
    lp.establish(&mut pair);
    assert_eq!(upstream.written(), b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(upstream.shutdowns(), 1, "the half-close passed on");
}

/// Bytes pipelined behind a CONNECT head were read with it (they wait in the preamble), so the FIN
/// behind them finds nothing left to peek: it is still a half-close, and the pair waits.
#[test]
fn test_connecting_client_fin_after_pipelined_bytes_waits() {
    let mut lp = Loop::new();
    let (mut pair, client) = greeting(lp.now);
    client.data(b"CONNECT localhost:80 HTTP/1.1\r\n\r\nupload");
    let outcome = lp.event(&mut pair, Side::Client, readable());
    assert_eq!(
        outcome,
        Outcome::Connect(Target::Named("localhost:80".into()))
    );
    pair.begin_lookup(lp.now);
    client.incoming([Incoming::Eof]);
    assert_eq!(lp.event(&mut pair, Side::Client, fin()), Outcome::Open);
    assert!(pair.awaits_address());
}

/// A reset client while connecting: gone too.
#[test]
fn test_connecting_client_reset_aborts() {
    let mut lp = Loop::new();
    let (mut pair, client, _upstream) = connecting(lp.now);
    client.incoming([Incoming::Fail(io::ErrorKind::ConnectionReset)]);
    let error = Event {
        error: true,
        ..Event::default()
    };
    let outcome = lp.event(&mut pair, Side::Client, error);
    assert_eq!(outcome, Outcome::Close(Cause::ClientAbort));
}

/// Under epoll a clean writable edge proves the connect: the kernel is not asked (here it would
/// say "pending").
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn test_connecting_writable_edge_proves_connected() {
    let mut lp = Loop::new();
    let (mut pair, _client, _upstream) = connecting(lp.now);
    assert_eq!(
        lp.event(&mut pair, Side::Upstream, writable()),
        Outcome::Connected
    );
    assert_eq!(pair.phase(), Phase::Connecting, "until the route is told");
    assert_eq!(lp.establish(&mut pair), Outcome::Open);
    assert_eq!(pair.phase(), Phase::Established);
    assert!(pair.upstream_ready.writable);
    assert_eq!(lp.metrics.connects_ok, 1);
}

/// Any other upstream event is settled by asking the kernel: pending, failed or connected.
#[test]
fn test_connecting_upstream_event_asks_the_kernel() {
    let mut lp = Loop::new();
    let (mut pair, _client, upstream) = connecting(lp.now);
    assert_eq!(
        lp.event(&mut pair, Side::Upstream, readable()),
        Outcome::Open
    );
    assert_eq!(pair.phase(), Phase::Connecting, "still pending");

    upstream.set_connect(Connect::Failed(io::ErrorKind::ConnectionRefused));
    let refused = Event {
        writable: true,
        error: true,
        ..Event::default()
    };
    let outcome = lp.event(&mut pair, Side::Upstream, refused);
    assert_eq!(outcome, Outcome::ConnectFailed(Cause::ConnectRefused));
}

#[test]
fn test_connecting_deadline_is_connect_timeout() {
    let now = Instant::now();
    let (mut pair, _client, _upstream) = connecting(now);
    let deadline = pair.deadline(&LIMITS);
    assert_eq!(
        deadline,
        Some((now + LIMITS.connect, Cause::ConnectTimeout))
    );
    let outcome = pair.expire(Cause::ConnectTimeout, now + LIMITS.connect);
    assert_eq!(outcome, Outcome::ConnectFailed(Cause::ConnectTimeout));
}

/// A route with one upstream, and a lease on it (`Route::lease` is the only way to get one).
fn leased() -> (crate::upstream::route::Route, Lease) {
    let config = crate::upstream::route::tests::route(None, &["127.0.0.1:0"]);
    let now = Instant::now();
    let mut route = crate::upstream::route::Route::new(1, config, Vec::new(), None, (now, None));
    let client = std::net::IpAddr::from([127, 0, 0, 1]);
    let (lease, _) = route
        .lease(client, &mut Tried::default(), now)
        .expect("a lease");
    (route, lease)
}

/// The attempt's lease moves with its socket into `Established`, and leaves it once, to the close.
#[test]
fn test_connecting_connected_moves_the_lease_to_established() {
    let mut lp = Loop::new();
    let (mut route, lease) = leased();
    let slot = lease.slot();
    let (client, upstream) = (Scripted::default(), Scripted::default());
    let plan = Plan::Upstreams {
        tried: Tried::default(),
    };
    let addr = CLIENT_ADDR.into();
    let mut pair = Pair::new(
        1,
        (client, addr),
        (
            upstream.clone(),
            SocketAddr::from(UPSTREAM_ADDR).into(),
            Some(lease),
        ),
        0,
        plan,
        lp.now,
        Splice::Off,
    );
    upstream.set_connect(Connect::Connected);
    assert_eq!(
        lp.event(&mut pair, Side::Upstream, writable()),
        Outcome::Connected
    );
    lp.establish(&mut pair);
    assert_eq!(pair.phase(), Phase::Established);
    assert_eq!(pair.lease().map(Lease::slot), Some(slot));
    assert!(
        pair.drop_upstream().is_none(),
        "an established upstream is not an attempt's"
    );
    let lease = pair.take_lease().expect("held until the close");
    assert!(pair.take_lease().is_none(), "taken once");
    route.give_back(lease);
}

/// A failed attempt's socket is closed and its lease handed out; the pair stays `Connecting`, its
/// plan kept, for the next attempt, which gets a connect deadline of its own.
#[test]
fn test_connecting_failed_hands_out_the_lease_and_keeps_the_plan() {
    let now = Instant::now();
    let (mut route, lease) = leased();
    let (client, upstream) = (Scripted::default(), Scripted::default());
    let mut tried = Tried::default();
    tried.insert(lease.slot());
    let addr = CLIENT_ADDR.into();
    let mut pair = Pair::new(
        1,
        (client, addr),
        (
            upstream,
            SocketAddr::from(UPSTREAM_ADDR).into(),
            Some(lease),
        ),
        0,
        Plan::Upstreams { tried },
        now,
        Splice::Off,
    );
    let lease = pair.drop_upstream().expect("the attempt's lease");
    assert!(pair.upstream().is_none() && pair.lease().is_none());
    assert_eq!(pair.phase(), Phase::Connecting);
    assert_eq!(pair.plan_mut().map(|plan| plan.attempts()), Some(1));
    route.give_back(lease);
    let later = now + Duration::from_secs(1);
    pair.begin_connect(
        (Scripted::default(), SocketAddr::from(UPSTREAM_ADDR).into()),
        None,
        later,
    );
    assert_eq!(
        pair.deadline(&LIMITS),
        Some((later + LIMITS.connect, Cause::ConnectTimeout))
    );
}

/// A CONNECT client's greeting read whole: `Connecting`, no socket yet, the `200` queued for the
/// client behind the connect; a refusal from `Connecting` drops it and writes the status instead.
#[test]
fn test_connecting_refused_destination_answers_instead_of_200() {
    let lp = Loop::new();
    let (mut pair, client) = greeting(lp.now);
    client.data(b"CONNECT localhost:80 HTTP/1.1\r\n\r\n");
    let head = readable();
    let mut lp = lp;
    let outcome = lp.event(&mut pair, Side::Client, head);
    assert_eq!(
        outcome,
        Outcome::Connect(Target::Named("localhost:80".into()))
    );
    assert_eq!(pair.phase(), Phase::Connecting);
    assert!(pair.upstream().is_none());
    client.room(usize::MAX);
    pair.refuse(Status::GatewayTimeout, lp.now);
    assert_eq!(pair.phase(), Phase::Refusing);
    let written = String::from_utf8_lossy(&client.written()).to_string();
    assert!(written.starts_with("HTTP/1.1 504 "), "{written}");
    assert_eq!(
        pair.deadline(&LIMITS).map(|(_, cause)| cause),
        Some(Cause::Rejected)
    );
}

/// Both FINs: each direction drains and passes its FIN on; the first side to finish names the
/// close, and the last FIN is left to the close.
#[test]
fn test_established_both_fins_close_named_by_the_first() {
    for first in [Side::Client, Side::Upstream] {
        let mut lp = Loop::new();
        let (mut pair, client, upstream) = established(&mut lp);
        let (a, b) = match first {
            Side::Client => (&client, &upstream),
            Side::Upstream => (&upstream, &client),
        };
        a.data(b"bye").incoming([Incoming::Eof]);
        b.room(usize::MAX);
        assert_eq!(lp.event(&mut pair, first, fin()), Outcome::Open);
        assert_eq!(b.written(), b"bye");
        assert_eq!(b.shutdowns(), 1, "FIN passed on");

        b.incoming([Incoming::Eof]);
        let outcome = lp.event(&mut pair, first.other(), fin());
        let cause = match first {
            Side::Client => Cause::ClientFin,
            Side::Upstream => Cause::UpstreamFin,
        };
        assert_eq!(outcome, Outcome::Close(cause));
        assert_eq!(a.shutdowns(), 0, "the last FIN is the close's");
        assert!(!cause.resets());
    }
}

/// A reset on either side closes the pair with a cause that resets both.
#[test]
fn test_established_reset_on_one_side_resets_both() {
    for (side, cause) in [
        (Side::Client, Cause::ClientReset),
        (Side::Upstream, Cause::UpstreamReset),
    ] {
        let mut lp = Loop::new();
        let (mut pair, client, upstream) = established(&mut lp);
        let reset = [Incoming::Fail(io::ErrorKind::ConnectionReset)];
        match side {
            Side::Client => client.incoming(reset),
            Side::Upstream => upstream.incoming(reset),
        };
        let outcome = lp.event(&mut pair, side, readable());
        assert_eq!(outcome, Outcome::Close(cause));
        assert!(cause.resets());
    }
}

/// A write error is the writing side's peer's fault: EPIPE writing to the client is a
/// client reset, whoever sent the bytes.
#[test]
fn test_established_write_error_names_the_written_socket() {
    let mut lp = Loop::new();
    let (mut pair, client, upstream) = established(&mut lp);
    upstream.data(b"answer");
    client.outgoing([Outgoing::Fail(io::ErrorKind::BrokenPipe)]);
    let outcome = lp.event(&mut pair, Side::Upstream, readable());
    assert_eq!(outcome, Outcome::Close(Cause::ClientReset));
}

/// Backpressure: a client that takes nothing fills the u2c ring; the upstream's next EPOLLIN
/// edge is wasted, so its socket is muted; once the client takes everything and a read finds the
/// upstream drained, read interest comes back.
#[test]
fn test_established_backpressure_mutes_reads_then_unmutes() {
    let mut lp = Loop::new();
    let (mut pair, client, upstream) = established(&mut lp);
    upstream.data(&[5; 3 * RING]);
    let before = upstream.reads();
    assert_eq!(
        lp.event(&mut pair, Side::Upstream, readable()),
        Outcome::Open
    );
    assert_eq!(upstream.reads(), before + 1, "the ring is full");
    assert_eq!(
        lp.settle(&mut pair, Side::Upstream),
        None,
        "no edge wasted yet"
    );

    lp.event(&mut pair, Side::Upstream, readable());
    assert_eq!(upstream.reads(), before + 1, "no read into a full ring");
    let muted = Registration {
        reads: false,
        writes: true,
    };
    assert_eq!(lp.settle(&mut pair, Side::Upstream), Some(muted));

    client.room(usize::MAX).room(usize::MAX).room(usize::MAX);
    lp.event(&mut pair, Side::Client, writable());
    assert_eq!(
        client.written().len(),
        3 * RING,
        "resumed without an upstream edge"
    );
    let both = Registration {
        reads: true,
        writes: true,
    };
    assert_eq!(lp.settle(&mut pair, Side::Upstream), Some(both));
}

/// A pair's own EPOLLOUT edge that says nothing new drops the socket's write interest; a write
/// that finds the socket full brings it back.
#[test]
fn test_established_redundant_writable_edge_drops_write_interest() {
    let mut lp = Loop::new();
    let (mut pair, client, upstream) = established(&mut lp);
    lp.event(&mut pair, Side::Client, writable());
    let reads_only = Registration {
        reads: true,
        writes: false,
    };
    assert_eq!(lp.settle(&mut pair, Side::Client), Some(reads_only));

    upstream.data(b"more than the client takes");
    client.room(4);
    lp.event(&mut pair, Side::Upstream, readable());
    assert!(!pair.client_ready.writable, "a short write");
    let both = Registration {
        reads: true,
        writes: true,
    };
    assert_eq!(lp.settle(&mut pair, Side::Client), Some(both));
}

/// An established pair has no deadline without an idle limit until a FIN: from then on it has a FIN
/// timeout, counted from the last byte moved.
#[test]
fn test_established_half_closed_past_its_deadline_is_fin_timeout() {
    let mut lp = Loop::new();
    let (mut pair, client, upstream) = established(&mut lp);
    assert_eq!(pair.deadline(&LIMITS), None);
    client.incoming([Incoming::Eof]);
    assert_eq!(lp.event(&mut pair, Side::Client, fin()), Outcome::Open);
    assert_eq!(upstream.shutdowns(), 1);
    let (at, cause) = pair.deadline(&LIMITS).expect("a FIN timeout");
    assert_eq!((at, cause), (lp.now + LIMITS.fin, Cause::FinTimeout));
    assert_eq!(pair.expire(cause, at), Outcome::Close(Cause::FinTimeout));
}

/// The idle deadline counts from the last byte: traffic pushes it back.
#[test]
fn test_established_idle_deadline_moves_with_bytes() {
    let limits = Deadlines {
        idle: Some(Duration::from_secs(60)),
        ..LIMITS
    };
    let mut lp = Loop::new();
    let start = lp.now;
    let (mut pair, client, upstream) = established(&mut lp);
    let idle = Some((start + Duration::from_secs(60), Cause::IdleTimeout));
    assert_eq!(pair.deadline(&limits), idle);
    lp.now += Duration::from_secs(30);
    client.data(b"ping");
    upstream.room(usize::MAX);
    lp.event(&mut pair, Side::Client, readable());
    let idle = Some((lp.now + Duration::from_secs(60), Cause::IdleTimeout));
    assert_eq!(pair.deadline(&limits), idle);
    assert_eq!(
        pair.expire(Cause::IdleTimeout, lp.now),
        Outcome::Close(Cause::IdleTimeout)
    );
}

mod view;
