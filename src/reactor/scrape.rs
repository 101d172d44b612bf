//! One `--metrics` HTTP exchange, served inside the reactor: read a request head, write one response,
//! close. No thread, no HTTP library: Prometheus needs nothing more than `GET /metrics`.
//!
//! The same edge-triggered rules apply as for pairs: read until WouldBlock, write until WouldBlock, and
//! come back on the next edge; accept until WouldBlock. A scrape that is slow or stuck is bounded by size
//! ([`MAX_REQUEST`]), by count ([`MAX_SCRAPES`]) and by age ([`SCRAPE_TIMEOUT`]).
//!
//! This is the one module besides the reactor that is handed the `Registry`: the metrics listener and its
//! connections are a small, separate world that never meets a pair.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use slab::Slab;

use crate::datapath::net;
use crate::throttle::Throttle;
use crate::token::{self, MAX_SCRAPES};

/// A scrape older than this is closed when the next one arrives.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `--metrics` listener and the scrapes in progress.
#[derive(Debug)]
pub(super) struct MetricsServer {
    listener: TcpListener,
    /// An edge arrived that no accept has drained yet.
    ready: bool,
    /// After an accept error other than running out of fds: the metrics listener alone waits until
    /// then. Forwarding does not stop for a fault of the metrics endpoint.
    retry_at: Option<Instant>,
    error_warning: Throttle,
    scrapes: Slab<Scrape>,
}

/// How long the metrics listener waits after an accept error of its own.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

impl MetricsServer {
    /// Binds and registers the metrics listener.
    pub(super) fn bind(addr: SocketAddr, registry: &Registry) -> io::Result<MetricsServer> {
        let listener = net::bind_listener(addr, 128, false)?;
        MetricsServer::serve(listener, registry)
    }

    /// Registers a listener bound already: one a predecessor handed over at a binary upgrade.
    pub(super) fn serve(
        mut listener: TcpListener,
        registry: &Registry,
    ) -> io::Result<MetricsServer> {
        registry.register(&mut listener, token::METRICS, Interest::READABLE)?;
        Ok(MetricsServer {
            listener,
            ready: false,
            retry_at: None,
            error_warning: Throttle::new(Duration::from_secs(10)),
            scrapes: Slab::new(),
        })
    }

    /// The listener, for a successor to take over (`upgrade`).
    pub(super) fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// Stops serving: the listener is deregistered (a successor holds the same socket, which must wake
    /// only it), then closed with the scrapes in progress.
    pub(super) fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.listener);
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
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

    /// Accepts until WouldBlock. Scrapes past their age are dropped first, and a connection beyond
    /// [`MAX_SCRAPES`] takes the place of the oldest rather than wait in the backlog.
    ///
    /// On an accept error the edge is kept: the scrape is still queued and no new edge will announce
    /// it (dropping the edge left that scrape unanswered until another one arrived). Running out of
    /// fds (EMFILE and the like) is the whole process's problem: the error is returned and the reactor
    /// pauses every accept. Any other error makes this listener alone wait `ACCEPT_RETRY` (100 ms), so a
    /// fault of the metrics endpoint never stops forwarding. A connection reset while queued
    /// (ECONNABORTED) is skipped, as on the routes.
    pub(super) fn accept(&mut self, registry: &Registry, now: Instant) -> Option<io::Error> {
        if !self.is_ready(now) {
            return None;
        }
        self.retry_at = None;
        self.scrapes
            .retain(|_, scrape| now.duration_since(scrape.accepted) < SCRAPE_TIMEOUT);
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, registry, now),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.ready = false;
                    return None;
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(err) if net::is_resource_exhaustion(&err) => {
                    debug!("metrics accept failed: {err}");
                    return Some(err);
                }
                Err(err) => {
                    if let Some(suppressed) = self.error_warning.allow(now) {
                        warn!("metrics accept failed: {err}; retrying in {}ms ({suppressed} similar warnings suppressed)", ACCEPT_RETRY.as_millis());
                    }
                    self.retry_at = Some(now + ACCEPT_RETRY);
                    return None;
                }
            }
        }
    }

    fn admit(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        registry: &Registry,
        now: Instant,
    ) {
        if self.scrapes.len() >= MAX_SCRAPES {
            // Full: the oldest goes. Refusing the newcomer instead would let a client that keeps idle
            // connections open starve every real scrape, and a real scrape is answered in one turn, so
            // the oldest is the likeliest idler.
            let oldest = self
                .scrapes
                .iter()
                .min_by_key(|(_, scrape)| scrape.accepted)
                .map(|(key, _)| key);
            if let Some(key) = oldest {
                debug!("metrics: {MAX_SCRAPES} connections open, closing the oldest for {peer}");
                self.scrapes.remove(key);
            }
        }
        let entry = self.scrapes.vacant_entry();
        let both = Interest::READABLE | Interest::WRITABLE;
        if registry
            .register(&mut stream, token::scrape_token(entry.key()), both)
            .is_ok()
        {
            entry.insert(Scrape::new(stream, now));
        }
    }

    /// Advances scrape `slot` after an event, and closes it when it is finished.
    pub(super) fn on_scrape_event(&mut self, slot: usize, render: impl FnOnce() -> String) {
        let Some(scrape) = self.scrapes.get_mut(slot) else {
            return; // closed earlier in this batch
        };
        if scrape.advance(render) == Progress::Finished {
            self.scrapes.remove(slot);
        }
    }
}

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;

