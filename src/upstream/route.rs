//! A route: its listeners, its upstreams with their health and load, its balancer, its buffer pool and its
//! settings. The reactor keeps routes in a slab; a pair names its route by slot, and the route outlives its
//! pairs: a route removed (or replaced) by a reload stops accepting and is kept, "draining", until its last
//! pair closes, so a pair always finds its pool, its deadlines and its upstream's counters.
//!
//! The route owns its listeners but never registers them: that is the reactor's job. Everything else here
//! is bookkeeping: which endpoint (an address of an upstream, [`crate::upstream::endpoint`]) a client
//! gets next, leased ([`Lease`]) so that the endpoint's live-connection count goes down exactly once per
//! pick ([`Route::give_back`]); what a success, a failure or a new DNS answer does to it; and the log
//! lines that go with those changes. Connecting to the endpoint, and how many to try, is
//! `session::connect`'s.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::{self, settings};
use crate::config::{Mode, RouteConfig, UpstreamAddr, UpstreamAddresses};
use crate::datapath::budget::FdBudget;
use crate::datapath::net::StreamOptions;
use crate::datapath::pump::Shared;
use crate::datapath::ring::BufPool;
use crate::datapath::splice::PipePool;
use crate::observe::metric_kinds::ClientReject;
use crate::observe::metrics::{Metrics, UpstreamRow};
use crate::observe::routed::{RouteCounts, UpstreamCounts};
use crate::throttle::Throttle;
use crate::upstream::balance::Balancer;
use crate::upstream::clients::SharedClients;
use crate::upstream::endpoint::{Change, Endpoint, Tried, Upstreams, HOLD};
use crate::upstream::health;
use crate::way::Way;
use crate::wire::greeting::{Choice, ConnectRules, Rules, SniRules};
use crate::wire::sni;

pub use crate::upstream::listener::Listener;
pub(crate) use crate::upstream::listener::UnixListening;

/// The timeouts a pair checks itself against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub(crate) connect: Duration,
    /// How long a greeting may take (`--header-timeout`).
    pub(crate) header: Duration,
    pub(crate) idle: Option<Duration>,
    pub(crate) fin: Duration,
    /// How long a pair may live, counted from its accept (`--max-connection-duration`); `None` = forever.
    pub(crate) lifetime: Option<Duration>,
}

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
            sni: None,
        })
    })
}

/// What the route's settings make of its upstreams' health evidence.
fn health_policy(config: &RouteConfig) -> health::Policy {
    health::Policy {
        fall: config.fall,
        rise: config.rise,
        probed: config.health_interval.is_some(),
    }
}

/// The greeting of route `index`'s listener for `addr` when it serves SNI routing (`None`: a plain
/// listener): the PROXY header if the routes take one (they agree: the file's checks), then the
/// ClientHello, whose server name chooses among the routes of [`config::sni_group`], in file order.
pub(crate) fn sni_rules(
    routes: &[RouteConfig],
    index: usize,
    addr: SocketAddr,
) -> Option<Arc<Rules>> {
    let group = config::sni_group(routes, index, addr);
    if group.is_empty() {
        return None;
    }
    let holder = routes.get(index)?;
    let members = || group.iter().filter_map(|&at| routes.get(at));
    let rules = members()
        .enumerate()
        .map(|(at, route)| (at, route.name.as_str(), &route.sni));
    // The file's checks refused a conflict; a table that fails here serves no hello (a plain listener).
    let table = sni::Table::build(rules).ok()?;
    let choices = members()
        .map(|route| Choice {
            route: route.name.clone(),
            send_proxy: route.send_proxy,
        })
        .collect();
    Some(Arc::new(Rules {
        accept_proxy: holder.accept_proxy,
        carry_tlvs: holder.send_proxy_tlvs,
        connect: None,
        sni: Some(SniRules {
            table,
            routes: choices,
        }),
    }))
}

