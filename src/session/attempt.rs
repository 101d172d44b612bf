//! The one retry policy of an upstream connect: after each failed attempt (or before the first),
//! [`Plan::next`] decides whether the pair tries another candidate or gives up, and how it gives up.
//!
//! A pair's candidates are either its route's upstreams ([`Plan::Upstreams`]: the balancer's pick among
//! the endpoints this client has not been tried on, up to the route's `connect_attempts`), or the
//! addresses of its CONNECT destination ([`Plan::Destination`]: in the resolver's order, as many as it
//! gave, which `config::dns::DESTINATION_ADDRESSES` caps; a connect-mode route has no upstreams, so its
//! `connect_attempts` defaults to 1 and would end the list at its first address). Everything else is
//! the same for both: each attempt has a connect timeout of its own; running out of fds or memory gives
//! up at once (the next attempt would fail the same way, and the reactor pauses accepting); a client that
//! runs out of candidates is closed with RST if it came for the route's upstreams, or answered 502 (504
//! when the last attempt timed out) if it asked for a CONNECT destination.
//!
//! Retrying is safe because no byte has gone upstream yet: during `Connecting` the client's bytes wait
//! in the kernel, and a greeting's leftovers wait in the pair's preamble.
//!
//! Pure bookkeeping: no socket is opened here. `session::connect` starts the connects this decides on.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::close::Cause;
use crate::config::UpstreamAddr;
use crate::datapath::net;
use crate::upstream::endpoint::Tried;
use crate::upstream::route::{Lease, Route};
use crate::wire::connect_request::Status;

/// Where a pair's connect attempts may go.
#[derive(Debug)]
pub(crate) enum Plan {
    /// The route's upstreams, by its balancer. `tried` holds the endpoints tried so far, which are never
    /// tried again; its count is the number of attempts made.
    Upstreams { tried: Tried },
    /// A CONNECT destination named by host, being looked up: no candidate until the answer comes.
    Lookup,
    /// A CONNECT destination's addresses not tried yet, the next one last.
    Destination { left: Vec<SocketAddr> },
}

/// Why a connect attempt failed.
#[derive(Debug)]
pub(super) enum Failed {
    /// `socket(2)` or `connect(2)` failed at once (no route, a firewall's EPERM, no fd).
    Start(io::Error),
    /// The kernel failed it later (refused, unreachable), or its connect timeout passed: the cause the
    /// pair reported.
    InFlight(Cause),
}

impl Failed {
    /// What a client that gives up after this failure is counted as.
    pub(super) fn cause(&self) -> Cause {
        match self {
            Failed::Start(err) => connect_failure_cause(err),
            Failed::InFlight(cause) => *cause,
        }
    }

    /// Out of fds or memory: not the endpoint's fault (its health is left alone), and any other
    /// candidate would fail the same way.
    pub(super) fn exhausted(&self) -> bool {
        matches!(self, Failed::Start(err) if net::is_resource_exhaustion(err))
    }
}

/// What [`Plan::next`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Connect to `addr`; `lease` is the route endpoint it belongs to (none for a CONNECT destination).
    Try {
        addr: UpstreamAddr,
        lease: Option<Lease>,
    },
    GiveUp(GiveUp),
}

/// How a pair with no candidate left ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GiveUp {
    /// A client of the route's upstreams: closed (with RST) and counted with this cause.
    Close(Cause),
    /// A CONNECT client: answered with this status.
    Refuse(Status),
}

impl Plan {
    /// The decision, after `failed` (`None` before the first attempt): the next candidate, or give up.
    /// A route candidate comes leased ([`Route::lease`]); the caller gives the lease back through
    /// `session::connect` when that attempt fails or its pair closes.
    pub(super) fn next(
        &mut self,
        failed: Option<&Failed>,
        route: &mut Route,
        client: IpAddr,
        now: Instant,
    ) -> Next {
        if failed.is_some_and(Failed::exhausted) {
            return Next::GiveUp(self.give_up(failed));
        }
        let candidate = match self {
            Plan::Upstreams { tried } if tried.count() == 0 && route.unresolved(now) => {
                return Next::GiveUp(GiveUp::Close(Cause::Unresolved))
            }
            Plan::Upstreams { tried } if tried.count() >= route.config.connect_attempts => None,
            Plan::Upstreams { tried } => route
                .lease(client, tried, now)
                .map(|(lease, addr)| (addr, Some(lease))),
            Plan::Lookup => None,
            Plan::Destination { left } => left.pop().map(|addr| (addr.into(), None)),
        };
        match candidate {
            Some((addr, lease)) => Next::Try { addr, lease },
            None => Next::GiveUp(self.give_up(failed)),
        }
    }

