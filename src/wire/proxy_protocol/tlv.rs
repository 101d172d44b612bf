//! Walking a v2 header's TLV area (rules 5 to 9 of docs/proxy-protocol.md): each TLV, and each sub-TLV
//! of `PP2_TYPE_SSL`, must fill its declared room exactly; a `PP2_TYPE_CRC32C` must be 4 bytes, alone,
//! and match the header; authority and unique ID values are bounded. The walk runs over whatever has
//! arrived, so a broken TLV is refused before the rest of the header comes.

use super::carry::{TlvKind, TlvSpans, PP2_TYPE_AUTHORITY, PP2_TYPE_UNIQUE_ID};
use super::Reason;
use crate::wire::crc32c::Crc32c;

/// PROXY v2 TLV types edgefwd looks at (spec section 2.2).
const PP2_TYPE_CRC32C: u8 = 0x03;
const PP2_TYPE_SSL: u8 = 0x20;
/// Longest `PP2_TYPE_AUTHORITY` value (HAProxy's limit: a host name).
const AUTHORITY_MAX: usize = 255;
/// Longest `PP2_TYPE_UNIQUE_ID` value (the spec's limit).
const UNIQUE_ID_MAX: usize = 128;

/// One TLV met in a walk: its type, and where its value is (offsets into the header). The value's
/// bytes may not all have arrived yet.
#[derive(Debug, Clone, Copy)]
struct Tlv {
    kind: u8,
    at: usize,
    len: usize,
}

/// What a walk of the TLV area found that matters once it is over.
#[derive(Debug, Default)]
pub(super) struct TlvArea {
    /// Where the value of the (only) `PP2_TYPE_CRC32C` TLV is.
    crc_at: Option<usize>,
    /// Where the carryable TLVs are.
    pub(super) carryable: TlvSpans,
}

impl TlvArea {
    /// Walks the TLV area `[start, end)` over what has arrived of the header (rules 5 to 9).
    pub(super) fn walk(header: &[u8], start: usize, end: usize) -> Result<TlvArea, Reason> {
        let mut area = TlvArea::default();
        let broken = (Reason::TlvTruncated, Reason::TlvOverrun);
        walk(header, start, end, broken, |tlv| area.visit(header, tlv))?;
        Ok(area)
    }

    fn visit(&mut self, header: &[u8], tlv: Tlv) -> Result<(), Reason> {
        match tlv.kind {
            PP2_TYPE_CRC32C if tlv.len != 4 => return Err(Reason::Crc32cLength),
            PP2_TYPE_CRC32C if self.crc_at.is_some() => return Err(Reason::Crc32cRepeated),
            PP2_TYPE_CRC32C => self.crc_at = Some(tlv.at),
            // client (1 byte), verify (4 bytes), then sub-TLVs filling the rest exactly
            PP2_TYPE_SSL if tlv.len < 5 => return Err(Reason::SslShort),
            PP2_TYPE_SSL => {
                let broken = (Reason::SslSubtlv, Reason::SslSubtlv);
                walk(header, tlv.at + 5, tlv.at + tlv.len, broken, |_| Ok(()))?;
            }
            PP2_TYPE_AUTHORITY if tlv.len > AUTHORITY_MAX => return Err(Reason::AuthorityTooLong),
            PP2_TYPE_UNIQUE_ID if tlv.len > UNIQUE_ID_MAX => return Err(Reason::UniqueIdTooLong),
            _ => {}
        }
        if let Some(kind) = TlvKind::from_code(tlv.kind) {
            self.carryable.note(kind, tlv.at..tlv.at + tlv.len);
        }
        Ok(())
    }

    /// Rule 6: the CRC-32C of the whole header, its own 4 value bytes read as zeros, must be the value.
    pub(super) fn check_crc(&self, header: &[u8]) -> Result<(), Reason> {
        let Some(at) = self.crc_at else {
            return Ok(());
        };
        let sent = header
            .get(at..at + 4)
            .and_then(|value| <[u8; 4]>::try_from(value).ok())
            .map(u32::from_be_bytes)
            .ok_or(Reason::Crc32cLength)?;
        let computed = Crc32c::new()
            .update(&header[..at])
            .update(&[0; 4])
            .update(&header[at + 4..])
            .finish();
        if computed == sent {
            Ok(())
        } else {
            Err(Reason::Crc32c)
        }
    }
}

