//! The load generator: bulk senders/receivers on blocking threads, one mio engine for the
//! request/response and churn scenarios, and the opener of idle connections.
//!
//! Like the backends it runs on the cores the forwarder is not pinned to, and it must cost
//! less than the forwarder: the rr engine drives all its connections from one thread with
//! one epoll set (100 threads on one core would spend the core on context switches), and
//! every check is a `memcmp` against the pattern.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::backend::{prepare_blocking, send_pattern, sink_pattern, SinkReport, STALL};
use crate::pattern::Pattern;
use crate::util::{fail, BenchResult, Context};

/// Distance between the pattern offsets of successive connections, so that two
/// connections never carry the same bytes and crossed streams are detected.
const CONN_STRIDE: u64 = 7919;

/// How long the rr engine waits for any response before declaring the forwarder stalled.
const RR_STALL: Duration = Duration::from_secs(5);

/// Connects a blocking client socket with the stall timeouts.
fn connect(addr: SocketAddr) -> BenchResult<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, STALL).with_ctx(|| format!("connect to {addr}"))?;
    prepare_blocking(&s)?;
    Ok(s)
}

/// One-way bulk: sends `bytes` to `addr` and half-closes. The socket is returned so the
/// caller closes it only after the backend has seen everything.
pub fn bulk_send(addr: SocketAddr, pattern: &Pattern, bytes: u64) -> BenchResult<TcpStream> {
    let mut s = connect(addr)?;
    send_pattern(&mut s, pattern, bytes).ctx("bulk client send")?;
    Ok(s)
}

/// Duplex bulk: sends `bytes` (on a second thread) while receiving and verifying `bytes`.
pub fn bulk_duplex(
    addr: SocketAddr,
    pattern: &Arc<Pattern>,
    bytes: u64,
) -> BenchResult<SinkReport> {
    let mut rx = connect(addr)?;
    let mut tx = rx.try_clone().ctx("clone client socket")?;
    let p = Arc::clone(pattern);
    let writer = std::thread::Builder::new()
        .name("bulk-client-tx".into())
        .spawn(move || send_pattern(&mut tx, &p, bytes))
        .ctx("spawn bulk sender")?;
    let report = sink_pattern(&mut rx, pattern, bytes).ctx("bulk client receive");
    match writer.join() {
        Ok(r) => r.ctx("bulk client send")?,
        Err(_) => return fail("bulk sender thread panicked"),
    }
    report
}

/// What the rr engine does with each connection.
#[derive(Debug, Clone, Copy)]
pub struct RrConfig {
    /// Connections (or, in churn mode, concurrent workers).
    pub conns: usize,
    /// Request size; the response is the echo of it.
    pub msg: usize,
    /// Churn: one request per connection, then close and connect again.
    pub churn: bool,
    /// Unmeasured time first (connections set up, caches and allocators warm).
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
}

/// Counts from the measured window only.
#[derive(Debug, Default)]
pub struct RrOutcome {
    /// Round-trip times in ns (churn: connect to echo received).
    pub latencies_ns: Vec<u32>,
    pub requests: u64,
    pub connections: u64,
    /// Failed connects/resets in churn mode (other modes fail the run instead).
    pub errors: u64,
    pub elapsed: Duration,
}

/// An edge of the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Start,
    End,
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending,
    Receiving,
}

/// One client connection of the engine.
struct Slot {
    stream: mio::net::TcpStream,
    phase: Phase,
    /// Pattern offset of the current request.
    offset: u64,
    /// Bytes of the current request written / of its echo received.
    sent: usize,
    recvd: usize,
    /// When the current request (churn: connection) started, for its latency.
    started: Instant,
}

/// What driving a slot produced.
enum Step {
    /// Waiting for the kernel (WouldBlock).
    Idle,
    /// One request (and in churn mode its connection) finished.
    Done(Duration),
    /// The connection failed.
    Failed(String),
}

