//! Host names to addresses: blocking `getaddrinfo`, and which of its answers are kept (the first few,
//! each once, in the resolver's order).
//!
//! A leaf that blocks: only the worker threads of [`crate::reactor::worker`] call it at run time (and `main` and
//! the config file reader at start, before there is a loop to block).

use std::net::{SocketAddr, ToSocketAddrs};

use crate::config::{Addresses, ListenSpec, MAX_ADDRESSES, MAX_LISTENERS};

/// Resolves an upstream's `HOST:PORT`: its first [`MAX_ADDRESSES`] distinct addresses, in the resolver's
/// order, each of which becomes an endpoint.
pub fn upstream_addresses(host_port: &str) -> Addresses {
    let host_port = super::split_scheme(host_port).1;
    let addrs = resolve(host_port).map_err(|err| format!("cannot resolve '{host_port}': {err}"))?;
    let distinct = first_distinct(addrs, MAX_ADDRESSES);
    if distinct.is_empty() {
        return Err(format!("cannot resolve '{host_port}': no address"));
    }
    Ok(distinct)
}

/// Resolves a listen address: an IP literal is itself, a `HOST:PORT` every distinct address its name has
/// (`localhost:8080` is usually `127.0.0.1:8080` and `[::1]:8080`), each to be bound. A name that does
/// not resolve is an error, unlike an upstream's: there is nothing to listen on.
pub fn listen_addresses(text: &str) -> Addresses {
    match ListenSpec::parse(text)? {
        ListenSpec::Literal(addr) => Ok(vec![addr]),
        ListenSpec::Name => {
            let addrs = resolve(text)
                .map_err(|err| format!("listen address '{text}' does not resolve: {err}"))?;
            let distinct = first_distinct(addrs, MAX_LISTENERS);
            if distinct.is_empty() {
                return Err(format!(
                    "listen address '{text}' does not resolve: no address"
                ));
            }
            Ok(distinct)
        }
    }
}

/// How many of a CONNECT destination's addresses are tried, in the resolver's order, before the client
/// gets 502 (or 504): as many as `connect_attempts` allows a route by default.
pub(crate) const DESTINATION_ADDRESSES: usize = 3;

/// Resolves a CONNECT destination `HOST:PORT` to the first [`DESTINATION_ADDRESSES`] distinct addresses
/// the resolver gives. A name often has an IPv6 and an IPv4 address, and the first one (IPv6, by the
/// resolver's preference) may be the one that does not answer; clients such as curl go on to the next,
/// so a proxy in their path must too.
pub(crate) fn destination_addresses(host_port: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs = resolve(host_port).map_err(|err| format!("cannot resolve {host_port}: {err}"))?;
    let distinct = first_distinct(addrs, DESTINATION_ADDRESSES);
    if distinct.is_empty() {
        return Err(format!("cannot resolve {host_port}: no address"));
    }
    Ok(distinct)
}

/// The first `max` addresses of `addrs`, each once, in their order.
pub(crate) fn first_distinct<A: PartialEq>(addrs: Vec<A>, max: usize) -> Vec<A> {
    let mut distinct = Vec::with_capacity(max.min(addrs.len()));
    for addr in addrs {
        if distinct.len() == max {
            break;
        }
        if !distinct.contains(&addr) {
            distinct.push(addr);
        }
    }
    distinct
}

/// `getaddrinfo`, blocking: every address it gives, in its order.
fn resolve(host_port: &str) -> Result<Vec<SocketAddr>, String> {
    host_port
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listen address: a literal is itself, `localhost` every loopback address it has, and a typo or a
    /// name that does not resolve is refused with what is accepted.
    #[test]
    fn test_listen_addresses() {
        let addr = |text: &str| text.parse::<SocketAddr>().expect("addr");
        assert_eq!(listen_addresses("[::1]:0"), Ok(vec![addr("[::1]:0")]));
        let local = listen_addresses("localhost:8080").expect("localhost resolves");
        assert!(local.contains(&addr("127.0.0.1:8080")), "{local:?}");
        assert!(local
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8080));
        for bad in [
            "nope",
            "localhost:http",
            "local host:80",
            ":80",
            "::1:80",
            "host:65536",
        ] {
            let err = listen_addresses(bad).expect_err(bad);
            assert!(err.contains(bad) && err.contains("HOST:PORT"), "{err}");
        }
        let err = listen_addresses("no-such-host.invalid:80").expect_err("resolved");
        assert!(err.contains("does not resolve"), "{err}");
    }

    /// A destination's addresses are tried in the resolver's order, each once, at most
    /// [`DESTINATION_ADDRESSES`] of them.
    #[test]
    fn test_destination_addresses_keep_order_drop_repeats_and_stop_at_the_cap() {
        let addr = |text: &str| text.parse::<SocketAddr>().expect("addr");
        let (v6, a, b, c) = (
            addr("[::1]:80"),
            addr("127.0.0.1:80"),
            addr("127.0.0.2:80"),
            addr("127.0.0.3:80"),
        );
        assert_eq!(
            first_distinct::<SocketAddr>(vec![v6, a, v6, b, a, c], 3),
            vec![v6, a, b]
        );
        assert_eq!(first_distinct::<SocketAddr>(vec![a, a], 3), vec![a]);
        assert_eq!(
            first_distinct::<SocketAddr>(Vec::new(), 3),
            Vec::<SocketAddr>::new()
        );
        assert_eq!(
            destination_addresses("127.0.0.1:443"),
            Ok(vec![addr("127.0.0.1:443")])
        );
        let err = destination_addresses("no-such-host.invalid:443").expect_err("resolved");
        assert!(
            err.starts_with("cannot resolve no-such-host.invalid:443"),
            "{err}"
        );
    }
}
