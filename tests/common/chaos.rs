//! A seeded chaos proxy for the chaos tests (`tests/chaos.rs`), and the endpoints that drive it.
//!
//! The other end-to-end tests script one fault each. A real network mixes them on many connections at
//! once: a peer that writes a byte at a time, one that goes quiet for seconds, one that half-closes
//! early, one that resets mid-stream, on either side of the forwarder. A [`ChaosProxy`] sits on one
//! hop (client -> edgefwd, or edgefwd -> backend) and does to each connection the [`Chaos`] its
//! [`Plan`] names for that hop; the plan is drawn from the run's seed and the connection's id, so a
//! seed replays a run. What a proxy actually did (a planned fault may never happen when the stream
//! ends first) goes into the shared [`Journal`], from which the test knows what each end must see.
//!
//! # Layout
//! - [`Rng`]: splitmix64, the only source of choices.
//! - [`Plan`] / [`Chaos`]: one connection's lengths, pattern offsets and the chaos of each [`Hop`].
//! - [`ChaosProxy`]: a listener (a [`Backend`]) that relays each connection to the next hop through a
//!   poll(2) loop, [`Relay`], applying the chaos; [`Did`] is what it records.
//! - [`exchange`]: one end (client or backend) sending its stream while it checks the one it
//!   receives, both at once; [`client`] and [`backend`] wrap it.
//!
//! Connections name themselves: the client first sends its id (8 bytes, big-endian), each proxy reads
//! it, passes it on and looks the plan up by it, and the backend reads it last. Every socket is
//! non-blocking under a deadline (or blocking with the harness's timeouts), so every thread ends by
//! itself.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

use super::{
    classify, loopback4, pattern, set_linger0, set_timeouts, Backend, End, PatternChecker,
    IO_TIMEOUT,
};

/// The longest any one connection may take, end to end; past it an end reports `TimedOut` and a
/// proxy resets its two sockets, so nothing outlives a failed run by more than this.
pub const CONN_DEADLINE: Duration = Duration::from_secs(90);

/// Bytes one read or write moves at most (a delayed connection moves its own, smaller, chunk).
const CHUNK: usize = 64 * 1024;

/// splitmix64 (Steele, Lea and Flood): tiny, and any seed, 0 included, gives a full-period stream.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// A direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client -> edgefwd -> backend.
    Up,
    /// Backend -> edgefwd -> client.
    Down,
}

/// Where a chaos proxy sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hop {
    /// Between the client and edgefwd.
    Front,
    /// Between edgefwd and the backend.
    Back,
}

/// What one proxy does to one connection. Byte offsets count a direction's payload, after the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chaos {
    /// Relays both ways untouched.
    Pass,
    /// Relays `chunk` bytes at a time both ways and waits `pause` after each.
    Delay { chunk: usize, pause: Duration },
    /// Writes `bytes` of each direction from offset `from` on one byte per write(2) (TCP_NODELAY: one
    /// segment each), and the rest normally: at the start of a stream, or in mid-stream when the rings
    /// may hold bytes already.
    Fragment { from: u64, bytes: u64 },
    /// Stops relaying `dir` for `hold` once `after` bytes went through, then resumes.
    Stall {
        dir: Dir,
        after: u64,
        hold: Duration,
    },
    /// After `after` bytes of `dir`, `shutdown(Write)` toward that direction's next hop; the rest of
    /// `dir` is read and dropped, the other direction relayed on.
    HalfClose { dir: Dir, after: u64 },
    /// After `after` bytes of `dir`, closes both sockets with SO_LINGER 0 (RST both ways).
    Reset { dir: Dir, after: u64 },
}

