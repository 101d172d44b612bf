//! What one wait call costs over many registered, idle sockets: `select(2)`, `poll(2)` and
//! `epoll_wait(2)` side by side (the curves of docs/epoll.md §1).
//!
//! The set is N idle loopback TCP sockets (both ends of N/2 connections, nothing ever sent) plus
//! one *active* socket that always holds one unread byte, so every call returns exactly one ready
//! socket at once (timeout 0). What differs is the work behind that answer: `select` gets a bitmap
//! rebuilt by the caller and scans every fd below `nfds`; `poll` copies the whole `pollfd` array in
//! and out and calls every socket's poll method; `epoll_wait` hands back its ready list, and the
//! idle sockets, registered once with `epoll_ctl`, are never looked at. The epoll set is
//! level-triggered here so the active socket is reported on every call, like the other two.
//!
//! Each sample times a run of calls with the thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`):
//! on a shared machine the time this thread was *not* running would otherwise be counted as
//! the call's cost. Wall time is kept beside it as a check.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// The three ways to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    Select,
    Poll,
    Epoll,
}

impl Waiter {
    pub const ALL: [Waiter; 3] = [Waiter::Select, Waiter::Poll, Waiter::Epoll];

    pub fn name(self) -> &'static str {
        match self {
            Waiter::Select => "select",
            Waiter::Poll => "poll",
            Waiter::Epoll => "epoll_wait",
        }
    }
}

/// N idle sockets and the one that is always readable. Dropping it closes them all.
pub struct SocketSet {
    /// The sockets handed to the waiters, idle ones first and the active one last.
    registered: Vec<TcpStream>,
    /// The other ends that are not registered (the active socket's writer, an odd connection's
    /// second end), kept open so no registered socket sees a FIN.
    _held: Vec<TcpStream>,
}

impl SocketSet {
    /// Opens `idle` idle sockets and the active one. No listener takes more than `per_destination`
    /// connections (each needs its own ephemeral port towards that listener).
    pub fn open(idle: usize, per_destination: usize) -> io::Result<SocketSet> {
        let mut registered = Vec::with_capacity(idle + 1);
        let mut held = Vec::new();
        let mut listener = TcpListener::bind("127.0.0.1:0")?;
        let mut on_listener = 0;
        while registered.len() < idle {
            if on_listener == per_destination.max(1) {
                listener = TcpListener::bind("127.0.0.1:0")?;
                on_listener = 0;
            }
            let (client, server) = connected(&listener)?;
            on_listener += 1;
            registered.push(client);
            if registered.len() < idle {
                registered.push(server);
            } else {
                held.push(server);
            }
        }
        let (mut writer, active) = connected(&listener)?;
        io::Write::write_all(&mut writer, b"!")?;
        registered.push(active);
        held.push(writer);
        Ok(SocketSet {
            registered,
            _held: held,
        })
    }

