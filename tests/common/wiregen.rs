//! A seeded, structure-aware generator of greetings for the differential fuzzers (tests/difffuzz.rs
//! in process, tests/difffuzz_e2e.rs over sockets): valid PROXY v1 / v2 headers and CONNECT heads of
//! every kind, then mutations (bit flips, truncations, edits of the v2 length fields, field
//! replacements, CR / LF / NUL injection) and trailing payload bytes.
//!
//! Generation is deterministic for a seed: [`seed_from_env`] reads `EDGEFWD_FUZZ_SEED` (decimal or
//! 0x-hex) and [`cases_from_env`] `EDGEFWD_FUZZ_CASES`, so a failure printed with its seed replays.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::model_proxy::{crc32c, SIGNATURE, TLV_AUTHORITY, TLV_CRC32C, TLV_SSL, TLV_UNIQUE_ID};

/// The seed a fuzzer starts from: `EDGEFWD_FUZZ_SEED`, else `default`.
pub fn seed_from_env(default: u64) -> u64 {
    let Ok(text) = std::env::var("EDGEFWD_FUZZ_SEED") else {
        return default;
    };
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    };
    parsed.unwrap_or_else(|| panic!("EDGEFWD_FUZZ_SEED={text:?} is not a number"))
}

/// How many cases to run: `EDGEFWD_FUZZ_CASES`, else `default`.
pub fn cases_from_env(default: usize) -> usize {
    match std::env::var("EDGEFWD_FUZZ_CASES") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("EDGEFWD_FUZZ_CASES={text:?} is not a number")),
        Err(_) => default,
    }
}

/// Lower-case hex, for printing a failing input so it can be saved to the corpus (`xxd -r -p`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[path = "../../src/fuzz/gen.rs"]
mod gen;

pub use gen::Gen;

