//! Validated configuration, and the parsers for the value syntaxes the CLI accepts.
//!
//! Nothing here does I/O: `main.rs` turns flags (or [`crate::config::file`] a `--config` file) into a [`Config`],
//! resolving upstream names, and the reactor only ever sees values that are already known to be good (a
//! name that did not resolve is not an error: its upstream starts down, `src/upstream/endpoint/readdress.rs`).

pub mod access_log;
pub mod admin;
pub mod clients;
pub mod dns;
pub mod file;
pub mod settings;
pub mod unix;
pub mod upstream_addr;

mod algorithm;
mod quantity;
mod splice;

pub use algorithm::Algorithm;
pub use quantity::{
    parse_buffer_size, parse_duration, parse_keepalive, parse_pipe_size, parse_timeout,
};
pub use splice::{Splice, DEFAULT_PIPE_SIZE, DEFAULT_SPLICE};
pub use upstream_addr::{UpstreamAddr, UpstreamAddresses};

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::wire::allow::AllowList;
use crate::wire::proxy_protocol::{CarriedTlvs, Version};
use crate::wire::sni;

/// Default ring size per direction: the balance between CPU per byte and the memory a busy pair holds
/// (2 x 64 KiB); docs/architecture.md has the measurement behind it.
const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;

/// Everything the reactor needs: the routes, and the settings that are not per route.
#[derive(Debug, Clone)]
pub struct Config {
    /// At least one; each has its own listeners, upstreams and limits.
    pub routes: Vec<RouteConfig>,
    /// After SIGTERM/SIGINT, how long live pairs may finish before they are cut.
    pub shutdown_timeout: Duration,
    /// Where to serve Prometheus metrics; `None` = not served.
    pub metrics: Option<SocketAddr>,
    /// Where to serve the admin API (`--admin`, `admin`); `None` = not served.
    pub admin: Option<admin::AdminAddr>,
    /// The bearer token every admin request must carry (`--admin-token FILE`'s content); `None`: none.
    pub admin_token: Option<String>,
    /// Log a line of counter deltas this often; `None` = never.
    pub stats_interval: Option<Duration>,
    /// The `--config` file, re-read on SIGHUP; `None` when the flags describe the one route.
    pub file: Option<PathBuf>,
    /// When directions move bytes with splice(2) through pipes instead of their rings (Linux).
    pub splice: Splice,
    /// Capacity asked of each splice pipe (the kernel may grant less).
    pub pipe_size: usize,
    /// Independent reactors, one thread each, accepting from the same listening sockets.
    pub threads: usize,
    /// Never-used upstream connections each reactor keeps ready per route; 0 = off.
    pub prewarm: usize,
    /// `--access-log` and `--log-format` (or the file's `access_log`, `log_format`): read at start.
    pub access_log: access_log::AccessLog,
}

impl Config {
    /// The size of the pipes routes pool for splicing; `None` when splicing is off.
    pub(crate) fn pipe_size(&self) -> Option<usize> {
        (self.splice != Splice::Off).then_some(self.pipe_size)
    }
}