/// Floor of the per-wakeup byte budget of one pair.
const MIN_PAIR_BUDGET: usize = 1 << 20;
/// Empty pipes a route keeps for `--splice` (each costs two fds, so the pool stays small).
const MAX_SPARE_PIPES: usize = 32;
/// How often the "all upstreams are down" (or "none resolves") warning may repeat.
const ALL_DOWN_WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// At most one info line a second about a route's refused or timed-out upstream connects: a dead
/// upstream under load fails thousands a second, and `edgefwd_route_connect_failures_total` counts them.
const CONNECT_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// A client's hold on one endpoint of its route, from [`Route::lease`] to [`Route::give_back`]: while
/// it lives, the endpoint's `active` count (least-connections balancing, the `active` metric, when a
/// retired endpoint may go) includes the client. It is neither `Clone` nor `Copy`, and `give_back`
/// takes it by value: an endpoint is given back at most once per lease, and only there.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a lease dropped without give_back leaves its endpoint counted busy"]
pub(crate) struct Lease {
    slot: usize,
}

impl Lease {
    /// The endpoint's slot in its route.
    pub(crate) fn slot(&self) -> usize {
        self.slot
    }
}

/// A route and its running state.
#[derive(Debug)]
pub(crate) struct Route {
    /// Unique over the process's life (slab slots are reused): answers from the resolver carry it.
    pub(crate) uid: u64,
    pub(crate) config: RouteConfig,
    /// Bound listeners; empty once the route drains or a shutdown begins.
    pub(crate) listeners: Vec<Listener>,
    /// Bound Unix listeners (first reactor only); emptied with `listeners`.
    pub(crate) unix_listeners: Vec<UnixListening>,
    /// The upstreams and their endpoints (one per address), with health and load.
    pub(crate) upstreams: Upstreams,
    /// Its series of the per-route metrics: set by the reactor that makes the route (by name, so a
    /// reload's successor counts on in the same series); counted nowhere read until then.
    pub(crate) counts: RouteCounts,
    balancer: Balancer,
    /// Ring storage for this route's pairs (rings are `buffer_size` long, so each route has its own).
    pub(crate) pool: BufPool,
    /// Pipes for `--splice` (`--pipe-size` long); `None` when splicing is off.
    pub(crate) pipes: Option<PipePool>,
    pub(crate) deadlines: Deadlines,
    pub(crate) options: StreamOptions,
    /// What clients must send before forwarding starts (`--accept-proxy`, `--mode connect`); `None`:
    /// nothing, the upstream connect starts at accept.
    pub(crate) greeting: Option<Arc<Rules>>,
    /// Bytes one pair may read per wakeup before it must yield.
    pub(crate) pair_budget: usize,
    /// Pairs open.
    pub(crate) pairs: usize,
    /// Removed by a reload: accepts nothing, goes away with its last pair.
    pub(crate) draining: bool,
    /// Stopped at `max_connections` with a listener still ready (counted once per stop).
    pub(crate) at_limit: bool,
    /// Since when the route has been stopped at `max_connections` with clients queued, as far as
    /// `queue_timeout` is concerned (restarted each time the queue is flushed).
    pub(crate) full_since: Option<Instant>,
    /// Open connections and rate windows per client (`max_conns_per_client`, `conn_rate_per_client`):
    /// a table of its own until the reactor gives it the one shared by the route's name.
    pub(crate) clients: SharedClients,
    all_down_warning: Throttle,
    unresolved_warning: Throttle,
    /// Warnings that the route reached `max_connections` with clients waiting.
    pub(crate) limit_warning: Throttle,
    /// Info lines about refused and timed-out upstream connects.
    pub(crate) connect_failure_log: Throttle,
    /// When the next round of health probes is due.
    pub(crate) next_probe: Option<Instant>,
    /// When host-name upstreams are next re-resolved.
    pub(crate) next_resolve: Option<Instant>,
    /// A resolution job is with the resolver thread.
    pub(crate) resolving: bool,
}

impl Route {
    /// Upstream `index`'s name was looked up again (re-resolution, or a reloaded file): new addresses
    /// become endpoints for new connects, dropped ones take no new connects while their live pairs run
    /// on ([`Upstreams::resolved`]). Changes are logged once.
    pub(crate) fn resolved(&mut self, index: usize, lookup: UpstreamAddresses, now: Instant) {
        let changes = self.upstreams.resolved(index, lookup, now);
        self.report(&changes);
    }

