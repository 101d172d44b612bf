//! Health of one upstream, from passive evidence (the outcome of real connects) and active probes.
//! Each failure says which it was ([`Evidence`]), so that the "down" log names what failed.
//! Pure: the reactor reports each success or failure with the time and the route's [`Policy`] (`fall`,
//! `rise`, whether probes run), and asks whether the upstream may be picked.
//!
//! | state       | event                                           | next        | effect                                   |
//! |-------------|-------------------------------------------------|-------------|------------------------------------------|
//! | `Up`        | connect or probe succeeded                      | `Up`        | failure count reset                      |
//! | `Up`        | failure, count < `fall`                         | `Up`        | count + 1                                |
//! | `Up`        | failure, count reaches `fall`                   | `Down`      | backoff 1s; logged "down"                |
//! | `Down`      | backoff ran out, no probes                      | `Probation` | eligible again                           |
//! | `Down`      | backoff ran out, probes run                     | `Down`      | nothing: only probes bring it back       |
//! | `Down`      | success (a probe, a connect begun earlier), count < `rise` | `Down` | count + 1                  |
//! | `Down`      | success, count reaches `rise`                   | `Up`        | backoff reset; logged "up"               |
//! | `Down`      | failure (a probe, connects begun earlier, fail-open tries) | `Down` | success count reset; the backoff runs on |
//! | `Probation` | success, count < `rise`                         | `Probation` | count + 1 (still eligible)               |
//! | `Probation` | success, count reaches `rise`                   | `Up`        | backoff reset; logged "up"               |
//! | `Probation` | failure                                         | `Down`      | backoff doubled, capped at 30s; success count reset |
//!
//! `rise` counts consecutive successes, so any failure while down starts the count again. With probes
//! (`health_interval`), a down upstream gets no client to find out (no `Probation`): it is picked again
//! only after `rise` probes in a row succeeded, as HAProxy's `rise` does; it is still tried when every
//! upstream of the route is down (fail open), and those tries count. Without probes, the backoff's end
//! is the only way back: clients are the probes, `rise` of them must connect in a row.
//!
//! `Down` and `Probation` both read as "down" in logs and metrics: probation only means the balancer may
//! send clients to find out.

use std::time::{Duration, Instant};

use log::trace;

/// Backoff after the first fall.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff: a dead upstream is still retried this often.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a route makes of the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Consecutive failures that take an upstream down.
    pub(crate) fall: u32,
    /// Consecutive successes that bring it back up.
    pub(crate) rise: u32,
    /// Active probes run (`health_interval`): they alone bring a down upstream back.
    pub(crate) probed: bool,
}

/// Where an upstream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// Not picked (unless every upstream is down) until `until`, or, with probes, until `rise` of them
    /// succeeded.
    Down {
        until: Instant,
    },
    /// The backoff ran out (no probes): the next outcomes decide.
    Probation,
}

/// What failed: a client's connect or an active probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evidence {
    Connect,
    Probe,
}

/// What the `fall` failures that took an upstream down were, as the log line names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failures {
    Connects,
    Probes,
    /// Some of each.
    Mixed,
}

impl Failures {
    /// The log's words: `down after 3 failed probes`.
    pub(super) fn words(self) -> &'static str {
        match self {
            Failures::Connects => "failed connects",
            Failures::Probes => "failed probes",
            Failures::Mixed => "failures (connects and probes)",
        }
    }
}

/// A change the operator should hear about, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Marked down; not picked again for `backoff`.
    WentDown { backoff: Duration, after: Failures },
    /// Back up.
    CameUp,
}

/// One upstream's health.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    state: State,
    /// Consecutive failures while `Up`.
    failures: u32,
    /// How many of those were probes (the rest were connects).
    probe_failures: u32,
    /// Consecutive successes while `Down` or in `Probation`.
    successes: u32,
    /// The backoff the current (or next) `Down` period lasts.
    backoff: Duration,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            state: State::Up,
            failures: 0,
            probe_failures: 0,
            successes: 0,
            backoff: INITIAL_BACKOFF,
        }
    }
}

impl Health {
    /// The state at `now` (without probes, a `Down` whose backoff has run out is in `Probation`).
    fn state(&mut self, now: Instant, probed: bool, name: &str) -> State {
        if let State::Down { until } = self.state {
            if until <= now && !probed {
                self.set_state(State::Probation, name);
            }
        }
        self.state
    }

    /// Up, as logs and metrics report it.
    pub(crate) fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Consecutive failures counted while up.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether the balancer may pick it without failing open.
    pub(super) fn eligible(&mut self, now: Instant, probed: bool, name: &str) -> bool {
        !matches!(self.state(now, probed, name), State::Down { .. })
    }

