//! Health of one upstream, from passive evidence (the outcome of real connects) and active probes.
//! Pure: the reactor reports each success or failure with the time, and asks whether the upstream may be
//! picked.
//!
//! | state       | event                                  | next        | effect                                  |
//! |-------------|----------------------------------------|-------------|-----------------------------------------|
//! | `Up`        | connect or probe succeeded             | `Up`        | failure count reset                     |
//! | `Up`        | failure, count < `fall`                | `Up`        | count + 1                               |
//! | `Up`        | failure, count reaches `fall`          | `Down`      | backoff 1s; logged "down"               |
//! | `Down`      | backoff ran out                        | `Probation` | eligible again                          |
//! | `Down`      | success (a probe, or a connect begun earlier) | `Up` | backoff reset; logged "up"              |
//! | `Down`      | failure (connects begun earlier, fail-open tries) | `Down` | nothing: the backoff already runs |
//! | `Probation` | success                                | `Up`        | backoff reset; logged "up"              |
//! | `Probation` | failure                                | `Down`      | backoff doubled, capped at 30s          |
//!
//! `Down` and `Probation` both read as "down" in logs and metrics: probation only means the balancer may
//! send one more client to find out.

use std::time::{Duration, Instant};

use log::trace;

/// Backoff after the first fall.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff: a dead upstream is still retried this often.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where an upstream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// Not picked (unless every upstream is down) until `until`.
    Down {
        until: Instant,
    },
    /// The backoff ran out: the next outcome decides.
    Probation,
}

/// A change the operator should hear about, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Marked down; not picked again for `backoff`.
    WentDown { backoff: Duration },
    /// Back up.
    CameUp,
}

/// One upstream's health.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    state: State,
    /// Consecutive failures while `Up`.
    failures: u32,
    /// The backoff the current (or next) `Down` period lasts.
    backoff: Duration,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            state: State::Up,
            failures: 0,
            backoff: INITIAL_BACKOFF,
        }
    }
}

impl Health {
    /// The state at `now` (a `Down` whose backoff has run out is in `Probation`).
    fn state(&mut self, now: Instant, name: &str) -> State {
        if let State::Down { until } = self.state {
            if until <= now {
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
    pub(super) fn eligible(&mut self, now: Instant, name: &str) -> bool {
        !matches!(self.state(now, name), State::Down { .. })
    }

    /// A connect or probe to it completed.
    pub(super) fn on_success(&mut self, now: Instant, name: &str) -> Option<Change> {
        self.failures = 0;
        match self.state(now, name) {
            State::Up => None,
            State::Down { .. } | State::Probation => {
                self.backoff = INITIAL_BACKOFF;
                self.set_state(State::Up, name);
                Some(Change::CameUp)
            }
        }
    }

    /// A connect or probe to it was refused, timed out or failed; `fall` failures in a row take it down.
    pub(super) fn on_failure(&mut self, now: Instant, fall: u32, name: &str) -> Option<Change> {
        match self.state(now, name) {
            State::Up => {
                self.failures += 1;
                if self.failures < fall {
                    return None;
                }
                self.failures = 0;
                self.backoff = INITIAL_BACKOFF;
                self.set_state(
                    State::Down {
                        until: now + self.backoff,
                    },
                    name,
                );
                Some(Change::WentDown {
                    backoff: self.backoff,
                })
            }
            State::Down { .. } => None,
            State::Probation => {
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

    fn down_after(fall: u32, now: Instant) -> Health {
        let mut health = Health::default();
        for _ in 1..fall {
            assert_eq!(health.on_failure(now, fall, NAME), None);
        }
        assert_eq!(
            health.on_failure(now, fall, NAME),
            Some(Change::WentDown {
                backoff: INITIAL_BACKOFF
            })
        );
        health
    }

    #[test]
    fn test_up_failures_below_fall_stay_up() {
        let now = Instant::now();
        let mut health = Health::default();
        assert_eq!(health.on_failure(now, 3, NAME), None);
        assert_eq!(health.on_failure(now, 3, NAME), None);
        assert!(health.is_up());
        // A success in between resets the count.
        assert_eq!(health.on_success(now, NAME), None);
        assert_eq!(health.on_failure(now, 3, NAME), None);
        assert_eq!(health.on_failure(now, 3, NAME), None);
        assert!(health.is_up());
    }

    #[test]
    fn test_up_fall_failures_go_down() {
        let now = Instant::now();
        let mut health = down_after(3, now);
        assert!(!health.is_up());
        assert!(!health.eligible(now, NAME));
    }

    #[test]
    fn test_down_backoff_expiry_gives_probation() {
        let now = Instant::now();
        let mut health = down_after(1, now);
        assert_eq!(health.state(now + INITIAL_BACKOFF, NAME), State::Probation);
        assert!(health.eligible(now + INITIAL_BACKOFF, NAME));
        assert!(!health.is_up());
    }

    #[test]
    fn test_probation_success_comes_up() {
        let now = Instant::now();
        let mut health = down_after(1, now);
        let later = now + INITIAL_BACKOFF;
        assert_eq!(health.on_success(later, NAME), Some(Change::CameUp));
        assert!(health.is_up());
    }

    #[test]
    fn test_probation_failure_doubles_backoff_up_to_the_cap() {
        let mut now = Instant::now();
        let mut health = down_after(1, now);
        let mut expected = INITIAL_BACKOFF;
        for _ in 0..8 {
            now += expected;
            assert_eq!(health.state(now, NAME), State::Probation);
            assert_eq!(health.on_failure(now, 1, NAME), None);
            expected = (expected * 2).min(MAX_BACKOFF);
            assert_eq!(
                health.state(now, NAME),
                State::Down {
                    until: now + expected
                }
            );
        }
        assert_eq!(expected, MAX_BACKOFF);
        // A success resets the backoff: the next fall starts over at 1s.
        now += expected;
        assert_eq!(health.on_success(now, NAME), Some(Change::CameUp));
        assert_eq!(
            health.on_failure(now, 1, NAME),
            Some(Change::WentDown {
                backoff: INITIAL_BACKOFF
            })
        );
    }

    #[test]
    fn test_down_failure_does_not_extend_backoff() {
        let now = Instant::now();
        let mut health = down_after(1, now);
        assert_eq!(
            health.on_failure(now + Duration::from_millis(500), 1, NAME),
            None
        );
        assert_eq!(health.state(now + INITIAL_BACKOFF, NAME), State::Probation);
    }

    #[test]
    fn test_down_success_comes_up_at_once() {
        let now = Instant::now();
        let mut health = down_after(2, now);
        assert_eq!(health.on_success(now, NAME), Some(Change::CameUp));
        assert!(health.eligible(now, NAME));
    }
}
