//! How one of a pair's sockets is registered with the poller: read and write interest, each a small
//! state machine, and one transition function ([`Interest::on`]) that the pair feeds and the reactor
//! applies.
//!
//! Every socket is registered once, edge-triggered, for reads and writes, and its kernel edges are cached
//! in user space ([`crate::datapath::readiness`]). Interest changes in two cases only, each because
//! edges were seen to come for nothing (docs/epoll.md §5.1 and §5.2 have the figures):
//!
//! **Muting a blocked direction's socket** (read interest). A direction that stops reading because its
//! ring (or pipe) is full keeps `readable` set: the data is still queued, and no edge will repeat it. But
//! every segment that arrives on the socket after that raises a new EPOLLIN edge, and each one wakes the
//! loop only to find the direction still full: in a 4 GiB transfer to a slow reader that was 16 556 of
//! 19 381 polls (docs/epoll.md §5.1). So once such an edge has come (`Wasted`) and the direction is
//! still blocked after the run, the socket is registered for writes only (`Muted`). Errors and hang-ups
//! still come through: epoll reports them whatever the interest, and kqueue reports a reset on the write
//! filter, which stays. The cached `readable` bit already says there is more to read.
//!
//! Read interest comes back when a read has found the socket drained
//! ([`crate::datapath::pump::Direction::awaits_readable`]), not as soon as room frees: a transfer that stays
//! backpressured pays two `epoll_ctl` per stall, not per write. Re-registering reports the socket's state
//! at that moment (EPOLL_CTL_MOD, kqueue's EV_ADD), so data or a FIN that arrived while muted raises an
//! event then. It also re-reports EPOLLOUT on a writable socket, one turn with nothing to do; that is why
//! a stall that wastes no edge (the usual short one) is not muted at all.
//!
//! | read interest | input | next | reactor |
//! |---|---|---|---|
//! | `Armed` | EPOLLIN edge while the direction reading the socket is blocked | `Wasted` | |
//! | `Wasted` | after the run, still blocked | `Muted` | register for writes only |
//! | `Wasted` | after the run, no longer blocked | `Armed` | |
//! | `Muted` | after the run, a read found the socket drained | `Armed` | register for reads again |
//! | `Muted` | after the run, not drained (or EOF read: nothing is read again) | `Muted` | |
//!
//! **Write interest only while a write waits**, as HAProxy polls. EPOLLOUT is wanted only while a write
//! waits for room, but every socket starts with it (a connect completes on it, and most pairs never see a
//! redundant edge, so dropping it up front would cost an `epoll_ctl` per socket). With EPOLLOUT in a
//! socket's interest, epoll reports every wake-up of the socket that finds it writable, and most of those
//! are not about room ([`is_redundant_write_edge`]). So once such an edge has come (`Wasted`) and the
//! socket is still known to be writable after the run, it is registered without write interest
//! (`Dropped`); once a write finds it full (a short write or WouldBlock cleared `writable`), write
//! interest comes back, and `EPOLL_CTL_MOD` reports EPOLLOUT at once if room freed meanwhile.
//!
//! | write interest | input | next | reactor |
//! |---|---|---|---|
//! | `Armed` | an established pair's EPOLLOUT-only edge while `writable` is set | `Wasted` | |
//! | `Wasted` | after the run, `writable` still set (reads kept) | `Dropped` | register without writes |
//! | `Wasted` | after the run, a write found the socket full | `Armed` | |
//! | `Dropped` | after the run, a write found the socket full | `Armed` | register for writes again |
//! | `Dropped` | after the run, reads muted | `Armed` | register for writes only |
//!
//! **Never neither**: a socket without read interest keeps its write interest, through which epoll
//! reports errors and hang-ups anyway and kqueue reports a reset; a socket registered for nothing would
//! be a socket whose reset nobody hears. The pair never touches `Poll`: a transition returns the
//! [`Registration`] the socket should have, the reactor applies it and reports back
//! ([`Input::Registered`]); if the poller refuses, the reactor closes the pair, since a socket left muted
//! would never be read again.

use crate::datapath::readiness::Event;

/// A socket's read interest, as far as backpressure is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadInterest {
    /// Registered for reads (how every socket starts).
    Armed,
    /// Registered for reads, and an EPOLLIN edge has come while the direction reading the socket was
    /// blocked: it told the pair nothing, and more are likely to follow.
    Wasted,
    /// Registered for writes only, while the direction stays blocked (and for good once it has read EOF:
    /// nothing is read from the socket after that).
    Muted,
}

