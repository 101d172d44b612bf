//! Reading a v1 header: one line of printable ASCII, `PROXY TCP4|TCP6 SRC DST SPORT DPORT` or
//! `PROXY UNKNOWN ...`, ended by CRLF within [`V1_MAX`] bytes. Each byte is judged as it arrives, so a
//! broken line is refused before its end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Parsed, Reason, TlvSpans, V1_MAX};

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN[ anything]\r\n`.
pub(super) fn parse_v1(input: &[u8]) -> Parsed {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proxy_protocol::parse;
    use crate::wire::proxy_protocol::test_headers::{addr, done};

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
}
