//! A reference model of edgefwd's PROXY protocol acceptance rules (v1 and v2), written from the rule
//! list of issue 16 (docs/proxy-protocol.md) and HAProxy's proxy-protocol.txt, for differential
//! fuzzing of `edgefwd::wire::proxy_protocol::parse`. It shares no code with the parser: the text forms of
//! IPv4 and IPv6 addresses, the ports, the TLV walk and CRC-32C are all written out here again, as
//! plainly as possible, so that a mistake in one is unlikely to be the same mistake in the other.
//!
//! The model answers for any byte string: [`Verdict::Incomplete`] exactly when the bytes are a prefix
//! of some valid header (nothing broken yet), [`Verdict::Accept`] with the header's length and
//! addresses, or [`Verdict::Reject`] naming the rule, as early as the bytes present prove a rule broken.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature (spec section 2.2).
pub const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Longest v1 line, CRLF included.
pub const V1_MAX: usize = 107;
/// edgefwd's bound on a whole v2 header.
pub const V2_MAX: usize = 1024;

pub const TLV_AUTHORITY: u8 = 0x02;
pub const TLV_CRC32C: u8 = 0x03;
pub const TLV_UNIQUE_ID: u8 = 0x05;
pub const TLV_SSL: u8 = 0x20;

/// What the rules say about a byte string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid prefix of a header: read more.
    Incomplete,
    /// A whole valid header of `header_len` bytes; the addresses it carries, if any.
    Accept {
        header_len: usize,
        source: Option<SocketAddr>,
        destination: Option<SocketAddr>,
    },
    /// A broken rule. `early`: the bytes present are not yet the whole header (a v2 parser may wait
    /// for the rest before it says so; see the spec-open cases in tests/difffuzz.rs).
    Reject { rule: &'static str, early: bool },
}

/// The model's answer for the first bytes of a stream.
pub fn judge(input: &[u8]) -> Verdict {
    let sig = input.len().min(SIGNATURE.len());
    if input[..sig] == SIGNATURE[..sig] {
        return if input.len() < SIGNATURE.len() {
            Verdict::Incomplete
        } else {
            judge_v2(input)
        };
    }
    let text = input.len().min(6);
    if input[..text] == b"PROXY "[..text] {
        return judge_v1(input);
    }
    reject("not-a-header", true)
}

fn reject(rule: &'static str, early: bool) -> Verdict {
    Verdict::Reject { rule, early }
}

// ---------------------------------------------------------------------------------------------
// v1
// ---------------------------------------------------------------------------------------------

fn judge_v1(input: &[u8]) -> Verdict {
    let Some(line_end) = v1_line_end(input) else {
        return Verdict::Incomplete;
    };
    let line_end = match line_end {
        Ok(end) => end,
        Err(rule) => return reject(rule, true),
    };
    // Every byte before the CRLF is printable ASCII (checked by v1_line_end), so this is text.
    let line: String = input[..line_end].iter().map(|&b| b as char).collect();
    let header_len = line_end + 2;
    let rest = &line["PROXY ".len()..];
    if rest == "UNKNOWN" || rest.starts_with("UNKNOWN ") {
        return Verdict::Accept {
            header_len,
            source: None,
            destination: None,
        };
    }
    let fields: Vec<&str> = rest.split(' ').collect();
    let [family, src, dst, sport, dport] = fields.as_slice() else {
        return reject("v1-fields", false);
    };
    let (src, dst) = match *family {
        "TCP4" => (
            ipv4_text(src).map(IpAddr::V4),
            ipv4_text(dst).map(IpAddr::V4),
        ),
        "TCP6" => (
            ipv6_text(src).map(IpAddr::V6),
            ipv6_text(dst).map(IpAddr::V6),
        ),
        _ => return reject("v1-protocol", false),
    };
    match (src, dst, v1_port(sport), v1_port(dport)) {
        (Some(src), Some(dst), Some(sport), Some(dport)) => Verdict::Accept {
            header_len,
            source: Some(SocketAddr::new(src, sport)),
            destination: Some(SocketAddr::new(dst, dport)),
        },
        _ => reject("v1-address-or-port", false),
    }
}

