//! Helpers for the soak and limits tests (`tests/soak.rs`): load that a thread per connection
//! cannot carry (tens of thousands of sockets), measured from outside the way an operator would.
//!
//! - [`echo_upstream`]: an echo upstream on one thread with its own mio poller, so 10,000 idle
//!   pairs cost the test 10,000 sockets, not 10,000 threads (`kernel.pid_max` is often 32768).
//! - [`short_connections`]: many connect / small echo / close cycles from several client threads,
//!   every byte checked, spread over several 127.0.0.x source addresses.
//! - [`Latency`]: round-trip times of small echoes over held connections, and their p99.
//! - [`Drip`]: clients that send a byte at a time and never finish, noting when they are cut.
//! - [`hostile_scrapers`]: the abuse a `--metrics` port may see, for a while.
//!
//! The tests that hold tens of thousands of sockets raise RLIMIT_NOFILE with
//! [`super::support::nofile::raise_towards`].
//!
//! Every socket has a deadline and every loop a limit, as in the rest of `tests/common`.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::support::echo::EchoServer;
use super::IO_TIMEOUT;

// ---------------------------------------------------------------------------------------------
// The echo upstream
// ---------------------------------------------------------------------------------------------

/// The echo upstream of the soak tests on `ports` ports of 127.0.0.1 (see
/// [`super::support::echo`]).
pub fn echo_upstream(ports: usize) -> EchoServer {
    EchoServer::start(ports, 1024).expect("start the echo upstream")
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// Source addresses the short-connection clients take turns on: each has its own ~28k ephemeral
/// ports, so 100,000 connections closed by the client (TIME_WAIT on the client's side for 60 s) do
/// not run out of ports even where `tcp_tw_reuse` is off.
pub const SOURCE_ADDRESSES: u8 = 8;

/// A blocking client socket from `source` (port 0) to `to`, with the harness's timeouts.
pub fn connect_from(source: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&to.into(), IO_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    super::set_timeouts(&stream, IO_TIMEOUT);
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `total` short connections to `to` from `threads` client threads: connect (from 127.0.0.2 up to
/// 127.0.0.(1 + [`SOURCE_ADDRESSES`]), by thread), write a small message naming the connection, read
/// it back and check it, close. Panics on the first failure, naming the connection and the error.
pub fn short_connections(to: SocketAddr, total: usize, threads: usize) {
    let workers: Vec<_> = (0..threads)
        .map(|worker| {
            thread::spawn(move || {
                let source = Ipv4Addr::new(
                    127,
                    0,
                    0,
                    2 + (worker % usize::from(SOURCE_ADDRESSES)) as u8,
                );
                for n in (worker..total).step_by(threads) {
                    one_short_connection(source, to, n)
                        .unwrap_or_else(|err| panic!("connection {n} from {source}: {err}"));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("short-connection client");
    }
}

fn one_short_connection(source: Ipv4Addr, to: SocketAddr, n: usize) -> io::Result<()> {
    let mut stream = connect_from(source, to)?;
    let message = format!("connection {n:>9} says hello\n");
    stream.write_all(message.as_bytes())?;
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back)?;
    if back != message.as_bytes() {
        return Err(io::Error::other(format!(
            "echo differs: {:?}",
            String::from_utf8_lossy(&back)
        )));
    }
    Ok(())
}

/// Small echoes over a few held connections, timed one by one.
pub struct Latency {
    streams: Vec<TcpStream>,
}

impl Latency {
    pub fn connect(to: SocketAddr, connections: usize) -> Latency {
        Latency {
            streams: (0..connections).map(|_| super::connect(to)).collect(),
        }
    }

    /// `rounds` echoes of 32 bytes on every connection in turn; the round-trip times, each checked.
    pub fn sample(&mut self, rounds: usize) -> Vec<Duration> {
        let mut times = Vec::with_capacity(rounds * self.streams.len());
        let message = *b"0123456789abcdef0123456789ABCDEF";
        let mut back = [0u8; 32];
        for _ in 0..rounds {
            for stream in &mut self.streams {
                let start = Instant::now();
                stream.write_all(&message).expect("latency write");
                stream.read_exact(&mut back).expect("latency echo");
                times.push(start.elapsed());
                assert_eq!(back, message, "latency echo differs");
            }
        }
        times
    }
}

impl Latency {
    /// [`Self::sample`] in rounds of 50 for about `window`.
    pub fn sample_for(&mut self, window: Duration) -> Vec<Duration> {
        let until = Instant::now() + window;
        let mut times = Vec::new();
        while Instant::now() < until {
            times.extend(self.sample(50));
        }
        times
    }
}

/// The `pct`th percentile (nearest rank) of `times`.
pub fn percentile(times: &[Duration], pct: usize) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Clients that each send `payload` one byte every `interval` and never finish it; a thread keeps
/// them going and notes when each one is cut (EOF or reset), reading whatever the server answers.
pub struct Drip {
    thread: JoinHandle<Vec<Option<Duration>>>,
}

impl Drip {
    /// Connects `count` clients to each of `targets` and drips their payloads for at most `limit`.
    pub fn start(
        targets: Vec<(SocketAddr, Vec<u8>)>,
        count: usize,
        interval: Duration,
        limit: Duration,
    ) -> Drip {
        let thread = thread::spawn(move || {
            let mut clients = Vec::new();
            for (to, payload) in &targets {
                for _ in 0..count {
                    let stream = super::connect(*to);
                    stream.set_nonblocking(true).expect("nonblocking");
                    clients.push(DripClient {
                        stream,
                        payload: payload.clone(),
                        sent: 0,
                        started: Instant::now(),
                        next: Instant::now(),
                        cut: None,
                    });
                }
            }
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline && clients.iter().any(|c| c.cut.is_none()) {
                for client in clients.iter_mut().filter(|c| c.cut.is_none()) {
                    client.step(interval);
                }
                thread::sleep(Duration::from_millis(20));
            }
            clients.iter().map(|c| c.cut).collect()
        });
        Drip { thread }
    }

    /// For every client, how long after its connect it was cut (`None`: still open at the limit).
    pub fn join(self) -> Vec<Option<Duration>> {
        self.thread.join().expect("drip thread")
    }
}

struct DripClient {
    stream: TcpStream,
    payload: Vec<u8>,
    sent: usize,
    started: Instant,
    next: Instant,
    cut: Option<Duration>,
}

impl DripClient {
    /// Reads what arrived (an error status is fine; EOF or an error is the cut), then sends the
    /// next byte when it is due.
    fn step(&mut self, interval: Duration) {
        let mut buf = [0u8; 512];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return self.cut_now(),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.cut_now(),
            }
        }
        if Instant::now() >= self.next && self.sent < self.payload.len() {
            match self.stream.write(&self.payload[self.sent..=self.sent]) {
                Ok(n) => self.sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return self.cut_now(),
            }
            self.next = Instant::now() + interval;
        }
    }

    fn cut_now(&mut self) {
        self.cut = Some(self.started.elapsed());
    }
}

/// For `window`, the `--metrics` port at `to` gets: 20 slowloris requests (a byte every 250 ms),
/// 150 connections opened and left idle (more than the 64 scrapes served at once), 10 clients that
/// send well-formed requests and never read (a 1 KiB receive buffer), and every 20 ms a head that
/// never ends (left open), an oversized head (64 KiB, no end) and garbage (both dropped unread).
/// What the server answers them is not checked, only that forwarding goes on; every socket is
/// closed when the returned thread ends.
pub fn hostile_scrapers(to: SocketAddr, window: Duration) -> JoinHandle<()> {
    thread::spawn(move || {
        let slow = Drip::start(
            vec![(to, b"GET /metrics HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec())],
            20,
            Duration::from_millis(250),
            window,
        );
        let idle: Vec<TcpStream> = (0..150)
            .filter_map(|_| TcpStream::connect(to).ok())
            .collect();
        let deaf: Vec<TcpStream> = (0..10).filter_map(|_| never_reading(to).ok()).collect();
        let end = Instant::now() + window;
        let mut round = 0u32;
        let mut unfinished = Vec::new();
        while Instant::now() < end {
            round += 1;
            if let Ok(mut stream) = TcpStream::connect(to) {
                let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nX: ");
                unfinished.push(stream);
            }
            let oversized = vec![b'A'; 64 * 1024];
            let garbage: Vec<u8> = (0..512u32)
                .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(round) >> 13) as u8)
                .chain(*b"\r\n\r\n")
                .collect();
            for request in [oversized, garbage] {
                // Written and dropped unread: the server's answer, if any, meets a reset.
                if let Ok(mut stream) = TcpStream::connect(to) {
                    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                    let _ = stream.write_all(&request);
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        slow.join();
        drop((idle, deaf, unfinished));
    })
}

/// A well-formed scrape from a client with a tiny receive buffer that never reads the answer.
fn never_reading(to: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    socket.set_recv_buffer_size(1024)?;
    socket.connect_timeout(&to.into(), IO_TIMEOUT)?;
    let mut stream: TcpStream = socket.into();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: deaf\r\n\r\n")?;
    Ok(stream)
}