    /// A connect or probe to it completed; `rise` in a row bring it back up.
    pub(super) fn on_success(
        &mut self,
        now: Instant,
        policy: Policy,
        name: &str,
    ) -> Option<Change> {
        self.failures = 0;
        self.probe_failures = 0;
        match self.state(now, policy.probed, name) {
            State::Up => None,
            State::Down { .. } | State::Probation => {
                self.successes += 1;
                if self.successes < policy.rise {
                    return None;
                }
                self.successes = 0;
                self.backoff = INITIAL_BACKOFF;
                self.set_state(State::Up, name);
                Some(Change::CameUp)
            }
        }
    }

    /// A connect or probe to it was refused, timed out or failed; `fall` failures in a row take it down.
    pub(super) fn on_failure(
        &mut self,
        now: Instant,
        policy: Policy,
        name: &str,
        by: Evidence,
    ) -> Option<Change> {
        match self.state(now, policy.probed, name) {
            State::Up => {
                self.failures += 1;
                self.probe_failures += u32::from(by == Evidence::Probe);
                if self.failures < policy.fall {
                    return None;
                }
                let after = match self.probe_failures {
                    0 => Failures::Connects,
                    n if n == self.failures => Failures::Probes,
                    _ => Failures::Mixed,
                };
                self.failures = 0;
                self.probe_failures = 0;
                self.successes = 0;
                self.backoff = INITIAL_BACKOFF;
                self.set_state(
                    State::Down {
                        until: now + self.backoff,
                    },
                    name,
                );
                Some(Change::WentDown {
                    backoff: self.backoff,
                    after,
                })
            }
            State::Down { .. } => {
                self.successes = 0;
                None
            }
            State::Probation => {
                self.successes = 0;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                self.set_state(
                    State::Down {
                        until: now + self.backoff,
                    },
                    name,
                );
                None
            }
        }
    }