/// Where the CRLF of a v1 line starts: `None` while every byte so far is allowed and there is still
/// room for the CRLF within [`V1_MAX`]; `Some(Err(rule))` as soon as a byte breaks the line rules.
fn v1_line_end(input: &[u8]) -> Option<Result<usize, &'static str>> {
    for (i, &byte) in input.iter().enumerate() {
        match byte {
            b'\r' => {
                if i + 2 > V1_MAX {
                    return Some(Err("v1-too-long"));
                }
                match input.get(i + 1) {
                    None => return None,
                    Some(b'\n') => return Some(Ok(i)),
                    Some(_) => return Some(Err("v1-bare-cr")),
                }
            }
            b'\n' => return Some(Err("v1-bare-lf")),
            0x20..=0x7E if i + 3 <= V1_MAX => {}
            0x20..=0x7E => return Some(Err("v1-too-long")),
            _ => return Some(Err("v1-not-printable")),
        }
    }
    None
}

/// `0`, or 1 to 5 decimal digits without a leading zero, at most 65535.
fn v1_port(text: &str) -> Option<u16> {
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    if !digits || text.is_empty() || text.len() > 5 || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    let value = text
        .bytes()
        .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
    u16::try_from(value).ok()
}

/// Dotted-quad IPv4: four decimal numbers 0..255, 1 to 3 digits, no leading zeros (inet_pton's form).
pub fn ipv4_text(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (octet, part) in octets.iter_mut().zip(parts) {
        let digits = part.bytes().all(|b| b.is_ascii_digit());
        if !digits || part.is_empty() || part.len() > 3 || (part.len() > 1 && part.starts_with('0'))
        {
            return None;
        }
        let value = part
            .bytes()
            .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
        *octet = u8::try_from(value).ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

/// RFC 4291 section 2.2 text forms: eight groups of 1 to 4 hex digits; `::` once for one or more zero
/// groups; the last 32 bits optionally as a dotted quad.
pub fn ipv6_text(text: &str) -> Option<Ipv6Addr> {
    let (head, tail, compressed) = match text.find("::") {
        Some(at) => (&text[..at], &text[at + 2..], true),
        None => (text, "", false),
    };
    if tail.contains("::") {
        return None;
    }
    let mut groups = Vec::new();
    let head_groups = ipv6_groups(head, !compressed)?;
    let tail_groups = if compressed {
        ipv6_groups(tail, true)?
    } else {
        Vec::new()
    };
    let explicit = head_groups.len() + tail_groups.len();
    if (compressed && explicit > 7) || (!compressed && explicit != 8) {
        return None;
    }
    groups.extend(head_groups);
    groups.extend(std::iter::repeat_n(0u16, 8 - explicit));
    groups.extend(tail_groups);
    let mut segments = [0u16; 8];
    segments.copy_from_slice(&groups);
    Some(Ipv6Addr::from(segments))
}

/// The groups of one side of an IPv6 address (`a:b:c`); an empty side is no group. With `last`, the
/// side ends the address and its last piece may be a dotted quad (two groups).
fn ipv6_groups(side: &str, last: bool) -> Option<Vec<u16>> {
    if side.is_empty() {
        return Some(Vec::new());
    }
    let pieces: Vec<&str> = side.split(':').collect();
    let mut groups = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if last && i + 1 == pieces.len() && piece.contains('.') {
            let v4 = ipv4_text(piece)?.octets();
            groups.push(u16::from_be_bytes([v4[0], v4[1]]));
            groups.push(u16::from_be_bytes([v4[2], v4[3]]));
            continue;
        }
        if piece.is_empty() || piece.len() > 4 || !piece.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let value = piece.bytes().fold(0u32, |acc, b| {
            acc * 16 + (b as char).to_digit(16).unwrap_or(0)
        });
        groups.push(value as u16);
    }
    Some(groups)
}

// ---------------------------------------------------------------------------------------------
// v2
// ---------------------------------------------------------------------------------------------

fn judge_v2(input: &[u8]) -> Verdict {
    // `whole`: the header's bytes are all here, so a failure is no longer "early".
    let declared = (input.len() >= 16).then(|| 16 + usize::from(be16(input, 14)));
    let whole = declared.is_some_and(|total| input.len() >= total);
    if let Some(&byte) = input.get(12) {
        if byte >> 4 != 2 {
            return reject("v2-version", !whole);
        }
        if byte & 0x0F > 1 {
            return reject("v2-command", !whole);
        }
    }
    let Some(&family) = input.get(13) else {
        return Verdict::Incomplete;
    };
    let addr_len = match family {
        0x00 => 0,
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => return reject("v2-family", !whole),
    };
    let Some(total) = declared else {
        return Verdict::Incomplete;
    };
    if total > V2_MAX {
        return reject("v2-too-long", false);
    }
    if total - 16 < addr_len {
        return reject("v2-short-addresses", !whole);
    }
    let avail = input.len().min(total);
    let mut crc_at = None;
    if let Err(rule) = walk_tlvs(input, 16 + addr_len, total, avail, false, &mut crc_at) {
        return reject(rule, !whole);
    }
    if !whole {
        return Verdict::Incomplete;
    }
    if let Some(at) = crc_at {
        let mut copy = input[..total].to_vec();
        copy[at..at + 4].fill(0);
        let sent = u32::from_be_bytes([input[at], input[at + 1], input[at + 2], input[at + 3]]);
        if crc32c(&copy) != sent {
            return reject("crc32c-mismatch", false);
        }
    }
    let (source, destination) = v2_addresses(input, family);
    Verdict::Accept {
        header_len: total,
        source,
        destination,
    }
}

/// Walks the TLVs in `input[start..end]`, looking only at bytes below `avail` (the rest has not
/// arrived): each is a type byte, a big-endian 16-bit length and that many value bytes, and they
/// must tile the area exactly. `sub`: the area is an SSL TLV's sub-TLVs, checked for structure only.
/// Records where a CRC32C value sits.
fn walk_tlvs(
    input: &[u8],
    start: usize,
    end: usize,
    avail: usize,
    sub: bool,
    crc_at: &mut Option<usize>,
) -> Result<(), &'static str> {
    let mut at = start;
    while at < end {
        if end - at < 3 {
            return Err("tlv-truncated");
        }
        if at + 3 > avail {
            return Ok(());
        }
        let kind = input[at];
        let len = usize::from(be16(input, at + 1));
        let value = at + 3;
        if value + len > end {
            return Err("tlv-overrun");
        }
        if !sub {
            check_tlv(input, kind, value, len, avail, crc_at)?;
        }
        at = value + len;
    }
    Ok(())
}

