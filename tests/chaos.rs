//! Chaos: hundreds of concurrent connections, each moving hundreds of KiB to a few MiB both ways at
//! once, through a seeded chaos proxy on each side of edgefwd (client -> proxy -> edgefwd -> proxy ->
//! backend; `tests/common/chaos.rs`). Per connection each proxy passes bytes through, delays them,
//! writes them one byte at a time, stalls for seconds, half-closes early or resets mid-stream, and
//! journals what it did. Some connections have both proxies shrink their socket buffers, so a stall
//! pushes back on edgefwd's rings at once; on some the backend answers only after the client's
//! half-close, so a FIN that is not passed on leaves them waiting. Every byte is checked at both ends:
//!
//! - no fault that ends the stream (pass, delay, fragment, stall): every byte arrives, both ways, then
//!   EOF: the half-close is passed on;
//! - an early half-close: exactly the bytes before it arrive, then EOF; the other direction completes;
//! - a reset: what arrived is an exact prefix, and each end has seen the reset, or the whole stream and
//!   its EOF, within [`RESET_BOUND`] of it. edgefwd passes a reset on as a reset (README, Behaviour),
//!   so a clean EOF after a cut stream fails the test.
//!
//! No connection may outlive [`CONN_DEADLINE`]; a failure names the connection, its plan, what the
//! proxies did, and the seed. Afterwards edgefwd's fds are back to where they were and it still
//! forwards a fresh connection. The seed is printed; `EDGEFWD_CHAOS_SEED=N` replays it.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::chaos::*;
use common::*;

/// How long after a planned reset both ends must have finished.
const RESET_BOUND: Duration = Duration::from_secs(15);

/// The runs share two cores with each other's hundreds of threads: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `EDGEFWD_CHAOS_SEED`, or a fresh one from the clock.
fn seed() -> u64 {
    match std::env::var("EDGEFWD_CHAOS_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("EDGEFWD_CHAOS_SEED={v:?} is not an unsigned integer")),
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            Rng::new(nanos ^ u64::from(std::process::id())).next_u64()
        }
    }
}

/// One chaos run.
struct Run {
    test: &'static str,
    /// edgefwd flags beyond `--upstream` (and the harness's `--splice` mode).
    args: &'static [&'static str],
    conns: u64,
    sizes: Sizes,
}

/// What an end saw, as the judge reads it.
type Outcome = Result<Side, String>;

fn run(run: Run) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    eprintln!(
        "{}: chaos seed {seed} (replay: EDGEFWD_CHAOS_SEED={seed} cargo test --test chaos {})",
        run.test, run.test
    );
    // Connections 0..conns are drawn from the seed; one more, left alone, comes after the chaos.
    let fresh = run.conns;
    let mut plans: HashMap<u64, Plan> = (0..run.conns)
        .map(|id| (id, Plan::draw(seed, id, run.sizes)))
        .collect();
    plans.insert(fresh, Plan::benign(fresh, 256 * 1024));
    let plans: Plans = Arc::new(plans);
    let journal = Journal::default();

    let mut backends = Backends::start(&plans);
    let back = ChaosProxy::start(
        Hop::Back,
        backends.backend.addr(),
        Arc::clone(&plans),
        journal.clone(),
    );
    let upstream = back.addr().to_string();
    let mut args = vec!["--upstream", upstream.as_str()];
    args.extend(run.args);
    let fwd = Forwarder::start_with(
        &args,
        &Options {
            rust_log: Some("info".into()),
            ..Options::default()
        },
    );
    let front = ChaosProxy::start(Hop::Front, fwd.addr(), Arc::clone(&plans), journal.clone());
    let baseline = fwd.fd_count();

    let started = Instant::now();
    let clients = run_clients(front.addr(), &plans, run.conns);
    let ends = backends.collect(started + CONN_DEADLINE);
    eprintln!(
        "{}: {} connections, {} MiB both ways, in {:.1?}; {}",
        run.test,
        run.conns,
        plans.values().map(|p| p.up_len + p.down_len).sum::<u64>() >> 20,
        started.elapsed(),
        census(&plans, &journal, run.conns)
    );
    let failures = failures(&plans, &journal, &clients, &ends);
    for failure in failures.iter().take(20) {
        eprintln!("{}: seed {seed}: {failure}", run.test);
    }
    assert!(
        failures.is_empty(),
        "{}: {} of {} connections failed under chaos seed {seed} (replay: EDGEFWD_CHAOS_SEED={seed}); \
         first: {}",
        run.test,
        failures.len(),
        run.conns,
        failures[0]
    );

    assert!(
        wait_until(Duration::from_secs(30), || fwd.fd_count() <= baseline),
        "{}: seed {seed}: edgefwd holds {} fds after every connection ended ({baseline} before)",
        run.test,
        fwd.fd_count()
    );
    let client = client(front.addr(), plans[&fresh]);
    let ends = backends.collect(Instant::now() + CONN_DEADLINE);
    if let Err(why) = judge(
        &plans[&fresh],
        &journal.of(fresh),
        &client,
        ends.get(&fresh),
    ) {
        panic!(
            "{}: seed {seed}: a fresh connection after the chaos: {why}",
            run.test
        );
    }
}