/// One route: listeners -> a balanced set of upstreams. Compared as a whole on reload: a route whose
/// config is unchanged keeps running as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// For logs, metrics and matching on reload.
    pub name: String,
    /// The name was given (not defaulted to `route-N`): reload matches routes by name, else by listen set.
    pub named: bool,
    /// Addresses the route's listeners bind (port 0 lets the kernel choose; each start line logs the
    /// real one).
    pub listen: Vec<SocketAddr>,
    /// Unix stream sockets the route's listeners bind besides (`unix:/path`, `unix:@name`).
    pub listen_unix: Vec<unix::UnixAddr>,
    /// Permission bits of the socket files of `listen_unix` paths.
    pub unix_mode: u32,
    /// Where connections go; at most [`MAX_UPSTREAMS`].
    pub upstreams: Vec<UpstreamConfig>,
    /// How an upstream is picked for each new connection.
    pub balance: Algorithm,
    /// Capacity of each direction's ring buffer, in bytes.
    pub buffer_size: usize,
    /// Most pairs of this route alive at once; past it its listeners are left undrained.
    pub max_connections: usize,
    /// How long each non-blocking upstream connect attempt may stay pending.
    pub connect_timeout: Duration,
    /// Most endpoints tried for one client before it is reset (each with its own `connect_timeout`).
    pub connect_attempts: usize,
    /// Close a pair with no traffic in either direction for this long; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Close a half-closed pair with no traffic for this long.
    pub fin_timeout: Duration,
    /// Close an established pair this long after its accept, busy or not; `None` = never.
    pub max_connection_duration: Option<Duration>,
    /// Probe every upstream with a TCP connect this often; `None` = passive health only.
    pub health_interval: Option<Duration>,
    /// How long a probe connect may take before it counts as a failure.
    pub health_timeout: Duration,
    /// Consecutive failures that mark an upstream down.
    pub fall: u32,
    /// Consecutive successes that mark a down upstream up again.
    pub rise: u32,
    /// What a probe writes once connected (`health_send`); `None`: nothing.
    pub health_send: Option<Vec<u8>>,
    /// The prefix a probe's answer must start with (`health_expect`); `None`: none is read.
    pub health_expect: Option<Vec<u8>>,
    /// Re-resolve host-name upstreams this often; `None` when all are IP literals.
    pub resolve_interval: Option<Duration>,
    /// TCP_NODELAY on both sockets of a pair.
    pub nodelay: bool,
    /// TCP keepalive idle time on both sockets; `None` = off.
    pub keepalive: Option<Duration>,
    /// Listen backlog.
    pub backlog: i32,
    /// Forward to the upstreams, or act as an HTTP CONNECT proxy.
    pub mode: Mode,
    /// Connect mode: the destinations a CONNECT may reach (required; anything else gets 403).
    pub allow: AllowList,
    /// Connect mode: the `Proxy-Authorization` value clients must send (`Basic base64(USER:PASS)`).
    pub proxy_auth: Option<String>,
    /// Start every upstream stream with a PROXY protocol header naming the client.
    pub send_proxy: Option<Version>,
    /// TLVs of the client's own v2 header repeated in the upstream's (needs `send_proxy` v2 and
    /// `accept_proxy`: [`tlvs_have_a_source`]).
    pub send_proxy_tlvs: CarriedTlvs,
    /// Clients start with a PROXY protocol header (v1 or v2) whose source address replaces theirs.
    pub accept_proxy: bool,
    /// How long a client may take to send its PROXY header or CONNECT head.
    pub header_timeout: Duration,
    /// TCP streams, or UDP datagrams (`udp://` on the listen address and every upstream).
    pub protocol: Protocol,
    /// UDP: close a session with no datagram either way for this long.
    pub udp_idle_timeout: Duration,
    /// UDP: most sessions at once; a new client past it evicts the least recently used.
    pub udp_max_sessions: usize,
    /// Most connections open at once from one client (a key of `per_client_prefix`); `None` = no limit.
    pub max_conns_per_client: Option<u32>,
    /// Most new connections from one client per window; `None` = no limit.
    pub conn_rate_per_client: Option<clients::Rate>,
    /// How much of an address is one client for the two limits above.
    pub per_client_prefix: clients::ClientPrefix,
    /// Who may connect to the listeners (`client_allow`, `client_deny`).
    pub client_acl: clients::ClientAcl,
    /// At `max_connections` this long with clients queued: they are accepted and closed; `None` = off.
    pub queue_timeout: Option<Duration>,
    /// SNI routing: the server names (and ALPN protocols) this route takes on a listen address it may
    /// share with other such routes, or `default` for the rest (file only: [`check_sni`]).
    pub sni: sni::Rule,
}

/// What a route forwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// Byte streams, a pair of connections per client.
    #[default]
    Tcp,
    /// Datagrams, a session per client address (docs/udp.md).
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// The prefix that makes an address UDP.
pub const UDP_SCHEME: &str = "udp://";

