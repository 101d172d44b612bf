//! Zero-copy forwarding on Linux (`--splice`): bytes go socket -> pipe -> socket with splice(2) and never
//! enter user space.
//!
//! The pipe plays the ring's part: its capacity bounds what a direction holds, so backpressure works the
//! same way. Pipes are created only when a direction has data to move and go back to a bounded
//! [`PipePool`] when they drain, so an idle pair still holds just its two sockets.
//!
//! One edge-triggered subtlety is specific to splice: EAGAIN from a socket -> pipe splice means either
//! "the socket is empty" or "the pipe has no free slot" (a pipe has a fixed number of page slots, and
//! small segments can use them up before its byte capacity). Only the first may clear the cached
//! `readable` bit, or the direction would stall with data queued. Like HAProxy, we take EAGAIN with data
//! in the pipe as "pipe full" (flush first, readable stays set) and EAGAIN with an empty pipe as "socket
//! drained". For the same reason a short splice is not taken as proof that the socket is empty.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use log::warn;

use crate::datapath::budget::{FdBudget, Slot};
use crate::throttle::Throttle;

/// A non-blocking pipe used as a direction's buffer, with the count of bytes it holds.
#[derive(Debug)]
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// The two fds' place in the process's budget, given back when the pipe closes.
    _slot: Slot,
    /// Bytes spliced in and not yet spliced out.
    len: usize,
    /// The pipe's byte capacity, as the kernel reports it.
    capacity: usize,
}

impl Pipe {
    /// Creates a pipe in budget slot `slot` and asks for `size` bytes of capacity (the kernel may round it
    /// up to pages, or refuse above /proc/sys/fs/pipe-max-size; the capacity actually granted is what
    /// counts).
    #[cfg(target_os = "linux")]
    fn new(size: usize, slot: Slot) -> io::Result<Pipe> {
        use std::os::fd::FromRawFd;
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two c_ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let wanted = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: F_SETPIPE_SZ / F_GETPIPE_SZ on a pipe fd we own; no pointers involved.
        let granted = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, wanted);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        if granted <= 0 {
            return Err(io::Error::last_os_error());
        }
        let granted = granted as usize;
        if !worth_splicing(size, granted) {
            return Err(io::Error::other(PipeTooSmall {
                granted,
                asked: size,
            }));
        }
        Ok(Pipe {
            read,
            write,
            _slot: slot,
            len: 0,
            capacity: granted,
        })
    }

    /// splice(2) and resizable pipes are Linux's: elsewhere every direction stays on its ring (the
    /// default `--splice` there is `off`; asking for it falls back loudly).
    #[cfg(not(target_os = "linux"))]
    fn new(_size: usize, _slot: Slot) -> io::Result<Pipe> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "splice(2) exists on Linux only",
        ))
    }

    /// Bytes held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is held.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that may still be spliced in.
    pub(super) fn room(&self) -> usize {
        self.capacity - self.len
    }

    /// One splice from socket `src` into the pipe. `Ok(0)` is EOF.
    pub(super) fn splice_in(&mut self, src: RawFd) -> io::Result<usize> {
        let moved = splice(src, self.write.as_raw_fd(), self.room())?;
        self.len += moved;
        Ok(moved)
    }

    /// One splice from the pipe to socket `dst`.
    pub(super) fn splice_out(&mut self, dst: RawFd) -> io::Result<usize> {
        let moved = splice(self.read.as_raw_fd(), dst, self.len)?;
        self.len -= moved;
        Ok(moved)
    }
}

/// Past `fs.pipe-user-pages-soft` (16384 pages per user) an unprivileged process gets pipes of two pages,
/// and resizing them fails. Splicing 8 KiB at a time costs more CPU per byte than the ring path does, so
/// a pipe smaller than 64 KiB (or than asked, if less was asked) sends the direction to its ring instead.
#[cfg(target_os = "linux")]
fn worth_splicing(asked: usize, granted: usize) -> bool {
    granted >= asked.min(64 * 1024)
}

/// One non-blocking splice(2) of up to `len` bytes.
#[cfg(target_os = "linux")]
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: both fds are open for the duration of the call (they are borrowed from live owners), and
    // null offsets are what splice expects for sockets and pipes.
    let moved = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if moved < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(moved as usize)
    }
}

/// Never called: no [`Pipe`] can be made off Linux.
#[cfg(not(target_os = "linux"))]
fn splice(_from: RawFd, _to: RawFd, _len: usize) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// The kernel granted a pipe too small to splice through ([`worth_splicing`]): the user is past
/// `fs.pipe-user-pages-soft`. Unlike running out of fds or into the route's pipe limit this does not
/// pass when one pipe closes, and each try costs pipe2, two fcntl and two close, so a direction that
/// meets it stays on its ring.
#[derive(Debug)]
struct PipeTooSmall {
    granted: usize,
    asked: usize,
}

