//! Active health checks: every `health_interval`, one non-blocking connect (TCP, or a Unix stream for
//! a `unix:` upstream) per endpoint (address of an upstream) of a route, counted as a success or
//! failure in that endpoint's health. A plain probe is done once the connect resolves. With
//! `health_send` / `health_expect` (HAProxy's `tcp-check` in its simplest form) the probe goes on, a
//! small state machine ([`Stage`]): connect, write the bytes, read until the answer starts with the
//! expected prefix (`wire::tcp_check::Expect`: at most that many bytes are read, and the first byte
//! that differs fails it at once), all within `health_timeout`. The socket is closed as soon as the
//! verdict is in.
//!
//! | stage        | event                                  | next         |
//! |--------------|----------------------------------------|--------------|
//! | `Connecting` | connect failed                         | failure      |
//! | `Connecting` | connected, `health_send` set           | `Sending`    |
//! | `Connecting` | connected, only `health_expect` set    | `Expecting`  |
//! | `Connecting` | connected, neither set                 | success      |
//! | `Sending`    | all written, `health_expect` set       | `Expecting`  |
//! | `Sending`    | all written, no `health_expect`        | success      |
//! | `Sending`    | write error                            | failure      |
//! | `Expecting`  | the prefix came                        | success      |
//! | `Expecting`  | a byte differs, end of stream, error   | failure      |
//! | any          | `health_timeout` passed                | failure      |
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
//! - Registered once for reading and writing, edge-triggered: each event runs the probe until the
//!   socket says WouldBlock ([`Probe::advance`]), so bytes that came with the connect's edge, or while
//!   it was still sending, are read without waiting for another edge.

use std::io::{self, Read, Write};
use std::time::Instant;

use log::{debug, trace, warn};
use mio::Interest;

use super::Reactor;
use crate::config::UpstreamAddr;
use crate::datapath::net::ConnectState;
use crate::datapath::stream::{Conn, Socket};
use crate::token::{self, MAX_PROBES};
use crate::upstream::health::Evidence;
use crate::wire::tcp_check::{Expect, Verdict, MAX_BYTES};

/// Where a probe stands.
#[derive(Debug)]
enum Stage {
    /// The connect is in flight.
    Connecting,
    /// Writing `health_send`; this much of it is written.
    Sending { written: usize },
    /// Reading the answer until the expected prefix, or a byte that differs, has come.
    Expecting(Expect),
}

/// An active health check of one upstream: a connect (TCP, or a Unix stream for a `unix:` upstream),
/// then the route's `health_send` / `health_expect` if it has them.
#[derive(Debug)]
pub(super) struct Probe {
    stream: Conn,
    stage: Stage,
    /// The route's `health_send` and `health_expect` when the probe started (a reload may replace the
    /// route meanwhile).
    send: Option<Vec<u8>>,
    expect: Option<Vec<u8>>,
    /// Slot of the route; with `uid`, so that a slot reused by a reload is not mistaken for it.
    route: usize,
    uid: u64,
    /// Slot of the endpoint in that route (kept while the probe is in flight, even if retired).
    endpoint: usize,
    /// Past this (`health_timeout`) the probe counts as failed.
    pub(super) deadline: Instant,
}