impl Chaos {
    /// Draws one: a third untouched, the rest spread over the five faults. An offset is always inside
    /// the direction's stream (`lens`: up, down), so the fault can happen.
    fn draw(rng: &mut Rng, lens: (u64, u64)) -> Chaos {
        let dir = if rng.next_u64() % 2 == 0 {
            Dir::Up
        } else {
            Dir::Down
        };
        let len = match dir {
            Dir::Up => lens.0,
            Dir::Down => lens.1,
        };
        let after = rng.range(1, len - 1);
        // Half the fragments start the stream, half come in mid-stream.
        let fragment_from = match rng.next_u64() % 2 {
            0 => 0,
            _ => rng.range(0, lens.0.min(lens.1) / 2),
        };
        match rng.next_u64() % 15 {
            0..=4 => Chaos::Pass,
            // At most a few seconds of pauses on the longest stream.
            5 | 6 => Chaos::Delay {
                chunk: rng.range(4 * 1024, 32 * 1024) as usize,
                pause: rng.millis(1, 3),
            },
            7 | 8 => Chaos::Fragment {
                from: fragment_from,
                bytes: rng.range(1024, 16 * 1024),
            },
            9 | 10 => Chaos::Stall {
                dir,
                after,
                hold: rng.millis(1000, 3000),
            },
            11 | 12 => Chaos::HalfClose { dir, after },
            _ => Chaos::Reset { dir, after },
        }
    }
}

/// Stream lengths a run draws from, in bytes: most in `[min, max]`, one in ten in `[max, big]`.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub min: u64,
    pub max: u64,
    pub big: u64,
}

/// One connection's script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub id: u64,
    /// Bytes the client sends (after its id) and the backend sends.
    pub up_len: u64,
    pub down_len: u64,
    /// Offsets into the pattern where each direction's stream starts, so no two connections carry the
    /// same bytes.
    pub up_from: u64,
    pub down_from: u64,
    pub front: Chaos,
    pub back: Chaos,
    /// The backend answers only once the up stream has ended, as a request/response protocol would:
    /// a half-close that is not passed on leaves it waiting.
    pub reply_after_eof: bool,
    /// Both proxies shrink their socket buffers to [`TIGHT_BUFFER`], so their stalls and delays push
    /// back on edgefwd's rings within tens of KiB instead of after megabytes of kernel buffering.
    pub tight: bool,
}

/// SO_RCVBUF and SO_SNDBUF of a [`Plan::tight`] connection's proxy sockets (the kernel doubles it).
pub const TIGHT_BUFFER: usize = 16 * 1024;

impl Plan {
    /// Connection `id` of the run `seed`.
    pub fn draw(seed: u64, id: u64, sizes: Sizes) -> Plan {
        let mut rng = Rng::new(seed ^ id.wrapping_mul(0xa076_1d64_78bd_642f));
        // A tight connection moves a few KiB per round trip: it carries no big stream.
        let tight = rng.next_u64() % 6 == 0;
        let len = |rng: &mut Rng| {
            if rng.next_u64() % 10 == 0 && !tight {
                rng.range(sizes.max, sizes.big)
            } else {
                rng.range(sizes.min, sizes.max)
            }
        };
        let lens = (len(&mut rng), len(&mut rng));
        Plan {
            id,
            up_len: lens.0,
            down_len: lens.1,
            up_from: rng.next_u64() % super::PATTERN_PERIOD as u64,
            down_from: rng.next_u64() % super::PATTERN_PERIOD as u64,
            front: Chaos::draw(&mut rng, lens),
            back: Chaos::draw(&mut rng, lens),
            reply_after_eof: rng.next_u64() % 4 == 0,
            tight,
        }
    }

    /// A connection both proxies leave alone.
    pub fn benign(id: u64, len: u64) -> Plan {
        Plan {
            id,
            up_len: len,
            down_len: len,
            up_from: 0,
            down_from: 0,
            front: Chaos::Pass,
            back: Chaos::Pass,
            reply_after_eof: false,
            tight: false,
        }
    }

    pub fn chaos(&self, hop: Hop) -> Chaos {
        match hop {
            Hop::Front => self.front,
            Hop::Back => self.back,
        }
    }

