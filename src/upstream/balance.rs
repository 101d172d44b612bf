//! Choosing the upstream for a new connection. Pure: no sockets, no clock; the route describes each
//! endpoint (an address of an upstream, `src/upstream/endpoint/`) as a [`Candidate`] and gets back an index.
//! "Upstream" below means such a candidate.
//!
//! Four algorithms, all weighted:
//! - `round-robin`: nginx's smooth weighted round-robin. Every pick adds each eligible upstream's weight
//!   to its running score, takes the highest score and subtracts the total from it; weights 5,1,1 give
//!   `a a b a c a a` rather than `a a a a a b c`, so a heavy upstream never gets a burst.
//! - `least-conn`: the fewest active connections per unit of weight (`active / weight`, compared by
//!   cross-multiplying so there is no division); ties go round-robin, so an idle route still spreads.
//! - `random-two`: the power of two choices: two distinct random upstreams, the less loaded one wins. Almost
//!   as even as least-conn, without every client piling onto the one upstream that was least loaded a
//!   moment ago.
//! - `source-hash`: rendezvous (highest random weight) hashing of the client IP over the eligible upstreams.
//!   Removing or downing one upstream moves only its own clients; everyone else keeps theirs.
//!
//! Which upstreams are eligible: those not excluded (tried for this client already, or an address its
//! name no longer has) and not down. When every untried
//! upstream is down the pick falls back to the down ones, and says so ([`Pick::fail_open`]) when no
//! upstream at all is up: a route with no healthy upstream tries them anyway rather than refusing.

use std::net::IpAddr;

use crate::config::Algorithm;

/// What a pick needs to know about one upstream.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate<'a> {
    /// A stable identity (the upstream as written), hashed by `source-hash`.
    pub(super) key: &'a str,
    /// Relative share of connections, at least 1.
    pub(super) weight: u64,
    /// Connections open (or connecting) to it now.
    pub(super) active: usize,
    /// Not marked down by health checking (or its backoff has run out).
    pub(super) up: bool,
    /// Never picked: already tried for this client, or not (any longer) an address of its upstream.
    pub(super) excluded: bool,
}

/// The outcome of a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pick {
    /// Index into the candidate slice.
    pub(super) index: usize,
    /// No upstream at all is up: this one was picked although it is down.
    pub(super) fail_open: bool,
}

/// One route's balancer: the algorithm and whatever memory it keeps between picks.
#[derive(Debug, Clone)]
pub(super) struct Balancer {
    algorithm: Algorithm,
    /// Smooth weighted round-robin scores, by upstream index.
    scores: Vec<i64>,
    /// Where the least-conn tie-break starts next.
    cursor: usize,
    rng: XorShift,
}

impl Balancer {
    /// A balancer for `upstreams` upstreams; `seed` feeds `random-two` (any value, 0 included).
    pub(super) fn new(algorithm: Algorithm, upstreams: usize, seed: u64) -> Balancer {
        Balancer {
            algorithm,
            scores: vec![0; upstreams],
            cursor: 0,
            rng: XorShift::new(seed),
        }
    }

