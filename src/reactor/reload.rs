//! SIGHUP reload: the running routes are matched against a re-read `--config` file and swapped in place,
//! without cutting a connection and without a moment in which a kept address refuses clients.
//!
//! The file is read, validated and resolved on the resolver thread; the answer arrives through the waker
//! ([`Reactor::on_waker`]). Applying it is all or nothing: every new address is bound, and the route
//! limit checked, before anything changes. The lifecycle and edge-triggered points:
//! - A replaced or removed route is not dropped: pairs name their route by slab slot, so it stays,
//!   "draining" (no listeners, no probes, no resolution, no warm connections), until its last pair closes
//!   ([`Reactor::remove_if_drained`]). Its uid tells late answers (probes, resolutions) that it is gone.
//! - A listener for an address the new route keeps is taken over, not re-bound: deregistered from the old
//!   route's token, registered under the new one, and marked ready, because the edge for connections
//!   already in its backlog may have been consumed under the old token and will not come again.
//! - An event for a listener token moved or closed earlier in the same batch at worst marks a listener
//!   ready that is not; its next accept returns WouldBlock and clears the bit.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use log::{error, info, log, warn};
use mio::net::TcpListener;
use mio::{Interest, Registry};
use socket2::SockRef;

use super::Reactor;
use crate::config::{Config, RouteConfig};
use crate::datapath::net;
use crate::observe::metric_kinds::Reload;
use crate::reactor::worker::Job;
use crate::token::{self, MAX_ROUTES};
use crate::upstream::route::{self, Listener, Route, UnixListening};

/// How a route of a reloaded file relates to the running ones.
#[derive(Debug, Clone, Copy)]
enum Match {
    /// Same route, same settings: left alone.
    Kept(usize),
    /// Same route, new settings: replaced by a new route; the old one drains.
    Changed(usize),
    /// A route that was not there.
    Added,
}

/// Where a listener of a reloaded route comes from.
#[derive(Debug)]
enum Source {
    /// Taken over from a replaced or removed route (slot, listener index): no gap in accepting.
    Moved(usize, usize),
    /// Newly bound.
    Bound(Listener),
}

/// A listener taken over by a route whose `nodelay` may differ from the retiring route's gets the new
/// setting, which is what its accepted sockets inherit on Linux ([`net::pass_nodelay_on`]); a listener
/// bound afresh got it before listen(2). Failing cannot happen for a socket we hold; if it did, the
/// route's clients would only miss TCP_NODELAY, so the listener is kept.
fn pass_nodelay_on(listener: Listener, route: &RouteConfig) -> Listener {
    if let Err(err) = net::pass_nodelay_on(&SockRef::from(&listener.socket), route.nodelay) {
        warn!("listener {}: cannot set TCP_NODELAY: {err}", listener.local);
    }
    listener
}

impl Reactor {
    /// SIGHUP: the file is read, validated and resolved by the resolver thread; the answer comes back
    /// through [`Self::on_waker`].
    pub(super) fn request_reload(&mut self) {
        if self.siblings.index != 0 {
            // Reactor 0 reads the file once for all `--threads` reactors and hands it on (`Answer::Follow`).
            return;
        }
        self.notify_reloading();
        let Some(path) = self.config.file.clone() else {
            warn!("SIGHUP ignored: no --config file to reload");
            return self.notify_ready();
        };
        info!("SIGHUP: reloading {}", path.display());
        let job = Job::Reload {
            path,
            defaults: self.defaults,
        };
        if !self
            .worker
            .as_ref()
            .is_some_and(|worker| worker.submit(job))
        {
            self.reload_rejected("the resolver thread is gone");
        }
    }

    pub(super) fn reload_rejected(&mut self, message: &str) {
        self.count_reload(false);
        error!("reload rejected, keeping the running configuration: {message}");
    }

