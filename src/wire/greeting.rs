//! What a client must send before its bytes are forwarded: a PROXY protocol header (`--accept-proxy`),
//! an HTTP CONNECT head (`--mode connect`), or both in that order. No I/O: the pair reads the client's
//! first bytes into [`Greeting`] and asks [`Greeting::advance`] what they amount to.
//!
//! | stage     | bytes so far                         | verdict                                       |
//! |-----------|--------------------------------------|-----------------------------------------------|
//! | `Proxy`   | a prefix of a PROXY header           | `More`                                        |
//! | `Proxy`   | a whole header                       | addresses kept; on to `Connect`, or `Ready`    |
//! | `Proxy`   | not a header, or a broken one        | `BadProxyHeader(reason)`: on to `Refused`      |
//! | `Proxy`   | (the pair: timeout, client gone)     | [`Greeting::give_up`]: on to `Refused`         |
//! | `Refused` | -                                    | the pair closes; the reason is counted         |
//! | `Connect` | no blank line yet, under 8 KiB       | `More`                                        |
//! | `Connect` | a bad head, a denied destination...  | `Answer(status)`: the status, then close       |
//! | `Connect` | a CONNECT to an allowed IP literal   | `Ready(Direct(addr))`                          |
//! | `Connect` | a CONNECT to an allowed host name    | `Ready(Named("host:port"))`: looked up first   |
//!
//! The buffer never holds more than the stage's bound (PROXY: 1 KiB, CONNECT: 8 KiB): the pair reads at
//! most [`Greeting::room`] bytes, so a client that pipelines a large upload leaves it in the kernel, to
//! be read by the normal pump. Whatever follows the header in the buffer is returned as `leftover`, to be
//! forwarded before anything else.
//!
//! A host name is matched against the allow-list as a name, before anything is resolved; the reactor
//! then has it looked up off the loop ([`crate::reactor::worker::Lookup`]) and connects to its first address, or
//! to the next when that fails (`Pair::on_looked`).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::wire::allow::AllowList;
use crate::wire::connect_request::{self, Head, Host, Status};
use crate::wire::proxy_protocol::{self, CarriedTlvs, Parsed, Reason};

/// A route's greeting settings, shared by its pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rules {
    /// Expect a PROXY protocol header first.
    pub(crate) accept_proxy: bool,
    /// The TLVs of that header to keep for the upstream's (`--send-proxy-tlvs`).
    pub(crate) carry_tlvs: CarriedTlvs,
    /// Expect a CONNECT head: the tunnel's rules.
    pub(crate) connect: Option<ConnectRules>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectRules {
    pub(crate) allow: AllowList,
    /// The `Proxy-Authorization` value required (`Basic ...`), if any.
    pub(crate) credentials: Option<String>,
}

/// Where the pair's upstream connect goes once the greeting is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// An upstream of the route, from its balancer (`--accept-proxy` in forward mode).
    Balanced,
    /// The CONNECT destination, an IP literal.
    Direct(SocketAddr),
    /// The CONNECT destination, `HOST:PORT` with a host name: resolved off the loop first.
    Named(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Balanced => f.write_str("an upstream of the route"),
            Target::Direct(addr) => write!(f, "{addr}"),
            Target::Named(host_port) => f.write_str(host_port),
        }
    }
}

/// What the bytes so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Read more.
    More,
    /// Done: connect to `target`, then forward `leftover` before anything else the client sends.
    Ready { target: Target, leftover: Vec<u8> },
    /// Answer with this status and close (connect mode).
    Answer(Status, String),
    /// Close at once without an answer: the PROXY header broke a rule ([`Greeting::refused`] says which
    /// from now on).
    BadProxyHeader(Reason),
    /// Close without an answer, logging the reason (cannot happen: a parser decides within its bound).
    Drop(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Proxy,
    Connect,
    /// The PROXY header was refused, or never finished: the pair closes, counting this reason.
    Refused(Reason),
}

/// A greeting in progress.
#[derive(Debug)]
pub(crate) struct Greeting {
    rules: Arc<Rules>,
    stage: Stage,
    buf: Vec<u8>,
    /// The addresses a PROXY header carried (`None`: none was expected, or it carried none).
    pub(crate) source: Option<SocketAddr>,
    pub(crate) destination: Option<SocketAddr>,
    /// The TLVs of the PROXY header to repeat upstream, whole (type, length, value), at most the
    /// header's 1 KiB: held from the header until the pair builds the upstream's.
    pub(crate) carried_tlvs: Vec<u8>,
}