    pub fn len(&self, dir: Dir) -> u64 {
        match dir {
            Dir::Up => self.up_len,
            Dir::Down => self.down_len,
        }
    }
}

/// Every connection's plan, by id.
pub type Plans = Arc<HashMap<u64, Plan>>;

/// What a proxy did to a connection, beyond relaying.
#[derive(Clone, Copy, Debug)]
pub enum Did {
    Stalled {
        dir: Dir,
        at: u64,
    },
    HalfClosed {
        dir: Dir,
        at: u64,
    },
    /// Its own planned reset.
    Reset {
        dir: Dir,
        at: u64,
        when: Instant,
    },
    /// A reset (or another socket error) from one side, passed on as a reset to the other.
    PassedReset {
        error: io::ErrorKind,
        when: Instant,
    },
    /// The connection outlived [`CONN_DEADLINE`]; both sockets were reset.
    TimedOut,
}

/// What the proxies did, by hop and connection id.
type Entries = HashMap<(Hop, u64), Vec<Did>>;

/// What each proxy did to each connection, keyed by hop and id.
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Entries>>);

/// Where one proxy writes what it does to one connection, at once: the test reads the journal as
/// soon as the ends have finished, while a proxy may still be draining the rest of a half-closed stream.
struct Log<'a> {
    journal: &'a Journal,
    hop: Hop,
    id: u64,
}

impl Log<'_> {
    fn push(&self, did: Did) {
        self.journal.record(self.hop, self.id, did);
    }

    /// Journals a socket error that ends the connection; it is passed on as a reset (true).
    fn passed_on(&self, error: io::Error) -> bool {
        self.push(Did::PassedReset {
            error: error.kind(),
            when: Instant::now(),
        });
        true
    }
}

impl Journal {
    fn record(&self, hop: Hop, id: u64, did: Did) {
        self.0
            .lock()
            .expect("journal mutex")
            .entry((hop, id))
            .or_default()
            .push(did);
    }

    /// Everything both proxies did to connection `id`, front first.
    pub fn of(&self, id: u64) -> Vec<(Hop, Did)> {
        let map = self.0.lock().expect("journal mutex");
        [Hop::Front, Hop::Back]
            .into_iter()
            .flat_map(|hop| {
                map.get(&(hop, id))
                    .into_iter()
                    .flatten()
                    .map(move |did| (hop, *did))
            })
            .collect()
    }
}

/// A chaos proxy on one hop: accepts on loopback, relays each connection to `next`.
pub struct ChaosProxy {
    listener: Backend,
}

impl ChaosProxy {
    pub fn start(hop: Hop, next: SocketAddr, plans: Plans, journal: Journal) -> ChaosProxy {
        let listener = Backend::spawn(loopback4(), move |inbound| {
            proxy_one(hop, inbound, next, &plans, &journal)
        });
        ChaosProxy { listener }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }
}

/// Reads the id, connects on, relays under the plan's chaos; a reset leaves both sockets with
/// SO_LINGER 0 so their close sends RST.
fn proxy_one(hop: Hop, mut inbound: TcpStream, next: SocketAddr, plans: &Plans, journal: &Journal) {
    let deadline = Instant::now() + CONN_DEADLINE;
    let mut id = [0u8; 8];
    if inbound.read_exact(&mut id).is_err() {
        // Reset before it named itself (an early reset on the other hop): nothing to relay.
        return;
    }
    let id = u64::from_be_bytes(id);
    let log = Log { journal, hop, id };
    let plan = plans.get(&id);
    let chaos = plan.map_or(Chaos::Pass, |plan| plan.chaos(hop));
    let tight = plan.is_some_and(|plan| plan.tight);
    if tight {
        // Best effort: a buffer the kernel refuses only makes the connection less tight.
        let _ = shrink_buffers(&SockRef::from(&inbound));
    }
    let outbound = match connect_on(next, tight) {
        Ok(s) => s,
        Err(error) => {
            log.passed_on(error);
            set_linger0(&inbound);
            return;
        }
    };
    set_timeouts(&outbound, IO_TIMEOUT);
    let reset = match (&outbound).write_all(&id.to_be_bytes()) {
        Ok(()) => Relay::new(chaos, log).run(&inbound, &outbound, deadline),
        Err(error) => log.passed_on(error),
    };
    if reset {
        set_linger0(&inbound);
        set_linger0(&outbound);
    }
}