/// The rules on a top-level TLV's type and length (rules 6 to 8).
fn check_tlv(
    input: &[u8],
    kind: u8,
    value: usize,
    len: usize,
    avail: usize,
    crc_at: &mut Option<usize>,
) -> Result<(), &'static str> {
    match kind {
        TLV_CRC32C if len != 4 => Err("crc32c-length"),
        TLV_CRC32C if crc_at.is_some() => Err("crc32c-twice"),
        TLV_CRC32C => {
            *crc_at = Some(value);
            Ok(())
        }
        TLV_SSL if len < 5 => Err("ssl-short"),
        TLV_SSL => walk_tlvs(input, value + 5, value + len, avail, true, crc_at),
        TLV_AUTHORITY if len > 255 => Err("authority-too-long"),
        TLV_UNIQUE_ID if len > 128 => Err("unique-id-too-long"),
        _ => Ok(()),
    }
}

/// Rule 10: addresses only from PROXY over INET or INET6.
fn v2_addresses(input: &[u8], family: u8) -> (Option<SocketAddr>, Option<SocketAddr>) {
    if input[12] & 0x0F != 1 {
        return (None, None);
    }
    let a = &input[16..];
    match family {
        0x11 | 0x12 => {
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]));
            (
                Some(SocketAddr::new(ip(0), be16(a, 8))),
                Some(SocketAddr::new(ip(4), be16(a, 10))),
            )
        }
        0x21 | 0x22 => {
            let ip = |at: usize| {
                let mut segments = [0u16; 8];
                for (i, segment) in segments.iter_mut().enumerate() {
                    *segment = be16(a, at + 2 * i);
                }
                IpAddr::V6(Ipv6Addr::from(segments))
            };
            (
                Some(SocketAddr::new(ip(0), be16(a, 32))),
                Some(SocketAddr::new(ip(16), be16(a, 34))),
            )
        }
        _ => (None, None),
    }
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// CRC-32C (Castagnoli), bit by bit: reflected polynomial 0x82F63B78, initial value and final xor
/// 0xFFFFFFFF.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
