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
//!
//! Three steps, a module each: `raw.rs` is the file as serde reads it (TOML types, unknown keys
//! refused), `validate.rs` checks every value and the rules across settings and routes, and
//! `render.rs` turns a refusal into its one line, `FILE:LINE: KEY: message`.

mod raw;
mod render;
mod validate;

use std::path::Path;
use std::time::Duration;

use crate::config::{Addresses, Config};

/// Why a file was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// The file says something wrong (a usage error: exit 2 at start).
    Invalid(String),
    /// The file could not be read (also exit 2 at start: a `--config` that names no readable file is bad input too). A host name that does not resolve is no error: its
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
    let raw = toml::from_str(text).map_err(|err| render::parser_error(label, text, &err))?;
    validate::config(label, text, raw, defaults, resolve)
}

/// For unit tests: the one route of a file listening on `127.0.0.1:0` with upstream `127.0.0.1:9`, plus
/// the TOML lines `extra`; names are IP literals, resolved without DNS.
#[cfg(test)]
pub(crate) fn test_route(extra: &str) -> crate::config::RouteConfig {
    let text =
        format!("[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:9\"]\n{extra}");
    let mut resolve = |name: &str| -> Addresses {
        name.parse()
            .map(|addr| vec![addr])
            .map_err(|_| name.to_string())
    };
    let defaults = Defaults {
        max_connections: 10,
        shutdown_timeout: Duration::from_secs(1),
    };
    parse("test.toml", &text, defaults, &mut resolve)
        .map(|mut config| config.routes.remove(0))
        .expect("valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;

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

    /// The file `test.toml` with `text`, resolved by a fake resolver: an IP literal is itself, a name
    /// under `known.` has two addresses, any other does not resolve.
    fn parse_text(text: &str) -> Result<Config, FileError> {
        parse("test.toml", text, DEFAULTS, &mut fake_resolve)
    }

    /// The config of a file the test expects to be valid.
    pub(super) fn accepts(text: &str) -> Config {
        parse_text(text).unwrap_or_else(|err| panic!("expected a valid file, got {err:?}"))
    }

    /// Asserts that `text` is refused as invalid, with a message that starts with `prefix` and names
    /// each of `parts`.
    pub(super) fn rejects(text: &str, prefix: &str, parts: &[&str]) {
        match parse_text(text) {
            Err(FileError::Invalid(message)) => assert!(
                message.starts_with(prefix) && parts.iter().all(|part| message.contains(part)),
                "{message}"
            ),
            other => panic!("expected an invalid file, got {other:?}"),
        }
    }

    /// A route of the forward mode with one upstream, to which a test adds keys.
    pub(super) const ROUTE: &str =
        "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"10.0.0.1:80\"]\n";

    #[test]
    fn test_full_route() {
        let config = accepts(
            r#"
shutdown_timeout = "5s"
metrics = "127.0.0.1:9100"
admin = "unix:/run/edgefwd/admin.sock"

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
        );
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(
            config.metrics,
            Some("127.0.0.1:9100".parse().expect("addr"))
        );
        assert_eq!(
            config.admin,
            Some("unix:/run/edgefwd/admin.sock".parse().expect("admin"))
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

    /// `access_log` and `log_format` are top-level keys, off and `text` when absent; a bad format names
    /// its line and value.
    #[test]
    fn test_access_log_keys() {
        use crate::config::access_log::{Destination, Format};
        let config = accepts(&format!(
            "access_log = \"/var/log/edgefwd.log\"\nlog_format = \"json\"\n{ROUTE}"
        ));
        let path = std::path::PathBuf::from("/var/log/edgefwd.log");
        assert_eq!(config.access_log.destination, Some(Destination::File(path)));
        assert_eq!(config.access_log.format, Format::Json);
        let plain = accepts(ROUTE);
        assert_eq!(plain.access_log.destination, None);
        assert_eq!(plain.access_log.format, Format::Text);
        rejects(
            &format!("log_format = \"xml\"\n{ROUTE}"),
            "test.toml:1: log_format: invalid log format 'xml'",
            &[],
        );
    }

    #[test]
    fn test_empty_file_needs_a_route() {
        rejects("", "test.toml: no [[route]]", &[]);
        rejects("stats_interval = \"5s\"\n", "test.toml: no [[route]]", &[]);
    }

    #[test]
    fn test_bad_admin_address_names_its_line() {
        let text = format!("admin = \"admin.example:9091\"\n{ROUTE}");
        rejects(&text, "test.toml:1: admin: ", &["'admin.example:9091'"]);
    }
}