impl Probe {
    /// Runs the probe as far as its socket lets it: `None` while it waits for an event, else its
    /// verdict (a failure says why).
    fn advance(&mut self) -> Option<Result<(), String>> {
        loop {
            let next = match &mut self.stage {
                Stage::Connecting => match self.stream.connect_result() {
                    ConnectState::Pending => return None,
                    ConnectState::Failed(err) => return Some(Err(format!("connect: {err}"))),
                    ConnectState::Connected => match self.send {
                        Some(_) => Stage::Sending { written: 0 },
                        None => match self.expecting() {
                            Some(stage) => stage,
                            None => return Some(Ok(())),
                        },
                    },
                },
                Stage::Sending { written } => {
                    let send = self.send.as_deref().unwrap_or_default();
                    match self.stream.write(send.get(*written..).unwrap_or_default()) {
                        Ok(0) if *written < send.len() => {
                            return Some(Err(String::from("send: the socket took nothing")))
                        }
                        Ok(n) => {
                            *written += n;
                            if *written < send.len() {
                                continue;
                            }
                            match self.expecting() {
                                Some(stage) => stage,
                                None => return Some(Ok(())),
                            }
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => return None,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => return Some(Err(format!("send: {err}"))),
                    }
                }
                Stage::Expecting(expect) => {
                    let mut buf = [0u8; MAX_BYTES];
                    let room = expect.wanted().min(MAX_BYTES);
                    match self.stream.read(&mut buf[..room]) {
                        Ok(0) => return Some(Err(format!("closed: {expect}"))),
                        Ok(n) => match expect.feed(&buf[..n]) {
                            Verdict::Matched => return Some(Ok(())),
                            Verdict::Mismatch => return Some(Err(expect.to_string())),
                            Verdict::More => continue,
                        },
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => return None,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => return Some(Err(format!("read: {err}: {expect}"))),
                    }
                }
            };
            self.set_stage(next);
        }
    }

    /// The stage after the connect or the send: `Expecting` with `health_expect`; `None` without,
    /// when the probe has succeeded.
    fn expecting(&self) -> Option<Stage> {
        let want = self.expect.clone()?;
        Some(Stage::Expecting(Expect::new(want)))
    }

    fn set_stage(&mut self, next: Stage) {
        trace!("probe {:?} => {:?}", self.stage, next);
        self.stage = next;
    }

    /// What a probe past its deadline was still waiting for.
    fn waiting_for(&self) -> String {
        match &self.stage {
            Stage::Connecting => String::from("no connect within health_timeout"),
            Stage::Sending { .. } => String::from("could not send within health_timeout"),
            Stage::Expecting(expect) => format!("no answer within health_timeout: {expect}"),
        }
    }
}

impl Reactor {
    /// Starts a probe round on every route whose `health_interval` has come round: one non-blocking
    /// connect per live endpoint that has no probe in flight and that the admin API has not disabled.
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
                .filter(|(_, endpoint)| route.upstreams.setting(&endpoint.addr).state.probed())
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
                        route.connect_failed(slot, now, Evidence::Probe);
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
                    stage: Stage::Connecting,
                    send: route.config.health_send.clone(),
                    expect: route.config.health_expect.clone(),
                    route: key,
                    uid: route.uid,
                    endpoint: slot,
                    deadline: now + route.config.health_timeout,
                });
            }
        }
    }

    /// A probe's socket had an event: the probe goes as far as it can, and is done once it has a
    /// verdict. Probe slots are freed during the batch but only reused after it (probes start in
    /// [`Self::fire_timers`]), and a closed socket gets no further events, so a probe token is never
    /// stale.
    pub(super) fn on_probe_event(&mut self, slot: usize) {
        let Some(probe) = self.probes.get_mut(slot) else {
            return;
        };
        let Some(verdict) = probe.advance() else {
            return;
        };
        let probe = self.probes.remove(slot);
        self.probe_done(probe, verdict);
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
            let why = probe.waiting_for();
            self.probe_done(probe, Err(why));
        }
    }

    /// Reports a finished probe to its endpoint's health (a failure, with why, at debug level); dropping
    /// the probe closes its socket.
    fn probe_done(&mut self, probe: Probe, verdict: Result<(), String>) {
        let now = self.now;
        let Some(route) = self
            .routes
            .get_mut(probe.route)
            .filter(|route| route.uid == probe.uid)
        else {
            return; // the route was replaced or removed meanwhile
        };
        match verdict {
            Ok(()) => {
                trace!(
                    "probe route={} upstream={} ok",
                    route.config.name,
                    route.endpoint_label(probe.endpoint)
                );
                route.connect_succeeded(probe.endpoint, now);
            }
            Err(why) => {
                debug!(
                    "probe route={} upstream={} failed: {why}",
                    route.config.name,
                    route.endpoint_label(probe.endpoint)
                );
                route.connect_failed(probe.endpoint, now, Evidence::Probe);
            }
        }
        // Last: a retired endpoint's slot may be freed once its probe is done.
        route.upstreams.probe_finished(probe.endpoint);
    }
}
