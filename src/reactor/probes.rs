//! Active health checks: every `health_interval`, one non-blocking connect per endpoint (address of
//! an upstream) of a route, closed as soon as it resolves and counted as a success or failure in that
//! endpoint's health.
//!
//! The edge-triggered and lifecycle points:
//! - The outcome is asked of the kernel ([`Socket::connect_result`]: `peer_addr`, then `take_error`), never
//!   read off the event: a refused connect can show up as readable, writable or error, and a spurious
//!   event leaves the connect pending.
//! - Probe tokens carry no generation: probe slots are freed during a batch but reused only when a round
//!   starts, in `fire_timers` after the batch, and a closed socket gets no further events.
//! - A probe names its route by slot and uid: a reload may replace the route while the probe is in flight.
//! - Probe deadlines and each route's next round are inputs of the poll timeout; nothing else wakes the
//!   loop for them.

use std::time::Instant;

use log::{debug, trace, warn};
use mio::Interest;

use super::Reactor;
use crate::config::UpstreamAddr;
use crate::datapath::net::ConnectState;
use crate::datapath::stream::{Conn, Socket};
use crate::token::{self, MAX_PROBES};

/// An active health check: a plain connect (TCP, or a Unix stream for a `unix:` upstream) to one
/// upstream, closed as soon as it completes.
#[derive(Debug)]
pub(super) struct Probe {
    stream: Conn,
    /// Slot of the route; with `uid`, so that a slot reused by a reload is not mistaken for it.
    route: usize,
    uid: u64,
    /// Slot of the endpoint in that route (kept while the probe is in flight, even if retired).
    endpoint: usize,
    /// Past this (`health_timeout`) the probe counts as failed.
    pub(super) deadline: Instant,
}

impl Reactor {
    /// Starts a probe round on every route whose `health_interval` has come round: one non-blocking
    /// connect per live endpoint that has no probe in flight.
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
            let idle: Vec<(usize, UpstreamAddr)> = route
                .upstreams
                .live()
                .filter(|(_, endpoint)| !endpoint.probing)
                .map(|(slot, endpoint)| (slot, endpoint.addr.clone()))
                .collect();
            for (slot, addr) in idle {
                if self.probes.len() >= MAX_PROBES {
                    break;
                }
                let mut stream = match Conn::connect(&addr, route.options) {
                    Ok(stream) => stream,
                    Err(err) => {
                        debug!(
                            "probe route={} upstream={} failed: {err}",
                            route.config.name,
                            route.endpoint_label(slot)
                        );
                        route.connect_failed(slot, now);
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
                if let Some(endpoint) = route.upstreams.get_mut(slot) {
                    endpoint.probing = true;
                }
                entry.insert(Probe {
                    stream,
                    route: key,
                    uid: route.uid,
                    endpoint: slot,
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
        let ok = match probe.stream.connect_result() {
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

    /// Reports a finished probe to its endpoint's health; dropping the probe closes its socket.
    fn probe_done(&mut self, probe: Probe, ok: bool) {
        let now = self.now;
        let Some(route) = self
            .routes
            .get_mut(probe.route)
            .filter(|route| route.uid == probe.uid)
        else {
            return; // the route was replaced or removed meanwhile
        };
        trace!(
            "probe route={} upstream={} ok={ok}",
            route.config.name,
            route.endpoint_label(probe.endpoint)
        );
        if ok {
            route.connect_succeeded(probe.endpoint, now);
        } else {
            route.connect_failed(probe.endpoint, now);
        }
        // Last: a retired endpoint's slot may be freed once its probe is done.
        route.upstreams.probe_finished(probe.endpoint);
    }
}
