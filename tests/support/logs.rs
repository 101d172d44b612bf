//! edgefwd's start lines, the contract by which a harness learns where a forwarder listens: it binds
//! port 0 and prints `listening on ADDR ...` (and, with `--metrics`, `metrics on http://ADDR/metrics`)
//! on stderr. The tokio baselines of the compare bench print the same `listening on` line.

use std::net::SocketAddr;

/// The token after the first `listening on ` in `text`, as a socket address (a UDP route's
/// `udp://ADDR` gives ADDR).
pub fn listen_addr(text: &str) -> Option<SocketAddr> {
    let (_, rest) = text.split_once("listening on ")?;
    let token = rest.split_whitespace().next()?;
    token.strip_prefix("udp://").unwrap_or(token).parse().ok()
}

/// The address in the first `metrics on http://ADDR/metrics` in `text`.
pub fn metrics_addr(text: &str) -> Option<SocketAddr> {
    let (_, rest) = text.split_once("metrics on http://")?;
    rest.split('/').next()?.parse().ok()
}
