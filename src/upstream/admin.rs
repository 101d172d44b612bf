//! What an operator set on a route's upstream addresses through the admin API: drained, disabled, or a
//! weight of its own. Pure bookkeeping: the balancer reads it through
//! [`Upstreams::candidates`](crate::upstream::endpoint::Upstreams), probes through [`State::probed`].
//!
//! Settings are kept by address, beside the endpoints rather than in them: an address that a DNS
//! answer drops and brings back, or that a reload moves to an upstream of another name, is still the
//! address the operator drained. A reload carries a route's settings to the route that replaces it (by
//! route name, as reloads match routes: `Upstreams::new`), so they last until undone. With `--threads`
//! each reactor holds its own copy, and the admin server puts every change to all of them.

use crate::config::UpstreamAddr;
use crate::observe::admin::Change;

/// An address's admin state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum State {
    /// Picked as usual.
    #[default]
    Enabled,
    /// Takes no new pairs; its live pairs finish.
    Draining,
    /// Takes no new pairs and is not probed; its live pairs finish.
    Disabled,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Enabled => "enabled",
            State::Draining => "draining",
            State::Disabled => "disabled",
        }
    }

    /// New pairs may go to it.
    pub(crate) fn takes_new(self) -> bool {
        self == State::Enabled
    }

    /// Health probes go to it.
    pub(crate) fn probed(self) -> bool {
        self != State::Disabled
    }
}

/// What is set on one address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Setting {
    pub(crate) state: State,
    /// Replaces the configured weight; `None`: the configured one.
    pub(crate) weight: Option<u32>,
}

/// A route's settings, by address; addresses with nothing set are not kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Settings(Vec<(UpstreamAddr, Setting)>);

impl Settings {
    /// What is set on `addr` (the default when nothing is).
    pub(crate) fn get(&self, addr: &UpstreamAddr) -> Setting {
        self.0
            .iter()
            .find(|(at, _)| at == addr)
            .map_or_else(Setting::default, |(_, setting)| *setting)
    }

    /// Applies `change` to `addr`. `Enable` undoes drain and disable, not a weight.
    pub(crate) fn apply(&mut self, addr: &UpstreamAddr, change: Change) {
        let mut setting = self.get(addr);
        match change {
            Change::Drain => setting.state = State::Draining,
            Change::Disable => setting.state = State::Disabled,
            Change::Enable => setting.state = State::Enabled,
            Change::Weight(weight) => setting.weight = Some(weight),
        }
        self.0.retain(|(at, _)| at != addr);
        if setting != Setting::default() {
            self.0.push((addr.clone(), setting));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> UpstreamAddr {
        UpstreamAddr::Inet(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn test_enabled_drain_enable() {
        let mut settings = Settings::default();
        assert!(settings.get(&addr(1)).state.takes_new());
        settings.apply(&addr(1), Change::Drain);
        assert_eq!(settings.get(&addr(1)).state, State::Draining);
        assert!(!settings.get(&addr(1)).state.takes_new());
        assert!(settings.get(&addr(1)).state.probed());
        assert_eq!(settings.get(&addr(2)), Setting::default());
        settings.apply(&addr(1), Change::Enable);
        assert_eq!(settings, Settings::default(), "nothing set is not kept");
    }

    #[test]
    fn test_disabled_is_not_probed_and_enable_keeps_the_weight() {
        let mut settings = Settings::default();
        settings.apply(&addr(1), Change::Weight(5));
        settings.apply(&addr(1), Change::Disable);
        let setting = settings.get(&addr(1));
        assert!(!setting.state.takes_new() && !setting.state.probed());
        settings.apply(&addr(1), Change::Enable);
        assert_eq!(
            settings.get(&addr(1)),
            Setting {
                state: State::Enabled,
                weight: Some(5)
            }
        );
    }
}