impl std::fmt::Display for PipeTooSmall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the kernel granted a {}-byte pipe for {} asked (fs.pipe-user-pages-soft reached?)",
            self.granted, self.asked
        )
    }
}

impl std::error::Error for PipeTooSmall {}

/// Whether `err` says splicing cannot work here for good, rather than "no pipe right now": splice(2)
/// missing (off Linux) or refused for these fds, or pipes too small to be worth it.
pub(super) fn refused_for_good(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Unsupported
        || matches!(
            err.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
        )
        || err
            .get_ref()
            .is_some_and(|inner| inner.is::<PipeTooSmall>())
}

/// A route's pipes: a bounded stock of empty ones, so bursts do not pay pipe2 + fcntl each time and fds
/// go back after a peak. Every pipe open, held by a direction or spare, holds a slot of the process's fd
/// budget ([`crate::datapath::budget`]), so pipes never take the fds sockets need: a pipe is made only from a slot
/// no pair holds, and while clients wait in a backlog for a slot, pipes give theirs back instead of
/// waiting as spares.
#[derive(Debug)]
pub struct PipePool {
    size: usize,
    free: Vec<Pipe>,
    max_free: usize,
    budget: FdBudget,
    /// Fallbacks and shortages are logged, but not thousands of times a second; each on its own
    /// clock, so a run of shortages cannot hide a lasting fallback.
    fallback_warning: Throttle,
    shortage_warning: Throttle,
}

impl PipePool {
    /// A pool of pipes of `size` bytes that keeps at most `max_free` spare, each open pipe holding a slot
    /// of `budget`.
    pub(crate) fn new(size: usize, max_free: usize, budget: FdBudget) -> PipePool {
        PipePool {
            size,
            free: Vec::new(),
            max_free,
            budget,
            fallback_warning: Throttle::new(Duration::from_secs(10)),
            shortage_warning: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// Logs (rate-limited) that a direction wanted a pipe and uses its ring instead: for good when
    /// `lasting`, until its ring next fills otherwise.
    pub(super) fn warn_fallback(&mut self, err: &io::Error, lasting: bool, total: u64) {
        let throttle = if lasting {
            &mut self.fallback_warning
        } else {
            &mut self.shortage_warning
        };
        let Some(suppressed) = throttle.allow(Instant::now()) else {
            return;
        };
        if lasting {
            warn!(
                "splice unavailable ({err}); this direction falls back to the ring ({total} fallbacks so far, {suppressed} not logged)"
            );
        } else {
            warn!(
                "no pipe to splice with ({err}); this direction falls back to the ring until it next fills ({total} shortages so far, {suppressed} not logged)"
            );
        }
    }

    /// An empty pipe, from the pool or new; an error when the fd budget has no slot to spare or pipe2
    /// fails.
    pub(super) fn take(&mut self) -> io::Result<Pipe> {
        if let Some(pipe) = self.free.pop() {
            return Ok(pipe);
        }
        let slot = self.budget.take_for_pipe().ok_or_else(|| {
            io::Error::other(format!(
                "the process's {} fd slots are held by pairs and pipes, or wanted by waiting clients",
                self.budget.slots()
            ))
        })?;
        Pipe::new(self.size, slot)
    }

    /// Returns an empty pipe; beyond the bound, or while clients wait for its slot, it is closed.
    pub(super) fn give(&mut self, pipe: Pipe) {
        debug_assert!(pipe.is_empty(), "a pipe with data must not be reused");
        if pipe.is_empty() && self.free.len() < self.max_free && !self.budget.is_wanted() {
            self.free.push(pipe);
        }
    }

    /// Closes a pipe taken from this pool that must not be reused (it holds a dead connection's bytes).
    pub(super) fn discard(&mut self, pipe: Pipe) {
        drop(pipe);
    }

    /// Closes every spare pipe: fds are scarce (EMFILE, clients waiting for a slot) or nothing is
    /// running that would reuse them.
    pub(crate) fn clear(&mut self) {
        self.free.clear();
    }

    /// Pipes held spare.
    pub(crate) fn spare(&self) -> usize {
        self.free.len()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        for s in [&client, &server] {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
        }
        (client, server)
    }

    fn slot() -> Slot {
        FdBudget::default()
            .take_for_pipe()
            .expect("an unlimited budget")
    }

    #[test]
    fn test_splice_moves_bytes_socket_to_socket() {
        let (mut a, a_peer) = tcp_pair();
        let (b_peer, mut b) = tcp_pair();
        a_peer.set_nonblocking(true).expect("nonblocking");
        b_peer.set_nonblocking(true).expect("nonblocking");
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        a.write_all(&data).expect("write");
        let mut pipe = Pipe::new(64 * 1024, slot()).expect("pipe");
        let mut got = vec![0u8; data.len()];
        let mut moved = 0;
        while moved < data.len() {
            match pipe.splice_in(a_peer.as_raw_fd()) {
                Ok(0) => panic!("unexpected EOF"),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => panic!("splice in: {err}"),
            }
            while !pipe.is_empty() {
                moved += pipe.splice_out(b_peer.as_raw_fd()).expect("splice out");
            }
        }
        b.read_exact(&mut got).expect("read");
        assert_eq!(got, data);
    }

    #[test]
    fn test_splice_reports_eof_and_would_block() {
        let (a, a_peer) = tcp_pair();
        a_peer.set_nonblocking(true).expect("nonblocking");
        let mut pipe = Pipe::new(4096, slot()).expect("pipe");
        let err = pipe
            .splice_in(a_peer.as_raw_fd())
            .expect_err("nothing queued");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        a.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let eof = (0..500).find_map(|_| match pipe.splice_in(a_peer.as_raw_fd()) {
            Ok(n) => Some(n),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(2));
                None
            }
        });
        assert_eq!(eof, Some(0));
    }

