//! Why a ClientHello is refused: one [`Reason`] per broken rule of docs/tls-sni.md. Its label is a
//! metric label value and its message the log line, so the list is fixed and each label is stable.

use std::fmt;

/// Why the first bytes of a TLS connection are not a ClientHello edgefwd routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A record whose content type is not handshake (22): not TLS, or not its first flight.
    NotHandshake,
    /// A record's version is not 3.1, 3.2 or 3.3.
    RecordVersion,
    /// A record of length 0 or longer than 2^14 bytes.
    RecordLength,
    /// The first handshake message is not a ClientHello (type 1).
    HandshakeType,
    /// The hello's records would run past [`MAX_HELLO`](super::MAX_HELLO).
    TooLong,
    /// The record that ends the hello carries more bytes after it.
    TrailingData,
    /// The hello's `legacy_version` is not 3.1, 3.2 or 3.3.
    HelloVersion,
    /// The hello ends inside its random, or its session id is longer than 32 bytes or than the hello.
    SessionId,
    /// The cipher suite list is empty, odd, or runs past the hello.
    CipherSuites,
    /// The compression method list is empty, runs past the hello, or lacks `null` (0).
    Compression,
    /// The extensions block's length is not what is left of the hello, or an extension overruns it.
    Extensions,
    /// Two extensions of the same type.
    DuplicateExtension,
    /// `pre_shared_key` is not the last extension (RFC 8446 section 4.2.11).
    PskNotLast,
    /// The `server_name` extension is not a list of exactly one well-framed `host_name`.
    ServerName,
    /// The host name is not a DNS name by the rules of docs/tls-sni.md (an IP literal, an empty label,
    /// a trailing dot, a byte outside letters, digits and `-`, too long).
    ServerNameSyntax,
    /// The `application_layer_protocol_negotiation` extension is empty or badly framed.
    Alpn,
}

impl Reason {
    /// Every reason, in the order /metrics lists them.
    pub const ALL: [Reason; 16] = [
        Reason::NotHandshake,
        Reason::RecordVersion,
        Reason::RecordLength,
        Reason::HandshakeType,
        Reason::TooLong,
        Reason::TrailingData,
        Reason::HelloVersion,
        Reason::SessionId,
        Reason::CipherSuites,
        Reason::Compression,
        Reason::Extensions,
        Reason::DuplicateExtension,
        Reason::PskNotLast,
        Reason::ServerName,
        Reason::ServerNameSyntax,
        Reason::Alpn,
    ];

    /// The stable kebab-case label (a metric label value: never rename one).
    pub fn label(self) -> &'static str {
        match self {
            Reason::NotHandshake => "not-handshake",
            Reason::RecordVersion => "record-version",
            Reason::RecordLength => "record-length",
            Reason::HandshakeType => "handshake-type",
            Reason::TooLong => "too-long",
            Reason::TrailingData => "trailing-data",
            Reason::HelloVersion => "hello-version",
            Reason::SessionId => "session-id",
            Reason::CipherSuites => "cipher-suites",
            Reason::Compression => "compression",
            Reason::Extensions => "extensions",
            Reason::DuplicateExtension => "duplicate-extension",
            Reason::PskNotLast => "psk-not-last",
            Reason::ServerName => "server-name",
            Reason::ServerNameSyntax => "server-name-syntax",
            Reason::Alpn => "alpn",
        }
    }

    /// What the log line says.
    pub fn message(self) -> &'static str {
        match self {
            Reason::NotHandshake => "not a TLS handshake record",
            Reason::RecordVersion => "TLS record with an unknown version",
            Reason::RecordLength => "TLS record empty or longer than 16384 bytes",
            Reason::HandshakeType => "first handshake message is not a ClientHello",
            Reason::TooLong => "ClientHello longer than the 16 KiB bound",
            Reason::TrailingData => "bytes after the ClientHello in its last record",
            Reason::HelloVersion => "ClientHello with an unknown version",
            Reason::SessionId => "ClientHello with a bad session id",
            Reason::CipherSuites => "ClientHello with a bad cipher suite list",
            Reason::Compression => "ClientHello with a bad compression method list",
            Reason::Extensions => "ClientHello with badly framed extensions",
            Reason::DuplicateExtension => "ClientHello with two extensions of one type",
            Reason::PskNotLast => "ClientHello with pre_shared_key not last",
            Reason::ServerName => "ClientHello with a malformed server_name extension",
            Reason::ServerNameSyntax => "ClientHello server name is not a DNS host name",
            Reason::Alpn => "ClientHello with a malformed ALPN extension",
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

    #[test]
    fn test_reason_labels_are_unique_and_kebab_case() {
        assert_label_table(&Reason::ALL, |reason| reason as usize, Reason::label);
    }
}
