//! Reading a v2 header's fixed part: signature, version and command (rule 1), family and transport
//! (rule 2), the length field (rules 3 and 4), then the addresses (rule 10); its TLV area is walked by
//! `tlv` (rules 5 to 9). Every field is checked as soon as it has arrived (rule 11).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::tlv::TlvArea;
use super::{Parsed, Reason, V2_MAX};

/// Signature, version/command, family/protocol, a 16-bit length, then addresses and TLVs. Every field is
/// checked as soon as it has arrived (rule 11 of docs/proxy-protocol.md), so a broken header is refused
/// without waiting for bytes that cannot mend it.
pub(super) fn parse_v2(input: &[u8]) -> Parsed {
    v2(input).unwrap_or_else(Parsed::Invalid)
}

fn v2(input: &[u8]) -> Result<Parsed, Reason> {
    let Some(&version_command) = input.get(12) else {
        return Ok(Parsed::Incomplete);
    };
    if version_command >> 4 != 2 {
        return Err(Reason::Version);
    }
    let proxy = match version_command & 0x0F {
        0 => false, // LOCAL: a health check from the proxy itself; addresses, if any, mean nothing
        1 => true,
        _ => return Err(Reason::Command),
    };
    let Some(&family) = input.get(13) else {
        return Ok(Parsed::Incomplete);
    };
    let address_len = address_len(family).ok_or(Reason::Family)?;
    let Some(&[high, low]) = input.get(14..16) else {
        return Ok(Parsed::Incomplete);
    };
    let header_len = 16 + usize::from(u16::from_be_bytes([high, low]));
    if header_len > V2_MAX {
        return Err(Reason::TooLong);
    }
    if header_len < 16 + address_len {
        return Err(Reason::ShortAddress);
    }
    let header = &input[..input.len().min(header_len)];
    let area = TlvArea::walk(header, 16 + address_len, header_len)?;
    if header.len() < header_len {
        return Ok(Parsed::Incomplete);
    }
    area.check_crc(header)?;
    let (source, destination) = match proxy {
        true => addresses(family, &header[16..16 + address_len]),
        false => (None, None),
    };
    Ok(Parsed::Done {
        header_len,
        source,
        destination,
        tlvs: area.carryable,
    })
}

/// The address block's length for a family/transport byte, or `None` for an unknown one.
fn address_len(family: u8) -> Option<usize> {
    match family {
        0x00 => Some(0),          // AF_UNSPEC
        0x11 | 0x12 => Some(12),  // AF_INET, STREAM or DGRAM: 2 x 4 bytes + 2 ports
        0x21 | 0x22 => Some(36),  // AF_INET6: 2 x 16 bytes + 2 ports
        0x31 | 0x32 => Some(216), // AF_UNIX: 2 x 108-byte paths
        _ => None,
    }
}