    #[test]
    fn test_a_pipe_much_smaller_than_asked_is_not_worth_splicing() {
        assert!(worth_splicing(1 << 20, 1 << 20));
        assert!(worth_splicing(1 << 20, 64 * 1024));
        assert!(!worth_splicing(1 << 20, 8192));
        assert!(worth_splicing(4096, 4096));
        assert!(!worth_splicing(16 * 1024, 8192));
    }

    #[test]
    fn test_pool_bounds_spare_pipes() {
        let budget = FdBudget::new(8);
        let mut pool = PipePool::new(4096, 1, budget.clone());
        let first = pool.take().expect("pipe");
        let second = pool.take().expect("pipe");
        pool.give(first);
        pool.give(second);
        assert_eq!(pool.spare(), 1);
        assert_eq!(budget.used(), 1, "the pipe past the bound was closed");
        pool.clear();
        assert_eq!(pool.spare(), 0);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn test_pool_never_opens_more_than_the_budget_allows() {
        let budget = FdBudget::new(3);
        let _pair = budget.take_for_pair().expect("a pair's slot");
        let mut pool = PipePool::new(4096, 1, budget.clone());
        let first = pool.take().expect("pipe");
        let mut second = pool.take().expect("pipe");
        assert!(pool.take().is_err(), "a third pipe past the budget");
        // A spare pipe is reused without opening another.
        pool.give(first);
        let again = pool.take().expect("the spare pipe");
        assert_eq!(budget.used(), 3);
        // A pipe closed with bytes in it frees its slot.
        let (mut a, a_peer) = tcp_pair();
        a_peer.set_nonblocking(true).expect("nonblocking");
        a.write_all(b"left behind").expect("write");
        for _ in 0..500 {
            if second.splice_in(a_peer.as_raw_fd()).is_ok_and(|n| n > 0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(!second.is_empty(), "the bytes never reached the pipe");
        pool.discard(second);
        assert_eq!(budget.used(), 2);
        let third = pool.take().expect("a slot was freed");
        pool.give(again);
        pool.give(third);
        assert_eq!((budget.used(), pool.spare()), (2, 1));
    }

    #[test]
    fn test_pool_gives_slots_back_to_waiting_clients() {
        let budget = FdBudget::new(2);
        let mut pool = PipePool::new(4096, 4, budget.clone());
        let pipe = pool.take().expect("pipe");
        let _pair = budget.take_for_pair().expect("slot");
        assert!(budget.take_for_pair().is_none(), "a client now waits");
        pool.give(pipe);
        assert_eq!(pool.spare(), 0, "not kept while a client waits");
        assert!(pool.take().is_err(), "nor taken again");
        assert!(budget.take_for_pair().is_some(), "the client gets the slot");
    }

    #[test]
    fn test_only_refusals_and_small_pipes_are_for_good() {
        let small = io::Error::other(PipeTooSmall {
            granted: 8192,
            asked: 1 << 20,
        });
        assert!(refused_for_good(&small));
        assert!(refused_for_good(&io::Error::from_raw_os_error(
            libc::EINVAL
        )));
        assert!(refused_for_good(&io::ErrorKind::Unsupported.into()));
        assert!(!refused_for_good(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        let mut full = PipePool::new(4096, 1, FdBudget::new(2));
        let _held = (full.take().expect("pipe"), full.take().expect("pipe"));
        let limit = full.take().expect_err("past the budget");
        assert!(!refused_for_good(&limit), "the limit passes: {limit}");
    }
}