/// Default `udp_idle_timeout`.
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Splits the optional `udp://` off an address: the protocol and the rest.
pub fn split_scheme(text: &str) -> (Protocol, &str) {
    match text.strip_prefix(UDP_SCHEME) {
        Some(rest) => (Protocol::Udp, rest),
        None => (Protocol::Tcp, text),
    }
}

/// The rules of a UDP route: its upstreams are all `udp://` (a TCP route's none), it has one listen
/// address, and it takes none of the settings that only mean something for a stream.
pub fn check_protocol(route: &RouteConfig) -> Result<(), String> {
    let listen = |addr: &SocketAddr| match route.protocol {
        Protocol::Udp => format!("{UDP_SCHEME}{addr}"),
        Protocol::Tcp => addr.to_string(),
    };
    let shown = route.listen.first().map(listen).unwrap_or_default();
    if let Some(upstream) = route
        .upstreams
        .iter()
        .find(|u| split_scheme(&u.name).0 != route.protocol)
    {
        return Err(format!(
            "upstream '{}' is {} but the route listens on {shown} ({}): a route forwards udp to udp or tcp to tcp",
            upstream.name,
            split_scheme(&upstream.name).0,
            route.protocol
        ));
    }
    if route.protocol == Protocol::Tcp {
        return Ok(());
    }
    let stream_only = [
        (route.listen.len() > 1, "more than one listen address"),
        (route.mode == Mode::Connect, "mode = connect"),
        (route.send_proxy.is_some(), "send_proxy"),
        (route.accept_proxy, "accept_proxy"),
        (
            route.health_interval.is_some(),
            "health_interval (TCP probes)",
        ),
        (route.health_send.is_some(), "health_send (TCP probes)"),
        (route.health_expect.is_some(), "health_expect (TCP probes)"),
    ];
    match stream_only.iter().find(|(set, _)| *set) {
        Some((_, what)) => Err(format!(
            "udp route {shown} cannot take {what}: see docs/udp.md for what a udp route supports"
        )),
        None => Ok(()),
    }
}

/// `health_send` and `health_expect` are what a probe says and hears: without `health_interval` no
/// probe runs, and a setting that would do nothing is refused rather than ignored.
pub fn check_probe(route: &RouteConfig) -> Result<(), String> {
    let set = [
        (route.health_send.is_some(), "health_send"),
        (route.health_expect.is_some(), "health_expect"),
    ];
    match set.iter().find(|(on, _)| *on) {
        Some((_, key)) if route.health_interval.is_none() => Err(format!(
            "{key} is set but health_interval is off: no probe would send or expect anything"
        )),
        _ => Ok(()),
    }
}

/// What a route does with its clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Forward each client to an upstream of the route.
    #[default]
    Forward,
    /// Read an HTTP CONNECT request and tunnel to the destination it names, if the allow-list has it.
    Connect,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "forward" => Ok(Mode::Forward),
            "connect" => Ok(Mode::Connect),
            _ => Err(format!(
                "invalid mode '{text}': expected forward or connect"
            )),
        }
    }
}

/// Parses `USER:PASS` into the `Proxy-Authorization` value clients must send.
pub fn parse_credentials(text: &str) -> Result<String, String> {
    match text.split_once(':') {
        Some((user, _)) if !user.is_empty() => {
            Ok(crate::wire::connect_request::basic_credentials(text))
        }
        _ => Err(String::from("invalid credentials: expected USER:PASS")),
    }
}

