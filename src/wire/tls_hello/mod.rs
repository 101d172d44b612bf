//! A TLS ClientHello, read without being consumed: what SNI routing needs to pick a route (the server
//! name, the ALPN protocols, whether the hello is ECH) from the first bytes of a connection, which are
//! then sent upstream unchanged. Pure: no I/O.
//!
//! [`parse`] is given whatever the client has sent so far (TCP may have split it anywhere, and the
//! client may have split the hello over several handshake records) and answers [`Parsed::Incomplete`],
//! [`Parsed::Hello`] or [`Parsed::Reject`]. It reads no byte past [`MAX_HELLO`] and answers
//! `Incomplete` only while the input is shorter than that, so a client cannot make a connection hold
//! more. The answer is a function of the bytes alone: every prefix of an input is either `Incomplete` or
//! gets the input's own answer, so a rejection is given as soon as the rule it breaks can be seen (the
//! first byte of `GET /`, a length that overruns the bound) and never depends on where the reads ended.
//!
//! The rules are RFC 8446 (TLS 1.3), RFC 5246 (TLS 1.2) and RFC 6066 (`server_name`), applied
//! strictly ("when in doubt, reject"): every length is checked against the one around it (record,
//! handshake, session id, cipher suites, compression, extensions, each extension), no extension type
//! twice, `pre_shared_key` last, one `host_name` that is a DNS name (lowercased; no IP literal, no
//! empty label, no trailing dot). The first broken rule in byte order is the [`Reason`].
//! docs/tls-sni.md has the table, and tests/common/model_tls.rs states the same rules as an
//! independent model that tests/tls_hello.rs compares against.

mod reason;

use std::collections::HashSet;

pub use reason::Reason;

/// Most bytes the hello's records may take, record headers included.
pub const MAX_HELLO: usize = 16 * 1024;

/// Longest record fragment (RFC 8446 section 5.1: 2^14).
const MAX_FRAGMENT: usize = 1 << 14;
/// Content type, version and length.
const RECORD_HEADER: usize = 5;
/// Handshake type and 24-bit length.
const HANDSHAKE_HEADER: usize = 4;
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_PRE_SHARED_KEY: u16 = 41;
/// `encrypted_client_hello` (RFC 9849, formerly draft-ietf-tls-esni).
const EXT_ECH: u16 = 0xfe0d;
const HOST_NAME: u8 = 0;

/// What routing needs from a whole, well-formed ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The `host_name` of `server_name`, lowercased; `None` when the hello has no `server_name`.
    pub server_name: Option<String>,
    /// The ALPN protocol names, in the client's order (empty without the extension).
    pub alpn: Vec<Vec<u8>>,
    /// The hello carries `encrypted_client_hello`: its `server_name` is the public name, not the one
    /// the client means.
    pub has_ech: bool,
    /// Bytes of the input the hello's records take (what follows is the client's next record).
    pub len: usize,
}

/// The answer for the bytes a client has sent so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a hello that may still be valid: wait for more.
    Incomplete,
    Hello(Hello),
    Reject(Reason),
}

/// Reads the ClientHello at the start of `input`; see the module doc.
pub fn parse(input: &[u8]) -> Parsed {
    let input = &input[..input.len().min(MAX_HELLO)];
    match reassemble(input) {
        Err(reason) => Parsed::Reject(reason),
        Ok(None) => Parsed::Incomplete,
        Ok(Some((message, len))) => match parse_body(&message[HANDSHAKE_HEADER..]) {
            Ok(fields) => Parsed::Hello(Hello { len, ..fields }),
            Err(reason) => Parsed::Reject(reason),
        },
    }
}

/// Joins the handshake records' fragments into the ClientHello message (its 4-byte header included),
/// with the end of its last record; `None` while more bytes are needed.
fn reassemble(input: &[u8]) -> Result<Option<(Vec<u8>, usize)>, Reason> {
    let mut message = Vec::new();
    let mut at = 0;
    loop {
        // A record starting here could hold no byte within the bound.
        if at + RECORD_HEADER >= MAX_HELLO {
            return Err(Reason::TooLong);
        }
        let header = &input[at..input.len().min(at + RECORD_HEADER)];
        let Some(length) = record_length(header)? else {
            return Ok(None);
        };
        let end = at + RECORD_HEADER + length;
        if end > MAX_HELLO {
            return Err(Reason::TooLong);
        }
        let before = message.len();
        message.extend_from_slice(&input[at + RECORD_HEADER..input.len().min(end)]);
        if let Some(&kind) = message.first() {
            if kind != CLIENT_HELLO {
                return Err(Reason::HandshakeType);
            }
        }
        let whole = end <= input.len();
        match message_length(&message)? {
            Some(total) if before + length > total => return Err(Reason::TrailingData),
            Some(total) if before + length == total => {
                return Ok(whole.then_some((message, end)));
            }
            _ if !whole => return Ok(None),
            _ => at = end,
        }
    }
}

