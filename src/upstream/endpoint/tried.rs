//! The endpoints a client has been tried on: a failover never repeats one. Every pair holds a [`Tried`],
//! idle or not, so it is a few slots inline and becomes a bitmap only on a long failover chain.

use super::MAX_ENDPOINTS;

/// Slots a [`Tried`] keeps inline: more than the default `connect_attempts` (3), so that only a route
/// set for long failover chains ever allocates, and then only on its failover path.
const TRIED_INLINE: usize = 7;

/// The endpoints a client has been tried on (the current one included): a failover never repeats one,
/// and their count is the number of attempts made. Every pair holds one, idle or not, so the common
/// case (a few attempts) is 16 bytes inline rather than a bit for each of the [`MAX_ENDPOINTS`] slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tried {
    /// Up to [`TRIED_INLINE`] slots, the first `len` of `slots`.
    Few { len: u8, slots: [u16; TRIED_INLINE] },
    /// A bit per endpoint slot, once more than [`TRIED_INLINE`] have been tried.
    Many(Box<[u64; MAX_ENDPOINTS / 64]>),
}

impl Default for Tried {
    fn default() -> Tried {
        Tried::Few {
            len: 0,
            slots: [0; TRIED_INLINE],
        }
    }
}

impl Tried {
    pub(crate) fn contains(&self, slot: usize) -> bool {
        match self {
            Tried::Few { len, slots } => {
                u16::try_from(slot).is_ok_and(|slot| slots[..usize::from(*len)].contains(&slot))
            }
            Tried::Many(bits) => bits
                .get(slot / 64)
                .is_some_and(|word| word & (1 << (slot % 64)) != 0),
        }
    }

    /// Adds `slot`; one out of range (no endpoint has it) is ignored.
    pub(crate) fn insert(&mut self, slot: usize) {
        if slot >= MAX_ENDPOINTS || self.contains(slot) {
            return;
        }
        match self {
            Tried::Few { len, slots } if usize::from(*len) < TRIED_INLINE => {
                slots[usize::from(*len)] = slot as u16; // below MAX_ENDPOINTS, which fits
                *len += 1;
            }
            Tried::Few { slots, .. } => {
                let mut bits = Box::new([0u64; MAX_ENDPOINTS / 64]);
                for &old in slots.iter() {
                    bits[usize::from(old) / 64] |= 1 << (old % 64);
                }
                bits[slot / 64] |= 1 << (slot % 64);
                *self = Tried::Many(bits);
            }
            Tried::Many(bits) => bits[slot / 64] |= 1 << (slot % 64),
        }
    }

    /// Attempts made.
    pub(crate) fn count(&self) -> usize {
        match self {
            Tried::Few { len, .. } => usize::from(*len),
            Tried::Many(bits) => bits.iter().map(|word| word.count_ones() as usize).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tried_counts_each_slot_once() {
        let mut tried = Tried::default();
        for slot in [0, 63, 64, MAX_ENDPOINTS - 1, 63] {
            tried.insert(slot);
        }
        assert_eq!(tried.count(), 4);
        assert!(tried.contains(64) && !tried.contains(65));
        tried.insert(MAX_ENDPOINTS); // out of range: ignored
        assert_eq!(tried.count(), 4);
        assert!(!tried.contains(MAX_ENDPOINTS) && !tried.contains(usize::MAX));
    }

    /// Past the inline slots the set spills into a bitmap and keeps every slot it had; up to every
    /// slot of a route can be tried.
    #[test]
    fn test_tried_keeps_every_slot_past_the_inline_ones() {
        let mut tried = Tried::default();
        let slots: Vec<usize> = (0..MAX_ENDPOINTS).map(|n| n * 37 % MAX_ENDPOINTS).collect();
        for (n, &slot) in slots.iter().enumerate() {
            assert!(!tried.contains(slot), "slot {slot} before it was tried");
            tried.insert(slot);
            tried.insert(slot);
            assert_eq!(tried.count(), n + 1);
            assert!(
                slots[..=n].iter().all(|&old| tried.contains(old)),
                "after {n}"
            );
            assert_eq!(
                matches!(tried, Tried::Few { .. }),
                n < TRIED_INLINE,
                "after {n}"
            );
        }
    }

    /// Every pair holds a `Tried`: idle memory per pair (docs/soak.md) depends on it staying small.
    #[test]
    fn test_tried_is_small() {
        assert!(std::mem::size_of::<Tried>() <= 16);
    }
}
