//! What the kernel has said about one socket, cached in user space.
//!
//! With edge-triggered epoll the kernel reports a change once. So the reactor ORs every event into this
//! cache and a bit is cleared only when a syscall proves it stale: `read`/`write` returned WouldBlock, or a
//! short read/write showed the kernel queue was emptied/filled. A bit left set is a promise that the next
//! syscall will make progress (or report EOF or an error), which is what lets a pump resume on its own after
//! backpressure without waiting for an edge that will never come.

/// Cached readiness of one socket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// A read may return data, EOF or an error.
    pub(crate) readable: bool,
    /// A write may accept bytes or return an error.
    pub(crate) writable: bool,
    /// The peer's FIN (EPOLLRDHUP) has been seen. Sticky: it is what makes a short read safe to take as
    /// "drained" — without it, a FIN that arrived together with the last data would never be read.
    pub(crate) read_closed: bool,
    /// An error or hang-up (EPOLLERR, EPOLLHUP) has been seen. Sticky. A hang-up means both halves of
    /// the connection are shut down, or it was reset. A direction that would leave its FIN to close(2)
    /// checks it on its `dst` ([`crate::datapath::pump::Direction::pump`]'s `last`), whose write half this side has
    /// not shut down, so there it can only mean an error: the shutdown(2) it would skip is what surfaces
    /// that error and names the close a reset.
    pub(crate) failed: bool,
}

/// One readiness event, in the kernel's terms, reduced to what a forwarder acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    pub(crate) read_closed: bool,
    pub(crate) write_closed: bool,
    pub(crate) error: bool,
}

impl From<&mio::event::Event> for Event {
    fn from(event: &mio::event::Event) -> Event {
        Event {
            readable: event.is_readable(),
            writable: event.is_writable(),
            read_closed: event.is_read_closed(),
            write_closed: event.is_write_closed(),
            error: event.is_error(),
        }
    }
}

/// Whether a clean writable edge may settle a connect ([`Event::proves_connected`]): under epoll only.
/// On the BSDs and macOS a socket in SYN_SENT can hold a soft error (an ICMP unreachable after several
/// SYN retransmits) that fires EVFILT_WRITE with no EV_EOF, and a socket's read and write filters are
/// two events in one batch, so an old socket's write event could follow its read event onto a failover
/// socket. There every event is asked of the kernel.
const EDGE_PROVES_CONNECT: bool = cfg!(any(target_os = "linux", target_os = "android"));

impl Event {
    /// A connecting socket's writable edge with no error and no hang-up, under epoll: the connect
    /// succeeded, and no syscall needs to confirm it (one getpeername(2) fewer per connection). The
    /// kernel gives a socket still in SYN_SENT no EPOLLOUT (`tcp_poll`), and a refused, reset or timed-out
    /// connect ends in TCP_CLOSE, which reports EPOLLHUP (and EPOLLERR while the error is pending). An
    /// edge meant for an earlier socket never reaches a new one: tokens carry their pair's generation,
    /// and a failover's new socket replaces one whose only event in the batch was the failure being
    /// handled (epoll reports a file at most once per `epoll_wait`; timers, the other cause of failover,
    /// run after the batch). Every other event, and every event elsewhere than epoll
    /// (`EDGE_PROVES_CONNECT`), is settled by asking the kernel ([`crate::datapath::net::connect_result`]).
    pub(crate) fn proves_connected(&self) -> bool {
        EDGE_PROVES_CONNECT && self.writable && !self.write_closed && !self.error
    }
}

impl Readiness {
    /// ORs an event into the cache. An error or hang-up sets both directions so the next syscall on each
    /// side surfaces it (as an error, EOF or EPIPE) instead of the pair waiting for an edge.
    pub(crate) fn merge(&mut self, event: Event) {
        self.readable |= event.readable || event.read_closed || event.error;
        self.writable |= event.writable || event.write_closed || event.error;
        self.read_closed |= event.read_closed;
        self.failed |= event.error || event.write_closed;
    }

    /// A read stopped short of filling the space offered, so the receive queue is empty now; unless the
    /// FIN is known to be pending (then one more read must return 0), the next edge will tell us of new data.
    pub(super) fn after_short_read(&mut self) {
        if !self.read_closed {
            self.readable = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_merge_is_an_or() {
        let mut ready = Readiness::default();
        ready.merge(Event {
            readable: true,
            ..Event::default()
        });
        ready.merge(Event {
            writable: true,
            ..Event::default()
        });
        assert!(ready.readable && ready.writable && !ready.read_closed);
    }

    #[test]
    fn test_error_or_hang_up_is_remembered_as_failed() {
        for event in [
            Event {
                error: true,
                ..Event::default()
            },
            Event {
                write_closed: true,
                ..Event::default()
            },
        ] {
            let mut ready = Readiness::default();
            ready.merge(event);
            ready.merge(Event {
                writable: true,
                ..Event::default()
            });
            assert!(ready.failed, "{event:?}");
        }
        let mut fin = Readiness::default();
        fin.merge(Event {
            readable: true,
            read_closed: true,
            ..Event::default()
        });
        assert!(!fin.failed, "a FIN is not a failure");
    }

    #[test]
    fn test_error_sets_both_directions() {
        let mut ready = Readiness::default();
        ready.merge(Event {
            error: true,
            ..Event::default()
        });
        assert!(ready.readable && ready.writable);
    }

    #[test]
    fn test_short_read_keeps_readable_when_fin_is_pending() {
        let mut ready = Readiness::default();
        ready.merge(Event {
            readable: true,
            read_closed: true,
            ..Event::default()
        });
        ready.after_short_read();
        assert!(ready.readable, "the pending FIN must still be read");
        let mut open = Readiness::default();
        open.merge(Event {
            readable: true,
            ..Event::default()
        });
        open.after_short_read();
        assert!(!open.readable);
    }
}
