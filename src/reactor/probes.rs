//! Active health checks: every `health_interval`, one non-blocking TCP connect per upstream of a route,
//! closed as soon as it resolves and counted as a success or failure in that upstream's health.
//!
//! The edge-triggered and lifecycle points:
//! - The outcome is asked of the kernel ([`net::connect_result`]: `peer_addr`, then `take_error`), never
//!   read off the event: a refused connect can show up as readable, writable or error, and a spurious
//!   event leaves the connect pending.
//! - Probe tokens carry no generation: probe slots are freed during a batch but reused only when a round
//!   starts, in `fire_timers` after the batch, and a closed socket gets no further events.
//! - A probe names its route by slot and uid: a reload may replace the route while the probe is in flight.
//! - Probe deadlines and each route's next round are inputs of the poll timeout; nothing else wakes the
//!   loop for them.

use std::time::Instant;

use log::{debug, trace, warn};
use mio::net::TcpStream;
use mio::Interest;

use super::Reactor;
use crate::net::{self, ConnectState};
use crate::token::{self, MAX_PROBES};

/// An active health check: a plain TCP connect to one upstream, closed as soon as it completes.
#[derive(Debug)]
pub(super) struct Probe {
    stream: TcpStream,
    /// Slot of the route; with `uid`, so that a slot reused by a reload is not mistaken for it.
    route: usize,
    uid: u64,
    /// Index of the upstream in that route.
    upstream: usize,
    /// Past this (`health_timeout`) the probe counts as failed.
    pub(super) deadline: Instant,
}

impl Reactor {
    /// Starts a probe round on every route whose `health_interval` has come round: one non-blocking
    /// connect per upstream that has no probe in flight.
    pub(super) fn start_probes(&mut self) {
        let now = self.now;
        let due: Vec<usize> = self
            .routes
            .iter()
            .filter(|(_, route)| !route.draining && route.next_probe.is_some_and(|at| at <= now))
            .map(|(key, _)| key)
            .collect();
        for key in due {
            let Some(route) = self.routes.get_mut(key) else {
                continue;
            };
            route.next_probe = route.config.health_interval.map(|interval| now + interval);
            for index in 0..route.upstreams.len() {
                if route.upstreams[index].probing || self.probes.len() >= MAX_PROBES {
                    continue;
                }
                let mut stream =
                    match net::start_connect(route.upstreams[index].addr, route.options) {
                        Ok(stream) => stream,
                        Err(err) => {
                            debug!(
                                "probe route={} upstream={} failed: {err}",
                                route.config.name, route.upstreams[index].name
                            );
                            route.connect_failed(index, now);
                            continue;
                        }
                    };
                let entry = self.probes.vacant_entry();
                let both = Interest::READABLE | Interest::WRITABLE;
                if let Err(err) = self.poll.registry().register(
                    &mut stream,
                    token::probe_token(entry.key()),
                    both,
                ) {
                    warn!("cannot register a health probe: {err}");
                    continue;
                }
                route.upstreams[index].probing = true;
                entry.insert(Probe {
                    stream,
                    route: key,
                    uid: route.uid,
                    upstream: index,
                    deadline: now + route.config.health_timeout,
                });
            }
        }
    }

    /// A probe's socket had an event: done if the connect resolved either way. Probe slots are freed
    /// during the batch but only reused after it (probes start in [`Self::fire_timers`]), and a closed
    /// socket gets no further events, so a probe token is never stale.
    pub(super) fn on_probe_event(&mut self, slot: usize) {
        let Some(probe) = self.probes.get(slot) else {
            return;
        };
        let ok = match net::connect_result(&probe.stream) {
            ConnectState::Pending => return,
            ConnectState::Connected => true,
            ConnectState::Failed(err) => {
                trace!("probe slot={slot} failed: {err}");
                false
            }
        };
        let probe = self.probes.remove(slot);
        self.probe_done(probe, ok);
    }

    /// Probes past their `health_timeout` count as failures.
    pub(super) fn expire_probes(&mut self) {
        let now = self.now;
        let expired: Vec<usize> = self
            .probes
            .iter()
            .filter(|(_, probe)| probe.deadline <= now)
            .map(|(slot, _)| slot)
            .collect();
        for slot in expired {
            let probe = self.probes.remove(slot);
            self.probe_done(probe, false);
        }
    }

    /// Reports a finished probe to its upstream's health; dropping the probe closes its socket.
    fn probe_done(&mut self, probe: Probe, ok: bool) {
        let now = self.now;
        let Some(route) = self
            .routes
            .get_mut(probe.route)
            .filter(|route| route.uid == probe.uid)
        else {
            return; // the route was replaced or removed meanwhile
        };
        let Some(upstream) = route.upstreams.get_mut(probe.upstream) else {
            return;
        };
        upstream.probing = false;
        trace!(
            "probe route={} upstream={} ok={ok}",
            route.config.name,
            upstream.name
        );
        if ok {
            route.connect_succeeded(probe.upstream, now);
        } else {
            route.connect_failed(probe.upstream, now);
        }
    }
}
