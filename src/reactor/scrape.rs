//! One `--metrics` HTTP exchange, served inside the reactor: read a request head, write one response,
//! close. Prometheus needs nothing more than `GET /metrics`.
//!
//! The listener, its bounds (request size, count [`MAX_SCRAPES`], age) and the exchange itself are
//! `exchange`'s, shared with the admin API; this module is what the metrics port answers.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpListener;
use mio::Registry;

use crate::datapath::net;
use crate::reactor::exchange::{http, Front, Progress, Request};
use crate::token::{self, MAX_SCRAPES};

/// The `--metrics` listener and the scrapes in progress.
#[derive(Debug)]
pub(super) struct MetricsServer {
    front: Front<TcpListener>,
}

impl MetricsServer {
    /// Binds and registers the metrics listener.
    pub(super) fn bind(addr: SocketAddr, registry: &Registry) -> io::Result<MetricsServer> {
        let listener = net::bind_listener(addr, 128, false)?;
        MetricsServer::serve(listener, registry)
    }

    /// Registers a listener bound already: one a predecessor handed over at a binary upgrade.
    pub(super) fn serve(listener: TcpListener, registry: &Registry) -> io::Result<MetricsServer> {
        let tokens = (
            "metrics",
            token::METRICS,
            token::scrape_token as fn(usize) -> _,
        );
        let front = Front::serve(listener, registry, tokens, MAX_SCRAPES)?;
        Ok(MetricsServer { front })
    }

    /// The listener, for a successor to take over (`upgrade`).
    pub(super) fn listener(&self) -> &TcpListener {
        &self.front.listener
    }

    /// Stops serving: see [`Front::close`].
    pub(super) fn close(self, registry: &Registry) {
        self.front.close(registry);
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.front.listener.local_addr()
    }

    pub(super) fn is_ready(&self, now: Instant) -> bool {
        self.front.is_ready(now)
    }

    pub(super) fn retry_deadline(&self) -> Option<Instant> {
        self.front.retry_deadline()
    }

    pub(super) fn on_listener_event(&mut self) {
        self.front.on_listener_event();
    }

    /// Accepts queued scrapes ([`Front::accept`]); an fd exhaustion error is the reactor's to handle.
    pub(super) fn accept(&mut self, registry: &Registry, now: Instant) -> Option<io::Error> {
        self.front.accept(registry, now)
    }

    /// Advances scrape `slot` after an event, and closes it when it is finished.
    pub(super) fn on_scrape_event(&mut self, slot: usize, render: impl FnOnce() -> String) {
        let Some(scrape) = self.front.exchanges.get_mut(slot) else {
            return; // closed earlier in this batch
        };
        if scrape.advance(|request| Some(respond(request, render))) == Progress::Finished {
            self.front.exchanges.remove(slot);
        }
    }
}

/// Builds the whole HTTP response for a request.
fn respond(request: Request<'_>, render: impl FnOnce() -> String) -> Vec<u8> {
    let Request::Complete { head, .. } = request else {
        return http(
            431,
            "Request Header Fields Too Large",
            "text/plain",
            "request too large\n",
        );
    };
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("utf-8")
    }

    fn get(head: &[u8]) -> Request<'_> {
        Request::Complete { head, body: b"" }
    }

    #[test]
    fn test_get_metrics_renders_body() {
        let response = text(respond(
            get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            || "edgefwd_polls_total 1\n".into(),
        ));
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(response.contains("Content-Length: 22\r\n"));
        assert!(response.ends_with("\r\n\r\nedgefwd_polls_total 1\n"));
    }

    #[test]
    fn test_other_paths_and_methods() {
        assert!(
            text(respond(get(b"GET / HTTP/1.1\r\n\r\n"), String::new)).starts_with("HTTP/1.1 404")
        );
        assert!(
            text(respond(get(b"POST /metrics HTTP/1.1\r\n\r\n"), String::new))
                .starts_with("HTTP/1.1 405")
        );
        assert!(text(respond(Request::TooLarge, String::new)).starts_with("HTTP/1.1 431"));
    }
}