/// A connection to the next hop, its buffers shrunk before the handshake when `tight` (the window is
/// agreed then).
fn connect_on(next: SocketAddr, tight: bool) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(next), Type::STREAM, None)?;
    if tight {
        shrink_buffers(&socket)?;
    }
    socket.connect_timeout(&next.into(), Duration::from_secs(10))?;
    Ok(socket.into())
}

fn shrink_buffers(socket: &Socket) -> io::Result<()> {
    socket.set_recv_buffer_size(TIGHT_BUFFER)?;
    socket.set_send_buffer_size(TIGHT_BUFFER)
}

/// One direction through the proxy.
#[derive(Debug)]
struct Flow {
    dir: Dir,
    /// Bytes read and not yet written: `buf[done..]`.
    buf: Vec<u8>,
    done: usize,
    /// Payload bytes written on.
    relayed: u64,
    /// The source sent its FIN.
    eof: bool,
    /// The destination was shut for writing (FIN passed on, or an early half-close).
    shut: bool,
    /// Half-closed early: what still arrives is read and dropped.
    discard: bool,
    /// No write before this instant (a delay or a stall).
    hold_until: Option<Instant>,
    /// The stall happened already.
    stalled: bool,
}

/// What one step of a flow came to.
enum Step {
    Progress,
    Idle,
    /// The planned reset is due.
    Reset,
}

impl Flow {
    fn new(dir: Dir) -> Flow {
        Flow {
            dir,
            buf: Vec::new(),
            done: 0,
            relayed: 0,
            eof: false,
            shut: false,
            discard: false,
            hold_until: None,
            stalled: false,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.done
    }

    fn finished(&self) -> bool {
        self.eof && self.pending() == 0 && self.shut
    }

    fn held(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|t| now < t)
    }

    fn wants_read(&self) -> bool {
        !self.eof && self.pending() == 0
    }

    /// Bytes to write and no hold. (A shut destination has none: the FIN goes after the last byte,
    /// and a half-close drops what was held.)
    fn wants_write(&self, now: Instant) -> bool {
        self.pending() > 0 && !self.held(now)
    }

    /// The offset of this direction's next fault under `chaos`, if one is still to come.
    fn fault_at(&self, chaos: Chaos) -> Option<u64> {
        match chaos {
            Chaos::Stall { dir, after, .. } if dir == self.dir && !self.stalled => Some(after),
            Chaos::HalfClose { dir, after } | Chaos::Reset { dir, after }
                if dir == self.dir && !self.discard =>
            {
                Some(after)
            }
            _ => None,
        }
    }

    /// Bytes the next write may take.
    fn write_limit(&self, chaos: Chaos) -> usize {
        let mut limit = self.pending() as u64;
        if let Some(at) = self.fault_at(chaos) {
            limit = limit.min(at - self.relayed);
        }
        if let Chaos::Fragment { from, bytes } = chaos {
            if self.relayed < from {
                limit = limit.min(from - self.relayed);
            } else if self.relayed < from + bytes {
                limit = limit.min(1);
            }
        }
        limit as usize
    }

    fn read_size(chaos: Chaos) -> usize {
        match chaos {
            Chaos::Delay { chunk, .. } => chunk,
            _ => CHUNK,
        }
    }

