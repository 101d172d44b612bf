//! The names of a pair's phases: a word the pair's stage, its view and its flight recorder share.
//! What each phase holds is `stage::Stage`'s.

/// The name of a pair's phase (`Pair::phase`); what each phase holds is in `Stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading the client's PROXY header or CONNECT head; there is no upstream socket yet.
    Greeting,
    /// Writing an error status to the client (connect mode), then closing.
    Refusing,
    Connecting,
    Established,
}

impl Phase {
    /// The phase's name in the admin API and the flight recorder.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Greeting => "greeting",
            Phase::Refusing => "refusing",
            Phase::Connecting => "connecting",
            Phase::Established => "established",
        }
    }
}
