//! The route the flags describe, when there is no `--config`: [`Cli`](super::Cli) -> [`Config`], checked as
//! the file's routes are. The tests hold the flags and the file to the same table of settings.
//!
//! A binary-only module (`#[path]` from `main.rs`, under `src/main/`, which tests/modules.rs skips: it
//! is not a module of the library).

use edgefwd::config::clients::ClientAcl;
use edgefwd::config::dns;
use edgefwd::config::file::Defaults;
use edgefwd::config::unix::UnixAddr;
use edgefwd::config::{self, Config, Protocol, RouteConfig, Splice, UpstreamConfig};
use edgefwd::wire::allow::AllowList;

use super::{usage, Cli, Failure};

/// The flags describe one route.
pub(super) fn from_flags(cli: Cli, defaults: Defaults) -> Result<Config, Failure> {
    let text = cli
        .listen
        .ok_or_else(|| String::from("--listen is required without --config"))
        .map_err(usage)?;
    let (protocol, listen, listen_unix) = if UnixAddr::is_unix(&text) {
        let addr = text.parse::<UnixAddr>().map_err(usage)?;
        (Protocol::Tcp, Vec::new(), vec![addr])
    } else {
        let (protocol, rest) = config::split_scheme(&text);
        let addrs = dns::listen_addresses(rest).map_err(usage)?;
        (protocol, addrs, Vec::new())
    };
    let mut upstreams: Vec<UpstreamConfig> = Vec::with_capacity(cli.upstream.len());
    for (name, weight) in cli.upstream {
        if upstreams.iter().any(|u| u.name == name) {
            return Err(Failure {
                code: 2,
                message: format!("--upstream '{name}' is given twice"),
            });
        }
        // A name that does not resolve is no start failure: its upstream starts down (src/upstream/endpoint/readdress.rs).
        let addrs = config::upstream_addr::addresses_of(&name, &mut dns::upstream_addresses);
        upstreams.push(UpstreamConfig {
            name,
            addrs,
            weight,
        });
    }
    if upstreams.len() > config::MAX_UPSTREAMS {
        return Err(Failure {
            code: 2,
            message: format!("at most {} --upstream flags", config::MAX_UPSTREAMS),
        });
    }
    let connect_attempts = cli.connect_attempts.map_or_else(
        || config::default_connect_attempts(&upstreams),
        |n| n as usize,
    );
    let route = RouteConfig {
        name: "default".into(),
        named: false,
        listen,
        listen_unix,
        unix_mode: cli.unix_mode,
        connect_attempts: connect_attempts.min(config::most_endpoints(&upstreams)),
        resolve_interval: match cli.resolve_interval {
            Some(interval) => Some(interval).filter(|d| !d.is_zero()),
            None => config::default_resolve_interval(&upstreams),
        },
        upstreams,
        balance: cli.balance,
        buffer_size: cli.buffer_size,
        max_connections: cli
            .max_connections
            .map_or(defaults.max_connections, |n| n as usize),
        connect_timeout: cli.connect_timeout,
        idle_timeout: cli.idle_timeout.filter(|d| !d.is_zero()),
        fin_timeout: cli.fin_timeout,
        max_connection_duration: cli.max_connection_duration.filter(|d| !d.is_zero()),
        health_interval: cli.health_interval.filter(|d| !d.is_zero()),
        health_timeout: cli.health_timeout,
        fall: cli.fall,
        rise: cli.rise,
        health_send: cli.health_send,
        health_expect: cli.health_expect,
        nodelay: !cli.no_nodelay,
        keepalive: cli.keepalive,
        backlog: cli.backlog,
        mode: cli.mode.unwrap_or_default(),
        allow: AllowList::new(cli.allow),
        proxy_auth: cli.proxy_auth,
        send_proxy: cli.send_proxy,
        send_proxy_tlvs: cli.send_proxy_tlvs.unwrap_or_default(),
        accept_proxy: cli.accept_proxy,
        header_timeout: cli.header_timeout,
        protocol,
        udp_idle_timeout: cli.udp_idle_timeout,
        udp_max_sessions: cli
            .udp_max_sessions
            .map_or(defaults.max_connections, |n| n as usize),
        max_conns_per_client: cli.max_conns_per_client,
        conn_rate_per_client: cli.conn_rate_per_client,
        per_client_prefix: cli.per_client_prefix,
        client_acl: ClientAcl {
            allow: cli.client_allow,
            deny: cli.client_deny,
        },
        queue_timeout: cli.queue_timeout.filter(|d| !d.is_zero()),
        sni: Default::default(),
    };
    config::check_mode(&route).map_err(|message| Failure { code: 2, message })?;
    config::check_protocol(&route).map_err(|message| Failure { code: 2, message })?;
    config::check_probe(&route).map_err(|message| Failure { code: 2, message })?;
    if !config::tlvs_have_a_source(&route) {
        return Err(Failure {
            code: 2,
            message: format!(
                "--send-proxy-tlvs {} needs --send-proxy v2 and --accept-proxy (TLVs are carried from the client's v2 header into a v2 header)",
                route.send_proxy_tlvs.names()
            ),
        });
    }
    Ok(Config {
        routes: vec![route],
        shutdown_timeout: cli.shutdown_timeout,
        metrics: cli.metrics,
        admin: cli.admin,
        admin_token: None,
        stats_interval: cli.stats_interval.filter(|d| !d.is_zero()),
        file: None,
        splice: Splice::default(),
        pipe_size: config::DEFAULT_PIPE_SIZE,
        threads: 1,
        prewarm: 0,
        // A global setting: `configure` fills it in for the flags and the file alike.
        access_log: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    //! The flags and the file against src/config/settings/: a setting declared there but read by one of them
    //! only, or with another default, fails here.

    use super::*;
    use clap::{CommandFactory, Parser};
    use edgefwd::config::file;
    use edgefwd::config::settings::{Base, OnReload, Setting, ROUTE};
    use edgefwd::config::Addresses;
    use std::time::Duration;

    const DEFAULTS: Defaults = Defaults {
        max_connections: 100,
        shutdown_timeout: Duration::from_secs(30),
    };

    /// The flags that are not a route's (they also work with `--config`), and clap's own.
    const GLOBAL_FLAGS: [&str; 21] = [
        "config",
        "check",
        "pid_file",
        "user",
        "group",
        "shutdown_timeout",
        "metrics",
        "admin",
        "admin_token",
        "stats_interval",
        "trace",
        "threads",
        "prewarm",
        "splice",
        "pipe_size",
        "upgrade_socket",
        "upgrade_from",
        "access_log",
        "log_format",
        "help",
        "version",
    ];

    fn base(base: Base) -> (Vec<&'static str>, &'static str) {
        match base {
            Base::Forward => (
                vec![
                    "--listen",
                    "127.0.0.1:7",
                    "--upstream",
                    "127.0.0.1:9",
                    "--upstream",
                    "127.0.0.1:10",
                ],
                "listen = \"127.0.0.1:7\"\nupstreams = [\"127.0.0.1:9\", \"127.0.0.1:10\"]\n",
            ),
            Base::Udp => (
                vec![
                    "--listen",
                    "udp://127.0.0.1:7",
                    "--upstream",
                    "udp://127.0.0.1:9",
                    "--upstream",
                    "udp://127.0.0.1:10",
                ],
                "listen = \"udp://127.0.0.1:7\"\nupstreams = [\"udp://127.0.0.1:9\", \"udp://127.0.0.1:10\"]\n",
            ),
            Base::Connect => (
                vec![
                    "--listen",
                    "127.0.0.1:7",
                    "--mode",
                    "connect",
                    "--allow",
                    "*:1",
                ],
                "listen = \"127.0.0.1:7\"\nmode = \"connect\"\nallow = [\"*:1\"]\n",
            ),
        }
    }

    /// The route the flags describe, named as the file's would be.
    fn from_cli(args: &[&str]) -> RouteConfig {
        let cli = Cli::try_parse_from(std::iter::once("edgefwd").chain(args.iter().copied()))
            .unwrap_or_else(|err| panic!("{args:?}: {err}"));
        let mut config = from_flags(cli, DEFAULTS)
            .unwrap_or_else(|failure| panic!("{args:?}: {}", failure.message));
        let mut route = config.routes.remove(0);
        route.name = "route-1".into();
        route
    }

    fn from_toml(table: &str) -> RouteConfig {
        let text = format!("[[route]]\n{table}\n");
        let mut resolve = |name: &str| -> Addresses {
            name.parse()
                .map(|addr| vec![addr])
                .map_err(|_| format!("cannot resolve '{name}'"))
        };
        let mut config = file::parse("test.toml", &text, DEFAULTS, &mut resolve)
            .unwrap_or_else(|err| panic!("{text}: {}", err.message()));
        config.routes.remove(0)
    }

    fn with_example(setting: &Setting) -> Option<(RouteConfig, RouteConfig, RouteConfig)> {
        let example = setting.example?;
        let (mut flags, table) = base(example.base);
        let plain = from_cli(&flags);
        flags.extend_from_slice(example.flags);
        let toml = format!("{table}{}\n", example.toml);
        Some((plain, from_cli(&flags), from_toml(&toml)))
    }

    /// Nothing set: the flags and the file give the same route, so every default agrees.
    #[test]
    fn test_flags_and_file_have_the_same_defaults() {
        for which in [Base::Forward, Base::Connect, Base::Udp] {
            let (flags, table) = base(which);
            assert_eq!(from_cli(&flags), from_toml(table), "{which:?}");
        }
    }

    /// Each setting's example, given as flags and as a file, is the same route, which is not the default
    /// one, and which the reload comparison tells from it.
    #[test]
    fn test_every_setting_is_read_the_same_by_flags_and_file() {
        let mut tried = 0;
        for setting in ROUTE {
            let Some((plain, flagged, filed)) = with_example(setting) else {
                continue;
            };
            tried += 1;
            assert_eq!(flagged, filed, "{}: flags and file disagree", setting.key);
            assert_ne!(
                flagged, plain,
                "{}: the example changed nothing",
                setting.key
            );
            assert_eq!(
                !edgefwd::upstream::route::same_settings(&plain, &flagged),
                setting.on_reload == OnReload::Replaces,
                "{}: the reload comparison",
                setting.key
            );
        }
        // Without one: name, listen, upstreams, mode, allow (the base routes), and the file-only SNI
        // settings sni, alpn, default (several routes on one address; the flags make one route).
        assert!(tried >= ROUTE.len() - 8, "most settings have an example");
    }

    /// A default the docs give as one TOML literal is the real default.
    #[test]
    fn test_documented_defaults_are_the_defaults() {
        for setting in ROUTE {
            let Some(literal) = setting
                .default
                .strip_prefix('`')
                .and_then(|rest| rest.strip_suffix('`'))
                .filter(|inner| !inner.contains('`'))
            else {
                continue;
            };
            if setting.key == "name" {
                continue; // `route-N` is a pattern, not a value
            }
            let (flags, table) = base(setting.example.map_or(Base::Forward, |e| e.base));
            let explicit = from_toml(&format!("{table}{} = {literal}\n", setting.key));
            assert_eq!(
                from_cli(&flags),
                explicit,
                "{}: documented default {literal}",
                setting.key
            );
        }
    }

    /// The README's flag table has a row for every flag of the binary, global ones included (the route
    /// settings' rows are also checked against their declarations, in src/config/settings/).
    #[test]
    fn test_readme_lists_every_flag() {
        let readme = include_str!("../../README.md");
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg
                .get_long()
                .filter(|long| !["help", "version"].contains(long))
            else {
                continue;
            };
            assert!(
                readme.contains(&format!("| `--{long}")),
                "README.md's flag table has no row for --{long}"
            );
        }
    }

    /// Every flag of the binary is a route setting of src/config/settings/ or a global one.
    #[test]
    fn test_every_flag_is_declared() {
        let declared = edgefwd::config::settings::flag_ids();
        for arg in Cli::command().get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                declared.contains(&id) || GLOBAL_FLAGS.contains(&id),
                "--{id} is neither a route setting in src/config/settings/ nor a global flag"
            );
        }
        for id in declared {
            assert!(
                Cli::command().get_arguments().any(|arg| arg.get_id() == id),
                "src/config/settings/ declares --{id}, which the binary does not take"
            );
        }
    }
}
