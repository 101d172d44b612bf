//! The rules of a `--config` file beyond its TOML types: each value parsed by the same function as its
//! flag's (durations, sizes, addresses, upstream specs), the rules that tie settings together
//! ([`config::check_mode`], [`config::tlvs_have_a_source`]), unique names and listen addresses across
//! routes, and the defaults of what the file leaves out. Each refusal names the line and the key.

mod unique;
mod values;

use std::net::SocketAddr;

use toml::Spanned;

use super::raw::{OneOrMany, RawFile, RawRoute, RawUpstream};
use super::{render, Defaults, FileError};
use crate::config::access_log::AccessLog;
use crate::config::clients::{ClientAcl, ClientPrefix};
use crate::config::unix::{self, UnixAddr};
use crate::config::{
    self, Addresses, Config, ListenSpec, Mode, Protocol, RouteConfig, UpstreamConfig, DEFAULT_FALL,
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_RISE, MAX_LISTENERS, MAX_UPSTREAMS,
};
use crate::wire::allow::AllowList;
use crate::wire::proxy_protocol::CarriedTlvs;
use crate::wire::sni;
use crate::wire::tcp_check;

/// Checks every value of `raw` (the text of the file `label`) and resolves its upstreams' names.
pub(super) fn config(
    label: &str,
    text: &str,
    raw: RawFile,
    defaults: Defaults,
    resolve: &mut dyn FnMut(&str) -> Addresses,
) -> Result<Config, FileError> {
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
        let message = "no [[route]] table: at least one route is needed";
        return Err(render::rejected(label, None, message));
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
        admin: raw
            .admin
            .as_ref()
            .map(|addr| reader.admin(addr))
            .transpose()?,
        // Flag-only: `main` reads `--admin-token FILE`.
        admin_token: None,
        stats_interval: reader
            .duration("stats_interval", raw.stats_interval.as_ref())?
            .filter(|d| !d.is_zero()),
        file: None,
        // Flag-only settings; `main` (and a reload, from the running config) fill them in.
        splice: config::Splice::default(),
        pipe_size: config::DEFAULT_PIPE_SIZE,
        threads: 1,
        prewarm: 0,
        access_log: AccessLog {
            destination: raw
                .access_log
                .as_ref()
                .map(|path| reader.check("access_log", path, str::parse))
                .transpose()?,
            format: raw
                .log_format
                .as_ref()
                .map(|format| reader.check("log_format", format, str::parse))
                .transpose()?
                .unwrap_or_default(),
        },
    })
}

