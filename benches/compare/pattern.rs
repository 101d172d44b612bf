//! The byte pattern every stream carries, so every received byte can be checked with one
//! `memcmp` per read instead of per-byte work.
//!
//! Byte `i` of a stream is `PATTERN[(start + i) % PERIOD]`. The period is prime (not a
//! multiple of any buffer size), so a lost, duplicated or reordered chunk shows up as a
//! mismatch; rr connections start at different offsets, so crossed connections do too.

use crate::support::pattern::Repeating;

/// Length of the repeating pattern (a prime, see the module doc).
pub const PERIOD: usize = 65_521;

/// Largest slice a caller may ask for in one piece.
pub const MAX_CHUNK: usize = 256 * 1024;

/// The pattern, stored so that any window of up to `MAX_CHUNK` bytes is one contiguous slice.
pub struct Pattern {
    bytes: Repeating,
}

impl Pattern {
    /// Fills the pattern from a fixed xorshift sequence (deterministic across runs).
    pub fn new() -> Pattern {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let bytes = Repeating::new(PERIOD, MAX_CHUNK, |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        });
        Pattern { bytes }
    }

    /// The `len` bytes a stream carries starting at stream offset `offset`.
    pub fn at(&self, offset: u64, len: usize) -> &[u8] {
        self.bytes.at(offset, len)
    }

    /// Whether `data` is what the stream should carry at `offset`.
    pub fn matches(&self, offset: u64, data: &[u8]) -> bool {
        data.chunks(MAX_CHUNK)
            .enumerate()
            .all(|(i, c)| c == self.at(offset + (i * MAX_CHUNK) as u64, c.len()))
    }
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/compare.rs
mod tests {
    use super::*;

    /// What a sink sees: the right bytes at the right offset match, a flipped byte, bytes of the
    /// stream from elsewhere (lost, repeated or crossed data) and a short window do not, also past
    /// one `MAX_CHUNK` and across the period's wrap.
    #[test]
    fn test_matches_catches_flips_shifts_and_crossings() {
        let p = Pattern::new();
        let offset = (PERIOD - 1000) as u64;
        let good: Vec<u8> = (0..MAX_CHUNK + 5000)
            .map(|i| p.at(offset + i as u64, 1)[0])
            .collect();
        assert!(p.matches(offset, &good));
        let mut flipped = good.clone();
        flipped[MAX_CHUNK + 100] ^= 1;
        assert!(!p.matches(offset, &flipped));
        assert!(!p.matches(offset + 1, &good), "a shifted stream passed");
        assert!(
            !p.matches(offset + 7919, &good),
            "another connection's bytes passed"
        );
        assert!(
            p.matches(offset + PERIOD as u64, &good),
            "the pattern repeats every PERIOD"
        );
    }
}
