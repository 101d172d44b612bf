//! The process's fd budget: `(RLIMIT_NOFILE - reserve) / 2` pairs by default in every splice mode, shared
//! by every route and every `--threads` reactor. A client beyond it waits in the listen backlog (it is
//! never accepted and then reset) and is served once a pair closes; pipes come only from the slots no
//! pair holds.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// The reserve of one reactor without `--prewarm` (src/datapath/budget.rs).
const RESERVE: u64 = 32;
/// The reserve of two reactors: each one past the first holds four fds of its own.
const RESERVE_TWO_THREADS: u64 = RESERVE + 4;

/// A client that has sent a message and collects what comes back.
struct Waiter {
    stream: TcpStream,
    sent: Vec<u8>,
    got: Vec<u8>,
}

impl Waiter {
    fn send(addr: SocketAddr, message: String) -> Waiter {
        let mut stream = connect(addr);
        stream.write_all(message.as_bytes()).expect("write");
        Waiter {
            stream,
            sent: message.into_bytes(),
            got: Vec::new(),
        }
    }

    /// Reads what has arrived within `wait`; true once the whole echo is back. A reset or an EOF
    /// fails the test: a client beyond the budget must wait, not be dropped.
    fn poll(&mut self, wait: Duration) -> bool {
        if self.got.len() < self.sent.len() {
            self.stream
                .set_read_timeout(Some(wait))
                .expect("set_read_timeout");
            let mut buf = [0u8; 256];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("EOF before the echo of {:?}", self.sent),
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if classify(&e) == End::TimedOut => {}
                Err(e) => panic!("{e} before the echo of {:?}", self.sent),
            }
        }
        assert!(self.sent.starts_with(&self.got), "a wrong echo");
        self.got.len() == self.sent.len()
    }
}

/// Polls every waiter until `want` of them are answered or `timeout` passes; returns how many are.
fn answered(waiters: &mut [Waiter], want: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let mut done = 0;
        for waiter in waiters.iter_mut() {
            if waiter.poll(Duration::from_millis(5)) {
                done += 1;
            }
        }
        if done >= want || Instant::now() >= deadline {
            return done;
        }
    }
}

/// Idle pairs fill the default budget exactly: the next client waits in the backlog, unharmed, and is
/// served once pairs close; the slots they free carry a stream through pipes.
fn default_admits_half_the_fds_left(mode: &str) {
    let pairs = 40;
    let echo = Backend::echo();
    let fwd = splice_forwarder(&echo, mode, &[], Some(RESERVE + 2 * pairs as u64));
    assert_eq!(fwd.fd_budget(), pairs, "(nofile - reserve) / 2");
    let mut idle: Vec<Waiter> = (0..pairs)
        .map(|i| Waiter::send(fwd.addr(), format!("idle {i}")))
        .collect();
    assert_eq!(
        answered(&mut idle, pairs, Duration::from_secs(20)),
        pairs,
        "every client within the budget is served; log:\n{}",
        fwd.logs()
    );
    let mut extra = vec![Waiter::send(fwd.addr(), String::from("one too many"))];
    assert_eq!(answered(&mut extra, 1, Duration::from_millis(700)), 0);
    assert_eq!(echo.accepted(), pairs, "a pair past the budget was opened");
    let body = scrape(fwd.metrics_addr());
    assert_eq!(sample(&body, "edgefwd_pairs_open"), pairs as u64);
    assert!(sample(&body, "edgefwd_accept_pauses_limit_total") >= 1);

    // Five pairs close: the waiting client is served, and four slots are free for pipes.
    idle.truncate(pairs - 5);
    assert_eq!(
        answered(&mut extra, 1, Duration::from_secs(10)),
        1,
        "the waiting client was never served; log:\n{}",
        fwd.logs()
    );
    let before = scrape(fwd.metrics_addr());
    echo_roundtrip(fwd.addr(), 4 << 20, 64 * 1024);
    let after = scrape(fwd.metrics_addr());
    let delta = |name: &str| sample(&after, name) - sample(&before, name);
    if mode == "auto" {
        assert_eq!(delta("edgefwd_splice_switches_total"), 2, "{after}");
    }
    assert_eq!(
        delta("edgefwd_pipe_shortages_total"),
        0,
        "the stream found no pipe in the free slots:\n{after}"
    );
    assert_eq!(sample(&after, "edgefwd_splice_fallbacks_total"), 0);
    assert!(fwd.logs().lines().all(|l| !l.contains("cause=connect")));
}

