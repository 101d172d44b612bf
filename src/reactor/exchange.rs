//! The small HTTP servers the reactor runs beside its routes (`--metrics`, `--admin`): a listener whose
//! connections each carry one request and one response, then close. No thread, no HTTP library.
//!
//! [`Front`] is the listener side: accept until WouldBlock after the event batch, bounded by count
//! (`max`, the oldest connection going first), by age ([`EXCHANGE_TIMEOUT`]) and by accept errors of its
//! own (a fault of these endpoints never stops forwarding). [`Exchange`] is one connection: read a request
//! head (and the small body its `Content-Length` announces), write one response, FIN, linger. The same
//! edge-triggered rules apply as for pairs: read and write until WouldBlock, come back on the next edge.
//!
//! The one module besides the reactor (with `scrape` and `admin`) that is handed the `Registry`: these
//! listeners and their connections are a small, separate world that never meets a pair.

use std::io;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::datapath::net;
use crate::datapath::stream::{Conn, Stream};
use crate::throttle::Throttle;

/// A connection older than this is closed when the next one arrives.
pub(super) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a listener waits after an accept error of its own.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Largest request, head and body together.
const MAX_REQUEST: usize = 8 * 1024;

/// Most bytes an exchange reads and drops after its response before closing anyway.
const MAX_DISCARD: usize = 64 * 1024;

/// A listening socket whose connections [`Front`] serves.
pub(super) trait Accept: Source {
    type Stream: Stream + Source;

    fn accept_one(&self) -> io::Result<Self::Stream>;
}

impl Accept for TcpListener {
    type Stream = TcpStream;

    fn accept_one(&self) -> io::Result<TcpStream> {
        self.accept().map(|(stream, _)| stream)
    }
}

impl Accept for UnixListener {
    type Stream = Conn;

    fn accept_one(&self) -> io::Result<Conn> {
        self.accept().map(|(stream, _)| Conn::Unix(stream))
    }
}

/// One of the reactor's HTTP listeners and the exchanges in progress.
#[derive(Debug)]
pub(super) struct Front<L: Accept> {
    pub(super) listener: L,
    /// `metrics`, `admin`: how log lines name it.
    name: &'static str,
    /// Most exchanges at once; a newcomer beyond it takes the place of the oldest.
    max: usize,
    /// The token of exchange slot N.
    token_of: fn(usize) -> Token,
    /// An edge arrived that no accept has drained yet.
    ready: bool,
    /// After an accept error other than running out of fds: this listener alone waits until then.
    retry_at: Option<Instant>,
    error_warning: Throttle,
    pub(super) exchanges: Slab<Exchange<L::Stream>>,
    /// The serial of the next exchange.
    next_serial: u64,
}

