//! The `--config` file: TOML with one `[[route]]` table per route, turned into a [`Config`].
//!
//! Every error names the file, the line and the key (`edgefwd.toml:12: route[1].balance: unknown variant
//! ...`), because an operator reloading a file with SIGHUP only ever sees one log line. Values that need
//! checking beyond their TOML type (durations, sizes, addresses) are read as `Spanned` strings, so that
//! their line is known when they turn out to be bad; errors from the TOML parser itself carry a byte span
//! from which the line and the key are recovered.
//!
//! Reading the file and resolving host names are the only I/O here, done by [`load`]; [`parse`] takes the
//! text and a resolver, so the rules are unit-tested without files or DNS. docs/config.md is the reference
//! for the format.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::Algorithm;
use crate::config::{
    self, Addresses, Config, Mode, RouteConfig, UpstreamConfig, DEFAULT_FALL,
    DEFAULT_HEALTH_TIMEOUT, MAX_LISTENERS, MAX_UPSTREAMS,
};
use crate::wire::allow::AllowList;
use crate::wire::proxy_protocol::CarriedTlvs;

/// Why a file was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// The file says something wrong (a usage error: exit 2 at start).
    Invalid(String),
    /// The file could not be read (exit 1 at start). A host name that does not resolve is no error: its
    /// upstream starts down and is looked up again every `resolve_interval`.
    Unavailable(String),
}

impl FileError {
    pub fn message(&self) -> &str {
        match self {
            FileError::Invalid(message) | FileError::Unavailable(message) => message,
        }
    }
}

/// Values the file does not set and that depend on the process (the fd limit).
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// `max_connections` of a route that does not set one.
    pub max_connections: usize,
    /// Used when the file has no `shutdown_timeout`.
    pub shutdown_timeout: Duration,
}

/// Reads, parses, validates and resolves the file at `path`.
pub fn load(path: &Path, defaults: Defaults) -> Result<Config, FileError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|err| FileError::Unavailable(format!("cannot read {label}: {err}")))?;
    let mut config = parse(
        &label,
        &text,
        defaults,
        &mut crate::config::dns::upstream_addresses,
    )?;
    config.file = Some(path.to_path_buf());
    Ok(config)
}

