//! The mapping between `mio::Token` and what it names: a listener, the signal pipe, or one side of one pair.
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
/// Lowest reserved token; pair tokens stay below it.
const RESERVED_FLOOR: usize = usize::MAX - 15;

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

    /// Unpacks a token, or `None` for the reserved (listener, signal) tokens.
    pub fn decode(token: Token) -> Option<PairToken> {
        if token.0 >= RESERVED_FLOOR {
            return None;
        }
        let side = if token.0 & 1 == 0 {
            Side::Client
        } else {
            Side::Upstream
        };
        Some(PairToken {
            slot: (token.0 >> 1) & MAX_SLOT,
            side,
            generation: (token.0 >> (usize::BITS - GENERATION_BITS)) as u32,
        })
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
            assert_eq!(PairToken::decode(token.encode()), Some(token));
        }
    }

    #[test]
    fn test_reserved_tokens_are_not_pairs() {
        assert_eq!(PairToken::decode(LISTENER), None);
        assert_eq!(PairToken::decode(SIGNALS), None);
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
