//! Load: the mio ping-pong engine and the bulk sender.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

use crate::backends::{client, read_to_end};
use crate::{Ctx, R};

/// Connections opened per batch, so the bursts stay inside edgefwd's default backlog of 1024.
const CONNECT_BATCH: usize = 500;
/// How long opening (and warming) one batch of connections may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long outstanding requests may take to finish after the measured window.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// One client connection of the ping-pong engine.
struct PingConn {
    pub(crate) stream: MioStream,
    connected: bool,
    /// Bytes of the current request not yet written.
    to_write: usize,
    /// Bytes of the current response not yet read.
    to_read: usize,
    /// A request is outstanding (events on a connection without one are ignored).
    in_flight: bool,
    /// Takes part in the measured window (idle connections only do the warm-up exchange).
    active: bool,
}

/// N connections doing request/response ping-pong, all on one mio thread (this one): the load
/// generator costs one poll per batch of ready connections, however many there are.
pub(crate) struct PingPong {
    pub(crate) poll: Poll,
    pub(crate) events: Events,
    conns: Vec<PingConn>,
    pub(crate) message: Vec<u8>,
    scratch: Vec<u8>,
    /// Start a new request when a response completes.
    continuing: bool,
}

impl PingPong {
    /// Opens `active + idle` connections through edgefwd and completes one exchange on each, so every
    /// pair is established (and its rings empty) before anything is measured.
    pub(crate) fn open(
        target: SocketAddr,
        active: usize,
        idle: usize,
        message: usize,
    ) -> R<PingPong> {
        let mut engine = PingPong {
            poll: Poll::new().ctx("client poll")?,
            events: Events::with_capacity(1024),
            conns: Vec::with_capacity(active + idle),
            message: vec![0x61; message],
            scratch: vec![0u8; 64 << 10],
            continuing: false,
        };
        let total = active + idle;
        while engine.conns.len() < total {
            let first = engine.conns.len();
            let batch = CONNECT_BATCH.min(total - first);
            for i in first..first + batch {
                let mut stream = MioStream::connect(target).ctx(&format!(
                    "connect #{i} to edgefwd (fds or ephemeral ports?)"
                ))?;
                engine
                    .poll
                    .registry()
                    .register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .ctx("register client")?;
                engine.conns.push(PingConn {
                    stream,
                    connected: false,
                    to_write: message,
                    to_read: message,
                    in_flight: true,
                    active: i < active,
                });
            }
            let deadline = Instant::now() + OPEN_TIMEOUT;
            let mut done = 0u64;
            while done < batch as u64 {
                if Instant::now() > deadline {
                    return Err(format!(
                        "opening connections: only {} of {total} finished their first exchange within {OPEN_TIMEOUT:?}",
                        first as u64 + done
                    ));
                }
                done += engine.turn(Some(Duration::from_millis(100)))?;
            }
        }
        Ok(engine)
    }

    /// Runs the active connections for `window`, then lets outstanding requests finish. Returns the
    /// requests completed.
    pub(crate) fn run(&mut self, window: Duration) -> R<u64> {
        let len = self.message.len();
        self.continuing = true;
        let mut completed = 0;
        for i in 0..self.conns.len() {
            let conn = &mut self.conns[i];
            if conn.active {
                if conn.in_flight {
                    return Err(format!("client #{i}: still busy before the window"));
                }
                conn.to_write = len;
                conn.to_read = len;
                conn.in_flight = true;
                completed += self.service(i)?;
            }
        }
        let end = Instant::now() + window;
        while Instant::now() < end {
            completed += self.turn(Some(Duration::from_millis(10)))?;
        }
        self.continuing = false;
        // Every active connection has at most one request in flight.
        let settle = Instant::now() + SETTLE_TIMEOUT;
        let in_flight = |conns: &[PingConn]| conns.iter().filter(|c| c.in_flight).count();
        while in_flight(&self.conns) > 0 {
            if Instant::now() > settle {
                return Err(format!(
                    "{} requests still unanswered {SETTLE_TIMEOUT:?} after the window",
                    in_flight(&self.conns)
                ));
            }
            completed += self.turn(Some(Duration::from_millis(10)))?;
        }
        Ok(completed)
    }

    /// One poll; returns how many responses completed.
    fn turn(&mut self, timeout: Option<Duration>) -> R<u64> {
        if let Err(err) = self.poll.poll(&mut self.events, timeout) {
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(format!("client poll: {err}"));
        }
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        let mut completed = 0;
        for i in ready {
            completed += self.service(i)?;
        }
        Ok(completed)
    }

    /// Advances connection `i` as far as it goes; returns 1 if a response completed.
    fn service(&mut self, i: usize) -> R<u64> {
        let len = self.message.len();
        let continuing = self.continuing;
        let Some(conn) = self.conns.get_mut(i) else {
            return Ok(0);
        };
        if !conn.connected {
            if let Some(err) = conn.stream.take_error().ctx("client take_error")? {
                return Err(format!("client #{i}: connect to edgefwd failed: {err}"));
            }
            match conn.stream.peer_addr() {
                Ok(_) => conn.connected = true,
                Err(err) if err.kind() == io::ErrorKind::NotConnected => return Ok(0),
                Err(err) => return Err(format!("client #{i}: connect failed: {err}")),
            }
        }
        let mut completed = 0;
        while conn.in_flight {
            while conn.to_write > 0 {
                match conn.stream.write(&self.message[len - conn.to_write..]) {
                    Ok(n) => conn.to_write -= n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(format!("client #{i}: write: {err}")),
                }
            }
            while conn.to_read > 0 {
                match conn.stream.read(&mut self.scratch) {
                    Ok(0) => return Err(format!("client #{i}: edgefwd closed the connection")),
                    Ok(n) if n > conn.to_read => {
                        return Err(format!("client #{i}: {n} bytes for a {len}-byte response"))
                    }
                    Ok(n) => conn.to_read -= n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(format!("client #{i}: read: {err}")),
                }
            }
            if conn.to_read > 0 || conn.to_write > 0 {
                return Ok(completed);
            }
            completed += 1;
            conn.in_flight = continuing && conn.active;
            if conn.in_flight {
                conn.to_write = len;
                conn.to_read = len;
            }
        }
        Ok(completed)
    }
}

/// Sends `bytes` through edgefwd, half-closes, and waits for edgefwd's FIN (the sink closing after
/// our FIN, passed back). Returns the time from connect to that FIN.
pub(crate) fn bulk_send(target: SocketAddr, bytes: u64) -> R<Duration> {
    let start = Instant::now();
    let mut stream = client(target, Duration::from_secs(60))?;
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).ctx("bulk write")?;
        left -= n as u64;
    }
    stream.shutdown(Shutdown::Write).ctx("bulk shutdown")?;
    let (back, end) = read_to_end(&mut stream);
    if end != "EOF" || !back.is_empty() {
        return Err(format!(
            "bulk: expected a clean EOF and no data back, got {} bytes then {end}",
            back.len()
        ));
    }
    Ok(start.elapsed())
}