impl<L: Accept> Front<L> {
    /// Registers `listener` under `token`; exchange N will be registered under `token_of(N)`.
    pub(super) fn serve(
        mut listener: L,
        registry: &Registry,
        (name, token, token_of): (&'static str, Token, fn(usize) -> Token),
        max: usize,
    ) -> io::Result<Front<L>> {
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(Front {
            listener,
            name,
            max,
            token_of,
            ready: false,
            retry_at: None,
            error_warning: Throttle::new(Duration::from_secs(10)),
            exchanges: Slab::new(),
            next_serial: 0,
        })
    }

    /// Stops serving: the listener is deregistered (a successor may hold the same socket, which must
    /// wake only it), then closed with the exchanges in progress.
    pub(super) fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.listener);
    }

    /// An edge arrived that no accept has drained yet, and no retry wait is running.
    pub(super) fn is_ready(&self, now: Instant) -> bool {
        self.ready && self.retry_at.is_none_or(|at| at <= now)
    }

    /// When a queued connection is to be accepted again after an error, for the poll timeout.
    pub(super) fn retry_deadline(&self) -> Option<Instant> {
        self.retry_at.filter(|_| self.ready)
    }

    /// Notes the listener's edge; the accepts happen after the event batch, in [`accept`](Self::accept).
    pub(super) fn on_listener_event(&mut self) {
        self.ready = true;
    }

    /// Accepts until WouldBlock. Exchanges past their age are dropped first, and a connection beyond
    /// `max` takes the place of the oldest rather than wait in the backlog.
    ///
    /// On an accept error the edge is kept: the connection is still queued and no new edge will
    /// announce it. Running out of fds (EMFILE and the like) is the whole process's problem: the error
    /// is returned and the reactor pauses every accept. Any other error makes this listener alone wait
    /// `ACCEPT_RETRY` (100 ms). A connection reset while queued (ECONNABORTED) is skipped.
    pub(super) fn accept(&mut self, registry: &Registry, now: Instant) -> Option<io::Error> {
        if !self.is_ready(now) {
            return None;
        }
        self.retry_at = None;
        self.exchanges
            .retain(|_, exchange| now.duration_since(exchange.accepted) < EXCHANGE_TIMEOUT);
        loop {
            match self.listener.accept_one() {
                Ok(stream) => self.admit(stream, registry, now),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.ready = false;
                    return None;
                }
                Err(err) if net::is_passing_accept_error(&err) => {}
                Err(err) if net::is_resource_exhaustion(&err) => {
                    debug!("{} accept failed: {err}", self.name);
                    return Some(err);
                }
                Err(err) => {
                    if let Some(suppressed) = self.error_warning.allow(now) {
                        warn!("{} accept failed: {err}; retrying in {}ms ({suppressed} similar warnings suppressed)", self.name, ACCEPT_RETRY.as_millis());
                    }
                    self.retry_at = Some(now + ACCEPT_RETRY);
                    return None;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: L::Stream, registry: &Registry, now: Instant) {
        if self.exchanges.len() >= self.max {
            // Full: the oldest goes. Refusing the newcomer instead would let a client that keeps idle
            // connections open starve every real request, and a real one is answered in one turn, so
            // the oldest is the likeliest idler.
            let oldest = self
                .exchanges
                .iter()
                .min_by_key(|(_, exchange)| exchange.accepted)
                .map(|(key, _)| key);
            if let Some(key) = oldest {
                debug!(
                    "{}: {} connections open, closing the oldest",
                    self.name, self.max
                );
                self.exchanges.remove(key);
            }
        }
        let entry = self.exchanges.vacant_entry();
        let both = Interest::READABLE | Interest::WRITABLE;
        if registry
            .register(&mut stream, (self.token_of)(entry.key()), both)
            .is_ok()
        {
            entry.insert(Exchange::new(stream, now, self.next_serial));
            self.next_serial += 1;
        }
    }
}

/// A request read whole: its head (through the blank line) and its body.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request<'a> {
    Complete {
        head: &'a [u8],
        body: &'a [u8],
    },
    /// Larger than `MAX_REQUEST`: answered 431.
    TooLarge,
}

/// Where an exchange stands after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// Waiting for more of the request, for its answer, or for room to write.
    Pending,
    /// Response written, or the client went away: close.
    Finished,
}

/// One connection of a [`Front`].
#[derive(Debug)]
pub(super) struct Exchange<S> {
    stream: S,
    pub(super) accepted: Instant,
    /// Unique among its front's exchanges over time: tells a reused slot from the exchange that had it.
    pub(super) serial: u64,
    request: Vec<u8>,
    /// The response, once there is one (the request may wait for its answer: `admin`).
    response: Option<Vec<u8>>,
    /// The request is whole and waits for its answer ([`Exchange::reply`]): events are ignored
    /// meanwhile, so a late edge (the client's FIN, a writable edge) cannot put the request again.
    parked: bool,
    written: usize,
    /// FIN sent after the response; reading only to throw away (see [`Exchange::linger`]).
    lingering: bool,
    /// Bytes thrown away since.
    discarded: usize,
}

impl<S: Stream> Exchange<S> {
    fn new(stream: S, accepted: Instant, serial: u64) -> Exchange<S> {
        Exchange {
            stream,
            accepted,
            serial,
            request: Vec::new(),
            response: None,
            parked: false,
            written: 0,
            lingering: false,
            discarded: 0,
        }
    }

