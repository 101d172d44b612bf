//! xorshift64*: the deterministic generator behind every seeded test of the project, shared by the
//! lib's property tests and fuzzer (`crate::fuzz`) and the differential fuzzers in tests/ (which include
//! this file by path, since a `cfg(test)` module of the lib is not visible to them). No dependencies, so
//! that both can compile it; each adds the methods it needs in an `impl` of its own.

/// xorshift64*: deterministic, fast, good enough to drive tests.
#[derive(Debug, Clone)]
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Up to `max` random bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}