    /// Acts on a fault due at this offset, writes, reads, passes a FIN on: one of each at most.
    fn step(
        &mut self,
        src: &TcpStream,
        dst: &TcpStream,
        chaos: Chaos,
        log: &Log,
    ) -> io::Result<Step> {
        let now = Instant::now();
        if self.fault_at(chaos) == Some(self.relayed) {
            match chaos {
                Chaos::Stall { hold, .. } => {
                    self.stalled = true;
                    self.hold_until = Some(now + hold);
                    log.push(Did::Stalled {
                        dir: self.dir,
                        at: self.relayed,
                    });
                }
                Chaos::HalfClose { .. } => {
                    log.push(Did::HalfClosed {
                        dir: self.dir,
                        at: self.relayed,
                    });
                    dst.shutdown(Shutdown::Write)?;
                    self.shut = true;
                    self.discard = true;
                    self.buf.clear();
                    self.done = 0;
                }
                Chaos::Reset { .. } => {
                    log.push(Did::Reset {
                        dir: self.dir,
                        at: self.relayed,
                        when: now,
                    });
                    return Ok(Step::Reset);
                }
                _ => {}
            }
            return Ok(Step::Progress);
        }
        if self.wants_write(now) {
            let limit = self.write_limit(chaos);
            match (&*dst).write(&self.buf[self.done..self.done + limit]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.done += n;
                    self.relayed += n as u64;
                    if self.pending() == 0 {
                        self.buf.clear();
                        self.done = 0;
                        if let Chaos::Delay { pause, .. } = chaos {
                            self.hold_until = Some(now + pause);
                        }
                    }
                    return Ok(Step::Progress);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if self.wants_read() {
            let mut buf = vec![0u8; Self::read_size(chaos)];
            match (&*src).read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(_) if self.discard => {}
                Ok(n) => {
                    buf.truncate(n);
                    self.buf = buf;
                    self.done = 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Idle),
                Err(e) => return Err(e),
            }
            return Ok(Step::Progress);
        }
        if self.eof && self.pending() == 0 && !self.shut {
            dst.shutdown(Shutdown::Write)?;
            self.shut = true;
            return Ok(Step::Progress);
        }
        Ok(Step::Idle)
    }
}

/// Both directions of one proxied connection, driven by poll(2) (level-triggered: the simplest loop
/// that cannot miss a wakeup).
struct Relay<'a> {
    chaos: Chaos,
    up: Flow,
    down: Flow,
    log: Log<'a>,
}

