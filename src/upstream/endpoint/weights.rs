//! Weight sharing: an upstream's weight is shared among its endpoints, so that a name with k addresses
//! gets the share its weight asks for, not k times it. To keep the balancers in integers every share is
//! scaled by the least common multiple of the endpoint counts: weights 1 (two addresses) and 1 (one
//! address) become 1, 1 and 2.

use super::Upstreams;

impl Upstreams {
    /// Gives every live endpoint its share of its upstream's weight: W × m / k for an upstream of weight
    /// W with k live endpoints, m being the least common multiple of all the k (so every share is a whole
    /// number and the proportions are exact). An address the admin API gave a weight w gets w × m: the
    /// share of an upstream of weight w with that one address.
    pub(super) fn share_weights(&mut self) {
        let counts: Vec<u64> = (0..self.list.len())
            .map(|index| self.live_of(index).count() as u64)
            .collect();
        let scale = counts.iter().filter(|&&k| k > 0).fold(1, |m, &k| lcm(m, k));
        for endpoint in self.slots.iter_mut().flatten() {
            let k = counts.get(endpoint.upstream).copied().unwrap_or(1).max(1);
            endpoint.weight = match self.admin.get(&endpoint.addr).weight {
                Some(weight) => u64::from(weight) * scale,
                None => {
                    let weight = self.list.get(endpoint.upstream).map_or(1, |u| u.weight);
                    u64::from(weight) * scale / k
                }
            };
        }
    }
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
    use std::net::IpAddr;
    use std::time::Instant;

    use super::super::tests::{addr, shares, upstream};
    use super::*;
    use crate::config::{
        Algorithm, UpstreamAddr, UpstreamConfig, MAX_ADDRESSES, MAX_UPSTREAMS, MAX_WEIGHT,
    };
    use crate::upstream::balance::Balancer;
    use crate::upstream::endpoint::{Tried, MAX_ENDPOINTS};

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
                upstream(&format!("u{index}.test:80"), MAX_WEIGHT, &addrs)
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
            assert_eq!(sum, u64::from(MAX_WEIGHT) * scale, "upstream {index}");
        }
        let total: u64 = upstreams.live().map(|(_, e)| e.weight).sum();
        assert!(i64::try_from(total).is_ok_and(|total| total < i64::MAX / 1024));
        let mut balancer = Balancer::new(Algorithm::RoundRobin, 0, 1);
        let client: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..2_000 {
            let candidates = upstreams.candidates(&Tried::default(), now, false);
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
            let candidates = upstreams.candidates(&Tried::default(), now, false);
            let slot = balancer.pick(&candidates, client).expect("a pick").index;
            upstreams.get(slot).expect("live").addr.clone()
        };
        let before: Vec<UpstreamAddr> = (0..=255).map(|last| pick(&mut upstreams, last)).collect();
        for each in three {
            let share = before.iter().filter(|a| **a == addr(each)).count();
            assert!((40..=130).contains(&share), "{share}/256 on {each}");
        }
        let again: Vec<UpstreamAddr> = (0..=255).map(|last| pick(&mut upstreams, last)).collect();
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
}