/// The request/response engine (rr1, rr100 and churn).
pub struct RrEngine<'a> {
    addr: SocketAddr,
    pattern: &'a Pattern,
    cfg: RrConfig,
    poll: Poll,
    slots: Vec<Slot>,
    buf: Vec<u8>,
    next_conn: u64,
}

impl<'a> RrEngine<'a> {
    pub fn new(addr: SocketAddr, pattern: &'a Pattern, cfg: RrConfig) -> BenchResult<RrEngine<'a>> {
        Ok(RrEngine {
            addr,
            pattern,
            cfg,
            poll: Poll::new().ctx("rr epoll_create")?,
            slots: Vec::with_capacity(cfg.conns),
            buf: vec![0u8; cfg.msg],
            next_conn: 0,
        })
    }

    /// Runs warm-up then the measured window. `on_edge` is called exactly at the window's
    /// start and end (it samples the forwarder's CPU counters).
    pub fn run(
        mut self,
        mut on_edge: impl FnMut(Edge) -> BenchResult<()>,
    ) -> BenchResult<RrOutcome> {
        for i in 0..self.cfg.conns {
            let slot = self.open_slot(i)?;
            self.slots.push(slot);
        }
        let mut events = Events::with_capacity(1024);
        let begin = Instant::now();
        let measure_at = begin + self.cfg.warmup;
        let end_at = measure_at + self.cfg.measure;
        let mut out = RrOutcome::default();
        let mut measuring = false;
        let mut last_progress = Instant::now();
        // Start every connection: writes go out before the first poll.
        for i in 0..self.slots.len() {
            self.drive_and_account(i, &mut out, false, &mut last_progress)?;
        }
        loop {
            let now = Instant::now();
            if !measuring && now >= measure_at {
                on_edge(Edge::Start)?;
                out = RrOutcome {
                    latencies_ns: Vec::with_capacity(1 << 20),
                    ..RrOutcome::default()
                };
                measuring = true;
            }
            if measuring && now >= end_at {
                on_edge(Edge::End)?;
                out.elapsed = now - measure_at;
                return Ok(out);
            }
            if now - last_progress > RR_STALL {
                return fail(format!(
                    "no response for {RR_STALL:?} (forwarder dead or stuck?)"
                ));
            }
            let boundary = if measuring { end_at } else { measure_at };
            let timeout = boundary
                .saturating_duration_since(now)
                .min(Duration::from_millis(100));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e).ctx("rr epoll_wait");
                }
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if i < self.slots.len() {
                    self.drive_and_account(i, &mut out, measuring, &mut last_progress)?;
                }
            }
        }
    }

    /// Drives slot `i` and books what it finished.
    fn drive_and_account(
        &mut self,
        i: usize,
        out: &mut RrOutcome,
        measuring: bool,
        last_progress: &mut Instant,
    ) -> BenchResult<()> {
        loop {
            match self.drive(i) {
                Step::Idle => return Ok(()),
                Step::Done(rtt) => {
                    *last_progress = Instant::now();
                    if measuring {
                        out.requests += 1;
                        out.latencies_ns
                            .push(rtt.as_nanos().min(u128::from(u32::MAX)) as u32);
                    }
                    if self.cfg.churn {
                        if measuring {
                            out.connections += 1;
                        }
                        self.slots[i] = self.open_slot(i)?;
                    }
                }
                Step::Failed(why) => {
                    if !self.cfg.churn {
                        return fail(format!("connection {i}: {why}"));
                    }
                    if measuring {
                        out.errors += 1;
                    }
                    // Back off a little so a refusing forwarder is not hammered, and return
                    // to the event loop: its deadline and stall checks must keep running
                    // even when every connect fails at once (a dead forwarder).
                    std::thread::sleep(Duration::from_millis(1));
                    self.slots[i] = self.open_slot(i)?;
                    return Ok(());
                }
            }
        }
    }

    /// Opens a new connection for slot `i` and registers it under token `i`.
    fn open_slot(&mut self, i: usize) -> BenchResult<Slot> {
        let mut stream = mio::net::TcpStream::connect(self.addr)
            .with_ctx(|| format!("connect to {}", self.addr))?;
        let _ = stream.set_nodelay(true);
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .ctx("register rr connection")?;
        let offset = self.next_conn * CONN_STRIDE;
        self.next_conn += 1;
        Ok(Slot {
            stream,
            phase: Phase::Connecting,
            offset,
            sent: 0,
            recvd: 0,
            started: Instant::now(),
        })
    }

    /// Advances slot `i` as far as the kernel allows. Events may be spurious or stale
    /// (a slot reconnected within one batch), so the slot's own state decides, not the event.
    fn drive(&mut self, i: usize) -> Step {
        let msg = self.cfg.msg;
        let slot = &mut self.slots[i];
        loop {
            match slot.phase {
                Phase::Connecting => match connect_state(&slot.stream) {
                    Ok(true) => {
                        slot.phase = Phase::Sending;
                        if !self.cfg.churn {
                            slot.started = Instant::now();
                        }
                    }
                    Ok(false) => return Step::Idle,
                    Err(e) => return Step::Failed(format!("connect: {e}")),
                },
                Phase::Sending => {
                    let data = &self.pattern.at(slot.offset, msg)[slot.sent..];
                    match slot.stream.write(data) {
                        Ok(n) => {
                            slot.sent += n;
                            if slot.sent == msg {
                                slot.phase = Phase::Receiving;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Idle,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Step::Failed(format!("send: {e}")),
                    }
                }
                Phase::Receiving => {
                    let want = msg - slot.recvd;
                    match slot.stream.read(&mut self.buf[..want]) {
                        Ok(0) => return Step::Failed("closed by the forwarder".into()),
                        Ok(n) => {
                            let expect = self.pattern.at(slot.offset + slot.recvd as u64, n);
                            if self.buf[..n] != *expect {
                                return Step::Failed("echo does not match what was sent".into());
                            }
                            slot.recvd += n;
                            if slot.recvd == msg {
                                let rtt = slot.started.elapsed();
                                slot.offset += msg as u64;
                                slot.sent = 0;
                                slot.recvd = 0;
                                slot.phase = Phase::Sending;
                                slot.started = Instant::now();
                                return Step::Done(rtt);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Idle,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Step::Failed(format!("receive: {e}")),
                    }
                }
            }
        }
    }
}

/// Whether a non-blocking connect has finished: Ok(true) connected, Ok(false) still in
/// progress, Err failed (mio's documented check: take_error, then peer_addr).
fn connect_state(s: &mio::net::TcpStream) -> io::Result<bool> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens `count` connections through `addr` and sends one verified 64-byte echo through
/// each, so every pair is fully established in the forwarder. Done in batches so the
/// round trips overlap. The sockets stay open until the returned Vec is dropped.
pub fn open_idle(addr: SocketAddr, pattern: &Pattern, count: usize) -> BenchResult<Vec<TcpStream>> {
    const BATCH: usize = 200;
    const MSG: usize = 64;
    let mut conns: Vec<TcpStream> = Vec::with_capacity(count);
    while conns.len() < count {
        let first = conns.len();
        let n = BATCH.min(count - first);
        for k in first..first + n {
            let mut s = connect(addr).with_ctx(|| format!("idle connection {k}"))?;
            s.write_all(pattern.at(k as u64 * CONN_STRIDE, MSG))
                .with_ctx(|| format!("idle connection {k}: send"))?;
            conns.push(s);
        }
        let mut buf = [0u8; MSG];
        for (k, s) in conns.iter_mut().enumerate().skip(first) {
            s.read_exact(&mut buf).with_ctx(|| {
                format!("idle connection {k}: echo (forwarder connection limit reached?)")
            })?;
            if buf[..] != *pattern.at(k as u64 * CONN_STRIDE, MSG) {
                return fail(format!("idle connection {k}: echo does not match"));
            }
        }
    }
    Ok(conns)
}