    /// Logs what changed in the upstreams' addresses.
    fn report(&self, changes: &[Change]) {
        let route = &self.config.name;
        let list = self.upstreams.list();
        let name = |index: usize| list.get(index).map_or("-", |u| u.name.as_str());
        let addrs = |addrs: &[UpstreamAddr]| {
            let texts: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            texts.join(", ")
        };
        for change in changes {
            match change {
                Change::Readdressed { upstream, was, now } => info!(
                    "upstream {} of route {route} now resolves to {} (was {})",
                    name(*upstream),
                    addrs(now),
                    was.as_deref().map_or_else(|| "unresolved".to_string(), addrs)
                ),
                Change::Holding { upstream, error } => warn!(
                    "upstream {} of route {route}: {error}; keeping its addresses for up to {}s",
                    name(*upstream),
                    HOLD.as_secs()
                ),
                Change::Unresolved { upstream, error } => warn!(
                    "upstream {} of route {route} is down: {error}; no connection goes to it until it resolves ({})",
                    name(*upstream),
                    self.config.resolve_interval.map_or_else(
                        || "resolve_interval is off: a reload asks again".to_string(),
                        |every| format!("asked again every {}ms", every.as_millis())
                    )
                ),
                Change::NoRoom { upstream, addrs: left } => warn!(
                    "upstream {} of route {route}: no endpoint slot left for {}; asked again at the next resolution",
                    name(*upstream),
                    addrs(left)
                ),
            }
        }
    }

    /// A route over `config`, accepting on `listeners` (already bound, not yet registered);
    /// `pipes` gives it a pool of pipes that large for `--splice`, each in a slot of that fd budget.
    /// With `previous` (the upstreams of the route a reload replaces), upstreams in both keep their
    /// addresses' health and failure counts, so a reload neither resurrects a dead endpoint nor resets
    /// a counter.
    pub(crate) fn new(
        uid: u64,
        config: RouteConfig,
        listeners: Vec<Listener>,
        pipes: Option<(usize, FdBudget)>,
        (now, previous): (Instant, Option<&Upstreams>),
    ) -> Route {
        let seed = now.elapsed().as_nanos() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(uid, |d| d.as_nanos() as u64)
            ^ uid;
        let (upstreams, changes) = Upstreams::new(&config.upstreams, previous, now);
        let route = Route {
            uid,
            balancer: Balancer::new(config.balance, 0, seed),
            upstreams,
            counts: RouteCounts::default(),
            pool: BufPool::new(config.buffer_size),
            pipes: pipes.map(|(size, budget)| PipePool::new(size, MAX_SPARE_PIPES, budget)),
            greeting: greeting_rules(&config),
            deadlines: Deadlines {
                connect: config.connect_timeout,
                header: config.header_timeout,
                idle: config.idle_timeout,
                fin: config.fin_timeout,
                lifetime: config.max_connection_duration,
            },
            options: StreamOptions {
                nodelay: config.nodelay,
                keepalive: config.keepalive,
            },
            pair_budget: (4 * config.buffer_size).max(MIN_PAIR_BUDGET),
            pairs: 0,
            draining: false,
            at_limit: false,
            full_since: None,
            clients: SharedClients::default(),
            all_down_warning: Throttle::new(ALL_DOWN_WARNING_INTERVAL),
            unresolved_warning: Throttle::new(ALL_DOWN_WARNING_INTERVAL),
            limit_warning: Throttle::new(ALL_DOWN_WARNING_INTERVAL),
            connect_failure_log: Throttle::new(CONNECT_FAILURE_LOG_INTERVAL),
            next_probe: config.health_interval.map(|_| now),
            next_resolve: config.resolve_interval.map(|interval| now + interval),
            resolving: false,
            listeners,
            unix_listeners: Vec::new(),
            config,
        };
        route.report(&changes);
        route
    }

    /// Whether a client from `addr` may connect now ([`SharedClients::admit`]).
    pub(crate) fn admit_client(
        &self,
        addr: IpAddr,
        now: Instant,
    ) -> Result<Option<IpAddr>, ClientReject> {
        self.clients.admit(addr, &self.config, now)
    }