/// A socket's write interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteInterest {
    /// Registered for writes.
    Armed,
    /// Registered for writes, and a writable-only edge has come for a socket already known to be writable:
    /// it told the pair nothing, and more are likely to follow.
    Wasted,
    /// Registered without write interest, while the socket is known to be writable.
    Dropped,
}

/// How a socket is registered with the poller. Never neither (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Registration {
    pub(crate) reads: bool,
    pub(crate) writes: bool,
}

/// What [`Interest::read_interest_change`] asks of a socket's read interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InterestChange {
    /// Register it for writes only.
    Mute,
    /// Register it for reads (and writes) again.
    Unmute,
}

/// What the pair knows of one socket after a run, which decides its registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AfterRun {
    /// The direction reading the socket is blocked with data waiting in it
    /// ([`crate::datapath::pump::Direction::reads_blocked`]; only an established pair's directions block).
    pub(super) reads_blocked: bool,
    /// The direction reading the socket still reads it and a read found it drained
    /// ([`crate::datapath::pump::Direction::awaits_readable`]): only an edge can say when to read again.
    pub(super) awaits_readable: bool,
    /// The socket's cached `writable` bit: no write has found it full since its last EPOLLOUT edge.
    pub(super) writable: bool,
}

/// What happens to a socket, as far as its registration is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Input {
    /// An EPOLLIN edge came while the direction reading the socket was blocked.
    WastedReadEdge,
    /// An EPOLLOUT edge told nothing new ([`is_redundant_write_edge`]).
    WastedWriteEdge,
    /// The pair ran: the reactor asks which registration the socket should have now.
    Ran(AfterRun),
    /// The reactor registered the socket as the last [`Input::Ran`] asked.
    Registered(Registration),
}

/// One socket's read and write interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Interest {
    reads: ReadInterest,
    writes: WriteInterest,
}

impl Default for Interest {
    /// Registered for reads and writes, as every socket starts.
    fn default() -> Interest {
        Interest {
            reads: ReadInterest::Armed,
            writes: WriteInterest::Armed,
        }
    }
}

impl Interest {
    /// How the socket is registered now.
    pub(super) fn registration(&self) -> Registration {
        Registration {
            reads: self.reads != ReadInterest::Muted,
            writes: self.writes != WriteInterest::Dropped,
        }
    }

    /// The transition function: every change of interest goes through here. Returns the registration
    /// the socket should have when it differs from the current one (only [`Input::Ran`] can ask for one);
    /// the reactor applies it and reports back with [`Input::Registered`].
    pub(super) fn on(&mut self, input: Input) -> Option<Registration> {
        match input {
            Input::WastedReadEdge => {
                if self.reads == ReadInterest::Armed {
                    self.reads = ReadInterest::Wasted;
                }
                None
            }
            Input::WastedWriteEdge => {
                if self.writes == WriteInterest::Armed {
                    self.writes = WriteInterest::Wasted;
                }
                None
            }
            Input::Ran(after) => self.registration_change(after),
            Input::Registered(registration) => {
                self.note_registration(registration);
                None
            }
        }
    }

    /// The registration the socket should have after a run, when it differs from the current one. Reads
    /// follow backpressure ([`Interest::read_interest_change`]); writes are dropped after a wasted edge
    /// and come back once a write finds the socket full; a socket never loses both.
    fn registration_change(&mut self, after: AfterRun) -> Option<Registration> {
        let current = self.registration();
        let reads = match self.read_interest_change(after) {
            Some(InterestChange::Mute) => false,
            Some(InterestChange::Unmute) => true,
            None => current.reads,
        };
        let writes = match self.writes {
            WriteInterest::Armed => true,
            WriteInterest::Wasted if after.writable => false,
            WriteInterest::Wasted => {
                self.writes = WriteInterest::Armed;
                true
            }
            WriteInterest::Dropped => !after.writable,
        };
        let wanted = Registration {
            reads,
            writes: writes || !reads,
        };
        (wanted != current).then_some(wanted)
    }