/// Checks the record header's bytes that have arrived; its fragment length once all five have.
fn record_length(header: &[u8]) -> Result<Option<usize>, Reason> {
    if header
        .first()
        .is_some_and(|&kind| kind != CONTENT_HANDSHAKE)
    {
        return Err(Reason::NotHandshake);
    }
    if !version_prefix_ok(&header[header.len().min(1)..]) {
        return Err(Reason::RecordVersion);
    }
    let [_, _, _, high, low] = *header else {
        return Ok(None);
    };
    match usize::from(u16::from_be_bytes([high, low])) {
        0 => Err(Reason::RecordLength),
        length if length > MAX_FRAGMENT => Err(Reason::RecordLength),
        length => Ok(Some(length)),
    }
}

/// Whether the version bytes seen so far (0, 1 or 2 of them) can still be 3.1, 3.2 or 3.3.
fn version_prefix_ok(bytes: &[u8]) -> bool {
    match bytes {
        [] => true,
        [major, ..] if *major != 3 => false,
        [_] => true,
        [_, minor, ..] => (1..=3).contains(minor),
    }
}

/// The whole handshake message's length (header included) once its header has arrived; too long for
/// the bound even in one record is refused at once.
fn message_length(message: &[u8]) -> Result<Option<usize>, Reason> {
    let [_, a, b, c, ..] = *message else {
        return Ok(None);
    };
    let body = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    if RECORD_HEADER + HANDSHAKE_HEADER + body > MAX_HELLO {
        return Err(Reason::TooLong);
    }
    Ok(Some(HANDSHAKE_HEADER + body))
}

/// The ClientHello's fields after its handshake header (RFC 8446 section 4.1.2).
fn parse_body(body: &[u8]) -> Result<Hello, Reason> {
    let mut r = Reader(body);
    let version = r.u16().ok_or(Reason::HelloVersion)?;
    if !version_prefix_ok(&version.to_be_bytes()) {
        return Err(Reason::HelloVersion);
    }
    r.take(32).ok_or(Reason::SessionId)?;
    let session_id = r.vec8().ok_or(Reason::SessionId)?;
    if session_id.len() > 32 {
        return Err(Reason::SessionId);
    }
    let suites = r.vec16().ok_or(Reason::CipherSuites)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Reason::CipherSuites);
    }
    let compression = r.vec8().ok_or(Reason::Compression)?;
    if !compression.contains(&0) {
        return Err(Reason::Compression);
    }
    let mut hello = Hello {
        server_name: None,
        alpn: Vec::new(),
        has_ech: false,
        len: 0,
    };
    // TLS 1.2 allows a hello without extensions (RFC 5246 section 7.4.1.2).
    if r.0.is_empty() {
        return Ok(hello);
    }
    let mut extensions = Reader(r.vec16().ok_or(Reason::Extensions)?);
    if !r.0.is_empty() {
        return Err(Reason::Extensions);
    }
    let mut seen = HashSet::new();
    while !extensions.0.is_empty() {
        let kind = extensions.u16().ok_or(Reason::Extensions)?;
        let data = extensions.vec16().ok_or(Reason::Extensions)?;
        if seen.contains(&EXT_PRE_SHARED_KEY) {
            return Err(Reason::PskNotLast);
        }
        if !seen.insert(kind) {
            return Err(Reason::DuplicateExtension);
        }
        match kind {
            EXT_SERVER_NAME => hello.server_name = Some(server_name(data)?),
            EXT_ALPN => hello.alpn = alpn(data)?,
            EXT_ECH => hello.has_ech = true,
            _ => {}
        }
    }
    Ok(hello)
}

/// A `server_name` extension's one `host_name` (RFC 6066 section 3), checked and lowercased.
fn server_name(data: &[u8]) -> Result<String, Reason> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec16().ok_or(Reason::ServerName)?);
    let name = match (outer.0.is_empty(), list.u8(), list.vec16()) {
        (true, Some(HOST_NAME), Some(name)) if list.0.is_empty() => name,
        _ => return Err(Reason::ServerName),
    };
    host_name(name).ok_or(Reason::ServerNameSyntax)
}

