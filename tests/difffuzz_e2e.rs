//! The differential fuzzers' generator and models (tests/common/wiregen.rs, model_proxy.rs,
//! model_connect.rs) against the built binary over loopback sockets, in whatever data-path mode CI
//! runs (`EDGEFWD_TEST_SPLICE`). Each case is a generated, maybe mutated greeting followed by payload,
//! delivered whole, in random pieces or byte by byte, then the client half-closes:
//! - `--accept-proxy`: a header the model accepts means the echo backend receives exactly the bytes
//!   after it (they come back, and nothing else); any other means the client is closed without a byte
//!   and the backend sees no connection (its accept count equals the accepted cases at the end).
//! - `--mode connect` allowing only a loopback echo destination: an accepted head for it gets `200`
//!   and exactly the pipelined bytes echoed; an accepted head for anywhere else gets 403; a rejected
//!   head gets the model's status (400, 405 or 431), an incomplete one a close without an answer;
//!   nothing but the 200 cases reaches the echo.
//!
//! A few thousand connections per test, on four client threads; `EDGEFWD_FUZZ_SEED` replays and
//! `EDGEFWD_FUZZ_CASES` scales the count.

mod common;

use std::fmt::Debug;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::model_connect::{self, Host};
use common::model_proxy;
use common::wiregen::{self, hex, Gen, Wire};
use common::*;
use edgefwd::wire::connect_request::Status;

/// Cases per test in a plain `cargo test`.
const DEFAULT_CASES: usize = 2000;
const THREADS: usize = 4;
/// Longest greeting sent byte by byte (longer ones go in pieces): keeps a case within milliseconds.
const BYTEWISE_MAX: usize = 300;

#[derive(Debug, Clone, Copy)]
enum Delivery {
    Whole,
    Pieces,
    ByteByByte,
}

/// Writes `input` the way `delivery` says; errors are returned, not raised (a rejected client may be
/// closed while it still writes).
fn deliver(
    s: &mut TcpStream,
    input: &[u8],
    delivery: Delivery,
    g: &mut Gen,
) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    match delivery {
        Delivery::Whole => s.write_all(input)?,
        Delivery::Pieces => {
            let mut rest = input;
            while !rest.is_empty() {
                let n = (1 + g.below(rest.len().min(64))).min(rest.len());
                s.write_all(&rest[..n])?;
                rest = &rest[n..];
                thread::sleep(Duration::from_micros(300));
            }
        }
        Delivery::ByteByByte => {
            for byte in input {
                s.write_all(&[*byte])?;
                thread::sleep(Duration::from_micros(50));
            }
        }
    }
    s.shutdown(Shutdown::Write)
}

fn delivery(g: &mut Gen, len: usize) -> Delivery {
    match g.below(10) {
        0..=4 => Delivery::Whole,
        5..=7 => Delivery::Pieces,
        _ if len <= BYTEWISE_MAX => Delivery::ByteByByte,
        _ => Delivery::Pieces,
    }
}

/// A non-empty payload that says which case it belongs to.
fn payload(g: &mut Gen, case: usize) -> Vec<u8> {
    let mut bytes = format!("[case {case}]").into_bytes();
    bytes.extend(wiregen::payload(g, 200));
    bytes
}