/// Connections `0..conns` at once, each on its own thread; what each client saw, by id.
fn run_clients(front: SocketAddr, plans: &Plans, conns: u64) -> Vec<Outcome> {
    let threads: Vec<_> = (0..conns)
        .map(|id| {
            let plan = plans[&id];
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || client(front, plan))
                .expect("spawn a client thread")
        })
        .collect();
    threads
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err("client thread panicked".into()))
        })
        .collect()
}

/// One line per connection that fails [`judge`], naming everything needed to understand it.
fn failures(
    plans: &Plans,
    journal: &Journal,
    clients: &[Outcome],
    ends: &HashMap<u64, Side>,
) -> Vec<String> {
    (0..clients.len() as u64)
        .zip(clients)
        .filter_map(|(id, client)| {
            let (plan, did, backend) = (&plans[&id], journal.of(id), ends.get(&id));
            let why = judge(plan, &did, client, backend).err()?;
            Some(format!(
                "conn {id}: {why}\n  plan {plan:?}\n  proxies did {did:?}\n  client {client:?}\n  \
                 backend {backend:?}"
            ))
        })
        .collect()
}

/// The backend and what it has reported so far.
struct Backends {
    backend: Backend,
    reports: Receiver<Option<(u64, Side)>>,
    /// Reports received over the whole run: one per connection the backend accepted.
    reported: usize,
}

impl Backends {
    fn start(plans: &Plans) -> Backends {
        let (backend, reports) = backend(Arc::clone(plans));
        Backends {
            backend,
            reports,
            reported: 0,
        }
    }