/// Default `header_timeout`.
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The rules that tie the connect-mode settings together: connect mode needs an allow-list (never an
/// open proxy) and no upstreams; the allow-list and credentials mean nothing in forward mode, which
/// needs upstreams.
pub fn check_mode(route: &RouteConfig) -> Result<(), String> {
    match route.mode {
        Mode::Connect if route.allow.is_empty() => Err(String::from(
            "connect mode needs an allow-list (--allow / allow): edgefwd is never an open proxy",
        )),
        Mode::Connect if !route.upstreams.is_empty() => Err(String::from(
            "connect mode takes no upstreams: clients name their destination",
        )),
        Mode::Forward if !route.allow.is_empty() || route.proxy_auth.is_some() => Err(
            String::from("allow and proxy_auth only apply to connect mode (--mode connect)"),
        ),
        Mode::Forward if route.upstreams.is_empty() => {
            Err(String::from("at least one upstream is needed"))
        }
        _ => Ok(()),
    }
}

/// The SNI settings a route may combine: `alpn` narrows `sni` names (alone it would match nothing),
/// and a connect route reads a CONNECT head, not a ClientHello.
pub fn check_sni(route: &RouteConfig) -> Result<(), String> {
    if !route.sni.alpn.is_empty() && route.sni.names.is_empty() {
        return Err(String::from(
            "alpn needs sni: it narrows the names a route takes",
        ));
    }
    if route.sni.is_set() && route.mode == Mode::Connect {
        return Err(String::from(
            "sni and default apply to forward routes, not connect mode",
        ));
    }
    Ok(())
}

/// The listen addresses route `index` of `routes` binds: its own, less a fixed address an earlier TCP
/// route of the list already listens on. Routes share an address only through SNI routing (the file's
/// checks), and then the first of them in the file holds the one socket; the others are reached
/// through its ClientHello ([`sni_group`]). UDP routes bind sockets of their own.
pub fn bound_addresses(routes: &[RouteConfig], index: usize) -> Vec<SocketAddr> {
    let Some(route) = routes.get(index) else {
        return Vec::new();
    };
    let earlier = |addr: &SocketAddr| {
        routes[..index]
            .iter()
            .any(|other| other.protocol == route.protocol && other.listen.contains(addr))
    };
    route
        .listen
        .iter()
        .filter(|addr| addr.port() == 0 || route.protocol == Protocol::Udp || !earlier(addr))
        .copied()
        .collect()
}

/// The routes a ClientHello on route `index`'s listener for `addr` chooses among, in file order: every
/// TCP route listening on that fixed address, or the route alone on a port-0 one. Empty when none of
/// them takes part in SNI routing (a plain listener).
pub fn sni_group(routes: &[RouteConfig], index: usize, addr: SocketAddr) -> Vec<usize> {
    let group: Vec<usize> = if addr.port() == 0 {
        vec![index]
    } else {
        (0..routes.len())
            .filter(|&at| routes[at].protocol == Protocol::Tcp && routes[at].listen.contains(&addr))
            .collect()
    };
    if group.iter().any(|&at| routes[at].sni.is_set()) {
        group
    } else {
        Vec::new()
    }
}

/// What a `HOST:PORT` (a listen address, a CONNECT destination) resolved to, in the resolver's order,
/// or why it did not.
pub type Addresses = Result<Vec<SocketAddr>, String>;

/// Whether `send_proxy_tlvs` can work: TLVs are carried from a client's v2 header (`accept_proxy`) into
/// a v2 header (`send_proxy` v2). An empty set needs neither.
pub fn tlvs_have_a_source(route: &RouteConfig) -> bool {
    route.send_proxy_tlvs.is_empty()
        || (route.accept_proxy && route.send_proxy == Some(Version::V2))
}

/// One upstream of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// `HOST:PORT` or `unix:PATH` as the user wrote it: the name in logs and metrics, and what is
    /// re-resolved (a host name only).
    pub name: String,
    /// Its addresses when the configuration was read (an IP literal's, or a Unix socket's, is itself);
    /// each becomes an endpoint, up to `endpoint::MAX_ADDRESSES`.
    pub addrs: UpstreamAddresses,
    /// Relative share of new connections.
    pub weight: u32,
}

