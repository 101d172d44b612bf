//! A route: its listeners, its upstreams with their health and load, its balancer, its buffer pool and its
//! settings. The reactor keeps routes in a slab; a pair names its route by slot, and the route outlives its
//! pairs: a route removed (or replaced) by a reload stops accepting and is kept, "draining", until its last
//! pair closes, so a pair always finds its pool, its deadlines and its upstream's counters.
//!
//! The route owns sockets (its listeners, and the upstream connects it starts) but never registers them:
//! that is the reactor's job. Everything here is bookkeeping: which upstream next, what a success or a
//! failure does to its health, and the log lines that go with those changes.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::{TcpListener, TcpStream};

use crate::balance::{Balancer, Candidate};
use crate::config::{Mode, RouteConfig};
use crate::greeting::{ConnectRules, Rules};
use crate::health::{Change, Health};
use crate::metrics::{Metrics, UpstreamRow};
use crate::net::{self, StreamOptions};
use crate::pair::Deadlines;
use crate::pump::Shared;
use crate::ring::BufPool;
use crate::splice::PipePool;
use crate::throttle::Throttle;

/// The greeting a route's clients owe, from its settings.
fn greeting_rules(config: &RouteConfig) -> Option<Arc<Rules>> {
    let connect = (config.mode == Mode::Connect).then(|| ConnectRules {
        allow: config.allow.clone(),
        credentials: config.proxy_auth.clone(),
    });
    (config.accept_proxy || connect.is_some()).then(|| {
        Arc::new(Rules {
            accept_proxy: config.accept_proxy,
            carry_tlvs: config.send_proxy_tlvs,
            connect,
        })
    })
}

/// Floor of the per-wakeup byte budget of one pair.
const MIN_PAIR_BUDGET: usize = 1 << 20;
/// Empty pipes a route keeps for `--splice` (each costs two fds, so the pool stays small).
pub const MAX_SPARE_PIPES: usize = 32;
/// How often the "all upstreams are down" warning may repeat.
const ALL_DOWN_WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// A bound listening socket.
#[derive(Debug)]
pub struct Listener {
    pub socket: TcpListener,
    /// The address the config asked for (port 0 stays 0 here): what a reload matches on.
    pub requested: SocketAddr,
    /// The address actually bound.
    pub local: SocketAddr,
    /// An edge arrived that no accept has drained to WouldBlock yet.
    pub ready: bool,
}

impl Listener {
    /// Binds `at` with the route's backlog and TCP_NODELAY (and SO_REUSEPORT when reactors share it),
    /// remembering that the config asked for `requested`: a `--threads` sibling binds the port the first
    /// reactor got for `:0`, yet must match the config's `:0` on reload. The error names the address.
    pub fn bind_at(
        requested: SocketAddr,
        at: SocketAddr,
        route: &RouteConfig,
        reuse_port: bool,
    ) -> Result<Listener, String> {
        let socket = net::bind_listener(at, route.backlog, reuse_port, route.nodelay)
            .map_err(|err| format!("cannot listen on {at}: {err}"))?;
        let local = socket
            .local_addr()
            .map_err(|err| format!("cannot read the address of listener {requested}: {err}"))?;
        Ok(Listener {
            socket,
            requested,
            local,
            ready: false,
        })
    }
}

/// One upstream of a route, with what the balancer and health checking know about it.
#[derive(Debug)]
pub struct Upstream {
    /// `HOST:PORT` as written.
    pub name: String,
    /// Where connects go now (re-resolution may change it).
    pub addr: SocketAddr,
    pub weight: u32,
    pub health: Health,
    /// Pairs connected or connecting to it.
    pub active: usize,
    /// Connects and probes that failed, since start (carried over by reloads).
    pub connect_failures: u64,
    /// A health probe is in flight.
    pub probing: bool,
}

/// Why [`Route::connect`] found no upstream.
#[derive(Debug)]
pub struct NoUpstream {
    /// The last upstream tried, if any.
    pub last: Option<usize>,
    pub error: io::Error,
}

