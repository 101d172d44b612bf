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
//!
//! Parsing is strict: "when in doubt, reject". A v2 header's TLV area is walked, each TLV (and each
//! sub-TLV of `PP2_TYPE_SSL`) must fit the declared length exactly, and a `PP2_TYPE_CRC32C` is
//! verified, as HAProxy does: a header the next hop would read differently from us is refused, with a
//! [`Reason`] that names the broken rule. docs/proxy-protocol.md lists the rules, numbered as in the
//! comments here, beside what HAProxy and nginx do with the same input.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use crate::wire::crc32c::Crc32c;

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

/// Why a client's PROXY header was refused, or never finished: the `reason` label of
/// `edgefwd_proxy_header_rejected_total` and the words of the log line. The last two are found by the
/// pair, not by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Starts with neither version's signature.
    Signature,
    /// v2: the version nibble is not 2.
    Version,
    /// v2: the command nibble is neither LOCAL nor PROXY.
    Command,
    /// v2: an unknown address family or transport.
    Family,
    /// v2: the length field makes the header longer than [`V2_MAX`].
    TooLong,
    /// v2: the length field leaves no room for the family's addresses.
    ShortAddress,
    /// v2: the TLV area ends inside a TLV's 3-byte head.
    TlvTruncated,
    /// v2: a TLV's value runs past the header's end.
    TlvOverrun,
    /// v2: a `PP2_TYPE_CRC32C` value that is not 4 bytes long.
    Crc32cLength,
    /// v2: two `PP2_TYPE_CRC32C` TLVs.
    Crc32cRepeated,
    /// v2: the header's CRC-32C is not the one its `PP2_TYPE_CRC32C` TLV carries.
    Crc32c,
    /// v2: a `PP2_TYPE_SSL` value shorter than its client and verify fields.
    SslShort,
    /// v2: a `PP2_TYPE_SSL` sub-TLV that is truncated or runs past the SSL value.
    SslSubtlv,
    /// v2: a `PP2_TYPE_AUTHORITY` value longer than 255 bytes.
    AuthorityTooLong,
    /// v2: a `PP2_TYPE_UNIQUE_ID` value longer than 128 bytes.
    UniqueIdTooLong,
    /// v1: no CRLF within [`V1_MAX`] bytes.
    V1TooLong,
    /// v1: a LF without its CR.
    V1BareLf,
    /// v1: a byte that is not ASCII.
    V1NotAscii,
    /// v1: not the 4 address fields TCP4/TCP6 need.
    V1Fields,
    /// v1: a protocol other than TCP4, TCP6 or UNKNOWN.
    V1Protocol,
    /// v1: an address or port that does not parse, or the wrong family.
    V1Address,
    /// No whole header within `--header-timeout` (found by the pair).
    Timeout,
    /// The client closed or reset its connection before its header ended (found by the pair).
    ClientClosed,
}

impl Reason {
    /// Every reason, in the order /metrics lists them.
    pub const ALL: [Reason; 23] = [
        Reason::Signature,
        Reason::Version,
        Reason::Command,
        Reason::Family,
        Reason::TooLong,
        Reason::ShortAddress,
        Reason::TlvTruncated,
        Reason::TlvOverrun,
        Reason::Crc32cLength,
        Reason::Crc32cRepeated,
        Reason::Crc32c,
        Reason::SslShort,
        Reason::SslSubtlv,
        Reason::AuthorityTooLong,
        Reason::UniqueIdTooLong,
        Reason::V1TooLong,
        Reason::V1BareLf,
        Reason::V1NotAscii,
        Reason::V1Fields,
        Reason::V1Protocol,
        Reason::V1Address,
        Reason::Timeout,
        Reason::ClientClosed,
    ];

