//! The mapping between `mio::Token` and what it names: a listener, the signal pipe, a metrics scrape, or
//! one side of one pair.
//!
//! A pair token carries the slab slot, the side, and the pair's generation. The generation is what makes
//! stale tokens harmless: when a pair is torn down while later events of the same `epoll_wait` batch still
//! name its slot, and an accept reuses that slot, the old events carry the old generation and are dropped
//! (nginx does the same with its one-bit `instance` flag).

use mio::Token;

/// The listener's token.
pub const LISTENER: Token = Token(usize::MAX);
/// The signal pipe's token.
pub const SIGNALS: Token = Token(usize::MAX - 1);
/// The `--metrics` listener's token.
pub const METRICS: Token = Token(usize::MAX - 2);
/// Most metrics scrapes served at once.
pub const MAX_SCRAPES: usize = 64;
/// Most `--prewarm` connections.
pub const MAX_WARM: usize = 1024;

/// Which socket of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

impl Side {
    /// The other socket.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }
}

/// Bits of a token given to the generation; the rest (less one side bit) address the slot.
const GENERATION_BITS: u32 = usize::BITS / 2;
/// Mask applied to generations so they fit their field.
pub const GENERATION_MASK: u32 = if GENERATION_BITS >= 32 {
    u32::MAX
} else {
    (1u32 << GENERATION_BITS) - 1
};
/// Largest slab slot a token can address.
pub const MAX_SLOT: usize = (1usize << (usize::BITS - GENERATION_BITS - 1)) - 1;
/// Lowest reserved token. Pair generations never reach `GENERATION_MASK` (the reactor wraps below it),
/// so every pair token is smaller than this.
const RESERVED_FLOOR: usize = (GENERATION_MASK as usize) << (usize::BITS - GENERATION_BITS);

/// What a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Listener,
    Signals,
    Metrics,
    /// A metrics scrape connection, by its slot.
    Scrape(usize),
    /// A `--prewarm` upstream connection waiting for a client, by its slot.
    Warm(usize),
    Pair(PairToken),
}

impl Target {
    /// Decodes any token the reactor registered.
    pub fn of(token: Token) -> Target {
        match token {
            LISTENER => Target::Listener,
            SIGNALS => Target::Signals,
            METRICS => Target::Metrics,
            Token(value) if value >= RESERVED_FLOOR + MAX_SCRAPES => {
                Target::Warm(value - RESERVED_FLOOR - MAX_SCRAPES)
            }
            Token(value) if value >= RESERVED_FLOOR => Target::Scrape(value - RESERVED_FLOOR),
            other => Target::Pair(PairToken::decode(other)),
        }
    }
}

/// The token of warm connection `slot` (below [`MAX_WARM`]).
pub fn warm_token(slot: usize) -> Token {
    debug_assert!(slot < MAX_WARM);
    Token(RESERVED_FLOOR + MAX_SCRAPES + slot)
}

/// The token of metrics scrape connection `slot` (below [`MAX_SCRAPES`]).
pub fn scrape_token(slot: usize) -> Token {
    debug_assert!(slot < MAX_SCRAPES);
    Token(RESERVED_FLOOR + slot)
}

/// The decoded form of a pair's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairToken {
    pub slot: usize,
    pub side: Side,
    pub generation: u32,
}

impl PairToken {
    /// Packs `generation | slot | side` into a token.
    pub fn encode(self) -> Token {
        debug_assert!(self.slot <= MAX_SLOT);
        let side = match self.side {
            Side::Client => 0,
            Side::Upstream => 1,
        };
        let generation = (self.generation & GENERATION_MASK) as usize;
        Token((generation << (usize::BITS - GENERATION_BITS)) | (self.slot << 1) | side)
    }

    /// Unpacks a pair token (see [`Target::of`] for tokens of any kind).
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
            (12345, Side::Client, GENERATION_MASK - 1),
        ] {
            let token = PairToken {
                slot,
                side,
                generation,
            };
            assert_eq!(Target::of(token.encode()), Target::Pair(token));
        }
    }

    #[test]
    fn test_reserved_tokens_are_not_pairs() {
        assert_eq!(Target::of(LISTENER), Target::Listener);
        assert_eq!(Target::of(SIGNALS), Target::Signals);
        assert_eq!(Target::of(METRICS), Target::Metrics);
        assert_eq!(Target::of(scrape_token(0)), Target::Scrape(0));
        assert_eq!(
            Target::of(scrape_token(MAX_SCRAPES - 1)),
            Target::Scrape(MAX_SCRAPES - 1)
        );
        assert_eq!(Target::of(warm_token(0)), Target::Warm(0));
        assert_eq!(
            Target::of(warm_token(MAX_WARM - 1)),
            Target::Warm(MAX_WARM - 1)
        );
    }

    #[test]
    fn test_highest_pair_token_is_below_reserved() {
        let highest = PairToken {
            slot: MAX_SLOT,
            side: Side::Upstream,
            generation: GENERATION_MASK - 1,
        };
        assert_eq!(Target::of(highest.encode()), Target::Pair(highest));
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