    /// Picks one of `candidates` for a client from `client`; `None` when every one was tried already.
    pub(super) fn pick(&mut self, candidates: &[Candidate<'_>], client: IpAddr) -> Option<Pick> {
        if self.scores.len() != candidates.len() {
            self.scores = vec![0; candidates.len()];
        }
        let healthy: Vec<usize> = eligible(candidates, true);
        let (pool, fail_open) = if healthy.is_empty() {
            (
                eligible(candidates, false),
                candidates.iter().all(|c| !c.up),
            )
        } else {
            (healthy, false)
        };
        if pool.is_empty() {
            return None;
        }
        let index = match self.algorithm {
            Algorithm::RoundRobin => self.smooth_round_robin(candidates, &pool),
            Algorithm::LeastConn => self.least_conn(candidates, &pool),
            Algorithm::RandomTwo => self.random_two(candidates, &pool),
            Algorithm::SourceHash => rendezvous(candidates, &pool, client),
        };
        Some(Pick { index, fail_open })
    }

    fn smooth_round_robin(&mut self, candidates: &[Candidate<'_>], pool: &[usize]) -> usize {
        let mut total = 0i64;
        let mut best = pool[0];
        for &i in pool {
            let weight = candidates[i].weight as i64;
            self.scores[i] += weight;
            total += weight;
            if self.scores[i] > self.scores[best] {
                best = i;
            }
        }
        self.scores[best] -= total;
        best
    }

    fn least_conn(&mut self, candidates: &[Candidate<'_>], pool: &[usize]) -> usize {
        let least = pool
            .iter()
            .copied()
            .min_by(|&a, &b| load_order(&candidates[a], &candidates[b]))
            .unwrap_or(pool[0]);
        // Ties: the first tied upstream at or after the cursor, cyclically.
        let tied = |i: &usize| load_order(&candidates[*i], &candidates[least]).is_eq();
        let pick = pool
            .iter()
            .copied()
            .filter(tied)
            .find(|&i| i >= self.cursor)
            .or_else(|| pool.iter().copied().find(tied))
            .unwrap_or(least);
        self.cursor = pick + 1;
        pick
    }

    fn random_two(&mut self, candidates: &[Candidate<'_>], pool: &[usize]) -> usize {
        if pool.len() == 1 {
            return pool[0];
        }
        let n = pool.len() as u64;
        let first = (self.rng.next() % n) as usize;
        let mut second = (self.rng.next() % (n - 1)) as usize;
        if second >= first {
            second += 1;
        }
        let (a, b) = (pool[first], pool[second]);
        if load_order(&candidates[b], &candidates[a]).is_lt() {
            b
        } else {
            a
        }
    }
}

/// Indices of the candidates not excluded, restricted to the up ones when `up_only`.
fn eligible(candidates: &[Candidate<'_>], up_only: bool) -> Vec<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.excluded && (c.up || !up_only))
        .map(|(i, _)| i)
        .collect()
}

/// Orders by `active / weight` without dividing.
fn load_order(a: &Candidate<'_>, b: &Candidate<'_>) -> std::cmp::Ordering {
    let left = a.active as u128 * u128::from(b.weight);
    let right = b.active as u128 * u128::from(a.weight);
    left.cmp(&right)
}

/// Weighted rendezvous hashing: each upstream scores `weight / -ln(u)` where `u` in (0, 1) is a hash of
/// (upstream, client); the highest score wins. An upstream's score does not depend on the others, which
/// is why taking one away moves only the clients it had.
fn rendezvous(candidates: &[Candidate<'_>], pool: &[usize], client: IpAddr) -> usize {
    let client_bytes = match client {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let score = |i: usize| {
        let hash = mix(fnv1a(
            candidates[i].key.as_bytes(),
            fnv1a(&client_bytes, FNV_OFFSET),
        ));
        // 53 random bits, shifted half a step off zero so ln() is finite.
        let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        candidates[i].weight as f64 / -unit.ln()
    };
    pool.iter()
        .copied()
        .map(|i| (i, score(i)))
        .fold(None, |best: Option<(usize, f64)>, (i, s)| match best {
            Some((_, best_score)) if best_score >= s => best,
            _ => Some((i, s)),
        })
        .map_or(pool[0], |(i, _)| i)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a, continuing from `state`: stable across runs and Rust versions (unlike `DefaultHasher`),
/// so a client keeps its upstream across restarts.
fn fnv1a(bytes: &[u8], state: u64) -> u64 {
    bytes.iter().fold(state, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finalizer: FNV's low bits are weak, this spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xorshift64*: tiny, fast and plenty random for picking two upstreams.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // The state must never be zero.
        XorShift(mix(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const KEYS: [&str; 4] = ["a:1", "b:1", "c:1", "d:1"];

    fn candidates(weights: &[u64]) -> Vec<Candidate<'static>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Candidate {
                key: KEYS[i],
                weight,
                active: 0,
                up: true,
                excluded: false,
            })
            .collect()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn picks(balancer: &mut Balancer, candidates: &[Candidate<'_>], n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| balancer.pick(candidates, ip(1)).expect("a pick").index)
            .collect()
    }

    #[test]
    fn test_round_robin_is_smooth_and_weighted() {
        let mut balancer = Balancer::new(Algorithm::RoundRobin, 3, 0);
        let got = picks(&mut balancer, &candidates(&[5, 1, 1]), 7);
        assert_eq!(got, vec![0, 0, 1, 0, 2, 0, 0]);
        let mut even = Balancer::new(Algorithm::RoundRobin, 3, 0);
        assert_eq!(
            picks(&mut even, &candidates(&[1, 1, 1]), 6),
            vec![0, 1, 2, 0, 1, 2]
        );
    }

    #[test]
    fn test_down_upstreams_are_skipped() {
        let mut list = candidates(&[1, 1, 1]);
        list[1].up = false;
        let mut balancer = Balancer::new(Algorithm::RoundRobin, 3, 0);
        let got = picks(&mut balancer, &list, 4);
        assert!(!got.contains(&1), "{got:?}");
        assert!(balancer
            .pick(&list, ip(1))
            .is_some_and(|pick| !pick.fail_open));
    }

    #[test]
    fn test_all_down_fails_open() {
        let mut list = candidates(&[1, 1]);
        list[0].up = false;
        list[1].up = false;
        let mut balancer = Balancer::new(Algorithm::LeastConn, 2, 0);
        let pick = balancer.pick(&list, ip(1)).expect("fail open");
        assert!(pick.fail_open);
    }

    #[test]
    fn test_tried_upstreams_are_never_picked_again() {
        let mut list = candidates(&[1, 1]);
        list[0].excluded = true;
        list[1].up = false;
        for algorithm in Algorithm::ALL {
            let mut balancer = Balancer::new(algorithm, 2, 7);
            let pick = balancer.pick(&list, ip(1)).expect("the untried one");
            // Upstream 0 is up but was tried; 1 is down but untried: not a fail-open, a failover.
            assert_eq!(
                pick,
                Pick {
                    index: 1,
                    fail_open: false
                },
                "{algorithm}"
            );
            list[1].excluded = true;
            assert_eq!(balancer.pick(&list, ip(1)), None, "{algorithm}");
            list[1].excluded = false;
        }
    }

    #[test]
    fn test_least_conn_prefers_fewest_per_weight_and_breaks_ties_round_robin() {
        let mut list = candidates(&[1, 2, 1]);
        list[0].active = 2;
        list[1].active = 2; // 1 per unit of weight
        list[2].active = 3;
        let mut balancer = Balancer::new(Algorithm::LeastConn, 3, 0);
        assert_eq!(balancer.pick(&list, ip(1)).map(|p| p.index), Some(1));
        let mut idle = Balancer::new(Algorithm::LeastConn, 3, 0);
        assert_eq!(
            picks(&mut idle, &candidates(&[1, 1, 1]), 4),
            vec![0, 1, 2, 0]
        );
    }

    #[test]
    fn test_random_two_avoids_the_loaded_upstream() {
        let mut list = candidates(&[1, 1]);
        list[0].active = 10;
        let mut balancer = Balancer::new(Algorithm::RandomTwo, 2, 42);
        // With two upstreams both are always drawn, so the idle one always wins.
        assert_eq!(picks(&mut balancer, &list, 20), vec![1; 20]);
        let mut spread = Balancer::new(Algorithm::RandomTwo, 4, 42);
        let got = picks(&mut spread, &candidates(&[1, 1, 1, 1]), 200);
        for i in 0..4 {
            assert!(got.contains(&i), "upstream {i} never picked: {got:?}");
        }
    }

    #[test]
    fn test_source_hash_is_sticky_and_moves_only_the_removed_upstreams_clients() {
        let list = candidates(&[1, 1, 1, 1]);
        let mut balancer = Balancer::new(Algorithm::SourceHash, 4, 0);
        let before: Vec<usize> = (0..=255)
            .map(|last| balancer.pick(&list, ip(last)).expect("pick").index)
            .collect();
        let again: Vec<usize> = (0..=255)
            .map(|last| balancer.pick(&list, ip(last)).expect("pick").index)
            .collect();
        assert_eq!(before, again, "same client, same upstream");
        for i in 0..4 {
            let share = before.iter().filter(|&&p| p == i).count();
            assert!((32..=96).contains(&share), "upstream {i} got {share}/256");
        }
        let mut without_two = list.clone();
        without_two[2].up = false;
        for (last, &old) in before.iter().enumerate() {
            let new = balancer
                .pick(&without_two, ip(last as u8))
                .expect("pick")
                .index;
            if old != 2 {
                assert_eq!(
                    new, old,
                    "client .{last} moved although its upstream stayed"
                );
            } else {
                assert_ne!(new, 2);
            }
        }
    }

    #[test]
    fn test_source_hash_honours_weights() {
        let list = candidates(&[3, 1]);
        let mut balancer = Balancer::new(Algorithm::SourceHash, 2, 0);
        let heavy = (0..=255)
            .filter(|&last| balancer.pick(&list, ip(last)).expect("pick").index == 0)
            .count();
        assert!(
            (150..=230).contains(&heavy),
            "weight 3 of 4 got {heavy}/256"
        );
    }

    #[test]
    fn test_algorithm_names_round_trip() {
        for algorithm in Algorithm::ALL {
            assert_eq!(algorithm.as_str().parse::<Algorithm>(), Ok(algorithm));
        }
        let err = "round-robbin".parse::<Algorithm>().expect_err("typo");
        assert!(
            err.contains("'round-robbin'") && err.contains("least-conn"),
            "{err}"
        );
    }
}