/// Parses and validates the text of a config file; `label` names it in errors, `resolve` turns an
/// `HOST:PORT` into its addresses (or says why it cannot).
pub fn parse(
    label: &str,
    text: &str,
    defaults: Defaults,
    resolve: &mut dyn FnMut(&str) -> Addresses,
) -> Result<Config, FileError> {
    let raw: RawFile = toml::from_str(text).map_err(|err| {
        let (line, key) = err
            .span()
            .map_or((None, None), |span| locate(text, span.start));
        FileError::Invalid(format_error(label, line, key.as_deref(), err.message()))
    })?;
    let mut reader = Reader {
        label,
        text,
        resolve,
    };
    let mut routes = Vec::with_capacity(raw.route.len());
    for (index, route) in raw.route.into_iter().enumerate() {
        routes.push(reader.route(index, route, defaults)?);
    }
    if routes.is_empty() {
        return Err(FileError::Invalid(format!(
            "{label}: no [[route]] table: at least one route is needed"
        )));
    }
    reader.check_unique(&routes)?;
    Ok(Config {
        routes,
        shutdown_timeout: reader
            .duration("shutdown_timeout", raw.shutdown_timeout.as_ref())?
            .unwrap_or(defaults.shutdown_timeout),
        metrics: raw
            .metrics
            .as_ref()
            .map(|addr| reader.addr("metrics", addr))
            .transpose()?,
        stats_interval: reader
            .duration("stats_interval", raw.stats_interval.as_ref())?
            .filter(|d| !d.is_zero()),
        file: None,
        // Flag-only settings; `main` (and a reload, from the running config) fill them in.
        splice: config::Splice::default(),
        pipe_size: config::DEFAULT_PIPE_SIZE,
        threads: 1,
        prewarm: 0,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    shutdown_timeout: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    stats_interval: Option<Spanned<String>>,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<Spanned<String>>,
    listen: Spanned<OneOrMany>,
    /// Required in forward mode, absent in connect mode.
    upstreams: Option<Spanned<Vec<RawUpstream>>>,
    balance: Option<Algorithm>,
    buffer_size: Option<Spanned<String>>,
    max_connections: Option<Spanned<u32>>,
    connect_timeout: Option<Spanned<String>>,
    connect_attempts: Option<Spanned<u32>>,
    idle_timeout: Option<Spanned<String>>,
    fin_timeout: Option<Spanned<String>>,
    max_connection_duration: Option<Spanned<String>>,
    health_interval: Option<Spanned<String>>,
    health_timeout: Option<Spanned<String>>,
    fall: Option<Spanned<u32>>,
    resolve_interval: Option<Spanned<String>>,
    nodelay: Option<bool>,
    keepalive: Option<Spanned<String>>,
    backlog: Option<Spanned<u32>>,
    mode: Option<Spanned<Mode>>,
    allow: Option<Spanned<Vec<String>>>,
    proxy_auth: Option<Spanned<String>>,
    send_proxy: Option<Spanned<String>>,
    send_proxy_tlvs: Option<Spanned<Vec<String>>>,
    accept_proxy: Option<bool>,
    header_timeout: Option<Spanned<String>>,
}

/// `listen = "addr"` or `listen = ["addr", ...]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `"HOST:PORT"`, `"HOST:PORT,weight=N"` or `{ addr = "HOST:PORT", weight = N }`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "an upstream: \"HOST:PORT[,weight=N]\" or { addr = \"HOST:PORT\", weight = N } (no other keys)"
)]
enum RawUpstream {
    Spec(String),
    Table(UpstreamTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamTable {
    addr: String,
    weight: Option<u32>,
}

/// Validation state: the file's name and text (for line numbers) and the resolver.
struct Reader<'a> {
    label: &'a str,
    text: &'a str,
    resolve: &'a mut dyn FnMut(&str) -> Addresses,
}

impl Reader<'_> {
    fn route(
        &mut self,
        index: usize,
        raw: RawRoute,
        defaults: Defaults,
    ) -> Result<RouteConfig, FileError> {
        let key = |field: &str| format!("route[{index}].{field}");
        let span = raw.mode.as_ref().map_or(raw.listen.span(), Spanned::span);
        let connect = raw
            .mode
            .as_ref()
            .is_some_and(|mode| *mode.get_ref() == Mode::Connect);
        if raw.upstreams.is_none() && !connect {
            let message = "missing: a forward route needs upstreams";
            return Err(self.error(&key("upstreams"), raw.listen.span(), message));
        }
        let tlvs_span = raw.send_proxy_tlvs.as_ref().map(Spanned::span);
        let route = self.route_settings(index, raw, defaults)?;
        config::check_mode(&route).map_err(|err| self.error(&key("mode"), span, &err))?;
        if let (false, Some(tlvs_span)) = (config::tlvs_have_a_source(&route), tlvs_span) {
            let message = format!(
                "[{}] needs send_proxy = \"v2\" and accept_proxy = true (TLVs are carried from the client's v2 header into a v2 header)",
                route.send_proxy_tlvs.names()
            );
            return Err(self.error(&key("send_proxy_tlvs"), tlvs_span, &message));
        }
        Ok(route)
    }

