//! A reference model of the CONNECT request head edgefwd accepts (`--mode connect`), written from RFC
//! 9110 section 9.3.6 and RFC 9112 sections 2 to 5 plus edgefwd's documented limits (README "CONNECT
//! proxy": an 8 KiB head, 400 / 405 / 431), for differential fuzzing of
//! `edgefwd::wire::connect_request::parse`. It shares no code with the parser.
//!
//! The grammar, as edgefwd applies it ("when in doubt, reject"):
//! - The head is lines ending in LF, a CR right before the LF being part of the terminator (RFC 9112
//!   section 2.2 lets a recipient take a bare LF as a line end); it ends with the first empty line.
//!   Nothing is decided before that line arrives, except that a head whose end is not within the first
//!   8192 bytes is 431 as soon as 8192 bytes have arrived.
//! - Byte checks on the whole head first (400): a CR anywhere but right before an LF (a bare CR),
//!   any other control byte except HTAB, DEL, or any byte >= 0x80 (RFC 9110 allows obs-text in field
//!   values; edgefwd reads no header where it could mean anything and rejects it).
//! - The request line: `method SP target SP HTTP/1.DIGIT`, single spaces (400). The first line empty
//!   (a leading blank line, which RFC 9112 says a server SHOULD skip) ends the head at once: 400.
//! - A method other than `CONNECT` (case-sensitive) is 405.
//! - The target is authority-form `host:port` (400 otherwise): host an `[IPv6]` literal (RFC 4291 text,
//!   no zone), a dotted-quad IPv4, or a DNS name (labels of letters, digits and hyphens, 1 to 63
//!   bytes, not starting or ending with a hyphen, at most 253 bytes without one optional trailing dot,
//!   the last label not all digits so that `1.2.3` or `010.0.0.1` cannot pass as a name); port 1 to 5
//!   digits, 1..65535.
//! - Each field line is `name:` OWS value OWS, the name a token (no space before the colon, no line
//!   folding), the value visible ASCII, SP and HTAB (400 otherwise). `Proxy-Authorization` (any case)
//!   at most once (two are 400: which one counts would be a guess); its value without the OWS is kept.
//!   No Host field is required: the target carries the authority and clients (curl) send both.

use std::net::IpAddr;

use super::model_proxy::{ipv4_text, ipv6_text};

/// edgefwd's bound on a head, blank line included.
pub const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// Lower-cased, without the trailing dot.
    Name(String),
}

/// What the rules say about a byte string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Incomplete,
    Accept {
        len: usize,
        host: Host,
        port: u16,
        authorization: Option<String>,
    },
    Reject {
        status: u16,
        rule: &'static str,
    },
}

/// The model's answer for the first bytes of a CONNECT client's stream.
pub fn judge(input: &[u8]) -> Verdict {
    let Some(len) = head_end(input) else {
        return if input.len() >= MAX_HEAD {
            bad(431, "head-too-large")
        } else {
            Verdict::Incomplete
        };
    };
    let head = &input[..len];
    if let Err(rule) = check_bytes(head) {
        return bad(400, rule);
    }
    // Only ASCII is left, so the head is text; its lines without their terminators, the last one the
    // empty line that ended it.
    let text: String = head[..len - 1].iter().map(|&b| b as char).collect();
    let lines: Vec<&str> = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .collect();
    match judge_lines(&lines) {
        Ok((host, port, authorization)) => Verdict::Accept {
            len,
            host,
            port,
            authorization,
        },
        Err((status, rule)) => bad(status, rule),
    }
}

fn bad(status: u16, rule: &'static str) -> Verdict {
    Verdict::Reject { status, rule }
}

/// The length of the head up to the end of its first empty line, if that is within [`MAX_HEAD`].
fn head_end(input: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &byte) in input.iter().enumerate().take(MAX_HEAD) {
        if byte == b'\n' {
            let line = &input[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

fn check_bytes(head: &[u8]) -> Result<(), &'static str> {
    for (i, &byte) in head.iter().enumerate() {
        match byte {
            b'\r' if head.get(i + 1) != Some(&b'\n') => return Err("bare-cr"),
            b'\r' | b'\n' | b'\t' | 0x20..=0x7E => {}
            0x80..=0xFF => return Err("not-ascii"),
            _ => return Err("control-byte"),
        }
    }
    Ok(())
}

type Request = (Host, u16, Option<String>);

fn judge_lines(lines: &[&str]) -> Result<Request, (u16, &'static str)> {
    let request_line = lines[0];
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err((400, "request-line"));
    };
    if !is_token(method) || !is_version(version) {
        return Err((400, "request-line"));
    }
    if *method != "CONNECT" {
        return Err((405, "method"));
    }
    let (host, port) = authority(target).ok_or((400, "target"))?;
    let mut authorization = None;
    // The last line is the empty one that ended the head.
    for line in &lines[1..lines.len() - 1] {
        let (name, value) = field(line).ok_or((400, "field"))?;
        if name.eq_ignore_ascii_case("proxy-authorization") {
            if authorization.is_some() {
                return Err((400, "two-authorizations"));
            }
            authorization = Some(value.to_string());
        }
    }
    Ok((host, port, authorization))
}

/// RFC 9110 token characters.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// `HTTP/1.` and one digit (RFC 9112 section 2.3; edgefwd speaks HTTP/1.x only).
fn is_version(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 8 && bytes.starts_with(b"HTTP/1.") && bytes[7].is_ascii_digit()
}

fn authority(target: &str) -> Option<(Host, u16)> {
    let colon = target.rfind(':')?;
    let (host, port) = (&target[..colon], &target[colon + 1..]);
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = port
        .bytes()
        .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
    let port = u16::try_from(port).ok().filter(|&p| p != 0)?;
    let host = if let Some(inner) = host.strip_prefix('[') {
        Host::Ip(IpAddr::V6(ipv6_text(inner.strip_suffix(']')?)?))
    } else if let Some(v4) = ipv4_text(host) {
        Host::Ip(IpAddr::V4(v4))
    } else {
        Host::Name(dns_name(host)?)
    };
    Some((host, port))
}

fn dns_name(host: &str) -> Option<String> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let numeric_last = labels
        .last()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
    (labels.iter().all(label_ok) && !numeric_last).then(|| name.to_ascii_lowercase())
}

/// `name: value` with optional SP / HTAB around the value.
fn field(line: &str) -> Option<(&str, &str)> {
    let colon = line.find(':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    is_token(name).then(|| (name, value.trim_matches([' ', '\t'])))
}