    /// A CONNECT destination's addresses, to be tried in the resolver's order.
    pub(super) fn destination(mut addrs: Vec<SocketAddr>) -> Plan {
        addrs.reverse();
        Plan::Destination { left: addrs }
    }

    /// Route endpoints tried so far (the current one included); 0 for a CONNECT destination.
    pub(super) fn attempts(&self) -> usize {
        match self {
            Plan::Upstreams { tried } => tried.count(),
            Plan::Lookup | Plan::Destination { .. } => 0,
        }
    }

    fn give_up(&self, failed: Option<&Failed>) -> GiveUp {
        match self {
            Plan::Upstreams { .. } => {
                GiveUp::Close(failed.map_or(Cause::ConnectError, Failed::cause))
            }
            Plan::Lookup | Plan::Destination { .. } => {
                GiveUp::Refuse(match failed.map(Failed::cause) {
                    Some(Cause::ConnectTimeout) => Status::GatewayTimeout,
                    _ => Status::BadGateway,
                })
            }
        }
    }
}

/// Names a failed connect.
pub(super) fn connect_failure_cause(err: &io::Error) -> Cause {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Cause::ConnectRefused,
        io::ErrorKind::TimedOut => Cause::ConnectTimeout,
        _ => Cause::ConnectError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;
    use crate::upstream::route::tests::route as route_config;

    /// A route over three loopback upstreams (nothing is connected to: leasing opens no socket).
    fn three_upstreams(attempts: usize) -> Route {
        let mut config = route_config(None, &["127.0.0.1:0"]);
        config.upstreams = (1..=3)
            .map(|port| UpstreamConfig {
                name: format!("127.0.0.1:{port}"),
                addrs: Ok(vec![addr(port).into()]),
                weight: 1,
            })
            .collect();
        config.connect_attempts = attempts;
        Route::new(1, config, Vec::new(), None, (Instant::now(), None))
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// The lease of a `Try`, given back (a test's stand-in for the attempt that used it).
    fn tried(next: Next, route: &mut Route) -> UpstreamAddr {
        let Next::Try { addr, lease } = next else {
            panic!("expected a try, got {next:?}");
        };
        if let Some(lease) = lease {
            route.give_back(lease);
        }
        addr
    }

    fn refused() -> Failed {
        Failed::InFlight(Cause::ConnectRefused)
    }

    #[test]
    fn test_upstreams_refused_tries_another_until_connect_attempts() {
        let (mut route, now) = (three_upstreams(2), Instant::now());
        let mut plan = Plan::Upstreams {
            tried: Tried::default(),
        };
        let first = tried(plan.next(None, &mut route, CLIENT, now), &mut route);
        let second = tried(
            plan.next(Some(&refused()), &mut route, CLIENT, now),
            &mut route,
        );
        assert_ne!(first, second, "an endpoint is tried once per client");
        assert_eq!(plan.attempts(), 2);
        assert_eq!(
            plan.next(Some(&refused()), &mut route, CLIENT, now),
            Next::GiveUp(GiveUp::Close(Cause::ConnectRefused))
        );
    }

    #[test]
    fn test_upstreams_timed_out_gives_up_as_connect_timeout() {
        let (mut route, now) = (three_upstreams(1), Instant::now());
        let mut plan = Plan::Upstreams {
            tried: Tried::default(),
        };
        tried(plan.next(None, &mut route, CLIENT, now), &mut route);
        let timed_out = Failed::InFlight(Cause::ConnectTimeout);
        assert_eq!(
            plan.next(Some(&timed_out), &mut route, CLIENT, now),
            Next::GiveUp(GiveUp::Close(Cause::ConnectTimeout))
        );
    }

    #[test]
    fn test_upstreams_unresolved_gives_up_before_trying() {
        let mut config = route_config(None, &["127.0.0.1:0"]);
        config.upstreams[0].addrs = Err("cannot resolve".into());
        let now = Instant::now();
        let mut route = Route::new(1, config, Vec::new(), None, (now, None));
        let mut plan = Plan::Upstreams {
            tried: Tried::default(),
        };
        assert_eq!(
            plan.next(None, &mut route, CLIENT, now),
            Next::GiveUp(GiveUp::Close(Cause::Unresolved))
        );
    }

    /// Out of fds: another candidate would fail the same way, so none is tried, route or destination.
    #[test]
    fn test_any_exhausted_gives_up_at_once() {
        let (mut route, now) = (three_upstreams(3), Instant::now());
        let exhausted = || Failed::Start(io::Error::from_raw_os_error(libc::EMFILE));
        let mut plan = Plan::Upstreams {
            tried: Tried::default(),
        };
        tried(plan.next(None, &mut route, CLIENT, now), &mut route);
        assert_eq!(
            plan.next(Some(&exhausted()), &mut route, CLIENT, now),
            Next::GiveUp(GiveUp::Close(Cause::ConnectError))
        );
        let mut plan = Plan::destination(vec![addr(1), addr(2)]);
        tried(plan.next(None, &mut route, CLIENT, now), &mut route);
        assert_eq!(
            plan.next(Some(&exhausted()), &mut route, CLIENT, now),
            Next::GiveUp(GiveUp::Refuse(Status::BadGateway))
        );
    }

    /// A destination's addresses go in the resolver's order; past the last, 502 after a refusal.
    #[test]
    fn test_destination_refused_tries_the_next_address_then_502() {
        let (mut route, now) = (three_upstreams(1), Instant::now());
        let mut plan = Plan::destination(vec![addr(1), addr(2)]);
        assert_eq!(
            tried(plan.next(None, &mut route, CLIENT, now), &mut route),
            addr(1).into()
        );
        let next = plan.next(Some(&refused()), &mut route, CLIENT, now);
        assert_eq!(
            tried(next, &mut route),
            addr(2).into(),
            "not capped at the route's one attempt"
        );
        assert_eq!(
            plan.next(Some(&refused()), &mut route, CLIENT, now),
            Next::GiveUp(GiveUp::Refuse(Status::BadGateway))
        );
    }

    #[test]
    fn test_destination_timed_out_last_is_504() {
        let (mut route, now) = (three_upstreams(1), Instant::now());
        let mut plan = Plan::destination(vec![addr(1)]);
        tried(plan.next(None, &mut route, CLIENT, now), &mut route);
        let timed_out = Failed::InFlight(Cause::ConnectTimeout);
        assert_eq!(
            plan.next(Some(&timed_out), &mut route, CLIENT, now),
            Next::GiveUp(GiveUp::Refuse(Status::GatewayTimeout))
        );
    }

    /// A lookup that could not be queued is 502; one that outlived the connect deadline, 504.
    #[test]
    fn test_lookup_unqueued_is_502_and_timed_out_504() {
        let (mut route, now) = (three_upstreams(1), Instant::now());
        assert_eq!(
            Plan::Lookup.next(None, &mut route, CLIENT, now),
            Next::GiveUp(GiveUp::Refuse(Status::BadGateway))
        );
        let timed_out = Failed::InFlight(Cause::ConnectTimeout);
        assert_eq!(
            Plan::Lookup.next(Some(&timed_out), &mut route, CLIENT, now),
            Next::GiveUp(GiveUp::Refuse(Status::GatewayTimeout))
        );
    }

    #[test]
    fn test_connect_failure_causes() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(connect_failure_cause(&refused), Cause::ConnectRefused);
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(connect_failure_cause(&timeout), Cause::ConnectTimeout);
    }
}
