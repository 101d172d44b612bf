//! `Pair::view` and the flight recorder on scripted pairs, one test per phase: what the admin API
//! would show, the stuck rule, and the events the pair's handlers recorded.

use super::*;
use crate::session::pair::diagnosis::{diagnose, Limits};
use crate::session::pair::view::{Path, Step, Watch, SLOW_SETUP, STUCK_AFTER};

const ROUTE_LIMITS: Limits = Limits {
    deadlines: LIMITS,
    connect_attempts: 3,
};

fn words(pair: &Pair<Scripted>) -> Vec<String> {
    pair.events().into_iter().map(|event| event.event).collect()
}

/// The object's keys are the contract's (docs/admin.md), in its order, and nothing else.
#[test]
fn test_view_serializes_the_contract_keys() {
    let mut lp = Loop::new();
    let (pair, _client, _upstream) = established(&mut lp);
    let json = serde_json::to_value(pair.view(lp.now)).expect("serializes");
    let keys: Vec<&str> = json
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut contract = vec![
        "client",
        "upstream",
        "sni",
        "phase",
        "age_ms",
        "idle_ms",
        "c2u_bytes",
        "u2c_bytes",
        "c2u_held",
        "u2c_held",
        "c2u_path",
        "u2c_path",
        "client_interest",
        "upstream_interest",
        "client_read_closed",
        "client_write_closed",
        "upstream_read_closed",
        "upstream_write_closed",
        "stuck",
    ];
    let (mut sorted, _) = (keys.clone(), contract.sort());
    sorted.sort();
    assert_eq!(sorted, contract);
    assert_eq!(json["client"], "127.0.0.1:40000");
    assert_eq!(json["upstream"], "127.0.0.1:8000");
    assert_eq!(json["sni"], serde_json::Value::Null);
    assert_eq!(json["phase"], "established");
    assert_eq!(json["c2u_path"], "ring");
    assert_eq!(json["client_interest"], "rw");
    assert_eq!(json["stuck"], false);
}

/// A greeting half read: its bytes against its bound, no upstream, and stuck once slow.
#[test]
fn test_view_greeting() {
    let mut lp = Loop::new();
    let (mut pair, client) = greeting(lp.now);
    client.data(b"CONNECT local");
    lp.event(&mut pair, Side::Client, readable());
    let view = pair.view(lp.now + Duration::from_millis(1200));
    let read = "CONNECT local".len();
    assert_eq!(
        view.phase,
        Step::Greeting {
            what: "CONNECT head",
            read,
            bound: crate::wire::connect_request::MAX_HEAD
        }
    );
    assert_eq!(
        (&view.upstream, view.upstream_interest),
        (&None, Watch(None))
    );
    assert_eq!(view.age_ms, 1200);
    assert!(!view.stuck);
    let json = serde_json::to_value(&view).expect("serializes");
    assert_eq!(json["upstream"], serde_json::Value::Null);
    assert_eq!(json["upstream_interest"], "-");
    assert_eq!(
        diagnose(&view, &ROUTE_LIMITS),
        format!("greeting: {read} of up to 8192 bytes of a CONNECT head read, 1.2 s of 10 s header timeout")
    );
    assert!(pair.view(lp.now + SLOW_SETUP).stuck);
    assert_eq!(
        words(&pair),
        ["accepted (greeting)", "client readable"],
        "nothing else happened"
    );
}

/// A refused CONNECT: refusing, the stage change recorded, and the close.
#[test]
fn test_view_refusing() {
    let mut lp = Loop::new();
    let (mut pair, client) = greeting(lp.now);
    client.data(b"CONNECT example.com:80 HTTP/1.1\r\n\r\n");
    client.room(usize::MAX);
    lp.event(&mut pair, Side::Client, readable());
    let view = pair.view(lp.now + Duration::from_secs(10));
    assert_eq!((view.phase, view.stuck), (Step::Refusing, false));
    client.incoming([Incoming::Eof]);
    lp.event(&mut pair, Side::Client, fin());
    assert_eq!(
        words(&pair),
        [
            "accepted (greeting)",
            "client readable",
            "greeting => refusing",
            "client readable+read-closed",
            "closing: rejected"
        ]
    );
}

