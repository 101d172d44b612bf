//! One direction of a pair: bytes flow `src -> ring -> dst`, and EOF flows as `shutdown(Write)` (or as the
//! close that follows at once, for the last direction of a pair to finish).
//!
//! Each direction is its own small state machine:
//!
//! | state      | event                                   | next       | action                         |
//! |------------|-----------------------------------------|------------|--------------------------------|
//! | `Open`     | read returned bytes                     | `Open`     | hold them in the ring          |
//! | `Open`     | read returned 0 (peer's FIN)            | `Draining` | stop reading                   |
//! | `Draining` | ring empty                              | `Closed`   | `shutdown(Write)` on `dst` [^1] |
//! | any        | read or write error                     | (fault)    | the pair resets both sides     |
//!
//! [^1]: except for the last direction of a pair to finish, whose FIN the pair's close sends
//! ([`Direction::pump`]'s `last`).
//!
//! The edge-triggered rules this code follows:
//! - Read until WouldBlock (or a short read, see [`Readiness::after_short_read`]), never once per event:
//!   the kernel will not repeat an edge for data we left in the queue.
//! - When the ring is full the read stops *without* clearing `readable`. No new edge will come for data
//!   already queued, so it is the write freeing space that lets the same loop read again.
//! - But new data arriving on that socket does raise edges, and each would wake the loop for nothing.
//!   Once one such edge has come while [`Direction::reads_blocked`] holds, the pair registers the socket
//!   without read interest ([`crate::session::pair::Pair::registration_change`]) and takes it back once a read
//!   finds the socket drained ([`Direction::awaits_readable`]).
//! - A write is attempted only while bytes are held; the `writable` bit is cleared only by WouldBlock or
//!   a short write, so a pump blocked on a slow reader resumes on the next EPOLLOUT edge.
//! - A per-wakeup byte budget bounds how long one busy pair may hold the loop; the caller re-queues a pair
//!   that still had work when its budget ran out.
//! - With `--splice` the ring is replaced by a pipe and bytes never enter user space ([`crate::datapath::splice`]);
//!   the states, half-close, reset and backpressure rules are the same on both paths. `--splice auto`
//!   (the default) starts on the ring and moves to a pipe once a read fills the ring: the pipe is used
//!   only after the ring has drained, so bytes keep their order across the switch.

use std::io;

use log::trace;

use crate::config::Splice;
use crate::datapath::net::IoOutcome;
use crate::datapath::readiness::Readiness;
use crate::datapath::ring::{BufPool, Ring};
use crate::datapath::splice::{refused_for_good, Pipe, PipePool};
use crate::datapath::stream::Stream;
use crate::observe::metrics::Metrics;
use crate::way::Way;

/// What a pair borrows while it runs: its route's ring storage and pipes, and the reactor's counters.
#[derive(Debug)]
pub struct Shared<'a> {
    pub pool: &'a mut BufPool,
    /// The route's pipes for `--splice`; `None` when splicing is off.
    pub pipes: Option<&'a mut PipePool>,
    pub(crate) metrics: &'a mut Metrics,
}

impl Shared<'_> {
    /// A direction wanted a pipe and goes on through its ring instead: counted and logged, never silent.
    /// `lasting` when splice cannot work for these fds at all; otherwise there was no pipe to be had
    /// (no slot in the process's fd budget, EMFILE, pipe pages), and the direction tries again later.
    fn splice_fallback(&mut self, err: &io::Error, lasting: bool) {
        let total = if lasting {
            self.metrics.splice_fallbacks += 1;
            self.metrics.splice_fallbacks
        } else {
            self.metrics.pipe_shortages += 1;
            self.metrics.pipe_shortages
        };
        if let Some(pipes) = self.pipes.as_deref_mut() {
            pipes.warn_fallback(err, lasting, total);
        }
    }
}

/// Where a direction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading from `src` and writing to `dst`.
    Open,
    /// `src` sent FIN; the ring still holds bytes for `dst`.
    Draining,
    /// FIN passed on with `shutdown(Write)`, or left to the pair's close if this direction was the last
    /// to finish: this direction is finished.
    Closed,
}

/// Which socket a fault came from, so the pair can name the cause (client-reset vs upstream-reset).
#[derive(Debug)]
pub enum Fault {
    Src(io::Error),
    Dst(io::Error),
}

/// Byte and syscall counts for one direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// A socket and its cached readiness, as one end of a direction.
pub struct End<'a, S> {
    pub stream: &'a mut S,
    pub ready: &'a mut Readiness,
}

