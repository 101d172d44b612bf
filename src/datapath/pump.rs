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
pub(crate) struct Shared<'a> {
    pub(crate) pool: &'a mut BufPool,
    /// The route's pipes for `--splice`; `None` when splicing is off.
    pub(crate) pipes: Option<&'a mut PipePool>,
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
enum State {
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
pub(crate) enum Fault {
    Src,
    Dst,
}

/// Byte and syscall counts for one direction.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) bytes: u64,
    pub(crate) reads: u64,
    pub(crate) writes: u64,
}

/// A socket and its cached readiness, as one end of a direction.
pub(crate) struct End<'a, S> {
    pub(crate) stream: &'a mut S,
    pub(crate) ready: &'a mut Readiness,
}

/// One direction's buffer and state.
#[derive(Debug)]
pub(crate) struct Direction {
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

    #[cfg(test)]
    fn state(&self) -> State {
        self.state
    }

    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    /// True while this direction splices (`--splice`), rather than going through its ring.
    pub(crate) fn splices(&self) -> bool {
        self.zero_copy
    }

    /// True once this direction has finished (its FIN passed on, or left to the pair's close).
    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// True once `src` has sent FIN (whether or not the ring has drained).
    pub(crate) fn saw_eof(&self) -> bool {
        self.state != State::Open
    }

    /// Bytes read from `src` and not yet written to `dst`.
    fn held(&self) -> usize {
        self.ring.len() + self.pipe.as_ref().map_or(0, Pipe::len)
    }

    /// Bytes not yet written to `dst`, the preamble's included.
    pub(crate) fn undelivered(&self) -> usize {
        self.held() + self.preamble.len()
    }

    /// Forgets a queued preamble (the pair is refusing its client instead).
    pub(crate) fn drop_preamble(&mut self) {
        self.preamble = Vec::new();
    }

    /// Queues `bytes` to be written to `dst` before anything read from `src` (see `preamble`).
    pub(crate) fn push_preamble(&mut self, bytes: &[u8]) {
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
    pub(crate) fn release(&mut self, shared: &mut Shared<'_>) {
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
    pub(crate) fn reads_blocked(&self, src_ready: &Readiness, pool: &BufPool) -> bool {
        self.state == State::Open && src_ready.readable && (self.is_full(pool) || !self.may_read())
    }

    /// This direction still reads `src` and has found it drained: only an EPOLLIN edge can say when to
    /// read again.
    pub(crate) fn awaits_readable(&self, src_ready: &Readiness) -> bool {
        self.state == State::Open && !src_ready.readable
    }

    /// True if a call to [`pump`](Self::pump) could make progress now, given budget.
    pub(crate) fn has_work(
        &self,
        src_ready: &Readiness,
        dst_ready: &Readiness,
        pool: &BufPool,
    ) -> bool {
        let can_write = self.held() > 0 && dst_ready.writable;
        let can_read = src_ready.readable && self.may_read() && !self.is_full(pool);
        let can_feed = !self.preamble.is_empty() && !self.ring.is_full(pool);
        can_write || can_read || can_feed
    }

    /// Moves as many bytes as readiness and `budget` allow. Returns whether anything happened (bytes moved
    /// or a state changed); `budget` is decreased by the bytes read. `last` says the other direction has
    /// closed already: the pair closes both sockets as soon as this one closes (see
    /// `shutdown_step`).
    pub(crate) fn pump<S: Stream, D: Stream>(
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
            IoOutcome::Eof => Err(Fault::Dst),
            IoOutcome::Failed => Err(Fault::Dst),
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
            dst.stream.shutdown_write().map_err(|_| Fault::Dst)?;
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
            IoOutcome::Failed => Err(Fault::Src),
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
mod tests;
