//! SNI routing in the loop: which listeners read a ClientHello, and moving a pair to the route its
//! hello chose (docs/tls-sni.md).
//!
//! Routes that share a listen address share its socket, held by the first of them in the file
//! ([`crate::config::bound_addresses`]); a client accepted there belongs to that route until its
//! hello is read (its `max_connections`, its `header_timeout`). The hello's route is then looked up
//! by name, so a reload that replaces it is followed, and the pair moves: its count, and from then
//! on its limits, deadlines, buffers, balancer and `--send-proxy` are the chosen route's. The move is
//! made before the connect starts, so the lease and the per-client limits are taken on that route
//! only. In the per-route series the socket's route counts the accept, and the chosen route the pair
//! (the route holding the socket does, for a client refused before its hello chose one).

use log::debug;

use super::Reactor;
use crate::close::Cause;
use crate::observe::metric_kinds::SniReject;
use crate::upstream::route;
use crate::wire::greeting::Routed;

impl Reactor {
    /// Gives every listener of SNI routing its greeting (the ClientHello and the table of its routes),
    /// from the configuration in force: at start, and after each reload, which may have added or
    /// removed routes of a listener that stays where it is.
    pub(super) fn assign_sni(&mut self) {
        let routes = &self.config.routes;
        for (_, route) in self.routes.iter_mut().filter(|(_, r)| !r.draining) {
            let index = routes.iter().position(|c| c.name == route.config.name);
            for listener in &mut route.listeners {
                listener.greeting =
                    index.and_then(|index| route::sni_rules(routes, index, listener.requested));
            }
        }
    }

    /// Moves the pair in `slot` to the route its ClientHello chose, before its connect starts. False
    /// when the pair was closed instead: the route is gone (a reload removed it since the pair's
    /// listener was given its table), or it is at its `max_connections`.
    pub(super) fn route_by_hello(&mut self, slot: usize, routed: &Routed) -> bool {
        let name = routed.choice.route.as_str();
        let found = self
            .routes
            .iter()
            .find(|(_, route)| !route.draining && route.config.name == name)
            .map(|(key, route)| (key, route.below_limit()));
        let Some(pair) = self.pairs.get_mut(slot) else {
            return false;
        };
        let from = pair.route;
        let refused = match found {
            None => Some(SniReject::NoRoute),
            Some((to, below_limit)) if to != from && !below_limit => Some(SniReject::RouteFull),
            Some(_) => None,
        };
        if let Some(why) = refused {
            debug!(
                "conn={} client={} route {name} chosen by its ClientHello: {}",
                pair.id,
                pair.client_addr,
                if found.is_none() {
                    "gone"
                } else {
                    "at max_connections"
                }
            );
            pair.sni_rejected = Some(why);
            self.close_pair(slot, Cause::Rejected);
            return false;
        }
        pair.awaits_route = false;
        let to = found.map_or(from, |(to, _)| to);
        if to != from {
            pair.route = to;
            if let Some(route) = self.routes.get_mut(from) {
                route.pairs -= 1;
            }
            if let Some(route) = self.routes.get_mut(to) {
                route.pairs += 1;
            }
            self.remove_if_drained(from);
        }
        if let Some(route) = self.routes.get(to) {
            route.counts.paired();
        }
        self.metrics.sni_routed.count(name, routed.via, 1);
        true
    }
}
