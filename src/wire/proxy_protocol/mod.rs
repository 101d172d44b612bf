//! The PROXY protocol (HAProxy's spec, versions 1 and 2): a header in front of a TCP stream that carries
//! the original client's address across a proxy. Pure: encoding and parsing, no I/O.
//!
//! - [`encode()`] builds the header `--send-proxy v1|v2` puts first in the upstream stream.
//! - [`parse`] reads a header from the first bytes of a stream (`--accept-proxy`), detecting the version
//!   from the first bytes. It is given whatever has arrived so far and answers [`Parsed::Incomplete`]
//!   until the header is whole, so the caller can keep reading into a small bounded buffer; it never
//!   looks past the header, and the bytes after `header_len` belong to the payload.
//!
//! Both versions are bounded: a v1 header is at most [`V1_MAX`] bytes (the spec's 107), a v2 header at
//! most [`V2_MAX`] (16 bytes plus addresses plus TLVs; we refuse more than that rather than buffer
//! whatever length field a peer sends).
//!
//! Parsing is strict: "when in doubt, reject". A v2 header's TLV area is walked, each TLV (and each
//! sub-TLV of `PP2_TYPE_SSL`) must fit the declared length exactly, and a `PP2_TYPE_CRC32C` is
//! verified, as HAProxy does: a header the next hop would read differently from us is refused, with a
//! [`Reason`] that names the broken rule. docs/proxy-protocol.md lists the rules, numbered as in the
//! comments here, beside what HAProxy and nginx do with the same input. Each rule is checked as soon as
//! the bytes it reads have arrived, not when the header is whole (rule 11): a broken prefix cannot be
//! mended by more bytes, so waiting for them would only hold a slot and a buffer for a client that is
//! refused anyway.
//!
//! # Where each part lives
//! - this file: the bounds, [`Version`], [`Parsed`] and [`parse`], which picks the version from the
//!   first bytes; the round-trip and mutation properties over the whole.
//! - `encode`: [`encode()`] and [`encode_with_tlvs`] (mixed families sent as IPv6); [`encode_unknown`]
//!   for a client without IP addresses (Unix).
//! - `v1`: the v1 line, judged byte by byte.
//! - `v2`: the v2 fixed part and addresses (rules 1 to 4, 10).
//! - `tlv`: the walk of the v2 TLV area, SSL sub-TLVs and the CRC-32C (rules 5 to 9).
//! - `carry`: [`TlvKind`](carry::TlvKind), [`CarriedTlvs`] and [`TlvSpans`], the TLVs
//!   `--send-proxy-tlvs` carries on.
//! - `reason`: [`Reason`], why a header is refused, with its metric label and log message.
//! - `test_headers` (tests only): headers built by hand, shared with tests/proxy_protocol.rs.

use std::net::SocketAddr;

mod carry;
mod encode;
mod reason;
#[cfg(test)]
mod test_headers;
mod tlv;
mod v1;
mod v2;

#[cfg(test)] // config::file's tests name the kinds
pub(crate) use carry::TlvKind;
pub use carry::{CarriedTlvs, TlvSpans};
pub use encode::encode;
pub(crate) use encode::{encode_unknown, encode_with_tlvs};
pub use reason::Reason;

/// The 12-byte signature that starts every v2 header.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Longest v1 header, CRLF included (spec section 2.1).
const V1_MAX: usize = 107;
/// Longest v2 header we accept, TLVs included. The spec lets the length field say up to 64 KiB; real
/// senders (haproxy, nginx, AWS/GCP load balancers) stay far below this.
const V2_MAX: usize = 1024;
/// Longest header of either version: the size of the buffer a receiver needs.
pub const MAX_HEADER: usize = V2_MAX;

/// Which version to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Version, String> {
        match text {
            "v1" | "1" => Ok(Version::V1),
            "v2" | "2" => Ok(Version::V2),
            _ => Err(format!(
                "invalid PROXY protocol version '{text}': expected v1 or v2"
            )),
        }
    }
}

