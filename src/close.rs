//! Why a pair closed: the `cause=` of its close line, the `cause` label of `edgefwd_closes_total`, and
//! the two questions the reactor asks of a cause (may the pair fail over? must the survivor see RST?).
//!
//! A leaf: the pair decides the cause, the reactor acts on it and the metrics count it, and none of them
//! needs the others to name it.

use std::fmt;

/// Why a pair ended; printed in the close line as `cause=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    ClientFin,
    UpstreamFin,
    ClientReset,
    UpstreamReset,
    ConnectRefused,
    ConnectTimeout,
    ConnectError,
    ClientAbort,
    IdleTimeout,
    FinTimeout,
    Shutdown,
    /// Turned away during its greeting: a CONNECT answered with an error status, or a bad PROXY header.
    Rejected,
    /// No complete greeting (PROXY header, CONNECT head) within `--header-timeout`.
    HeaderTimeout,
    /// The poller refused to change a socket's registration (`epoll_ctl`/`kevent` failed).
    PollerError,
    /// No upstream of the route resolves to an address: nothing to connect to.
    Unresolved,
    /// Established for longer than `--max-connection-duration`, busy or not.
    MaxDuration,
    /// Closed by the admin API (`DELETE /connections/ID`); with `?how=rst` the reactor resets both
    /// sockets itself.
    Admin,
}

impl Cause {
    /// Every cause, in the order of their discriminants (indexes of per-cause counters).
    pub(crate) const ALL: [Cause; 17] = [
        Cause::ClientFin,
        Cause::UpstreamFin,
        Cause::ClientReset,
        Cause::UpstreamReset,
        Cause::ConnectRefused,
        Cause::ConnectTimeout,
        Cause::ConnectError,
        Cause::ClientAbort,
        Cause::IdleTimeout,
        Cause::FinTimeout,
        Cause::Shutdown,
        Cause::Rejected,
        Cause::HeaderTimeout,
        Cause::PollerError,
        Cause::Unresolved,
        Cause::MaxDuration,
        Cause::Admin,
    ];

    /// The name used in logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Cause::ClientFin => "client-fin",
            Cause::UpstreamFin => "upstream-fin",
            Cause::ClientReset => "client-reset",
            Cause::UpstreamReset => "upstream-reset",
            Cause::ConnectRefused => "connect-refused",
            Cause::ConnectTimeout => "connect-timeout",
            Cause::ConnectError => "connect-error",
            Cause::ClientAbort => "client-abort",
            Cause::IdleTimeout => "idle-timeout",
            Cause::FinTimeout => "fin-timeout",
            Cause::Shutdown => "shutdown",
            Cause::Rejected => "rejected",
            Cause::HeaderTimeout => "header-timeout",
            Cause::PollerError => "poller-error",
            Cause::Unresolved => "unresolved",
            Cause::MaxDuration => "max-duration",
            Cause::Admin => "admin",
        }
    }

    /// Whether the surviving side(s) must see an abort (RST) rather than a FIN that would read as a clean
    /// end of stream.
    pub(crate) fn resets(self) -> bool {
        !matches!(
            self,
            Cause::ClientFin
                | Cause::UpstreamFin
                | Cause::ClientAbort
                | Cause::IdleTimeout
                | Cause::FinTimeout
                | Cause::MaxDuration
                | Cause::Admin
                | Cause::Rejected
                | Cause::HeaderTimeout
        )
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label_table::assert_label_table;

    /// `ALL[i] as usize == i` is what per-cause counters index by, and each label names one cause.
    #[test]
    fn test_all_is_in_discriminant_order_with_distinct_labels() {
        assert_label_table(&Cause::ALL, |cause| cause as usize, Cause::as_str);
    }
}
