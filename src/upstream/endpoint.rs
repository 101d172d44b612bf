//! A route's upstreams and their *endpoints*: one endpoint per address an upstream's name resolves to
//! (an IP literal is one endpoint). Connects, the balancer, passive and active health, the load count,
//! `--prewarm` connections and the per-upstream metrics all work on endpoints; the upstream is the
//! name and the weight the configuration gave, and the state of its resolution. Pure: no sockets, no
//! DNS, no logging; the route reports the [`Change`]s this module returns.
//!
//! Rules:
//! - A name contributes its first `MAX_ADDRESSES` distinct addresses, each an endpoint, and the
//!   upstream's weight is shared among them: an upstream of weight W with k endpoints gives each W/k of
//!   the route's share. To keep the balancers in integers every weight is scaled by the least common
//!   multiple of the endpoint counts (`Upstreams::share_weights`): weights 1 (two addresses) and 1
//!   (one address) become 1, 1 and 2.
//! - Endpoints live in slots whose index never changes while anything refers to it: a pair counts
//!   itself in its endpoint's `active` and gives it back by slot, a probe reports to its slot, and a
//!   warm connection is filed under it. When a re-resolution drops an address its endpoint is
//!   *retired*: it is never picked again, while its live pairs run on; its slot is freed once nothing
//!   counts on it (no pair, no probe), and only then reused. Surviving endpoints keep their health.
//! - A name that does not resolve when the route starts is `Unresolved`: no endpoint, nothing goes to
//!   it, and it is asked again every `resolve_interval` (HAProxy's `init-addr last,libc,none`). A name
//!   that resolved once and then fails keeps its addresses for [`HOLD`] (HAProxy's `hold` default: a
//!   resolver that fails for a moment does not take working backends away), then is `Unresolved`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::dns;
use crate::config::{Addresses, UpstreamConfig, MAX_ADDRESSES, MAX_UPSTREAMS};
use crate::upstream::balance::Candidate;
use crate::upstream::health::Health;

/// Most endpoint slots of one route (retired ones that still carry pairs included).
pub const MAX_ENDPOINTS: usize = MAX_UPSTREAMS * MAX_ADDRESSES;
/// How long a name that resolved once keeps its addresses while its lookups fail.
pub const HOLD: Duration = Duration::from_secs(30);

/// One address of an upstream: where connects go, with its own health and load.
#[derive(Debug)]
pub struct Endpoint {
    /// Index of its upstream in the route.
    pub upstream: usize,
    pub addr: SocketAddr,
    /// How logs, metrics and `source-hash` name it: the upstream as written for an IP literal, else
    /// `name (address)`.
    pub label: String,
    /// Its share of the route's connections, scaled (see the module doc).
    pub weight: u64,
    pub health: Health,
    /// Pairs connected or connecting to it.
    pub active: usize,
    /// Connects and probes that failed, since it appeared (carried over by reloads).
    pub connect_failures: u64,
    /// A health probe is in flight.
    pub probing: bool,
    /// Its name no longer resolves to it: never picked, kept while pairs or a probe count on it.
    pub retired: bool,
}

impl Endpoint {
    fn new(upstream: usize, name: &str, addr: SocketAddr) -> Endpoint {
        let label = if name.parse::<SocketAddr>().is_ok() {
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
            retired: false,
        }
    }

    /// Taking new connections (not retired).
    pub fn is_live(&self) -> bool {
        !self.retired
    }
}

/// Where an upstream's name stands with the resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// It has endpoints (an IP literal always has its one).
    Resolved,
    /// Lookups have failed since `since`; the addresses from before are kept until [`HOLD`] has passed.
    Failing { since: Instant },
    /// No address: down, no connection goes to it, until a lookup answers.
    Unresolved,
}

/// One upstream as configured, and its resolution.
#[derive(Debug)]
pub struct Upstream {
    /// `HOST:PORT` as written.
    pub name: String,
    pub weight: u32,
    pub resolution: Resolution,
}