/// `name` lowercased when it is a DNS host name: 1..=253 bytes of dot-separated labels of 1..=63
/// letters, digits and inner hyphens, the last label not all digits (so no IPv4 literal; an IPv6 one
/// has colons). No trailing dot (RFC 6066 forbids it), no underscore. The `sni` names of the config
/// are held to the same rule ([`crate::wire::sni`]), so that every name a route lists can match.
pub fn host_name(name: &[u8]) -> Option<String> {
    let label_ok = |label: &[u8]| {
        (1..=63).contains(&label.len())
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
    };
    let last = name.split(|&b| b == b'.').next_back()?;
    let ok = (1..=253).contains(&name.len())
        && name.split(|&b| b == b'.').all(label_ok)
        && !last.iter().all(u8::is_ascii_digit);
    ok.then(|| String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// The protocol names of an ALPN extension (RFC 7301 section 3.1): a non-empty list of non-empty names.
fn alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, Reason> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec16().ok_or(Reason::Alpn)?);
    if !outer.0.is_empty() || list.0.is_empty() {
        return Err(Reason::Alpn);
    }
    let mut names = Vec::new();
    while !list.0.is_empty() {
        match list.vec8() {
            Some(name) if !name.is_empty() => names.push(name.to_vec()),
            _ => return Err(Reason::Alpn),
        }
    }
    Ok(names)
}