    /// The stable kebab-case label (a metric label value: never rename one).
    pub fn label(self) -> &'static str {
        match self {
            Reason::Signature => "signature",
            Reason::Version => "version",
            Reason::Command => "command",
            Reason::Family => "family",
            Reason::TooLong => "too-long",
            Reason::ShortAddress => "short-address",
            Reason::TlvTruncated => "tlv-truncated",
            Reason::TlvOverrun => "tlv-overrun",
            Reason::Crc32cLength => "crc32c-length",
            Reason::Crc32cRepeated => "crc32c-repeated",
            Reason::Crc32c => "crc32c",
            Reason::SslShort => "ssl-short",
            Reason::SslSubtlv => "ssl-subtlv",
            Reason::AuthorityTooLong => "authority-too-long",
            Reason::UniqueIdTooLong => "unique-id-too-long",
            Reason::V1TooLong => "v1-too-long",
            Reason::V1BareLf => "v1-bare-lf",
            Reason::V1NotAscii => "v1-not-ascii",
            Reason::V1Fields => "v1-fields",
            Reason::V1Protocol => "v1-protocol",
            Reason::V1Address => "v1-address",
            Reason::Timeout => "timeout",
            Reason::ClientClosed => "client-closed",
        }
    }

    /// What the log line says.
    pub fn message(self) -> &'static str {
        match self {
            Reason::Signature => "not a PROXY protocol header",
            Reason::Version => "v2 header with a version other than 2",
            Reason::Command => "v2 header with an unknown command",
            Reason::Family => "v2 header with an unknown address family",
            Reason::TooLong => "v2 header longer than the 1024-byte bound",
            Reason::ShortAddress => "v2 header shorter than its addresses",
            Reason::TlvTruncated => "v2 TLV area ends inside a TLV header",
            Reason::TlvOverrun => "v2 TLV runs past the header's length",
            Reason::Crc32cLength => "v2 CRC32C TLV not 4 bytes long",
            Reason::Crc32cRepeated => "v2 header with two CRC32C TLVs",
            Reason::Crc32c => "v2 header does not match its CRC32C",
            Reason::SslShort => "v2 SSL TLV shorter than 5 bytes",
            Reason::SslSubtlv => "v2 SSL TLV with a malformed sub-TLV",
            Reason::AuthorityTooLong => "v2 authority TLV longer than 255 bytes",
            Reason::UniqueIdTooLong => "v2 unique ID TLV longer than 128 bytes",
            Reason::V1TooLong => "v1 header longer than 107 bytes",
            Reason::V1BareLf => "v1 header with a bare LF",
            Reason::V1NotAscii => "v1 header is not ASCII",
            Reason::V1Fields => "v1 header needs 4 address fields",
            Reason::V1Protocol => "v1 header with an unknown protocol",
            Reason::V1Address => "v1 header with a bad address or port",
            Reason::Timeout => "no complete PROXY header within --header-timeout",
            Reason::ClientClosed => "the client left before its PROXY header ended",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A TLV type that can be carried from the client's v2 header to the upstream's (`--send-proxy-tlvs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlvKind {
    /// `PP2_TYPE_ALPN` (0x01): the protocol the client's TLS handshake chose.
    Alpn,
    /// `PP2_TYPE_AUTHORITY` (0x02): the host name the client asked for (TLS SNI).
    Authority,
    /// `PP2_TYPE_UNIQUE_ID` (0x05): an opaque connection ID from the proxy in front.
    UniqueId,
}

impl TlvKind {
    pub const ALL: [TlvKind; 3] = [TlvKind::Alpn, TlvKind::Authority, TlvKind::UniqueId];

    /// The type byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            TlvKind::Alpn => PP2_TYPE_ALPN,
            TlvKind::Authority => PP2_TYPE_AUTHORITY,
            TlvKind::UniqueId => PP2_TYPE_UNIQUE_ID,
        }
    }

    /// The name `--send-proxy-tlvs` and `send_proxy_tlvs` use.
    pub fn name(self) -> &'static str {
        match self {
            TlvKind::Alpn => "alpn",
            TlvKind::Authority => "authority",
            TlvKind::UniqueId => "unique_id",
        }
    }

    fn from_code(code: u8) -> Option<TlvKind> {
        TlvKind::ALL.into_iter().find(|kind| kind.code() == code)
    }

    fn index(self) -> usize {
        match self {
            TlvKind::Alpn => 0,
            TlvKind::Authority => 1,
            TlvKind::UniqueId => 2,
        }
    }
}

impl std::str::FromStr for TlvKind {
    type Err = String;

    fn from_str(text: &str) -> Result<TlvKind, String> {
        TlvKind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| format!("unknown TLV '{text}': expected authority, alpn or unique_id"))
    }
}

/// The TLV kinds a route carries from its clients' v2 headers into its upstream headers
/// (`--send-proxy-tlvs`, HAProxy's `proxy-v2-options`). Empty by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CarriedTlvs([bool; 3]);

impl CarriedTlvs {
    /// Parses `authority,alpn,unique_id` (any subset, any order; a name twice is the same as once).
    pub fn parse_list(text: &str) -> Result<CarriedTlvs, String> {
        text.split(',').map(str::trim).map(str::parse).collect()
    }

    pub fn contains(self, kind: TlvKind) -> bool {
        self.0[kind.index()]
    }

    pub fn is_empty(self) -> bool {
        self.0 == [false; 3]
    }

    /// The same list as `parse_list` takes, for the start line.
    pub fn names(self) -> String {
        let names: Vec<&str> = TlvKind::ALL
            .into_iter()
            .filter(|kind| self.contains(*kind))
            .map(TlvKind::name)
            .collect();
        names.join(",")
    }

    /// The carried TLVs of the v2 `header` whose [`TlvSpans`] are `spans`, as bytes to put in the
    /// upstream header (type, length, value each, in `TlvKind::ALL` order; none for a v1 header).
    pub fn copy_from(self, header: &[u8], spans: &TlvSpans) -> Vec<u8> {
        let mut out = Vec::new();
        for kind in TlvKind::ALL.into_iter().filter(|kind| self.contains(*kind)) {
            let Some(value) = spans.get(kind).and_then(|range| header.get(range)) else {
                continue;
            };
            let Ok(len) = u16::try_from(value.len()) else {
                continue; // cannot happen: the value came from a header of at most 1 KiB
            };
            out.push(kind.code());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(value);
        }
        out
    }
}

impl FromIterator<TlvKind> for CarriedTlvs {
    fn from_iter<I: IntoIterator<Item = TlvKind>>(kinds: I) -> CarriedTlvs {
        let mut set = CarriedTlvs::default();
        for kind in kinds {
            set.0[kind.index()] = true;
        }
        set
    }
}

/// Where a v2 header's carryable TLVs are: the byte range of each kind's value in the header (the
/// first TLV of that kind; a later one is ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlvSpans([Option<Range<usize>>; 3]);

impl TlvSpans {
    /// Where the value of `kind` is in the header, if it has one.
    pub fn get(&self, kind: TlvKind) -> Option<Range<usize>> {
        self.0[kind.index()].clone()
    }

    fn note(&mut self, kind: TlvKind, value: Range<usize>) {
        self.0[kind.index()].get_or_insert(value);
    }
}

/// The header announcing a connection from `source` to `destination`. Mixed families (an IPv4 client
/// reaching an IPv6 listener) are sent as IPv6, with the IPv4 address mapped (`::ffff:a.b.c.d`), since
/// both versions need one family for both addresses.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    encode_with_tlvs(version, source, destination, &[])
}

/// [`encode`], with `tlvs` (whole TLVs, as [`CarriedTlvs::copy_from`] makes them) after a v2 header's
/// addresses. A v1 header has no room for them: they are left out (the configuration refuses
/// `--send-proxy-tlvs` without `--send-proxy v2`).
pub fn encode_with_tlvs(
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
    Parsed::Invalid(Reason::Signature)
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN[ anything]\r\n`.
fn parse_v1(input: &[u8]) -> Parsed {
    let end = match v1_line_end(input) {
        Ok(Some(end)) => end,
        Ok(None) => return Parsed::Incomplete,
        Err(reason) => return Parsed::Invalid(reason),
    };
    let header_len = end + 2;
    let Ok(line) = std::str::from_utf8(&input[..end]) else {
        return Parsed::Invalid(Reason::V1NotAscii);
    };
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Done {
            header_len,
            source: None,
            destination: None,
            tlvs: TlvSpans::default(),
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
                    tlvs: TlvSpans::default(),
                },
                _ => Parsed::Invalid(Reason::V1Address),
            }
        }
        ["PROXY", "TCP4" | "TCP6", ..] => Parsed::Invalid(Reason::V1Fields),
        _ => Parsed::Invalid(Reason::V1Protocol),
    }
}

