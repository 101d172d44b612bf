//! A route's upstreams and their *endpoints*: one endpoint per address an upstream's name resolves to
//! (an IP literal is one endpoint). Connects, the balancer, passive and active health, the load count,
//! `--prewarm` connections and the per-upstream metrics all work on endpoints; the upstream is the
//! name and the weight the configuration gave, and the state of its resolution. Pure: no sockets, no
//! DNS, no logging; the route reports the [`Change`]s this module returns.
//!
//! Rules:
//! - A name contributes its first [`MAX_ADDRESSES`] distinct addresses, each an endpoint, and the
//!   upstream's weight is shared among them: an upstream of weight W with k endpoints gives each W/k of
//!   the route's share, in whole numbers (`weights.rs`).
//! - Endpoints live in slots whose index never changes while anything refers to it: a pair counts
//!   itself in its endpoint's `active` and gives it back by slot, a probe reports to its slot, and a
//!   warm connection is filed under it. When a re-resolution drops an address its endpoint is
//!   *retired*: it is never picked again, while its live pairs run on; its slot is freed once nothing
//!   counts on it (no pair, no probe), and only then reused. Surviving endpoints keep their health.
//! - A name that does not resolve when the route starts is `Unresolved`: no endpoint, nothing goes to
//!   it, and it is asked again every `resolve_interval` (HAProxy's `init-addr last,libc,none`). A name
//!   that resolved once and then fails keeps its addresses for [`HOLD`] (HAProxy's `hold` default: a
//!   resolver that fails for a moment does not take working backends away), then is `Unresolved`
//!   (`readdress.rs`).
//!
//! Here: the endpoint slots and what the route asks of them (candidates for the balancer, a pair or a
//! probe giving its slot back). Beside: `readdress.rs` (a lookup's answer applied), `weights.rs` (the
//! shares), `tried.rs` (the endpoints a client has been tried on).

mod readdress;
mod tried;
mod weights;

use readdress::Resolution;
pub(super) use readdress::{Change, HOLD};
pub(crate) use tried::Tried;

use std::time::Instant;

use crate::config::{UpstreamAddr, UpstreamConfig, MAX_ADDRESSES, MAX_UPSTREAMS};
use crate::observe::admin::Change as Steer;
use crate::observe::routed::UpstreamCounts;
use crate::upstream::admin::{Setting, Settings};
use crate::upstream::balance::Candidate;
use crate::upstream::health::Health;

/// Most endpoint slots of one route (retired ones that still carry pairs included).
const MAX_ENDPOINTS: usize = MAX_UPSTREAMS * MAX_ADDRESSES;

/// One address of an upstream: where connects go, with its own health and load.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Index of its upstream in the route.
    upstream: usize,
    pub(crate) addr: UpstreamAddr,
    /// How logs, metrics and `source-hash` name it: the upstream as written for an IP literal or a Unix
    /// socket, else `name (address)`.
    pub(crate) label: String,
    /// Its share of the route's connections, scaled (see the module doc).
    weight: u64,
    pub(crate) health: Health,
    /// Pairs connected or connecting to it.
    pub(crate) active: usize,
    /// Connects and probes that failed, since it appeared (carried over by reloads).
    pub(crate) connect_failures: u64,
    /// A health probe is in flight.
    pub(crate) probing: bool,
    /// Its series of the per-upstream metrics, taken from the route's when it first connects.
    pub(crate) counts: Option<UpstreamCounts>,
    /// Its name no longer resolves to it: never picked, kept while pairs or a probe count on it.
    retired: bool,
}

impl Endpoint {
    fn new(upstream: usize, name: &str, addr: UpstreamAddr) -> Endpoint {
        let label = if !crate::config::is_host_name(name) {
            name.to_string()
        } else {
            format!("{name} ({addr})")
        };
        Endpoint {
            upstream,
            addr,
            label,
            weight: 1,
            health: Health::default(),
            active: 0,
            connect_failures: 0,
            probing: false,
            counts: None,
            retired: false,
        }
    }