    /// How the socket's read interest should change now, if at all. It also settles a `Wasted` socket
    /// whose direction is no longer blocked back to `Armed`, which needs no syscall.
    fn read_interest_change(&mut self, after: AfterRun) -> Option<InterestChange> {
        match self.reads {
            ReadInterest::Armed => None,
            ReadInterest::Wasted if after.reads_blocked => Some(InterestChange::Mute),
            ReadInterest::Wasted => {
                self.reads = ReadInterest::Armed;
                None
            }
            ReadInterest::Muted => after.awaits_readable.then_some(InterestChange::Unmute),
        }
    }

    /// The reactor registered the socket as asked.
    fn note_registration(&mut self, registration: Registration) {
        self.reads = if registration.reads {
            ReadInterest::Armed
        } else {
            ReadInterest::Muted
        };
        self.writes = if registration.writes {
            WriteInterest::Armed
        } else {
            WriteInterest::Dropped
        };
    }
}

/// An established pair's EPOLLOUT edge with nothing else in it, for a socket whose cached `writable` bit
/// is still set: no write has found it full since the last edge, so the edge says nothing new. With
/// EPOLLOUT in a socket's interest, epoll reports every wake-up of the socket that finds it writable,
/// and most of those are not about room: an EPOLLIN wake-up whose data a read already took (a splicing
/// read drains the socket until EAGAIN, so the data of a segment that arrived during the run is read
/// before its edge is reported) comes back as EPOLLOUT alone. Under iperf3 through `--splice auto` these
/// were 92 % of the turns that did nothing (435 of 473). Before `Established` a writable edge is news
/// (it completes a connect).
pub(super) fn is_redundant_write_edge(event: Event, established: bool, writable: bool) -> bool {
    let only_writable = event.writable
        && !event.readable
        && !event.read_closed
        && !event.write_closed
        && !event.error;
    only_writable && established && writable
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Registration = Registration {
        reads: true,
        writes: true,
    };
    const WRITES_ONLY: Registration = Registration {
        reads: false,
        writes: true,
    };
    const READS_ONLY: Registration = Registration {
        reads: true,
        writes: false,
    };

    /// After a run: the direction reading the socket blocked (full ring, data waiting) or not, the
    /// socket's send side writable.
    fn ran(reads_blocked: bool, writable: bool) -> Input {
        Input::Ran(AfterRun {
            reads_blocked,
            awaits_readable: false,
            writable,
        })
    }

    /// After a run in which a read found the socket drained.
    fn ran_drained(writable: bool) -> Input {
        Input::Ran(AfterRun {
            reads_blocked: false,
            awaits_readable: true,
            writable,
        })
    }

    /// Applies what `input` asked for, as the reactor does; returns it.
    fn apply(interest: &mut Interest, input: Input) -> Option<Registration> {
        let wanted = interest.on(input);
        if let Some(registration) = wanted {
            interest.on(Input::Registered(registration));
        }
        wanted
    }

    /// A muted socket (a wasted EPOLLIN edge, then still blocked after the run).
    fn muted() -> Interest {
        let mut interest = Interest::default();
        interest.on(Input::WastedReadEdge);
        assert_eq!(apply(&mut interest, ran(true, false)), Some(WRITES_ONLY));
        interest
    }

    /// A socket whose write interest was dropped (a redundant EPOLLOUT edge, still writable).
    fn dropped() -> Interest {
        let mut interest = Interest::default();
        interest.on(Input::WastedWriteEdge);
        assert_eq!(apply(&mut interest, ran(false, true)), Some(READS_ONLY));
        interest
    }

    #[test]
    fn test_armed_starts_with_both() {
        assert_eq!(Interest::default().registration(), BOTH);
    }

    /// A short stall that wastes no edge is not muted: unmuting would re-report EPOLLOUT for nothing.
    #[test]
    fn test_armed_blocked_without_a_wasted_edge_stays_armed() {
        let mut interest = Interest::default();
        assert_eq!(apply(&mut interest, ran(true, false)), None);
        assert_eq!(interest.registration(), BOTH);
    }

    #[test]
    fn test_armed_wasted_read_edge_then_blocked_mutes() {
        let mut interest = Interest::default();
        assert_eq!(
            interest.on(Input::WastedReadEdge),
            None,
            "an edge alone asks nothing"
        );
        assert_eq!(apply(&mut interest, ran(true, false)), Some(WRITES_ONLY));
        assert_eq!(interest.registration(), WRITES_ONLY);
    }

    /// The wasted edge is forgotten once the direction unblocked: a later stall needs a new one.
    #[test]
    fn test_wasted_read_unblocked_settles_armed_without_a_syscall() {
        let mut interest = Interest::default();
        interest.on(Input::WastedReadEdge);
        assert_eq!(apply(&mut interest, ran(false, false)), None);
        assert_eq!(apply(&mut interest, ran(true, false)), None, "armed again");
    }

    /// Room freeing is not enough: the cached `readable` bit says there is more to read, so read
    /// interest stays off until a read finds the socket drained.
    #[test]
    fn test_muted_unmutes_only_after_a_read_finds_the_socket_drained() {
        let mut interest = muted();
        assert_eq!(
            apply(&mut interest, ran(false, false)),
            None,
            "unblocked, not drained"
        );
        assert_eq!(apply(&mut interest, ran(true, false)), None);
        assert_eq!(apply(&mut interest, ran_drained(false)), Some(BOTH));
        assert_eq!(interest.registration(), BOTH);
    }

    /// A muted socket's further EPOLLIN edges (it has none; a stale one) change nothing.
    #[test]
    fn test_muted_wasted_read_edge_stays_muted() {
        let mut interest = muted();
        assert_eq!(interest.on(Input::WastedReadEdge), None);
        assert_eq!(apply(&mut interest, ran(true, false)), None);
        assert_eq!(interest.registration(), WRITES_ONLY);
    }

    #[test]
    fn test_armed_wasted_write_edge_then_still_writable_drops_writes() {
        let interest = dropped();
        assert_eq!(interest.registration(), READS_ONLY);
    }

    /// A write that found the socket full before the run ended: the edge was not wasted after all.
    #[test]
    fn test_wasted_write_then_full_settles_armed() {
        let mut interest = Interest::default();
        interest.on(Input::WastedWriteEdge);
        assert_eq!(apply(&mut interest, ran(false, false)), None);
        assert_eq!(apply(&mut interest, ran(false, true)), None, "armed again");
        assert_eq!(interest.registration(), BOTH);
    }

    #[test]
    fn test_dropped_write_interest_comes_back_when_a_write_finds_the_socket_full() {
        let mut interest = dropped();
        assert_eq!(
            apply(&mut interest, ran(false, true)),
            None,
            "still writable"
        );
        assert_eq!(apply(&mut interest, ran(false, false)), Some(BOTH));
    }

    /// Never neither: muting a socket whose writes were dropped gives it write interest back.
    #[test]
    fn test_dropped_then_muted_keeps_write_interest() {
        let mut interest = dropped();
        interest.on(Input::WastedReadEdge);
        assert_eq!(apply(&mut interest, ran(true, true)), Some(WRITES_ONLY));
    }

    /// Never neither, over every state and every run: no registration asked for is empty.
    #[test]
    fn test_never_neither() {
        let edges = [Input::WastedReadEdge, Input::WastedWriteEdge];
        let mut seen = 0;
        for start in [Interest::default(), muted(), dropped()] {
            for edge in edges {
                for (blocked, drained, writable) in
                    (0..8).map(|i| (i & 1 != 0, i & 2 != 0, i & 4 != 0))
                {
                    let mut interest = start;
                    interest.on(edge);
                    let after = AfterRun {
                        reads_blocked: blocked,
                        awaits_readable: drained,
                        writable,
                    };
                    if let Some(wanted) = apply(&mut interest, Input::Ran(after)) {
                        assert!(
                            wanted.reads || wanted.writes,
                            "{start:?} {edge:?} {after:?}"
                        );
                        seen += 1;
                    }
                    assert_ne!(
                        interest.registration(),
                        Registration {
                            reads: false,
                            writes: false
                        }
                    );
                }
            }
        }
        assert!(seen > 0, "some runs changed the registration");
    }

    #[test]
    fn test_only_a_clean_writable_edge_on_a_writable_established_socket_is_redundant() {
        let writable = Event {
            writable: true,
            ..Event::default()
        };
        assert!(is_redundant_write_edge(writable, true, true));
        assert!(
            !is_redundant_write_edge(writable, false, true),
            "connecting"
        );
        assert!(!is_redundant_write_edge(writable, true, false), "was full");
        for event in [
            Event {
                readable: true,
                ..writable
            },
            Event {
                read_closed: true,
                ..writable
            },
            Event {
                write_closed: true,
                ..writable
            },
            Event {
                error: true,
                ..writable
            },
        ] {
            assert!(!is_redundant_write_edge(event, true, true), "{event:?}");
        }
    }
}