impl Greeting {
    pub(crate) fn new(rules: Arc<Rules>) -> Greeting {
        let stage = if rules.accept_proxy {
            Stage::Proxy
        } else {
            Stage::Connect
        };
        Greeting {
            rules,
            stage,
            buf: Vec::new(),
            source: None,
            destination: None,
            carried_tlvs: Vec::new(),
        }
    }

    /// True when the route's clients must answer a status (connect mode) rather than be dropped.
    pub(crate) fn answers(&self) -> bool {
        self.rules.connect.is_some()
    }

    /// How many more bytes the current stage may buffer.
    pub(crate) fn room(&self) -> usize {
        let bound = match self.stage {
            Stage::Proxy => proxy_protocol::MAX_HEADER,
            Stage::Connect => connect_request::MAX_HEAD,
            Stage::Refused(_) => 0,
        };
        bound.saturating_sub(self.buf.len())
    }

    /// What the greeting is reading now (`"PROXY header"`, `"CONNECT head"`), how many bytes of it have
    /// arrived and how many it may take at most: a stuck greeting's diagnosis.
    pub(crate) fn progress(&self) -> (&'static str, usize, usize) {
        let read = self.buf.len();
        match self.stage {
            Stage::Proxy | Stage::Refused(_) => ("PROXY header", read, proxy_protocol::MAX_HEADER),
            Stage::Connect => ("CONNECT head", read, connect_request::MAX_HEAD),
        }
    }

    /// Appends bytes read from the client.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Why the PROXY header failed, once it has: refused by the parser, or given up by the pair.
    pub(crate) fn refused(&self) -> Option<Reason> {
        match self.stage {
            Stage::Refused(reason) => Some(reason),
            Stage::Proxy | Stage::Connect => None,
        }
    }

    /// The pair gives up on a greeting (`reason`: its timeout, or the client left). Only a greeting still
    /// waiting for its PROXY header is marked refused: a CONNECT head's failures are not the header's.
    pub(crate) fn give_up(&mut self, reason: Reason) {
        if self.stage == Stage::Proxy {
            self.stage = Stage::Refused(reason);
            self.buf = Vec::new();
        }
    }

    /// Runs the stages over what has arrived.
    pub(crate) fn advance(&mut self) -> Verdict {
        if let Stage::Refused(reason) = self.stage {
            return Verdict::BadProxyHeader(reason);
        }
        if self.stage == Stage::Proxy {
            match proxy_protocol::parse(&self.buf) {
                Parsed::Incomplete => return Verdict::More,
                Parsed::Invalid(reason) => {
                    self.give_up(reason);
                    return Verdict::BadProxyHeader(reason);
                }
                Parsed::Done {
                    header_len,
                    source,
                    destination,
                    tlvs,
                } => {
                    self.carried_tlvs = self.rules.carry_tlvs.copy_from(&self.buf, &tlvs);
                    self.buf.drain(..header_len);
                    self.source = source;
                    self.destination = destination;
                    match self.rules.connect {
                        Some(_) => self.stage = Stage::Connect,
                        None => return self.ready(Target::Balanced, 0),
                    }
                }
            }
        }
        let Some(rules) = self.rules.connect.clone() else {
            return Verdict::Drop(String::from("no greeting expected"));
        };
        match connect_request::parse(&self.buf) {
            Head::Incomplete => Verdict::More,
            Head::Refuse(status) => Verdict::Answer(status, String::from("bad request head")),
            Head::Done { len, request } => self.decide(&rules, len, request),
        }
    }

    /// Credentials, then the allow-list (a host name as a name, before any lookup), then where to connect.
    fn decide(
        &mut self,
        rules: &ConnectRules,
        head_len: usize,
        request: connect_request::Request,
    ) -> Verdict {
        let destination = match &request.host {
            Host::Ip(ip) => format!("{}", SocketAddr::new(*ip, request.port)),
            Host::Name(name) => format!("{name}:{}", request.port),
        };
        if let Some(expected) = rules.credentials.as_deref() {
            if !connect_request::authorized(request.authorization.as_deref(), expected) {
                let why = match request.authorization {
                    Some(_) => "wrong credentials",
                    None => "no credentials",
                };
                return Verdict::Answer(Status::AuthRequired, format!("{why} for {destination}"));
            }
        }
        if !rules.allow.allows(&request.host, request.port) {
            return Verdict::Answer(
                Status::Forbidden,
                format!("{destination} is not in the allow-list"),
            );
        }
        match request.host {
            Host::Ip(ip) => self.ready(Target::Direct(SocketAddr::new(ip, request.port)), head_len),
            Host::Name(_) => self.ready(Target::Named(destination), head_len),
        }
    }

