//! Why a PROXY header is refused: one [`Reason`] per broken rule of docs/proxy-protocol.md (and two
//! found by the pair: the header timed out, the client left). Its label is a metric label value and its
//! message the log line, so the list is fixed and each label is stable.

use std::fmt;

/// Why a client's PROXY header was refused, or never finished: the `reason` label of
/// `edgefwd_proxy_header_rejected_total` and the words of the log line. The last two are found by the
/// pair, not by [`parse`](super::parse).
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
    /// v2: the length field makes the header longer than [`V2_MAX`](super::V2_MAX).
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
    /// v1: no CRLF within [`V1_MAX`](super::V1_MAX) bytes.
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
    pub(crate) const ALL: [Reason; 23] = [
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
    pub(crate) fn label(self) -> &'static str {
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
    pub(crate) fn message(self) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label_table::assert_label_table;
    use crate::wire::proxy_protocol::test_headers::invalid;

    #[test]
    fn test_reason_labels_are_unique_and_kebab_case() {
        assert_label_table(&Reason::ALL, |reason| reason as usize, Reason::label);
        assert_eq!(invalid(b"GET / HTTP/1.1\r\n"), Reason::Signature);
    }
}
