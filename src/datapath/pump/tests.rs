//! One direction's state machine, over real non-blocking Unix socket pairs (`peer_src` writes into
//! `src`, the pump moves bytes to `dst`, `peer_dst` reads them out) and over scripted streams
//! ([`Scripted`]), whose every syscall returns what the test says, for the edge-triggered traps.

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
        Err(Fault::Dst) => {}
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
        Err(Fault::Src) => {}
        other => panic!("expected a src fault, got {other:?}"),
    }
    let mut rig = scripted(1024);
    rig.peer_src.data(b"x");
    rig.peer_dst
        .outgoing([Outgoing::Fail(io::ErrorKind::BrokenPipe)]);
    match rig.pump(usize::MAX) {
        Err(Fault::Dst) => {}
        other => panic!("expected a dst fault, got {other:?}"),
    }
}
