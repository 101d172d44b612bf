//! What the loop tells the outside: per-turn counters (with spurious-wakeup detection), the
//! `--stats-interval` line, the `--threads` metrics board, `--metrics` scrapes and `--trace` event lines.
//!
//! Counters are plain integers owned by this thread. With `--threads`, each reactor publishes a copy to the
//! shared [`MetricsBoard`](crate::observe::metrics::MetricsBoard) once per turn, and reactor 0, the only one that
//! serves `--metrics`, sums the board when it answers a scrape. Scrape connections are registered by the
//! [`MetricsServer`] itself (the one other module handed the `Registry`) and follow the same edge-triggered
//! rules as pairs.

use log::{info, trace};

use super::Reactor;
use crate::datapath::readiness::Event;
use crate::observe::metrics;
use crate::reactor::scrape::MetricsServer;
use crate::token::Owner;
use crate::upstream::route::Lease;

impl Reactor {
    /// Counts one loop turn: a turn whose events led to no work at all was a spurious wakeup.
    pub(super) fn count_turn(&mut self, events: usize, work_before: u64) {
        let metrics = &mut self.metrics;
        metrics.pairs_open.set(self.pairs.len());
        metrics.polls += 1;
        metrics.events += events as u64;
        metrics.events_per_poll.record(events as u64);
        if events > 0 && metrics.work_done() == work_before {
            metrics.spurious_wakeups += 1;
        }
        if let Some(board) = self.siblings.board.as_ref() {
            board.publish(self.siblings.index, metrics);
        }
        if let Some(stats) = self.stats.as_mut().filter(|stats| stats.next <= self.now) {
            info!(
                "{}",
                stats.report(self.siblings.index, &self.metrics, self.now)
            );
        }
    }

    /// Adds what the pair in `slot` forwarded since it was last asked to its route's and upstream's
    /// series: after every run, so that a long transfer shows while it runs (two subtractions and a few
    /// stores; docs/benchmarks.md has its cost).
    pub(super) fn account(&mut self, slot: usize) {
        let Some(pair) = self.pairs.get_mut(slot) else {
            return;
        };
        let bytes = pair.unaccounted();
        if bytes == (0, 0) {
            return;
        }
        let endpoint = pair.lease().map(Lease::slot);
        if let Some(route) = self.routes.get_mut(pair.route) {
            route.forwarded(endpoint, bytes);
        }
    }

    /// The level of a line about the whole process (a reload, a shutdown): info from reactor 0, debug
    /// from its `--threads` siblings, which would only say it again.
    pub(super) fn process_level(&self) -> log::Level {
        if self.siblings.index == 0 {
            log::Level::Info
        } else {
            log::Level::Debug
        }
    }

    /// Pairs open in every reactor (as last published, with `--threads`).
    pub(super) fn pairs_everywhere(&self) -> u64 {
        (self.siblings.board.as_ref()).map_or(self.pairs.len() as u64, |board| board.pairs_open())
    }

    pub(super) fn with_metrics_server(
        &mut self,
        act: impl FnOnce(&mut MetricsServer, &mio::Registry),
    ) {
        if let Some(server) = self.metrics_server.as_mut() {
            act(server, self.poll.registry());
        }
    }

    pub(super) fn on_scrape_event(&mut self, slot: usize) {
        let Some(server) = self.metrics_server.as_mut() else {
            return;
        };
        let (metrics, routes) = (&mut self.metrics, &self.routes);
        metrics.pairs_open.set(self.pairs.len());
        let board = self.siblings.board.as_deref();
        let routed = &self.siblings.routes;
        server.on_scrape_event(slot, || {
            let mut body = String::with_capacity(8192);
            match board {
                Some(board) => {
                    board.publish(0, metrics);
                    board.total().render(&mut body);
                }
                None => metrics.render(&mut body),
            }
            // Draining routes are left out: a replaced route and its successor share a name. With
            // --threads these rows are reactor 0's view of health and load.
            let rows = routes
                .iter()
                .filter(|(_, route)| !route.draining)
                .flat_map(|(_, route)| route.upstream_rows());
            metrics::render_upstreams(rows, &mut body);
            routed.render(&mut body);
            // Counted when rendered: the exchange then lingers until the client's FIN (scrape.rs).
            metrics.scrapes += 1;
            body
        });
    }
}

/// `--trace`: one line per readiness event, naming the connection and side.
pub(super) fn trace_event(owner: Owner, event: Event) {
    let flags = [
        (event.readable, "readable"),
        (event.writable, "writable"),
        (event.read_closed, "read-closed"),
        (event.write_closed, "write-closed"),
        (event.error, "error"),
    ];
    let names: Vec<&str> = flags
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| *name)
        .collect();
    match owner {
        Owner::Pair(pair) => trace!(
            "event conn={} side={:?} slot={} {}",
            pair.generation,
            pair.side,
            pair.slot,
            names.join("|")
        ),
        other => trace!("event {other:?} {}", names.join("|")),
    }
}