    fn set_state(&mut self, next: State, name: &str) {
        trace!("upstream={name} health {:?} => {:?}", self.state, next);
        self.state = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "test:1";

    /// `fall` and `rise`, passive (no probes).
    fn passive(fall: u32, rise: u32) -> Policy {
        Policy {
            fall,
            rise,
            probed: false,
        }
    }

    fn probed(fall: u32, rise: u32) -> Policy {
        Policy {
            fall,
            rise,
            probed: true,
        }
    }

    fn down_after(policy: Policy, now: Instant) -> Health {
        let mut health = Health::default();
        for _ in 1..policy.fall {
            assert_eq!(
                health.on_failure(now, policy, NAME, Evidence::Connect),
                None
            );
        }
        assert_eq!(
            health.on_failure(now, policy, NAME, Evidence::Connect),
            Some(Change::WentDown {
                backoff: INITIAL_BACKOFF,
                after: Failures::Connects,
            })
        );
        health
    }

    #[test]
    fn test_up_success_stays_up_and_resets_failures() {
        let now = Instant::now();
        let policy = passive(3, 2);
        let mut health = Health::default();
        assert_eq!(
            health.on_failure(now, policy, NAME, Evidence::Connect),
            None
        );
        assert_eq!(
            health.on_failure(now, policy, NAME, Evidence::Connect),
            None
        );
        assert!(health.is_up());
        // A success in between resets the count.
        assert_eq!(health.on_success(now, policy, NAME), None);
        assert_eq!(
            health.on_failure(now, policy, NAME, Evidence::Connect),
            None
        );
        assert_eq!(
            health.on_failure(now, policy, NAME, Evidence::Connect),
            None
        );
        assert!(health.is_up());
    }

    #[test]
    fn test_up_failure_reaching_fall_goes_down() {
        let now = Instant::now();
        let mut health = down_after(passive(3, 2), now);
        assert!(!health.is_up());
        assert!(!health.eligible(now, false, NAME));
    }

    #[test]
    fn test_down_backoff_out_without_probes_gives_probation() {
        let now = Instant::now();
        let mut health = down_after(passive(1, 2), now);
        let later = now + INITIAL_BACKOFF;
        assert_eq!(health.state(later, false, NAME), State::Probation);
        assert!(health.eligible(later, false, NAME));
        assert!(!health.is_up());
    }

    #[test]
    fn test_down_backoff_out_with_probes_stays_down() {
        let now = Instant::now();
        let mut health = down_after(probed(1, 2), now);
        let much_later = now + MAX_BACKOFF * 2;
        assert!(matches!(
            health.state(much_later, true, NAME),
            State::Down { .. }
        ));
        assert!(!health.eligible(much_later, true, NAME));
    }

    #[test]
    fn test_down_success_below_rise_stays_down() {
        let now = Instant::now();
        let policy = probed(1, 3);
        let mut health = down_after(policy, now);
        assert_eq!(health.on_success(now, policy, NAME), None);
        assert_eq!(health.on_success(now, policy, NAME), None);
        assert!(!health.eligible(now, true, NAME));
        assert!(!health.is_up());
    }

    #[test]
    fn test_down_success_reaching_rise_comes_up() {
        let now = Instant::now();
        let policy = probed(2, 2);
        let mut health = down_after(policy, now);
        assert_eq!(health.on_success(now, policy, NAME), None);
        assert_eq!(health.on_success(now, policy, NAME), Some(Change::CameUp));
        assert!(health.is_up());
        assert!(health.eligible(now, true, NAME));
        // rise 1: one success is enough (the behaviour before `rise` existed).
        let mut health = down_after(passive(1, 1), now);
        assert_eq!(
            health.on_success(now, passive(1, 1), NAME),
            Some(Change::CameUp)
        );
    }

    #[test]
    fn test_down_failure_restarts_the_rise_count() {
        let now = Instant::now();
        let policy = probed(1, 2);
        let mut health = down_after(policy, now);
        assert_eq!(health.on_success(now, policy, NAME), None);
        assert_eq!(
            health.on_failure(now, policy, NAME, Evidence::Connect),
            None
        );
        assert_eq!(
            health.on_success(now, policy, NAME),
            None,
            "count restarted"
        );
        assert_eq!(health.on_success(now, policy, NAME), Some(Change::CameUp));
    }

    #[test]
    fn test_down_failure_does_not_extend_backoff() {
        let now = Instant::now();
        let policy = passive(1, 2);
        let mut health = down_after(policy, now);
        assert_eq!(
            health.on_failure(
                now + Duration::from_millis(500),
                policy,
                NAME,
                Evidence::Connect
            ),
            None
        );
        assert_eq!(
            health.state(now + INITIAL_BACKOFF, false, NAME),
            State::Probation
        );
    }

    #[test]
    fn test_probation_success_below_rise_stays_in_probation() {
        let now = Instant::now();
        let policy = passive(1, 3);
        let mut health = down_after(policy, now);
        let later = now + INITIAL_BACKOFF;
        assert_eq!(health.on_success(later, policy, NAME), None);
        assert_eq!(health.on_success(later, policy, NAME), None);
        assert_eq!(health.state(later, false, NAME), State::Probation);
        assert!(health.eligible(later, false, NAME));
    }

    #[test]
    fn test_probation_success_reaching_rise_comes_up() {
        let now = Instant::now();
        let policy = passive(1, 2);
        let mut health = down_after(policy, now);
        let later = now + INITIAL_BACKOFF;
        assert_eq!(health.on_success(later, policy, NAME), None);
        assert_eq!(health.on_success(later, policy, NAME), Some(Change::CameUp));
        assert!(health.is_up());
    }

    #[test]
    fn test_probation_failure_doubles_backoff_up_to_the_cap() {
        let policy = passive(1, 2);
        let mut now = Instant::now();
        let mut health = down_after(policy, now);
        let mut expected = INITIAL_BACKOFF;
        for _ in 0..8 {
            now += expected;
            assert_eq!(health.state(now, false, NAME), State::Probation);
            // One success, then a failure: the count starts over at the next probation.
            assert_eq!(health.on_success(now, policy, NAME), None);
            assert_eq!(
                health.on_failure(now, policy, NAME, Evidence::Connect),
                None
            );
            expected = (expected * 2).min(MAX_BACKOFF);
            assert_eq!(
                health.state(now, false, NAME),
                State::Down {
                    until: now + expected
                }
            );
        }
        assert_eq!(expected, MAX_BACKOFF);
        // `rise` successes reset the backoff: the next fall starts over at 1s.
        now += expected;
        assert_eq!(health.on_success(now, policy, NAME), None);
        assert_eq!(health.on_success(now, policy, NAME), Some(Change::CameUp));
        assert_eq!(
            health.on_failure(now, policy, NAME, Evidence::Connect),
            Some(Change::WentDown {
                backoff: INITIAL_BACKOFF,
                after: Failures::Connects,
            })
        );
    }

    #[test]
    fn test_up_fall_names_what_failed() {
        let now = Instant::now();
        let policy = probed(2, 1);
        let after = |first, second| {
            let mut health = Health::default();
            assert_eq!(health.on_failure(now, policy, NAME, first), None);
            match health.on_failure(now, policy, NAME, second) {
                Some(Change::WentDown { after, .. }) => after,
                other => panic!("expected WentDown, got {other:?}"),
            }
        };
        assert_eq!(after(Evidence::Probe, Evidence::Probe), Failures::Probes);
        assert_eq!(
            after(Evidence::Connect, Evidence::Connect),
            Failures::Connects
        );
        assert_eq!(after(Evidence::Probe, Evidence::Connect), Failures::Mixed);
        // A success in between forgets the earlier probe failure.
        let mut health = Health::default();
        assert_eq!(health.on_failure(now, policy, NAME, Evidence::Probe), None);
        assert_eq!(health.on_success(now, policy, NAME), None);
        assert_eq!(
            health.on_failure(now, policy, NAME, Evidence::Connect),
            None
        );
        assert!(matches!(
            health.on_failure(now, policy, NAME, Evidence::Connect),
            Some(Change::WentDown {
                after: Failures::Connects,
                ..
            })
        ));
    }
}