/// What the greetings' generator adds to the shared core.
impl Gen {
    /// True `n` times in `d`.
    pub fn odds(&mut self, n: usize, d: usize) -> bool {
        self.below(d) < n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Up to `max` printable ASCII bytes.
    pub fn printable(&mut self, max: usize) -> String {
        let len = self.below(max + 1);
        (0..len)
            .map(|_| char::from(0x20 + self.below(0x5F) as u8))
            .collect()
    }

    /// A sub-generator for an independent stream (a worker thread, a piece of a case).
    pub fn fork(&mut self) -> Gen {
        Gen::new(self.next())
    }
}

/// A generated greeting: the bytes and, for v2, where its 16-bit length fields and CRC32C value sit
/// (so that mutations can edit the lengths and, half of the time, put the checksum right again).
#[derive(Debug, Clone, Default)]
pub struct Wire {
    pub bytes: Vec<u8>,
    /// Offsets of big-endian u16 length fields (the v2 length, each TLV's and sub-TLV's).
    pub lengths: Vec<usize>,
    /// Offset of a CRC32C TLV's value.
    pub crc_at: Option<usize>,
}

impl Wire {
    fn text(text: String) -> Wire {
        Wire {
            bytes: text.into_bytes(),
            ..Wire::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Address and port text, valid and not
// ---------------------------------------------------------------------------------------------

pub fn ipv4(g: &mut Gen) -> Ipv4Addr {
    match g.below(4) {
        0 => Ipv4Addr::new(127, 0, 0, g.pick(&[1, 2, 255])),
        1 => Ipv4Addr::new(g.pick(&[0, 10, 255]), 0, g.pick(&[0, 9, 99, 100]), 0),
        _ => Ipv4Addr::from(g.next() as u32),
    }
}

pub fn ipv6(g: &mut Gen) -> Ipv6Addr {
    let mut segments = [0u16; 8];
    for segment in &mut segments {
        *segment = match g.below(3) {
            0 => 0,
            1 => g.below(16) as u16,
            _ => g.next() as u16,
        };
    }
    Ipv6Addr::from(segments)
}

/// An IPv6 address in one of its RFC 4291 text forms: std's canonical one, all eight groups with
/// random case and leading zeros, `::` at a random run of zeros, or a dotted-quad tail.
pub fn ipv6_text(g: &mut Gen, ip: Ipv6Addr) -> String {
    let s = ip.segments();
    let group = |g: &mut Gen, v: u16| match g.below(3) {
        0 => format!("{v:x}"),
        1 => format!("{v:04X}"),
        _ => format!("{v:X}"),
    };
    match g.below(4) {
        0 => ip.to_string(),
        1 => (0..8).map(|i| group(g, s[i])).collect::<Vec<_>>().join(":"),
        2 => {
            // `::` over segments [from, to) when they are all zero; else the full form.
            let from = g.below(8);
            let to = from + 1 + g.below(8 - from);
            if s[from..to].iter().all(|&v| v == 0) {
                let head: Vec<String> = (0..from).map(|i| group(g, s[i])).collect();
                let tail: Vec<String> = (to..8).map(|i| group(g, s[i])).collect();
                format!("{}::{}", head.join(":"), tail.join(":"))
            } else {
                (0..8).map(|i| group(g, s[i])).collect::<Vec<_>>().join(":")
            }
        }
        _ => {
            let head: Vec<String> = (0..6).map(|i| group(g, s[i])).collect();
            let o = ip.octets();
            format!("{}:{}.{}.{}.{}", head.join(":"), o[12], o[13], o[14], o[15])
        }
    }
}

pub fn port_text(g: &mut Gen) -> String {
    match g.below(6) {
        0 => g.pick(&["0", "1", "65535", "80", "443"]).to_string(),
        _ => g.below(65536).to_string(),
    }
}

/// Text that breaks, or nearly breaks, an address, port, name or token field.
pub fn nasty_token(g: &mut Gen) -> String {
    const TOKENS: &[&str] = &[
        "",
        " ",
        "0",
        "00",
        "01",
        "65536",
        "99999",
        "100000",
        "-1",
        "+1",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3.04",
        "0x7f.1",
        "127.1",
        "::",
        "::1",
        ":::1",
        "1::2::3",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7::",
        "::1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8::",
        "12345::1",
        "::ffff:1.2.3.4",
        "::ffff:1.2.3",
        "::1.2.3.4:5",
        "1.2.3.4::",
        "fe80::1%eth0",
        "[::1]",
        "[::1",
        "::1]",
        "g::1",
        "localhost",
        "LOCALHOST.",
        "a..b",
        "-a.b",
        "a-.b",
        "a_b.c",
        "xn--bcher-kva.example",
        "TCP4",
        "TCP6",
        "UNKNOWN",
        "UDP4",
        "tcp4",
        "\u{e9}",
        "\t",
        "a:b",
        "HTTP/1.1",
    ];
    match g.below(5) {
        0 => "a".repeat(g.pick(&[62, 63, 64, 254, 255, 256])),
        1 => g.printable(12),
        _ => g.pick(TOKENS).to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// PROXY v1
// ---------------------------------------------------------------------------------------------

pub fn proxy_v1(g: &mut Gen) -> Wire {
    let family = g.below(5);
    if family == 0 {
        return Wire::text(v1_unknown(g));
    }
    let v4 = family <= 2;
    let mut fields = vec![
        "PROXY".to_string(),
        if v4 { "TCP4" } else { "TCP6" }.to_string(),
    ];
    for _ in 0..2 {
        fields.push(if v4 {
            ipv4(g).to_string()
        } else {
            let ip = ipv6(g);
            ipv6_text(g, ip)
        });
    }
    fields.push(port_text(g));
    fields.push(port_text(g));
    if g.odds(1, 6) {
        let i = 1 + g.below(fields.len() - 1);
        fields[i] = nasty_token(g);
    }
    Wire::text(format!("{}\r\n", fields.join(" ")))
}

/// `PROXY UNKNOWN`, then nothing or a space and printable text, sometimes sized to end right at
/// the 107-byte bound or just past it.
fn v1_unknown(g: &mut Gen) -> String {
    let keyword = if g.odds(1, 10) {
        nasty_token(g)
    } else {
        "UNKNOWN".to_string()
    };
    let rest = match g.below(4) {
        0 => String::new(),
        1 => {
            let target = g.pick(&[105usize, 106, 107, 108]);
            let used = "PROXY  \r\n".len() + keyword.len();
            format!(" {}", "x".repeat(target.saturating_sub(used)))
        }
        _ => format!(" {}", g.printable(60)),
    };
    format!("PROXY {keyword}{rest}\r\n")
}

// ---------------------------------------------------------------------------------------------
// PROXY v2
// ---------------------------------------------------------------------------------------------

pub fn proxy_v2(g: &mut Gen) -> Wire {
    let mut wire = Wire::default();
    let b = &mut wire.bytes;
    b.extend_from_slice(&SIGNATURE);
    let command = if g.odds(1, 4) { 0x20 } else { 0x21 };
    b.push(command);
    let family = g.pick(&[0x00u8, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, 0x11, 0x21]);
    b.push(family);
    wire.lengths.push(14);
    b.extend_from_slice(&[0, 0]);
    let addr_len = match family {
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => 0,
    };
    let addresses = g.bytes(addr_len);
    b.extend_from_slice(&addresses);
    b.resize(16 + addr_len, 0);
    let tlvs = g.below(6);
    for _ in 0..tlvs {
        tlv(g, &mut wire);
    }
    let length = wire.bytes.len() - 16;
    wire.bytes[14..16].copy_from_slice(&(length as u16).to_be_bytes());
    seal_crc(&mut wire);
    wire
}

/// Appends one TLV of a random kind (the common registered ones, SSL with sub-TLVs, custom ones).
fn tlv(g: &mut Gen, wire: &mut Wire) {
    let (kind, value) = match g.below(10) {
        0 => (0x01, g.pick(&[&b"h2"[..], b"http/1.1", b""]).to_vec()),
        1 => (TLV_AUTHORITY, authority_value(g)),
        2 if wire.crc_at.is_none() || g.odds(1, 8) => {
            (TLV_CRC32C, vec![0; g.pick(&[4, 4, 4, 3, 5])])
        }
        3 => (0x04, vec![0; g.below(40)]),
        4 => (TLV_UNIQUE_ID, vec![0x55; g.pick(&[0usize, 16, 128, 129])]),
        5 | 6 => return ssl_tlv(g, wire),
        7 => (0x30, b"netns0".to_vec()),
        _ => (g.pick(&[0x00u8, 0x06, 0x21, 0xE0, 0xEE, 0xFF]), g.bytes(24)),
    };
    if kind == TLV_CRC32C && value.len() == 4 && wire.crc_at.is_none() {
        wire.crc_at = Some(wire.bytes.len() + 3);
    }
    push_tlv(wire, kind, &value);
}

fn authority_value(g: &mut Gen) -> Vec<u8> {
    match g.below(4) {
        0 => vec![b'a'; g.pick(&[254, 255, 256])],
        _ => b"www.example.com".to_vec(),
    }
}

fn push_tlv(wire: &mut Wire, kind: u8, value: &[u8]) {
    wire.bytes.push(kind);
    wire.lengths.push(wire.bytes.len());
    wire.bytes
        .extend_from_slice(&(value.len() as u16).to_be_bytes());
    wire.bytes.extend_from_slice(value);
}

/// PP2_TYPE_SSL: client byte, verify word, then sub-TLVs (version, CN, cipher, algorithms).
fn ssl_tlv(g: &mut Gen, wire: &mut Wire) {
    let start = wire.bytes.len();
    wire.bytes.push(TLV_SSL);
    wire.lengths.push(wire.bytes.len());
    wire.bytes.extend_from_slice(&[0, 0]);
    wire.bytes.push(g.pick(&[0x01u8, 0x03, 0x07]));
    wire.bytes.extend_from_slice(&[0, 0, 0, g.pick(&[0u8, 1])]);
    for _ in 0..g.below(4) {
        let kind = g.pick(&[0x21u8, 0x22, 0x23, 0x24, 0x25, 0x20, 0x03]);
        let value = match kind {
            0x21 => b"TLSv1.3".to_vec(),
            0x22 => b"client.example".to_vec(),
            0x23 => b"TLS_AES_128_GCM_SHA256".to_vec(),
            _ => g.bytes(8),
        };
        push_tlv(wire, kind, &value);
    }
    let len = wire.bytes.len() - start - 3;
    wire.bytes[start + 1..start + 3].copy_from_slice(&(len as u16).to_be_bytes());
}

/// Puts the right CRC-32C into the CRC32C TLV, over the length the header declares now.
pub fn seal_crc(wire: &mut Wire) {
    let Some(at) = wire.crc_at.filter(|_| wire.bytes.len() >= 16) else {
        return;
    };
    let total = 16 + usize::from(u16::from_be_bytes([wire.bytes[14], wire.bytes[15]]));
    if at + 4 > wire.bytes.len() || total > wire.bytes.len() || at + 4 > total {
        return;
    }
    wire.bytes[at..at + 4].fill(0);
    let crc = crc32c(&wire.bytes[..total]);
    wire.bytes[at..at + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Any PROXY header: v1 or v2, valid as generated.
pub fn proxy_header(g: &mut Gen) -> Wire {
    if g.odds(2, 5) {
        proxy_v1(g)
    } else {
        proxy_v2(g)
    }
}

// ---------------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------------

/// A DNS name of 1 to 4 labels, random case, sometimes a trailing dot, sometimes at the length limits.
pub fn dns_name(g: &mut Gen) -> String {
    if g.odds(1, 12) {
        let label = "a".repeat(g.pick(&[63usize, 64]));
        let mut name = vec![label.clone(), label.clone(), label.clone()];
        name.push("b".repeat(g.pick(&[61usize, 62])));
        return name.join(".");
    }
    let labels: Vec<String> = (0..1 + g.below(4))
        .map(|_| {
            let len = 1 + g.below(12);
            (0..len)
                .map(|i| {
                    let c = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
                        [g.below(63)];
                    if c == b'-' && (i == 0 || i + 1 == len) {
                        'x'
                    } else {
                        char::from(c)
                    }
                })
                .collect()
        })
        .collect();
    let mut name = labels.join(".");
    if name.bytes().last().is_some_and(|b| b.is_ascii_digit()) {
        name.push('z');
    }
    if g.odds(1, 6) {
        name.push('.');
    }
    name
}

/// A CONNECT target: a name, an IPv4 address or an [IPv6] literal, and a port; sometimes a field
/// replaced by a nasty token.
pub fn connect_target(g: &mut Gen) -> String {
    let host = match g.below(4) {
        0 | 1 => dns_name(g),
        2 => ipv4(g).to_string(),
        _ => {
            let ip = ipv6(g);
            format!("[{}]", ipv6_text(g, ip))
        }
    };
    let port = match g.below(10) {
        0 => g
            .pick(&["0", "65536", "0443", "", "+1", "99999"])
            .to_string(),
        _ => (1 + g.below(65535)).to_string(),
    };
    match g.below(12) {
        0 => format!("{}:{port}", nasty_token(g)),
        1 => format!("{host}:{}", nasty_token(g)),
        2 => nasty_token(g),
        _ => format!("{host}:{port}"),
    }
}

/// A CONNECT head to `target` (a random one if `None`): the request line, 0 to 6 header fields
/// (Host, User-Agent, Proxy-Authorization, Proxy-Connection, custom ones with OWS and HTAB, now and
/// then one sized to end near the 8 KiB bound), lines ending in CRLF or sometimes LF.
pub fn connect_head(g: &mut Gen, target: Option<&str>) -> Wire {
    let target = target.map_or_else(|| connect_target(g), str::to_string);
    let method = if g.odds(1, 12) {
        g.pick(&[
            "GET", "connect", "POST", "CONNECT ", "C\u{e9}", "", "OPTIONS",
        ])
    } else {
        "CONNECT"
    };
    let version = if g.odds(1, 12) {
        g.pick(&[
            "HTTP/1.0",
            "HTTP/1.9",
            "HTTP/2",
            "HTTP/1.x",
            "http/1.1",
            "HTTP/1.10",
            "",
        ])
    } else {
        "HTTP/1.1"
    };
    let crlf = |g: &mut Gen| if g.odds(1, 10) { "\n" } else { "\r\n" };
    let mut head = format!("{method} {target} {version}{}", crlf(g));
    let mut authorizations = 0;
    for _ in 0..g.below(7) {
        let line = match g.below(8) {
            0 => format!("Host: {target}"),
            1 => "User-Agent: curl/8.11.1".to_string(),
            2 if authorizations == 0 || g.odds(1, 4) => {
                authorizations += 1;
                let name = g.pick(&[
                    "Proxy-Authorization",
                    "proxy-authorization",
                    "PROXY-AUTHORIZATION",
                ]);
                let ows = g.pick(&["", " ", "  ", "\t", " \t"]);
                format!("{name}:{ows}Basic YWxpY2U6czNjcmV0{ows}")
            }
            3 => "Proxy-Connection: Keep-Alive".to_string(),
            4 if g.odds(1, 16) => {
                let size = g.pick(&[MAX_NEAR - 2, MAX_NEAR - 1, MAX_NEAR, MAX_NEAR + 1]);
                let room = size.saturating_sub(head.len() + "X-Fill: \r\n\r\n".len());
                format!("X-Fill: {}", "f".repeat(room))
            }
            5 => format!("{}: {}", nasty_token(g), g.printable(10)),
            _ => format!(
                "X-Custom-{}:{}{}",
                g.below(100),
                g.pick(&["", " ", "\t"]),
                g.printable(30)
            ),
        };
        head.push_str(&line);
        head.push_str(crlf(g));
    }
    head.push_str(crlf(g));
    Wire::text(head)
}

/// Where the CONNECT head bound is (the model's and the README's 8 KiB).
const MAX_NEAR: usize = 8 * 1024;

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

/// Applies 1 to 3 mutations to `wire`; half of the time afterwards a v2 CRC32C is sealed again, so
/// that structural damage is judged by the structure rules, not hidden behind a checksum mismatch.
pub fn mutate(g: &mut Gen, wire: &mut Wire) {
    for _ in 0..1 + g.below(3) {
        mutate_once(g, wire);
    }
    if g.odds(1, 2) {
        seal_crc(wire);
    }
}

fn mutate_once(g: &mut Gen, wire: &mut Wire) {
    let b = &mut wire.bytes;
    if b.is_empty() {
        b.push(g.next() as u8);
        return;
    }
    let at = g.below(b.len());
    match g.below(8) {
        0 => b[at] ^= 1 << g.below(8),
        1 => {
            let cut = g.below(b.len() + 1);
            b.truncate(cut);
        }
        2 | 3 if !wire.lengths.is_empty() => {
            let field = g.pick(&wire.lengths);
            if field + 2 <= b.len() {
                let old = i32::from(u16::from_be_bytes([b[field], b[field + 1]]));
                let new = match g.below(6) {
                    0 => old + 1,
                    1 => old - 1,
                    2 => old + g.below(8) as i32 - 4,
                    3 => 0,
                    4 => 0xFFFF,
                    _ => g.below(1100) as i32,
                };
                let new = new.clamp(0, 0xFFFF) as u16;
                b[field..field + 2].copy_from_slice(&new.to_be_bytes());
            }
        }
        4 => {
            const INJECT: &[&[u8]] = &[
                b"\r",
                b"\n",
                b"\0",
                b"\r\n",
                b"\n\n",
                b"\r\n\r\n",
                b" ",
                b"\t",
                b"\x7f",
                b"\x80",
                b"\xff",
                b":",
            ];
            let what = g.pick(INJECT);
            b.splice(at..at, what.iter().copied());
        }
        5 => b[at] = g.pick(b"\r\n\0 :.[]0123456789abcdefABCDEF\x7f\x80\xff\x11\x21\x20\x03"),
        6 => {
            let end = (at + 1 + g.below(6)).min(b.len());
            b.drain(at..end);
        }
        _ => {
            let extra = g.bytes(6);
            b.splice(at..at, extra);
        }
    }
}

/// Random bytes to follow a header (the first payload of the stream), sometimes with the characters
/// a parser might mistake for more header.
pub fn payload(g: &mut Gen, max: usize) -> Vec<u8> {
    match g.below(4) {
        0 => Vec::new(),
        1 => b"\r\n\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        _ => g.bytes(max),
    }
}