/// Something the operator should hear about, once; the route logs it with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Upstream `upstream`'s addresses are now `now` (they were `was`; `None`: it was unresolved).
    Readdressed {
        upstream: usize,
        was: Option<Vec<SocketAddr>>,
        now: Vec<SocketAddr>,
    },
    /// Its lookup failed; its addresses are kept for [`HOLD`].
    Holding { upstream: usize, error: String },
    /// It has no address (at start, or once the hold ran out): down until it resolves.
    Unresolved { upstream: usize, error: String },
    /// Every endpoint slot of the route is taken: these new addresses wait for the next resolution.
    NoRoom {
        upstream: usize,
        addrs: Vec<SocketAddr>,
    },
}

/// Slots a [`Tried`] keeps inline: more than the default `connect_attempts` (3), so that only a route
/// set for long failover chains ever allocates, and then only on its failover path.
pub const TRIED_INLINE: usize = 7;

/// The endpoints a client has been tried on (the current one included): a failover never repeats one,
/// and their count is the number of attempts made. Every pair holds one, idle or not, so the common
/// case (a few attempts) is 16 bytes inline rather than a bit for each of the [`MAX_ENDPOINTS`] slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tried {
    /// Up to [`TRIED_INLINE`] slots, the first `len` of `slots`.
    Few { len: u8, slots: [u16; TRIED_INLINE] },
    /// A bit per endpoint slot, once more than [`TRIED_INLINE`] have been tried.
    Many(Box<[u64; MAX_ENDPOINTS / 64]>),
}

impl Default for Tried {
    fn default() -> Tried {
        Tried::Few {
            len: 0,
            slots: [0; TRIED_INLINE],
        }
    }
}

impl Tried {
    pub fn contains(&self, slot: usize) -> bool {
        match self {
            Tried::Few { len, slots } => {
                u16::try_from(slot).is_ok_and(|slot| slots[..usize::from(*len)].contains(&slot))
            }
            Tried::Many(bits) => bits
                .get(slot / 64)
                .is_some_and(|word| word & (1 << (slot % 64)) != 0),
        }
    }

    /// Adds `slot`; one out of range (no endpoint has it) is ignored.
    pub fn insert(&mut self, slot: usize) {
        if slot >= MAX_ENDPOINTS || self.contains(slot) {
            return;
        }
        match self {
            Tried::Few { len, slots } if usize::from(*len) < TRIED_INLINE => {
                slots[usize::from(*len)] = slot as u16; // below MAX_ENDPOINTS, which fits
                *len += 1;
            }
            Tried::Few { slots, .. } => {
                let mut bits = Box::new([0u64; MAX_ENDPOINTS / 64]);
                for &old in slots.iter() {
                    bits[usize::from(old) / 64] |= 1 << (old % 64);
                }
                bits[slot / 64] |= 1 << (slot % 64);
                *self = Tried::Many(bits);
            }
            Tried::Many(bits) => bits[slot / 64] |= 1 << (slot % 64),
        }
    }

    /// Attempts made.
    pub fn count(&self) -> usize {
        match self {
            Tried::Few { len, .. } => usize::from(*len),
            Tried::Many(bits) => bits.iter().map(|word| word.count_ones() as usize).sum(),
        }
    }
}

/// A route's upstreams and their endpoint slots.
#[derive(Debug)]
pub struct Upstreams {
    list: Vec<Upstream>,
    slots: Vec<Option<Endpoint>>,
}