    /// A connection admitted under `key` closed.
    pub(crate) fn release_client(&self, key: IpAddr, now: Instant) {
        self.clients.release(key, &self.config, now);
    }

    /// When queued clients of this route are next due to be flushed by `queue_timeout`.
    pub(crate) fn queue_deadline(&self) -> Option<Instant> {
        self.full_since
            .zip(self.config.queue_timeout)
            .map(|(since, timeout)| since + timeout)
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// Counts in `counts` from now on, and each endpoint in its series there (one that appears later
    /// takes its series at its first connect).
    pub(crate) fn count_in(&mut self, counts: RouteCounts) {
        self.counts = counts;
        let slots: Vec<usize> = self.upstreams.live().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.upstream_counts(slot);
        }
    }

    /// The per-upstream series of endpoint `slot` (taken from the route's on first use); `None` for a
    /// free slot.
    pub(crate) fn upstream_counts(&mut self, slot: usize) -> Option<&UpstreamCounts> {
        let endpoint = self.upstreams.get_mut(slot)?;
        let counts = &self.counts;
        Some(
            endpoint
                .counts
                .get_or_insert_with(|| counts.upstream(&endpoint.label)),
        )
    }

    /// A pair of this route, connected to endpoint `slot` if any, forwarded `bytes` (c2u, u2c) more.
    pub(crate) fn forwarded(&mut self, slot: Option<usize>, bytes: (u64, u64)) {
        let moved = [
            (Way::ClientToUpstream, bytes.0),
            (Way::UpstreamToClient, bytes.1),
        ];
        for (way, n) in moved {
            self.counts.forwarded(way, n);
        }
        if let Some(upstream) = slot.and_then(|slot| self.upstream_counts(slot)) {
            for (way, n) in moved {
                upstream.forwarded(way, n);
            }
        }
    }

    /// What this route's pairs borrow while they run.
    pub(crate) fn shared<'a>(&'a mut self, metrics: &'a mut Metrics) -> Shared<'a> {
        Shared {
            pool: &mut self.pool,
            pipes: self.pipes.as_mut(),
            metrics,
        }
    }

    /// Below `max_connections`.
    pub(crate) fn below_limit(&self) -> bool {
        self.pairs < self.config.max_connections
    }

    /// Whether no upstream of the route resolves to an address, so a client has nothing to try; warns
    /// (rate-limited) when so.
    pub(crate) fn unresolved(&mut self, now: Instant) -> bool {
        if !self.upstreams.none_live() {
            return false;
        }
        if let Some(suppressed) = self.unresolved_warning.allow(now) {
            warn!(
                "no upstream of route {} resolves to an address; refusing clients ({suppressed} similar warnings suppressed)",
                self.config.name
            );
        }
        true
    }

    /// Picks an endpoint for a client from `client` among those it has not been tried on (`tried`, to
    /// which the pick is added) and leases it: the endpoint's `active` count includes the client until
    /// the lease comes back to [`Route::give_back`]. `None` when no endpoint is left to pick. How many
    /// attempts a client gets is not decided here but by its connect plan (`session::attempt`).
    pub(crate) fn lease(
        &mut self,
        client: IpAddr,
        tried: &mut Tried,
        now: Instant,
    ) -> Option<(Lease, UpstreamAddr)> {
        let slot = self.pick(client, tried, now)?;
        tried.insert(slot);
        let endpoint = self.upstreams.get_mut(slot)?;
        endpoint.active += 1;
        Some((Lease { slot }, endpoint.addr.clone()))
    }

    /// The one way a lease ends, whether its connect failed over or its pair closed: the endpoint's
    /// `active` count drops by one (and a retired endpoint goes once nothing counts on it).
    pub(crate) fn give_back(&mut self, lease: Lease) {
        self.upstreams.release(lease.slot);
    }

