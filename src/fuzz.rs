//! Test-only: a tiny deterministic generator for property tests, and a time-bounded mutation fuzzer
//! for the pure parsers (cargo-fuzz needs a nightly toolchain; this runs on stable under `cargo test`).
//!
//! [`fuzz_budget`] feeds a checker inputs made by mutating valid seeds (bit flips, byte changes,
//! insertions, deletions, truncation, splices of two seeds) and purely random ones, for
//! `EDGEFWD_FUZZ_SECS` seconds (default 2, so that the normal `cargo test` runs a short round). The seed
//! of the run is printed and can be replayed with `EDGEFWD_FUZZ_SEED`; a failing input is printed in full.

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

mod gen;

pub use gen::Gen;

impl Gen {
    /// A random seed with 1..8 mutations applied, or (one time in eight) random bytes.
    pub fn mutated_input(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        if seeds.is_empty() || self.below(8) == 0 {
            return self.bytes(256);
        }
        let mut input = seeds[self.below(seeds.len())].clone();
        for _ in 0..1 + self.below(8) {
            self.mutate(&mut input, seeds);
        }
        input
    }

    fn mutate(&mut self, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        let at = |g: &mut Gen, len: usize| g.below(len + 1);
        match self.below(7) {
            0 if !input.is_empty() => {
                let i = self.below(input.len());
                input[i] ^= 1 << self.below(8);
            }
            1 if !input.is_empty() => {
                let i = self.below(input.len());
                input[i] = self.interesting_byte();
            }
            2 => {
                let i = at(self, input.len());
                let extra = self.bytes(8);
                input.splice(i..i, extra);
            }
            3 if !input.is_empty() => {
                let start = self.below(input.len());
                let end = (start + 1 + self.below(8)).min(input.len());
                input.drain(start..end);
            }
            4 => {
                let cut = at(self, input.len());
                input.truncate(cut);
            }
            5 => {
                let other = &seeds[self.below(seeds.len())];
                let from = at(self, other.len());
                let i = at(self, input.len());
                input.truncate(i);
                input.extend_from_slice(&other[from..]);
            }
            _ if !input.is_empty() => {
                let start = self.below(input.len());
                let end = (start + 1 + self.below(16)).min(input.len());
                let chunk = input[start..end].to_vec();
                let i = at(self, input.len());
                input.splice(i..i, chunk);
            }
            _ => input.push(self.next() as u8),
        }
    }

    /// Bytes that parsers branch on more often than random ones.
    fn interesting_byte(&mut self) -> u8 {
        const BYTES: &[u8] = b"\r\n :/[]0123456789.ABCDEFabcdef\x00\xff\x7f\x80\x11\x21\x20";
        if self.below(2) == 0 {
            BYTES[self.below(BYTES.len())]
        } else {
            self.next() as u8
        }
    }
}

/// Runs `check` on generated inputs for the fuzz budget; panics with the input if a check fails.
/// Returns the number of inputs tried.
pub fn fuzz_budget(name: &str, seeds: &[Vec<u8>], check: fn(&[u8])) -> u64 {
    let secs: f64 = std::env::var("EDGEFWD_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let seed: u64 = std::env::var("EDGEFWD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut g = Gen::new(seed);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            let input = g.mutated_input(seeds);
            if panic::catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
                panic!("fuzz {name}: seed {seed}, failing input {input:?}");
            }
            runs += 1;
        }
    }
    eprintln!("fuzz {name}: {runs} inputs in {secs}s, seed {seed}, no failure");
    runs
}