/// One direction's buffer and state.
#[derive(Debug)]
pub struct Direction {
    /// Which way this direction moves bytes (for traces and per-direction counters).
    way: Way,
    state: State,
    ring: Ring,
    /// Splice this direction (until a fallback turns it off).
    zero_copy: bool,
    /// `--splice auto`: set `zero_copy` once a read fills the ring.
    auto_splice: bool,
    /// Bytes that go to `dst` before anything read from `src`: a PROXY protocol header, the bytes a
    /// client pipelined after its CONNECT head, the `200 Connection Established` line. They are moved
    /// into the ring as room allows, and nothing is read from `src` until they all have been.
    preamble: Vec<u8>,
    /// The splice buffer, present only while it holds data.
    pipe: Option<Pipe>,
    /// A splice into the pipe returned EAGAIN while the pipe held data: treat the pipe as full until a
    /// splice out frees room (see [`crate::datapath::splice`] for why EAGAIN is ambiguous).
    pipe_full: bool,
    counters: Counters,
}

impl Direction {
    /// A direction that splices from the start (`Always`), once its ring fills (`Auto`), or never.
    pub(crate) fn new(way: Way, splice: Splice) -> Direction {
        Direction {
            way,
            state: State::Open,
            ring: Ring::new(),
            zero_copy: splice == Splice::Always,
            auto_splice: splice == Splice::Auto,
            preamble: Vec::new(),
            pipe: None,
            pipe_full: false,
            counters: Counters::default(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// True once this direction has finished (its FIN passed on, or left to the pair's close).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// True once `src` has sent FIN (whether or not the ring has drained).
    pub fn saw_eof(&self) -> bool {
        self.state != State::Open
    }

    /// Bytes read from `src` and not yet written to `dst`.
    pub fn held(&self) -> usize {
        self.ring.len() + self.pipe.as_ref().map_or(0, Pipe::len)
    }

    /// Bytes not yet written to `dst`, the preamble's included.
    pub fn undelivered(&self) -> usize {
        self.held() + self.preamble.len()
    }

    /// Forgets a queued preamble (the pair is refusing its client instead).
    pub fn drop_preamble(&mut self) {
        self.preamble = Vec::new();
    }

    /// Queues `bytes` to be written to `dst` before anything read from `src` (see `preamble`).
    pub fn push_preamble(&mut self, bytes: &[u8]) {
        self.preamble.extend_from_slice(bytes);
    }

    /// True when a read could not store a byte: backpressure. This must be checked before every read:
    /// a read (or splice) offered zero bytes of room returns 0, which is indistinguishable from EOF.
    fn is_full(&self, pool: &BufPool) -> bool {
        self.pipe_full
            || self.pipe.as_ref().is_some_and(|pipe| pipe.room() == 0)
            || self.ring.is_full(pool)
    }

    /// Returns the ring's storage and the pipe to their pools (teardown). A pipe still holding bytes
    /// is closed instead: its contents belong to a dead connection.
    pub fn release(&mut self, shared: &mut Shared<'_>) {
        self.ring.clear(shared.pool);
        if let (Some(pipe), Some(pipes)) = (self.pipe.take(), shared.pipes.as_deref_mut()) {
            if pipe.is_empty() {
                pipes.give(pipe);
            } else {
                pipes.discard(pipe);
            }
        }
    }

    /// The single place a direction changes state, so a trace shows every transition.
    fn set_state(&mut self, conn: u32, next: State) {
        trace!(
            "conn={conn} {} {:?} => {:?}",
            self.way.label(),
            self.state,
            next
        );
        self.state = next;
    }

    /// Backpressure: the source has data the full ring (or pipe) cannot take.
    fn stalled(&self, src_ready: &Readiness, pool: &BufPool) -> bool {
        self.state == State::Open && src_ready.readable && self.is_full(pool)
    }

    /// Backpressure: `src` is known to hold data (or its FIN) that this direction cannot take now, because
    /// its ring or pipe is full, or a preamble or the ring must drain before the next read. Until a write
    /// frees room, an EPOLLIN edge on `src` would tell the pair nothing it does not know.
    pub fn reads_blocked(&self, src_ready: &Readiness, pool: &BufPool) -> bool {
        self.state == State::Open && src_ready.readable && (self.is_full(pool) || !self.may_read())
    }

    /// This direction still reads `src` and has found it drained: only an EPOLLIN edge can say when to
    /// read again.
    pub fn awaits_readable(&self, src_ready: &Readiness) -> bool {
        self.state == State::Open && !src_ready.readable
    }

    /// True if a call to [`pump`](Self::pump) could make progress now, given budget.
    pub fn has_work(&self, src_ready: &Readiness, dst_ready: &Readiness, pool: &BufPool) -> bool {
        let can_write = self.held() > 0 && dst_ready.writable;
        let can_read = src_ready.readable && self.may_read() && !self.is_full(pool);
        let can_feed = !self.preamble.is_empty() && !self.ring.is_full(pool);
        can_write || can_read || can_feed
    }

    /// Moves as many bytes as readiness and `budget` allow. Returns whether anything happened (bytes moved
    /// or a state changed); `budget` is decreased by the bytes read. `last` says the other direction has
    /// closed already: the pair closes both sockets as soon as this one closes (see
    /// `shutdown_step`).
    pub fn pump<S: Stream, D: Stream>(
        &mut self,
        conn: u32,
        mut src: End<'_, S>,
        mut dst: End<'_, D>,
        shared: &mut Shared<'_>,
        budget: &mut usize,
        last: bool,
    ) -> Result<bool, Fault> {
        let mut progressed = false;
        loop {
            let fed = self.preamble_step(shared.pool);
            let wrote = self.write_step(&mut dst, shared)?;
            let shut = self.shutdown_step(conn, &mut dst, last)?;
            let read = self.read_step(conn, &mut src, shared, budget)?;
            if !(fed || wrote || shut || read) {
                if self.stalled(src.ready, shared.pool) {
                    shared.metrics.reads_ring_full += 1;
                }
                self.recycle_pipe(src.ready, shared);
                return Ok(progressed);
            }
            progressed = true;
        }
    }

    /// Moves as much of the preamble into the ring as fits. The ring, not a pipe, carries it even with
    /// `--splice`; [`Self::read_step`] waits for the ring to empty before splicing, so the order holds.
    fn preamble_step(&mut self, pool: &mut BufPool) -> bool {
        if self.preamble.is_empty() || self.ring.is_full(pool) {
            return false;
        }
        let mut rest = self.preamble.as_slice();
        let moved = self.ring.read_from(&mut rest, pool).unwrap_or(0);
        self.preamble.drain(..moved);
        moved > 0
    }

    /// Writes held bytes while `dst` is writable.
    fn write_step<D: Stream>(
        &mut self,
        dst: &mut End<'_, D>,
        shared: &mut Shared<'_>,
    ) -> Result<bool, Fault> {
        let offered = self.held();
        if offered == 0 || !dst.ready.writable {
            return Ok(false);
        }
        self.counters.writes += 1;
        let io = &mut *shared.metrics;
        io.writes += 1;
        // Pipe bytes are always newer than ring bytes (`may_read`), so a pipe with bytes means an empty
        // ring. An empty pipe (just taken by `maybe_switch_to_splice`) leaves the ring to drain first.
        let result = match self.pipe.as_mut() {
            Some(pipe) if !pipe.is_empty() => pipe.splice_out(dst.stream.as_raw_fd()),
            _ => self.ring.write_to(dst.stream, shared.pool),
        };
        match IoOutcome::from(result) {
            IoOutcome::Done(n) => {
                self.counters.bytes += n as u64;
                io.bytes[self.way] += n as u64;
                io.write_sizes.record(n as u64);
                if n < offered {
                    // The send buffer filled up: EPOLLOUT will fire when it drains.
                    dst.ready.writable = false;
                    io.writes_short += 1;
                }
                self.pipe_full = false;
                Ok(true)
            }
            IoOutcome::WouldBlock => {
                dst.ready.writable = false;
                io.writes_would_block += 1;
                Ok(false)
            }
            IoOutcome::Interrupted => Ok(true),
            IoOutcome::Eof => Err(Fault::Dst(io::ErrorKind::WriteZero.into())),
            IoOutcome::Failed(err) => Err(Fault::Dst(err)),
        }
    }

    /// When a pump run ends, an emptied pipe goes back to the pool, so an idle direction holds no pipe
    /// fds. It stays while the direction is not idle: a direction that has just switched holds an empty
    /// pipe while its ring drains ahead of it, and one that stopped on its byte budget with `src` still
    /// readable (it is queued to run again) will splice into it next. Given back then, another pair could
    /// take the route's last pipe meanwhile, and the switch would end in a shortage.
    fn recycle_pipe(&mut self, src_ready: &Readiness, shared: &mut Shared<'_>) {
        if !self.ring.is_empty() || (self.state == State::Open && src_ready.readable) {
            return;
        }
        if let Some(pipe) = self.pipe.take_if(|pipe| pipe.is_empty()) {
            if let Some(pipes) = shared.pipes.as_deref_mut() {
                pipes.give(pipe);
            }
        }
    }

    /// Passes EOF on once everything read before it has been written. When this is the `last` direction
    /// to close, the pair closes `dst` right after, and close(2) sends the same FIN behind the same queued
    /// bytes: the shutdown(2) is skipped (one syscall fewer per connection). close(2) would send RST
    /// instead if `dst` still had unread bytes, but `dst` is the other direction's source, which has
    /// returned EOF, and nothing can follow a FIN. A `dst` already reported failed still gets the
    /// shutdown: its error (ENOTCONN once reset) is what names the close a reset rather than a clean end.
    fn shutdown_step<D: Stream>(
        &mut self,
        conn: u32,
        dst: &mut End<'_, D>,
        last: bool,
    ) -> Result<bool, Fault> {
        if self.state != State::Draining || self.held() > 0 {
            return Ok(false);
        }
        if !last || dst.ready.failed {
            dst.stream.shutdown_write().map_err(Fault::Dst)?;
        }
        self.set_state(conn, State::Closed);
        Ok(true)
    }

    /// Whether `src` may be read at all now. Not after EOF; not while a preamble waits, since it goes
    /// first; and not while a splicing direction still holds bytes in its ring (the preamble, or what was
    /// read before `--splice auto` switched): a direction writes its pipe before its ring, so the pipe
    /// may fill only once the ring has drained, or bytes would be reordered.
    fn may_read(&self) -> bool {
        self.state == State::Open
            && self.preamble.is_empty()
            && (!self.zero_copy || self.ring.is_empty())
    }

    /// `--splice auto`: a read that fills the ring shows a stream with more queued than a ring holds,
    /// not a small request; from now on this direction splices (after its ring drains, see
    /// [`Self::may_read`]). Request/response traffic never fills a ring and keeps the cheaper ring path.
    /// The switch happens with a pipe in hand: when the route has none to give (no fd slot to spare, EMFILE),
    /// the direction stays on its ring and asks again the next time a read fills it.
    fn maybe_switch_to_splice(&mut self, shared: &mut Shared<'_>) {
        if !self.auto_splice || !self.ring.is_full(shared.pool) {
            return;
        }
        let taken = match (self.pipe.is_some(), shared.pipes.as_deref_mut()) {
            (true, _) => Ok(()),
            (false, Some(pipes)) => pipes.take().map(|pipe| self.pipe = Some(pipe)),
            (false, None) => Err(io::ErrorKind::Unsupported.into()),
        };
        match taken {
            Ok(()) => {
                self.auto_splice = false;
                self.zero_copy = true;
                shared.metrics.splice_switches += 1;
                trace!(
                    "{} switches to splice: a read filled its ring",
                    self.way.label()
                );
            }
            Err(err) => {
                let lasting = refused_for_good(&err);
                shared.splice_fallback(&err, lasting);
                self.auto_splice = !lasting;
            }
        }
    }

    /// Reads into the ring (or pipe) while `src` is readable, there is room and budget remains.
    fn read_step<S: Stream>(
        &mut self,
        conn: u32,
        src: &mut End<'_, S>,
        shared: &mut Shared<'_>,
        budget: &mut usize,
    ) -> Result<bool, Fault> {
        if !src.ready.readable || *budget == 0 || !self.may_read() {
            return Ok(false);
        }
        if self.is_full(shared.pool) {
            // Backpressure. `readable` stays set: the data is still queued and no new edge will say so.
            return Ok(false);
        }
        self.counters.reads += 1;
        shared.metrics.reads += 1;
        let (result, short_read_drains) = self.read_into_buffer(src.stream, shared);
        let io = &mut *shared.metrics;
        match IoOutcome::from(result) {
            IoOutcome::Done(n) => {
                *budget = budget.saturating_sub(n);
                io.read_sizes.record(n as u64);
                if short_read_drains.is_some_and(|room| n < room) {
                    io.reads_short += 1;
                    src.ready.after_short_read();
                }
                self.maybe_switch_to_splice(shared);
                Ok(true)
            }
            IoOutcome::Eof => {
                io.reads_eof += 1;
                self.set_state(conn, State::Draining);
                Ok(true)
            }
            IoOutcome::WouldBlock if self.held() > 0 && self.zero_copy => {
                // Splice's EAGAIN with data in the pipe: the pipe is out of slots, the socket may
                // still hold data. Flush first; `readable` stays set.
                self.pipe_full = true;
                Ok(false)
            }
            IoOutcome::WouldBlock => {
                src.ready.readable = false;
                io.reads_would_block += 1;
                Ok(false)
            }
            IoOutcome::Interrupted => Ok(true),
            IoOutcome::Failed(err) => Err(Fault::Src(err)),
        }
    }

    /// One read into whichever buffer this direction uses. The second value is the room offered when a
    /// short read proves the socket drained (ring path); `None` for splice, where it proves nothing.
    fn read_into_buffer<S: Stream>(
        &mut self,
        src: &mut S,
        shared: &mut Shared<'_>,
    ) -> (io::Result<usize>, Option<usize>) {
        if self.zero_copy {
            match self.splice_in(src, shared) {
                Ok(result) => return (result, None),
                Err(err) => {
                    // With no pipe to be had now, an `auto` or `always` direction carries on through
                    // its ring and asks again when a read next fills it (`maybe_switch_to_splice`):
                    // one in-memory check, or one failed pipe2, per full ring while pipes are short.
                    let lasting = refused_for_good(&err);
                    shared.splice_fallback(&err, lasting);
                    self.zero_copy = false;
                    self.auto_splice = !lasting;
                }
            }
        }
        let room = shared.pool.buffer_size() - self.ring.len();
        (self.ring.read_from(src, shared.pool), Some(room))
    }

    /// Splices from `src` into the pipe, taking one from the pool if needed. The outer `Err` means
    /// splicing is unavailable here (no pipe could be made, or the kernel refuses splice for these fds)
    /// and nothing was read: the caller falls back to the ring.
    fn splice_in<S: Stream>(
        &mut self,
        src: &mut S,
        shared: &mut Shared<'_>,
    ) -> io::Result<io::Result<usize>> {
        let pipe = match self.pipe.as_mut() {
            Some(pipe) => pipe,
            None => {
                let pipes = shared
                    .pipes
                    .as_deref_mut()
                    .ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))?;
                self.pipe.insert(pipes.take()?)
            }
        };
        let result = pipe.splice_in(src.as_raw_fd());
        match &result {
            Err(err) if pipe.is_empty() && refused_for_good(err) => {
                Err(io::Error::new(err.kind(), err.to_string()))
            }
            _ => Ok(result),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The state machine over real non-blocking Unix socket pairs: `a` writes into `src`, the pump moves
    //! bytes to `dst`, and `b` reads them out; and over scripted streams ([`Scripted`]), whose every
    //! syscall returns what the test says, for the edge-triggered traps.
    use super::*;
    use crate::datapath::budget::FdBudget;
    use crate::datapath::stream::script::{Incoming, Outgoing, Scripted};
    use mio::net::UnixStream;
    use std::io::{Read, Write};
    use std::net::Shutdown;

    /// A direction between two streams, and the peers that feed `src` and read `dst` (for a scripted
    /// stream, a second handle on the same script).
    struct Rig<S = UnixStream> {
        dir: Direction,
        src: S,
        dst: S,
        peer_src: S,
        peer_dst: S,
        src_ready: Readiness,
        dst_ready: Readiness,
        pool: BufPool,
        pipes: Option<PipePool>,
        metrics: Metrics,
    }

    /// Readable and writable, as a connected socket's first events leave it.
    const READY: Readiness = Readiness {
        readable: true,
        writable: true,
        read_closed: false,
        failed: false,
    };

    fn rig_over<S>(buffer: usize, (peer_src, src): (S, S), (dst, peer_dst): (S, S)) -> Rig<S> {
        Rig {
            dir: Direction::new(Way::ClientToUpstream, Splice::Off),
            src,
            dst,
            peer_src,
            peer_dst,
            src_ready: READY,
            dst_ready: READY,
            pool: BufPool::new(buffer),
            pipes: None,
            metrics: Metrics::default(),
        }
    }

    fn rig(buffer: usize) -> Rig {
        let src = UnixStream::pair().expect("pair");
        let dst = UnixStream::pair().expect("pair");
        rig_over(buffer, src, dst)
    }

    /// A rig over scripted streams (no splicing: they have no fd). Nothing is scripted yet: every read
    /// and write says WouldBlock.
    fn scripted(buffer: usize) -> Rig<Scripted> {
        let (src, dst) = (Scripted::default(), Scripted::default());
        rig_over(buffer, (src.clone(), src), (dst.clone(), dst))
    }

    /// A 1 KiB rig whose source peer has sent `data` and then its FIN, with the FIN already reported.
    fn rig_at_eof(data: &[u8]) -> Rig {
        let mut rig = rig(1024);
        rig.peer_src.write_all(data).expect("write");
        rig.peer_src.shutdown(Shutdown::Write).expect("shutdown");
        rig.src_ready.read_closed = true;
        rig
    }

    impl<S: Stream> Rig<S> {
        fn pump(&mut self, budget: usize) -> Result<bool, Fault> {
            self.pump_as(budget, false)
        }

        fn pump_as(&mut self, budget: usize, last: bool) -> Result<bool, Fault> {
            let mut budget = budget;
            self.dir.pump(
                1,
                End {
                    stream: &mut self.src,
                    ready: &mut self.src_ready,
                },
                End {
                    stream: &mut self.dst,
                    ready: &mut self.dst_ready,
                },
                &mut Shared {
                    pool: &mut self.pool,
                    pipes: self.pipes.as_mut(),
                    metrics: &mut self.metrics,
                },
                &mut budget,
                last,
            )
        }
    }

    impl Rig {
        fn drain_peer(&mut self) -> Vec<u8> {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match self.peer_dst.read(&mut buf) {
                    Ok(0) => return out,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return out,
                    Err(err) => panic!("{err}"),
                }
            }
        }
    }

    /// A preamble larger than the ring goes out whole and first, before bytes the source already holds.
    #[test]
    fn test_open_preamble_goes_first_even_past_ring_size() {
        let mut rig = rig(1024);
        let preamble: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        rig.dir.push_preamble(&preamble);
        rig.peer_src.write_all(b"after").expect("write");
        assert_eq!(rig.dir.undelivered(), 3000);
        let mut got = Vec::new();
        for _ in 0..20 {
            rig.pump(usize::MAX).expect("pump");
            got.extend(rig.drain_peer());
            rig.dst_ready.writable = true;
        }
        assert_eq!(&got[..3000], preamble.as_slice());
        assert_eq!(&got[3000..], b"after");
        assert_eq!(rig.dir.undelivered(), 0);
    }

    #[test]
    fn test_open_dropped_preamble_is_not_sent() {
        let mut rig = rig(1024);
        rig.dir
            .push_preamble(b"HTTP/1.1 200 Connection Established\r\n\r\n");
        rig.dir.drop_preamble();
        rig.peer_src.write_all(b"x").expect("write");
        rig.pump(usize::MAX).expect("pump");
        assert_eq!(rig.drain_peer(), b"x");
    }

    #[test]
    fn test_open_data_moves_and_ring_returns_storage() {
        let mut rig = rig(1024);
        rig.peer_src.write_all(b"hello").expect("write");
        assert!(rig.pump(usize::MAX).expect("pump"));
        assert_eq!(rig.drain_peer(), b"hello");
        assert_eq!(rig.dir.state(), State::Open);
        assert!(
            !rig.src_ready.readable,
            "drained to a short read / WouldBlock"
        );
        assert_eq!(
            rig.pool.spare(),
            1,
            "the ring's storage went back to the pool"
        );
    }

    #[test]
    fn test_open_eof_drains_then_closes() {
        let mut rig = rig_at_eof(b"last words");
        rig.dst_ready.writable = false; // dst blocked: data must wait in the ring
        rig.pump(usize::MAX).expect("pump");
        assert_eq!(rig.dir.state(), State::Draining);
        rig.dst_ready.writable = true;
        rig.pump(usize::MAX).expect("pump");
        assert_eq!(rig.dir.state(), State::Closed);
        let mut got = Vec::new();
        rig.peer_dst.read_to_end(&mut got).expect("read to EOF");
        assert_eq!(got, b"last words", "all data before the FIN");
    }

    /// The last direction of a pair to close leaves its FIN to the close that follows: nothing reaches
    /// the peer until `dst` is dropped, and then all the data and the EOF do.
    #[test]
    fn test_last_direction_leaves_its_fin_to_close() {
        let mut rig = rig_at_eof(b"last words");
        rig.pump_as(usize::MAX, true).expect("pump");
        assert_eq!(rig.dir.state(), State::Closed);
        let mut got = rig.drain_peer();
        assert_eq!(got, b"last words");
        let mut probe = [0u8; 1];
        let before_close = rig.peer_dst.read(&mut probe);
        assert!(
            matches!(&before_close, Err(err) if err.kind() == io::ErrorKind::WouldBlock),
            "no shutdown before the close: {before_close:?}"
        );
        let Rig { dst, peer_dst, .. } = rig;
        drop(dst);
        let mut peer_dst = peer_dst;
        peer_dst.read_to_end(&mut got).expect("read to EOF");
        assert_eq!(got, b"last words", "the close ends the stream cleanly");
    }

    /// ... unless `dst` was reported failed: then the shutdown is made, so that its error (ENOTCONN on a
    /// reset TCP socket) can name the close. Here the socket is healthy, so the FIN arrives at once.
    #[test]
    fn test_last_direction_shuts_down_a_failed_dst() {
        let mut rig = rig_at_eof(b"");
        rig.dst_ready.failed = true;
        rig.pump_as(usize::MAX, true).expect("pump");
        assert_eq!(rig.dir.state(), State::Closed);
        let mut got = Vec::new();
        rig.peer_dst
            .read_to_end(&mut got)
            .expect("EOF before dst is closed");
        assert!(got.is_empty());
    }

    #[test]
    fn test_open_ring_full_keeps_readable_and_resumes() {
        let mut rig = rig(1024);
        let data: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
        rig.peer_src.write_all(&data).expect("write");
        rig.dst_ready.writable = false;
        rig.pump(usize::MAX).expect("pump");
        assert!(
            rig.src_ready.readable,
            "a full ring must not clear readable"
        );
        // The writer frees space: the same pump call must go back to reading without a new edge.
        let mut got = Vec::new();
        while got.len() < data.len() {
            rig.dst_ready.writable = true;
            rig.pump(usize::MAX).expect("pump");
            got.extend(rig.drain_peer());
        }
        assert_eq!(got, data);
    }

    /// A direction full against a dst that takes nothing is blocked (its socket may be muted); once the
    /// dst drains it and a read finds the source empty, it awaits an edge again (read interest back).
    #[test]
    fn test_open_full_ring_blocks_reads_until_a_read_finds_the_source_drained() {
        let mut rig = rig(1024);
        rig.peer_src.write_all(&[3u8; 4096]).expect("write");
        rig.dst_ready.writable = false;
        rig.pump(usize::MAX).expect("pump");
        assert!(rig.dir.reads_blocked(&rig.src_ready, &rig.pool));
        assert!(!rig.dir.awaits_readable(&rig.src_ready));

        let mut got = 0;
        while got < 4096 {
            rig.dst_ready.writable = true;
            rig.pump(usize::MAX).expect("pump");
            got += rig.drain_peer().len();
        }
        assert!(!rig.dir.reads_blocked(&rig.src_ready, &rig.pool));
        assert!(
            rig.dir.awaits_readable(&rig.src_ready),
            "drained: only an edge says when to read"
        );

        rig.peer_src.shutdown(Shutdown::Write).expect("shutdown");
        rig.src_ready.readable = true;
        rig.pump(usize::MAX).expect("pump");
        assert!(
            !rig.dir.awaits_readable(&rig.src_ready),
            "after EOF nothing is read again, so no read interest is needed"
        );
    }

    #[test]
    fn test_open_budget_stops_reads_and_reports_work() {
        let mut rig = rig(1024);
        rig.peer_src.write_all(&[7u8; 4096]).expect("write");
        rig.pump(1024).expect("pump");
        assert!(rig.dir.has_work(&rig.src_ready, &rig.dst_ready, &rig.pool));
        assert_eq!(rig.drain_peer().len(), 1024);
    }

    #[test]
    fn test_open_dst_gone_is_dst_fault() {
        let mut rig = rig(1024);
        rig.peer_src.write_all(b"x").expect("write");
        let Rig { peer_dst, .. } = &mut rig;
        drop(std::mem::replace(
            peer_dst,
            UnixStream::pair().expect("pair").0,
        ));
        match rig.pump(usize::MAX) {
            Err(Fault::Dst(_)) => {}
            other => panic!("expected a dst fault, got {other:?}"),
        }
    }

    /// An `auto` direction over a budget of two pipe slots that has just switched: 6000 bytes queued
    /// in `src`, a full 1024-byte ring that a blocked `dst` kept, one pipe taken. Returns the bytes.
    #[cfg(target_os = "linux")]
    fn switched_rig() -> (Rig, Vec<u8>) {
        let mut rig = rig(1024);
        rig.dir = Direction::new(Way::ClientToUpstream, Splice::Auto);
        rig.pipes = Some(PipePool::new(4096, 4, FdBudget::new(2)));
        let data: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
        rig.peer_src.write_all(&data).expect("write");
        rig.dst_ready.writable = false;
        rig.pump(usize::MAX).expect("pump");
        assert_eq!(rig.metrics.splice_switches, 1, "a full ring switches");
        (rig, data)
    }

    /// Another direction takes the route's other pipe, then `rig` runs to the end: every byte must
    /// arrive in order, with no shortage (the direction still holds its pipe).
    #[cfg(target_os = "linux")]
    fn finish_beside_a_rival(mut rig: Rig, mut got: Vec<u8>, data: &[u8]) {
        let pipes = rig.pipes.as_mut().expect("pool");
        assert_eq!(pipes.spare(), 0, "the pipe is kept");
        let rival = pipes.take().expect("the budget's second slot");
        assert!(pipes.take().is_err(), "the direction holds the first");
        for _ in 0..20 {
            rig.dst_ready.writable = true;
            rig.pump(usize::MAX).expect("pump");
            got.extend(rig.drain_peer());
        }
        assert_eq!(got, data, "bytes in order across the switch");
        assert_eq!(rig.metrics.pipe_shortages, 0);
        drop(rival);
    }

    /// `--splice auto` switches with a pipe in hand and keeps it while its ring drains ahead of it:
    /// were the empty pipe recycled then, another direction could take the route's last one and the
    /// switch would end in a shortage.
    #[cfg(target_os = "linux")]
    #[test]
    fn test_auto_switch_keeps_its_pipe_while_the_ring_drains() {
        let (mut rig, data) = switched_rig();
        rig.dir.recycle_pipe(
            &Readiness::default(),
            &mut Shared {
                pool: &mut rig.pool,
                pipes: rig.pipes.as_mut(),
                metrics: &mut rig.metrics,
            },
        );
        finish_beside_a_rival(rig, Vec::new(), &data);
    }

    /// A direction that stops on its byte budget with `src` still readable is queued to run again, not
    /// idle: it keeps its (empty) pipe, so no other pair can take it in between.
    #[cfg(target_os = "linux")]
    #[test]
    fn test_budget_yield_keeps_the_pipe() {
        let (mut rig, data) = switched_rig();
        // The ring drains, then the budget stops the read: the pipe is empty and src still readable.
        rig.dst_ready.writable = true;
        rig.pump(0).expect("pump");
        let got = rig.drain_peer();
        assert_eq!(got.len(), 1024, "the ring went out");
        finish_beside_a_rival(rig, got, &data);
    }

    /// Reads that fill the room offered prove nothing about the socket: the pump goes on reading (and
    /// writing, to make room) until a read says WouldBlock, and only that clears `readable`.
    #[test]
    fn test_open_full_reads_go_on_until_wouldblock() {
        let mut rig = scripted(1024);
        rig.peer_src
            .incoming((0..3).map(|i| Incoming::Data(vec![i; 1024])));
        rig.peer_dst
            .room(usize::MAX)
            .room(usize::MAX)
            .room(usize::MAX);
        assert!(rig.pump(usize::MAX).expect("pump"));
        assert_eq!(rig.peer_src.reads(), 4, "three full reads, then WouldBlock");
        assert!(!rig.src_ready.readable, "WouldBlock clears readable");
        assert_eq!(rig.metrics.reads_would_block, 1);
        assert_eq!(rig.peer_dst.written().len(), 3 * 1024);
    }

    /// A read short of the room offered shows the receive queue emptied: `readable` is cleared with no
    /// WouldBlock read to prove it ([`Readiness::after_short_read`]), and bytes queued after it wait for
    /// the edge their arrival raises.
    #[test]
    fn test_open_short_read_clears_readable_without_a_wouldblock_read() {
        let mut rig = scripted(1024);
        rig.peer_src.data(b"hello").data(b"edge to come");
        rig.peer_dst.room(usize::MAX);
        rig.pump(usize::MAX).expect("pump");
        assert_eq!(rig.peer_src.reads(), 1);
        assert!(!rig.src_ready.readable);
        assert_eq!(rig.peer_dst.written(), b"hello");
    }

    /// ... unless the FIN is known to be pending: then a short read proves nothing, and the pump reads on
    /// to the EOF, which no edge would report again.
    #[test]
    fn test_open_short_read_with_fin_pending_reads_on_to_eof() {
        let mut rig = scripted(1024);
        rig.peer_src.data(b"hello").incoming([Incoming::Eof]);
        rig.src_ready.read_closed = true;
        rig.peer_dst.room(usize::MAX);
        rig.pump(usize::MAX).expect("pump");
        assert_eq!(rig.peer_src.reads(), 2);
        assert_eq!(rig.dir.state(), State::Closed);
    }

    /// Backpressure: a full ring stops reading with `readable` still set and makes no read syscall; once
    /// the writer frees room the pump reads again by itself, with no new edge.
    #[test]
    fn test_open_full_ring_keeps_readable_and_does_not_read() {
        let mut rig = scripted(1024);
        rig.peer_src.data(&[1; 2048]);
        rig.pump(usize::MAX).expect("pump");
        assert_eq!(rig.peer_src.reads(), 1, "one read fills the ring");
        assert!(!rig.dst_ready.writable, "dst said WouldBlock");
        assert!(
            rig.src_ready.readable,
            "a full ring must not clear readable"
        );
        assert!(rig.dir.reads_blocked(&rig.src_ready, &rig.pool));
        assert!(!rig.pump(usize::MAX).expect("pump"), "nothing can move");
        assert_eq!(rig.peer_src.reads(), 1, "no read into a full ring");

        rig.peer_dst.room(usize::MAX).room(usize::MAX);
        rig.dst_ready.writable = true;
        rig.pump(usize::MAX).expect("pump");
        assert_eq!(rig.peer_dst.written().len(), 2048);
        assert!(!rig.src_ready.readable, "read on until WouldBlock");
    }

    /// A write that takes less than offered shows the send buffer full: `writable` is cleared, and the
    /// pump does not try again before the next EPOLLOUT edge.
    #[test]
    fn test_open_short_write_clears_writable() {
        let mut rig = scripted(1024);
        rig.peer_src.data(&[2; 100]);
        rig.peer_dst.room(10).room(usize::MAX);
        rig.pump(usize::MAX).expect("pump");
        assert_eq!(rig.peer_dst.written().len(), 10);
        assert_eq!(rig.peer_dst.writes(), 1, "no write after the short one");
        assert!(!rig.dst_ready.writable);
        assert_eq!(rig.metrics.writes_short, 1);
    }

    /// EOF, then the ring drains (across a full send buffer), then `shutdown(Write)` on `dst`, once.
    #[test]
    fn test_open_eof_drains_then_shuts_down_once() {
        let mut rig = scripted(1024);
        rig.peer_src.data(b"last words").incoming([Incoming::Eof]);
        rig.src_ready.read_closed = true;
        rig.peer_dst.room(4);
        rig.pump(usize::MAX).expect("pump");
        assert_eq!(rig.dir.state(), State::Draining);
        assert_eq!(rig.peer_dst.shutdowns(), 0, "bytes still held");

        rig.peer_dst.room(usize::MAX);
        rig.dst_ready.writable = true;
        rig.pump(usize::MAX).expect("pump");
        assert_eq!(rig.dir.state(), State::Closed);
        assert_eq!(rig.peer_dst.written(), b"last words");
        assert_eq!(rig.peer_dst.shutdowns(), 1);
        rig.src_ready.readable = true;
        assert!(
            !rig.pump(usize::MAX).expect("pump"),
            "closed: nothing to do"
        );
        assert_eq!(rig.peer_dst.shutdowns(), 1, "shut down once");
    }

    /// A read error is the source's fault (the pair names it client- or upstream-reset), a write error
    /// the destination's.
    #[test]
    fn test_open_io_errors_name_their_socket() {
        let mut rig = scripted(1024);
        rig.peer_src
            .incoming([Incoming::Fail(io::ErrorKind::ConnectionReset)]);
        match rig.pump(usize::MAX) {
            Err(Fault::Src(err)) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("expected a src fault, got {other:?}"),
        }
        let mut rig = scripted(1024);
        rig.peer_src.data(b"x");
        rig.peer_dst
            .outgoing([Outgoing::Fail(io::ErrorKind::BrokenPipe)]);
        match rig.pump(usize::MAX) {
            Err(Fault::Dst(err)) => assert_eq!(err.kind(), io::ErrorKind::BrokenPipe),
            other => panic!("expected a dst fault, got {other:?}"),
        }
    }
}
