//! Socket setup with socket2, and the reduction of `io::Error` to what the forwarder acts on.
//!
//! Everything that configures a socket lives here, so the reactor reads as a loop and not as a list of
//! setsockopt calls.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

/// Per-socket options applied to both sides of every pair.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamOptions {
    pub(crate) nodelay: bool,
    pub(crate) keepalive: Option<Duration>,
}

/// A non-blocking, close-on-exec TCP socket for `addr`'s family: one socket(2) call where the flags can
/// be given at creation, a socket(2) and an fcntl(2) elsewhere (macOS). socket2 sets close-on-exec.
fn stream_socket(addr: SocketAddr) -> io::Result<Socket> {
    #[cfg(not(target_vendor = "apple"))]
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    #[cfg(target_vendor = "apple")]
    let socket = {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket
    };
    Ok(socket)
}

/// Binds a non-blocking listener with SO_REUSEADDR (so a restart does not wait out TIME_WAIT) and the
/// requested backlog. An IPv6 wildcard listener stays dual-stack only if the system default says so.
/// `nodelay` is the route's TCP_NODELAY, for the listener to pass on ([`pass_nodelay_on`]).
///
/// Never SO_REUSEPORT: the kernel admits any process of the same user into a SO_REUSEPORT group, so a
/// second edgefwd on the address would bind it too and silently take a share of the clients. Without
/// it that second bind fails with EADDRINUSE. `--threads` reactors share one socket instead
/// ([`share_listener`]).
pub(crate) fn bind_listener(
    addr: SocketAddr,
    backlog: i32,
    nodelay: bool,
) -> io::Result<TcpListener> {
    let socket = stream_socket(addr)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    // Before listen(2): a connection is cloned from the listener when its handshake completes, so one
    // completed between listen(2) and a later setsockopt would not get the option.
    pass_nodelay_on(&SockRef::from(&socket), nodelay)?;
    socket.listen(backlog)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Another descriptor (dup(2), close-on-exec) for the same listening socket, for another reactor to
/// register in its own poller: one accept queue, one set of options, drained by whichever reactor
/// calls accept(2) first. The socket stays listening until the last descriptor is closed, and an
/// epoll registration outlives the close of its descriptor while another one keeps the socket open,
/// so a reactor deregisters a shared listener before dropping it.
pub(crate) fn share_listener(listener: &TcpListener) -> io::Result<TcpListener> {
    let socket = SockRef::from(listener).try_clone()?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Starts a non-blocking connect. `Ok` means the connect is in progress (or, rarely, done); completion is
/// reported by a writable or error event, and settled by the event alone where it can be
/// ([`crate::datapath::readiness::Event::proves_connected`]), by [`connect_result`] otherwise.
pub(crate) fn start_connect(addr: SocketAddr, options: StreamOptions) -> io::Result<TcpStream> {
    let socket = stream_socket(addr)?;
    apply_options(&SockRef::from(&socket), options)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(err) => return Err(err),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Applies TCP_NODELAY and keepalive to a connecting socket.
fn apply_options(socket: &SockRef<'_>, options: StreamOptions) -> io::Result<()> {
    if options.nodelay {
        socket.set_tcp_nodelay(true)?;
    }
    apply_keepalive(socket, options)
}

fn apply_keepalive(socket: &SockRef<'_>, options: StreamOptions) -> io::Result<()> {
    if let Some(idle) = options.keepalive {
        socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    Ok(())
}

/// Whether a socket returned by accept(2) starts with its listener's TCP_NODELAY. Linux clones each
/// connection from the listening socket when its handshake completes, TCP_NODELAY included
/// (`test_accepted_socket_gets_the_listeners_nodelay` checks it), so one setsockopt on the listener
/// replaces one per client: 1 of the 18 syscalls a short connection cost. Elsewhere each accepted
/// socket gets its own.
const ACCEPT_INHERITS_NODELAY: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Sets a listener's TCP_NODELAY to what its route asks, where accepted sockets inherit it (nothing
/// elsewhere; see [`apply_accepted_options`]). `bind_listener` sets it before listen(2); a reload sets
/// it again on a listener it hands to another route: connections completed after that get the new
/// setting, those already waiting in the backlog keep the old one.
pub(crate) fn pass_nodelay_on(listener: &SockRef<'_>, nodelay: bool) -> io::Result<()> {
    if ACCEPT_INHERITS_NODELAY {
        listener.set_tcp_nodelay(nodelay)?;
    }
    Ok(())
}

/// Applies TCP_NODELAY (unless the listener passed it on) and keepalive to an accepted socket.
pub(crate) fn apply_accepted_options(
    socket: &SockRef<'_>,
    options: StreamOptions,
) -> io::Result<()> {
    if options.nodelay && !ACCEPT_INHERITS_NODELAY {
        socket.set_tcp_nodelay(true)?;
    }
    apply_keepalive(socket, options)
}

/// Where a pending connect stands, per mio's `TcpStream::connect` docs: a writable event is not proof in
/// general (a failed connect is writable too, with its error); `peer_addr` succeeding is what proves
/// the connection, and `take_error` tells a failed connect from one still in progress.
#[derive(Debug)]
pub(crate) enum ConnectState {
    Pending,
    Connected,
    Failed(io::Error),
}

/// Checks a connecting socket after an event that does not settle it by itself (all of them for
/// probes and warm connections). `peer_addr` is asked first: on the common path, a
/// connect that succeeded, one getpeername(2) settles it and the SO_ERROR read is skipped (one syscall
/// less per connection). A socket still in SYN_SENT and one whose connect failed both answer ENOTCONN
/// (EINVAL on macOS once a failed socket is shut down both ways); only then does `take_error` tell
/// them apart, and name the failure (ECONNREFUSED, ...).
pub(crate) fn connect_result(stream: &TcpStream) -> ConnectState {
    let einval = match stream.peer_addr() {
        Ok(_) => return ConnectState::Connected,
        Err(err) if err.kind() == io::ErrorKind::NotConnected => None,
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Some(err),
        Err(err) => return ConnectState::Failed(err),
    };
    match (stream.take_error(), einval) {
        (Ok(Some(err)) | Err(err), _) => ConnectState::Failed(err),
        // EINVAL with no error left to name: a socket that is shut down, not one still connecting.
        (Ok(None), Some(err)) => ConnectState::Failed(err),
        (Ok(None), None) => ConnectState::Pending,
    }
}

/// Makes the next close send RST instead of FIN: the peer must see an abort, not a clean end of stream.
pub(crate) fn set_reset_on_close(stream: &TcpStream) {
    // Failure only means the socket is already dead, in which case the close is an abort anyway.
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Whether a connection waits in `listener`'s accept queue, asked without taking it: poll(2) with a
/// zero timeout. A listener's cached ready bit may be stale (set when accepting stopped at a limit
/// before a WouldBlock proved the queue empty); this asks the kernel. An error answers yes: the
/// accept that follows will say what is wrong.
pub(crate) fn has_queued(listener: &impl std::os::fd::AsRawFd) -> bool {
    let mut entry = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `entry` is one initialised pollfd that outlives the call and nfds is 1, so poll reads
    // and writes (only `revents`) inside it; the descriptor is the listener's, open while borrowed.
    // A zero timeout never blocks.
    let ready = unsafe { libc::poll(&mut entry, 1, 0) };
    ready != 0
}

/// How many connections wait in a TCP `listener`'s accept queue: for a listening socket, Linux reports
/// its accept backlog in `TCP_INFO`'s `tcpi_unacked`. `None` if the kernel does not say.
#[cfg(target_os = "linux")]
pub(crate) fn queued(listener: &impl std::os::fd::AsRawFd) -> Option<u32> {
    // SAFETY: `tcp_info` is a C struct of integers, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which is that large and outlives the
    // call, and stores the length it wrote in `len`; the descriptor is the listener's, open while
    // borrowed.
    let ret = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::addr_of_mut!(info).cast(),
            &mut len,
        )
    };
    (ret == 0).then_some(info.tcpi_unacked)
}

/// How many connections wait in a TCP listener's accept queue: not asked off Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn queued(_listener: &impl std::os::fd::AsRawFd) -> Option<u32> {
    None
}

/// An I/O result reduced to the cases a pump treats differently (sozu's `SocketResult`).
#[derive(Debug)]
pub(super) enum IoOutcome {
    /// Bytes moved.
    Done(usize),
    /// Read returned 0: the peer sent FIN.
    Eof,
    /// The kernel has nothing (or no room) for us now; wait for the next edge.
    WouldBlock,
    /// A signal interrupted the call; try again.
    Interrupted,
    /// The connection is broken (reset, EPIPE, ...).
    Failed,
}

impl From<io::Result<usize>> for IoOutcome {
    fn from(result: io::Result<usize>) -> IoOutcome {
        match result {
            Ok(0) => IoOutcome::Eof,
            Ok(n) => IoOutcome::Done(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => IoOutcome::WouldBlock,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => IoOutcome::Interrupted,
            Err(_) => IoOutcome::Failed,
        }
    }
}

/// True for the accept errors that concern one connection only (a signal, a client that reset
/// before it was accepted): the next accept goes on as if nothing happened.
pub(crate) fn is_passing_accept_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
    )
}

/// True for the accept errors that mean "out of descriptors or memory": back off instead of spinning.
pub(crate) fn is_resource_exhaustion(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    use crate::datapath::readiness::Event;

    /// `queued` counts the connections the kernel completed and nobody accepted yet.
    #[cfg(target_os = "linux")]
    #[test]
    fn test_queued_counts_the_accept_queue() {
        let listener = bind_listener("127.0.0.1:0".parse().expect("addr"), 16, true).expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(queued(&listener), Some(0));
        let _clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while queued(&listener) != Some(3) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(queued(&listener), Some(3));
        let _ = listener.accept().expect("accept");
        assert_eq!(queued(&listener), Some(2));
    }

    /// `has_queued` sees a connection the kernel completed and not yet accepted, and only that.
    #[test]
    fn test_has_queued_sees_the_accept_queue() {
        let listener = bind_listener("127.0.0.1:0".parse().expect("addr"), 16, true).expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert!(!has_queued(&listener));
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !has_queued(&listener) {
            assert!(std::time::Instant::now() < deadline, "never queued");
            std::thread::sleep(Duration::from_millis(5));
        }
        let (_accepted, _) = listener.accept().expect("accept");
        assert!(!has_queued(&listener));
    }

    #[test]
    fn test_io_outcome_classification() {
        assert!(matches!(IoOutcome::from(Ok(0)), IoOutcome::Eof));
        assert!(matches!(IoOutcome::from(Ok(5)), IoOutcome::Done(5)));
        let would_block = io::Error::from(io::ErrorKind::WouldBlock);
        assert!(matches!(
            IoOutcome::from(Err(would_block)),
            IoOutcome::WouldBlock
        ));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(IoOutcome::from(Err(reset)), IoOutcome::Failed));
    }

    #[test]
    fn test_resource_exhaustion() {
        assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_resource_exhaustion(&io::Error::from_raw_os_error(
            libc::ECONNRESET
        )));
    }

    #[test]
    fn test_passing_accept_error() {
        for passing in [libc::EINTR, libc::ECONNABORTED] {
            assert!(is_passing_accept_error(&io::Error::from_raw_os_error(
                passing
            )));
        }
        for stopping in [libc::EAGAIN, libc::EMFILE] {
            assert!(!is_passing_accept_error(&io::Error::from_raw_os_error(
                stopping
            )));
        }
    }

    /// What `ACCEPT_INHERITS_NODELAY` relies on (on Linux `apply_accepted_options` leaves TCP_NODELAY
    /// alone, so only the listener can have set it), and a reload turning it off and on again: the
    /// setting a client ends up with, read back from the socket accept(2) gave.
    #[test]
    fn test_accepted_socket_gets_the_listeners_nodelay() {
        let options = |nodelay| StreamOptions {
            nodelay,
            keepalive: None,
        };
        let listener = bind_listener("127.0.0.1:0".parse().expect("addr"), 16, true).expect("bind");
        let addr = listener.local_addr().expect("addr");
        for (at, nodelay) in [true, false, true].into_iter().enumerate() {
            // The first round checks what `bind_listener` set; the others what a reload sets.
            if at > 0 {
                pass_nodelay_on(&SockRef::from(&listener), nodelay).expect("set on listener");
            }
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let accepted = accept_within(&listener, Duration::from_secs(5));
            apply_accepted_options(&SockRef::from(&accepted), options(nodelay)).expect("options");
            assert_eq!(
                accepted.nodelay().expect("read TCP_NODELAY"),
                nodelay,
                "the accepted socket does not have the listener's TCP_NODELAY"
            );
        }
    }

    /// What `--threads` relies on: a shared descriptor accepts the clients of the one socket, and
    /// goes on listening when the original descriptor is closed; while either is open, no other
    /// listener can bind the address.
    #[test]
    fn test_shared_listener_is_the_same_socket_and_no_one_else_binds() {
        let first = bind_listener("127.0.0.1:0".parse().expect("addr"), 16, true).expect("bind");
        let addr = first.local_addr().expect("addr");
        let shared = share_listener(&first).expect("share");
        assert_eq!(shared.local_addr().expect("addr"), addr);
        let again = bind_listener(addr, 16, true).map(|_| ());
        assert_eq!(
            again.map_err(|err| err.kind()),
            Err(io::ErrorKind::AddrInUse),
            "a second listener bound an address in use"
        );
        drop(first);
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let accepted = accept_within(&shared, Duration::from_secs(5));
        assert_eq!(
            accepted.peer_addr().expect("peer"),
            client.local_addr().expect("local")
        );
    }

    /// Accepts one connection from a non-blocking listener, waiting at most `limit`.
    fn accept_within(listener: &TcpListener, limit: Duration) -> TcpStream {
        let deadline = std::time::Instant::now() + limit;
        loop {
            match listener.accept() {
                Ok((stream, _)) => return stream,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "nothing to accept");
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(err) => panic!("accept: {err}"),
            }
        }
    }

    /// The events a connecting socket's registration reports within `limit` (edge-triggered, as the
    /// reactor registers upstreams).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn connect_events(stream: &mut TcpStream, limit: Duration) -> Vec<Event> {
        let mut poll = mio::Poll::new().expect("poll");
        let both = mio::Interest::READABLE | mio::Interest::WRITABLE;
        poll.registry()
            .register(stream, mio::Token(7), both)
            .expect("register");
        let mut events = mio::Events::with_capacity(8);
        let deadline = std::time::Instant::now() + limit;
        let mut seen = Vec::new();
        while seen.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            poll.poll(&mut events, Some(left)).expect("poll");
            seen.extend(events.iter().map(Event::from));
        }
        seen
    }

    /// What [`Event::proves_connected`] relies on, with real sockets: a connect that succeeds is proven by
    /// its first event; one still in SYN_SENT (its SYN dropped by a listener whose accept queue is full)
    /// and one refused report nothing that would pass for a connection.
    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn test_only_a_completed_connect_has_an_event_that_proves_it() {
        let options = StreamOptions {
            nodelay: true,
            keepalive: None,
        };
        let listener = bind_listener("127.0.0.1:0".parse().expect("addr"), 0, true).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut first = start_connect(addr, options).expect("connect");
        let events = connect_events(&mut first, Duration::from_secs(5));
        assert!(
            events.first().is_some_and(Event::proves_connected),
            "a completed connect: {events:?}"
        );
        assert!(matches!(connect_result(&first), ConnectState::Connected));

        // Backlog 0: the queue is full with one or two unaccepted connections, later SYNs are dropped.
        let mut waiting: Vec<TcpStream> = (0..3)
            .map(|_| start_connect(addr, options).expect("connect"))
            .collect();
        let mut stuck = waiting.pop().expect("a socket");
        let events = connect_events(&mut stuck, Duration::from_millis(200));
        assert!(
            matches!(connect_result(&stuck), ConnectState::Pending),
            "the last connect should still be in SYN_SENT"
        );
        assert!(
            !events.iter().any(Event::proves_connected),
            "SYN_SENT: {events:?}"
        );

        let refused = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("probe port");
        if let Ok(mut stream) = start_connect(refused, options) {
            let events = connect_events(&mut stream, Duration::from_secs(5));
            assert!(!events.is_empty(), "a refused connect reported nothing");
            assert!(
                !events.iter().any(Event::proves_connected),
                "refused: {events:?}"
            );
        }
        drop(listener);
    }

    #[test]
    fn test_connect_to_refused_port_fails_not_connected() {
        // A real loopback port with nothing listening: the connect must end in Failed, never Connected.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("probe port");
        let options = StreamOptions {
            nodelay: true,
            keepalive: None,
        };
        let stream = match start_connect(port, options) {
            Ok(stream) => stream,
            Err(err) => {
                assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
                return;
            }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match connect_result(&stream) {
                ConnectState::Failed(err) => {
                    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
                    return;
                }
                ConnectState::Connected => panic!("a refused connect was reported connected"),
                ConnectState::Pending => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "connect never resolved"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    #[test]
    fn test_connect_to_listening_port_ends_connected() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let options = StreamOptions {
            nodelay: true,
            keepalive: None,
        };
        let stream = start_connect(addr, options).expect("connect");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match connect_result(&stream) {
                ConnectState::Connected => break,
                ConnectState::Failed(err) => panic!("a connect to a listener failed: {err}"),
                ConnectState::Pending => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "connect never resolved"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let (accepted, _) = listener.accept().expect("accept");
        assert_eq!(
            accepted.peer_addr().expect("peer"),
            stream.local_addr().expect("local")
        );
    }
}