    /// Applies a validated configuration without cutting a connection:
    /// - routes are matched to running ones by name, or by listen addresses when unnamed;
    /// - an unchanged route is left alone;
    /// - a changed route is replaced by a new one (new settings, new pool) that takes over the listeners
    ///   for addresses it keeps, and the old route drains: it accepts nothing more and goes away with its
    ///   last pair; upstreams in both keep their health;
    /// - a new route binds its addresses; a removed route closes its listeners and drains.
    ///
    /// Every new address is bound before anything changes, so a bind failure rejects the reload whole.
    ///
    /// `handed`, with `--threads` on a reactor other than the first: route by route, the listening
    /// sockets of the routes the first reactor built, which this reactor accepts from where the first
    /// one bound (empty otherwise).
    pub(super) fn reload(&mut self, mut new: Config, handed: Vec<Vec<Option<TcpListener>>>) {
        if self.drain.is_some() {
            info!("reload ignored: shutting down");
            return;
        }
        self.keep_udp_routes(&mut new.routes);
        let handoff = self.has_followers().then(|| new.clone());
        // As at start, each of the `--threads` reactors takes an even share of every route's limit.
        for route in &mut new.routes {
            route.max_connections = route.max_connections.div_ceil(self.config.threads);
        }
        let matches = self.match_routes(&new.routes);
        let matched: HashSet<usize> = matches
            .iter()
            .filter_map(|m| match m {
                Match::Kept(key) | Match::Changed(key) => Some(*key),
                Match::Added => None,
            })
            .collect();
        let replaced: Vec<usize> = matches
            .iter()
            .filter_map(|m| match m {
                Match::Changed(key) => Some(*key),
                _ => None,
            })
            .collect();
        let removed: Vec<usize> = self
            .routes
            .iter()
            .filter(|(key, route)| !route.draining && !matched.contains(key))
            .map(|(key, _)| key)
            .collect();
        let building = matches
            .iter()
            .filter(|m| !matches!(m, Match::Kept(_)))
            .count();
        if self.routes.len() + building > MAX_ROUTES {
            return self.reload_rejected(&format!(
                "more than {MAX_ROUTES} routes would be alive (draining ones count)"
            ));
        }
        let retiring: Vec<usize> = replaced.iter().chain(&removed).copied().collect();
        let sources = match self.gather_listeners(&new.routes, &matches, &retiring, handed) {
            Ok(sources) => sources,
            Err(message) => return self.reload_rejected(&message),
        };
        // From here on nothing fails as a whole.
        let mut spare_unix = Vec::new();
        let mut taken = self.retire(&retiring, &mut spare_unix);
        // Where each route built by this reload runs, for the followers to share its listeners (a kept
        // route's are theirs already).
        let mut running: Vec<Option<usize>> = Vec::with_capacity(new.routes.len());
        for ((route, found), sources) in new.routes.iter().zip(&matches).zip(sources) {
            if let Match::Kept(key) = found {
                running.push(None);
                self.adopt_addresses(*key, route);
                continue;
            }
            running.push(None);
            let listeners = sources
                .into_iter()
                .filter_map(|source| match source {
                    Source::Moved(key, index) => taken
                        .remove(&(key, index))
                        .map(|listener| pass_nodelay_on(listener, route)),
                    Source::Bound(listener) => Some(listener),
                })
                .collect();
            let previous = match found {
                Match::Changed(old) => Some(*old),
                _ => None,
            };
            let key = match self.insert_route(route.clone(), listeners, previous, &mut spare_unix) {
                Ok(key) => {
                    if let Some(slot) = running.last_mut() {
                        *slot = Some(key);
                    }
                    key
                }
                Err(message) => {
                    error!("reload: route {} not started: {message}", route.name);
                    continue;
                }
            };
            if let Some(fresh) = self.routes.get(key) {
                for index in 0..fresh.listener_count() {
                    if let Some(line) = fresh.describe_listener(index) {
                        log!(self.process_level(), "{line}");
                    }
                }
                if let Some(line) = fresh.describe_shared() {
                    info!("{line}");
                }
            }
        }
        // Listeners no route asked for: closing them refuses new clients there (a Unix one removes its file).
        drop(taken);
        drop(spare_unix);
        for key in &removed {
            if let Some(route) = self.routes.get(*key) {
                log!(
                    self.process_level(),
                    "route {}: removed; {} connections draining",
                    route.config.name,
                    route.pairs
                );
            }
        }
        for key in retiring {
            self.remove_if_drained(key);
        }
        self.adopt_globals(new);
        self.assign_sni();
        self.reload_epoch += 1;
        self.count_reload(true);
        if let Some(config) = handoff {
            self.hand_on(config, &running);
        }
        log!(
            self.process_level(),
            "reload: {} routes (+{} -{} ~{})",
            matches.len(),
            matches.iter().filter(|m| matches!(m, Match::Added)).count(),
            removed.len(),
            replaced.len()
        );
    }

