//! The head of an HTTP `CONNECT` request (`--mode connect`), and the status lines edgefwd answers with.
//! Pure: no I/O.
//!
//! [`parse`] is given whatever the client has sent so far and answers [`Head::Incomplete`] until the
//! blank line that ends the head; bytes after it (a TLS ClientHello the client pipelined, say) are not
//! looked at and belong to the tunnel. A head longer than [`MAX_HEAD`] is refused (431) rather than
//! buffered, so a client cannot make a pair hold more than that.
//!
//! Only what a tunnel needs is checked, strictly: the request line (`CONNECT host:port HTTP/1.x`),
//! header lines of the form `name: value` with visible ASCII values, and at most one
//! `Proxy-Authorization` header; no bare CR, no control byte, no byte >= 0x80. Anything else is a 400,
//! a method other than `CONNECT` a 405. tests/common/model_connect.rs states the same grammar as a
//! reference model, and tests/difffuzz.rs checks the two agree.

use std::net::IpAddr;

/// Longest request head accepted, blank line included.
pub const MAX_HEAD: usize = 8 * 1024;

/// The answers edgefwd gives on a CONNECT listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200: the tunnel is open.
    Established,
    /// 400: not a well-formed request head.
    BadRequest,
    /// 403: the destination is outside the allow-list.
    Forbidden,
    /// 405: a method other than CONNECT.
    MethodNotAllowed,
    /// 407: credentials are required and missing or wrong.
    AuthRequired,
    /// 408: the head did not arrive within `--header-timeout`.
    RequestTimeout,
    /// 431: the head is longer than [`MAX_HEAD`].
    HeaderTooLarge,
    /// 502: the destination refused or failed the connect.
    BadGateway,
    /// 504: the destination did not answer within `--connect-timeout`.
    GatewayTimeout,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Established => 200,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::MethodNotAllowed => 405,
            Status::AuthRequired => 407,
            Status::RequestTimeout => 408,
            Status::HeaderTooLarge => 431,
            Status::BadGateway => 502,
            Status::GatewayTimeout => 504,
        }
    }

    /// The whole response: a status line and the few headers each one needs. Errors say
    /// `Connection: close` because the connection is closed once they are written.
    pub fn response(self) -> &'static [u8] {
        match self {
            Status::Established => b"HTTP/1.1 200 Connection Established\r\n\r\n",
            Status::BadRequest => {
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Status::Forbidden => {
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Status::MethodNotAllowed => b"HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            Status::AuthRequired => b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"edgefwd\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            Status::RequestTimeout => {
                b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Status::HeaderTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            Status::BadGateway => {
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Status::GatewayTimeout => {
                b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
        }
    }
}

/// Where the client asks to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A name, lower-cased, without a trailing dot.
    Name(String),
}

/// A parsed CONNECT request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub host: Host,
    pub port: u16,
    /// The `Proxy-Authorization` value, as sent.
    pub authorization: Option<String>,
}

/// What [`parse`] made of the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// No blank line yet, and still within [`MAX_HEAD`]: read more.
    Incomplete,
    /// A whole head of `len` bytes.
    Done { len: usize, request: Request },
    /// Refuse with this status and close.
    Refuse(Status),
}

/// Parses the request head at the start of `input`.
pub fn parse(input: &[u8]) -> Head {
    let Some(end) = head_end(input) else {
        return if input.len() >= MAX_HEAD {
            Head::Refuse(Status::HeaderTooLarge)
        } else {
            Head::Incomplete
        };
    };
    match parse_head(&input[..end]) {
        Ok(request) => Head::Done { len: end, request },
        Err(status) => Head::Refuse(status),
    }
}

/// Length of the head up to the end of its first empty line, if that ends within [`MAX_HEAD`]. Lines
/// end in LF; a CR right before it is part of the terminator (RFC 9112 section 2.2 lets a recipient
/// take a bare LF as a line end, so `\r\n\r\n`, `\n\n`, `\n\r\n` and `\r\n\n` all end a head).
fn head_end(input: &[u8]) -> Option<usize> {
    let window = &input[..input.len().min(MAX_HEAD)];
    let mut line_start = 0;
    for (i, _) in window.iter().enumerate().filter(|&(_, &b)| b == b'\n') {
        if matches!(&window[line_start..i], b"" | b"\r") {
            return Some(i + 1);
        }
        line_start = i + 1;
    }
    None
}