impl<'a> Relay<'a> {
    fn new(chaos: Chaos, log: Log<'a>) -> Relay<'a> {
        Relay {
            chaos,
            up: Flow::new(Dir::Up),
            down: Flow::new(Dir::Down),
            log,
        }
    }

    /// Relays until both directions end (false: the sockets may close with FIN) or a reset is due
    /// (true: the caller closes both with RST): the planned one, one passed on, or the deadline's.
    /// Everything it does beyond relaying is journaled as it happens.
    fn run(&mut self, inbound: &TcpStream, outbound: &TcpStream, deadline: Instant) -> bool {
        let setup = [inbound, outbound]
            .into_iter()
            .try_for_each(|s| s.set_nonblocking(true).and_then(|()| s.set_nodelay(true)));
        if let Err(error) = setup {
            return self.log.passed_on(error);
        }
        loop {
            let mut progress = false;
            for (flow, src, dst) in [
                (&mut self.up, inbound, outbound),
                (&mut self.down, outbound, inbound),
            ] {
                match flow.step(src, dst, self.chaos, &self.log) {
                    Ok(Step::Progress) => progress = true,
                    Ok(Step::Idle) => {}
                    Ok(Step::Reset) => return true,
                    Err(error) => return self.log.passed_on(error),
                }
            }
            if self.up.finished() && self.down.finished() {
                return false;
            }
            if progress {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                self.log.push(Did::TimedOut);
                return true;
            }
            match self.wait(inbound, outbound, now, deadline) {
                Ok(None) => {}
                Ok(Some(error)) | Err(error) => return self.log.passed_on(error),
            }
        }
    }

    /// Sleeps in poll(2) until a socket can do what a flow wants, a hold ends, or the deadline; returns
    /// a socket's pending error (a reset that arrived while nothing read it).
    fn wait(
        &self,
        inbound: &TcpStream,
        outbound: &TcpStream,
        now: Instant,
        deadline: Instant,
    ) -> io::Result<Option<io::Error>> {
        let interest = |reader: &Flow, writer: &Flow| {
            let mut events = 0;
            if reader.wants_read() {
                events |= libc::POLLIN;
            }
            if writer.wants_write(now) {
                events |= libc::POLLOUT;
            }
            events
        };
        let mut fds = [
            libc::pollfd {
                fd: inbound.as_raw_fd(),
                events: interest(&self.up, &self.down),
                revents: 0,
            },
            libc::pollfd {
                fd: outbound.as_raw_fd(),
                events: interest(&self.down, &self.up),
                revents: 0,
            },
        ];
        let wake = [self.up.hold_until, self.down.hold_until]
            .into_iter()
            .flatten()
            .filter(|&t| t > now)
            .chain([deadline])
            .min()
            .unwrap_or(deadline);
        let timeout = (wake - now).as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: `fds` is a live array of two initialised pollfd structs and its length is passed with
        // it; poll(2) only writes their `revents`. The fds are open: both streams are borrowed.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if rc < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(None),
                _ => Err(error),
            };
        }
        for (fd, stream) in fds.iter().zip([inbound, outbound]) {
            if fd.revents & libc::POLLERR != 0 {
                if let Some(error) = stream.take_error()? {
                    return Ok(Some(error));
                }
            }
        }
        // POLLHUP is reported whatever the interest: a socket shut both ways wakes every poll, so a
        // turn that found nothing to do waits a little instead of spinning through a stall.
        if fds.iter().any(|fd| fd.revents & libc::POLLHUP != 0) {
            thread::sleep(Duration::from_millis(2));
        }
        Ok(None)
    }
}

/// What one end (client or backend) saw.
#[derive(Clone, Debug)]
pub struct Side {
    /// Bytes received, checked against the pattern.
    pub received: u64,
    /// The first received offset that differed from the pattern.
    pub mismatch: Option<u64>,
    /// How its receiving ended.
    pub end: End,
    /// Bytes its peer's side of the socket accepted.
    pub sent: u64,
    /// Why sending stopped early, if it did.
    pub send_error: Option<io::ErrorKind>,
    /// When it had finished both ways.
    pub ended: Instant,
}