    /// A kept route takes the addresses the reloaded file resolved its names to (a SIGHUP is how an
    /// operator makes a DNS change apply now), as re-resolution would.
    fn adopt_addresses(&mut self, key: usize, config: &RouteConfig) {
        let now = self.now;
        let Some(route) = self.routes.get_mut(key) else {
            return;
        };
        for fresh in &config.upstreams {
            let list = route.upstreams.list();
            if let Some(index) = list.iter().position(|u| u.name == fresh.name) {
                route.resolved(index, fresh.addrs.clone(), now);
            }
        }
        self.forget_retired_warm(key);
    }

    /// `--threads`: this is reactor 0 and there are others to hand reloads on to.
    fn has_followers(&self) -> bool {
        self.siblings.index == 0
            && self
                .siblings
                .followers
                .lock()
                .is_ok_and(|followers| !followers.is_empty())
    }

    /// Hands an applied configuration to the other reactors, each with its own descriptors of the
    /// listeners of the routes this reload built (`running`: for each route of `config`, its slot here
    /// if it was built), so every reactor accepts from the sockets bound here, as at start. A listener
    /// that cannot be shared (out of fds) is handed on as `None`: that follower then rejects the
    /// reload.
    fn hand_on(&self, config: Config, running: &[Option<usize>]) {
        let Ok(followers) = self.siblings.followers.lock() else {
            return;
        };
        for inbox in followers.iter() {
            let listeners = running
                .iter()
                .map(|key| {
                    let listeners = key.and_then(|key| self.routes.get(key));
                    listeners
                        .into_iter()
                        .flat_map(|route| &route.listeners)
                        .map(|listener| match net::share_listener(&listener.socket) {
                            Ok(socket) => Some(socket),
                            Err(err) => {
                                warn!("reload: cannot share listener {}: {err}", listener.local);
                                None
                            }
                        })
                        .collect()
                })
                .collect();
            if !inbox.follow(config.clone(), listeners) {
                warn!("reload: a sibling reactor is gone; it keeps its configuration");
            }
        }
    }

    /// Pairs each new route with the running route it continues, if any. A route whose settings are
    /// the same but which is to hold other sockets (an SNI route that now comes first on a shared
    /// address, or no longer does) is replaced too, so that its listeners are handed over.
    fn match_routes(&self, new: &[RouteConfig]) -> Vec<Match> {
        let mut used = HashSet::new();
        new.iter()
            .enumerate()
            .map(|(index, config)| {
                let found = self
                    .routes
                    .iter()
                    .filter(|(key, route)| !route.draining && !used.contains(key))
                    .find(|(_, route)| route::same_route(&route.config, config));
                match found {
                    Some((key, route)) => {
                        used.insert(key);
                        let holds: Vec<SocketAddr> =
                            route.listeners.iter().map(|l| l.requested).collect();
                        let same_sockets = holds == crate::config::bound_addresses(new, index);
                        if route::same_settings(&route.config, config) && same_sockets {
                            Match::Kept(key)
                        } else {
                            Match::Changed(key)
                        }
                    }
                    None => Match::Added,
                }
            })
            .collect()
    }

    /// For every route to build, where each of its listeners comes from: taken over from a retiring route
    /// that listens on the same address (as requested, or as bound: a route that pins the port it was
    /// given for port 0 keeps its socket), or bound now. A port-0 listener is only taken over by the route
    /// that replaces its own (another route asking for port 0 wants a port of its own). A `--threads`
    /// follower binds nothing: where the first reactor bound, it takes the socket `handed` on (route by
    /// route, in listen order). Returns an error, having closed what it bound, if a bind fails.
    fn gather_listeners(
        &self,
        routes: &[RouteConfig],
        matches: &[Match],
        retiring: &[usize],
        handed: Vec<Vec<Option<TcpListener>>>,
    ) -> Result<Vec<Vec<Source>>, String> {
        // (route slot, listener index, requested address, bound address)
        type Spare = (usize, usize, SocketAddr, SocketAddr);
        let mut spare: Vec<Spare> = retiring
            .iter()
            .filter_map(|key| self.routes.get(*key).map(|route| (*key, route)))
            .flat_map(|(key, route)| {
                route
                    .listeners
                    .iter()
                    .enumerate()
                    .map(move |(index, listener)| (key, index, listener.requested, listener.local))
            })
            .collect();
        let mut handed = handed.into_iter();
        let mut all = Vec::with_capacity(routes.len());
        for (route_index, (route, found)) in routes.iter().zip(matches).enumerate() {
            let mut handed = handed.next().unwrap_or_default();
            let mut sources = Vec::new();
            if !matches!(found, Match::Kept(_)) {
                let continues = match found {
                    Match::Changed(key) => Some(*key),
                    _ => None,
                };
                // Routes sharing an address (SNI routing) share its socket: the first one holds it.
                let bound = crate::config::bound_addresses(routes, route_index);
                for (index, addr) in bound.iter().enumerate() {
                    let reusable = |(key, _, requested, local): &Spare| {
                        (requested == addr && (addr.port() != 0 || continues == Some(*key)))
                            || (addr.port() != 0 && local == addr)
                    };
                    match spare.iter().position(reusable) {
                        Some(at) => {
                            let (key, index, _, _) = spare.swap_remove(at);
                            sources.push(Source::Moved(key, index));
                        }
                        None if self.siblings.index == 0 => {
                            sources.push(Source::Bound(Listener::bind(*addr, route)?));
                        }
                        None => sources.push(Source::Bound(Listener::adopt(
                            *addr,
                            handed
                                .get_mut(index)
                                .and_then(Option::take)
                                .ok_or_else(|| {
                                    format!("no listener for {addr} handed on by reactor 0")
                                })?,
                        )?)),
                    }
                }
            }
            all.push(sources);
        }
        Ok(all)
    }