/// Most upstreams in one route.
pub const MAX_UPSTREAMS: usize = 64;
/// Most addresses of one name used as endpoints; the resolver's further ones are ignored.
pub(crate) const MAX_ADDRESSES: usize = 16;
/// Most listen addresses in one route (the token layout reserves room for this many).
pub(crate) const MAX_LISTENERS: usize = crate::token::MAX_LISTENERS;
/// Largest weight.
pub(crate) const MAX_WEIGHT: u32 = 10_000;
/// Default `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `fin_timeout`.
const DEFAULT_FIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `unix_mode`: owner and group may connect.
pub const DEFAULT_UNIX_MODE: u32 = 0o660;
/// Default listen backlog.
const DEFAULT_BACKLOG: i32 = 1024;
/// Default `fall`.
const DEFAULT_FALL: u32 = 3;
/// Default `rise`.
const DEFAULT_RISE: u32 = 2;
/// Default probe timeout.
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Default re-resolution interval when a route has a host-name upstream.
const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

impl UpstreamConfig {
    /// True when the host part is a name rather than an IP literal (so it is worth re-resolving).
    pub(crate) fn is_host_name(&self) -> bool {
        is_host_name(&self.name)
    }
}

/// True when `HOST:PORT`'s host is a name, not an IP literal (a `unix:` address is no host name).
pub(crate) fn is_host_name(host_port: &str) -> bool {
    !unix::UnixAddr::is_unix(host_port) && split_scheme(host_port).1.parse::<SocketAddr>().is_err()
}

/// Default `resolve_interval`: 30s when some upstream is a host name, never when all are IP literals.
pub fn default_resolve_interval(upstreams: &[UpstreamConfig]) -> Option<Duration> {
    upstreams
        .iter()
        .any(UpstreamConfig::is_host_name)
        .then_some(DEFAULT_RESOLVE_INTERVAL)
}

/// Default `connect_attempts`: three tries, or fewer when the route cannot have three endpoints.
pub fn default_connect_attempts(upstreams: &[UpstreamConfig]) -> usize {
    most_endpoints(upstreams).clamp(1, 3)
}

/// The most endpoints `upstreams` can have, and so the most attempts a client can use: one per IP
/// literal, up to [`MAX_ADDRESSES`] per host name.
pub fn most_endpoints(upstreams: &[UpstreamConfig]) -> usize {
    upstreams
        .iter()
        .map(|u| if u.is_host_name() { MAX_ADDRESSES } else { 1 })
        .sum()
}

/// Splits `[udp://]HOST:PORT[,weight=N]` or `unix:PATH[,weight=N]` into the upstream (its `udp://`
/// kept) and its weight (default 1, 1..=10000).
pub fn parse_upstream_spec(text: &str) -> Result<(String, u32), String> {
    let (addr, options) = match text.split_once(',') {
        // A path may hold commas: only a last `,weight=N` ends a Unix one.
        _ if unix::UnixAddr::is_unix(text) => match text.rsplit_once(',') {
            Some((addr, option)) if option.trim().starts_with("weight=") => {
                (addr.trim(), Some(option.trim()))
            }
            _ => (text.trim(), None),
        },
        Some((addr, options)) => (addr.trim(), Some(options.trim())),
        None => (text.trim(), None),
    };
    if unix::UnixAddr::is_unix(addr) {
        addr.parse::<unix::UnixAddr>()
            .map_err(|why| format!("invalid upstream '{text}': {why}"))?;
    } else {
        check_host_port(split_scheme(addr).1)
            .map_err(|why| format!("invalid upstream '{text}': {why}"))?;
    }
    let weight = match options {
        None => 1,
        Some(option) => {
            let value = option
                .strip_prefix("weight=")
                .ok_or_else(|| format!("invalid upstream '{text}': the only option is weight=N"))?;
            parse_weight(value).map_err(|err| format!("invalid upstream '{text}': {err}"))?
        }
    };
    Ok((addr.to_string(), weight))
}

/// What a listen address may be, for the error that refuses one.
const LISTEN_SYNTAX: &str = "expected IP:PORT, [IPv6]:PORT or HOST:PORT (a host name is resolved at start and every address it has is bound), e.g. 0.0.0.0:8080, [::]:8080, localhost:8080; port 0 picks a free port";

/// A listen address as given (`--listen` or `listen =`): an IP literal with its port, or `HOST:PORT`
/// whose host is a name for [`dns::listen_addresses`] (or the file's resolver) to resolve. Checked before
/// anything is resolved, so a typo is refused as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenSpec {
    Literal(SocketAddr),
    /// A host name and a port, both well formed; the text itself is what is resolved.
    Name,
}