    /// The balancer's choice among the untried endpoints; warns (rate-limited) when it fails open.
    fn pick(&mut self, client: IpAddr, tried: &Tried, now: Instant) -> Option<usize> {
        let Route {
            upstreams,
            balancer,
            config,
            all_down_warning,
            ..
        } = self;
        let candidates = upstreams.candidates(tried, now, config.health_interval.is_some());
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

    /// A connect or probe to endpoint `slot` completed.
    pub(crate) fn connect_succeeded(&mut self, slot: usize, now: Instant) {
        let Some(endpoint) = self.upstreams.get_mut(slot) else {
            return;
        };
        let policy = health_policy(&self.config);
        if endpoint.health.on_success(now, policy, &endpoint.label) == Some(health::Change::CameUp)
        {
            info!(
                "upstream {} of route {} is up",
                endpoint.label, self.config.name
            );
        }
    }

    /// A connect or probe to endpoint `slot` failed (refused, timed out, or any other error).
    pub(crate) fn connect_failed(&mut self, slot: usize, now: Instant, by: health::Evidence) {
        let Some(endpoint) = self.upstreams.get_mut(slot) else {
            return;
        };
        endpoint.connect_failures += 1;
        let change =
            endpoint
                .health
                .on_failure(now, health_policy(&self.config), &endpoint.label, by);
        if let Some(health::Change::WentDown { backoff, after }) = change {
            warn!(
                "upstream {} of route {} is down after {} {}; retrying in {}ms",
                endpoint.label,
                self.config.name,
                self.config.fall,
                after.words(),
                backoff.as_millis()
            );
        }
    }

    /// How endpoint `slot` is named in logs (`-` for none).
    pub(crate) fn endpoint_label(&self, slot: usize) -> &str {
        self.upstreams.get(slot).map_or("-", |e| e.label.as_str())
    }

    /// TCP and Unix listeners together: the range of [`Route::describe_listener`]'s index.
    pub(crate) fn listener_count(&self) -> usize {
        self.listeners.len() + self.unix_listeners.len()
    }

    /// Whether any listener, TCP or Unix, has connections waiting.
    pub(crate) fn any_listener_ready(&self) -> bool {
        self.listeners.iter().any(|l| l.ready) || self.unix_listeners.iter().any(|l| l.ready)
    }

    /// The start line of listener `index` (TCP ones first, then Unix ones): it begins with
    /// `listening on ADDR`, which tests parse.
    pub(crate) fn describe_listener(&self, index: usize) -> Option<String> {
        let local = match self.listeners.get(index) {
            Some(listener) => listener.local.to_string(),
            None => {
                let unix = index.checked_sub(self.listeners.len())?;
                self.unix_listeners.get(unix)?.addr.to_string()
            }
        };
        Some(format!(
            "listening on {} route={} upstreams={}{}",
            local,
            self.config.name,
            self.upstreams_text(),
            settings::start_line(&self.config),
        ))
    }

    /// The start line of the addresses this route serves through a socket an earlier route of the
    /// file holds (SNI routing): `sharing ADDR... route=...`, or `None` when it holds all of its own.
    pub(crate) fn describe_shared(&self) -> Option<String> {
        let shared: Vec<String> = self
            .config
            .listen
            .iter()
            .filter(|addr| !self.listeners.iter().any(|l| l.requested == **addr))
            .map(ToString::to_string)
            .collect();
        (!shared.is_empty() && !self.draining && self.config.sni.is_set()).then(|| {
            format!(
                "sharing {} route={} upstreams={}{}",
                shared.join(","),
                self.config.name,
                self.upstreams_text(),
                settings::start_line(&self.config),
            )
        })
    }

    /// The upstreams as a start line gives them: names, their addresses when they differ, weights.
    fn upstreams_text(&self) -> String {
        let upstreams: Vec<String> = self
            .upstreams
            .list()
            .iter()
            .enumerate()
            .map(|(index, u)| {
                let mut text = u.name.clone();
                let addrs: Vec<String> = self
                    .upstreams
                    .live_of(index)
                    .map(|(_, e)| e.addr.to_string())
                    .collect();
                if addrs.is_empty() {
                    text.push_str("(unresolved)");
                } else if addrs != [u.name.as_str()] {
                    text.push_str(&format!("({})", addrs.join(" ")));
                }
                if u.weight != 1 {
                    text.push_str(&format!("*{}", u.weight));
                }
                text
            })
            .collect();
        upstreams.join(",")
    }

    /// One metrics row per live endpoint, labelled as in the logs (`name (address)` for a host name),
    /// and one row, down, for each upstream that has no address.
    pub(crate) fn upstream_rows<'a>(&'a self) -> impl Iterator<Item = UpstreamRow<'a>> + Clone {
        let route = self.config.name.as_str();
        let row = move |e: &'a Endpoint| UpstreamRow {
            route,
            upstream: &e.label,
            up: e.health.is_up(),
            active: e.active,
            connect_failures: e.connect_failures,
        };
        let unresolved = self
            .upstreams
            .list()
            .iter()
            .enumerate()
            .filter_map(|(index, u)| {
                self.upstreams
                    .live_of(index)
                    .next()
                    .is_none()
                    .then_some(UpstreamRow {
                        route,
                        upstream: &u.name,
                        up: false,
                        active: 0,
                        connect_failures: 0,
                    })
            });
        self.upstreams
            .live()
            .map(move |(_, e)| row(e))
            .chain(unresolved)
    }
}

