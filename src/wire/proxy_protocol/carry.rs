//! The TLVs a route carries from a client's v2 header into its upstream header (`--send-proxy-tlvs`):
//! the kinds that can be carried ([`TlvKind`]), a route's choice of them ([`CarriedTlvs`]), and where
//! a parsed header holds them ([`TlvSpans`], filled by the TLV walk in `tlv`).

use std::ops::Range;

/// The spec's codes of the TLV types that can be carried (the TLV walk in `tlv` checks their lengths).
const PP2_TYPE_ALPN: u8 = 0x01;
pub(super) const PP2_TYPE_AUTHORITY: u8 = 0x02;
pub(super) const PP2_TYPE_UNIQUE_ID: u8 = 0x05;

/// A TLV type that can be carried from the client's v2 header to the upstream's (`--send-proxy-tlvs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TlvKind {
    /// `PP2_TYPE_ALPN` (0x01): the protocol the client's TLS handshake chose.
    Alpn,
    /// `PP2_TYPE_AUTHORITY` (0x02): the host name the client asked for (TLS SNI).
    Authority,
    /// `PP2_TYPE_UNIQUE_ID` (0x05): an opaque connection ID from the proxy in front.
    UniqueId,
}

impl TlvKind {
    pub(super) const ALL: [TlvKind; 3] = [TlvKind::Alpn, TlvKind::Authority, TlvKind::UniqueId];

    /// The type byte on the wire.
    pub(super) fn code(self) -> u8 {
        match self {
            TlvKind::Alpn => PP2_TYPE_ALPN,
            TlvKind::Authority => PP2_TYPE_AUTHORITY,
            TlvKind::UniqueId => PP2_TYPE_UNIQUE_ID,
        }
    }

    /// The name `--send-proxy-tlvs` and `send_proxy_tlvs` use.
    pub(super) fn name(self) -> &'static str {
        match self {
            TlvKind::Alpn => "alpn",
            TlvKind::Authority => "authority",
            TlvKind::UniqueId => "unique_id",
        }
    }

    pub(super) fn from_code(code: u8) -> Option<TlvKind> {
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

    pub(crate) fn contains(self, kind: TlvKind) -> bool {
        self.0[kind.index()]
    }

    pub(crate) fn is_empty(self) -> bool {
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
    pub(crate) fn copy_from(self, header: &[u8], spans: &TlvSpans) -> Vec<u8> {
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
    pub(super) fn get(&self, kind: TlvKind) -> Option<Range<usize>> {
        self.0[kind.index()].clone()
    }

    pub(super) fn note(&mut self, kind: TlvKind, value: Range<usize>) {
        self.0[kind.index()].get_or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proxy_protocol::test_headers::{addr, inet, spans, tlv, with_carryable_tlvs};
    use crate::wire::proxy_protocol::{encode, encode_with_tlvs, Version};

    #[test]
    fn test_v2_carryable_tlvs_are_located() {
        let header = with_carryable_tlvs();
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
        let header = with_carryable_tlvs();
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
}