/// A route and its running state.
#[derive(Debug)]
pub struct Route {
    /// Unique over the process's life (slab slots are reused): answers from the resolver carry it.
    pub uid: u64,
    pub config: RouteConfig,
    /// Bound listeners; empty once the route drains or a shutdown begins.
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<Upstream>,
    balancer: Balancer,
    /// Ring storage for this route's pairs (rings are `buffer_size` long, so each route has its own).
    pub pool: BufPool,
    /// Pipes for `--splice` (`--pipe-size` long); `None` when splicing is off.
    pub pipes: Option<PipePool>,
    pub deadlines: Deadlines,
    pub options: StreamOptions,
    /// What clients must send before forwarding starts (`--accept-proxy`, `--mode connect`); `None`:
    /// nothing, the upstream connect starts at accept.
    pub greeting: Option<Arc<Rules>>,
    /// Bytes one pair may read per wakeup before it must yield.
    pub pair_budget: usize,
    /// Pairs open.
    pub pairs: usize,
    /// Removed by a reload: accepts nothing, goes away with its last pair.
    pub draining: bool,
    /// Stopped at `max_connections` with a listener still ready (counted once per stop).
    pub at_limit: bool,
    all_down_warning: Throttle,
    /// When the next round of health probes is due.
    pub next_probe: Option<Instant>,
    /// When host-name upstreams are next re-resolved.
    pub next_resolve: Option<Instant>,
    /// A resolution job is with the resolver thread.
    pub resolving: bool,
}