    /// Advances the exchange after an event. While there is no response, reads the request;
    /// once it is whole, `respond` gives the response, or `None` when the answer comes later
    /// ([`Exchange::reply`]); nothing more is read meanwhile.
    pub(super) fn advance(
        &mut self,
        respond: impl FnOnce(Request<'_>) -> Option<Vec<u8>>,
    ) -> Progress {
        if self.parked {
            return Progress::Pending;
        }
        if self.response.is_none() {
            match self.read_request() {
                Ok(true) => {
                    let request = split(&self.request).unwrap_or(Request::TooLarge);
                    match respond(request) {
                        Some(response) => self.response = Some(response),
                        None => {
                            self.parked = true;
                            return Progress::Pending;
                        }
                    }
                }
                Ok(false) => return Progress::Pending,
                Err(_) => return Progress::Finished,
            }
        }
        self.send()
    }

    /// The answer a parked request waited for: written at once, as far as the socket takes it.
    pub(super) fn reply(&mut self, response: Vec<u8>) -> Progress {
        self.parked = false;
        self.response = Some(response);
        self.send()
    }

    fn send(&mut self) -> Progress {
        match self.write_response() {
            Ok(true) => self.linger(),
            Ok(false) => Progress::Pending,
            Err(_) => Progress::Finished,
        }
    }

    /// The response is out: send FIN after it, then read and drop whatever the client still sends
    /// until its own FIN, and only then close (nginx's lingering close). Closing with unread bytes
    /// (a request body, a pipelined second request) would make the kernel send RST, and an RST can
    /// reach the client before it has read the response. Bounded by [`MAX_DISCARD`] and, like any
    /// exchange, by [`EXCHANGE_TIMEOUT`] and its front's count.
    fn linger(&mut self) -> Progress {
        if !self.lingering {
            if self.stream.shutdown_write().is_err() {
                return Progress::Finished;
            }
            self.lingering = true;
        }
        let mut chunk = [0u8; 1024];
        while self.discarded < MAX_DISCARD {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Progress::Finished,
                Ok(n) => self.discarded += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Finished,
            }
        }
        Progress::Finished
    }

    /// Reads until the request is whole (`Ok(true)`: its head, then as much body as its
    /// `Content-Length` says), WouldBlock, EOF or the size bound.
    fn read_request(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 1024];
        loop {
            if split(&self.request).is_some() {
                return Ok(true);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.request.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Writes until the response is out (`Ok(true)`) or WouldBlock (`Ok(false)`).
    fn write_response(&mut self) -> io::Result<bool> {
        let Some(response) = self.response.as_deref() else {
            return Ok(false);
        };
        while self.written < response.len() {
            match self.stream.write(&response[self.written..]) {
                Ok(n) => self.written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }
}

/// The request in `bytes`, once it is whole: its head has ended and the `Content-Length` bytes of body
/// it announced (none without the header) have arrived; `TooLarge` past [`MAX_REQUEST`]. `None`: more
/// is to come.
fn split(bytes: &[u8]) -> Option<Request<'_>> {
    let Some(end) = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
    else {
        return (bytes.len() >= MAX_REQUEST).then_some(Request::TooLarge);
    };
    let (head, rest) = bytes.split_at(end);
    let length = content_length(head);
    if end + length > MAX_REQUEST {
        return Some(Request::TooLarge);
    }
    rest.get(..length)
        .map(|body| Request::Complete { head, body })
}

/// The `Content-Length` of a head; 0 without one (or with one that is not a number).
fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// A whole HTTP/1.1 response that closes its connection.
pub(super) fn http(status: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_split_waits_for_the_head_and_its_body() {
        assert_eq!(split(b"GET / HTTP/1.1\r\n"), None);
        let head = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(split(head), Some(Request::Complete { head, body: b"" }));
        let put = b"PUT /x HTTP/1.1\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(split(put), None);
        let whole = [&put[..], b"1234"].concat();
        assert_eq!(
            split(&whole),
            Some(Request::Complete {
                head: put,
                body: b"123"
            })
        );
    }

    /// A parked request is put once: later events (the client's FIN here) do not read or answer it
    /// again; the reply is written, then FIN, then the exchange finishes at the client's FIN.
    #[test]
    fn test_parked_request_is_put_once() {
        use crate::datapath::stream::script::{Incoming, Scripted};
        let stream = Scripted::default();
        stream.data(b"DELETE /connections/1 HTTP/1.1\r\n\r\n");
        let mut exchange = Exchange::new(stream.clone(), Instant::now(), 0);
        let mut asked = 0;
        let mut park = |_: Request<'_>| {
            asked += 1;
            None
        };
        assert_eq!(exchange.advance(&mut park), Progress::Pending);
        stream.incoming([Incoming::Eof]);
        assert_eq!(exchange.advance(&mut park), Progress::Pending);
        assert_eq!(asked, 1, "the request was put again");
        stream.room(1024);
        assert_eq!(
            exchange.reply(b"HTTP/1.1 200 OK\r\n\r\n".to_vec()),
            Progress::Finished
        );
        assert_eq!(stream.written(), b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(stream.shutdowns(), 1);
    }

    #[test]
    fn test_split_bounds_the_request() {
        assert_eq!(split(&[b'a'; MAX_REQUEST]), Some(Request::TooLarge));
        assert_eq!(split(&[b'a'; MAX_REQUEST - 1]), None);
        let huge = format!("PUT /x HTTP/1.1\r\nContent-Length: {MAX_REQUEST}\r\n\r\n");
        assert_eq!(split(huge.as_bytes()), Some(Request::TooLarge));
    }
}