/// Source and destination from an INET or INET6 address block (whose length [`address_len`] gave);
/// none from the other families.
fn addresses(family: u8, block: &[u8]) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    match family {
        0x11 | 0x12 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    block[at],
                    block[at + 1],
                    block[at + 2],
                    block[at + 3],
                ))
            };
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
            )
        }
        0x21 | 0x22 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
            )
        }
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proxy_protocol::test_headers::{
        addr, done, inet, invalid, refused_from, tlv, v2, INET,
    };
    use crate::wire::proxy_protocol::{encode, parse, Version, V2_SIGNATURE};

    #[test]
    fn test_v2_tcp4_and_tcp6() {
        let header = encode(Version::V2, addr("192.0.2.1:5000"), addr("10.0.0.1:443"));
        assert_eq!(header.len(), 28);
        let (len, src, dst) = done(&[header.as_slice(), b"payload"].concat());
        assert_eq!(len, 28);
        assert_eq!(src, Some(addr("192.0.2.1:5000")));
        assert_eq!(dst, Some(addr("10.0.0.1:443")));
        let header = encode(Version::V2, addr("[2001:db8::7]:1"), addr("[::1]:2"));
        assert_eq!(header.len(), 52);
        assert_eq!(done(&header).1, Some(addr("[2001:db8::7]:1")));
    }

    #[test]
    fn test_v2_local_unspec_and_tlvs() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(done(&local), (16, None, None));
        // PROXY over IPv4 with 5 bytes of TLV after the addresses (a NOOP TLV).
        let mut tlv = encode(Version::V2, addr("1.2.3.4:1"), addr("5.6.7.8:2"));
        tlv[14..16].copy_from_slice(&17u16.to_be_bytes());
        tlv.extend_from_slice(&[0x04, 0x00, 0x02, 0xAA, 0xBB]);
        assert_eq!(done(&tlv).0, 33);
    }

    #[test]
    fn test_v2_rejects_and_bounds() {
        let good = encode(Version::V2, addr("1.2.3.4:1"), addr("5.6.7.8:2"));
        let mut version = good.clone();
        version[12] = 0x11;
        assert!(matches!(parse(&version), Parsed::Invalid(_)));
        let mut command = good.clone();
        command[12] = 0x22;
        assert!(matches!(parse(&command), Parsed::Invalid(_)));
        let mut short = good.clone();
        short[14..16].copy_from_slice(&4u16.to_be_bytes());
        assert!(matches!(parse(&short), Parsed::Invalid(_)));
        let mut huge = good.clone();
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse(&huge), Parsed::Invalid(_)));
        let mut family = good;
        family[13] = 0x41;
        assert!(matches!(parse(&family), Parsed::Invalid(_)));
    }

    #[test]
    fn test_v2_incomplete_at_every_cut() {
        let full = encode(Version::V2, addr("[::2]:9"), addr("[::3]:10"));
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn test_v2_rule1_version_and_command() {
        let good = inet(&[]);
        for version in [0x0, 0x1, 0x3, 0xF] {
            let mut bad = good.clone();
            bad[12] = version << 4 | 0x1;
            refused_from(&bad, 13, Reason::Version);
        }
        for command in 2..16 {
            let mut bad = good.clone();
            bad[12] = 0x20 | command;
            refused_from(&bad, 13, Reason::Command);
        }
    }

    #[test]
    fn test_v2_rule2_family_for_both_commands() {
        for family in 0..=255u8 {
            let known = [0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32].contains(&family);
            for command in [0, 1] {
                let header = v2(command, family, &[0; 216]);
                if known {
                    assert!(matches!(parse(&header), Parsed::Done { .. }), "{family:#x}");
                } else {
                    refused_from(&header, 14, Reason::Family);
                }
            }
        }
    }

    #[test]
    fn test_v2_rule3_length_bound() {
        let biggest = inet(&tlv(0x04, &[0xAB; V2_MAX - 16 - 12 - 3]));
        assert_eq!(biggest.len(), V2_MAX);
        assert_eq!(done(&biggest).0, V2_MAX);
        let over = inet(&tlv(0x04, &[0xAB; V2_MAX - 16 - 12 - 2]));
        refused_from(&over, 16, Reason::TooLong);
        let mut most = inet(&[]);
        most[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(invalid(&most[..16]), Reason::TooLong);
    }

    #[test]
    fn test_v2_rule4_short_address() {
        for (command, family, needed) in [
            (1, 0x11, 12),
            (1, 0x12, 12),
            (1, 0x21, 36),
            (1, 0x22, 36),
            (1, 0x31, 216),
            (0, 0x11, 12),
            (0, 0x21, 36),
            (0, 0x32, 216),
        ] {
            let whole = v2(command, family, &vec![0; needed]);
            assert!(matches!(parse(&whole), Parsed::Done { .. }));
            let short = v2(command, family, &vec![0; needed - 1]);
            refused_from(&short, 16, Reason::ShortAddress);
            let empty = v2(command, family, &[]);
            assert_eq!(invalid(&empty), Reason::ShortAddress);
        }
    }

    #[test]
    fn test_v2_rule10_addresses() {
        let expected = (Some(addr("192.0.2.1:5000")), Some(addr("10.0.0.1:443")));
        assert_eq!(parse_addresses(&inet(&[])), expected);
        assert_eq!(parse_addresses(&v2(1, 0x12, &INET)), expected);
        assert_eq!(parse_addresses(&v2(0, 0x11, &INET)), (None, None));
        // UNSPEC has no address block: what follows is TLVs
        assert_eq!(
            parse_addresses(&v2(1, 0x00, &tlv(0x04, &INET))),
            (None, None)
        );
        assert_eq!(parse_addresses(&v2(1, 0x31, &[1; 216])), (None, None));
        let mut six = [0u8; 36];
        six[15] = 1; // ::1
        six[31] = 2; // ::2
        six[32..36].copy_from_slice(&[0, 80, 1, 0]);
        let six_expected = (Some(addr("[::1]:80")), Some(addr("[::2]:256")));
        assert_eq!(parse_addresses(&v2(1, 0x22, &six)), six_expected);
    }

    fn parse_addresses(input: &[u8]) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let (_, source, destination) = done(input);
        (source, destination)
    }
}