#[test]
fn test_default_budget_splice_auto_admits_half_the_fds_left() {
    default_admits_half_the_fds_left("auto");
}

#[test]
fn test_default_budget_splice_always_admits_half_the_fds_left() {
    default_admits_half_the_fds_left("always");
}

/// `clients` clients, spread over `addrs` in turn, against a budget of `budget` pairs: exactly `budget`
/// are served, the rest wait (nothing past the budget reaches the upstream), and each served client
/// that leaves lets exactly one waiting client in, whichever listener (or `SO_REUSEPORT` queue of
/// which reactor) it waits in; none is reset.
fn budget_holds_and_releases(
    fwd: &Forwarder,
    echo: &Backend,
    addrs: &[SocketAddr],
    clients: usize,
    budget: usize,
) {
    let mut waiters: Vec<Waiter> = (0..clients)
        .map(|i| Waiter::send(addrs[i % addrs.len()], format!("client {i}")))
        .collect();
    assert_eq!(
        answered(&mut waiters, budget, Duration::from_secs(10)),
        budget,
        "log:\n{}",
        fwd.logs()
    );
    for left in 0..clients - budget {
        // Long enough for a client past the budget to be accepted, if it were going to be.
        assert_eq!(
            answered(&mut waiters, budget + 1, Duration::from_millis(500)),
            budget,
            "more clients served than the budget"
        );
        assert_eq!(echo.accepted(), budget + left, "more pairs than the budget");
        let first_served = waiters
            .iter()
            .position(|w| w.got.len() == w.sent.len())
            .expect("a served client");
        drop(waiters.remove(first_served));
        assert_eq!(
            answered(&mut waiters, budget, Duration::from_secs(10)),
            budget,
            "no waiting client served once another closed; log:\n{}",
            fwd.logs()
        );
    }
    assert_eq!(echo.accepted(), clients);
}

/// Three routes from one file, at a budget of 6 pairs: together they never hold more than 6 (each
/// route alone would be allowed the whole budget), the others wait and are served later.
#[test]
fn test_routes_share_one_budget() {
    let budget = 6;
    let echo = Backend::echo();
    let routes: String = ["a", "b", "c"]
        .iter()
        .map(|name| {
            format!(
                "[[route]]\nname = \"{name}\"\nlisten = [\"127.0.0.1:0\"]\nupstreams = [\"{}\"]\n\n",
                echo.upstream_arg()
            )
        })
        .collect();
    let file = ConfigFile::new(&routes);
    let fwd = Forwarder::start_with_nofile(&["--config", file.path()], RESERVE + 2 * budget as u64);
    assert_eq!(fwd.fd_budget(), budget);
    // Each route's start line may come a moment after the first one, which `start` waited for.
    let addrs: Vec<SocketAddr> = ["a", "b", "c"]
        .iter()
        .map(|name| fwd.route_addr(name))
        .collect();
    budget_holds_and_releases(&fwd, &echo, &addrs, 9, budget);
}

/// `--threads 2`: both reactors draw on one budget, whichever of their `SO_REUSEPORT` queues the
/// clients land in.
#[test]
fn test_threads_share_one_budget() {
    let budget = 6;
    let echo = Backend::echo();
    let fwd = Forwarder::start_with_nofile(
        &["--upstream", &echo.upstream_arg(), "--threads", "2"],
        RESERVE_TWO_THREADS + 2 * budget as u64,
    );
    assert_eq!(fwd.fd_budget(), budget);
    budget_holds_and_releases(&fwd, &echo, &[fwd.addr()], 10, budget);
}

/// `--threads 2`: a reactor may sleep while clients of the other wait for the slots its spare pipes
/// hold, so spare pipes are closed shortly after they go spare, even with their pair still open.
#[test]
fn test_threads_spare_pipes_do_not_outlive_a_pause() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--threads",
        "2",
        "--splice",
        "always",
    ]);
    let baseline = fwd.fd_count();
    let mut client = connect(fwd.addr());
    let data = pattern_vec(256 * 1024);
    client.write_all(&data).expect("write");
    let mut back = vec![0u8; data.len()];
    client.read_exact(&mut back).expect("echo");
    assert!(back == data, "echo differs");
    // The pair stays open and idle: its two sockets are all the forwarder should hold beyond its
    // baseline once the spares have expired.
    assert!(
        wait_until(Duration::from_secs(5), || fwd.fd_count() <= baseline + 2),
        "{} fds with one idle pair (baseline {baseline}): spare pipes kept",
        fwd.fd_count()
    );
}