/// A connect attempt: its number, how long it has waited, the upstream it goes to; stuck past
/// `SLOW_SETUP`; a failure and the next attempt recorded.
#[test]
fn test_view_connecting() {
    let now = Instant::now();
    let (client, upstream) = (Scripted::default(), Scripted::default());
    upstream.set_connect(Connect::Pending);
    let mut tried = Tried::default();
    tried.insert(0);
    let mut pair = Pair::new(
        1,
        (client, CLIENT_ADDR.into()),
        (
            upstream.clone(),
            SocketAddr::from(UPSTREAM_ADDR).into(),
            None,
        ),
        0,
        Plan::Upstreams { tried },
        now,
        Splice::Off,
    );
    let later = now + Duration::from_millis(1800);
    let view = pair.view(later);
    assert_eq!(
        view.phase,
        Step::Connecting {
            attempt: 1,
            for_ms: 1800
        }
    );
    assert_eq!(
        view.upstream,
        Some(SocketAddr::from(UPSTREAM_ADDR).to_string())
    );
    assert_eq!(
        view.upstream_interest.0.map(|r| (r.reads, r.writes)),
        Some((true, true))
    );
    assert!(!view.stuck);
    assert_eq!(
        diagnose(&view, &ROUTE_LIMITS),
        "waiting for upstream connect, attempt 1 of 3, 1.8 s of 5 s"
    );
    assert!(pair.view(now + SLOW_SETUP).stuck);

    upstream.set_connect(Connect::Failed(io::ErrorKind::ConnectionRefused));
    let mut shared_pool = BufPool::new(RING);
    let mut metrics = Metrics::default();
    let mut shared = Shared {
        pool: &mut shared_pool,
        pipes: None,
        metrics: &mut metrics,
    };
    let outcome = pair.on_event(Side::Upstream, readable(), &mut shared, 1 << 20, later);
    assert_eq!(outcome, Outcome::ConnectFailed(Cause::ConnectRefused));
    assert!(pair.drop_upstream().is_none());
    if let Some(Plan::Upstreams { tried }) = pair.plan_mut() {
        tried.insert(1);
    }
    pair.begin_connect(
        (Scripted::default(), SocketAddr::from(UPSTREAM_ADDR).into()),
        None,
        later,
    );
    assert_eq!(
        pair.view(later).phase,
        Step::Connecting {
            attempt: 2,
            for_ms: 0
        }
    );
    let expired = pair.expire(Cause::ConnectTimeout, later + LIMITS.connect);
    assert_eq!(expired, Outcome::ConnectFailed(Cause::ConnectTimeout));
    assert_eq!(
        words(&pair),
        [
            "accepted (connecting)",
            "upstream readable",
            "connect failed: connect-refused",
            "connect attempt 2 started",
            "deadline passed: connect-timeout",
            "connect failed: connect-timeout"
        ]
    );
}

/// A CONNECT destination being looked up: no upstream yet.
#[test]
fn test_view_lookup() {
    let now = Instant::now();
    let (pair, _client) = looking_up(now);
    let view = pair.view(now + Duration::from_millis(4200));
    assert_eq!(view.phase, Step::Lookup { for_ms: 4200 });
    assert_eq!(view.upstream, None);
    assert!(view.stuck);
    assert_eq!(
        diagnose(&view, &ROUTE_LIMITS),
        "looking up the CONNECT destination, 4.2 s of 5 s"
    );
    let json = serde_json::to_value(&view).expect("serializes");
    assert_eq!(json["phase"], "connecting");
    let events = pair.events();
    let last = events.last().map(|event| event.event.as_str());
    assert_eq!(last, Some("looking up the CONNECT destination"));
}

