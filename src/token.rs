//! The mapping between `mio::Token` and what it names: a route's listener, the signal pipe, the resolver's
//! waker, the upgrade socket and its successor, a metrics scrape, a health probe, one side of one pair,
//! or a socket of a UDP route.
//!
//! A pair token carries the slab slot, the side, and the pair's generation (nginx keeps a one-bit
//! `instance` flag for the same purpose). Anything that names a pair from outside the slab carries the
//! generation with it, and a mismatch means "that pair is gone, this slot belongs to another":
//! - entries in the timer heap and in the yield queue can outlive their pair by any amount of time;
//! - events of one `epoll_wait` batch can name a pair torn down earlier in the same batch. This reactor
//!   hands out new slots only after the batch (accepts run last), so such an event finds an empty slot;
//!   the generation check stays as a second line of defence should that ordering ever change (a slot
//!   freed and reused within a batch is the classic stale-event bug).

use mio::Token;

/// The signal pipe's token.
pub(crate) const SIGNALS: Token = Token(usize::MAX - 1);
/// The `--metrics` listener's token.
pub(crate) const METRICS: Token = Token(usize::MAX - 2);
/// The resolver thread's waker.
pub(crate) const WAKER: Token = Token(usize::MAX - 3);
/// The `--upgrade-socket` listener's token.
pub(crate) const UPGRADE: Token = Token(usize::MAX - 4);
/// The token of the connection from a successor (`--upgrade-from`), one at a time.
pub(crate) const SUCCESSOR: Token = Token(usize::MAX - 5);
/// The `--admin` listener's token.
pub(crate) const ADMIN: Token = Token(usize::MAX - 6);
/// Most metrics scrapes served at once.
pub(crate) const MAX_SCRAPES: usize = 64;
/// Most health probes in flight at once.
pub(crate) const MAX_PROBES: usize = 4096;
/// Most routes alive at once, draining ones included.
pub(crate) const MAX_ROUTES: usize = 1024;
/// Most listeners per route.
pub(crate) const MAX_LISTENERS: usize = 16;
/// Most `--prewarm` connections, all routes together.
pub(crate) const MAX_WARM: usize = 1024;
/// Most admin API connections served at once.
pub(crate) const MAX_ADMIN: usize = 16;

/// Which socket of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream,
}

impl Side {
    /// The other socket.
    pub(crate) fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }
}

/// Bits of a token given to the generation; the rest (less one side bit) address the slot.
const GENERATION_BITS: u32 = usize::BITS / 2;
/// Mask applied to generations so they fit their field.
pub(crate) const GENERATION_MASK: u32 = if GENERATION_BITS >= 32 {
    u32::MAX
} else {
    (1u32 << GENERATION_BITS) - 1
};
/// Largest slab slot a token can address.
pub(crate) const MAX_SLOT: usize = (1usize << (usize::BITS - GENERATION_BITS - 1)) - 1;
/// Lowest reserved token. Pair generations never reach `GENERATION_MASK` (the reactor wraps below it),
/// so every pair token is smaller than this. Above it: scrapes, then probes, then listeners, laid out so
/// the whole range fits the 2^16 reserved values a 32-bit `usize` leaves.
const RESERVED_FLOOR: usize = (GENERATION_MASK as usize) << (usize::BITS - GENERATION_BITS);
/// Offset of the first probe token above the floor.
const PROBE_BASE: usize = MAX_SCRAPES;
/// Offset of the first listener token above the floor.
const LISTENER_BASE: usize = PROBE_BASE + MAX_PROBES;
/// Offset of the first Unix listener token above the floor.
const UNIX_LISTENER_BASE: usize = LISTENER_BASE + MAX_ROUTES * MAX_LISTENERS;
/// Offset of the first warm-connection token above the floor.
const WARM_BASE: usize = UNIX_LISTENER_BASE + MAX_ROUTES * MAX_LISTENERS;
/// Offset of the first admin connection token above the floor.
const ADMIN_BASE: usize = WARM_BASE + MAX_WARM;
/// One past the last reserved offset; below the fixed tokens at the top of the range.
const RESERVED_END: usize = ADMIN_BASE + MAX_ADMIN;
const _: () = assert!(RESERVED_END < (1 << 16) - 7);

/// What a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Listener `index` of the route in slab slot `route`.
    Listener {
        route: usize,
        index: usize,
    },
    /// Unix listener `index` of the route in slab slot `route`.
    UnixListener {
        route: usize,
        index: usize,
    },
    Signals,
    Metrics,
    Waker,
    Upgrade,
    Successor,
    /// A metrics scrape connection, by its slot.
    Scrape(usize),
    /// A health probe, by its slot.
    Probe(usize),
    /// A `--prewarm` upstream connection waiting for a client, by its slot.
    Warm(usize),
    /// The `--admin` listener.
    Admin,
    /// An admin API connection, by its slot.
    AdminExchange(usize),
    Pair(PairToken),
    /// A socket of the UDP route in slot `route`: its client-facing socket (`None`) or the upstream
    /// socket of the session in that table slot.
    Udp {
        route: usize,
        session: Option<usize>,
    },
}