    /// Marks routes as draining and takes their listeners out (deregistered, still open), keyed by
    /// (route slot, listener index), for new routes to take over.
    fn retire(
        &mut self,
        keys: &[usize],
        spare_unix: &mut Vec<UnixListening>,
    ) -> HashMap<(usize, usize), Listener> {
        let mut taken = HashMap::new();
        for key in keys {
            let Some(route) = self.routes.get_mut(*key) else {
                continue;
            };
            route.draining = true;
            if let Some(warm) = self.warm.as_mut() {
                warm.forget_route(route.uid);
            }
            for mut listener in std::mem::take(&mut route.unix_listeners) {
                let _ = self.poll.registry().deregister(&mut listener.socket);
                spare_unix.push(listener);
            }
            for (index, mut listener) in
                std::mem::take(&mut route.listeners).into_iter().enumerate()
            {
                // Failure means it was not registered, which is what we want anyway.
                let _ = self.poll.registry().deregister(&mut listener.socket);
                taken.insert((*key, index), listener);
            }
        }
        taken
    }

    /// Adds a route and registers its listeners under their tokens. Each listener is marked ready: one
    /// taken over from another route may hold queued connections whose edge was already consumed. With
    /// `previous` (the slot of the route it replaces), its upstreams start from what that route knew of
    /// them ([`Route::new`]).
    pub(super) fn insert_route(
        &mut self,
        config: RouteConfig,
        mut listeners: Vec<Listener>,
        previous: Option<usize>,
        spare_unix: &mut Vec<UnixListening>,
    ) -> Result<usize, String> {
        if self.routes.len() >= MAX_ROUTES {
            return Err(format!("more than {MAX_ROUTES} routes"));
        }
        // The slot the route will take: nothing is inserted in between.
        let key = self.routes.vacant_key();
        let mut unix_listeners = if self.siblings.index == 0 {
            unix_listeners_for(&config, spare_unix)?
        } else {
            Vec::new()
        };
        register_unix_listeners(self.poll.registry(), key, &mut unix_listeners)?;
        if let Err(err) = register_listeners(self.poll.registry(), key, &mut listeners) {
            for listener in &mut unix_listeners {
                let _ = self.poll.registry().deregister(&mut listener.socket);
            }
            return Err(err);
        }
        let previous = previous
            .and_then(|old| self.routes.get(old))
            .map(|old| &old.upstreams);
        let clients = self.siblings.clients.route(&config.name);
        let route = Route::new(
            self.next_route_uid,
            config,
            listeners,
            self.config
                .pipe_size()
                .map(|size| (size, self.siblings.budget.clone())),
            (self.now, previous),
        );
        let mut route = route;
        route.unix_listeners = unix_listeners;
        route.clients = clients;
        route.count_in((self.siblings.routes).route(&route.config.name, self.siblings.index));
        let key = self.routes.insert(route);
        self.next_route_uid += 1;
        Ok(key)
    }

    /// Counts one SIGHUP once per process: with `--threads N` every reactor reloads on its own, and the
    /// summed counters would say N reloads. Reactor 0's verdict stands for the process.
    fn count_reload(&mut self, ok: bool) {
        if self.siblings.index != 0 {
            return;
        }
        self.notify_ready();
        if ok {
            self.metrics.reloads[Reload::Applied] += 1;
        } else {
            self.metrics.reloads[Reload::Rejected] += 1;
        }
    }