impl ListenSpec {
    /// Parses `text`, or says what is accepted.
    pub(crate) fn parse(text: &str) -> Result<ListenSpec, String> {
        if let Ok(addr) = text.parse() {
            return Ok(ListenSpec::Literal(addr));
        }
        let bad = || format!("invalid listen address '{text}': {LISTEN_SYNTAX}");
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let name_like = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        match port.parse::<u16>() {
            Ok(_) if name_like => Ok(ListenSpec::Name),
            _ => Err(bad()),
        }
    }
}

/// Checks the shape of `HOST:PORT` before anything tries to resolve it, so a typo is a usage error
/// (exit 2) rather than a "cannot resolve" start failure: a port from 1 to 65535, a bracketed IPv6
/// literal closed, no spaces in the host.
fn check_host_port(addr: &str) -> Result<(), String> {
    let expected = "expected HOST:PORT[,weight=N]";
    let (host, port) = addr.rsplit_once(':').ok_or(expected)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("bad host '{host}', {expected}"));
    }
    if host.starts_with('[') != host.ends_with(']')
        || (!host.starts_with('[') && host.contains(':'))
    {
        return Err(format!(
            "bad host '{host}': an IPv6 address goes in brackets, e.g. [::1]:80"
        ));
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(()),
        _ => Err(format!("bad port '{port}': must be from 1 to 65535")),
    }
}

/// Parses a weight, 1..=10000.
fn parse_weight(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(weight) if (1..=MAX_WEIGHT).contains(&weight) => Ok(weight),
        _ => Err(format!(
            "weight '{text}' must be a whole number from 1 to {MAX_WEIGHT}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_upstream_spec_with_and_without_weight() {
        assert_eq!(
            parse_upstream_spec("10.0.0.1:80"),
            Ok(("10.0.0.1:80".into(), 1))
        );
        assert_eq!(
            parse_upstream_spec("db.internal:5432,weight=3"),
            Ok(("db.internal:5432".into(), 3))
        );
        // A Unix path may hold commas; only a last `,weight=N` is an option.
        assert_eq!(
            parse_upstream_spec("unix:/run/a,b.sock,weight=2"),
            Ok(("unix:/run/a,b.sock".into(), 2))
        );
        assert_eq!(
            parse_upstream_spec("unix:@app"),
            Ok(("unix:@app".into(), 1))
        );
        for bad in [
            "10.0.0.1:80,weight=0",
            "x:1,weight=abc",
            "x:1,wieght=2",
            "nohost",
            "x:",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "bad host:80",
            "[::1:80",
            "::1:80",
            ":80",
            "unix:",
            "unix:@",
            "unix:/a,weight=0",
        ] {
            let err = parse_upstream_spec(bad).expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn test_host_names_and_literals() {
        assert!(!is_host_name("10.0.0.1:80"));
        assert!(!is_host_name("[::1]:80"));
        assert!(is_host_name("localhost:80"));
        assert!(!is_host_name("unix:/run/app.sock"));
        assert!(!is_host_name("unix:@app"));
    }

    #[test]
    fn test_default_connect_attempts() {
        let upstream = |name: &str| UpstreamConfig {
            name: name.into(),
            addrs: Ok(Vec::new()),
            weight: 1,
        };
        let literals = |n: usize| -> Vec<UpstreamConfig> {
            (0..n)
                .map(|i| upstream(&format!("10.0.0.{i}:80")))
                .collect()
        };
        assert_eq!(default_connect_attempts(&literals(1)), 1);
        assert_eq!(default_connect_attempts(&literals(2)), 2);
        assert_eq!(default_connect_attempts(&literals(7)), 3);
        // A name may have several addresses: a client may be tried on three of them.
        assert_eq!(default_connect_attempts(&[upstream("db.internal:80")]), 3);
        assert_eq!(most_endpoints(&[upstream("db.internal:80")]), 16);
    }
}