    /// The reports that come in until every connection the backend accepted has reported and none
    /// came for a second (a connection reset on its way may still be accepted), or `deadline`.
    fn collect(&mut self, deadline: Instant) -> HashMap<u64, Side> {
        let mut ends = HashMap::new();
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            match self.reports.recv_timeout(Duration::from_millis(100)) {
                Ok(report) => {
                    self.reported += 1;
                    quiet_since = Instant::now();
                    ends.extend(report);
                }
                Err(RecvTimeoutError::Timeout) => {
                    let all = self.reported >= self.backend.accepted();
                    if all && quiet_since.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        ends
    }
}

/// Checks one connection's two ends against its plan and what the proxies did.
fn judge(
    plan: &Plan,
    did: &[(Hop, Did)],
    client: &Outcome,
    backend: Option<&Side>,
) -> Result<(), String> {
    let client = client.as_ref().map_err(|e| format!("client: {e}"))?;
    if did.iter().any(|(_, d)| matches!(d, Did::TimedOut)) {
        return Err("a proxy gave up on it after the connection deadline".into());
    }
    let reset = did.iter().find_map(|(_, d)| match d {
        Did::Reset { when, .. } => Some(*when),
        _ => None,
    });
    for (dir, receiver, sender) in [
        (Dir::Up, backend, Some(client)),
        (Dir::Down, Some(client), backend),
    ] {
        // An early half-close ends the stream where it happened; nothing past it may arrive.
        let expected = did
            .iter()
            .filter_map(|(_, d)| match d {
                Did::HalfClosed { dir: d, at } if *d == dir => Some(*at),
                _ => None,
            })
            .min()
            .unwrap_or(plan.len(dir));
        let Some(side) = receiver else {
            if reset.is_some() {
                continue; // reset before it reached the backend
            }
            return Err("the backend never saw it".into());
        };
        if let Some(at) = side.mismatch {
            return Err(format!("{dir:?}: wrong byte at offset {at}"));
        }
        let whole = side.received == expected;
        match (side.end, reset) {
            (End::Eof, _) if whole => {}
            (End::Reset, Some(_)) if side.received <= expected => {}
            (end, _) => {
                return Err(format!(
                    "{dir:?}: {} of {expected} bytes arrived, then {end:?}",
                    side.received
                ))
            }
        }
        if let (None, Some(sender)) = (reset, sender) {
            if sender.sent != plan.len(dir) || sender.send_error.is_some() {
                return Err(format!(
                    "{dir:?}: the sender wrote {} of {} bytes ({:?}) with no reset planned",
                    sender.sent,
                    plan.len(dir),
                    sender.send_error
                ));
            }
        }
    }
    if let Some(when) = reset {
        for (end, side) in [("client", Some(client)), ("backend", backend)] {
            if let Some(late) =
                side.and_then(|s| s.ended.checked_duration_since(when + RESET_BOUND))
            {
                return Err(format!(
                    "the {end} ended {late:?} past {RESET_BOUND:?} after the reset"
                ));
            }
        }
    }
    Ok(())
}

/// How many connections met each fault, planned and done: "pass 98, delay 41, ...".
fn census(plans: &Plans, journal: &Journal, conns: u64) -> String {
    let mut planned: HashMap<&str, usize> = HashMap::new();
    let mut resets = 0;
    let mut half_closes = 0;
    let (mut replies, mut tight) = (0, 0);
    for id in 0..conns {
        let plan = &plans[&id];
        replies += usize::from(plan.reply_after_eof);
        tight += usize::from(plan.tight);
        for chaos in [plan.front, plan.back] {
            let name = match chaos {
                Chaos::Pass => "pass",
                Chaos::Delay { .. } => "delay",
                Chaos::Fragment { .. } => "fragment",
                Chaos::Stall { .. } => "stall",
                Chaos::HalfClose { .. } => "half-close",
                Chaos::Reset { .. } => "reset",
            };
            *planned.entry(name).or_default() += 1;
        }
        let did = journal.of(id);
        resets += usize::from(did.iter().any(|(_, d)| matches!(d, Did::Reset { .. })));
        half_closes += usize::from(did.iter().any(|(_, d)| matches!(d, Did::HalfClosed { .. })));
    }
    let mut planned: Vec<_> = planned.into_iter().collect();
    planned.sort();
    format!(
        "hops planned {planned:?}; connections reset {resets}, half-closed early {half_closes}, \
         answered after EOF {replies}, tight {tight}"
    )
}

/// The replay promise: a seed draws the same plans again, different seeds draw different ones, and
/// every planned fault lies inside its stream (so it can happen).
#[test]
fn test_chaos_plans_replay_from_their_seed() {
    let sizes = Sizes {
        min: 64 * 1024,
        max: 512 * 1024,
        big: 2 * 1024 * 1024,
    };
    let draw = |seed| {
        (0..200)
            .map(|id| Plan::draw(seed, id, sizes))
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
    for plan in draw(7) {
        for chaos in [plan.front, plan.back] {
            let at = match chaos {
                Chaos::Stall { dir, after, .. }
                | Chaos::HalfClose { dir, after }
                | Chaos::Reset { dir, after } => Some((dir, after)),
                _ => None,
            };
            if let Some((dir, after)) = at {
                assert!(after > 0 && after < plan.len(dir), "{plan:?}");
            }
        }
        assert!(
            plan.up_len >= sizes.min && plan.up_len <= sizes.big,
            "{plan:?}"
        );
    }
}

#[test]
fn test_chaos_both_hops() {
    run(Run {
        test: "test_chaos_both_hops",
        args: &[],
        conns: 300,
        sizes: Sizes {
            min: 128 * 1024,
            max: 1024 * 1024,
            big: 3 * 1024 * 1024,
        },
    });
}

#[test]
fn test_chaos_both_hops_4k_rings() {
    run(Run {
        test: "test_chaos_both_hops_4k_rings",
        args: &["--buffer-size", "4k"],
        conns: 100,
        sizes: Sizes {
            min: 64 * 1024,
            max: 512 * 1024,
            big: 2 * 1024 * 1024,
        },
    });
}
