//! CRC-32C (Castagnoli): the checksum a PROXY v2 header may carry in its `PP2_TYPE_CRC32C` TLV. Pure.
//!
//! Reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF (the spec's, iSCSI's and
//! SCTP's CRC). Table-driven, one byte at a time: a header is at most 1 KiB and is checked once per
//! connection, so the 1 KiB table built at compile time is all the speed it needs; no crate.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// The CRC of every byte value, built at compile time.
const TABLE: [u32; 256] = table();

const fn table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// A checksum being computed over several pieces (a header with its CRC field read as zeros).
#[derive(Debug, Clone, Copy)]
pub(super) struct Crc32c(u32);

impl Crc32c {
    pub(super) fn new() -> Crc32c {
        Crc32c(0xFFFF_FFFF)
    }

    /// Adds `bytes` to the checksum.
    pub(super) fn update(mut self, bytes: &[u8]) -> Crc32c {
        for &byte in bytes {
            self.0 = (self.0 >> 8) ^ TABLE[usize::from((self.0 as u8) ^ byte)];
        }
        self
    }

    /// The checksum of everything added.
    pub(super) fn finish(self) -> u32 {
        !self.0
    }
}

impl Default for Crc32c {
    fn default() -> Crc32c {
        Crc32c::new()
    }
}

/// The CRC-32C of `bytes`.
pub fn checksum(bytes: &[u8]) -> u32 {
    Crc32c::new().update(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard check value (the CRC catalogue's "check" for CRC-32/ISCSI).
    #[test]
    fn test_check_value() {
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
    }

    /// RFC 3720 (iSCSI) B.4 test vectors.
    #[test]
    fn test_rfc3720_vectors() {
        assert_eq!(checksum(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(checksum(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(checksum(&ascending), 0x46DD_794E);
        assert_eq!(checksum(b""), 0);
    }

    #[test]
    fn test_pieces_equal_whole() {
        let data = b"PROXY v2 header bytes, in pieces";
        for cut in 0..data.len() {
            let pieces = Crc32c::new()
                .update(&data[..cut])
                .update(&data[cut..])
                .finish();
            assert_eq!(pieces, checksum(data), "cut at {cut}");
        }
    }
}
