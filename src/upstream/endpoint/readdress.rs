//! Readdressing: an upstream's name looked up again (a re-resolution, a reload, the first lookup at
//! start) makes its endpoints exactly the lookup's addresses. New addresses get fresh endpoints, dropped
//! ones retire (never picked again, kept while pairs or a probe count on them), the others keep their
//! slot, health and failure count. A lookup that fails holds a resolved name's addresses for [`HOLD`],
//! then leaves it `Unresolved`; each step that the operator should hear about is a [`Change`].

use std::time::{Duration, Instant};

use super::{Endpoint, Upstreams};
use crate::config::{dns, UpstreamAddr, UpstreamAddresses, MAX_ADDRESSES};

/// How long a name that resolved once keeps its addresses while its lookups fail.
pub(crate) const HOLD: Duration = Duration::from_secs(30);

/// Where an upstream's name stands with the resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resolution {
    /// It has endpoints (an IP literal always has its one).
    Resolved,
    /// Lookups have failed since `since`; the addresses from before are kept until [`HOLD`] has passed.
    Failing { since: Instant },
    /// No address: down, no connection goes to it, until a lookup answers.
    Unresolved,
}

/// Something the operator should hear about, once; the route logs it with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Upstream `upstream`'s addresses are now `now` (they were `was`; `None`: it was unresolved).
    Readdressed {
        upstream: usize,
        was: Option<Vec<UpstreamAddr>>,
        now: Vec<UpstreamAddr>,
    },
    /// Its lookup failed; its addresses are kept for [`HOLD`].
    Holding { upstream: usize, error: String },
    /// It has no address (at start, or once the hold ran out): down until it resolves.
    Unresolved { upstream: usize, error: String },
    /// Every endpoint slot of the route is taken: these new addresses wait for the next resolution.
    NoRoom {
        upstream: usize,
        addrs: Vec<UpstreamAddr>,
    },
}

impl Upstreams {
    /// Upstream `index` (new, unresolved) takes the addresses the configuration resolved: no change to
    /// report but a name that did not resolve.
    pub(super) fn first_lookup(
        &mut self,
        index: usize,
        lookup: &UpstreamAddresses,
    ) -> Option<Change> {
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
    pub(super) fn state_of(&self, name: &str) -> Option<(Resolution, Vec<&Endpoint>)> {
        let index = self.list.iter().position(|u| u.name == name)?;
        let endpoints = self.live_of(index).map(|(_, endpoint)| endpoint).collect();
        Some((self.list[index].resolution.clone(), endpoints))
    }

    /// Upstream `index`'s name was looked up again (a re-resolution, or a reloaded file for a route that
    /// keeps running): new addresses become endpoints, dropped ones retire, the others keep their health;
    /// a failed lookup is held, then marks the upstream down.
    pub(crate) fn resolved(
        &mut self,
        index: usize,
        lookup: UpstreamAddresses,
        now: Instant,
    ) -> Vec<Change> {
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
    fn readdress(&mut self, index: usize, addrs: &[UpstreamAddr], was: &Resolution) -> Vec<Change> {
        let had: Vec<UpstreamAddr> = self.live_of(index).map(|(_, e)| e.addr.clone()).collect();
        self.retire(index, addrs);
        let new: Vec<UpstreamAddr> = addrs
            .iter()
            .filter(|addr| !had.contains(addr))
            .cloned()
            .collect();
        let mut changes = Vec::from_iter(self.add(index, &new));
        self.list[index].resolution = Resolution::Resolved;
        let now: Vec<UpstreamAddr> = self.live_of(index).map(|(_, e)| e.addr.clone()).collect();
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
    fn retire(&mut self, index: usize, keep: &[UpstreamAddr]) {
        for endpoint in self.slots.iter_mut().flatten() {
            if endpoint.upstream == index && !keep.contains(&endpoint.addr) {
                endpoint.retired = true;
            }
        }
    }

    /// Places an endpoint for each of `addrs` (all new to upstream `index`); those that find no free slot
    /// are reported.
    fn add(&mut self, index: usize, addrs: &[UpstreamAddr]) -> Option<Change> {
        let mut no_room = Vec::new();
        for addr in addrs {
            let endpoint = Endpoint::new(index, &self.list[index].name, addr.clone());
            if !self.place(endpoint) {
                no_room.push(addr.clone());
            }
        }
        (!no_room.is_empty()).then_some(Change::NoRoom {
            upstream: index,
            addrs: no_room,
        })
    }
}

/// The first [`MAX_ADDRESSES`] distinct addresses of a lookup, in its order; none is an error. A lookup
/// from [`dns::upstream_addresses`] already is; an address given as a literal, or a reload's, passes the
/// same rule here.
fn distinct(lookup: &UpstreamAddresses) -> Result<Vec<UpstreamAddr>, String> {
    let addrs = lookup.as_ref().map_err(Clone::clone)?;
    let out = dns::first_distinct(addrs.clone(), MAX_ADDRESSES);
    if out.is_empty() {
        return Err(String::from("no address"));
    }
    Ok(out)
}

fn sorted(addrs: &[UpstreamAddr]) -> Vec<UpstreamAddr> {
    let mut addrs = addrs.to_vec();
    addrs.sort();
    addrs
}

#[cfg(test)]
mod tests {
    use super::super::tests::{addr, live_addrs, shares, unresolved, upstream};
    use super::super::Tried;
    use super::*;

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
        let fall_at_once = crate::upstream::health::Policy {
            fall: 1,
            rise: 1,
            probed: false,
        };
        endpoint.health.on_failure(
            now,
            fall_at_once,
            "x",
            crate::upstream::health::Evidence::Connect,
        );
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
        let candidates = upstreams.candidates(&Tried::default(), now, false);
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
            upstreams.get(second).map(|e| e.addr.clone()),
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

    #[test]
    fn test_addresses_are_distinct_and_capped() {
        let many: Vec<UpstreamAddr> = (1..=40)
            .map(|i| std::net::SocketAddr::from(([127, 0, 0, i], 80)).into())
            .chain(std::iter::once(addr("127.0.0.1:80")))
            .collect();
        let got = distinct(&Ok(many)).expect("some");
        assert_eq!(got.len(), MAX_ADDRESSES);
        assert_eq!(got[0], addr("127.0.0.1:80"));
        assert_eq!(distinct(&Ok(Vec::new())), Err("no address".to_string()));
    }
}
