//! The PROXY protocol (HAProxy's spec, versions 1 and 2): a header in front of a TCP stream that carries
//! the original client's address across a proxy. Pure: encoding and parsing, no I/O.
//!
//! - [`encode`] builds the header `--send-proxy v1|v2` puts first in the upstream stream.
//! - [`parse`] reads a header from the first bytes of a stream (`--accept-proxy`), detecting the version
//!   from the first bytes. It is given whatever has arrived so far and answers [`Parsed::Incomplete`]
//!   until the header is whole, so the caller can keep reading into a small bounded buffer; it never
//!   looks past the header, and the bytes after `header_len` belong to the payload.
//!
//! Both versions are bounded: a v1 header is at most [`V1_MAX`] bytes (the spec's 107), a v2 header at
//! most [`V2_MAX`] (16 bytes plus addresses plus TLVs; we refuse more than that rather than buffer
//! whatever length field a peer sends).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that starts every v2 header.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Longest v1 header, CRLF included (spec section 2.1).
pub const V1_MAX: usize = 107;
/// Longest v2 header we accept, TLVs included. The spec lets the length field say up to 64 KiB; real
/// senders (haproxy, nginx, AWS/GCP load balancers) stay far below this.
pub const V2_MAX: usize = 1024;
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
    Done {
        header_len: usize,
        source: Option<SocketAddr>,
        destination: Option<SocketAddr>,
    },
    /// Not a PROXY header, or a broken one; the reason is for the log line.
    Invalid(&'static str),
}

/// The header announcing a connection from `source` to `destination`. Mixed families (an IPv4 client
/// reaching an IPv6 listener) are sent as IPv6, with the IPv4 address mapped (`::ffff:a.b.c.d`), since
/// both versions need one family for both addresses.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    match version {
        Version::V1 => encode_v1(source, destination),
        Version::V2 => encode_v2(source, destination),
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    let v6 = |addr: SocketAddr| match addr.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    };
    (v6(a), v6(b))
}

fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&as_v6(src).octets());
            out.extend_from_slice(&as_v6(dst).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    }
}