/// The whole head, its last line the empty one that ended it.
fn parse_head(head: &[u8]) -> Result<Request, Status> {
    if !plain_ascii(head) {
        return Err(Status::BadRequest);
    }
    let text = std::str::from_utf8(&head[..head.len() - 1]).map_err(|_| Status::BadRequest)?;
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().ok_or(Status::BadRequest)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    if !is_token(method) || !is_http1(version) {
        return Err(Status::BadRequest);
    }
    if method != "CONNECT" {
        return Err(Status::MethodNotAllowed);
    }
    let (host, port) = parse_authority(target).ok_or(Status::BadRequest)?;
    let mut authorization = None;
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(Status::BadRequest)?;
        if !is_token(name) {
            return Err(Status::BadRequest);
        }
        if name.eq_ignore_ascii_case("proxy-authorization") {
            if authorization.is_some() {
                // Two sets of credentials: which one a next hop would use is a guess.
                return Err(Status::BadRequest);
            }
            authorization = Some(value.trim_matches([' ', '\t']).to_string());
        }
    }
    Ok(Request {
        host,
        port,
        authorization,
    })
}

/// Visible ASCII, SP and HTAB, and CR only right before LF: RFC 9112 forbids a bare CR and RFC 9110
/// NUL and the other controls; bytes >= 0x80 (obs-text, which RFC 9110 still tolerates in field
/// values) are refused too, since no header edgefwd reads may carry them.
fn plain_ascii(head: &[u8]) -> bool {
    head.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => head.get(i + 1) == Some(&b'\n'),
        b'\n' | b'\t' | 0x20..=0x7E => true,
        _ => false,
    })
}

/// `HTTP/1.` and a digit (RFC 9112 section 2.3: HTTP-version is `HTTP/DIGIT.DIGIT`).
fn is_http1(version: &str) -> bool {
    version.len() == 8
        && version.starts_with("HTTP/1.")
        && version.bytes().last().is_some_and(|b| b.is_ascii_digit())
}

/// An RFC 9110 token: the characters a method or a header name may have.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `host:port` or `[v6]:port`; the port is required and not 0.
fn parse_authority(target: &str) -> Option<(Host, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    let host = if let Some(inner) = host.strip_prefix('[') {
        Host::Ip(IpAddr::V6(inner.strip_suffix(']')?.parse().ok()?))
    } else if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        Host::Ip(IpAddr::V4(ip))
    } else {
        Host::Name(parse_name(host)?)
    };
    Some((host, port))
}

/// A DNS name: labels of letters, digits and hyphens, 1..63 each, 253 in all.
fn parse_name(host: &str) -> Option<String> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    // A last label of digits only is no host name (RFC 3696 section 2); refusing it keeps `127.1` or
    // `010.0.0.1`, which the resolver would read as IPv4 addresses, from passing as names.
    let numeric_last = name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
    let valid = !name.is_empty()
        && !numeric_last
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    valid.then_some(name)
}

/// The `Proxy-Authorization` value that `USER:PASS` must be sent as: `Basic base64(USER:PASS)`.
pub(crate) fn basic_credentials(user_pass: &str) -> String {
    format!("Basic {}", base64(user_pass.as_bytes()))
}