    /// Every registered fd; the active socket's is the last.
    pub fn fds(&self) -> Vec<RawFd> {
        self.registered.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// The socket that holds unread data.
    pub fn active_fd(&self) -> RawFd {
        self.registered.last().map_or(-1, AsRawFd::as_raw_fd)
    }
}

/// A blocking loopback connection to `listener`: (client end, accepted end).
fn connected(listener: &TcpListener) -> io::Result<(TcpStream, TcpStream)> {
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    Ok((client, server))
}

/// One waiter set up over a [`SocketSet`], ready to be called again and again.
pub enum Prepared {
    /// The fds to put in the read set before every call (select overwrites it), the highest + 1,
    /// and the set the last call returned.
    Select {
        fds: Vec<RawFd>,
        nfds: RawFd,
        result: Box<libc::fd_set>,
    },
    /// The array passed in full on every call; the kernel writes `revents`.
    Poll { pollfds: Vec<libc::pollfd> },
    /// The epoll instance (every fd added once) and room for the events a call returns.
    Epoll {
        epfd: OwnedFd,
        events: Vec<libc::epoll_event>,
        ready: usize,
    },
}

impl Prepared {
    /// Sets `waiter` up over `fds`; None for `select` when an fd is at or above `FD_SETSIZE`,
    /// which it cannot watch at all.
    pub fn new(waiter: Waiter, fds: &[RawFd]) -> io::Result<Option<Prepared>> {
        Ok(Some(match waiter {
            Waiter::Select => {
                let max = fds.iter().copied().max().unwrap_or(0);
                if max >= libc::FD_SETSIZE as RawFd {
                    return Ok(None);
                }
                Prepared::Select {
                    fds: fds.to_vec(),
                    nfds: max + 1,
                    result: Box::new(empty_fd_set()),
                }
            }
            Waiter::Poll => Prepared::Poll {
                pollfds: fds
                    .iter()
                    .map(|&fd| libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect(),
            },
            Waiter::Epoll => Prepared::Epoll {
                epfd: epoll_with(fds)?,
                events: vec![libc::epoll_event { events: 0, u64: 0 }; 64],
                ready: 0,
            },
        }))
    }

    /// One call with a zero timeout; returns how many sockets it reported ready.
    pub fn wait(&mut self) -> io::Result<usize> {
        let n = match self {
            Prepared::Select { fds, nfds, result } => {
                let mut set = empty_fd_set();
                for &fd in fds.iter() {
                    // SAFETY: `set` is a valid fd_set and every fd is below FD_SETSIZE (checked
                    // in `new`), the range FD_SET may write.
                    unsafe { libc::FD_SET(fd, &mut set) };
                }
                let mut zero = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 0,
                };
                // SAFETY: `set` and `zero` are valid for the call; the null sets are allowed.
                let n = unsafe {
                    libc::select(
                        *nfds,
                        &mut set,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        &mut zero,
                    )
                };
                **result = set;
                n
            }
            Prepared::Poll { pollfds } => {
                // SAFETY: the pointer and length describe `pollfds`, which the kernel may write.
                unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 0) }
            }
            Prepared::Epoll {
                epfd,
                events,
                ready,
            } => {
                // SAFETY: the pointer and length describe `events`, which the kernel may write;
                // `epfd` is an open epoll instance.
                let n = unsafe {
                    libc::epoll_wait(
                        epfd.as_raw_fd(),
                        events.as_mut_ptr(),
                        events.len() as libc::c_int,
                        0,
                    )
                };
                *ready = n.max(0) as usize;
                n
            }
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
    /// The fds the last call reported ready.
    pub fn ready_fds(&self) -> Vec<RawFd> {
        match self {
            Prepared::Select { fds, result, .. } => fds
                .iter()
                .copied()
                // SAFETY: `result` is a valid fd_set and `fd` is below FD_SETSIZE.
                .filter(|&fd| unsafe { libc::FD_ISSET(fd, &**result) })
                .collect(),
            Prepared::Poll { pollfds } => pollfds
                .iter()
                .filter(|p| p.revents & libc::POLLIN != 0)
                .map(|p| p.fd)
                .collect(),
            Prepared::Epoll { events, ready, .. } => {
                events[..*ready].iter().map(|e| e.u64 as RawFd).collect()
            }
        }
    }

