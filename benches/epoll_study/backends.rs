//! Backends: the mio echo server, the sink, one-shot scripted backends, client helpers.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

pub(crate) use crate::support::echo::EchoServer;
use crate::{Ctx, R};

/// A loopback listener with a deep backlog (5,000 connections arrive in bursts), optionally with a
/// small receive buffer that accepted sockets inherit.
fn listen_socket(backlog: i32, rcvbuf: Option<usize>) -> R<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ctx("backend socket")?;
    socket.set_reuse_address(true).ctx("SO_REUSEADDR")?;
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).ctx("SO_RCVBUF")?;
    }
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .ctx("bind backend")?;
    socket.listen(backlog).ctx("listen backend")?;
    Ok(socket)
}

/// Starts the echo backend (`support::echo`): one mio thread, cheap enough for 5,000 connections and
/// never the bottleneck of a 64-byte ping-pong, with a deep backlog for connections that arrive in
/// bursts.
pub(crate) fn start_echo() -> R<EchoServer> {
    EchoServer::start(1, 8192).ctx("start the echo backend")
}

/// How a sink reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SinkCfg {
    /// Bytes asked for per read.
    pub(crate) chunk: usize,
    /// Pause after every read (a slow reader), zero for a fast one.
    pub(crate) delay: Duration,
    /// Pause before the first read (a reader that stalls, so every buffer on the way fills up).
    pub(crate) initial_delay: Duration,
    /// SO_RCVBUF for accepted sockets, to make backpressure reach edgefwd sooner.
    pub(crate) rcvbuf: Option<usize>,
}

impl SinkCfg {
    pub(crate) fn fast() -> SinkCfg {
        SinkCfg {
            chunk: 1 << 20,
            delay: Duration::ZERO,
            initial_delay: Duration::ZERO,
            rcvbuf: None,
        }
    }
}

/// A backend that reads and discards, one thread per connection, and closes after the peer's FIN.
pub(crate) struct Sink {
    pub(crate) addr: SocketAddr,
    pub(crate) received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

impl Sink {
    pub(crate) fn start(cfg: SinkCfg) -> R<Sink> {
        let socket = listen_socket(1024, cfg.rcvbuf)?;
        socket.set_nonblocking(true).ctx("nonblocking sink")?;
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr().ctx("sink address")?;
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, flag) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = thread::Builder::new()
            .name("sink".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (count, flag) = (Arc::clone(&count), Arc::clone(&flag));
                            thread::spawn(move || sink_conn(stream, cfg, &count, &flag));
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
            .ctx("start sink thread")?;
        Ok(Sink {
            addr,
            received,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sink_conn(mut stream: TcpStream, cfg: SinkCfg, count: &AtomicU64, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; cfg.chunk];
    thread::sleep(cfg.initial_delay);
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::SeqCst);
                if !cfg.delay.is_zero() {
                    thread::sleep(cfg.delay);
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// A backend for exactly one connection, run by `script` on its own thread.
pub(crate) fn one_shot<F>(script: F) -> R<(SocketAddr, JoinHandle<R<()>>)>
where
    F: FnOnce(TcpStream) -> R<()> + Send + 'static,
{
    let socket = listen_socket(16, None)?;
    socket.set_nonblocking(true).ctx("nonblocking backend")?;
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr().ctx("backend address")?;
    let thread = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).ctx("blocking backend")?;
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .ctx("backend timeout")?;
                    return script(stream);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err("the one-shot backend saw no connection within 10 s".into());
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                Err(err) => return Err(format!("one-shot backend accept: {err}")),
            }
        }
    });
    Ok((addr, thread))
}

pub(crate) fn join_backend(thread: JoinHandle<R<()>>) -> R<()> {
    thread
        .join()
        .map_err(|_| "a backend thread panicked".to_string())?
}

/// Makes the next close of `stream` send RST.
pub(crate) fn set_linger0(stream: &TcpStream) -> R<()> {
    SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .ctx("SO_LINGER 0")
}

/// A blocking loopback client with timeouts on both directions.
pub(crate) fn client(addr: SocketAddr, timeout: Duration) -> R<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .ctx(&format!("connect to edgefwd at {addr}"))?;
    stream.set_read_timeout(Some(timeout)).ctx("read timeout")?;
    stream
        .set_write_timeout(Some(timeout))
        .ctx("write timeout")?;
    Ok(stream)
}

/// Reads until EOF; returns the bytes and how the stream ended (`"EOF"` or the error).
pub(crate) fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, "EOF".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return (got, format!("{:?}", err.kind())),
        }
    }
}