impl Upstreams {
    /// The upstreams of `configs`, with the addresses the configuration resolved. With `previous` (the
    /// route a reload replaces), an upstream of the same name starts from the state it had there (its
    /// addresses with their health and failure counts, its resolution), and the configuration's fresh
    /// lookup then applies as a re-resolution would. Returns what to report.
    pub fn new(
        configs: &[UpstreamConfig],
        previous: Option<&Upstreams>,
        now: Instant,
    ) -> (Upstreams, Vec<Change>) {
        let mut upstreams = Upstreams {
            list: Vec::with_capacity(configs.len()),
            slots: Vec::new(),
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
                let mut endpoint = Endpoint::new(index, &config.name, old.addr);
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

    /// Upstream `index` (new, unresolved) takes the addresses the configuration resolved: no change to
    /// report but a name that did not resolve.
    fn first_lookup(&mut self, index: usize, lookup: &Addresses) -> Option<Change> {
        match distinct(lookup) {
            Ok(addrs) => {
                self.list[index].resolution = Resolution::Resolved;
                self.add(index, &addrs)
            }
            Err(error) => Some(Change::Unresolved {
                upstream: index,
                error,
            }),
        }
    }

    /// What a reload carries over for the upstream named `name`: its resolution and its live endpoints.
    fn state_of(&self, name: &str) -> Option<(Resolution, Vec<&Endpoint>)> {
        let index = self.list.iter().position(|u| u.name == name)?;
        let endpoints = self.live_of(index).map(|(_, endpoint)| endpoint).collect();
        Some((self.list[index].resolution.clone(), endpoints))
    }

    /// Upstream `index`'s name was looked up again (a re-resolution, or a reloaded file for a route that
    /// keeps running): new addresses become endpoints, dropped ones retire, the others keep their health;
    /// a failed lookup is held, then marks the upstream down.
    pub fn resolved(&mut self, index: usize, lookup: Addresses, now: Instant) -> Vec<Change> {
        let Some(resolution) = self.list.get(index).map(|u| u.resolution.clone()) else {
            return Vec::new();
        };
        let changes = match distinct(&lookup) {
            Ok(addrs) => self.readdress(index, &addrs, &resolution),
            Err(error) => Vec::from_iter(self.lookup_failed(index, error, &resolution, now)),
        };
        self.reclaim_idle();
        self.share_weights();
        changes
    }

    /// Upstream `index` resolves to `addrs`: its endpoints become exactly those (as far as slots allow).
    fn readdress(&mut self, index: usize, addrs: &[SocketAddr], was: &Resolution) -> Vec<Change> {
        let had: Vec<SocketAddr> = self.live_of(index).map(|(_, e)| e.addr).collect();
        self.retire(index, addrs);
        let new: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|addr| !had.contains(addr))
            .collect();
        let mut changes = Vec::from_iter(self.add(index, &new));
        self.list[index].resolution = Resolution::Resolved;
        let now: Vec<SocketAddr> = self.live_of(index).map(|(_, e)| e.addr).collect();
        if *was != Resolution::Resolved || sorted(&now) != sorted(&had) {
            changes.push(Change::Readdressed {
                upstream: index,
                was: (*was != Resolution::Unresolved).then_some(had),
                now,
            });
        }
        changes
    }

    /// Upstream `index`'s lookup failed: a resolved name is held for [`HOLD`], then goes down.
    fn lookup_failed(
        &mut self,
        index: usize,
        error: String,
        was: &Resolution,
        now: Instant,
    ) -> Option<Change> {
        match *was {
            Resolution::Resolved => {
                self.list[index].resolution = Resolution::Failing { since: now };
                Some(Change::Holding {
                    upstream: index,
                    error,
                })
            }
            Resolution::Failing { since } if now.duration_since(since) >= HOLD => {
                self.retire(index, &[]);
                self.list[index].resolution = Resolution::Unresolved;
                Some(Change::Unresolved {
                    upstream: index,
                    error,
                })
            }
            Resolution::Failing { .. } | Resolution::Unresolved => None,
        }
    }

    /// Retires upstream `index`'s endpoints whose address is not in `keep`.
    fn retire(&mut self, index: usize, keep: &[SocketAddr]) {
        for endpoint in self.slots.iter_mut().flatten() {
            if endpoint.upstream == index && !keep.contains(&endpoint.addr) {
                endpoint.retired = true;
            }
        }
    }

    /// Places an endpoint for each of `addrs` (all new to upstream `index`); those that find no free slot
    /// are reported.
    fn add(&mut self, index: usize, addrs: &[SocketAddr]) -> Option<Change> {
        let mut no_room = Vec::new();
        for &addr in addrs {
            let endpoint = Endpoint::new(index, &self.list[index].name, addr);
            if !self.place(endpoint) {
                no_room.push(addr);
            }
        }
        (!no_room.is_empty()).then_some(Change::NoRoom {
            upstream: index,
            addrs: no_room,
        })
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

    /// Gives every live endpoint its share of its upstream's weight: W × m / k for an upstream of weight
    /// W with k live endpoints, m being the least common multiple of all the k (so every share is a whole
    /// number and the proportions are exact).
    fn share_weights(&mut self) {
        let counts: Vec<u64> = (0..self.list.len())
            .map(|index| self.live_of(index).count() as u64)
            .collect();
        let scale = counts.iter().filter(|&&k| k > 0).fold(1, |m, &k| lcm(m, k));
        for endpoint in self.slots.iter_mut().flatten() {
            let k = counts.get(endpoint.upstream).copied().unwrap_or(1).max(1);
            let weight = self.list.get(endpoint.upstream).map_or(1, |u| u.weight);
            endpoint.weight = u64::from(weight) * scale / k;
        }
    }

    /// The live endpoints of upstream `index`, with their slots.
    pub fn live_of(&self, index: usize) -> impl Iterator<Item = (usize, &Endpoint)> + Clone + '_ {
        self.live().filter(move |(_, e)| e.upstream == index)
    }

    /// Every live endpoint, with its slot.
    pub fn live(&self) -> impl Iterator<Item = (usize, &Endpoint)> + Clone + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| e.as_ref().filter(|e| e.is_live()).map(|e| (slot, e)))
    }

    /// No endpoint at all takes connections: every upstream is unresolved.
    pub fn none_live(&self) -> bool {
        self.live().next().is_none()
    }

    pub fn get(&self, slot: usize) -> Option<&Endpoint> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Endpoint> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// The upstreams, in configuration order.
    pub fn list(&self) -> &[Upstream] {
        &self.list
    }

    /// A pair no longer counts on endpoint `slot`; a retired endpoint goes when nothing does.
    pub fn release(&mut self, slot: usize) {
        if let Some(endpoint) = self.get_mut(slot) {
            endpoint.active = endpoint.active.saturating_sub(1);
        }
        self.reclaim(slot);
    }

    /// A probe of endpoint `slot` has finished.
    pub fn probe_finished(&mut self, slot: usize) {
        if let Some(endpoint) = self.get_mut(slot) {
            endpoint.probing = false;
        }
        self.reclaim(slot);
    }

    /// One candidate per slot for the balancer (a free or retired slot, or one in `tried`, is excluded).
    pub fn candidates(&mut self, tried: &Tried, now: Instant) -> Vec<Candidate<'_>> {
        self.slots
            .iter_mut()
            .enumerate()
            .map(|(slot, endpoint)| match endpoint {
                Some(e) => Candidate {
                    up: e.health.eligible(now, &e.label),
                    key: e.label.as_str(),
                    weight: e.weight,
                    active: e.active,
                    excluded: e.retired || tried.contains(slot),
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

/// The first [`MAX_ADDRESSES`] distinct addresses of a lookup, in its order; none is an error. A lookup
/// from [`dns::upstream_addresses`] already is; an address given as a literal, or a reload's, passes the
/// same rule here.
fn distinct(lookup: &Addresses) -> Result<Vec<SocketAddr>, String> {
    let addrs = lookup.as_ref().map_err(Clone::clone)?;
    let out = dns::first_distinct(addrs.clone(), MAX_ADDRESSES);
    if out.is_empty() {
        return Err(String::from("no address"));
    }
    Ok(out)
}

fn sorted(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut addrs = addrs.to_vec();
    addrs.sort();
    addrs
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;
    use crate::upstream::balance::Balancer;
    use std::net::IpAddr;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("addr")
    }

    fn upstream(name: &str, weight: u32, addrs: &[&str]) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            addrs: Ok(addrs.iter().map(|a| addr(a)).collect()),
            weight,
        }
    }

    fn unresolved(name: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            addrs: Err(format!("cannot resolve '{name}'")),
            weight: 1,
        }
    }

    /// Connections per endpoint address over `n` round-robin picks.
    fn shares(upstreams: &mut Upstreams, n: usize) -> Vec<(SocketAddr, usize)> {
        let mut balancer = Balancer::new(Algorithm::RoundRobin, 0, 1);
        let client: IpAddr = "10.0.0.1".parse().expect("ip");
        let now = Instant::now();
        let mut counts: Vec<(SocketAddr, usize)> = Vec::new();
        for _ in 0..n {
            let candidates = upstreams.candidates(&Tried::default(), now);
            let slot = balancer.pick(&candidates, client).expect("a pick").index;
            let at = upstreams.get(slot).expect("live").addr;
            match counts.iter_mut().find(|(a, _)| *a == at) {
                Some((_, count)) => *count += 1,
                None => counts.push((at, 1)),
            }
        }
        counts.sort();
        counts
    }

    fn live_addrs(upstreams: &Upstreams, index: usize) -> Vec<SocketAddr> {
        sorted(
            &upstreams
                .live_of(index)
                .map(|(_, e)| e.addr)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn test_a_names_weight_is_shared_among_its_addresses() {
        let now = Instant::now();
        // Weight 1 over two addresses beside weight 1 on one: 1/4, 1/4, 1/2.
        let configs = [
            upstream("app.test:80", 1, &["127.0.0.1:80", "127.0.0.2:80"]),
            upstream("127.0.0.3:80", 1, &["127.0.0.3:80"]),
        ];
        let (mut upstreams, changes) = Upstreams::new(&configs, None, now);
        assert_eq!(changes, Vec::new());
        let weights: Vec<u64> = upstreams.live().map(|(_, e)| e.weight).collect();
        assert_eq!(weights, vec![1, 1, 2]);
        assert_eq!(
            shares(&mut upstreams, 400),
            vec![
                (addr("127.0.0.1:80"), 100),
                (addr("127.0.0.2:80"), 100),
                (addr("127.0.0.3:80"), 200)
            ]
        );
        // Weight 3 over three addresses beside weight 2 on one: 3 : 2 between the upstreams, exactly.
        let configs = [
            upstream(
                "a.test:80",
                3,
                &["127.0.0.1:80", "127.0.0.2:80", "127.0.0.3:80"],
            ),
            upstream("b.test:80", 2, &["127.0.0.4:80"]),
        ];
        let (mut upstreams, _) = Upstreams::new(&configs, None, now);
        let got = shares(&mut upstreams, 500);
        assert_eq!(got.iter().take(3).map(|(_, n)| n).sum::<usize>(), 300);
        assert_eq!(got[3], (addr("127.0.0.4:80"), 200));
        assert!(got.iter().take(3).all(|(_, n)| *n == 100), "{got:?}");
    }

    /// The largest weights the arithmetic meets: every upstream at the maximum weight, with address
    /// counts 1 to 16 (so the scale is lcm(1..=16) = 720,720), on every slot of the route. Each upstream's
    /// endpoints still add up to its weight times the scale exactly, and the balancers' sums over all
    /// of them stay far inside their integers (smooth round-robin adds them in an i64).
    #[test]
    fn test_largest_weights_stay_exact() {
        let now = Instant::now();
        let configs: Vec<UpstreamConfig> = (0..MAX_UPSTREAMS)
            .map(|index| {
                let count = index % MAX_ADDRESSES + 1;
                let addrs: Vec<String> =
                    (0..count).map(|n| format!("10.{index}.{n}.1:80")).collect();
                let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
                upstream(
                    &format!("u{index}.test:80"),
                    crate::config::MAX_WEIGHT,
                    &addrs,
                )
            })
            .collect();
        let (mut upstreams, changes) = Upstreams::new(&configs, None, now);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(
            upstreams.live().count(),
            MAX_ENDPOINTS / 2 + MAX_UPSTREAMS / 2
        );
        let scale = (1..=MAX_ADDRESSES as u64).fold(1, lcm);
        assert_eq!(scale, 720_720);
        for index in 0..MAX_UPSTREAMS {
            let sum: u64 = upstreams.live_of(index).map(|(_, e)| e.weight).sum();
            assert_eq!(
                sum,
                u64::from(crate::config::MAX_WEIGHT) * scale,
                "upstream {index}"
            );
        }
        let total: u64 = upstreams.live().map(|(_, e)| e.weight).sum();
        assert!(i64::try_from(total).is_ok_and(|total| total < i64::MAX / 1024));
        let mut balancer = Balancer::new(Algorithm::RoundRobin, 0, 1);
        let client: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..2_000 {
            let candidates = upstreams.candidates(&Tried::default(), now);
            assert!(balancer.pick(&candidates, client).is_some());
        }
    }

    /// `source-hash` maps clients over endpoints: both addresses of a name get clients, each client
    /// keeps its address, and retiring one address moves only its own clients.
    #[test]
    fn test_source_hash_spreads_over_a_names_addresses() {
        let now = Instant::now();
        let three = ["127.0.0.1:80", "127.0.0.2:80", "127.0.0.3:80"];
        let (mut upstreams, _) = Upstreams::new(&[upstream("app.test:80", 1, &three)], None, now);
        let mut balancer = Balancer::new(Algorithm::SourceHash, 0, 1);
        let mut pick = |upstreams: &mut Upstreams, last: u8| {
            let client = IpAddr::from([10, 0, 0, last]);
            let candidates = upstreams.candidates(&Tried::default(), now);
            let slot = balancer.pick(&candidates, client).expect("a pick").index;
            upstreams.get(slot).expect("live").addr
        };
        let before: Vec<SocketAddr> = (0..=255).map(|last| pick(&mut upstreams, last)).collect();
        for each in three {
            let share = before.iter().filter(|a| **a == addr(each)).count();
            assert!((40..=130).contains(&share), "{share}/256 on {each}");
        }
        let again: Vec<SocketAddr> = (0..=255).map(|last| pick(&mut upstreams, last)).collect();
        assert_eq!(before, again);
        upstreams.resolved(0, Ok(vec![addr(three[0]), addr(three[2])]), now);
        for (last, old) in before.iter().enumerate() {
            let new = pick(&mut upstreams, last as u8);
            if *old == addr(three[1]) {
                assert_ne!(new, *old, "client .{last} still on the dropped address");
            } else {
                assert_eq!(
                    new, *old,
                    "client .{last} moved although its address stayed"
                );
            }
        }
    }

    #[test]
    fn test_a_lookup_adds_and_retires_addresses_and_survivors_keep_their_health() {
        let mut now = Instant::now();
        let configs = [upstream(
            "app.test:80",
            2,
            &["127.0.0.1:80", "127.0.0.2:80"],
        )];
        let (mut upstreams, _) = Upstreams::new(&configs, None, now);
        let slot_of = |upstreams: &Upstreams, a: &str| {
            upstreams
                .live()
                .find(|(_, e)| e.addr == addr(a))
                .map(|(slot, _)| slot)
                .expect("live")
        };
        let first = slot_of(&upstreams, "127.0.0.1:80");
        let second = slot_of(&upstreams, "127.0.0.2:80");
        let endpoint = upstreams.get_mut(first).expect("first");
        assert_eq!(endpoint.label, "app.test:80 (127.0.0.1:80)");
        endpoint.connect_failures = 3;
        endpoint.health.on_failure(now, 1, "x");
        upstreams.get_mut(second).expect("second").active = 1;

        now += Duration::from_secs(1);
        let changes =
            upstreams.resolved(0, Ok(vec![addr("127.0.0.1:80"), addr("127.0.0.3:80")]), now);
        assert_eq!(
            changes,
            vec![Change::Readdressed {
                upstream: 0,
                was: Some(vec![addr("127.0.0.1:80"), addr("127.0.0.2:80")]),
                now: vec![addr("127.0.0.1:80"), addr("127.0.0.3:80")],
            }]
        );
        assert_eq!(
            live_addrs(&upstreams, 0),
            vec![addr("127.0.0.1:80"), addr("127.0.0.3:80")]
        );
        // The survivor kept its slot, health and count; the new one starts up.
        let kept = upstreams.get(first).expect("kept");
        assert_eq!((kept.connect_failures, kept.health.is_up()), (3, false));
        assert!(upstreams
            .get(slot_of(&upstreams, "127.0.0.3:80"))
            .is_some_and(|e| e.health.is_up()));
        // The dropped one is retired: never a candidate, kept while its pair lives, then freed.
        let retired = upstreams.get(second).expect("kept for its pair");
        assert!(retired.retired && retired.active == 1);
        let candidates = upstreams.candidates(&Tried::default(), now);
        assert!(candidates[second].excluded);
        assert!(!candidates[first].excluded);
        upstreams.release(second);
        assert!(
            upstreams.get(second).is_none(),
            "an idle retired slot is freed"
        );
        // The same answer again changes nothing and says nothing.
        let again =
            upstreams.resolved(0, Ok(vec![addr("127.0.0.3:80"), addr("127.0.0.1:80")]), now);
        assert_eq!(again, Vec::new());
        // A freed slot is reused by the next new address.
        upstreams.resolved(
            0,
            Ok(vec![
                addr("127.0.0.1:80"),
                addr("127.0.0.3:80"),
                addr("127.0.0.4:80"),
            ]),
            now,
        );
        assert_eq!(
            upstreams.get(second).map(|e| e.addr),
            Some(addr("127.0.0.4:80"))
        );
        let weights: Vec<u64> = upstreams.live().map(|(_, e)| e.weight).collect();
        assert_eq!(
            weights,
            vec![2, 2, 2],
            "weight 2 over three addresses, scaled by 3"
        );
    }

    #[test]
    fn test_a_name_unresolved_at_start_is_down_until_it_resolves() {
        let now = Instant::now();
        let configs = [
            unresolved("late.test:80"),
            upstream("127.0.0.9:80", 1, &["127.0.0.9:80"]),
        ];
        let (mut upstreams, changes) = Upstreams::new(&configs, None, now);
        assert_eq!(
            changes,
            vec![Change::Unresolved {
                upstream: 0,
                error: "cannot resolve 'late.test:80'".into()
            }]
        );
        assert_eq!(live_addrs(&upstreams, 0), Vec::new());
        assert!(!upstreams.none_live());
        // Failing again says nothing more.
        assert_eq!(
            upstreams.resolved(0, Err("still not".into()), now),
            Vec::new()
        );
        let changes = upstreams.resolved(0, Ok(vec![addr("127.0.0.1:80")]), now);
        assert_eq!(
            changes,
            vec![Change::Readdressed {
                upstream: 0,
                was: None,
                now: vec![addr("127.0.0.1:80")]
            }]
        );
        assert_eq!(upstreams.list()[0].resolution, Resolution::Resolved);
        assert_eq!(
            shares(&mut upstreams, 4),
            vec![(addr("127.0.0.1:80"), 2), (addr("127.0.0.9:80"), 2)]
        );
        // Every upstream unresolved: nothing is live.
        let (alone, _) = Upstreams::new(&[unresolved("late.test:80")], None, now);
        assert!(alone.none_live());
    }

    #[test]
    fn test_a_failing_lookup_keeps_the_addresses_for_the_hold_then_goes_down() {
        let start = Instant::now();
        let configs = [upstream("app.test:80", 1, &["127.0.0.1:80"])];
        let (mut upstreams, _) = Upstreams::new(&configs, None, start);
        let changes = upstreams.resolved(0, Err("timed out".into()), start);
        assert_eq!(
            changes,
            vec![Change::Holding {
                upstream: 0,
                error: "timed out".into()
            }]
        );
        let within = start + HOLD - Duration::from_millis(1);
        assert_eq!(
            upstreams.resolved(0, Err("timed out".into()), within),
            Vec::new()
        );
        assert_eq!(live_addrs(&upstreams, 0), vec![addr("127.0.0.1:80")]);
        let changes = upstreams.resolved(0, Err("gone".into()), start + HOLD);
        assert_eq!(
            changes,
            vec![Change::Unresolved {
                upstream: 0,
                error: "gone".into()
            }]
        );
        assert!(upstreams.none_live());
        // A lookup that answers within the hold ends it, and says so.
        let (mut held, _) = Upstreams::new(&configs, None, start);
        held.resolved(0, Err("timed out".into()), start);
        let back = held.resolved(
            0,
            Ok(vec![addr("127.0.0.1:80")]),
            start + Duration::from_secs(1),
        );
        assert!(matches!(
            back.as_slice(),
            [Change::Readdressed { was: Some(_), .. }]
        ));
        assert_eq!(held.list()[0].resolution, Resolution::Resolved);
        let later = start + HOLD + Duration::from_secs(1);
        assert!(matches!(
            held.resolved(0, Err("x".into()), later).as_slice(),
            [Change::Holding { .. }]
        ));
    }

    #[test]
    fn test_a_reload_starts_from_the_previous_state() {
        let now = Instant::now();
        let configs = [upstream(
            "app.test:80",
            1,
            &["127.0.0.1:80", "127.0.0.2:80"],
        )];
        let (mut old, _) = Upstreams::new(&configs, None, now);
        let slot = old.live().next().map(|(slot, _)| slot).expect("one");
        old.get_mut(slot).expect("it").connect_failures = 7;
        // The file's fresh lookup drops one address: the other keeps its count.
        let fresh = [upstream("app.test:80", 1, &["127.0.0.1:80"])];
        let (new, changes) = Upstreams::new(&fresh, Some(&old), now);
        assert_eq!(live_addrs(&new, 0), vec![addr("127.0.0.1:80")]);
        assert_eq!(new.live().next().map(|(_, e)| e.connect_failures), Some(7));
        assert!(matches!(changes.as_slice(), [Change::Readdressed { .. }]));
        // The file's lookup failed: the running addresses are held, as for a re-resolution.
        let (held, changes) = Upstreams::new(&[unresolved("app.test:80")], Some(&old), now);
        assert_eq!(live_addrs(&held, 0).len(), 2);
        assert!(matches!(changes.as_slice(), [Change::Holding { .. }]));
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
        let shifted: Vec<SocketAddr> = addrs(0, 1).iter().map(|a| addr(a)).collect();
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

    #[test]
    fn test_addresses_are_distinct_and_capped() {
        let many: Vec<SocketAddr> = (1..=40)
            .map(|i| SocketAddr::from(([127, 0, 0, i], 80)))
            .chain(std::iter::once(addr("127.0.0.1:80")))
            .collect();
        let got = distinct(&Ok(many)).expect("some");
        assert_eq!(got.len(), MAX_ADDRESSES);
        assert_eq!(got[0], addr("127.0.0.1:80"));
        assert_eq!(distinct(&Ok(Vec::new())), Err("no address".to_string()));
    }

    #[test]
    fn test_tried_counts_each_slot_once() {
        let mut tried = Tried::default();
        for slot in [0, 63, 64, MAX_ENDPOINTS - 1, 63] {
            tried.insert(slot);
        }
        assert_eq!(tried.count(), 4);
        assert!(tried.contains(64) && !tried.contains(65));
        tried.insert(MAX_ENDPOINTS); // out of range: ignored
        assert_eq!(tried.count(), 4);
        assert!(!tried.contains(MAX_ENDPOINTS) && !tried.contains(usize::MAX));
    }

    /// Past the inline slots the set spills into a bitmap and keeps every slot it had; up to every
    /// slot of a route can be tried.
    #[test]
    fn test_tried_keeps_every_slot_past_the_inline_ones() {
        let mut tried = Tried::default();
        let slots: Vec<usize> = (0..MAX_ENDPOINTS).map(|n| n * 37 % MAX_ENDPOINTS).collect();
        for (n, &slot) in slots.iter().enumerate() {
            assert!(!tried.contains(slot), "slot {slot} before it was tried");
            tried.insert(slot);
            tried.insert(slot);
            assert_eq!(tried.count(), n + 1);
            assert!(
                slots[..=n].iter().all(|&old| tried.contains(old)),
                "after {n}"
            );
            assert_eq!(
                matches!(tried, Tried::Few { .. }),
                n < TRIED_INLINE,
                "after {n}"
            );
        }
    }

    /// Every pair holds a `Tried`: idle memory per pair (docs/soak.md) depends on it staying small.
    #[test]
    fn test_tried_is_small() {
        assert!(std::mem::size_of::<Tried>() <= 16);
    }
}
