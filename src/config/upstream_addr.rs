//! Where an upstream connect goes: an IP address and port, or a Unix stream socket (`unix:/path`,
//! `unix:@name`). One type for both, so that endpoints, the balancers, health, probes, `--prewarm` and
//! the connect path carry an upstream's address without caring which kind it is; only the socket that
//! connects to it (`datapath::stream::Conn::connect`) does.
//!
//! A Unix upstream is its own single address: it is not a host name, so it is never looked up, at
//! start or again every `resolve_interval`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::config::unix::UnixAddr;
use crate::config::{split_scheme, Addresses};

/// An upstream endpoint's address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UpstreamAddr {
    /// TCP to an IP address and port (an IP literal, or one address of a host name).
    Inet(SocketAddr),
    /// A Unix stream socket: a file or an abstract name.
    Unix(UnixAddr),
}

/// An upstream's addresses, in the resolver's order, or why it has none (a name that did not resolve).
pub type UpstreamAddresses = Result<Vec<UpstreamAddr>, String>;

impl From<SocketAddr> for UpstreamAddr {
    fn from(addr: SocketAddr) -> UpstreamAddr {
        UpstreamAddr::Inet(addr)
    }
}

impl FromStr for UpstreamAddr {
    type Err = String;

    /// `unix:/PATH`, `unix:@NAME`, or an IP literal with its port (no host name: that is a lookup).
    fn from_str(text: &str) -> Result<UpstreamAddr, String> {
        if UnixAddr::is_unix(text) {
            return text.parse().map(UpstreamAddr::Unix);
        }
        text.parse()
            .map(UpstreamAddr::Inet)
            .map_err(|_| format!("invalid address '{text}': expected IP:PORT or unix:PATH"))
    }
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAddr::Inet(addr) => addr.fmt(f),
            UpstreamAddr::Unix(addr) => addr.fmt(f),
        }
    }
}

/// The addresses of upstream `name` (as [`crate::config::parse_upstream_spec`] gave it): a Unix socket
/// is its own one address; a `[udp://]HOST:PORT` is what `resolve` answers for `HOST:PORT`.
pub fn addresses_of(name: &str, resolve: &mut dyn FnMut(&str) -> Addresses) -> UpstreamAddresses {
    if UnixAddr::is_unix(name) {
        return name.parse().map(|unix: UpstreamAddr| vec![unix]);
    }
    let addrs = resolve(split_scheme(name).1)?;
    Ok(addrs.into_iter().map(UpstreamAddr::Inet).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_both_kinds_print_as_written() {
        let inet = UpstreamAddr::from("[::1]:80".parse::<SocketAddr>().expect("addr"));
        assert_eq!(inet.to_string(), "[::1]:80");
        let unix: UnixAddr = "unix:@app".parse().expect("unix");
        assert_eq!(UpstreamAddr::Unix(unix).to_string(), "unix:@app");
    }

    #[test]
    fn test_a_unix_upstream_is_never_looked_up() {
        let mut asked = Vec::new();
        let mut resolve = |name: &str| -> Addresses {
            asked.push(name.to_string());
            Ok(vec!["127.0.0.1:80".parse().expect("addr")])
        };
        let unix = addresses_of("unix:/run/app.sock", &mut resolve).expect("unix");
        assert_eq!(
            unix,
            vec![UpstreamAddr::Unix(
                "unix:/run/app.sock".parse().expect("unix")
            )]
        );
        let inet = addresses_of("udp://app.test:80", &mut resolve).expect("inet");
        assert_eq!(
            inet,
            vec![UpstreamAddr::Inet("127.0.0.1:80".parse().expect("addr"))]
        );
        assert_eq!(asked, ["app.test:80"]);
    }
}