impl Owner {
    /// Decodes any token the reactor registered.
    pub(crate) fn of(token: Token) -> Owner {
        match token {
            SIGNALS => Owner::Signals,
            METRICS => Owner::Metrics,
            WAKER => Owner::Waker,
            UPGRADE => Owner::Upgrade,
            SUCCESSOR => Owner::Successor,
            ADMIN => Owner::Admin,
            Token(value) if value >= RESERVED_FLOOR => match value - RESERVED_FLOOR {
                offset if offset < PROBE_BASE => Owner::Scrape(offset),
                offset if offset < LISTENER_BASE => Owner::Probe(offset - PROBE_BASE),
                offset if offset < UNIX_LISTENER_BASE => Owner::Listener {
                    route: (offset - LISTENER_BASE) / MAX_LISTENERS,
                    index: (offset - LISTENER_BASE) % MAX_LISTENERS,
                },
                offset if offset < WARM_BASE => Owner::UnixListener {
                    route: (offset - UNIX_LISTENER_BASE) / MAX_LISTENERS,
                    index: (offset - UNIX_LISTENER_BASE) % MAX_LISTENERS,
                },
                offset if offset < ADMIN_BASE => Owner::Warm(offset - WARM_BASE),
                offset => Owner::AdminExchange(offset - ADMIN_BASE),
            },
            Token(value) if value >> (usize::BITS - GENERATION_BITS) == UDP_GENERATION as usize => {
                let field = (value >> 1) & MAX_SLOT;
                Owner::Udp {
                    route: field >> UDP_SESSION_BITS,
                    session: (field & MAX_UDP_SESSIONS).checked_sub(1),
                }
            }
            other => Owner::Pair(PairToken::decode(other)),
        }
    }
}

/// The token of listener `index` (below [`MAX_LISTENERS`]) of the route in slot `route` (below
/// [`MAX_ROUTES`]).
pub(crate) fn listener_token(route: usize, index: usize) -> Token {
    debug_assert!(route < MAX_ROUTES && index < MAX_LISTENERS);
    Token(RESERVED_FLOOR + LISTENER_BASE + route * MAX_LISTENERS + index)
}

/// The token of Unix listener `index` (below [`MAX_LISTENERS`]) of the route in slot `route`.
pub(crate) fn unix_listener_token(route: usize, index: usize) -> Token {
    debug_assert!(route < MAX_ROUTES && index < MAX_LISTENERS);
    Token(RESERVED_FLOOR + UNIX_LISTENER_BASE + route * MAX_LISTENERS + index)
}

/// The generation field value that marks a UDP token: pairs' generations stay below it (the reactor
/// wraps them at [`PAIR_GENERATIONS`]), so a UDP socket's token can never be a live pair's.
const UDP_GENERATION: u32 = GENERATION_MASK - 1;
/// Pair generations are below this.
pub const PAIR_GENERATIONS: u32 = UDP_GENERATION;
/// Most UDP routes (the high bits of a UDP token's slot field).
pub const MAX_UDP_ROUTES: usize = 64;
/// Bits of a UDP token's slot field for the session (the rest name the route).
const UDP_SESSION_BITS: u32 = MAX_SLOT.count_ones() - MAX_UDP_ROUTES.trailing_zeros();
/// Most sessions of one UDP route: the session field less the value for the route's own socket.
pub const MAX_UDP_SESSIONS: usize = (1 << UDP_SESSION_BITS) - 1;

/// The token of UDP route `route`'s client-facing socket (`None`) or of its session `session`'s
/// upstream socket (below [`MAX_UDP_SESSIONS`]). No generation: a stale event for a reused slot only
/// costs one read that finds nothing (UDP sockets are read until WouldBlock, no readiness is cached).
pub fn udp_token(route: usize, session: Option<usize>) -> Token {
    debug_assert!(route < MAX_UDP_ROUTES);
    let session = session.map_or(0, |slot| slot + 1);
    debug_assert!(session <= MAX_UDP_SESSIONS);
    let field = (route << UDP_SESSION_BITS) | session;
    Token(((UDP_GENERATION as usize) << (usize::BITS - GENERATION_BITS)) | (field << 1))
}

/// The token of health probe `slot` (below [`MAX_PROBES`]).
pub(crate) fn probe_token(slot: usize) -> Token {
    debug_assert!(slot < MAX_PROBES);
    Token(RESERVED_FLOOR + PROBE_BASE + slot)
}

/// The token of warm connection `slot` (below [`MAX_WARM`]).
pub(crate) fn warm_token(slot: usize) -> Token {
    debug_assert!(slot < MAX_WARM);
    Token(RESERVED_FLOOR + WARM_BASE + slot)
}