/// Walks the TLVs declared to fill `[start, end)` of `header` exactly: each is a type byte, a big-endian
/// 16-bit length and that many value bytes. `header` may stop short of `end` (the rest has not
/// arrived): the walk then stops at the first TLV whose 3-byte head is missing, having refused whatever
/// the bytes present already break. `broken` is what to answer for a head cut by `end` and for a value
/// running past it.
fn walk(
    header: &[u8],
    start: usize,
    end: usize,
    broken: (Reason, Reason),
    mut visit: impl FnMut(Tlv) -> Result<(), Reason>,
) -> Result<(), Reason> {
    let (truncated, overrun) = broken;
    let mut at = start;
    while at < end {
        if end - at < 3 {
            return Err(truncated);
        }
        let Some(&[kind, high, low]) = header.get(at..at + 3) else {
            return Ok(());
        };
        let len = usize::from(u16::from_be_bytes([high, low]));
        if len > end - at - 3 {
            return Err(overrun);
        }
        visit(Tlv {
            kind,
            at: at + 3,
            len,
        })?;
        at += 3 + len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proxy_protocol::test_headers::{
        addr, crc_tlv, done, incomplete_until_whole, inet, invalid, refused_from, sealed, ssl, tlv,
        v2, FIRST_VALUE,
    };
    use crate::wire::proxy_protocol::{parse, Parsed};

    /// Rule 5, the first layout: a TLV whose value runs past the declared length.
    #[test]
    fn test_v2_rule5_tlv_overrun() {
        let noop = [0x04, 0x00, 0x05, 1, 2, 3, 4]; // says 5 value bytes, the area holds 4
        let header = inet(&noop);
        // refused as soon as the TLV's length field has arrived
        refused_from(&header, FIRST_VALUE, Reason::TlvOverrun);
        let after_a_good_one = inet(&[tlv(0x01, b"h2"), noop.to_vec()].concat());
        assert_eq!(invalid(&after_a_good_one), Reason::TlvOverrun);
        // LOCAL's TLV area is walked too
        assert_eq!(invalid(&v2(0, 0x00, &noop)), Reason::TlvOverrun);
        // the largest length field, on the smallest area
        assert_eq!(invalid(&inet(&[0x04, 0xFF, 0xFF])), Reason::TlvOverrun);
    }

    /// Rule 5, the second layout: a TLV area that ends inside a 3-byte TLV head.
    #[test]
    fn test_v2_rule5_tlv_truncated() {
        for tail in [&[0x04][..], &[0x04, 0x00]] {
            let header = inet(tail);
            // refused as soon as the length field says so, before the tail arrives
            refused_from(&header, 16, Reason::TlvTruncated);
            let after_a_good_one = inet(&[tlv(0x04, b"x").as_slice(), tail].concat());
            assert_eq!(invalid(&after_a_good_one), Reason::TlvTruncated);
            assert_eq!(
                invalid(&v2(0, 0x21, &[[0; 36].as_slice(), tail].concat())),
                Reason::TlvTruncated
            );
        }
    }

    /// Rule 5: TLVs that fill the area exactly, empty values included, are accepted; a TLV area
    /// walked to its end leaves the payload after the header alone.
    #[test]
    fn test_v2_rule5_exact_fit() {
        let tlvs = [tlv(0x04, b""), tlv(0x01, b"h2"), tlv(0xE0, &[0; 40])].concat();
        let header = inet(&tlvs);
        incomplete_until_whole(&header);
        let input = [header.as_slice(), &tlv(0x04, &[0xFF; 9])].concat();
        let (len, src, dst) = done(&input);
        assert_eq!(len, header.len());
        assert_eq!(src, Some(addr("192.0.2.1:5000")));
        assert_eq!(dst, Some(addr("10.0.0.1:443")));
        assert_eq!(done(&v2(0, 0x00, &tlvs)), (16 + tlvs.len(), None, None));
    }

    #[test]
    fn test_v2_rule6_crc32c_valid() {
        // CRC first, last, and between other TLVs; on PROXY and LOCAL
        let last = inet(&[tlv(0x01, b"http/1.1"), crc_tlv()].concat());
        let at = last.len() - 4;
        let last = sealed(last, at);
        incomplete_until_whole(&last);
        assert_eq!(done(&last).0, last.len());
        let first = sealed(
            inet(&[crc_tlv(), tlv(0x02, b"example.com")].concat()),
            FIRST_VALUE,
        );
        assert_eq!(done(&first).0, first.len());
        let local = sealed(v2(0, 0x00, &crc_tlv()), 16 + 3);
        assert_eq!(done(&local), (local.len(), None, None));
    }

    #[test]
    fn test_v2_rule6_crc32c_mismatch() {
        let good = sealed(inet(&[crc_tlv(), tlv(0x04, b"pad")].concat()), FIRST_VALUE);
        // any bit flipped in the header, the CRC's own bytes included; not in the length fields, nor
        // in the CRC's type byte (the TLV would no longer be a CRC)
        for at in (12..good.len()).filter(|at| !matches!(at, 14 | 15 | 28 | 29 | 30 | 36 | 37)) {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            match parse(&bad) {
                Parsed::Invalid(Reason::Crc32c) => {}
                // flipping a type or version byte may break an earlier rule first
                Parsed::Invalid(_) if matches!(at, 12 | 13) => {}
                other => panic!("flip at {at}: {other:?}"),
            }
        }
        // the mismatch is only known once the whole header is in
        refused_from(
            &{
                let mut bad = good.clone();
                bad[20] ^= 0x80;
                bad
            },
            good.len(),
            Reason::Crc32c,
        );
        let local = sealed(v2(0, 0x00, &crc_tlv()), 16 + 3);
        let mut bad_local = local;
        bad_local[19] ^= 0x01;
        assert_eq!(invalid(&bad_local), Reason::Crc32c);
        assert_eq!(invalid(&inet(&crc_tlv())), Reason::Crc32c); // all zeros is no checksum of this
    }

    #[test]
    fn test_v2_rule6_crc32c_length_and_repeat() {
        for len in [0, 3, 5, 8] {
            let header = inet(&tlv(0x03, &vec![0; len]));
            refused_from(&header, FIRST_VALUE, Reason::Crc32cLength);
        }
        let twice = inet(&[crc_tlv(), crc_tlv()].concat());
        let twice = sealed(sealed(twice, FIRST_VALUE), 16 + 12 + 10);
        refused_from(&twice, 16 + 12 + 10, Reason::Crc32cRepeated);
    }

    #[test]
    fn test_v2_rule7_ssl_valid() {
        let subs = [
            tlv(0x21, b"TLSv1.3"),
            tlv(0x22, b"client.example"),
            tlv(0x25, b""),
        ]
        .concat();
        let header = inet(&[ssl(&subs), tlv(0x01, b"h2")].concat());
        incomplete_until_whole(&header);
        assert_eq!(done(&header).0, header.len());
        assert_eq!(done(&inet(&ssl(&[]))).0, 16 + 12 + 8);
        // sub-TLVs are not nested further: an SSL sub-TLV inside holds anything
        let nested = inet(&ssl(&tlv(0x20, &[0xFF, 0xFF])));
        assert!(matches!(parse(&nested), Parsed::Done { .. }));
    }

    #[test]
    fn test_v2_rule7_ssl_malformed() {
        for len in 0..5 {
            let header = inet(&tlv(0x20, &vec![0; len]));
            refused_from(&header, FIRST_VALUE, Reason::SslShort);
        }
        // a sub-TLV running past the SSL value (but not past the header: a NOOP follows)
        let overrun = [0x01, 0, 0, 0, 0, 0x21, 0x00, 0x09, b'T', b'L', b'S'];
        let header = inet(&[tlv(0x20, &overrun), tlv(0x04, &[0; 9])].concat());
        refused_from(&header, FIRST_VALUE + 8, Reason::SslSubtlv);
        // an SSL value ending inside a sub-TLV's head
        for tail in [&[0x21][..], &[0x21, 0x00]] {
            let value = [[0x01, 0, 0, 0, 0].as_slice(), &tlv(0x21, b"v"), tail].concat();
            assert_eq!(invalid(&inet(&tlv(0x20, &value))), Reason::SslSubtlv);
        }
    }

    #[test]
    fn test_v2_rule8_authority_and_unique_id_bounds() {
        assert!(matches!(
            parse(&inet(&tlv(0x02, &[b'a'; 255]))),
            Parsed::Done { .. }
        ));
        refused_from(
            &inet(&tlv(0x02, &[b'a'; 256])),
            FIRST_VALUE,
            Reason::AuthorityTooLong,
        );
        assert!(matches!(
            parse(&inet(&tlv(0x05, &[7; 128]))),
            Parsed::Done { .. }
        ));
        refused_from(
            &inet(&tlv(0x05, &[7; 129])),
            FIRST_VALUE,
            Reason::UniqueIdTooLong,
        );
    }

    #[test]
    fn test_v2_rule9_other_types_any_length() {
        for kind in [0x01, 0x04, 0x30, 0x21, 0xE0, 0xEE, 0xFF] {
            for len in [0, 1, 5, 300] {
                let header = inet(&tlv(kind, &vec![0xAA; len]));
                assert_eq!(done(&header).0, header.len(), "type {kind:#x} length {len}");
            }
        }
    }
}