    /// The settings that are not per route: `shutdown_timeout` applies at once; the metrics endpoint,
    /// the admin API, the stats line and the access log are set up at start only. The file leaving them
    /// out is not a change: the running values may come from the command line (`--metrics`,
    /// `--stats-interval`, `--access-log`), which a reload keeps.
    fn adopt_globals(&mut self, new: Config) {
        let metrics_changed = new.metrics.is_some_and(|m| Some(m) != self.config.metrics);
        let stats_changed = new
            .stats_interval
            .is_some_and(|d| Some(d) != self.config.stats_interval);
        let admin_changed = new.admin.is_some() && new.admin != self.config.admin;
        let log_changed =
            new.access_log.destination.is_some() && new.access_log != self.config.access_log;
        if metrics_changed || stats_changed || admin_changed || log_changed {
            warn!("reload: changes to metrics, admin, stats_interval and access_log take effect at the next restart");
        }
        self.config.shutdown_timeout = new.shutdown_timeout;
        self.config.routes = new.routes;
    }
}

/// Registers route `key`'s listeners under their tokens and marks them ready, all or none: when one
/// fails, those registered before it are deregistered again before the error returns (and the caller
/// drops them). A listener may be a `--threads` descriptor of a socket a sibling also holds, and the
/// registration of such a descriptor outlives its close ([`net::share_listener`]): left behind, it
/// would wake this poller with every new client of that socket, under a token of no route.
/// The Unix listeners of `config`: each taken from `spare` (those of the routes a reload retires, still
/// listening, so no client is refused meanwhile and our own socket is not mistaken for a live stranger)
/// or else bound.
fn unix_listeners_for(
    config: &RouteConfig,
    spare: &mut Vec<UnixListening>,
) -> Result<Vec<UnixListening>, String> {
    config
        .listen_unix
        .iter()
        .map(|addr| match spare.iter().position(|l| l.addr == *addr) {
            Some(at) => Ok(spare.swap_remove(at)),
            None => UnixListening::bind(addr, config),
        })
        .collect()
}

/// Registers Unix listeners under their tokens, all or none; each is marked ready (one taken over may
/// hold queued connections whose edge was consumed).
fn register_unix_listeners(
    registry: &Registry,
    key: usize,
    listeners: &mut [UnixListening],
) -> Result<(), String> {
    for index in 0..listeners.len() {
        let listener = &mut listeners[index];
        let token = token::unix_listener_token(key, index);
        if let Err(err) = registry.register(&mut listener.socket, token, Interest::READABLE) {
            let message = format!("cannot register listener {}: {err}", listener.addr);
            for registered in &mut listeners[..index] {
                let _ = registry.deregister(&mut registered.socket);
            }
            return Err(message);
        }
        listener.ready = true;
    }
    Ok(())
}

fn register_listeners(
    registry: &Registry,
    key: usize,
    listeners: &mut [Listener],
) -> Result<(), String> {
    for index in 0..listeners.len() {
        let listener = &mut listeners[index];
        let token = token::listener_token(key, index);
        if let Err(err) = registry.register(&mut listener.socket, token, Interest::READABLE) {
            let message = format!("cannot register listener {}: {err}", listener.local);
            for registered in &mut listeners[..index] {
                let _ = registry.deregister(&mut registered.socket);
            }
            return Err(message);
        }
        listener.ready = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> Listener {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let socket = net::bind_listener(addr, 16, true).expect("bind");
        Listener::adopt(addr, socket).expect("adopt")
    }

    /// A failed registration leaves none of the route's listeners registered.
    #[test]
    fn test_register_listeners_all_or_none() {
        let poll = mio::Poll::new().expect("poll");
        let registry = poll.registry();
        let mut listeners = vec![listener(), listener(), listener()];
        // The second one is registered already, so registering it again fails (EEXIST).
        registry
            .register(&mut listeners[1].socket, mio::Token(7), Interest::READABLE)
            .expect("register");
        assert!(register_listeners(registry, 3, &mut listeners).is_err());
        assert!(
            registry.deregister(&mut listeners[0].socket).is_err(),
            "the listener registered before the failure is still registered"
        );
        assert!(registry.deregister(&mut listeners[2].socket).is_err());

        let mut fresh = vec![listener(), listener()];
        register_listeners(registry, 4, &mut fresh).expect("register");
        assert!(fresh.iter().all(|listener| listener.ready));
        for listener in &mut fresh {
            registry
                .deregister(&mut listener.socket)
                .expect("registered");
        }
    }
}
