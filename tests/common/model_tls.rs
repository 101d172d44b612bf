//! A reference model of edgefwd's ClientHello rules (docs/tls-sni.md; RFC 8446, 5246, 6066, 7301),
//! for differential fuzzing of `edgefwd::wire::tls_hello::parse` (tests/tls_hello.rs). It shares no
//! code and no shape with the parser: the record layer is walked one byte at a time by a state machine
//! (the parser copies whole fragments), the hello's fields are read by index arithmetic (the parser
//! uses a cursor), extension types are remembered in a list (the parser uses a set), and the DNS name
//! is checked byte by byte (the parser splits labels).
//!
//! [`judge`] answers for any byte string: [`Verdict::Incomplete`] while nothing is broken and the hello
//! is not whole, [`Verdict::Accept`] with what routing reads, or [`Verdict::Reject`] with the label of
//! the first broken rule, as soon as the bytes present prove it broken.

/// edgefwd's bound on the hello's records, headers included.
pub const MAX_HELLO: usize = 16384;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Incomplete,
    Accept {
        len: usize,
        server_name: Option<String>,
        alpn: Vec<Vec<u8>>,
        ech: bool,
    },
    Reject(&'static str),
}

/// The record layer, one byte at a time.
enum At {
    /// Byte `i` of a record header starting at `start`.
    Header { start: usize, i: usize },
    /// Inside a record fragment with `left` bytes to go.
    Fragment { left: usize },
}

pub fn judge(input: &[u8]) -> Verdict {
    let mut message: Vec<u8> = Vec::new();
    // The handshake message's whole length (header included), once its 4 header bytes are in.
    let mut total: Option<usize> = None;
    // Message bytes before the current record, and the current record's fragment length.
    let mut before_record = 0;
    let mut fragment = 0;
    let mut state = At::Header { start: 0, i: 0 };
    let mut pos = 0;
    loop {
        match state {
            At::Header { start, i } => {
                if i == 0 && start + 5 >= MAX_HELLO {
                    return Verdict::Reject("too-long");
                }
                let Some(&byte) = input.get(pos) else {
                    return Verdict::Incomplete;
                };
                match i {
                    0 if byte != 22 => return Verdict::Reject("not-handshake"),
                    1 if byte != 3 => return Verdict::Reject("record-version"),
                    2 if !(1..=3).contains(&byte) => return Verdict::Reject("record-version"),
                    _ => {}
                }
                pos += 1;
                if i < 4 {
                    state = At::Header { start, i: i + 1 };
                    continue;
                }
                fragment = usize::from(input[start + 3]) * 256 + usize::from(byte);
                if fragment == 0 || fragment > 16384 {
                    return Verdict::Reject("record-length");
                }
                if start + 5 + fragment > MAX_HELLO {
                    return Verdict::Reject("too-long");
                }
                before_record = message.len();
                if let Some(total) = total {
                    if before_record + fragment > total {
                        return Verdict::Reject("trailing-data");
                    }
                }
                state = At::Fragment { left: fragment };
            }
            At::Fragment { left: 0 } => {
                if total == Some(message.len()) {
                    return accept(&message, pos);
                }
                state = At::Header { start: pos, i: 0 };
            }
            At::Fragment { left } => {
                let Some(&byte) = input.get(pos) else {
                    return Verdict::Incomplete;
                };
                pos += 1;
                message.push(byte);
                if message.len() == 1 && byte != 1 {
                    return Verdict::Reject("handshake-type");
                }
                if message.len() == 4 {
                    let body = (usize::from(message[1]) << 16)
                        + (usize::from(message[2]) << 8)
                        + usize::from(message[3]);
                    if 9 + body > MAX_HELLO {
                        return Verdict::Reject("too-long");
                    }
                    total = Some(4 + body);
                    if before_record + fragment > 4 + body {
                        return Verdict::Reject("trailing-data");
                    }
                }
                state = At::Fragment { left: left - 1 };
            }
        }
    }
}

fn accept(message: &[u8], len: usize) -> Verdict {
    match fields(&message[4..]) {
        Ok((server_name, alpn, ech)) => Verdict::Accept {
            len,
            server_name,
            alpn,
            ech,
        },
        Err(rule) => Verdict::Reject(rule),
    }
}