impl Route {
    /// Upstream `index` now resolves to `addr` (re-resolution, or a reloaded file): new connects go
    /// there; live pairs keep the socket they have. Logged only when the address really changes.
    pub fn readdress(&mut self, index: usize, addr: SocketAddr) {
        let route = &self.config.name;
        if let Some(upstream) = self.upstreams.get_mut(index).filter(|u| u.addr != addr) {
            info!(
                "upstream {} of route {route} now resolves to {addr} (was {})",
                upstream.name, upstream.addr
            );
            upstream.addr = addr;
        }
    }
    /// A route over `config`, accepting on `listeners` (already bound, not yet registered);
    /// `pipe_size` gives it a pool of pipes that large for `--splice`.
    pub fn new(
        uid: u64,
        config: RouteConfig,
        listeners: Vec<Listener>,
        pipe_size: Option<usize>,
        now: Instant,
    ) -> Route {
        let seed = now.elapsed().as_nanos() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(uid, |d| d.as_nanos() as u64)
            ^ uid;
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream {
                name: u.name.clone(),
                addr: u.addr,
                weight: u.weight,
                health: Health::default(),
                active: 0,
                connect_failures: 0,
                probing: false,
            })
            .collect::<Vec<_>>();
        Route {
            uid,
            balancer: Balancer::new(config.balance, upstreams.len(), seed),
            upstreams,
            pool: BufPool::new(config.buffer_size),
            pipes: pipe_size.map(|size| {
                PipePool::new(
                    size,
                    MAX_SPARE_PIPES,
                    PipePool::limit_for(config.max_connections),
                )
            }),
            greeting: greeting_rules(&config),
            deadlines: Deadlines {
                connect: config.connect_timeout,
                header: config.header_timeout,
                idle: config.idle_timeout,
                fin: config.fin_timeout,
            },
            options: StreamOptions {
                nodelay: config.nodelay,
                keepalive: config.keepalive,
            },
            pair_budget: (4 * config.buffer_size).max(MIN_PAIR_BUDGET),
            pairs: 0,
            draining: false,
            at_limit: false,
            all_down_warning: Throttle::new(ALL_DOWN_WARNING_INTERVAL),
            next_probe: config.health_interval.map(|_| now),
            next_resolve: config.resolve_interval.map(|interval| now + interval),
            resolving: false,
            listeners,
            config,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What this route's pairs borrow while they run.
    pub fn shared<'a>(&'a mut self, metrics: &'a mut Metrics) -> Shared<'a> {
        Shared {
            pool: &mut self.pool,
            pipes: self.pipes.as_mut(),
            metrics,
        }
    }

    /// Below `max_connections`.
    pub fn below_limit(&self) -> bool {
        self.pairs < self.config.max_connections
    }

    /// Picks an upstream for a client from `client` that has not been tried yet (`tried` is a bit mask),
    /// and starts a non-blocking connect to it. An upstream whose connect fails at once (the socket call
    /// itself failed) counts as tried and failed, and the next is picked, up to `connect_attempts` in all.
    /// On success the upstream's `active` count includes the new connection. Returns the stream, the
    /// upstream's index and the new tried mask.
    ///
    /// `warm` is asked first for an already established (`--prewarm`) connection to the picked upstream;
    /// the last value returned says whether one was used.
    pub fn connect(
        &mut self,
        client: IpAddr,
        mut tried: u64,
        now: Instant,
        mut warm: impl FnMut(usize) -> Option<TcpStream>,
    ) -> Result<(TcpStream, usize, u64, bool), NoUpstream> {
        let mut failure = NoUpstream {
            last: None,
            error: io::Error::new(io::ErrorKind::NotFound, "no upstream left to try"),
        };
        while (tried.count_ones() as usize) < self.config.connect_attempts {
            let Some(index) = self.pick(client, tried, now) else {
                break;
            };
            tried |= 1 << index;
            if let Some(stream) = warm(index) {
                self.upstreams[index].active += 1;
                return Ok((stream, index, tried, true));
            }
            match net::start_connect(self.upstreams[index].addr, self.options) {
                Ok(stream) => {
                    self.upstreams[index].active += 1;
                    return Ok((stream, index, tried, false));
                }
                Err(error) => {
                    let exhausted = net::is_resource_exhaustion(&error);
                    failure = NoUpstream {
                        last: Some(index),
                        error,
                    };
                    if exhausted {
                        // Out of fds or memory here: not the upstream's fault, so its health is left
                        // alone, and another upstream would fail the same way.
                        break;
                    }
                    self.connect_failed(index, now);
                }
            }
        }
        Err(failure)
    }

    /// The balancer's choice among the untried upstreams; warns (rate-limited) when it fails open.
    fn pick(&mut self, client: IpAddr, tried: u64, now: Instant) -> Option<usize> {
        let Route {
            upstreams,
            balancer,
            config,
            all_down_warning,
            ..
        } = self;
        let candidates: Vec<Candidate<'_>> = upstreams
            .iter_mut()
            .enumerate()
            .map(|(i, upstream)| Candidate {
                up: upstream.health.eligible(now, &upstream.name),
                key: upstream.name.as_str(),
                weight: upstream.weight,
                active: upstream.active,
                tried: tried & (1 << i) != 0,
            })
            .collect();
        let pick = balancer.pick(&candidates, client)?;
        if pick.fail_open {
            if let Some(suppressed) = all_down_warning.allow(now) {
                warn!(
                    "all upstreams of route {} are down; trying them anyway ({suppressed} similar warnings suppressed)",
                    config.name
                );
            }
        }
        Some(pick.index)
    }

    /// A pair of this route no longer uses upstream `index` (it closed or failed over).
    pub fn release(&mut self, index: usize) {
        if let Some(upstream) = self.upstreams.get_mut(index) {
            upstream.active = upstream.active.saturating_sub(1);
        }
    }

    /// A connect or probe to upstream `index` completed.
    pub fn connect_succeeded(&mut self, index: usize, now: Instant) {
        let Some(upstream) = self.upstreams.get_mut(index) else {
            return;
        };
        if upstream.health.on_success(now, &upstream.name) == Some(Change::CameUp) {
            info!(
                "upstream {} of route {} is up",
                upstream.name, self.config.name
            );
        }
    }

    /// A connect or probe to upstream `index` failed (refused, timed out, or any other error).
    pub fn connect_failed(&mut self, index: usize, now: Instant) {
        let Some(upstream) = self.upstreams.get_mut(index) else {
            return;
        };
        upstream.connect_failures += 1;
        let change = upstream
            .health
            .on_failure(now, self.config.fall, &upstream.name);
        if let Some(Change::WentDown { backoff }) = change {
            warn!(
                "upstream {} of route {} is down after {} failed connects; retrying in {}ms",
                upstream.name,
                self.config.name,
                self.config.fall,
                backoff.as_millis()
            );
        }
    }

    /// After a reload replaced `old` by this route: upstreams that are in both keep their health and
    /// failure counts, so a reload neither resurrects a dead upstream nor resets a counter.
    pub fn inherit_health(&mut self, old: &Route) {
        for upstream in &mut self.upstreams {
            if let Some(previous) = old.upstreams.iter().find(|u| u.name == upstream.name) {
                upstream.health = previous.health.clone();
                upstream.connect_failures = previous.connect_failures;
            }
        }
    }

    /// The start line's connect-mode and PROXY protocol settings, when set.
    fn describe_extras(&self) -> String {
        let config = &self.config;
        let mut text = String::new();
        if config.mode == Mode::Connect {
            text.push_str(" mode=connect");
        }
        if config.accept_proxy {
            text.push_str(" accept-proxy");
        }
        if let Some(version) = config.send_proxy {
            text.push_str(&format!(" send-proxy={version:?}"));
        }
        if !config.send_proxy_tlvs.is_empty() {
            text.push_str(&format!(
                " send-proxy-tlvs={}",
                config.send_proxy_tlvs.names()
            ));
        }
        text
    }

    /// The start line of listener `index`: it begins with `listening on ADDR`, which tests parse.
    pub fn describe_listener(&self, index: usize) -> Option<String> {
        let listener = self.listeners.get(index)?;
        let config = &self.config;
        let upstreams: Vec<String> = self
            .upstreams
            .iter()
            .map(|u| {
                let mut text = u.name.clone();
                if u.name != u.addr.to_string() {
                    text.push_str(&format!("({})", u.addr));
                }
                if u.weight != 1 {
                    text.push_str(&format!("*{}", u.weight));
                }
                text
            })
            .collect();
        Some(format!(
            "listening on {} route={} upstreams={} balance={} buffer-size={} max-connections={} connect-timeout={}ms connect-attempts={} idle-timeout={} fin-timeout={}ms health-interval={}",
            listener.local,
            config.name,
            upstreams.join(","),
            self.balancer.algorithm(),
            config.buffer_size,
            config.max_connections,
            config.connect_timeout.as_millis(),
            config.connect_attempts,
            millis_or_off(config.idle_timeout),
            config.fin_timeout.as_millis(),
            millis_or_off(config.health_interval),
        ) + &self.describe_extras())
    }

    /// One metrics row per upstream.
    pub fn upstream_rows(&self) -> impl Iterator<Item = UpstreamRow<'_>> + Clone {
        self.upstreams.iter().map(|u| UpstreamRow {
            route: &self.config.name,
            upstream: &u.name,
            up: u.health.is_up(),
            active: u.active,
            connect_failures: u.connect_failures,
        })
    }
}