/// Whether a route of a reloaded file continues running route `old`: the same name when either was named,
/// else the same set of listen addresses. A match whose settings differ replaces the old route.
pub(crate) fn same_route(old: &RouteConfig, new: &RouteConfig) -> bool {
    if old.named || new.named {
        return old.named && new.named && old.name == new.name;
    }
    let sorted = |addrs: &[SocketAddr]| {
        let mut addrs = addrs.to_vec();
        addrs.sort();
        addrs
    };
    sorted(&old.listen) == sorted(&new.listen) && {
        let mut old = old.listen_unix.clone();
        let mut new = new.listen_unix.clone();
        old.sort();
        new.sort();
        old == new
    }
}

/// Whether a matched route of a reloaded file asks for nothing the running route `old` does not already
/// do. The resolved addresses of an upstream do not count (the name does): re-resolution keeps a
/// running route's addresses current, and a route replaced only because DNS answered differently would
/// lose its warm connections and balancer state, and count its limit afresh, for nothing.
pub fn same_settings(old: &RouteConfig, new: &RouteConfig) -> bool {
    let mut new = new.clone();
    for upstream in &mut new.upstreams {
        if let Some(running) = old.upstreams.iter().find(|u| u.name == upstream.name) {
            upstream.addrs = running.addrs.clone();
        }
    }
    *old == new
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Algorithm;
    use crate::config::UpstreamConfig;

    pub(crate) fn route(name: Option<&str>, listen: &[&str]) -> RouteConfig {
        RouteConfig {
            name: name.unwrap_or("route-1").to_string(),
            named: name.is_some(),
            listen: listen.iter().map(|a| a.parse().expect("addr")).collect(),
            listen_unix: Vec::new(),
            unix_mode: crate::config::DEFAULT_UNIX_MODE,
            upstreams: vec![UpstreamConfig {
                name: "127.0.0.1:9".into(),
                addrs: Ok(vec!["127.0.0.1:9".parse().expect("addr")]),
                weight: 1,
            }],
            balance: Algorithm::RoundRobin,
            buffer_size: 4096,
            max_connections: 10,
            connect_timeout: Duration::from_secs(1),
            connect_attempts: 1,
            idle_timeout: None,
            fin_timeout: Duration::from_secs(1),
            max_connection_duration: None,
            health_interval: None,
            health_timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            health_send: None,
            health_expect: None,
            resolve_interval: None,
            nodelay: true,
            keepalive: None,
            backlog: 16,
            mode: Mode::Forward,
            allow: crate::wire::allow::AllowList::default(),
            proxy_auth: None,
            send_proxy: None,
            send_proxy_tlvs: Default::default(),
            accept_proxy: false,
            header_timeout: Duration::from_secs(10),
            protocol: crate::config::Protocol::Tcp,
            udp_idle_timeout: Duration::from_secs(60),
            udp_max_sessions: 10,
            max_conns_per_client: None,
            conn_rate_per_client: None,
            per_client_prefix: Default::default(),
            client_acl: Default::default(),
            queue_timeout: None,
            sni: Default::default(),
        }
    }

    /// Only a listener of an SNI route reads a ClientHello; its table holds every route of its
    /// address, in file order, each with its own `send_proxy`.
    #[test]
    fn test_sni_rules_only_for_sni_listeners() {
        let plain = route(Some("plain"), &["127.0.0.1:7000"]);
        let addr = plain.listen[0];
        assert!(sni_rules(std::slice::from_ref(&plain), 0, addr).is_none());
        let mut api = route(Some("api"), &["127.0.0.1:7000"]);
        api.sni.names = vec!["api.example.com".parse().expect("pattern")];
        let mut rest = route(Some("rest"), &["127.0.0.1:7000"]);
        rest.sni.default = true;
        rest.send_proxy = Some(crate::wire::proxy_protocol::Version::V2);
        let routes = [api, rest, route(Some("other"), &["127.0.0.1:7001"])];
        let rules = sni_rules(&routes, 0, addr).expect("an SNI listener");
        let sni = rules.sni.as_ref().expect("reads a hello");
        let names: Vec<_> = sni.routes.iter().map(|c| c.route.as_str()).collect();
        assert_eq!(names, ["api", "rest"]);
        assert_eq!(sni.routes[1].send_proxy, routes[1].send_proxy);
        assert!(sni_rules(&routes, 2, routes[2].listen[0]).is_none());
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
        resolved_again.upstreams[0].addrs = Ok(vec!["127.0.0.2:9".parse().expect("addr")]);
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

    /// A route none of whose upstreams resolves has nothing to lease; once the name resolves, it has.
    #[test]
    fn test_unresolved_route_leases_nothing() {
        let mut config = route(None, &["127.0.0.1:0"]);
        config.upstreams[0] = UpstreamConfig {
            name: "nowhere.test:80".into(),
            addrs: Err("cannot resolve 'nowhere.test:80'".into()),
            weight: 1,
        };
        let now = Instant::now();
        let mut route = Route::new(1, config, Vec::new(), None, (now, None));
        let client: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(route.unresolved(now));
        assert!(route.lease(client, &mut Tried::default(), now).is_none());
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        route.resolved(0, Ok(vec![addr.into()]), now);
        assert!(!route.unresolved(now));
        let (lease, addr) = route
            .lease(client, &mut Tried::default(), now)
            .expect("a lease");
        assert_eq!(addr, "127.0.0.1:9".parse().expect("addr"));
        assert_eq!(
            route.endpoint_label(lease.slot()),
            "nowhere.test:80 (127.0.0.1:9)"
        );
        route.give_back(lease);
    }

    /// Each lease counts its endpoint busy once, a client is never leased an endpoint it was tried on,
    /// and `give_back` uncounts exactly the lease it is given.
    #[test]
    fn test_lease_skips_tried_and_give_back_uncounts_once() {
        let mut config = route(None, &["127.0.0.1:0"]);
        config.upstreams.push(UpstreamConfig {
            name: "127.0.0.1:10".into(),
            addrs: Ok(vec!["127.0.0.1:10".parse().expect("addr")]),
            weight: 1,
        });
        let now = Instant::now();
        let mut route = Route::new(1, config, Vec::new(), None, (now, None));
        let client: IpAddr = "127.0.0.1".parse().expect("ip");
        let active = |route: &Route, slot: usize| route.upstreams.get(slot).map(|e| e.active);
        let mut tried = Tried::default();
        let (first, _) = route.lease(client, &mut tried, now).expect("first");
        let (second, _) = route.lease(client, &mut tried, now).expect("second");
        assert_ne!(first.slot(), second.slot());
        assert_eq!(tried.count(), 2);
        assert!(route.lease(client, &mut tried, now).is_none(), "both tried");
        let (one, two) = (first.slot(), second.slot());
        assert_eq!(
            (active(&route, one), active(&route, two)),
            (Some(1), Some(1))
        );
        route.give_back(first);
        assert_eq!(
            (active(&route, one), active(&route, two)),
            (Some(0), Some(1))
        );
        route.give_back(second);
        assert_eq!(active(&route, two), Some(0));
    }
}
