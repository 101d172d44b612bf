//! The reactor's side of getting a pair its upstream: a new client goes to `session::connect::open`,
//! and every later step of its connect (greeting done, lookup answered, connected, failed) to
//! `session::connect::advance`, each with a `Context` lent from the reactor's fields; the reactor then
//! acts on the outcome like on any other (`settle`). Also the `--prewarm` pool's refill, whose
//! connections the first attempt of a client may take, and the lookup threads as `connect::Lookups`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use log::warn;
use mio::Poll;
use slab::Slab;

use super::Reactor;
use crate::config::UpstreamAddr;
use crate::datapath::budget::Slot;
use crate::datapath::stream::Conn;
use crate::observe::metrics::Metrics;
use crate::reactor::worker::{Lookup, Worker};
use crate::session::connect::{self, Context, Lookups, Step};
use crate::throttle::Throttle;
use crate::token::{MAX_SLOT, PAIR_GENERATIONS};
use crate::upstream::prewarm::WarmPool;
use crate::upstream::route::Route;
use crate::wire::greeting::Rules;

impl Reactor {
    /// Hands a client accepted on route `key` to the connect path, which registers its sockets; the pair
    /// keeps `fd_slot` (given back by `close_pair`); a client dropped or refused there gives it back at
    /// once.
    pub(super) fn open_pair(
        &mut self,
        key: usize,
        client: Conn,
        client_addr: SocketAddr,
        client_key: Option<IpAddr>,
        fd_slot: Slot,
        greeting: Option<Arc<Rules>>,
    ) {
        let id = self.next_id;
        self.next_id = (self.next_id + 1) % PAIR_GENERATIONS;
        let entry = self.pairs.vacant_entry();
        let slot = entry.key();
        if slot > MAX_SLOT {
            warn!("client={client_addr} dropped: no token space left");
            return;
        }
        let Reactor {
            poll,
            routes,
            metrics,
            warm,
            lookup_warning,
            now,
            config,
            siblings,
            ..
        } = self;
        let Some(mut cx) = context(poll, routes, key, metrics, warm, lookup_warning, *now) else {
            return;
        };
        cx.access_log = siblings.access_log.as_ref();
        let accepted = (client, client_addr);
        let pair = connect::open(&mut cx, (slot, id), accepted, greeting, config.splice);
        let exhausted = cx.exhausted.take();
        if let Some(mut pair) = pair {
            pair.client_key = client_key;
            cx.route.pairs += 1;
            if !pair.awaits_route {
                cx.route.counts.paired();
            }
            entry.insert(pair);
            fd_slot.keep();
            self.metrics.pairs_total += 1;
            self.arm_timer(slot);
        } else if let Some(key) = client_key {
            cx.route.release_client(key, *now);
        }
        if let Some(err) = exhausted {
            self.pause_accepting(&err);
        }
    }

    /// Moves the connect of the pair in `slot` on by `step` ([`connect::advance`]), then acts on the
    /// outcome like any other.
    pub(super) fn advance_connect(&mut self, slot: usize, step: Step) {
        let Reactor {
            poll,
            routes,
            pairs,
            metrics,
            warm,
            worker,
            lookup_warning,
            now,
            ..
        } = self;
        let Some(pair) = pairs.get_mut(slot) else {
            return;
        };
        let Some(mut cx) = context(
            poll,
            routes,
            pair.route,
            metrics,
            warm,
            lookup_warning,
            *now,
        ) else {
            return;
        };
        cx.lookups = worker.as_mut().map(|worker| worker as &mut dyn Lookups);
        let outcome = connect::advance(&mut cx, slot, pair, step);
        if let Some(err) = cx.exhausted.take() {
            self.pause_accepting(&err);
        }
        self.settle(slot, outcome);
    }

    /// Tops the `--prewarm` pool up for every accepting route, over the upstreams that are up.
    pub(super) fn refill_warm(&mut self) {
        let Some(warm) = self.warm.as_mut() else {
            return;
        };
        warm.expire_connects(self.now);
        warm.expire_backoff(self.now);
        // Routes whose clients greet first connect after the greeting, never to a warm connection.
        let warmable = |route: &Route| {
            !route.draining && route.greeting.is_none() && !route.config.sni.is_set()
        };
        for (_, route) in self.routes.iter().filter(|(_, route)| warmable(route)) {
            let up: Vec<(usize, UpstreamAddr)> = route
                .upstreams
                .live()
                .filter(|(_, endpoint)| endpoint.health.is_up())
                .map(|(slot, endpoint)| (slot, endpoint.addr.clone()))
                .collect();
            warm.refill(
                self.poll.registry(),
                route.uid,
                &up,
                (route.options, route.deadlines.connect),
                self.now,
            );
        }
    }
}

/// What the connect path borrows from the reactor's fields for a pair of route `key` (`None`: no such
/// route). The lookup threads are left out: only a CONNECT past its greeting asks them, in `advance`,
/// whose caller lends them.
fn context<'a>(
    poll: &'a Poll,
    routes: &'a mut Slab<Route>,
    key: usize,
    metrics: &'a mut Metrics,
    warm: &'a mut Option<WarmPool>,
    lookup_warning: &'a mut Throttle,
    now: Instant,
) -> Option<Context<'a>> {
    Some(Context {
        registry: poll.registry(),
        route: routes.get_mut(key)?,
        route_key: key,
        metrics,
        warm: warm.as_mut(),
        lookups: None,
        lookup_warning,
        now,
        exhausted: None,
        access_log: None,
    })
}

impl Lookups for Worker {
    fn look_up(
        &mut self,
        slot: usize,
        id: u32,
        host_port: String,
        until: Instant,
    ) -> Result<(), &'static str> {
        let job = Lookup {
            pair: slot,
            id,
            host_port,
            until,
        };
        self.lookup(job).map_err(|why| why.reason())
    }
}