    /// One call, which must report `active` and nothing else: the set is what the figures say.
    pub fn check(&mut self, active: RawFd) -> io::Result<()> {
        self.wait()?;
        let ready = self.ready_fds();
        if ready != [active] {
            return Err(io::Error::other(format!(
                "expected only fd {active} ready, got {ready:?}"
            )));
        }
        Ok(())
    }
}

fn empty_fd_set() -> libc::fd_set {
    // SAFETY: fd_set is plain data; FD_ZERO makes it the empty set whatever its bytes were.
    unsafe {
        let mut set: libc::fd_set = std::mem::zeroed();
        libc::FD_ZERO(&mut set);
        set
    }
}

/// A level-triggered epoll instance watching every fd for input, each tagged with its number.
fn epoll_with(fds: &[RawFd]) -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes only flags.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new fd that nothing else owns.
    let epfd = unsafe { OwnedFd::from_raw_fd(raw) };
    for &fd in fds {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `epfd` and `fd` are open; `ev` is valid for the call (the kernel copies it).
        if unsafe { libc::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(epfd)
}

/// This thread's CPU time so far, in nanoseconds.
pub fn thread_cpu_ns() -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for the kernel to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// One timed run of `calls` calls.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Thread CPU time per call.
    pub cpu_ns: f64,
    /// Elapsed time per call (includes time the thread waited for a CPU).
    pub wall_ns: f64,
}

/// Times `calls` calls; fails unless every one reported exactly one ready socket, so a waiter
/// that returned early or saw nothing cannot pass for a fast one.
pub fn sample(prepared: &mut Prepared, calls: u64) -> io::Result<Sample> {
    let cpu0 = thread_cpu_ns()?;
    let wall0 = Instant::now();
    let mut ready = 0u64;
    for _ in 0..calls {
        ready += prepared.wait()? as u64;
    }
    let wall = wall0.elapsed().as_nanos() as f64;
    let cpu = thread_cpu_ns()?.saturating_sub(cpu0) as f64;
    if ready != calls {
        return Err(io::Error::other(format!(
            "{calls} calls reported {ready} ready sockets, expected one per call"
        )));
    }
    Ok(Sample {
        cpu_ns: cpu / calls.max(1) as f64,
        wall_ns: wall / calls.max(1) as f64,
    })
}

/// Calls for a sample that lasts about `target_ns` of CPU, from a short trial run.
pub fn calls_for(prepared: &mut Prepared, target_ns: f64) -> io::Result<u64> {
    const TRIAL: u64 = 16;
    let trial = sample(prepared, TRIAL)?;
    Ok(calls_within(target_ns, trial.cpu_ns))
}

/// The samples of one waiter at one set size.
#[derive(Debug, Clone)]
pub struct Point {
    pub waiter: Waiter,
    /// Idle sockets registered (the active one is extra).
    pub idle: usize,
    pub cpu_ns: Vec<f64>,
    pub wall_ns: Vec<f64>,
}

/// For each size: open the set, then `rounds` rounds in which every waiter takes one sample of
/// about `target_ns` CPU, their order rotating each round so that a burst of load elsewhere on the
/// machine does not always land on the same one. `select` is left out where an fd is past
/// `FD_SETSIZE`.
pub fn measure_sizes(
    sizes: &[usize],
    rounds: usize,
    target_ns: f64,
    per_destination: usize,
) -> io::Result<Vec<Point>> {
    let mut points = Vec::new();
    for &idle in sizes {
        let set = SocketSet::open(idle, per_destination)?;
        let fds = set.fds();
        let mut runs = Vec::new();
        for waiter in Waiter::ALL {
            if let Some(mut prepared) = Prepared::new(waiter, &fds)? {
                prepared.check(set.active_fd())?;
                let calls = calls_for(&mut prepared, target_ns)?;
                runs.push((
                    prepared,
                    calls,
                    Point {
                        waiter,
                        idle,
                        cpu_ns: Vec::new(),
                        wall_ns: Vec::new(),
                    },
                ));
            }
        }
        let waiters = runs.len();
        for round in 0..rounds {
            for k in 0..waiters {
                let (prepared, calls, point) = &mut runs[(k + round) % waiters];
                let s = sample(prepared, *calls)?;
                point.cpu_ns.push(s.cpu_ns);
                point.wall_ns.push(s.wall_ns);
            }
        }
        points.extend(runs.into_iter().map(|(_, _, point)| point));
        drop(set);
    }
    Ok(points)
}

/// `target_ns / per_call_ns` calls, at least 16 and at most 2 million.
pub fn calls_within(target_ns: f64, per_call_ns: f64) -> u64 {
    let calls = target_ns / per_call_ns.max(1.0);
    (calls as u64).clamp(16, 2_000_000)
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/scale.rs
mod tests {
    use super::*;

    /// Every waiter names the active socket and no idle one, and nothing once its byte is read:
    /// the FFI above passes the right sets, lengths and events to the kernel.
    #[test]
    fn test_each_waiter_reports_only_the_active_socket() {
        let mut set = SocketSet::open(40, 7).expect("open sockets");
        assert_eq!(set.fds().len(), 41);
        let active = set.active_fd();
        for waiter in Waiter::ALL {
            let mut p = Prepared::new(waiter, &set.fds())
                .expect("prepare")
                .expect("low fds fit select");
            assert_eq!(p.wait().expect("wait"), 1, "{}", waiter.name());
            assert_eq!(p.ready_fds(), vec![active], "{}", waiter.name());
            let s = sample(&mut p, 100).expect("sample");
            assert!(s.cpu_ns > 0.0 && s.wall_ns > 0.0, "{s:?}");
        }
        let mut byte = [0u8; 1];
        let active_socket = set.registered.last_mut().expect("active socket");
        io::Read::read_exact(active_socket, &mut byte).expect("drain the active socket");
        for waiter in Waiter::ALL {
            let mut p = Prepared::new(waiter, &set.fds())
                .expect("prepare")
                .expect("fits");
            assert_eq!(p.wait().expect("wait"), 0, "{}", waiter.name());
            assert!(p.ready_fds().is_empty(), "{}", waiter.name());
            assert!(sample(&mut p, 10).is_err(), "{} saw nothing", waiter.name());
        }
    }

    #[test]
    fn test_select_refuses_fds_past_fd_setsize() {
        let fds = [3, libc::FD_SETSIZE as RawFd];
        assert!(Prepared::new(Waiter::Select, &fds)
            .expect("no syscall")
            .is_none());
    }

    #[test]
    fn test_thread_cpu_clock_advances_with_work() {
        let before = thread_cpu_ns().expect("clock");
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(thread_cpu_ns().expect("clock") > before, "{x}");
    }

    #[test]
    fn test_calls_within_is_clamped() {
        assert_eq!(calls_within(1e6, 100.0), 10_000);
        assert_eq!(calls_within(1e6, 1e9), 16);
        assert_eq!(calls_within(1e12, 1.0), 2_000_000);
        assert_eq!(calls_within(1e6, 0.0), 1_000_000);
    }
}