/// Whether `sent` (the header's value) carries exactly the credentials `expected` (from
/// [`basic_credentials`]). The scheme is matched without regard to case, as RFC 9110 says; the
/// comparison looks at every byte so that its time does not depend on where a guess goes wrong.
pub(super) fn authorized(sent: Option<&str>, expected: &str) -> bool {
    let Some(sent) = sent else {
        return false;
    };
    let (Some((scheme, token)), Some((_, want))) = (sent.split_once(' '), expected.split_once(' '))
    else {
        return false;
    };
    let token = token.trim();
    scheme.eq_ignore_ascii_case("basic")
        && token.len() == want.len()
        && token
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::{fuzz_budget, Gen};

    fn done(input: &[u8]) -> (usize, Request) {
        match parse(input) {
            Head::Done { len, request } => (len, request),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn test_connect_with_headers_and_pipelined_bytes() {
        let head = b"CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n";
        let input = [head.as_slice(), b"\x16\x03\x01"].concat();
        let (len, request) = done(&input);
        assert_eq!(len, head.len());
        assert_eq!(request.host, Host::Ip("10.0.0.1".parse().expect("ip")));
        assert_eq!(request.port, 443);
        assert_eq!(request.authorization.as_deref(), Some("Basic dTpw"));
    }

    #[test]
    fn test_names_and_ipv6() {
        let (_, r) = done(b"CONNECT Example.COM.:8443 HTTP/1.0\r\n\r\n");
        assert_eq!((r.host, r.port), (Host::Name("example.com".into()), 8443));
        let (_, r) = done(b"CONNECT [::1]:22 HTTP/1.1\n\n");
        assert_eq!(r.host, Host::Ip("::1".parse().expect("ip")));
    }

    #[test]
    fn test_incomplete_until_blank_line() {
        let full = b"CONNECT a.b:1 HTTP/1.1\r\nX: y\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Head::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn test_statuses() {
        let refuse = |input: &[u8]| match parse(input) {
            Head::Refuse(status) => status.code(),
            other => panic!("{other:?}"),
        };
        assert_eq!(refuse(b"GET / HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(refuse(b"POST http://x/ HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(refuse(b"CONNECT x HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refuse(b"CONNECT x:0 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refuse(b"CONNECT x:99999 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refuse(b"CONNECT x:1 HTTP/2\r\n\r\n"), 400);
        assert_eq!(refuse(b"CONNECT  x:1 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refuse(b"CONNECT x:1 HTTP/1.1\r\nno colon\r\n\r\n"), 400);
        assert_eq!(refuse(b"CONNECT bad_host!:1 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refuse(b"CONNECT [::1:1 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refuse(b"\xff\xfe\r\n\r\n"), 400);
        assert_eq!(refuse(b"\r\n\r\n"), 400);
        assert_eq!(refuse(b"CONNECT x:1 HTTP/1.x\r\n\r\n"), 400);
        assert_eq!(refuse(b"CONNECT 127.1:1 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refuse(b"CONNECT x:1 HTTP/1.1\r\nX: a\rb\r\n\r\n"), 400);
        assert_eq!(refuse(b"CONNECT x:1 HTTP/1.1\r\nX: \x01\r\n\r\n"), 400);
        assert_eq!(
            refuse(b"CONNECT x:1 HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n"),
            400
        );
        let two =
            b"CONNECT x:1 HTTP/1.1\r\nProxy-Authorization: a\r\nproxy-authorization: b\r\n\r\n";
        assert_eq!(refuse(two), 400);
        assert_eq!(done(b"CONNECT x:1 HTTP/1.1\nX: y\n\r\nrest").0, 28);
        let big = [b"CONNECT x:1 HTTP/1.1\r\nX: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(refuse(&big), 431);
        let big_done = [big.as_slice(), b"\r\n\r\n"].concat();
        assert_eq!(refuse(&big_done), 431);
    }

    #[test]
    fn test_basic_credentials() {
        // RFC 7617's example.
        let expected = basic_credentials("Aladdin:open sesame");
        assert_eq!(expected, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(authorized(
            Some("basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            &expected
        ));
        assert!(!authorized(
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZR=="),
            &expected
        ));
        assert!(!authorized(
            Some("Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            &expected
        ));
        assert!(!authorized(None, &expected));
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    /// Property: a well-formed request for any port and address parses back to it, whatever follows.
    #[test]
    fn test_property_round_trip() {
        let mut g = Gen::new(0x5eed_0002);
        for _ in 0..20_000 {
            let port = 1 + g.below(65535) as u16;
            let (target, host) = if g.below(2) == 0 {
                let ip = std::net::Ipv4Addr::from(g.next() as u32);
                (format!("{ip}:{port}"), Host::Ip(IpAddr::V4(ip)))
            } else {
                let ip =
                    std::net::Ipv6Addr::from(u128::from(g.next()) << 64 | u128::from(g.next()));
                (format!("[{ip}]:{port}"), Host::Ip(IpAddr::V6(ip)))
            };
            let head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            let input = [head.as_bytes(), &g.bytes(32)].concat();
            let (len, request) = done(&input);
            assert_eq!((len, request.host, request.port), (head.len(), host, port));
        }
    }

    /// Property: any bytes get an answer without a panic; `Done` never claims more than it was given or
    /// more than the bound, and `Incomplete` only while below the bound.
    #[test]
    fn test_property_mutations_never_panic_or_overrun() {
        assert!(fuzz_budget("connect_request", &seeds(), check_invariants) > 0);
    }

    fn seeds() -> Vec<Vec<u8>> {
        vec![
            b"CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\nProxy-Authorization: Basic dTpw\r\n\r\nxyz".to_vec(),
            b"CONNECT example.com:443 HTTP/1.1\r\n\r\n".to_vec(),
            b"CONNECT [::1]:22 HTTP/1.0\n\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ]
    }

    fn check_invariants(input: &[u8]) {
        match parse(input) {
            Head::Done { len, .. } => {
                assert!(
                    len <= input.len() && len <= MAX_HEAD,
                    "overrun on {input:?}"
                )
            }
            Head::Incomplete => assert!(input.len() < MAX_HEAD),
            Head::Refuse(status) => assert!(status.code() >= 400),
        }
    }
}