fn be16(b: &[u8], i: usize) -> usize {
    usize::from(b[i]) * 256 + usize::from(b[i + 1])
}

type Fields = (Option<String>, Vec<Vec<u8>>, bool);

/// The ClientHello body by index arithmetic: version, random, session id, suites, compression,
/// extensions.
fn fields(b: &[u8]) -> Result<Fields, &'static str> {
    if b.len() < 2 || b[0] != 3 || !(1..=3).contains(&b[1]) {
        return Err("hello-version");
    }
    let mut i = 34;
    if b.len() < i + 1 || usize::from(b[i]) > 32 || b.len() < i + 1 + usize::from(b[i]) {
        return Err("session-id");
    }
    i += 1 + usize::from(b[i]);
    if b.len() < i + 2 {
        return Err("cipher-suites");
    }
    let suites = be16(b, i);
    if suites == 0 || suites % 2 == 1 || b.len() < i + 2 + suites {
        return Err("cipher-suites");
    }
    i += 2 + suites;
    if b.len() < i + 1 {
        return Err("compression");
    }
    let methods = usize::from(b[i]);
    if b.len() < i + 1 + methods || !b[i + 1..i + 1 + methods].contains(&0) {
        return Err("compression");
    }
    i += 1 + methods;
    let mut out: Fields = (None, Vec::new(), false);
    if i == b.len() {
        return Ok(out);
    }
    if b.len() < i + 2 || i + 2 + be16(b, i) != b.len() {
        return Err("extensions");
    }
    i += 2;
    let mut seen: Vec<usize> = Vec::new();
    while i < b.len() {
        if b.len() < i + 4 || b.len() < i + 4 + be16(b, i + 2) {
            return Err("extensions");
        }
        let kind = be16(b, i);
        let data = &b[i + 4..i + 4 + be16(b, i + 2)];
        i += 4 + data.len();
        if seen.contains(&41) {
            return Err("psk-not-last");
        }
        if seen.contains(&kind) {
            return Err("duplicate-extension");
        }
        seen.push(kind);
        match kind {
            0 => out.0 = Some(host_name(data)?),
            16 => out.1 = protocols(data)?,
            0xfe0d => out.2 = true,
            _ => {}
        }
    }
    Ok(out)
}

fn host_name(data: &[u8]) -> Result<String, &'static str> {
    if data.len() < 5 || be16(data, 0) + 2 != data.len() || data[2] != 0 {
        return Err("server-name");
    }
    if be16(data, 3) + 5 != data.len() {
        return Err("server-name");
    }
    let name = &data[5..];
    if dns_ok(name) {
        Ok(name
            .iter()
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect())
    } else {
        Err("server-name-syntax")
    }
}

/// Byte by byte: labels of 1..=63 of `[A-Za-z0-9-]`, no hyphen at either end, at most 253 bytes in
/// all, no trailing dot, a last label not all digits.
fn dns_ok(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let mut label_len = 0;
    let mut label_digits = true;
    let mut previous = b'.';
    for &c in name {
        if c == b'.' {
            if label_len == 0 || previous == b'-' {
                return false;
            }
            label_len = 0;
            label_digits = true;
        } else {
            let letter = c.is_ascii_lowercase() || c.is_ascii_uppercase();
            if !(letter || c.is_ascii_digit() || c == b'-') || (c == b'-' && previous == b'.') {
                return false;
            }
            label_len += 1;
            label_digits &= c.is_ascii_digit();
            if label_len > 63 {
                return false;
            }
        }
        previous = c;
    }
    label_len > 0 && previous != b'-' && !label_digits
}

fn protocols(data: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    if data.len() < 3 || be16(data, 0) + 2 != data.len() {
        return Err("alpn");
    }
    let mut names = Vec::new();
    let mut i = 2;
    while i < data.len() {
        let n = usize::from(data[i]);
        if n == 0 || i + 1 + n > data.len() {
            return Err("alpn");
        }
        names.push(data[i + 1..i + 1 + n].to_vec());
        i += 1 + n;
    }
    Ok(names)
}