/// What [`parse`] made of the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A valid beginning of a header: read more.
    Incomplete,
    /// A whole header of `header_len` bytes. The addresses are `None` for headers that carry none
    /// (v1 `UNKNOWN`, v2 `LOCAL` or an unspecified/unix family): the connection's own address stands.
    /// `tlvs` says where the TLVs that can be carried upstream are (none in a v1 header).
    Done {
        header_len: usize,
        source: Option<SocketAddr>,
        destination: Option<SocketAddr>,
        tlvs: TlvSpans,
    },
    /// Not a PROXY header, or a broken one.
    Invalid(Reason),
}

/// Parses a v1 or v2 header from the start of `input`, whichever the first bytes announce.
pub fn parse(input: &[u8]) -> Parsed {
    let v2_prefix = input.len().min(V2_SIGNATURE.len());
    if input[..v2_prefix] == V2_SIGNATURE[..v2_prefix] {
        return if input.len() < V2_SIGNATURE.len() {
            Parsed::Incomplete
        } else {
            v2::parse_v2(input)
        };
    }
    let v1_prefix = input.len().min(6);
    if input[..v1_prefix] == b"PROXY "[..v1_prefix] {
        return if input.len() < 6 {
            Parsed::Incomplete
        } else {
            v1::parse_v1(input)
        };
    }
    Parsed::Invalid(Reason::Signature)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::test_headers::{
        addr, crc_tlv, done, incomplete_until_whole, inet, sealed, ssl, tlv, v2, FIRST_VALUE,
    };
    use super::*;
    use crate::fuzz::{fuzz_budget, Gen};

    fn random_addr(g: &mut Gen, v4: bool) -> SocketAddr {
        let port = g.below(65536) as u16;
        if v4 {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(g.next() as u32)), port)
        } else {
            let ip = Ipv6Addr::from((u128::from(g.next()) << 64) | u128::from(g.next()));
            SocketAddr::new(IpAddr::V6(ip), port)
        }
    }

    /// Property: encoding any pair of addresses and parsing it back gives the same addresses and the
    /// header's exact length, with any payload after it left alone, in both versions.
    #[test]
    fn test_property_round_trip() {
        let mut g = Gen::new(0x5eed_0001);
        for _ in 0..20_000 {
            let v4 = g.below(2) == 0;
            let (src, dst) = (random_addr(&mut g, v4), random_addr(&mut g, v4));
            let version = if g.below(2) == 0 {
                Version::V1
            } else {
                Version::V2
            };
            let header = encode(version, src, dst);
            let payload = g.bytes(16);
            let input = [header.as_slice(), &payload].concat();
            assert_eq!(done(&input), (header.len(), Some(src), Some(dst)));
        }
    }

    /// Property: whatever the bytes, parse answers without panicking, a `Done` never claims more bytes
    /// than it was given (nor more than the bounds), and no prefix of a valid header (or of an
    /// incomplete one) is `Invalid`.
    #[test]
    fn test_property_mutations_never_panic_or_overrun() {
        assert!(fuzz_budget("proxy_protocol", &seeds(), check_invariants) > 0);
    }

    fn seeds() -> Vec<Vec<u8>> {
        vec![
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            encode(Version::V2, addr("1.2.3.4:1"), addr("5.6.7.8:2")),
            encode(Version::V2, addr("[::1]:1"), addr("[::2]:2")),
            sealed(
                inet(
                    &[
                        crc_tlv(),
                        tlv(0x02, b"example.com"),
                        ssl(&tlv(0x21, b"TLSv1.3")),
                    ]
                    .concat(),
                ),
                FIRST_VALUE,
            ),
            v2(0, 0x00, &[tlv(0x01, b"h2"), tlv(0x05, b"id")].concat()),
        ]
    }

    fn check_invariants(input: &[u8]) {
        match parse(input) {
            Parsed::Done { header_len, .. } => {
                assert!(header_len <= input.len(), "overrun on {input:?}");
                assert!(header_len <= MAX_HEADER, "past the bound on {input:?}");
                incomplete_until_whole(&input[..header_len]);
            }
            Parsed::Incomplete => {
                assert!(input.len() < MAX_HEADER, "incomplete forever: {input:?}");
                incomplete_until_whole(input);
            }
            Parsed::Invalid(_) => {}
        }
    }
}
