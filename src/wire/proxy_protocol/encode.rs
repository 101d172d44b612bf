//! Writing a header (`--send-proxy v1|v2`): the client's address and the address it reached, in the
//! version the route asks for, with the TLVs it carries after a v2 header's addresses.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::{Version, V2_SIGNATURE};

/// The header announcing a connection from `source` to `destination`. Mixed families (an IPv4 client
/// reaching an IPv6 listener) are sent as IPv6, with the IPv4 address mapped (`::ffff:a.b.c.d`), since
/// both versions need one family for both addresses.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    encode_with_tlvs(version, source, destination, &[])
}

/// [`encode`], with `tlvs` (whole TLVs, as [`CarriedTlvs::copy_from`](super::CarriedTlvs::copy_from)
/// makes them) after a v2 header's addresses. A v1 header has no room for them: they are left out (the
/// configuration refuses `--send-proxy-tlvs` without `--send-proxy v2`).
pub(crate) fn encode_with_tlvs(
    version: Version,
    source: SocketAddr,
    destination: SocketAddr,
    tlvs: &[u8],
) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    match version {
        Version::V1 => encode_v1(source, destination),
        Version::V2 => encode_v2(source, destination, tlvs),
    }
}

/// A header for a client whose addresses are not IP ones (a Unix stream client, say): v1 `PROXY
/// UNKNOWN`, v2 the PROXY command with the `AF_UNSPEC` family and no address block (the spec's
/// "unknown, unspecified or unsupported protocol": the receiver uses the connection's own endpoints).
/// Not `LOCAL`, which means a connection the proxy opened for itself, not one it relays. v2 keeps `tlvs`.
pub(crate) fn encode_unknown(version: Version, tlvs: &[u8]) -> Vec<u8> {
    match version {
        Version::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        Version::V2 => {
            let mut out = Vec::with_capacity(16 + tlvs.len());
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, command PROXY
            out.push(0x00); // AF_UNSPEC, UNSPEC
            out.extend_from_slice(&u16::try_from(tlvs.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(tlvs);
            out
        }
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

fn encode_v2(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36 + tlvs.len());
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, command PROXY

    // Carried TLVs come from a header of at most V2_MAX bytes: the length always fits 16 bits.
    let length = |addresses: usize| u16::try_from(addresses + tlvs.len()).unwrap_or(u16::MAX);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&length(12).to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&length(36).to_be_bytes());
            out.extend_from_slice(&as_v6(src).octets());
            out.extend_from_slice(&as_v6(dst).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out.extend_from_slice(tlvs);
    out
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proxy_protocol::test_headers::addr;

    #[test]
    fn test_unknown_addresses_parse_back_as_unknown() {
        use crate::wire::proxy_protocol::{parse, Parsed};
        assert_eq!(encode_unknown(Version::V1, &[]), b"PROXY UNKNOWN\r\n");
        for version in [Version::V1, Version::V2] {
            let header = encode_unknown(version, &[]);
            match parse(&header) {
                Parsed::Done {
                    header_len, source, ..
                } => {
                    assert_eq!(header_len, header.len());
                    assert_eq!(source, None, "{version:?}");
                }
                other => panic!("{version:?}: {other:?}"),
            }
        }
        assert_eq!(&encode_unknown(Version::V2, &[])[12..], &[0x21, 0x00, 0, 0]);
    }

    #[test]
    fn test_mixed_families_are_sent_as_ipv6() {
        let header = encode(Version::V1, addr("10.0.0.1:5"), addr("[::1]:6"));
        assert_eq!(header, b"PROXY TCP6 ::ffff:10.0.0.1 ::1 5 6\r\n");
    }
}