    fn route_settings(
        &mut self,
        index: usize,
        raw: RawRoute,
        defaults: Defaults,
    ) -> Result<RouteConfig, FileError> {
        let key = |field: &str| format!("route[{index}].{field}");
        let listen = self.listen(&key("listen"), &raw.listen)?;
        let upstreams = match &raw.upstreams {
            Some(upstreams) => self.upstreams(&key("upstreams"), upstreams)?,
            None => Vec::new(),
        };
        let connect_attempts = match &raw.connect_attempts {
            Some(n) => self.positive(&key("connect_attempts"), n)? as usize,
            None => config::default_connect_attempts(&upstreams),
        };
        let resolve_interval = match &raw.resolve_interval {
            Some(text) => {
                Some(self.duration_value(&key("resolve_interval"), text)?).filter(|d| !d.is_zero())
            }
            None => config::default_resolve_interval(&upstreams),
        };
        Ok(RouteConfig {
            name: raw
                .name
                .as_ref()
                .map_or_else(|| format!("route-{}", index + 1), |n| n.get_ref().clone()),
            named: raw.name.is_some(),
            listen,
            connect_attempts: connect_attempts.min(config::most_endpoints(&upstreams)),
            resolve_interval,
            upstreams,
            balance: raw.balance.unwrap_or_default(),
            buffer_size: match &raw.buffer_size {
                Some(text) => self.check(&key("buffer_size"), text, config::parse_buffer_size)?,
                None => config::DEFAULT_BUFFER_SIZE,
            },
            max_connections: match &raw.max_connections {
                Some(n) => self.positive(&key("max_connections"), n)? as usize,
                None => defaults.max_connections,
            },
            connect_timeout: self
                .timeout(&key("connect_timeout"), raw.connect_timeout.as_ref())?
                .unwrap_or(config::DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: self
                .duration(&key("idle_timeout"), raw.idle_timeout.as_ref())?
                .filter(|d| !d.is_zero()),
            fin_timeout: self
                .timeout(&key("fin_timeout"), raw.fin_timeout.as_ref())?
                .unwrap_or(config::DEFAULT_FIN_TIMEOUT),
            max_connection_duration: self
                .duration(
                    &key("max_connection_duration"),
                    raw.max_connection_duration.as_ref(),
                )?
                .filter(|d| !d.is_zero()),
            health_interval: self
                .duration(&key("health_interval"), raw.health_interval.as_ref())?
                .filter(|d| !d.is_zero()),
            health_timeout: self
                .timeout(&key("health_timeout"), raw.health_timeout.as_ref())?
                .unwrap_or(DEFAULT_HEALTH_TIMEOUT),
            fall: match &raw.fall {
                Some(n) => self.positive(&key("fall"), n)?,
                None => DEFAULT_FALL,
            },
            nodelay: raw.nodelay.unwrap_or(true),
            keepalive: match &raw.keepalive {
                Some(text) => Some(self.check(&key("keepalive"), text, config::parse_keepalive)?),
                None => None,
            },
            backlog: match &raw.backlog {
                Some(n) => i32::try_from(self.positive(&key("backlog"), n)?)
                    .map_err(|_| self.error(&key("backlog"), n.span(), "too large"))?,
                None => config::DEFAULT_BACKLOG,
            },
            mode: raw.mode.as_ref().map_or(Mode::Forward, |m| *m.get_ref()),
            allow: match &raw.allow {
                Some(rules) => AllowList::new(
                    rules
                        .get_ref()
                        .iter()
                        .map(|rule| rule.parse())
                        .collect::<Result<_, String>>()
                        .map_err(|err| self.error(&key("allow"), rules.span(), &err))?,
                ),
                None => AllowList::default(),
            },
            proxy_auth: match &raw.proxy_auth {
                Some(text) => {
                    Some(self.check(&key("proxy_auth"), text, config::parse_credentials)?)
                }
                None => None,
            },
            send_proxy: match &raw.send_proxy {
                Some(text) => Some(self.check(&key("send_proxy"), text, str::parse)?),
                None => None,
            },
            send_proxy_tlvs: match &raw.send_proxy_tlvs {
                Some(names) => names
                    .get_ref()
                    .iter()
                    .map(|name| name.parse())
                    .collect::<Result<_, String>>()
                    .map_err(|err| self.error(&key("send_proxy_tlvs"), names.span(), &err))?,
                None => CarriedTlvs::default(),
            },
            accept_proxy: raw.accept_proxy.unwrap_or(false),
            header_timeout: self
                .timeout(&key("header_timeout"), raw.header_timeout.as_ref())?
                .unwrap_or(config::DEFAULT_HEADER_TIMEOUT),
        })
    }

    fn listen(
        &mut self,
        key: &str,
        raw: &Spanned<OneOrMany>,
    ) -> Result<Vec<SocketAddr>, FileError> {
        let texts: Vec<&String> = match raw.get_ref() {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many.iter().collect(),
        };
        if texts.is_empty() || texts.len() > MAX_LISTENERS {
            return Err(self.error(
                key,
                raw.span(),
                &format!("between 1 and {MAX_LISTENERS} addresses are needed"),
            ));
        }
        let mut addrs = Vec::with_capacity(texts.len());
        for text in texts {
            let addr: SocketAddr = text.parse().map_err(|_| {
                self.error(
                    key,
                    raw.span(),
                    &format!("invalid address '{text}': expected IP:PORT, e.g. 0.0.0.0:8080"),
                )
            })?;
            if addr.port() != 0 && addrs.contains(&addr) {
                return Err(self.error(key, raw.span(), &format!("{addr} is listed twice")));
            }
            addrs.push(addr);
        }
        Ok(addrs)
    }

    fn upstreams(
        &mut self,
        key: &str,
        raw: &Spanned<Vec<RawUpstream>>,
    ) -> Result<Vec<UpstreamConfig>, FileError> {
        let list = raw.get_ref();
        if list.is_empty() || list.len() > MAX_UPSTREAMS {
            return Err(self.error(
                key,
                raw.span(),
                &format!("between 1 and {MAX_UPSTREAMS} upstreams are needed"),
            ));
        }
        let mut upstreams: Vec<UpstreamConfig> = Vec::with_capacity(list.len());
        for entry in list {
            let (name, weight) = match entry {
                RawUpstream::Spec(spec) => config::parse_upstream_spec(spec),
                RawUpstream::Table(table) => {
                    config::parse_upstream_spec(&table.addr).and_then(|(name, _)| {
                        match table.weight {
                            Some(weight) => config::parse_weight(&weight.to_string())
                                .map(|weight| (name, weight)),
                            None => Ok((name, 1)),
                        }
                    })
                }
            }
            .map_err(|err| self.error(key, raw.span(), &err))?;
            if upstreams.iter().any(|u| u.name == name) {
                return Err(self.error(key, raw.span(), &format!("'{name}' is listed twice")));
            }
            let addrs = (self.resolve)(&name);
            upstreams.push(UpstreamConfig {
                name,
                addrs,
                weight,
            });
        }
        Ok(upstreams)
    }

    /// Route names and fixed listen addresses must be unique across routes.
    fn check_unique(&self, routes: &[RouteConfig]) -> Result<(), FileError> {
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for (index, route) in routes.iter().enumerate() {
            if !names.insert(route.name.as_str()) {
                let why = if route.named {
                    format!("'{}' names two routes", route.name)
                } else {
                    format!(
                        "this route has no name and its default, '{}', is taken by another route: name it",
                        route.name
                    )
                };
                return Err(FileError::Invalid(format!(
                    "{}: route[{index}].name: {why}",
                    self.label
                )));
            }
            for addr in route.listen.iter().filter(|addr| addr.port() != 0) {
                if !addrs.insert(*addr) {
                    return Err(FileError::Invalid(format!(
                        "{}: route[{index}].listen: {addr} is used by two routes",
                        self.label
                    )));
                }
            }
        }
        Ok(())
    }

    fn duration(
        &self,
        key: &str,
        raw: Option<&Spanned<String>>,
    ) -> Result<Option<Duration>, FileError> {
        raw.map(|text| self.duration_value(key, text)).transpose()
    }

    fn timeout(
        &self,
        key: &str,
        raw: Option<&Spanned<String>>,
    ) -> Result<Option<Duration>, FileError> {
        raw.map(|text| self.check(key, text, config::parse_timeout))
            .transpose()
    }

    fn duration_value(&self, key: &str, raw: &Spanned<String>) -> Result<Duration, FileError> {
        self.check(key, raw, config::parse_duration)
    }

    fn addr(&self, key: &str, raw: &Spanned<String>) -> Result<SocketAddr, FileError> {
        raw.get_ref().parse().map_err(|_| {
            self.error(
                key,
                raw.span(),
                &format!("invalid address '{}': expected IP:PORT", raw.get_ref()),
            )
        })
    }

    fn positive(&self, key: &str, raw: &Spanned<u32>) -> Result<u32, FileError> {
        match *raw.get_ref() {
            0 => Err(self.error(key, raw.span(), "must be at least 1")),
            n => Ok(n),
        }
    }

    fn check<T>(
        &self,
        key: &str,
        raw: &Spanned<String>,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, FileError> {
        parse(raw.get_ref()).map_err(|err| self.error(key, raw.span(), &err))
    }

    fn error(&self, key: &str, span: Range<usize>, message: &str) -> FileError {
        let line = line_of(self.text, span.start);
        FileError::Invalid(format_error(self.label, Some(line), Some(key), message))
    }
}

fn format_error(label: &str, line: Option<usize>, key: Option<&str>, message: &str) -> String {
    let mut out = label.to_string();
    if let Some(line) = line {
        out.push_str(&format!(":{line}"));
    }
    if let Some(key) = key {
        out.push_str(&format!(": {key}"));
    }
    format!("{out}: {}", message.trim().replace('\n', " "))
}

/// 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    1 + text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The line of a parser error and, as well as the text allows, the key it is about: `route[N].key` where
/// N counts the `[[route]]` headers before it. The parser's span points into the value or at the key, so
/// the key is the nearest `key =` at or above the error that is not behind a table header.
fn locate(text: &str, offset: usize) -> (Option<usize>, Option<String>) {
    let line = line_of(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let upto = &lines[..line.min(lines.len())];
    let routes = upto
        .iter()
        .filter(|l| l.trim_start().starts_with("[[route]]"))
        .count();
    let field = upto
        .iter()
        .rev()
        .map(|l| l.trim_start())
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            let (key, _) = l.split_once('=')?;
            let key = key.trim();
            (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| key.to_string())
        });
    let key = match (routes, field) {
        (0, field) => field,
        (n, Some(field)) => Some(format!("route[{}].{field}", n - 1)),
        (n, None) => Some(format!("route[{}]", n - 1)),
    };
    (Some(line), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults {
        max_connections: 100,
        shutdown_timeout: Duration::from_secs(30),
    };

    fn fake_resolve(name: &str) -> Addresses {
        match name.parse() {
            Ok(addr) => Ok(vec![addr]),
            Err(_) if name.starts_with("known.") => Ok(vec![
                "10.9.9.9:80".parse().expect("addr"),
                "10.9.9.8:80".parse().expect("addr"),
            ]),
            Err(_) => Err(format!("cannot resolve '{name}'")),
        }
    }

    fn parse_text(text: &str) -> Result<Config, FileError> {
        parse("test.toml", text, DEFAULTS, &mut fake_resolve)
    }

    fn invalid(text: &str) -> String {
        match parse_text(text) {
            Err(FileError::Invalid(message)) => message,
            other => panic!("expected an invalid file, got {other:?}"),
        }
    }

    #[test]
    fn test_full_route() {
        let config = parse_text(
            r#"
shutdown_timeout = "5s"
metrics = "127.0.0.1:9100"

[[route]]
name = "web"
listen = ["127.0.0.1:8080", "[::1]:8080"]
upstreams = ["10.0.0.1:80", { addr = "10.0.0.2:80", weight = 3 }, "known.example:80,weight=2"]
balance = "least-conn"
buffer_size = "16k"
max_connections = 10
connect_timeout = "500ms"
connect_attempts = 2
idle_timeout = "10m"
fin_timeout = "30s"
health_interval = "2s"
health_timeout = "1s"
fall = 2
nodelay = false
keepalive = "60s"
backlog = 64

[[route]]
listen = "127.0.0.1:0"
upstreams = ["10.0.0.3:80"]
"#,
        )
        .expect("valid");
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(
            config.metrics,
            Some("127.0.0.1:9100".parse().expect("addr"))
        );
        let web = &config.routes[0];
        assert_eq!((web.name.as_str(), web.named), ("web", true));
        assert_eq!(web.listen.len(), 2);
        let weights: Vec<u32> = web.upstreams.iter().map(|u| u.weight).collect();
        assert_eq!(weights, vec![1, 3, 2]);
        assert_eq!(
            web.upstreams[2].addrs,
            Ok(vec![
                "10.9.9.9:80".parse().expect("addr"),
                "10.9.9.8:80".parse().expect("addr")
            ])
        );
        assert_eq!(web.balance, Algorithm::LeastConn);
        assert_eq!(web.buffer_size, 16 * 1024);
        assert_eq!(web.connect_attempts, 2);
        assert_eq!(web.health_interval, Some(Duration::from_secs(2)));
        assert_eq!(web.resolve_interval, Some(Duration::from_secs(30)));
        assert!(!web.nodelay);
        let second = &config.routes[1];
        assert_eq!((second.name.as_str(), second.named), ("route-2", false));
        assert_eq!(second.max_connections, 100);
        assert_eq!(second.connect_attempts, 1);
        assert_eq!(second.balance, Algorithm::RoundRobin);
        assert_eq!(second.resolve_interval, None);
    }

    #[test]
    fn test_unknown_variant_names_line_and_key() {
        let message = invalid(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\n\n[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\nbalance = \"round-robbin\"\n",
        );
        assert!(
            message.starts_with("test.toml:8: route[1].balance: unknown variant `round-robbin`"),
            "{message}"
        );
        assert!(message.contains("least-conn"), "{message}");
    }

    #[test]
    fn test_unknown_key_names_line_and_key() {
        let message = invalid(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\nbalnce = \"x\"\n",
        );
        assert!(
            message.starts_with("test.toml:4: route[0].balnce: unknown field"),
            "{message}"
        );
    }

    #[test]
    fn test_bad_duration_names_line_and_key() {
        let message = invalid(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\n\nconnect_timeout = \"5parsecs\"\n",
        );
        assert!(
            message
                .starts_with("test.toml:5: route[0].connect_timeout: invalid duration '5parsecs'"),
            "{message}"
        );
    }

    #[test]
    fn test_no_upstream_is_rejected() {
        let message = invalid("[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = []\n");
        assert!(
            message.starts_with("test.toml:3: route[0].upstreams: between 1 and"),
            "{message}"
        );
        let missing = invalid("[[route]]\nlisten = \"127.0.0.1:0\"\n");
        assert!(
            missing.contains("route[0]") && missing.contains("upstreams"),
            "{missing}"
        );
    }

    #[test]
    fn test_bad_addresses_are_rejected() {
        let message = invalid("[[route]]\nlisten = \"nope\"\nupstreams = [\"10.0.0.1:80\"]\n");
        assert!(
            message.starts_with("test.toml:2: route[0].listen: invalid address 'nope'"),
            "{message}"
        );
        let weight = invalid(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [{ addr = \"10.0.0.1:80\", weight = 0 }]\n",
        );
        assert!(
            weight.contains("route[0].upstreams") && weight.contains("weight"),
            "{weight}"
        );
    }

    /// A name that does not resolve is no error: the route starts with that upstream down.
    #[test]
    fn test_unresolvable_upstream_is_accepted_with_its_error() {
        let config = parse_text(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"nowhere.invalid:80\"]\n",
        )
        .expect("accepted");
        let route = &config.routes[0];
        assert_eq!(
            route.upstreams[0].addrs,
            Err("cannot resolve 'nowhere.invalid:80'".to_string())
        );
        // A name may have several addresses: three attempts by default even with one upstream.
        assert_eq!(route.connect_attempts, 3);
        assert_eq!(route.resolve_interval, Some(Duration::from_secs(30)));
    }

    #[test]
    fn test_duplicates_across_routes_are_rejected() {
        let names = invalid(
            "[[route]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\n[[route]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\n",
        );
        assert!(
            names.contains("route[1].name") && names.contains("'a'"),
            "{names}"
        );
        let addrs = invalid(
            "[[route]]\nlisten = \"127.0.0.1:7000\"\nupstreams = [\"10.0.0.1:80\"]\n[[route]]\nlisten = \"127.0.0.1:7000\"\nupstreams = [\"10.0.0.1:80\"]\n",
        );
        assert!(addrs.contains("route[1].listen"), "{addrs}");
    }

    #[test]
    fn test_unnamed_route_clashing_with_a_named_one_is_told_to_take_a_name() {
        let message = invalid(
            "[[route]]\nname = \"route-2\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\n[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\n",
        );
        assert!(
            message.contains("route[1].name") && message.contains("has no name"),
            "{message}"
        );
    }

    #[test]
    fn test_misspelled_upstream_table_key_says_what_an_upstream_is() {
        let message = invalid(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [{ adr = \"10.0.0.1:80\" }]\n",
        );
        assert!(
            message.contains("upstreams") && message.contains("addr = \"HOST:PORT\""),
            "{message}"
        );
    }

    #[test]
    fn test_connect_route_keys() {
        let config = parse_text(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nmode = \"connect\"\nallow = [\"10.0.0.0/8:443\", \".example.com:*\"]\nproxy_auth = \"u:p\"\nsend_proxy = \"v2\"\naccept_proxy = true\nheader_timeout = \"3s\"\n",
        )
        .expect("valid");
        let route = &config.routes[0];
        assert_eq!(route.mode, Mode::Connect);
        assert!(route.upstreams.is_empty());
        assert_eq!(route.proxy_auth.as_deref(), Some("Basic dTpw"));
        assert_eq!(
            route.send_proxy,
            Some(crate::wire::proxy_protocol::Version::V2)
        );
        assert!(route.accept_proxy);
        assert_eq!(route.header_timeout, Duration::from_secs(3));
    }

    #[test]
    fn test_send_proxy_tlvs() {
        use crate::wire::proxy_protocol::TlvKind;
        let base = "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\n";
        let config = parse_text(&format!(
            "{base}send_proxy = \"v2\"\naccept_proxy = true\nsend_proxy_tlvs = [\"unique_id\", \"authority\"]\n"
        ))
        .expect("valid");
        let tlvs = config.routes[0].send_proxy_tlvs;
        assert!(tlvs.contains(TlvKind::Authority) && tlvs.contains(TlvKind::UniqueId));
        assert!(!tlvs.contains(TlvKind::Alpn));
        let unknown = invalid(&format!(
            "{base}send_proxy = \"v2\"\naccept_proxy = true\nsend_proxy_tlvs = [\"alpn\", \"sni\"]\n"
        ));
        assert!(
            unknown.starts_with("test.toml:6: route[0].send_proxy_tlvs: unknown TLV 'sni'"),
            "{unknown}"
        );
        for (settings, line) in [
            ("send_proxy = \"v1\"\naccept_proxy = true\n", 6),
            ("accept_proxy = true\n", 5),
            ("send_proxy = \"v2\"\n", 5),
        ] {
            let alone = invalid(&format!("{base}{settings}send_proxy_tlvs = [\"alpn\"]\n"));
            let expected = format!("test.toml:{line}: route[0].send_proxy_tlvs: [alpn] needs send_proxy = \"v2\" and accept_proxy = true");
            assert!(alone.starts_with(&expected), "{alone}");
        }
        let none = parse_text(&format!("{base}send_proxy_tlvs = []\n")).expect("empty is nothing");
        assert!(none.routes[0].send_proxy_tlvs.is_empty());
    }

    #[test]
    fn test_connect_route_errors_name_line_and_key() {
        let bad_rule = invalid(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nmode = \"connect\"\nallow = [\"10.0.0.0/99:1\"]\n",
        );
        assert!(
            bad_rule.starts_with("test.toml:4: route[0].allow: invalid allow rule '10.0.0.0/99:1'"),
            "{bad_rule}"
        );
        let open_proxy = invalid("[[route]]\nlisten = \"127.0.0.1:0\"\nmode = \"connect\"\n");
        assert!(
            open_proxy.starts_with("test.toml:3: route[0].mode: connect mode needs an allow-list"),
            "{open_proxy}"
        );
        let stray = invalid(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\nallow = [\"*:1\"]\n",
        );
        assert!(stray.contains("only apply to connect mode"), "{stray}");
        let version = invalid(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\nsend_proxy = \"v3\"\n",
        );
        assert!(
            version.starts_with("test.toml:4: route[0].send_proxy"),
            "{version}"
        );
    }

    #[test]
    fn test_empty_file_needs_a_route() {
        assert!(invalid("").contains("no [[route]]"));
    }

    #[test]
    fn test_global_key_error_has_no_route_prefix() {
        let message = invalid("stats_interval = \"often\"\n[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\n");
        assert!(
            message.starts_with("test.toml:1: stats_interval: invalid duration"),
            "{message}"
        );
    }
}