/// Where the line's CRLF starts, once it has arrived. Strict, and decided at the first byte that
/// breaks a rule rather than when the line ends: only printable ASCII before the CRLF (a NUL, another
/// control byte, a bare CR or a byte >= 0x80 is refused as not ASCII, a bare LF as such), and the CRLF
/// must still fit within [`V1_MAX`].
fn v1_line_end(input: &[u8]) -> Result<Option<usize>, Reason> {
    for (i, &byte) in input.iter().enumerate() {
        // A CR at `i` ends the line at `i + 2`; any other byte needs a CRLF after it.
        let shortest = if byte == b'\r' { i + 2 } else { i + 3 };
        if shortest > V1_MAX {
            return Err(Reason::V1TooLong);
        }
        match byte {
            b'\r' => {
                return match input.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(Reason::V1NotAscii),
                }
            }
            b'\n' => return Err(Reason::V1BareLf),
            0x20..=0x7E => {}
            _ => return Err(Reason::V1NotAscii),
        }
    }
    Ok(None)
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

/// PROXY v2 TLV types edgefwd looks at (spec section 2.2).
const PP2_TYPE_ALPN: u8 = 0x01;
const PP2_TYPE_AUTHORITY: u8 = 0x02;
const PP2_TYPE_CRC32C: u8 = 0x03;
const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
const PP2_TYPE_SSL: u8 = 0x20;
/// Longest `PP2_TYPE_AUTHORITY` value (HAProxy's limit: a host name).
const AUTHORITY_MAX: usize = 255;
/// Longest `PP2_TYPE_UNIQUE_ID` value (the spec's limit).
const UNIQUE_ID_MAX: usize = 128;

