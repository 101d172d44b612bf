//! An echo server on one edge-triggered mio thread: cheap enough for thousands of connections, so
//! it is never the bottleneck of a load test or a ping-pong bench. It writes back what it has read
//! before it reads more (so a client that does not read holds it back, with bounded memory) and
//! passes the client's FIN back once everything is echoed. Accepted sockets get TCP_NODELAY, so a
//! small response leaves at once, as a real server's would.
//!
//! It can listen on several ports: a forwarder's upstream connects end in TIME_WAIT on the
//! forwarder's side (it sends the first FIN), and spreading them over several destination ports
//! gives each its own ~28k source ports.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::net::{TcpListener as MioListener, TcpStream as MioStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, Socket, Type};

const WAKE: Token = Token(usize::MAX - 1);
/// Listener `i` has token `LISTENERS_FROM + i`, far above any connection's slab key.
const LISTENERS_FROM: usize = usize::MAX / 2;

/// The running server; [`EchoServer::stop`] (or dropping it) stops its thread and closes every
/// connection.
pub struct EchoServer {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// One connection: what it read and has not yet written back.
struct EchoConn {
    stream: MioStream,
    pending: Vec<u8>,
    read_closed: bool,
}

impl EchoServer {
    /// Starts the server on `ports` ports of 127.0.0.1, each with a listen backlog of `backlog`
    /// (connections that arrive in bursts of thousands need a deep one).
    pub fn start(ports: usize, backlog: i32) -> io::Result<EchoServer> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let mut listeners = Vec::with_capacity(ports);
        let mut addrs = Vec::with_capacity(ports);
        for index in 0..ports {
            let mut listener = listen(backlog)?;
            addrs.push(listener.local_addr()?);
            let token = Token(LISTENERS_FROM + index);
            poll.registry()
                .register(&mut listener, token, Interest::READABLE)?;
            listeners.push(listener);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("echo".into())
            .spawn(move || echo_loop(poll, &listeners, &flag))?;
        Ok(EchoServer {
            addrs,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The first (or only) port's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every port's address, in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops the server and says whether it failed while running.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the echo server's thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            eprintln!("echo server: {err}");
        }
    }
}

/// A non-blocking listener on 127.0.0.1, port 0.
fn listen(backlog: i32) -> io::Result<MioListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(MioListener::from_std(socket.into()))
}

fn echo_loop(mut poll: Poll, listeners: &[MioListener], stop: &AtomicBool) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<EchoConn> = Slab::new();
    let mut buf = vec![0u8; 64 << 10];
    // Set when an accept failed for a reason other than WouldBlock (EMFILE): the listener stays
    // ready without a new edge, so retry every listener on a short poll timeout.
    let mut accept_retry = false;
    while !stop.load(Ordering::SeqCst) {
        let timeout = accept_retry.then_some(Duration::from_millis(10));
        if let Err(err) = poll.poll(&mut events, timeout) {
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if std::mem::take(&mut accept_retry) {
            for listener in listeners {
                accept_retry |= accept_all(&poll, listener, &mut conns);
            }
        }
        for event in events.iter() {
            match event.token() {
                WAKE => {}
                Token(t) if t >= LISTENERS_FROM => {
                    accept_retry |= accept_all(&poll, &listeners[t - LISTENERS_FROM], &mut conns);
                }
                Token(key) => {
                    let done = conns.get_mut(key).is_none_or(|conn| !serve(conn, &mut buf));
                    if done && conns.contains(key) {
                        let mut conn = conns.remove(key);
                        let _ = poll.registry().deregister(&mut conn.stream);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Accepts until WouldBlock (edge-triggered: the listener will not report the backlog again);
/// true when it stopped on an error (out of fds), so the caller retries without a new edge.
fn accept_all(poll: &Poll, listener: &MioListener, conns: &mut Slab<EchoConn>) -> bool {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                let both = Interest::READABLE | Interest::WRITABLE;
                if poll
                    .registry()
                    .register(&mut stream, Token(entry.key()), both)
                    .is_ok()
                {
                    entry.insert(EchoConn {
                        stream,
                        pending: Vec::new(),
                        read_closed: false,
                    });
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(_) => return true,
        }
    }
}

/// Echoes until WouldBlock (edge-triggered); false once the connection is finished (the peer's FIN
/// answered with ours after everything was written back) or broken. What is read is written back
/// straight from `buf`; only what the socket will not take yet is copied into `pending`, which is
/// almost always empty, so a request/response costs no copy and no allocation.
fn serve(conn: &mut EchoConn, buf: &mut [u8]) -> bool {
    loop {
        if !conn.pending.is_empty() {
            let Some(n) = write_some(&mut conn.stream, &conn.pending) else {
                return false;
            };
            conn.pending.drain(..n);
            if !conn.pending.is_empty() {
                return true; // wait for a writable edge
            }
        }
        if conn.read_closed {
            let _ = conn.stream.shutdown(Shutdown::Write);
            return false;
        }
        match conn.stream.read(buf) {
            Ok(0) => conn.read_closed = true,
            Ok(n) => match write_some(&mut conn.stream, &buf[..n]) {
                Some(written) => conn.pending.extend_from_slice(&buf[written..n]),
                None => return false,
            },
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return true,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Writes as much of `data` as the socket takes now; None on a socket error.
fn write_some(stream: &mut MioStream, data: &[u8]) -> Option<usize> {
    let mut off = 0;
    while off < data.len() {
        match stream.write(&data[off..]) {
            Ok(n) => off += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(off)
}
