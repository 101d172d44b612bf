//! UDP routes in the loop: binding them, running their sockets on events and after a yield, and their
//! one idle deadline each. What a run does is `session::udp`'s; this file only lends it the registry,
//! the metrics and the time.
//!
//! UDP routes are served by reactor 0 alone: with `--threads`, a socket read by several reactors would
//! give one client address a session in each. A reload keeps the UDP routes the process started with
//! (changing one needs a restart) and says so when the file's differ.

use log::warn;

use crate::config::{Protocol, RouteConfig};
use crate::reactor::Reactor;
use crate::session::udp::forward::{Io, Run, UdpRoute};
use crate::token::MAX_UDP_ROUTES;

impl Reactor {
    /// Binds UDP route `config` and registers its socket.
    pub(super) fn bind_udp(&mut self, config: RouteConfig) -> Result<(), String> {
        if self.udp.len() >= MAX_UDP_ROUTES {
            return Err(format!("more than {MAX_UDP_ROUTES} udp routes"));
        }
        let index = self.udp.vacant_key();
        let uid = self.next_route_uid;
        self.next_route_uid += 1;
        let budget = self.siblings.budget.clone();
        let mut route = UdpRoute::bind(index, uid, config, budget, self.now)?;
        route
            .register(self.poll.registry())
            .map_err(|err| format!("cannot register udp://{}: {err}", route.local_addr()))?;
        self.udp.insert(route);
        Ok(())
    }

    /// One start line per UDP route.
    pub(super) fn udp_start_lines(&self) -> impl Iterator<Item = String> + '_ {
        self.udp.iter().map(|(_, route)| route.start_line())
    }

    /// Runs a UDP socket: the route's own (`session` `None`) or a session's upstream socket.
    pub(super) fn run_udp(&mut self, route: usize, session: Option<usize>) {
        let Some(udp) = self.udp.get_mut(route) else {
            return;
        };
        let mut io = Io {
            registry: self.poll.registry(),
            metrics: &mut self.metrics,
            now: self.now,
        };
        let run = match session {
            None => udp.on_client_readable(&mut io),
            Some(slot) => udp.on_upstream_readable(slot, &mut io),
        };
        if run == Run::Yielded {
            self.metrics.budget_yields += 1;
            self.udp_yielded.push((route, session));
        }
    }

    /// Runs again the UDP sockets that used their budget last time.
    pub(super) fn run_udp_yielded(&mut self) {
        for (route, session) in std::mem::take(&mut self.udp_yielded) {
            self.run_udp(route, session);
        }
    }

    /// Sends every UDP route's queued replies: once per loop turn, after the events and the yields.
    pub(super) fn flush_udp(&mut self) {
        for (_, udp) in self.udp.iter_mut() {
            udp.flush(&mut self.metrics);
        }
    }

    /// Closes idle sessions, and sets the sessions gauge.
    pub(super) fn expire_udp(&mut self) {
        let mut open = 0;
        for (_, udp) in self.udp.iter_mut() {
            let mut io = Io {
                registry: self.poll.registry(),
                metrics: &mut self.metrics,
                now: self.now,
            };
            udp.expire(&mut io);
            open += udp.sessions();
        }
        self.metrics.udp_sessions_open.set(open);
    }

    /// When the next UDP session expires.
    pub(super) fn udp_deadline(&self) -> Option<std::time::Instant> {
        self.udp
            .iter()
            .filter_map(|(_, udp)| udp.next_deadline())
            .min()
    }

    /// A reloaded file's UDP routes are taken out (the running ones stay as they are); warns when they
    /// differ from the running ones.
    pub(super) fn keep_udp_routes(&self, routes: &mut Vec<RouteConfig>) {
        let (udp, tcp): (Vec<RouteConfig>, Vec<RouteConfig>) = routes
            .drain(..)
            .partition(|route| route.protocol == Protocol::Udp);
        *routes = tcp;
        let running: Vec<&RouteConfig> = self.udp.iter().map(|(_, u)| &u.route.config).collect();
        let same = udp.len() == running.len()
            && udp.iter().all(|new| {
                running.iter().any(|old| {
                    crate::upstream::route::same_route(old, new)
                        && crate::upstream::route::same_settings(old, new)
                })
            });
        if !same && self.siblings.index == 0 {
            warn!("reload: udp routes are kept as they started; changing them needs a restart");
        }
    }
}
