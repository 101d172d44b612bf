//! A repeating byte pattern for streams to carry, so that every received byte can be checked with
//! one `memcmp` per read. Its period should be prime (never a multiple of a buffer size), so a lost,
//! duplicated or reordered chunk shows up as a mismatch. The tests and the benches each fill it
//! their own way (see `tests/common` and `benches/compare/pattern.rs`); the storage is this one.

/// `period` pattern bytes, stored with `max_chunk` more (the pattern again) so that any window of up
/// to `max_chunk` bytes, wherever it starts, is one contiguous slice.
pub struct Repeating {
    bytes: Vec<u8>,
    period: usize,
    max_chunk: usize,
}

impl Repeating {
    /// The pattern whose byte `i` (for `i` in `0..period`, asked in that order) is `byte_at(i)`.
    pub fn new(period: usize, max_chunk: usize, byte_at: impl FnMut(usize) -> u8) -> Repeating {
        let mut bytes: Vec<u8> = (0..period).map(byte_at).collect();
        bytes.reserve(max_chunk);
        for i in period..period + max_chunk {
            bytes.push(bytes[i - period]);
        }
        Repeating {
            bytes,
            period,
            max_chunk,
        }
    }

    /// The bytes at stream offset `offset`, `len` of them but at most `max_chunk`.
    pub fn at(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % self.period as u64) as usize;
        &self.bytes[start..start + len.min(self.max_chunk)]
    }

    /// The length of the repeating part.
    pub fn period(&self) -> usize {
        self.period
    }
}