/// Sends `send_len` pattern bytes from `send_from` then `shutdown(Write)`, while reading until EOF or
/// an error and checking every byte against the pattern from `recv_from`; both at once (or, with
/// `after_eof`, the sending once the receiving has met its EOF), until `deadline`. A receive that fails
/// stops the sending too (the connection is gone); a send that fails lets the receive run to its end.
pub fn exchange(
    s: &TcpStream,
    send_from: u64,
    send_len: u64,
    recv_from: u64,
    after_eof: bool,
    deadline: Instant,
) -> Side {
    let mut checker = PatternChecker {
        offset: recv_from,
        mismatch: None,
    };
    let mut sent = 0u64;
    let mut send_error = None;
    let mut sending = true;
    let mut end = None;
    let mut buf = vec![0u8; CHUNK];
    if let Err(e) = s.set_nonblocking(true) {
        send_error = Some(e.kind());
        end = Some(classify(&e));
    }
    while sending || end.is_none() {
        let mut progress = false;
        let may_send = sending && (!after_eof || end == Some(End::Eof));
        if may_send {
            progress = true;
            if sent == send_len {
                sending = false;
                if let Err(e) = s.shutdown(Shutdown::Write) {
                    send_error = Some(e.kind());
                }
            } else {
                let n = (send_len - sent).min(CHUNK as u64) as usize;
                match (&*s).write(pattern(send_from + sent, n)) {
                    Ok(n) => sent += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => progress = false,
                    Err(e) => {
                        // The first call after an RST fails with ECONNRESET and takes the socket's
                        // error; a read would then find only the end of the stream. The reset is
                        // what this end saw.
                        if classify(&e) == End::Reset {
                            end.get_or_insert(End::Reset);
                        }
                        send_error = Some(e.kind());
                        sending = false;
                    }
                }
            }
        }
        if end.is_none() {
            let before = checker.offset;
            match (&*s).read(&mut buf) {
                Ok(0) => end = Some(End::Eof),
                Ok(n) => checker.check(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    end = Some(classify(&e));
                    sending = false;
                }
            }
            progress |= end.is_some() || checker.offset != before;
        }
        let may_send = sending && (!after_eof || end == Some(End::Eof));
        if !progress && (sending || end.is_none()) {
            if Instant::now() >= deadline {
                end.get_or_insert(End::TimedOut);
                send_error.get_or_insert(io::ErrorKind::TimedOut);
                break;
            }
            wait_one(s, may_send, end.is_none(), deadline);
        }
    }
    Side {
        received: checker.offset - recv_from,
        mismatch: checker.mismatch.map(|at| at - recv_from),
        end: end.unwrap_or(End::TimedOut),
        sent,
        send_error,
        ended: Instant::now(),
    }
}

/// poll(2) on one socket for what its end still wants, at most 100 ms.
fn wait_one(s: &TcpStream, sending: bool, receiving: bool, deadline: Instant) {
    let mut events = 0;
    if sending {
        events |= libc::POLLOUT;
    }
    if receiving {
        events |= libc::POLLIN;
    }
    let mut fd = libc::pollfd {
        fd: s.as_raw_fd(),
        events,
        revents: 0,
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = left.as_millis().clamp(1, 100) as libc::c_int;
    // SAFETY: one initialised pollfd, count 1; poll(2) writes only its `revents`; the fd is open for
    // as long as `s` is borrowed.
    unsafe { libc::poll(&mut fd, 1, timeout) };
}

/// The client of connection `plan.id`: connects to `front`, names itself, exchanges.
pub fn client(front: SocketAddr, plan: Plan) -> Result<Side, String> {
    let deadline = Instant::now() + CONN_DEADLINE;
    let mut s = TcpStream::connect_timeout(&front, Duration::from_secs(10))
        .map_err(|e| format!("connect {front}: {e}"))?;
    set_timeouts(&s, IO_TIMEOUT);
    s.write_all(&plan.id.to_be_bytes())
        .map_err(|e| format!("sending the id: {e}"))?;
    Ok(exchange(
        &s,
        plan.up_from,
        plan.up_len,
        plan.down_from,
        false,
        deadline,
    ))
}

/// The backend: each connection names itself, then sends its plan's down stream while checking the
/// up stream. Every accepted connection reports once: `Some((id, what it saw))`, or `None` when it
/// ended before naming a planned connection (reset on the way).
pub fn backend(plans: Plans) -> (Backend, Receiver<Option<(u64, Side)>>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let b = Backend::spawn(loopback4(), move |mut s| {
        let deadline = Instant::now() + CONN_DEADLINE;
        let mut id = [0u8; 8];
        let plan = match s.read_exact(&mut id) {
            Ok(()) => plans.get(&u64::from_be_bytes(id)),
            Err(_) => None,
        };
        let report = plan.map(|plan| {
            let side = exchange(
                &s,
                plan.down_from,
                plan.down_len,
                plan.up_from,
                plan.reply_after_eof,
                deadline,
            );
            (plan.id, side)
        });
        let _ = tx.lock().expect("report channel").send(report);
    });
    (b, rx)
}