/// The token of admin API connection `slot` (below [`MAX_ADMIN`]).
pub(crate) fn admin_token(slot: usize) -> Token {
    debug_assert!(slot < MAX_ADMIN);
    Token(RESERVED_FLOOR + ADMIN_BASE + slot)
}

/// The token of metrics scrape connection `slot` (below [`MAX_SCRAPES`]).
pub(crate) fn scrape_token(slot: usize) -> Token {
    debug_assert!(slot < MAX_SCRAPES);
    Token(RESERVED_FLOOR + slot)
}

/// The decoded form of a pair's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PairToken {
    pub(crate) slot: usize,
    pub(crate) side: Side,
    pub(crate) generation: u32,
}

impl PairToken {
    /// Packs `generation | slot | side` into a token.
    pub(crate) fn encode(self) -> Token {
        debug_assert!(self.slot <= MAX_SLOT);
        let side = match self.side {
            Side::Client => 0,
            Side::Upstream => 1,
        };
        let generation = (self.generation & GENERATION_MASK) as usize;
        Token((generation << (usize::BITS - GENERATION_BITS)) | (self.slot << 1) | side)
    }

    /// Unpacks a pair token (see [`Owner::of`] for tokens of any kind).
    fn decode(token: Token) -> PairToken {
        let side = if token.0 & 1 == 0 {
            Side::Client
        } else {
            Side::Upstream
        };
        PairToken {
            slot: (token.0 >> 1) & MAX_SLOT,
            side,
            generation: (token.0 >> (usize::BITS - GENERATION_BITS)) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_round_trip() {
        for (slot, side, generation) in [
            (0, Side::Client, 0),
            (1, Side::Upstream, 1),
            (MAX_SLOT, Side::Upstream, 7),
            (12345, Side::Client, PAIR_GENERATIONS - 1),
        ] {
            let token = PairToken {
                slot,
                side,
                generation,
            };
            assert_eq!(Owner::of(token.encode()), Owner::Pair(token));
        }
    }

    #[test]
    fn test_reserved_tokens_are_not_pairs() {
        assert_eq!(Owner::of(SIGNALS), Owner::Signals);
        assert_eq!(Owner::of(METRICS), Owner::Metrics);
        assert_eq!(Owner::of(WAKER), Owner::Waker);
        assert_eq!(Owner::of(UPGRADE), Owner::Upgrade);
        assert_eq!(Owner::of(SUCCESSOR), Owner::Successor);
        assert_eq!(Owner::of(probe_token(0)), Owner::Probe(0));
        assert_eq!(
            Owner::of(probe_token(MAX_PROBES - 1)),
            Owner::Probe(MAX_PROBES - 1)
        );
        for (route, index) in [(0, 0), (3, 1), (MAX_ROUTES - 1, MAX_LISTENERS - 1)] {
            assert_eq!(
                Owner::of(listener_token(route, index)),
                Owner::Listener { route, index }
            );
            assert_eq!(
                Owner::of(unix_listener_token(route, index)),
                Owner::UnixListener { route, index }
            );
        }
        assert_eq!(Owner::of(scrape_token(0)), Owner::Scrape(0));
        assert_eq!(
            Owner::of(scrape_token(MAX_SCRAPES - 1)),
            Owner::Scrape(MAX_SCRAPES - 1)
        );
        assert_eq!(Owner::of(warm_token(0)), Owner::Warm(0));
        assert_eq!(
            Owner::of(warm_token(MAX_WARM - 1)),
            Owner::Warm(MAX_WARM - 1)
        );
        assert_eq!(Owner::of(ADMIN), Owner::Admin);
        assert_eq!(Owner::of(admin_token(0)), Owner::AdminExchange(0));
        assert_eq!(
            Owner::of(admin_token(MAX_ADMIN - 1)),
            Owner::AdminExchange(MAX_ADMIN - 1)
        );
    }

    #[test]
    fn test_udp_tokens_round_trip() {
        for (route, session) in [
            (0, None),
            (0, Some(0)),
            (3, Some(77)),
            (MAX_UDP_ROUTES - 1, None),
            (MAX_UDP_ROUTES - 1, Some(MAX_UDP_SESSIONS - 1)),
        ] {
            assert_eq!(
                Owner::of(udp_token(route, session)),
                Owner::Udp { route, session }
            );
        }
    }

    #[test]
    fn test_highest_pair_token_is_below_reserved() {
        let highest = PairToken {
            slot: MAX_SLOT,
            side: Side::Upstream,
            generation: PAIR_GENERATIONS - 1,
        };
        assert_eq!(Owner::of(highest.encode()), Owner::Pair(highest));
    }

    #[test]
    fn test_same_slot_new_generation_differs() {
        let old = PairToken {
            slot: 3,
            side: Side::Client,
            generation: 1,
        };
        let new = PairToken {
            generation: 2,
            ..old
        };
        assert_ne!(old.encode(), new.encode());
    }
}
