//! What a client must send before its bytes are forwarded: a PROXY protocol header (`--accept-proxy`),
//! an HTTP CONNECT head (`--mode connect`), or a TLS ClientHello (a listener of SNI routing), the
//! header first when there is one. No I/O: the pair reads the client's first bytes into [`Greeting`]
//! and asks [`Greeting::advance`] what they amount to.
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
//! | `Hello`   | a prefix of a ClientHello            | `More`                                        |
//! | `Hello`   | a hello a route takes                | `Ready(Routed)`: every byte read is leftover  |
//! | `Hello`   | a hello no route takes, no default   | `NoRoute`: the `unrecognized_name` alert, close |
//! | `Hello`   | not a ClientHello (a rule broken)    | `BadHello(reason)`: close, nothing sent        |
//!
//! The buffer never holds more than the stage's bound (PROXY: 1 KiB, CONNECT: 8 KiB, ClientHello:
//! 16 KiB): the pair reads at
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
use crate::wire::proxy_protocol::{self, CarriedTlvs, Parsed, Reason, Version};
use crate::wire::sni::{self, Via};
use crate::wire::tls_hello;

/// A route's greeting settings, shared by its pairs (or a shared listener's, for SNI routing).
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// Expect a PROXY protocol header first.
    pub(crate) accept_proxy: bool,
    /// The TLVs of that header to keep for the upstream's (`--send-proxy-tlvs`).
    pub(crate) carry_tlvs: CarriedTlvs,
    /// Expect a CONNECT head: the tunnel's rules.
    pub(crate) connect: Option<ConnectRules>,
    /// Expect a TLS ClientHello, read without consuming it: the routes its server name chooses among.
    pub(crate) sni: Option<SniRules>,
}

/// SNI routing on one listener: which of its routes a ClientHello is for.
#[derive(Debug, Clone)]
pub(crate) struct SniRules {
    /// Patterns to an index of `routes`.
    pub(crate) table: sni::Table<usize>,
    pub(crate) routes: Vec<Choice>,
}

/// A route a ClientHello may choose, with what the pair needs of it before it moves there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    /// The route's name (names are unique; the reactor finds the route by it).
    pub(crate) route: String,
    /// Its `--send-proxy`: the header goes upstream before the hello.
    pub(crate) send_proxy: Option<Version>,
}