/// Whether a route of a reloaded file continues running route `old`: the same name when either was named,
/// else the same set of listen addresses. A match whose settings differ replaces the old route.
pub fn same_route(old: &RouteConfig, new: &RouteConfig) -> bool {
    if old.named || new.named {
        return old.named && new.named && old.name == new.name;
    }
    let sorted = |addrs: &[SocketAddr]| {
        let mut addrs = addrs.to_vec();
        addrs.sort();
        addrs
    };
    sorted(&old.listen) == sorted(&new.listen)
}

/// Whether a matched route of a reloaded file asks for nothing the running route `old` does not already
/// do. The resolved address of an upstream does not count (the name does): re-resolution keeps a
/// running route's addresses current, and a route replaced only because DNS answered differently would
/// lose its warm connections and balancer state, and count its limit afresh, for nothing.
pub fn same_settings(old: &RouteConfig, new: &RouteConfig) -> bool {
    let mut new = new.clone();
    for upstream in &mut new.upstreams {
        if let Some(running) = old.upstreams.iter().find(|u| u.name == upstream.name) {
            upstream.addr = running.addr;
        }
    }
    *old == new
}

fn millis_or_off(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "off".to_string(), |d| format!("{}ms", d.as_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Algorithm;
    use crate::config::UpstreamConfig;

    fn route(name: Option<&str>, listen: &[&str]) -> RouteConfig {
        RouteConfig {
            name: name.unwrap_or("route-1").to_string(),
            named: name.is_some(),
            listen: listen.iter().map(|a| a.parse().expect("addr")).collect(),
            upstreams: vec![UpstreamConfig {
                name: "127.0.0.1:9".into(),
                addr: "127.0.0.1:9".parse().expect("addr"),
                weight: 1,
            }],
            balance: Algorithm::RoundRobin,
            buffer_size: 4096,
            max_connections: 10,
            connect_timeout: Duration::from_secs(1),
            connect_attempts: 1,
            idle_timeout: None,
            fin_timeout: Duration::from_secs(1),
            health_interval: None,
            health_timeout: Duration::from_secs(1),
            fall: 3,
            resolve_interval: None,
            nodelay: true,
            keepalive: None,
            backlog: 16,
            mode: Mode::Forward,
            allow: crate::allow::AllowList::default(),
            proxy_auth: None,
            send_proxy: None,
            send_proxy_tlvs: Default::default(),
            accept_proxy: false,
            header_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn test_named_routes_match_by_name() {
        let old = route(Some("web"), &["127.0.0.1:80"]);
        assert!(same_route(&old, &route(Some("web"), &["127.0.0.1:81"])));
        assert!(!same_route(&old, &route(Some("api"), &["127.0.0.1:80"])));
        assert!(!same_route(&old, &route(None, &["127.0.0.1:80"])));
    }

    #[test]
    fn test_unnamed_routes_match_by_listen_set() {
        let old = route(None, &["127.0.0.1:80", "127.0.0.1:81"]);
        assert!(same_route(
            &old,
            &route(None, &["127.0.0.1:81", "127.0.0.1:80"])
        ));
        assert!(!same_route(&old, &route(None, &["127.0.0.1:80"])));
    }

    #[test]
    fn test_a_new_dns_answer_is_not_a_changed_route() {
        let old = route(Some("web"), &["127.0.0.1:80"]);
        let mut resolved_again = old.clone();
        resolved_again.upstreams[0].addr = "127.0.0.2:9".parse().expect("addr");
        assert!(same_settings(&old, &resolved_again));
        let mut other_upstream = old.clone();
        other_upstream.upstreams[0].name = "127.0.0.1:10".into();
        assert!(!same_settings(&old, &other_upstream));
        let mut other_tlvs = old.clone();
        other_tlvs.send_proxy_tlvs = "alpn"
            .parse()
            .map(|kind| [kind].into_iter().collect())
            .expect("tlv");
        assert!(!same_settings(&old, &other_tlvs));
        let mut other_limit = old.clone();
        other_limit.max_connections = 11;
        assert!(!same_settings(&old, &other_limit));
    }

    #[test]
    fn test_connect_skips_tried_and_stops_at_attempts() {
        let mut config = route(None, &["127.0.0.1:0"]);
        config.upstreams.push(UpstreamConfig {
            name: "127.0.0.1:10".into(),
            addr: "127.0.0.1:10".parse().expect("addr"),
            weight: 1,
        });
        config.connect_attempts = 2;
        let now = Instant::now();
        let mut route = Route::new(1, config, Vec::new(), None, now);
        let client: IpAddr = "127.0.0.1".parse().expect("ip");
        let (_stream, first, tried, warm) = route
            .connect(client, 0, now, |_| None)
            .expect("first connect starts");
        assert_eq!(tried, 1 << first);
        assert!(!warm);
        assert_eq!(route.upstreams[first].active, 1);
        let (_stream, second, tried, _) = route
            .connect(client, tried, now, |_| None)
            .expect("second starts");
        assert_ne!(first, second);
        assert_eq!(tried, 0b11);
        let exhausted = route
            .connect(client, tried, now, |_| None)
            .expect_err("two attempts used");
        assert_eq!(exhausted.last, None);
    }
}