/// `route[N].field`: how an error names a key of the route at `index`.
fn key(index: usize, field: &str) -> String {
    format!("route[{index}].{field}")
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
        let span = raw.mode.as_ref().map_or(raw.listen.span(), Spanned::span);
        let connect = raw
            .mode
            .as_ref()
            .is_some_and(|mode| *mode.get_ref() == Mode::Connect);
        if raw.upstreams.is_none() && !connect {
            let message = "missing: a forward route needs upstreams";
            return Err(self.error(&key(index, "upstreams"), raw.listen.span(), message));
        }
        let tlvs_span = raw.send_proxy_tlvs.as_ref().map(Spanned::span);
        let sni_span = [
            raw.alpn.as_ref().map(Spanned::span),
            raw.sni.as_ref().map(Spanned::span),
        ]
        .into_iter()
        .flatten()
        .chain(raw.default.as_ref().map(Spanned::span))
        .next()
        .unwrap_or(raw.listen.span());
        let upstreams_span = raw
            .upstreams
            .as_ref()
            .map_or(raw.listen.span(), Spanned::span);
        let probe_span = match (&raw.health_send, &raw.health_expect) {
            (Some(text), _) => ("health_send", text.span()),
            (None, Some(text)) => ("health_expect", text.span()),
            (None, None) => ("health_interval", raw.listen.span()),
        };
        let route = self.route_settings(index, raw, defaults)?;
        config::check_mode(&route).map_err(|err| self.error(&key(index, "mode"), span, &err))?;
        config::check_sni(&route).map_err(|err| self.error(&key(index, "sni"), sni_span, &err))?;
        config::check_protocol(&route)
            .map_err(|err| self.error(&key(index, "upstreams"), upstreams_span, &err))?;
        config::check_probe(&route)
            .map_err(|err| self.error(&key(index, probe_span.0), probe_span.1, &err))?;
        if let (false, Some(tlvs_span)) = (config::tlvs_have_a_source(&route), tlvs_span) {
            let message = format!(
                "[{}] needs send_proxy = \"v2\" and accept_proxy = true (TLVs are carried from the client's v2 header into a v2 header)",
                route.send_proxy_tlvs.names()
            );
            return Err(self.error(&key(index, "send_proxy_tlvs"), tlvs_span, &message));
        }
        Ok(route)
    }

    fn route_settings(
        &mut self,
        index: usize,
        raw: RawRoute,
        defaults: Defaults,
    ) -> Result<RouteConfig, FileError> {
        let (protocol, listen, listen_unix) = self.listen(&key(index, "listen"), &raw.listen)?;
        let upstreams = match &raw.upstreams {
            Some(upstreams) => self.upstreams(&key(index, "upstreams"), upstreams)?,
            None => Vec::new(),
        };
        let connect_attempts = match &raw.connect_attempts {
            Some(n) => self.positive(&key(index, "connect_attempts"), n)? as usize,
            None => config::default_connect_attempts(&upstreams),
        };
        let resolve_interval = match &raw.resolve_interval {
            Some(text) => Some(self.duration_value(&key(index, "resolve_interval"), text)?)
                .filter(|d| !d.is_zero()),
            None => config::default_resolve_interval(&upstreams),
        };
        Ok(RouteConfig {
            name: raw
                .name
                .as_ref()
                .map_or_else(|| format!("route-{}", index + 1), |n| n.get_ref().clone()),
            named: raw.name.is_some(),
            listen,
            listen_unix,
            connect_attempts: connect_attempts.min(config::most_endpoints(&upstreams)),
            resolve_interval,
            upstreams,
            balance: raw.balance.unwrap_or_default(),
            buffer_size: match &raw.buffer_size {
                Some(text) => {
                    self.check(&key(index, "buffer_size"), text, config::parse_buffer_size)?
                }
                None => config::DEFAULT_BUFFER_SIZE,
            },
            max_connections: match &raw.max_connections {
                Some(n) => self.positive(&key(index, "max_connections"), n)? as usize,
                None => defaults.max_connections,
            },
            connect_timeout: self
                .timeout(&key(index, "connect_timeout"), raw.connect_timeout.as_ref())?
                .unwrap_or(config::DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: self
                .duration(&key(index, "idle_timeout"), raw.idle_timeout.as_ref())?
                .filter(|d| !d.is_zero()),
            fin_timeout: self
                .timeout(&key(index, "fin_timeout"), raw.fin_timeout.as_ref())?
                .unwrap_or(config::DEFAULT_FIN_TIMEOUT),
            max_connection_duration: self
                .duration(
                    &key(index, "max_connection_duration"),
                    raw.max_connection_duration.as_ref(),
                )?
                .filter(|d| !d.is_zero()),
            health_interval: self
                .duration(&key(index, "health_interval"), raw.health_interval.as_ref())?
                .filter(|d| !d.is_zero()),
            health_timeout: self
                .timeout(&key(index, "health_timeout"), raw.health_timeout.as_ref())?
                .unwrap_or(DEFAULT_HEALTH_TIMEOUT),
            fall: match &raw.fall {
                Some(n) => self.positive(&key(index, "fall"), n)?,
                None => DEFAULT_FALL,
            },
            rise: match &raw.rise {
                Some(n) => self.positive(&key(index, "rise"), n)?,
                None => DEFAULT_RISE,
            },
            health_send: match &raw.health_send {
                Some(text) => {
                    Some(self.check(&key(index, "health_send"), text, tcp_check::unescape)?)
                }
                None => None,
            },
            health_expect: match &raw.health_expect {
                Some(text) => {
                    Some(self.check(&key(index, "health_expect"), text, tcp_check::unescape)?)
                }
                None => None,
            },
            nodelay: raw.nodelay.unwrap_or(true),
            keepalive: match &raw.keepalive {
                Some(text) => {
                    Some(self.check(&key(index, "keepalive"), text, config::parse_keepalive)?)
                }
                None => None,
            },
            backlog: match &raw.backlog {
                Some(n) => i32::try_from(self.positive(&key(index, "backlog"), n)?)
                    .map_err(|_| self.error(&key(index, "backlog"), n.span(), "too large"))?,
                None => config::DEFAULT_BACKLOG,
            },
            unix_mode: match &raw.unix_mode {
                Some(text) => self.check(&key(index, "unix_mode"), text, unix::parse_mode)?,
                None => config::DEFAULT_UNIX_MODE,
            },
            mode: raw.mode.as_ref().map_or(Mode::Forward, |m| *m.get_ref()),
            allow: match &raw.allow {
                Some(rules) => AllowList::new(self.each(&key(index, "allow"), rules)?),
                None => AllowList::default(),
            },
            proxy_auth: match &raw.proxy_auth {
                Some(text) => {
                    Some(self.check(&key(index, "proxy_auth"), text, config::parse_credentials)?)
                }
                None => None,
            },
            send_proxy: match &raw.send_proxy {
                Some(text) => Some(self.check(&key(index, "send_proxy"), text, str::parse)?),
                None => None,
            },
            send_proxy_tlvs: match &raw.send_proxy_tlvs {
                Some(names) => self.each(&key(index, "send_proxy_tlvs"), names)?,
                None => CarriedTlvs::default(),
            },
            accept_proxy: raw.accept_proxy.unwrap_or(false),
            header_timeout: self
                .timeout(&key(index, "header_timeout"), raw.header_timeout.as_ref())?
                .unwrap_or(config::DEFAULT_HEADER_TIMEOUT),
            protocol,
            udp_idle_timeout: self
                .timeout(
                    &key(index, "udp_idle_timeout"),
                    raw.udp_idle_timeout.as_ref(),
                )?
                .unwrap_or(config::DEFAULT_UDP_IDLE_TIMEOUT),
            udp_max_sessions: match &raw.udp_max_sessions {
                Some(n) => self.positive(&key(index, "udp_max_sessions"), n)? as usize,
                None => defaults.max_connections,
            },
            max_conns_per_client: match &raw.max_conns_per_client {
                Some(n) => Some(self.positive(&key(index, "max_conns_per_client"), n)?),
                None => None,
            },
            conn_rate_per_client: match &raw.conn_rate_per_client {
                Some(text) => {
                    Some(self.check(&key(index, "conn_rate_per_client"), text, str::parse)?)
                }
                None => None,
            },
            per_client_prefix: match &raw.per_client_prefix {
                Some(text) => self.check(&key(index, "per_client_prefix"), text, str::parse)?,
                None => ClientPrefix::default(),
            },
            client_acl: ClientAcl {
                allow: match &raw.client_allow {
                    Some(rules) => self.each(&key(index, "client_allow"), rules)?,
                    None => Vec::new(),
                },
                deny: match &raw.client_deny {
                    Some(rules) => self.each(&key(index, "client_deny"), rules)?,
                    None => Vec::new(),
                },
            },
            queue_timeout: self
                .duration(&key(index, "queue_timeout"), raw.queue_timeout.as_ref())?
                .filter(|d| !d.is_zero()),
            sni: sni::Rule {
                names: match &raw.sni {
                    Some(names) => self.each(&key(index, "sni"), names)?,
                    None => Vec::new(),
                },
                alpn: match &raw.alpn {
                    Some(list) => list
                        .get_ref()
                        .iter()
                        .map(|text| sni::parse_protocol(text))
                        .collect::<Result<_, _>>()
                        .map_err(|err| self.error(&key(index, "alpn"), list.span(), &err))?,
                    None => Vec::new(),
                },
                default: raw.default.as_ref().is_some_and(|d| *d.get_ref()),
            },
        })
    }

    fn listen(
        &mut self,
        key: &str,
        raw: &Spanned<OneOrMany>,
    ) -> Result<(Protocol, Vec<SocketAddr>, Vec<UnixAddr>), FileError> {
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
        let mut unix_addrs = Vec::new();
        let mut first = None;
        for text in texts {
            let (protocol, rest) = if UnixAddr::is_unix(text) {
                (Protocol::Tcp, text.as_str())
            } else {
                config::split_scheme(text)
            };
            if *first.get_or_insert(protocol) != protocol {
                let message = format!("'{text}' mixes udp and tcp listen addresses in one route");
                return Err(self.error(key, raw.span(), &message));
            }
            if UnixAddr::is_unix(text) {
                let addr: UnixAddr = text
                    .parse()
                    .map_err(|err: String| self.error(key, raw.span(), &err))?;
                if unix_addrs.contains(&addr) {
                    return Err(self.error(key, raw.span(), &format!("{addr} is listed twice")));
                }
                unix_addrs.push(addr);
                continue;
            }
            for addr in self
                .listen_addresses(rest)
                .map_err(|err| self.error(key, raw.span(), &err))?
            {
                if addr.port() != 0 && addrs.contains(&addr) {
                    return Err(self.error(key, raw.span(), &format!("{addr} is listed twice")));
                }
                addrs.push(addr);
            }
        }
        if addrs.len() > MAX_LISTENERS {
            let message = format!("{} addresses, at most {MAX_LISTENERS}", addrs.len());
            return Err(self.error(key, raw.span(), &message));
        }
        Ok((first.unwrap_or_default(), addrs, unix_addrs))
    }

    /// One `listen` entry's addresses: a literal, or every address of a host name (by the file's
    /// resolver, which must answer for a listen name: there is nothing to listen on otherwise).
    fn listen_addresses(&mut self, text: &str) -> Result<Vec<SocketAddr>, String> {
        match ListenSpec::parse(text)? {
            ListenSpec::Literal(addr) => Ok(vec![addr]),
            ListenSpec::Name => (self.resolve)(text),
        }
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
            let addrs = config::upstream_addr::addresses_of(&name, self.resolve);
            upstreams.push(UpstreamConfig {
                name,
                addrs,
                weight,
            });
        }
        Ok(upstreams)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{accepts, rejects, ROUTE};
    use crate::config::Mode;
    use crate::wire::proxy_protocol::{TlvKind, Version};
    use std::time::Duration;

    #[test]
    fn test_udp_routes() {
        let config = accepts("[[route]]\nlisten = \"udp://127.0.0.1:53\"\nupstreams = [\"udp://127.0.0.1:5353\"]\nudp_idle_timeout = \"5s\"\nudp_max_sessions = 9\n\n[[route]]\nlisten = \"127.0.0.1:53\"\nupstreams = [\"127.0.0.1:5353\"]\n");
        let udp = &config.routes[0];
        assert_eq!(udp.protocol, crate::config::Protocol::Udp);
        assert_eq!(
            udp.upstreams[0].addrs,
            Ok(vec!["127.0.0.1:5353".parse().expect("addr")])
        );
        assert_eq!(
            (udp.udp_idle_timeout, udp.udp_max_sessions),
            (Duration::from_secs(5), 9)
        );
        assert_eq!(config.routes[1].protocol, crate::config::Protocol::Tcp);
        rejects(
            "[[route]]\nlisten = \"udp://127.0.0.1:53\"\nupstreams = [\"127.0.0.1:53\"]\n",
            "test.toml:3: route[0].upstreams: upstream '127.0.0.1:53' is tcp but the route listens on udp://127.0.0.1:53 (udp)",
            &[],
        );
        rejects(
            "[[route]]\nlisten = [\"udp://127.0.0.1:53\", \"127.0.0.1:54\"]\nupstreams = [\"udp://127.0.0.1:53\"]\n",
            "test.toml:2: route[0].listen: '127.0.0.1:54' mixes udp and tcp",
            &[],
        );
        rejects(
            "[[route]]\nlisten = \"udp://127.0.0.1:53\"\nupstreams = [\"udp://127.0.0.1:53\"]\nhealth_interval = \"1s\"\n",
            "test.toml:3: route[0].upstreams: udp route udp://127.0.0.1:53 cannot take",
            &["health_interval"],
        );
        rejects(
            "[[route]]\nlisten = \"udp://127.0.0.1:53\"\nupstreams = [\"udp://127.0.0.1:53\"]\nhealth_expect = \"+PONG\"\n",
            "test.toml:3: route[0].upstreams: udp route udp://127.0.0.1:53 cannot take",
            &["health_expect"],
        );
        rejects(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:9\"]\nhealth_expect = \"+PONG\"\n",
            "test.toml:4: route[0].health_expect: health_expect is set but health_interval is off",
            &[],
        );
    }

    #[test]
    fn test_no_upstream_is_rejected() {
        rejects(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = []\n",
            "test.toml:3: route[0].upstreams: between 1 and",
            &[],
        );
        rejects(
            "[[route]]\nlisten = \"127.0.0.1:0\"\n",
            "test.toml:2: route[0].upstreams: missing",
            &[],
        );
    }

    /// A listen host name is every address the resolver gives it; one that does not resolve is refused
    /// (unlike an upstream's, there would be nothing to listen on).
    #[test]
    fn test_listen_host_names() {
        let config = accepts(
            "[[route]]\nlisten = [\"known.web:80\", \"[::1]:81\"]\nupstreams = [\"10.0.0.1:80\"]\n",
        );
        let expected: Vec<std::net::SocketAddr> = ["10.9.9.9:80", "10.9.9.8:80", "[::1]:81"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        assert_eq!(config.routes[0].listen, expected);
        rejects(
            "[[route]]\nlisten = \"unknown.web:80\"\nupstreams = [\"10.0.0.1:80\"]\n",
            "test.toml:2: route[0].listen: cannot resolve 'unknown.web:80'",
            &[],
        );
    }

    #[test]
    fn test_bad_addresses_are_rejected() {
        rejects(
            "[[route]]\nlisten = \"nope\"\nupstreams = [\"10.0.0.1:80\"]\n",
            "test.toml:2: route[0].listen: invalid listen address 'nope'",
            &["HOST:PORT", "localhost:8080"],
        );
        rejects(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [{ addr = \"10.0.0.1:80\", weight = 0 }]\n",
            "test.toml:3: route[0].upstreams: ",
            &["weight"],
        );
    }

    /// A name that does not resolve is no error: the route starts with that upstream down.
    #[test]
    fn test_unresolvable_upstream_is_accepted_with_its_error() {
        let config =
            accepts("[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"nowhere.invalid:80\"]\n");
        let route = &config.routes[0];
        assert_eq!(
            route.upstreams[0].addrs,
            Err("cannot resolve 'nowhere.invalid:80'".to_string())
        );
        // A name may have several addresses: three attempts by default even with one upstream.
        assert_eq!(route.connect_attempts, 3);
        assert_eq!(route.resolve_interval, Some(Duration::from_secs(30)));
    }

    /// Unix listen addresses: with TCP ones on a route, each once across routes, never with SNI; the
    /// mode is octal.
    #[test]
    fn test_unix_listen_addresses() {
        let both = ROUTE.replace(
            "\"127.0.0.1:0\"",
            "[\"127.0.0.1:0\", \"unix:/run/a.sock\", \"unix:@b\"]",
        );
        let config = accepts(&format!("{both}unix_mode = \"0600\"\n"));
        let route = &config.routes[0];
        assert_eq!(route.listen.len(), 1);
        assert_eq!(
            route.listen_unix,
            vec![
                crate::config::unix::UnixAddr::Path("/run/a.sock".into()),
                crate::config::unix::UnixAddr::Abstract("b".into())
            ]
        );
        assert_eq!(route.unix_mode, 0o600);
        assert_eq!(accepts(&both).routes[0].unix_mode, 0o660);
        let only = ROUTE.replace("\"127.0.0.1:0\"", "\"unix:/run/a.sock\"");
        rejects(
            &format!("{only}name = \"x\"\n{only}name = \"y\"\n"),
            "test.toml: route[1].listen: unix:/run/a.sock is used by two routes",
            &[],
        );
        rejects(
            &format!("{only}default = true\n"),
            "test.toml: route[0].listen: unix:/run/a.sock: a Unix listener takes no part in SNI routing",
            &[],
        );
        rejects(
            &ROUTE.replace("\"127.0.0.1:0\"", "[\"unix:@b\", \"unix:@b\"]"),
            "test.toml:2: route[0].listen: unix:@b is listed twice",
            &[],
        );
        rejects(
            &ROUTE.replace("\"127.0.0.1:0\"", "\"unix:\""),
            "test.toml:2: route[0].listen: invalid Unix address 'unix:'",
            &[],
        );
        rejects(
            &format!("{only}unix_mode = \"0999\"\n"),
            "test.toml:",
            &["unix_mode", "invalid unix mode '0999'"],
        );
    }

    #[test]
    fn test_sni_values_are_checked() {
        rejects(
            &format!("{ROUTE}sni = [\"ok.example\", \"10.0.0.1\"]\n"),
            "test.toml:4: route[0].sni: '10.0.0.1' is neither a host name nor *. and one",
            &[],
        );
        rejects(
            &format!("{ROUTE}sni = [\"a.example\"]\nalpn = [\"\"]\n"),
            "test.toml:5: route[0].alpn: '' is not an ALPN protocol name",
            &[],
        );
        rejects(
            &format!("{ROUTE}alpn = [\"h2\"]\n"),
            "test.toml:4: route[0].sni: alpn needs sni",
            &[],
        );
        rejects(
            "[[route]]\nlisten = \"127.0.0.1:0\"\nmode = \"connect\"\nallow = [\"10.0.0.0/8:443\"]\ndefault = true\n",
            "test.toml:5: route[0].sni: sni and default apply to forward routes",
            &[],
        );
    }

    #[test]
    fn test_connect_route_keys() {
        let config = accepts("[[route]]\nlisten = \"127.0.0.1:0\"\nmode = \"connect\"\nallow = [\"10.0.0.0/8:443\", \".example.com:*\"]\nproxy_auth = \"u:p\"\nsend_proxy = \"v2\"\naccept_proxy = true\nheader_timeout = \"3s\"\n");
        let route = &config.routes[0];
        assert_eq!(route.mode, Mode::Connect);
        assert!(route.upstreams.is_empty());
        assert_eq!(route.proxy_auth.as_deref(), Some("Basic dTpw"));
        assert_eq!(route.send_proxy, Some(Version::V2));
        assert!(route.accept_proxy);
        assert_eq!(route.header_timeout, Duration::from_secs(3));
    }

    #[test]
    fn test_send_proxy_tlvs() {
        let config = accepts(&format!(
            "{ROUTE}send_proxy = \"v2\"\naccept_proxy = true\nsend_proxy_tlvs = [\"unique_id\", \"authority\"]\n"
        ));
        let tlvs = config.routes[0].send_proxy_tlvs;
        assert!(tlvs.contains(TlvKind::Authority) && tlvs.contains(TlvKind::UniqueId));
        assert!(!tlvs.contains(TlvKind::Alpn));
        rejects(
            &format!("{ROUTE}send_proxy = \"v2\"\naccept_proxy = true\nsend_proxy_tlvs = [\"alpn\", \"sni\"]\n"),
            "test.toml:6: route[0].send_proxy_tlvs: unknown TLV 'sni'",
            &[],
        );
        for (settings, line) in [
            ("send_proxy = \"v1\"\naccept_proxy = true\n", 6),
            ("accept_proxy = true\n", 5),
            ("send_proxy = \"v2\"\n", 5),
        ] {
            rejects(
                &format!("{ROUTE}{settings}send_proxy_tlvs = [\"alpn\"]\n"),
                &format!("test.toml:{line}: route[0].send_proxy_tlvs: [alpn] needs send_proxy = \"v2\" and accept_proxy = true"),
                &[],
            );
        }
        let none = accepts(&format!("{ROUTE}send_proxy_tlvs = []\n"));
        assert!(none.routes[0].send_proxy_tlvs.is_empty());
    }

    #[test]
    fn test_connect_route_errors_name_line_and_key() {
        let connect = "[[route]]\nlisten = \"127.0.0.1:0\"\nmode = \"connect\"\n";
        rejects(
            &format!("{connect}allow = [\"10.0.0.0/99:1\"]\n"),
            "test.toml:4: route[0].allow: invalid allow rule '10.0.0.0/99:1'",
            &[],
        );
        rejects(
            connect,
            "test.toml:3: route[0].mode: connect mode needs an allow-list",
            &[],
        );
        rejects(
            &format!("{ROUTE}allow = [\"*:1\"]\n"),
            "test.toml:",
            &["only apply to connect mode"],
        );
        rejects(
            &format!("{ROUTE}send_proxy = \"v3\"\n"),
            "test.toml:4: route[0].send_proxy",
            &[],
        );
    }
}