    fn ready(&mut self, target: Target, consumed: usize) -> Verdict {
        let leftover = self.buf.split_off(consumed);
        self.buf.clear();
        Verdict::Ready { target, leftover }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proxy_protocol::{encode, Version};

    fn rules(accept_proxy: bool, allow: &[&str], credentials: Option<&str>) -> Arc<Rules> {
        let connect = (!allow.is_empty()).then(|| ConnectRules {
            allow: AllowList::new(allow.iter().map(|r| r.parse().expect(r)).collect()),
            credentials: credentials.map(connect_request::basic_credentials),
        });
        Arc::new(Rules {
            accept_proxy,
            carry_tlvs: CarriedTlvs::default(),
            connect,
        })
    }

    fn feed(greeting: &mut Greeting, bytes: &[u8]) -> Verdict {
        greeting.extend(bytes);
        greeting.advance()
    }

    #[test]
    fn test_connect_ready_keeps_pipelined_bytes() {
        let mut g = Greeting::new(rules(false, &["127.0.0.0/8:*"], None));
        assert_eq!(
            feed(&mut g, b"CONNECT 127.0.0.1:80 HTTP/1.1\r\n"),
            Verdict::More
        );
        assert_eq!(
            feed(&mut g, b"\r\nhello"),
            Verdict::Ready {
                target: Target::Direct("127.0.0.1:80".parse().expect("addr")),
                leftover: b"hello".to_vec()
            }
        );
    }

    #[test]
    fn test_connect_to_an_allowed_name_is_looked_up() {
        let mut g = Greeting::new(rules(false, &[".example.com:443"], None));
        assert_eq!(
            feed(&mut g, b"CONNECT A.Example.com:443 HTTP/1.1\r\n\r\nhello"),
            Verdict::Ready {
                target: Target::Named("a.example.com:443".into()),
                leftover: b"hello".to_vec()
            }
        );
    }

    #[test]
    fn test_connect_statuses() {
        let answer = |rules: Arc<Rules>, input: &[u8]| match feed(&mut Greeting::new(rules), input)
        {
            Verdict::Answer(status, _) => status.code(),
            other => panic!("{other:?}"),
        };
        let open = || rules(false, &["10.0.0.0/8:443", ".example.com:443"], None);
        assert_eq!(
            answer(open(), b"CONNECT 11.0.0.1:443 HTTP/1.1\r\n\r\n"),
            403
        );
        assert_eq!(answer(open(), b"CONNECT 10.0.0.1:80 HTTP/1.1\r\n\r\n"), 403);
        assert_eq!(answer(open(), b"GET / HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(
            answer(open(), b"CONNECT a.example.org:443 HTTP/1.1\r\n\r\n"),
            403
        );
        let auth = || rules(false, &["*:*"], Some("u:p"));
        assert_eq!(answer(auth(), b"CONNECT 10.0.0.1:1 HTTP/1.1\r\n\r\n"), 407);
        assert_eq!(
            answer(
                auth(),
                b"CONNECT 10.0.0.1:1 HTTP/1.1\r\nProxy-Authorization: Basic dTp4\r\n\r\n"
            ),
            407
        );
        let ok = feed(
            &mut Greeting::new(auth()),
            b"CONNECT 10.0.0.1:1 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
        );
        assert!(matches!(ok, Verdict::Ready { .. }), "{ok:?}");
    }

    #[test]
    fn test_proxy_header_then_forward() {
        let mut g = Greeting::new(rules(true, &[], None));
        let header = encode(
            Version::V2,
            "192.0.2.9:4000".parse().expect("addr"),
            "10.0.0.1:80".parse().expect("addr"),
        );
        assert_eq!(feed(&mut g, &header[..10]), Verdict::More);
        let rest = [&header[10..], b"data"].concat();
        assert_eq!(
            feed(&mut g, &rest),
            Verdict::Ready {
                target: Target::Balanced,
                leftover: b"data".to_vec()
            }
        );
        assert_eq!(g.source, Some("192.0.2.9:4000".parse().expect("addr")));
    }

    #[test]
    fn test_proxy_header_refused_stays_refused() {
        let mut g = Greeting::new(rules(true, &[], None));
        assert_eq!(
            feed(&mut g, b"GET / HTTP/1.1\r\n"),
            Verdict::BadProxyHeader(Reason::Signature)
        );
        assert_eq!(g.refused(), Some(Reason::Signature));
        assert_eq!(g.room(), 0);
        g.give_up(Reason::Timeout); // the first reason stands
        assert_eq!(g.refused(), Some(Reason::Signature));
    }

    #[test]
    fn test_give_up_marks_only_a_pending_proxy_header() {
        let mut waiting = Greeting::new(rules(true, &["*:*"], None));
        assert_eq!(feed(&mut waiting, b"PROXY TCP4 1.2"), Verdict::More);
        waiting.give_up(Reason::ClientClosed);
        assert_eq!(waiting.refused(), Some(Reason::ClientClosed));
        let mut past_it = Greeting::new(rules(true, &["*:*"], None));
        assert_eq!(feed(&mut past_it, b"PROXY UNKNOWN\r\nCONN"), Verdict::More);
        past_it.give_up(Reason::Timeout);
        assert_eq!(past_it.refused(), None);
        let mut connect_only = Greeting::new(rules(false, &["*:*"], None));
        connect_only.give_up(Reason::Timeout);
        assert_eq!(connect_only.refused(), None);
    }

    /// `--send-proxy-tlvs`: the TLVs asked for are kept from the header (not the others); a v1 header
    /// has none to keep.
    #[test]
    fn test_proxy_header_tlvs_kept_for_upstream() {
        let carrying = |list: &str| {
            Arc::new(Rules {
                accept_proxy: true,
                carry_tlvs: CarriedTlvs::parse_list(list).expect("list"),
                connect: None,
            })
        };
        let mut header = encode(
            Version::V2,
            "192.0.2.9:4000".parse().expect("addr"),
            "10.0.0.1:80".parse().expect("addr"),
        );
        let alpn = [0x01, 0x00, 0x02, b'h', b'2'];
        let authority = [0x02, 0x00, 0x01, b'a'];
        header.extend_from_slice(&[alpn.as_slice(), &authority].concat());
        header[14..16].copy_from_slice(&(12u16 + 9).to_be_bytes());
        let mut g = Greeting::new(carrying("alpn"));
        assert!(matches!(
            feed(&mut g, &[header.as_slice(), b"data"].concat()),
            Verdict::Ready { .. }
        ));
        assert_eq!(g.carried_tlvs, alpn);
        let mut v1 = Greeting::new(carrying("alpn,authority,unique_id"));
        assert!(matches!(
            feed(&mut v1, b"PROXY TCP4 192.0.2.1 127.0.0.1 5 6\r\n"),
            Verdict::Ready { .. }
        ));
        assert!(v1.carried_tlvs.is_empty());
    }

    #[test]
    fn test_proxy_header_then_connect() {
        let mut g = Greeting::new(rules(true, &["127.0.0.1:*"], None));
        let input = b"PROXY TCP4 192.0.2.1 127.0.0.1 5 6\r\nCONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n";
        assert!(matches!(feed(&mut g, input), Verdict::Ready { .. }));
        assert_eq!(g.source, Some("192.0.2.1:5".parse().expect("addr")));
    }

    /// Property (fuzzed): a greeting with both stages, fed any bytes in random pieces, never panics,
    /// never buffers past its stage's bound, and never returns more leftover than it was given.
    #[test]
    fn test_property_any_bytes_in_any_pieces() {
        fn check(input: &[u8]) {
            let mut g = Greeting::new(rules(
                true,
                &["127.0.0.0/8:*", ".example.com:443"],
                Some("u:p"),
            ));
            let mut fed = 0;
            let mut pieces = crate::fuzz::Gen::new(input.len() as u64 + 1);
            while fed < input.len() {
                let take = (1 + pieces.below(64)).min(input.len() - fed).min(g.room());
                if take == 0 {
                    panic!("room exhausted while the greeting wants more");
                }
                g.extend(&input[fed..fed + take]);
                fed += take;
                match g.advance() {
                    Verdict::More => assert!(g.room() > 0, "More with no room left"),
                    Verdict::Ready { leftover, .. } => {
                        assert!(leftover.len() <= fed);
                        return;
                    }
                    Verdict::Answer(status, _) => {
                        assert!(status.code() >= 400);
                        return;
                    }
                    Verdict::BadProxyHeader(_) | Verdict::Drop(_) => return,
                }
            }
        }
        let seeds = vec![
            b"PROXY TCP4 192.0.2.1 127.0.0.1 5 6\r\nCONNECT 127.0.0.1:9 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\nxyz".to_vec(),
            [
                encode(Version::V2, "10.0.0.1:1".parse().expect("addr"), "10.0.0.2:2".parse().expect("addr")),
                b"CONNECT a.example.com:443 HTTP/1.1\r\n\r\n".to_vec(),
            ]
            .concat(),
            b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        ];
        assert!(crate::fuzz::fuzz_budget("greeting", &seeds, check) > 0);
    }

    #[test]
    fn test_room_is_bounded_per_stage() {
        let mut g = Greeting::new(rules(true, &["*:*"], None));
        assert_eq!(g.room(), proxy_protocol::MAX_HEADER);
        assert_eq!(feed(&mut g, b"PROXY UNKNOWN\r\nCONN"), Verdict::More);
        assert_eq!(g.room(), connect_request::MAX_HEAD - 4);
    }
}