/// A scrape connection.
#[derive(Debug)]
struct Scrape {
    stream: TcpStream,
    accepted: Instant,
    request: Vec<u8>,
    /// The response, once the request head is complete.
    response: Option<Vec<u8>>,
    written: usize,
    /// FIN sent after the response; reading only to throw away (see [`Scrape::linger`]).
    lingering: bool,
    /// Bytes thrown away since.
    discarded: usize,
}

/// Most bytes a scrape reads and drops after its response before closing anyway.
const MAX_DISCARD: usize = 64 * 1024;

/// Where an exchange stands after an event.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// Waiting for more of the request or for room to write.
    Pending,
    /// Response written, or the client went away: close.
    Finished,
}

impl Scrape {
    fn new(stream: TcpStream, accepted: Instant) -> Scrape {
        Scrape {
            stream,
            accepted,
            request: Vec::new(),
            response: None,
            written: 0,
            lingering: false,
            discarded: 0,
        }
    }

    /// Advances the exchange; `render` produces the metrics body when a `GET /metrics` is complete.
    fn advance(&mut self, render: impl FnOnce() -> String) -> Progress {
        if self.response.is_none() {
            match self.read_request() {
                Ok(true) => self.response = Some(respond(&self.request, render)),
                Ok(false) => return Progress::Pending,
                Err(_) => return Progress::Finished,
            }
        }
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
    /// scrape, by [`SCRAPE_TIMEOUT`] and [`MAX_SCRAPES`].
    fn linger(&mut self) -> Progress {
        if !self.lingering {
            if self.stream.shutdown(std::net::Shutdown::Write).is_err() {
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

    /// Reads until the head ends (`\r\n\r\n`), WouldBlock, EOF or the size bound.
    fn read_request(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 1024];
        loop {
            if head_complete(&self.request) {
                return Ok(true);
            }
            if self.request.len() >= MAX_REQUEST {
                return Ok(true); // answered with 431 by `respond`
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

fn head_complete(request: &[u8]) -> bool {
    request.windows(4).any(|window| window == b"\r\n\r\n")
}

/// Builds the whole HTTP response for a request head.
fn respond(request: &[u8], render: impl FnOnce() -> String) -> Vec<u8> {
    if !head_complete(request) {
        return http(
            431,
            "Request Header Fields Too Large",
            "text/plain",
            "request too large\n",
        );
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => http(
            200,
            "OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &render(),
        ),
        (Some(b"GET"), _) => http(404, "Not Found", "text/plain", "try /metrics\n"),
        _ => http(405, "Method Not Allowed", "text/plain", "only GET\n"),
    }
}

fn http(status: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn test_get_metrics_renders_body() {
        let response = text(respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", || {
            "edgefwd_polls_total 1\n".into()
        }));
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(response.contains("Content-Length: 22\r\n"));
        assert!(response.ends_with("\r\n\r\nedgefwd_polls_total 1\n"));
    }

    #[test]
    fn test_other_paths_and_methods() {
        assert!(text(respond(b"GET / HTTP/1.1\r\n\r\n", String::new)).starts_with("HTTP/1.1 404"));
        assert!(
            text(respond(b"POST /metrics HTTP/1.1\r\n\r\n", String::new))
                .starts_with("HTTP/1.1 405")
        );
        assert!(text(respond(&[b'a'; MAX_REQUEST], String::new)).starts_with("HTTP/1.1 431"));
    }
}