/// A cursor over bytes: each read takes from the front, `None` when too few are left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::{fuzz_budget, Gen};

    /// A ClientHello handshake message (header included) with these extensions, as TLS 1.3 clients
    /// write one.
    fn message(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let block: Vec<u8> = extensions
            .iter()
            .flat_map(|(kind, data)| [&kind.to_be_bytes()[..], &u16_len(data)].concat())
            .collect();
        let body = [
            &[3, 3][..],
            &[7; 32],
            &[32],
            &[9; 32],
            &[0, 4, 0x13, 0x01, 0x13, 0x02],
            &[1, 0],
            &u16_len(&block),
        ]
        .concat();
        let len = (body.len() as u32).to_be_bytes();
        [&[CLIENT_HELLO, len[1], len[2], len[3]][..], &body].concat()
    }

    fn u16_len(data: &[u8]) -> Vec<u8> {
        [&(data.len() as u16).to_be_bytes()[..], data].concat()
    }

    /// `message` in records of at most `size` bytes each.
    fn records(message: &[u8], size: usize) -> Vec<u8> {
        message
            .chunks(size)
            .flat_map(|chunk| [&[22, 3, 1][..], &u16_len(chunk)].concat())
            .collect()
    }

    fn sni(name: &[u8]) -> (u16, Vec<u8>) {
        let entry = [&[HOST_NAME][..], &u16_len(name)].concat();
        (EXT_SERVER_NAME, u16_len(&entry))
    }

    fn hello_of(input: &[u8]) -> Hello {
        match parse(input) {
            Parsed::Hello(hello) => hello,
            other => panic!("{other:?} for {input:02x?}"),
        }
    }

    fn rejected(extensions: &[(u16, Vec<u8>)]) -> Reason {
        match parse(&records(&message(extensions), MAX_FRAGMENT)) {
            Parsed::Reject(reason) => reason,
            other => panic!("{other:?}"),
        }
    }

    /// Real hellos (tests/corpus/tls/capture.py made them) give the name they were asked for.
    #[test]
    fn test_real_hellos() {
        let openssl = include_bytes!("../../../tests/corpus/tls/openssl-sni-alpn.bin");
        let hello = hello_of(openssl);
        assert_eq!(hello.server_name.as_deref(), Some("www.example.com"));
        assert_eq!(hello.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!((hello.has_ech, hello.len), (false, openssl.len()));
        let curl = include_bytes!("../../../tests/corpus/tls/curl-resolve.bin");
        assert_eq!(
            hello_of(curl).server_name.as_deref(),
            Some("api.example.com")
        );
        let none = include_bytes!("../../../tests/corpus/tls/openssl-no-sni.bin");
        assert_eq!(hello_of(none).server_name, None);
    }

    #[test]
    fn test_every_prefix_is_incomplete() {
        let input = records(&message(&[sni(b"a.example")]), 40);
        for cut in 0..input.len() {
            assert_eq!(parse(&input[..cut]), Parsed::Incomplete, "cut {cut}");
        }
        let hello = hello_of(&[&input[..], b"\x17\x03\x03 early data"].concat());
        assert_eq!(hello.len, input.len());
    }

    #[test]
    fn test_not_tls_is_refused_at_the_first_byte() {
        let refused: [(&[u8], Reason); 7] = [
            (b"G", Reason::NotHandshake),
            (b"\x16\x02", Reason::RecordVersion),
            (b"\x16\x03\x04", Reason::RecordVersion),
            (b"\x16\x03\x00", Reason::RecordVersion),
            (b"\x16\x03\x01\x00\x00", Reason::RecordLength),
            (b"\x16\x03\x01\x40\x01", Reason::RecordLength),
            (b"\x16\x03\x01\x00\x04\x02", Reason::HandshakeType),
        ];
        for (input, reason) in refused {
            assert_eq!(parse(input), Parsed::Reject(reason), "{input:?}");
        }
        // An alert record between the hello's fragments.
        let message = message(&[sni(b"a.b")]);
        let split = [records(&message[..10], 10), b"\x15\x03\x03".to_vec()].concat();
        assert_eq!(parse(&split), Parsed::Reject(Reason::NotHandshake));
    }

    #[test]
    fn test_bound() {
        // A hello that would need 16 KiB + 1 is refused as soon as its length is seen.
        let body = MAX_HELLO - RECORD_HEADER - HANDSHAKE_HEADER + 1;
        let head = [
            22,
            3,
            1,
            0x3f,
            0xfb,
            CLIENT_HELLO,
            0,
            (body >> 8) as u8,
            body as u8,
        ];
        assert_eq!(parse(&head), Parsed::Reject(Reason::TooLong));
        assert_eq!(parse(&head[..8]), Parsed::Incomplete);
        // One exactly at the bound, in two records, is read.
        let empty = message(&[sni(b"x.example"), (0xfff0, vec![])]).len();
        let padding = (0xfff0, vec![0; MAX_HELLO - 2 * RECORD_HEADER - empty]);
        let message = message(&[sni(b"x.example"), padding]);
        let input = records(&message, 10_000);
        assert_eq!(input.len(), MAX_HELLO);
        assert_eq!(hello_of(&input).len, MAX_HELLO);
        // Records so small that their headers take the input past the bound.
        let tiny = records(&message, 1);
        assert_eq!(parse(&tiny), Parsed::Reject(Reason::TooLong));
    }

    #[test]
    fn test_trailing_data_after_the_hello_in_its_record() {
        let mut message = message(&[sni(b"a.b")]);
        message.push(0);
        assert_eq!(
            parse(&records(&message, MAX_FRAGMENT)),
            Parsed::Reject(Reason::TrailingData)
        );
    }

    #[test]
    fn test_extension_rules() {
        let alpn_ext = |list: &[u8]| (EXT_ALPN, u16_len(list));
        assert_eq!(
            rejected(&[sni(b"a.b"), sni(b"a.b")]),
            Reason::DuplicateExtension
        );
        assert_eq!(
            rejected(&[(EXT_PRE_SHARED_KEY, vec![]), (1, vec![])]),
            Reason::PskNotLast
        );
        assert_eq!(rejected(&[(EXT_SERVER_NAME, vec![])]), Reason::ServerName);
        assert_eq!(
            rejected(&[(EXT_SERVER_NAME, vec![0, 0])]),
            Reason::ServerName
        );
        assert_eq!(rejected(&[alpn_ext(b"")]), Reason::Alpn);
        assert_eq!(rejected(&[alpn_ext(b"\x00")]), Reason::Alpn);
        assert_eq!(rejected(&[alpn_ext(b"\x03h2")]), Reason::Alpn);
        let two = [
            &[HOST_NAME][..],
            &u16_len(b"a.b"),
            &[HOST_NAME],
            &u16_len(b"c.d"),
        ]
        .concat();
        assert_eq!(
            rejected(&[(EXT_SERVER_NAME, u16_len(&two))]),
            Reason::ServerName
        );
        let hello = hello_of(&records(
            &message(&[sni(b"A-1.Example"), (EXT_ECH, vec![0]), alpn_ext(b"\x02h2")]),
            7,
        ));
        assert_eq!(hello.server_name.as_deref(), Some("a-1.example"));
        assert!(hello.has_ech);
        assert_eq!(hello.alpn, [b"h2".to_vec()]);
    }

    #[test]
    fn test_server_name_syntax() {
        let long_label = "a".repeat(64);
        let long_name = vec!["a".repeat(63); 4].join(".");
        for bad in [
            "",
            "example.com.",
            ".example.com",
            "a..b",
            "127.0.0.1",
            "1.2.3",
            "10",
            "::1",
            "[::1]",
            "-a.b",
            "a-.b",
            "a_b.c",
            "a b",
            "é.fr",
            &long_label,
            &long_name,
        ] {
            assert_eq!(
                rejected(&[sni(bad.as_bytes())]),
                Reason::ServerNameSyntax,
                "{bad:?}"
            );
        }
        for good in [
            "localhost",
            "a",
            "1.2.3.x",
            "x.123a",
            "xn--bcher-kva.example",
            &long_name[..253],
        ] {
            let hello = hello_of(&records(&message(&[sni(good.as_bytes())]), MAX_FRAGMENT));
            assert_eq!(hello.server_name.as_deref(), Some(good), "{good:?}");
        }
    }

    #[test]
    fn test_fixed_fields() {
        let good = message(&[]);
        let with = |at: usize, bytes: &[u8]| {
            let mut message = good.clone();
            message.splice(at..at + bytes.len(), bytes.iter().copied());
            parse(&records(&message, MAX_FRAGMENT))
        };
        assert_eq!(with(4, &[3, 4]), Parsed::Reject(Reason::HelloVersion));
        assert_eq!(with(38, &[33]), Parsed::Reject(Reason::SessionId));
        assert_eq!(with(71, &[0, 0]), Parsed::Reject(Reason::CipherSuites));
        assert_eq!(with(71, &[0, 3]), Parsed::Reject(Reason::CipherSuites));
        assert_eq!(with(77, &[1, 1]), Parsed::Reject(Reason::Compression));
        assert_eq!(with(79, &[0, 1]), Parsed::Reject(Reason::Extensions));
        // No extensions at all: TLS 1.2 allows it, and there is no name.
        let bare = &good[..good.len() - 2];
        let len = (bare.len() - 4) as u16;
        let bare = [&[1, 0][..], &len.to_be_bytes(), &bare[4..]].concat();
        assert_eq!(hello_of(&records(&bare, MAX_FRAGMENT)).server_name, None);
    }

    /// Property: however a hello is cut into records, the answer is the same, apart from its length.
    #[test]
    fn test_property_record_splits_do_not_matter() {
        let real = include_bytes!("../../../tests/corpus/tls/openssl-sni-alpn.bin");
        let message = &real[RECORD_HEADER..];
        let expected = hello_of(real);
        let mut g = Gen::new(0x5eed_0018);
        for _ in 0..2_000 {
            let mut input = Vec::new();
            let mut rest = message;
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(rest.len().min(1 + g.below(64)));
                input.extend([&[22, 3, 1 + g.below(3) as u8][..], &u16_len(chunk)].concat());
                rest = tail;
            }
            let hello = hello_of(&input);
            assert_eq!(
                hello,
                Hello {
                    len: input.len(),
                    ..expected.clone()
                }
            );
        }
    }

    /// Property: whatever the bytes, an answer without a panic; a hello never claims more bytes than
    /// it was given or than the bound; `Incomplete` only below the bound; and a prefix of the input is
    /// `Incomplete` or gets the input's own answer (so how TCP splits the bytes cannot matter).
    #[test]
    fn test_property_mutations_never_panic_or_overrun() {
        assert!(fuzz_budget("tls_hello", &seeds(), check_invariants) > 0);
    }

    fn seeds() -> Vec<Vec<u8>> {
        vec![
            include_bytes!("../../../tests/corpus/tls/openssl-sni.bin").to_vec(),
            include_bytes!("../../../tests/corpus/tls/openssl-tls12.bin").to_vec(),
            include_bytes!("../../../tests/corpus/tls/curl-http11.bin").to_vec(),
            records(
                &message(&[sni(b"a.example"), (EXT_ALPN, u16_len(b"\x02h2"))]),
                30,
            ),
            records(
                &message(&[(EXT_ECH, vec![0; 8]), (EXT_PRE_SHARED_KEY, vec![1])]),
                9,
            ),
        ]
    }

    fn check_invariants(input: &[u8]) {
        let answer = parse(input);
        match &answer {
            Parsed::Hello(hello) => {
                assert!(
                    hello.len <= input.len() && hello.len <= MAX_HELLO,
                    "overrun"
                );
                assert_eq!(parse(&input[..hello.len]), answer);
            }
            Parsed::Incomplete => assert!(input.len() < MAX_HELLO),
            Parsed::Reject(_) => {}
        }
        let cut = input.len() * 3 / 4;
        let prefix = parse(&input[..cut]);
        assert!(
            prefix == Parsed::Incomplete || prefix == answer,
            "prefix {prefix:?} vs {answer:?}"
        );
    }
}