/// A ClientHello's route, as chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Routed {
    pub(crate) choice: Choice,
    /// The hello's server name, lowercased (`None`: it had none, or was ECH).
    pub(crate) server_name: Option<String>,
    /// Chosen by that name, or as the default.
    pub(crate) via: Via,
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
    /// An upstream of the route a ClientHello chose (SNI routing): the pair moves there first.
    Routed(Box<Routed>),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Balanced => f.write_str("an upstream of the route"),
            Target::Direct(addr) => write!(f, "{addr}"),
            Target::Named(host_port) => f.write_str(host_port),
            Target::Routed(routed) => write!(f, "an upstream of route {}", routed.choice.route),
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
    /// Close at once, nothing sent anywhere: the bytes are not a ClientHello edgefwd routes.
    BadHello(tls_hello::Reason),
    /// A ClientHello no route takes and no default: answer the `unrecognized_name` alert, then close.
    NoRoute(Option<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Proxy,
    Connect,
    /// Reading a ClientHello (SNI routing).
    Hello,
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
            Greeting::after_proxy(&rules)
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

    /// What follows the PROXY header (or comes first without one).
    fn after_proxy(rules: &Rules) -> Stage {
        if rules.sni.is_some() {
            Stage::Hello
        } else {
            Stage::Connect
        }
    }

    /// Whether the greeting is (still) waiting for a ClientHello: a timeout or a client leaving now is
    /// a rejected hello.
    pub(crate) fn reading_hello(&self) -> bool {
        self.stage == Stage::Hello
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
            Stage::Hello => tls_hello::MAX_HELLO,
            Stage::Refused(_) => 0,
        };
        bound.saturating_sub(self.buf.len())
    }

    /// What the greeting is reading now (`"PROXY header"`, `"CONNECT head"`, `"TLS ClientHello"`), how many bytes of it have
    /// arrived and how many it may take at most: a stuck greeting's diagnosis.
    pub(crate) fn progress(&self) -> (&'static str, usize, usize) {
        let read = self.buf.len();
        match self.stage {
            Stage::Proxy | Stage::Refused(_) => ("PROXY header", read, proxy_protocol::MAX_HEADER),
            Stage::Connect => ("CONNECT head", read, connect_request::MAX_HEAD),
            Stage::Hello => ("TLS ClientHello", read, tls_hello::MAX_HELLO),
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
            Stage::Proxy | Stage::Connect | Stage::Hello => None,
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
                    match (&self.rules.connect, &self.rules.sni) {
                        (None, None) => return self.ready(Target::Balanced, 0),
                        _ => self.stage = Greeting::after_proxy(&self.rules),
                    }
                }
            }
        }
        if self.stage == Stage::Hello {
            return self.hello();
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

    /// The ClientHello so far: wait, refuse, or the route its server name chooses. The hello is not
    /// consumed: every byte read (the hello and whatever followed it) is the leftover, forwarded as is.
    fn hello(&mut self) -> Verdict {
        let Some(rules) = self.rules.sni.as_ref() else {
            return Verdict::Drop(String::from("no ClientHello expected"));
        };
        let hello = match tls_hello::parse(&self.buf) {
            tls_hello::Parsed::Incomplete => return Verdict::More,
            tls_hello::Parsed::Reject(reason) => return Verdict::BadHello(reason),
            tls_hello::Parsed::Hello(hello) => hello,
        };
        let server_name = hello.server_name.clone().filter(|_| !hello.has_ech);
        let Some((index, via)) = rules.table.choose(&hello) else {
            return Verdict::NoRoute(server_name);
        };
        let Some(choice) = rules.routes.get(index).cloned() else {
            return Verdict::Drop(String::from("SNI table names no route"));
        };
        let routed = Routed {
            choice,
            server_name,
            via,
        };
        self.ready(Target::Routed(Box::new(routed)), 0)
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
            sni: None,
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
                sni: None,
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
                    Verdict::BadProxyHeader(_)
                    | Verdict::Drop(_)
                    | Verdict::BadHello(_)
                    | Verdict::NoRoute(_) => return,
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

    /// Rules for a listener shared by `api` (`api.example.com`, PROXY v1 upstream) and, when
    /// `with_default`, `fallback`.
    fn sni_rules(accept_proxy: bool, with_default: bool) -> Arc<Rules> {
        let api = sni::Rule {
            names: vec![sni::Pattern::parse("api.example.com").expect("pattern")],
            ..Default::default()
        };
        let fallback = sni::Rule {
            default: true,
            ..Default::default()
        };
        let mut rules = vec![(0, "api", &api)];
        if with_default {
            rules.push((1, "fallback", &fallback));
        }
        let choice = |route: &str, send_proxy| Choice {
            route: route.into(),
            send_proxy,
        };
        Arc::new(Rules {
            accept_proxy,
            carry_tlvs: CarriedTlvs::default(),
            connect: None,
            sni: Some(SniRules {
                table: sni::Table::build(rules).expect("table"),
                routes: vec![choice("api", Some(Version::V1)), choice("fallback", None)],
            }),
        })
    }

    fn routed(verdict: Verdict) -> (Routed, Vec<u8>) {
        match verdict {
            Verdict::Ready {
                target: Target::Routed(routed),
                leftover,
            } => (*routed, leftover),
            other => panic!("{other:?}"),
        }
    }

    /// A real hello, one byte at a time: `More` until its last byte, then its route, with every byte
    /// read as the leftover (the hello goes upstream unchanged), never more buffered than the bound.
    #[test]
    fn test_hello_split_byte_by_byte_routes_by_name() {
        let hello = include_bytes!("../../tests/corpus/tls/curl-resolve.bin");
        let mut g = Greeting::new(sni_rules(false, true));
        assert_eq!(g.room(), tls_hello::MAX_HELLO);
        for byte in &hello[..hello.len() - 1] {
            assert_eq!(feed(&mut g, &[*byte]), Verdict::More);
        }
        let (routed, leftover) = routed(feed(&mut g, &hello[hello.len() - 1..]));
        assert_eq!(routed.choice.route, "api");
        assert_eq!(routed.choice.send_proxy, Some(Version::V1));
        assert_eq!(routed.server_name.as_deref(), Some("api.example.com"));
        assert_eq!(routed.via, Via::Name);
        assert_eq!(leftover, hello);
    }

    /// No server name: the default route; none: the alert's verdict. Not TLS: refused at the first byte.
    #[test]
    fn test_hello_default_no_route_and_junk() {
        let none = include_bytes!("../../tests/corpus/tls/openssl-no-sni.bin");
        let (routed, _) = routed(feed(&mut Greeting::new(sni_rules(false, true)), none));
        assert_eq!(
            (routed.choice.route.as_str(), routed.via),
            ("fallback", Via::Default)
        );
        let other = include_bytes!("../../tests/corpus/tls/openssl-sni-alpn.bin");
        assert!(matches!(
            feed(&mut Greeting::new(sni_rules(false, false)), other),
            Verdict::NoRoute(Some(_))
        ));
        assert_eq!(
            feed(&mut Greeting::new(sni_rules(false, true)), b"G"),
            Verdict::BadHello(tls_hello::Reason::NotHandshake)
        );
    }

    /// `--accept-proxy` then SNI: the header is taken off, the hello (and what follows) kept.
    #[test]
    fn test_proxy_header_then_hello() {
        let hello = include_bytes!("../../tests/corpus/tls/curl-resolve.bin");
        let header = b"PROXY TCP4 192.0.2.1 127.0.0.1 5 6\r\n";
        let mut g = Greeting::new(sni_rules(true, false));
        assert_eq!(g.room(), proxy_protocol::MAX_HEADER);
        assert!(!g.reading_hello());
        assert_eq!(feed(&mut g, header), Verdict::More);
        assert!(g.reading_hello());
        let (routed, leftover) = routed(feed(&mut g, &[hello.as_slice(), b"early"].concat()));
        assert_eq!(routed.choice.route, "api");
        assert_eq!(leftover, [hello.as_slice(), b"early"].concat());
        assert_eq!(g.source, Some("192.0.2.1:5".parse().expect("addr")));
    }

    #[test]
    fn test_room_is_bounded_per_stage() {
        let mut g = Greeting::new(rules(true, &["*:*"], None));
        assert_eq!(g.room(), proxy_protocol::MAX_HEADER);
        assert_eq!(feed(&mut g, b"PROXY UNKNOWN\r\nCONN"), Verdict::More);
        assert_eq!(g.room(), connect_request::MAX_HEAD - 4);
    }
}
