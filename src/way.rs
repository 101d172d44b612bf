//! Which way a pair's bytes flow: the two directions of a pair, the `direction` label of
//! `edgefwd_bytes_total` and the `c2u`/`u2c` of logs and the stats line.
//!
//! A leaf, so that the pump that moves the bytes and the metrics that count them both name a direction
//! without depending on each other.

/// Which way bytes flow, as an index into per-direction counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    ClientToUpstream = 0,
    UpstreamToClient = 1,
}

impl Way {
    /// Both ways, in the order of their discriminants (indexes of per-direction counters).
    pub(crate) const ALL: [Way; 2] = [Way::ClientToUpstream, Way::UpstreamToClient];

    /// The short name used in logs and labels.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Way::ClientToUpstream => "c2u",
            Way::UpstreamToClient => "u2c",
        }
    }
}