    /// Taking new connections (not retired).
    pub(crate) fn is_live(&self) -> bool {
        !self.retired
    }
}

/// One upstream as configured, and its resolution.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// `HOST:PORT` as written.
    pub(crate) name: String,
    pub(super) weight: u32,
    resolution: Resolution,
}

/// A route's upstreams and their endpoint slots.
#[derive(Debug)]
pub struct Upstreams {
    list: Vec<Upstream>,
    slots: Vec<Option<Endpoint>>,
    /// What the admin API set on addresses (drained, disabled, weights), carried over by reloads.
    admin: Settings,
}

impl Upstreams {
    /// The upstreams of `configs`, with the addresses the configuration resolved. With `previous` (the
    /// route a reload replaces), an upstream of the same name starts from the state it had there (its
    /// addresses with their health and failure counts, its resolution), and the configuration's fresh
    /// lookup then applies as a re-resolution would; and the admin API's settings carry over whole, by
    /// address. Returns what to report.
    pub(super) fn new(
        configs: &[UpstreamConfig],
        previous: Option<&Upstreams>,
        now: Instant,
    ) -> (Upstreams, Vec<Change>) {
        let mut upstreams = Upstreams {
            list: Vec::with_capacity(configs.len()),
            slots: Vec::new(),
            admin: previous.map(|old| old.admin.clone()).unwrap_or_default(),
        };
        let mut changes = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let before = previous.and_then(|old| old.state_of(&config.name));
            let (resolution, endpoints) = before.unwrap_or((Resolution::Unresolved, Vec::new()));
            let carried_over = !endpoints.is_empty() || resolution != Resolution::Unresolved;
            upstreams.list.push(Upstream {
                name: config.name.clone(),
                weight: config.weight,
                resolution,
            });
            for old in endpoints {
                let mut endpoint = Endpoint::new(index, &config.name, old.addr.clone());
                endpoint.health = old.health.clone();
                endpoint.connect_failures = old.connect_failures;
                upstreams.place(endpoint);
            }
            if carried_over {
                changes.extend(upstreams.resolved(index, config.addrs.clone(), now));
            } else {
                changes.extend(upstreams.first_lookup(index, &config.addrs));
            }
        }
        upstreams.share_weights();
        (upstreams, changes)
    }

    /// Puts `endpoint` in the first free slot; `false` if all [`MAX_ENDPOINTS`] are taken.
    fn place(&mut self, endpoint: Endpoint) -> bool {
        if let Some(free) = self.slots.iter_mut().find(|slot| slot.is_none()) {
            *free = Some(endpoint);
            return true;
        }
        if self.slots.len() >= MAX_ENDPOINTS {
            return false;
        }
        self.slots.push(Some(endpoint));
        true
    }

    /// Frees the slots of retired endpoints nothing counts on any more.
    fn reclaim_idle(&mut self) {
        for slot in 0..self.slots.len() {
            self.reclaim(slot);
        }
    }

    /// Frees `slot` if it holds a retired endpoint nothing counts on (no pair, no probe).
    fn reclaim(&mut self, slot: usize) {
        if self
            .get(slot)
            .is_some_and(|e| e.retired && e.active == 0 && !e.probing)
        {
            if let Some(freed) = self.slots.get_mut(slot) {
                *freed = None;
            }
            while self.slots.last().is_some_and(Option::is_none) {
                self.slots.pop();
            }
        }
    }

    /// The live endpoints of upstream `index`, with their slots.
    pub(super) fn live_of(
        &self,
        index: usize,
    ) -> impl Iterator<Item = (usize, &Endpoint)> + Clone + '_ {
        self.live().filter(move |(_, e)| e.upstream == index)
    }

    /// Every live endpoint, with its slot.
    pub(crate) fn live(&self) -> impl Iterator<Item = (usize, &Endpoint)> + Clone + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| e.as_ref().filter(|e| e.is_live()).map(|e| (slot, e)))
    }

    /// No endpoint at all takes connections: every upstream is unresolved.
    pub(super) fn none_live(&self) -> bool {
        self.live().next().is_none()
    }

    pub(crate) fn get(&self, slot: usize) -> Option<&Endpoint> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut Endpoint> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// The upstreams, in configuration order.
    pub(crate) fn list(&self) -> &[Upstream] {
        &self.list
    }

    /// What the admin API set on `addr`.
    pub(crate) fn setting(&self, addr: &UpstreamAddr) -> Setting {
        self.admin.get(addr)
    }

    /// Applies an admin API change to `addr`, if it is a live endpoint's; `false` if it is not.
    pub(crate) fn steer(&mut self, addr: &UpstreamAddr, change: Steer) -> bool {
        if !self.live().any(|(_, e)| e.addr == *addr) {
            return false;
        }
        self.admin.apply(addr, change);
        self.share_weights();
        true
    }

    /// The weight endpoint `e` is shown with: the admin API's, else its upstream's as configured.
    pub(crate) fn weight_of(&self, e: &Endpoint) -> u32 {
        self.admin
            .get(&e.addr)
            .weight
            .unwrap_or_else(|| self.list.get(e.upstream).map_or(1, |u| u.weight))
    }

    /// The name of endpoint `e`'s upstream, as configured.
    pub(crate) fn name_of(&self, e: &Endpoint) -> &str {
        self.list.get(e.upstream).map_or("-", |u| u.name.as_str())
    }

    /// A pair no longer counts on endpoint `slot`; a retired endpoint goes when nothing does.
    pub(super) fn release(&mut self, slot: usize) {
        if let Some(endpoint) = self.get_mut(slot) {
            endpoint.active = endpoint.active.saturating_sub(1);
        }
        self.reclaim(slot);
    }

    /// A probe of endpoint `slot` has finished.
    pub(crate) fn probe_finished(&mut self, slot: usize) {
        if let Some(endpoint) = self.get_mut(slot) {
            endpoint.probing = false;
        }
        self.reclaim(slot);
    }

    /// One candidate per slot for the balancer (a free or retired slot, one in `tried`, or one the admin
    /// API drained or disabled, is excluded); `probed`: the route runs health probes
    /// (`health::Policy::probed`).
    pub(super) fn candidates(
        &mut self,
        tried: &Tried,
        now: Instant,
        probed: bool,
    ) -> Vec<Candidate<'_>> {
        let admin = &self.admin;
        self.slots
            .iter_mut()
            .enumerate()
            .map(|(slot, endpoint)| match endpoint {
                Some(e) => Candidate {
                    up: e.health.eligible(now, probed, &e.label),
                    key: e.label.as_str(),
                    weight: e.weight,
                    active: e.active,
                    excluded: e.retired
                        || tried.contains(slot)
                        || !admin.get(&e.addr).state.takes_new(),
                },
                None => Candidate {
                    up: false,
                    key: "",
                    weight: 1,
                    active: 0,
                    excluded: true,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;
    use crate::upstream::balance::Balancer;
    use std::net::{IpAddr, SocketAddr};

    pub(super) fn addr(text: &str) -> UpstreamAddr {
        UpstreamAddr::Inet(text.parse::<SocketAddr>().expect("addr"))
    }

    pub(super) fn upstream(name: &str, weight: u32, addrs: &[&str]) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            addrs: Ok(addrs.iter().map(|a| addr(a)).collect()),
            weight,
        }
    }

    pub(super) fn unresolved(name: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            addrs: Err(format!("cannot resolve '{name}'")),
            weight: 1,
        }
    }

    /// Connections per endpoint address over `n` round-robin picks.
    pub(super) fn shares(upstreams: &mut Upstreams, n: usize) -> Vec<(UpstreamAddr, usize)> {
        let mut balancer = Balancer::new(Algorithm::RoundRobin, 0, 1);
        let client: IpAddr = "10.0.0.1".parse().expect("ip");
        let now = Instant::now();
        let mut counts: Vec<(UpstreamAddr, usize)> = Vec::new();
        for _ in 0..n {
            let candidates = upstreams.candidates(&Tried::default(), now, false);
            let slot = balancer.pick(&candidates, client).expect("a pick").index;
            let at = upstreams.get(slot).expect("live").addr.clone();
            match counts.iter_mut().find(|(a, _)| *a == at) {
                Some((_, count)) => *count += 1,
                None => counts.push((at, 1)),
            }
        }
        counts.sort();
        counts
    }

    pub(super) fn live_addrs(upstreams: &Upstreams, index: usize) -> Vec<UpstreamAddr> {
        let mut addrs: Vec<UpstreamAddr> = upstreams
            .live_of(index)
            .map(|(_, e)| e.addr.clone())
            .collect();
        addrs.sort();
        addrs
    }

    /// A drained address takes no new picks, a weight set through the admin API changes the shares, and
    /// both survive a reload (a new `Upstreams` built with the old one as `previous`).
    #[test]
    fn test_admin_drain_and_weight_steer_new_picks() {
        let now = Instant::now();
        let configs = [
            upstream("127.0.0.1:1", 1, &["127.0.0.1:1"]),
            upstream("127.0.0.2:1", 1, &["127.0.0.2:1"]),
        ];
        let (mut upstreams, _) = Upstreams::new(&configs, None, now);
        assert!(upstreams.steer(&addr("127.0.0.1:1"), Steer::Weight(3)));
        let weighted = vec![(addr("127.0.0.1:1"), 300), (addr("127.0.0.2:1"), 100)];
        assert_eq!(shares(&mut upstreams, 400), weighted);
        assert!(upstreams.steer(&addr("127.0.0.1:1"), Steer::Drain));
        assert_eq!(shares(&mut upstreams, 10), vec![(addr("127.0.0.2:1"), 10)]);
        assert!(
            !upstreams.steer(&addr("127.0.0.9:1"), Steer::Drain),
            "not an endpoint"
        );
        let (mut reloaded, _) = Upstreams::new(&configs, Some(&upstreams), now);
        assert_eq!(shares(&mut reloaded, 10), vec![(addr("127.0.0.2:1"), 10)]);
        assert!(reloaded.steer(&addr("127.0.0.1:1"), Steer::Enable));
        assert_eq!(shares(&mut reloaded, 400), weighted);
    }

    /// With every slot taken (64 names of 16 addresses, one retired address still carrying a pair), a
    /// new address waits, reported, and is placed by a later answer once the slot is free.
    #[test]
    fn test_a_new_address_waits_when_every_slot_is_taken() {
        let now = Instant::now();
        let addrs = |upstream: u8, from: u8| -> Vec<String> {
            (from..from + 16)
                .map(|i| format!("10.{upstream}.0.{i}:80"))
                .collect()
        };
        let configs: Vec<UpstreamConfig> = (0..MAX_UPSTREAMS as u8)
            .map(|u| {
                let list = addrs(u, 0);
                let refs: Vec<&str> = list.iter().map(String::as_str).collect();
                upstream(&format!("u{u}.test:80"), 1, &refs)
            })
            .collect();
        let (mut upstreams, _) = Upstreams::new(&configs, None, now);
        assert_eq!(upstreams.live().count(), MAX_ENDPOINTS);
        let busy = upstreams
            .live_of(0)
            .next()
            .map(|(slot, _)| slot)
            .expect("one");
        if let Some(endpoint) = upstreams.get_mut(busy) {
            endpoint.active = 1;
        }
        let shifted: Vec<UpstreamAddr> = addrs(0, 1).iter().map(|a| addr(a)).collect();
        let changes = upstreams.resolved(0, Ok(shifted.clone()), now);
        assert!(
            changes.contains(&Change::NoRoom {
                upstream: 0,
                addrs: vec![addr("10.0.0.16:80")]
            }),
            "{changes:?}"
        );
        assert_eq!(upstreams.live_of(0).count(), 15);
        upstreams.release(busy);
        upstreams.resolved(0, Ok(shifted), now);
        assert_eq!(upstreams.live_of(0).count(), 16);
    }
}