/// Backpressure seen from outside: bytes held toward a client that does not read, the upstream's
/// reads muted, the bytes counted, stuck once still for `STUCK_AFTER`; and the story in the recorder.
#[test]
fn test_view_established_backpressure() {
    let mut lp = Loop::new();
    let (mut pair, client, upstream) = established(&mut lp);
    upstream.data(&[5; 3 * RING]);
    lp.event(&mut pair, Side::Upstream, readable());
    lp.event(&mut pair, Side::Upstream, readable());
    lp.settle(&mut pair, Side::Upstream);
    let view = pair.view(lp.now + Duration::from_secs(6));
    assert_eq!(view.phase, Step::Established);
    assert_eq!((view.u2c_held, view.c2u_held), (RING as u64, 0));
    assert_eq!((view.u2c_bytes, view.c2u_bytes), (0, 0));
    assert_eq!((view.u2c_path, view.c2u_path), (Path::Ring, Path::Ring));
    assert!(view.upstream_interest.reads_muted());
    assert_eq!(
        serde_json::to_value(&view).expect("json")["upstream_interest"],
        "w"
    );
    assert_eq!((view.u2c_still_ms, view.idle_ms), (6000, 6000));
    assert!(view.stuck);
    assert_eq!(
        diagnose(&view, &ROUTE_LIMITS),
        "client has not read for 6.0 s; 1 KiB held in client-bound ring; upstream reads muted (backpressure)"
    );
    assert!(
        !pair.view(lp.now + Duration::from_secs(4)).stuck,
        "not still for long enough"
    );

    client.room(10);
    lp.now += Duration::from_secs(1);
    lp.event(&mut pair, Side::Client, writable());
    let view = pair.view(lp.now);
    assert_eq!(
        (view.u2c_bytes, view.u2c_held),
        (10, RING as u64),
        "the room went to the upstream's next bytes"
    );
    assert_eq!(view.u2c_still_ms, 0, "it moved");
    assert_eq!(
        words(&pair),
        [
            "accepted (connecting)",
            "client writable",
            "upstream readable",
            "connecting => established",
            "upstream readable",
            "upstream readable",
            "upstream reads muted",
            "client writable",
        ]
    );
    let times: Vec<f64> = pair.events().iter().map(|event| event.at_ms).collect();
    assert_eq!(times.last(), Some(&1000.0));
}

/// A half-closed pair: the flags, stuck once idle for `STUCK_AFTER`, and its words.
#[test]
fn test_view_established_half_closed() {
    let mut lp = Loop::new();
    let (mut pair, client, upstream) = established(&mut lp);
    client.incoming([Incoming::Eof]);
    lp.event(&mut pair, Side::Client, fin());
    assert_eq!(upstream.shutdowns(), 1);
    let view = pair.view(lp.now + Duration::from_millis(3100));
    assert!(view.client_read_closed && view.upstream_write_closed);
    assert!(!view.upstream_read_closed && !view.client_write_closed);
    assert!(!view.stuck);
    assert_eq!(
        diagnose(&view, &ROUTE_LIMITS),
        "client half-closed 3.1 s ago; upstream silent since; idle 3.1 s of 60 s fin timeout"
    );
    assert!(pair.view(lp.now + STUCK_AFTER).stuck);
}

/// An idle pair holding nothing is never stuck; a fault and the close are recorded.
#[test]
fn test_view_established_idle_then_reset() {
    let mut lp = Loop::new();
    let (mut pair, client, upstream) = established(&mut lp);
    let view = pair.view(lp.now + Duration::from_secs(3600));
    assert!(!view.stuck);
    assert_eq!(
        diagnose(&view, &ROUTE_LIMITS),
        "idle for 3600.0 s (no idle timeout); nothing held"
    );
    upstream.data(b"answer");
    client.outgoing([Outgoing::Fail(io::ErrorKind::BrokenPipe)]);
    lp.event(&mut pair, Side::Upstream, readable());
    let events = words(&pair);
    assert_eq!(
        events[events.len() - 2..],
        ["client socket failed", "closing: client-reset"]
    );
}