/// Runs `case` on `THREADS` threads over `cases` cases; each says how it delivered its greeting and
/// whether it reached the backend. Returns how many did, and the cases per delivery (whole, pieces,
/// byte by byte).
fn run_cases(
    seed: u64,
    cases: usize,
    case: impl Fn(&mut Gen, usize) -> (Delivery, bool) + Sync,
) -> (usize, [usize; 3]) {
    let reached = AtomicUsize::new(0);
    let by_delivery = [(); 3].map(|_| AtomicUsize::new(0));
    let mut root = Gen::new(seed);
    let gens: Vec<Gen> = (0..THREADS).map(|_| root.fork()).collect();
    thread::scope(|scope| {
        for (t, mut g) in gens.into_iter().enumerate() {
            let (case, reached, by_delivery) = (&case, &reached, &by_delivery);
            scope.spawn(move || {
                for n in (t..cases).step_by(THREADS) {
                    let (how, reached_backend) = case(&mut g.fork(), n);
                    by_delivery[how as usize].fetch_add(1, Ordering::SeqCst);
                    if reached_backend {
                        reached.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (
        reached.load(Ordering::SeqCst),
        by_delivery.map(|n| n.load(Ordering::SeqCst)),
    )
}

// ---------------------------------------------------------------------------------------------
// --accept-proxy
// ---------------------------------------------------------------------------------------------

#[test]
fn test_accept_proxy_forwards_exactly_what_the_model_accepts() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--accept-proxy"]);
    fuzz_into(&echo, 0xED6E_E2E0_0001, Words::PROXY, |g, n, seed| {
        proxy_case(fwd.addr(), g, n, seed)
    });
}

/// How [`fuzz_into`] names what it checks.
struct Words {
    /// The forwarder's mode, in the summary line.
    mode: &'static str,
    /// What the backend is to the forwarder.
    peer: &'static str,
    /// The cases that reached it.
    reached: &'static str,
    /// The cases that must not have.
    refused: &'static str,
}

impl Words {
    /// `--accept-proxy`: the backend sees the clients whose header was accepted.
    const PROXY: Words = Words::new("proxy", "backend", "accepted headers", "rejected headers");
    /// `--mode connect`: the destination sees the tunnels opened.
    const CONNECT: Words = Words::new("connect", "destination", "tunnels", "refused heads");

    const fn new(
        mode: &'static str,
        peer: &'static str,
        reached: &'static str,
        refused: &'static str,
    ) -> Words {
        Words {
            mode,
            peer,
            reached,
            refused,
        }
    }
}

/// Runs the cases (seed and count from the environment, `default_seed` otherwise) against `peer`, an
/// echo backend: exactly the cases that say they reached it did, and at least a fifth of them.
fn fuzz_into(
    peer: &Backend,
    default_seed: u64,
    words: Words,
    case: impl Fn(&mut Gen, usize, u64) -> (Delivery, bool) + Sync,
) {
    let Words {
        mode,
        peer: name,
        reached: what,
        refused,
    } = words;
    let seed = wiregen::seed_from_env(default_seed);
    let cases = wiregen::cases_from_env(DEFAULT_CASES);
    let (reached, by_delivery) = run_cases(seed, cases, |g, n| case(g, n, seed));
    assert!(
        wait_until(Duration::from_secs(5), || peer.accepted() >= reached),
        "the {name} saw {} connections for {reached} {what}",
        peer.accepted()
    );
    assert_eq!(peer.accepted(), reached, "{refused} reached the {name}");
    assert!(reached * 5 >= cases, "only {reached} of {cases} {what}");
    eprintln!(
        "difffuzz e2e {mode}: seed {seed:#x}, {cases} connections (whole, pieces, byte by byte: \
         {by_delivery:?}), {reached} {what}"
    );
}

/// One case, run: the greeting (mutated half the time) and the payload sent the way `how` says, and
/// what came back.
struct Case<V> {
    seed: u64,
    n: usize,
    how: Delivery,
    input: Vec<u8>,
    /// The model's verdict on `input`.
    verdict: V,
    /// How writing `input` ended.
    sent: std::io::Result<()>,
    got: Vec<u8>,
    end: End,
}

impl<V: Debug> Case<V> {
    /// Mutates `wire` half the time, appends the case's payload, judges the whole with `judge`, sends
    /// it to `addr` and reads the answer to its end.
    fn run(
        addr: SocketAddr,
        g: &mut Gen,
        mut wire: Wire,
        n: usize,
        seed: u64,
        judge: fn(&[u8]) -> V,
    ) -> Self {
        if g.odds(1, 2) {
            wiregen::mutate(g, &mut wire);
        }
        let mut input = wire.bytes;
        input.extend(payload(g, n));
        let how = delivery(g, input.len());
        let verdict = judge(&input);
        let mut s = connect(addr);
        let sent = deliver(&mut s, &input, how, g);
        let (got, end) = read_until_end(&mut s, Duration::from_secs(10));
        Case {
            seed,
            n,
            how,
            input,
            verdict,
            sent,
            got,
            end,
        }
    }

    /// What a failed assertion names: the seed and case to replay it, the verdict and the input.
    fn context(&self) -> String {
        let Case {
            seed,
            n,
            how,
            verdict,
            ..
        } = self;
        format!(
            "seed {seed:#x} case {n} ({how:?}): {verdict:?}, input {}",
            hex(&self.input)
        )
    }
}

fn proxy_case(addr: SocketAddr, g: &mut Gen, n: usize, seed: u64) -> (Delivery, bool) {
    let wire = wiregen::proxy_header(g);
    let case = Case::run(addr, g, wire, n, seed, model_proxy::judge);
    let context = || case.context();
    match &case.verdict {
        model_proxy::Verdict::Accept { header_len, .. } => {
            assert!(
                case.sent.is_ok(),
                "{}: write failed: {:?}",
                context(),
                case.sent
            );
            assert_eq!(case.end, End::Eof, "{}", context());
            assert!(
                case.got == case.input[*header_len..],
                "{}: got back {}",
                context(),
                hex(&case.got)
            );
            (case.how, true)
        }
        _ => {
            assert!(case.got.is_empty(), "{}: got {}", context(), hex(&case.got));
            assert!(
                matches!(case.end, End::Eof | End::Reset),
                "{}: {:?}",
                context(),
                case.end
            );
            (case.how, false)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// --mode connect
// ---------------------------------------------------------------------------------------------

#[test]
fn test_connect_tunnels_exactly_what_the_model_accepts() {
    let echo = Backend::echo();
    let allowed = echo.addr();
    let allow = allowed.to_string();
    let fwd = Forwarder::start(&["--mode", "connect", "--allow", &allow]);
    fuzz_into(&echo, 0xED6E_E2E0_0002, Words::CONNECT, |g, n, seed| {
        connect_case(fwd.addr(), allowed, g, n, seed)
    });
}

fn connect_case(
    addr: SocketAddr,
    allowed: SocketAddr,
    g: &mut Gen,
    n: usize,
    seed: u64,
) -> (Delivery, bool) {
    let target = allowed.to_string();
    let allowed_target = g.odds(4, 5).then_some(target.as_str());
    let wire = wiregen::connect_head(g, allowed_target);
    let case = Case::run(addr, g, wire, n, seed, model_connect::judge);
    let context = || case.context();
    let (expected, tunnel) = match &case.verdict {
        model_connect::Verdict::Accept {
            len, host, port, ..
        } if *host == Host::Ip(allowed.ip()) && *port == allowed.port() => {
            let mut expected = Status::Established.response().to_vec();
            expected.extend_from_slice(&case.input[*len..]);
            (expected, true)
        }
        model_connect::Verdict::Accept { .. } => (Status::Forbidden.response().to_vec(), false),
        model_connect::Verdict::Reject { status, .. } => (status_response(*status), false),
        // The client ended its stream inside the head: closed without an answer.
        model_connect::Verdict::Incomplete => (Vec::new(), false),
    };
    if tunnel {
        assert!(
            case.sent.is_ok(),
            "{}: write failed: {:?}",
            context(),
            case.sent
        );
    }
    assert!(
        case.got == expected,
        "{}: got {:?}",
        context(),
        String::from_utf8_lossy(&case.got)
    );
    assert!(
        matches!(case.end, End::Eof | End::Reset),
        "{}: {:?}",
        context(),
        case.end
    );
    (case.how, tunnel)
}

fn status_response(code: u16) -> Vec<u8> {
    let status = match code {
        400 => Status::BadRequest,
        405 => Status::MethodNotAllowed,
        431 => Status::HeaderTooLarge,
        other => panic!("the model gave status {other}"),
    };
    status.response().to_vec()
}
