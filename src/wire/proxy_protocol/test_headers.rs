//! PROXY headers built by hand for tests, and what [`parse`] must make of them. One copy for the unit
//! tests of every part of `proxy_protocol` (the lib compiles it under `#[cfg(test)]`) and for
//! tests/proxy_protocol.rs, which includes this file by `#[path]`.
//!
//! It names the library as `crate::wire`: inside the lib that is the module itself, and a test crate
//! that includes the file brings the same name in with `use edgefwd::wire;` at its root.

use std::net::SocketAddr;

use crate::wire::crc32c::checksum;
use crate::wire::proxy_protocol::{parse, Parsed, Reason, TlvSpans, V2_SIGNATURE};

pub(super) fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

/// A v2 header: version 2, `command` (0 LOCAL, 1 PROXY), `family`, then `body` (addresses and TLVs),
/// its length field set to the body's length.
pub(super) fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x20 | command, family]);
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(body);
    header
}

/// The IPv4 address block of 192.0.2.1:5000 -> 10.0.0.1:443.
pub(super) const INET: [u8; 12] = [192, 0, 2, 1, 10, 0, 0, 1, 0x13, 0x88, 0x01, 0xBB];

/// Offset of the first TLV's value in an [`inet`] header: signature to length (16), the address
/// block (12), the TLV's type and length (3).
pub(super) const FIRST_VALUE: usize = 16 + 12 + 3;

/// A PROXY header over IPv4 (192.0.2.1:5000 -> 10.0.0.1:443) whose TLV area is `tlvs`.
pub(super) fn inet(tlvs: &[u8]) -> Vec<u8> {
    v2(1, 0x11, &[INET.as_slice(), tlvs].concat())
}

/// A PROXY header over IPv4 carrying a TLV of every kind `--send-proxy-tlvs` can carry, and others
/// around them: ALPN `h2`, a NOOP, authority `example.com`, unique ID `id-1`, a second authority
/// (`second.example`, which the first one hides) and a custom type 0xE0.
pub(super) fn with_carryable_tlvs() -> Vec<u8> {
    inet(
        &[
            tlv(0x01, b"h2"),
            tlv(0x04, b"noop"),
            tlv(0x02, b"example.com"),
            tlv(0x05, b"id-1"),
            tlv(0x02, b"second.example"),
            tlv(0xE0, b"custom"),
        ]
        .concat(),
    )
}

/// One TLV: type, big-endian length, value.
pub(super) fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// A CRC32C TLV with a placeholder value, for [`sealed`] to fill.
pub(super) fn crc_tlv() -> Vec<u8> {
    tlv(0x03, &[0; 4])
}

/// `header` with the CRC32C value at `at` set to the header's checksum (computed over the header with
/// those 4 bytes zero, as the spec says).
pub(super) fn sealed(mut header: Vec<u8>, at: usize) -> Vec<u8> {
    header[at..at + 4].fill(0);
    let crc = checksum(&header);
    header[at..at + 4].copy_from_slice(&crc.to_be_bytes());
    header
}

/// An SSL TLV's value: client, verify, then `subs`.
pub(super) fn ssl(subs: &[u8]) -> Vec<u8> {
    tlv(0x20, &[[0x01, 0, 0, 0, 0].as_slice(), subs].concat())
}

/// The length, source and destination of the whole header at the start of `input`.
pub(super) fn done(input: &[u8]) -> (usize, Option<SocketAddr>, Option<SocketAddr>) {
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

/// Why `input` is refused.
pub(super) fn invalid(input: &[u8]) -> Reason {
    match parse(input) {
        Parsed::Invalid(reason) => reason,
        other => panic!("expected a refusal of {input:?}, got {other:?}"),
    }
}

/// Where the carryable TLVs of the whole header at the start of `input` are.
pub(super) fn spans(input: &[u8]) -> TlvSpans {
    match parse(input) {
        Parsed::Done { tlvs, .. } => tlvs,
        other => panic!("expected a header in {input:?}, got {other:?}"),
    }
}

/// Rule 11: every strict prefix of `header` reads as incomplete.
pub(super) fn incomplete_until_whole(header: &[u8]) {
    for cut in 0..header.len() {
        assert_eq!(parse(&header[..cut]), Parsed::Incomplete, "cut at {cut}");
    }
}

/// Rule 11: `header` is refused for `reason` from byte `from` on, and incomplete before.
pub(super) fn refused_from(header: &[u8], from: usize, reason: Reason) {
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