/// Signature, version/command, family/protocol, a 16-bit length, then addresses and TLVs. Every field is
/// checked as soon as it has arrived (rule 11 of docs/proxy-protocol.md), so a broken header is refused
/// without waiting for bytes that cannot mend it.
fn parse_v2(input: &[u8]) -> Parsed {
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
struct TlvArea {
    /// Where the value of the (only) `PP2_TYPE_CRC32C` TLV is.
    crc_at: Option<usize>,
    carryable: TlvSpans,
}

impl TlvArea {
    /// Walks the TLV area `[start, end)` over what has arrived of the header (rules 5 to 9).
    fn walk(header: &[u8], start: usize, end: usize) -> Result<TlvArea, Reason> {
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
    fn check_crc(&self, header: &[u8]) -> Result<(), Reason> {
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
                ..
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
            b"PROXY UNKNOWN \n\r\n",
            b"GET / HTTP/1.1\r\n",
            b"proxy TCP4",
            b"PROXY UNKNOWN a\nb\r\n",
            b"PROXY UNKNOWN a\rb\r\n",
            b"PROXY UNKNOWN caf\xc3\xa9\r\n",
            b"PROXY UNK\x00",
            b"PROXY TCP4 1.2\r3",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(parse(&long), Parsed::Invalid(Reason::V1TooLong));
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

    /// A v2 header: version 2, `command` (0 LOCAL, 1 PROXY), `family`, then `body` (addresses and
    /// TLVs), its length field set to the body's length.
    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[0x20 | command, family]);
        header.extend_from_slice(&(body.len() as u16).to_be_bytes());
        header.extend_from_slice(body);
        header
    }

    /// The IPv4 address block of 192.0.2.1:5000 -> 10.0.0.1:443.
    const INET: [u8; 12] = [192, 0, 2, 1, 10, 0, 0, 1, 0x13, 0x88, 0x01, 0xBB];

    /// A PROXY header over IPv4 (192.0.2.1:5000 -> 10.0.0.1:443) whose TLV area is `tlvs`.
    fn inet(tlvs: &[u8]) -> Vec<u8> {
        v2(1, 0x11, &[INET.as_slice(), tlvs].concat())
    }

    /// One TLV: type, big-endian length, value.
    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    /// A CRC32C TLV with a placeholder value, for [`sealed`] to fill.
    fn crc_tlv() -> Vec<u8> {
        tlv(0x03, &[0; 4])
    }

    /// `header` with the CRC32C value at `at` set to the header's checksum (computed over the header
    /// with those 4 bytes zero, as the spec says).
    fn sealed(mut header: Vec<u8>, at: usize) -> Vec<u8> {
        header[at..at + 4].fill(0);
        let crc = crate::wire::crc32c::checksum(&header);
        header[at..at + 4].copy_from_slice(&crc.to_be_bytes());
        header
    }

    fn invalid(input: &[u8]) -> Reason {
        match parse(input) {
            Parsed::Invalid(reason) => reason,
            other => panic!("expected a refusal of {input:?}, got {other:?}"),
        }
    }

    fn spans(input: &[u8]) -> TlvSpans {
        match parse(input) {
            Parsed::Done { tlvs, .. } => tlvs,
            other => panic!("expected a header in {input:?}, got {other:?}"),
        }
    }

    /// Rule 11: every strict prefix of `header` reads as incomplete.
    fn incomplete_until_whole(header: &[u8]) {
        for cut in 0..header.len() {
            assert_eq!(parse(&header[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
    }

    /// Rule 11: `header` is refused for `reason` from byte `from` on, and incomplete before.
    fn refused_from(header: &[u8], from: usize, reason: Reason) {
        for cut in 0..header.len() + 1 {
            let expected = if cut < from {
                Parsed::Incomplete
            } else {
                Parsed::Invalid(reason)
            };
            assert_eq!(
                parse(&header[..cut]),
                expected,
                "cut at {cut} of {header:?}"
            );
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

    /// Rule 5, the first layout: a TLV whose value runs past the declared length.
    #[test]
    fn test_v2_rule5_tlv_overrun() {
        let noop = [0x04, 0x00, 0x05, 1, 2, 3, 4]; // says 5 value bytes, the area holds 4
        let header = inet(&noop);
        // refused as soon as the TLV's length field has arrived
        refused_from(&header, 16 + 12 + 3, Reason::TlvOverrun);
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
            16 + 12 + 3,
        );
        assert_eq!(done(&first).0, first.len());
        let local = sealed(v2(0, 0x00, &crc_tlv()), 16 + 3);
        assert_eq!(done(&local), (local.len(), None, None));
    }

    #[test]
    fn test_v2_rule6_crc32c_mismatch() {
        let good = sealed(inet(&[crc_tlv(), tlv(0x04, b"pad")].concat()), 16 + 12 + 3);
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
            refused_from(&header, 16 + 12 + 3, Reason::Crc32cLength);
        }
        let twice = inet(&[crc_tlv(), crc_tlv()].concat());
        let twice = sealed(sealed(twice, 16 + 12 + 3), 16 + 12 + 10);
        refused_from(&twice, 16 + 12 + 10, Reason::Crc32cRepeated);
    }

    /// An SSL TLV's value: client, verify, then `subs`.
    fn ssl(subs: &[u8]) -> Vec<u8> {
        tlv(0x20, &[[0x01, 0, 0, 0, 0].as_slice(), subs].concat())
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
            refused_from(&header, 16 + 12 + 3, Reason::SslShort);
        }
        // a sub-TLV running past the SSL value (but not past the header: a NOOP follows)
        let overrun = [0x01, 0, 0, 0, 0, 0x21, 0x00, 0x09, b'T', b'L', b'S'];
        let header = inet(&[tlv(0x20, &overrun), tlv(0x04, &[0; 9])].concat());
        refused_from(&header, 16 + 12 + 3 + 8, Reason::SslSubtlv);
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
            16 + 12 + 3,
            Reason::AuthorityTooLong,
        );
        assert!(matches!(
            parse(&inet(&tlv(0x05, &[7; 128]))),
            Parsed::Done { .. }
        ));
        refused_from(
            &inet(&tlv(0x05, &[7; 129])),
            16 + 12 + 3,
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

    #[test]
    fn test_v2_carryable_tlvs_are_located() {
        let tlvs = [
            tlv(0x04, b"noop"),
            tlv(0x02, b"example.com"),
            tlv(0x01, b"h2"),
            tlv(0x02, b"second.example"),
            tlv(0x05, b"id-1"),
        ]
        .concat();
        let header = inet(&tlvs);
        let found = spans(&header);
        let value = |kind| found.get(kind).map(|range: Range<usize>| &header[range]);
        assert_eq!(value(TlvKind::Authority), Some(&b"example.com"[..]));
        assert_eq!(value(TlvKind::Alpn), Some(&b"h2"[..]));
        assert_eq!(value(TlvKind::UniqueId), Some(&b"id-1"[..]));
        assert_eq!(spans(&inet(&tlv(0x04, b"x"))), TlvSpans::default());
        assert_eq!(spans(b"PROXY UNKNOWN\r\n"), TlvSpans::default());
    }

    #[test]
    fn test_carried_tlvs_parse() {
        let all = CarriedTlvs::parse_list("authority,alpn,unique_id").expect("all three");
        assert!(TlvKind::ALL.iter().all(|kind| all.contains(*kind)));
        assert_eq!(all.names(), "alpn,authority,unique_id");
        let one = CarriedTlvs::parse_list("alpn, alpn").expect("one");
        assert!(one.contains(TlvKind::Alpn) && !one.contains(TlvKind::Authority));
        for bad in ["", "alpn,", "sni", "ALPN", "unique-id"] {
            let err = CarriedTlvs::parse_list(bad).expect_err(bad);
            assert!(err.starts_with("unknown TLV '"), "{err}");
        }
        assert!(CarriedTlvs::default().is_empty());
    }

    /// The TLVs asked for are copied (the first of each kind), nothing else; encoded after the
    /// addresses of the upstream header, they parse back where they were.
    #[test]
    fn test_carried_tlvs_copied_and_encoded() {
        let header = inet(
            &[
                tlv(0x04, b"noop"),
                tlv(0x05, b"id-1"),
                tlv(0x02, b"example.com"),
                tlv(0x01, b"h2"),
                tlv(0x02, b"second.example"),
                tlv(0xE0, b"custom"),
            ]
            .concat(),
        );
        let asked = CarriedTlvs::parse_list("authority,unique_id").expect("list");
        let copied = asked.copy_from(&header, &spans(&header));
        assert_eq!(
            copied,
            [tlv(0x02, b"example.com"), tlv(0x05, b"id-1")].concat()
        );
        let sent = encode_with_tlvs(
            Version::V2,
            addr("[2001:db8::1]:7"),
            addr("10.0.0.1:80"),
            &copied,
        );
        assert_eq!(sent.len(), 16 + 36 + copied.len());
        let found = spans(&sent);
        assert_eq!(
            found.get(TlvKind::Authority).map(|range| &sent[range]),
            Some(&b"example.com"[..])
        );
        assert_eq!(found.get(TlvKind::Alpn), None);
        let v1 = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        assert!(asked.copy_from(v1, &spans(v1)).is_empty());
        assert_eq!(
            encode(Version::V2, addr("1.2.3.4:1"), addr("5.6.7.8:2")).len(),
            28
        );
    }

    #[test]
    fn test_reason_labels_are_unique_and_kebab_case() {
        let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
        for label in labels {
            assert!(label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
        for (index, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(
                reason as usize, index,
                "{reason:?}: ALL indexes the counters"
            );
        }
        assert_eq!(invalid(b"GET / HTTP/1.1\r\n"), Reason::Signature);
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
                16 + 12 + 3,
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