/// Parses a v1 or v2 header from the start of `input`, whichever the first bytes announce.
pub fn parse(input: &[u8]) -> Parsed {
    let v2_prefix = input.len().min(V2_SIGNATURE.len());
    if input[..v2_prefix] == V2_SIGNATURE[..v2_prefix] {
        return if input.len() < V2_SIGNATURE.len() {
            Parsed::Incomplete
        } else {
            parse_v2(input)
        };
    }
    let v1_prefix = input.len().min(6);
    if input[..v1_prefix] == b"PROXY "[..v1_prefix] {
        return if input.len() < 6 {
            Parsed::Incomplete
        } else {
            parse_v1(input)
        };
    }
    Parsed::Invalid("not a PROXY protocol header")
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN[ anything]\r\n`.
fn parse_v1(input: &[u8]) -> Parsed {
    let window = &input[..input.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        return if input.len() >= V1_MAX {
            Parsed::Invalid("v1 header longer than 107 bytes")
        } else if window.contains(&b'\n') {
            Parsed::Invalid("v1 header with a bare LF")
        } else {
            Parsed::Incomplete
        };
    };
    let header_len = end + 2;
    let Ok(line) = std::str::from_utf8(&input[..end]) else {
        return Parsed::Invalid("v1 header is not ASCII");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Done {
            header_len,
            source: None,
            destination: None,
        },
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *family == "TCP4";
            match (
                v1_ip(src, v4),
                v1_ip(dst, v4),
                v1_port(sport),
                v1_port(dport),
            ) {
                (Some(src), Some(dst), Some(sport), Some(dport)) => Parsed::Done {
                    header_len,
                    source: Some(SocketAddr::new(src, sport)),
                    destination: Some(SocketAddr::new(dst, dport)),
                },
                _ => Parsed::Invalid("v1 header with a bad address or port"),
            }
        }
        ["PROXY", "TCP4" | "TCP6", ..] => Parsed::Invalid("v1 header needs 4 address fields"),
        _ => Parsed::Invalid("v1 header with an unknown protocol"),
    }
}

fn v1_ip(text: &str, v4: bool) -> Option<IpAddr> {
    if v4 {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// A decimal port: digits only (no sign, no spaces), at most 5 of them, no leading zero (spec).
fn v1_port(text: &str) -> Option<u16> {
    let digits_only =
        !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    (digits_only && !leading_zero)
        .then(|| text.parse().ok())
        .flatten()
}

/// Signature, version/command, family/protocol, a 16-bit length, then addresses and TLVs.
fn parse_v2(input: &[u8]) -> Parsed {
    if input.len() < 16 {
        return Parsed::Incomplete;
    }
    let (version, command) = (input[12] >> 4, input[12] & 0x0F);
    if version != 2 {
        return Parsed::Invalid("v2 header with a version other than 2");
    }
    if command > 1 {
        return Parsed::Invalid("v2 header with an unknown command");
    }
    let length = usize::from(u16::from_be_bytes([input[14], input[15]]));
    let header_len = 16 + length;
    if header_len > V2_MAX {
        return Parsed::Invalid("v2 header longer than the 1024-byte bound");
    }
    if input.len() < header_len {
        return Parsed::Incomplete;
    }
    let body = &input[16..header_len];
    let local = Parsed::Done {
        header_len,
        source: None,
        destination: None,
    };
    if command == 0 {
        return local; // LOCAL: a health check from the proxy itself; addresses, if any, mean nothing
    }
    match input[13] {
        // AF_UNSPEC, or AF_UNIX: no IP addresses to use
        0x00 | 0x31 | 0x32 => local,
        0x11 | 0x12 => match body.get(..12) {
            Some(a) => {
                let ip =
                    |at: usize| IpAddr::V4(Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]));
                let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
                Parsed::Done {
                    header_len,
                    source: Some(SocketAddr::new(ip(0), port(8))),
                    destination: Some(SocketAddr::new(ip(4), port(10))),
                }
            }
            None => Parsed::Invalid("v2 IPv4 header shorter than its addresses"),
        },
        0x21 | 0x22 => match body.get(..36) {
            Some(a) => {
                let ip = |at: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&a[at..at + 16]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
                Parsed::Done {
                    header_len,
                    source: Some(SocketAddr::new(ip(0), port(32))),
                    destination: Some(SocketAddr::new(ip(16), port(34))),
                }
            }
            None => Parsed::Invalid("v2 IPv6 header shorter than its addresses"),
        },
        _ => Parsed::Invalid("v2 header with an unknown address family"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::{fuzz_budget, Gen};

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    fn done(input: &[u8]) -> (usize, Option<SocketAddr>, Option<SocketAddr>) {
        match parse(input) {
            Parsed::Done {
                header_len,
                source,
                destination,
            } => (header_len, source, destination),
            other => panic!("expected a header in {input:?}, got {other:?}"),
        }
    }

    #[test]
    fn test_v1_tcp4_with_payload_after() {
        let input = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        let (len, src, dst) = done(input);
        assert_eq!(len, input.len() - 5);
        assert_eq!(src, Some(addr("192.0.2.1:56324")));
        assert_eq!(dst, Some(addr("198.51.100.2:443")));
    }

    #[test]
    fn test_v1_tcp6_and_unknown() {
        let (_, src, _) = done(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
        assert_eq!(src, Some(addr("[2001:db8::1]:1")));
        assert_eq!(done(b"PROXY UNKNOWN\r\n"), (15, None, None));
        assert_eq!(done(b"PROXY UNKNOWN ff::1 x y z\r\n").1, None);
    }

    #[test]
    fn test_v1_incomplete_until_crlf() {
        let full = b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn test_v1_rejects() {
        for bad in [
            &b"PROXY TCP4 10.0.0.1 10.0.0.2 1000\r\n"[..],
            b"PROXY TCP4 ::1 10.0.0.2 1000 2000\r\n",
            b"PROXY TCP6 10.0.0.1 ::1 1000 2000\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 +100 2000\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 0100 2000\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 65536 2000\r\n",
            b"PROXY TCP4  10.0.0.1 10.0.0.2 1 2\r\n",
            b"PROXY UDP4 10.0.0.1 10.0.0.2 1 2\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\n",
            b"GET / HTTP/1.1\r\n",
            b"proxy TCP4",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(
            parse(&long),
            Parsed::Invalid("v1 header longer than 107 bytes")
        );
    }

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
    fn test_mixed_families_are_sent_as_ipv6() {
        let header = encode(Version::V1, addr("10.0.0.1:5"), addr("[::1]:6"));
        assert_eq!(header, b"PROXY TCP6 ::ffff:10.0.0.1 ::1 5 6\r\n");
    }

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
    /// than it was given (nor more than the bounds), and no prefix of a valid header is `Invalid`.
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
        ]
    }

    fn check_invariants(input: &[u8]) {
        match parse(input) {
            Parsed::Done { header_len, .. } => {
                assert!(header_len <= input.len(), "overrun on {input:?}");
                assert!(header_len <= MAX_HEADER, "past the bound on {input:?}");
            }
            Parsed::Incomplete => {
                assert!(input.len() < MAX_HEADER, "incomplete forever: {input:?}")
            }
            Parsed::Invalid(_) => {}
        }
    }
}
