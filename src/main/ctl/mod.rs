//! `edgefwd ctl`: the admin API's client in the same binary, so an operator needs no curl or jq to see
//! and steer a running edgefwd (docs/admin.md, "edgefwd ctl").
//!
//! Each subcommand is one request ([`http`]) and one answer printed as an aligned table ([`view`],
//! [`table`]), or the server's JSON unchanged with `--json`; `ctl top` ([`top`]) repeats requests to
//! draw a live view. This side uses no reactor and nothing of the forwarder but its syntax of durations
//! and Unix addresses: it is a plain blocking client.
//!
//! Failures are one line naming what failed; the exit code says whose fault it is: 2 for bad arguments
//! (clap's own, a bad `--admin`, a token file that cannot be read, a value the server answers 400 to),
//! 1 for everything at run time (unreachable, timed out, 401, no such connection or upstream).
//!
//! A binary-only module (`#[path]` from `main.rs`, under `src/main/`, which tests/modules.rs skips).

mod counters;
mod http;
mod table;
mod terminal;
#[cfg(test)]
mod test_pty;
mod top;
mod view;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use edgefwd::config;
use edgefwd::config::unix::UnixAddr;

use super::{usage, Failure};
use http::{Client, Endpoint, Error};

/// Where `ctl` looks without `--admin` or `EDGEFWD_ADMIN`: the address docs/admin.md suggests.
const DEFAULT_ADMIN: &str = "127.0.0.1:9091";

/// How long one request may take, connect to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Ask a running edgefwd's admin API (its --admin) about its connections, routes and upstreams, or
/// steer them.
#[derive(Debug, Args)]
pub(super) struct Ctl {
    /// The admin API: IP:PORT, HOST:PORT, unix:/PATH or unix:@NAME [default: $EDGEFWD_ADMIN, else 127.0.0.1:9091].
    // The ids differ from the forwarder's `--admin` and `--admin-token`: clap hands a global
    // argument's value up to the parent command too, where those ids have other types.
    #[arg(id = "ctl_admin", long = "admin", value_name = "ADDR", global = true)]
    admin: Option<String>,

    /// A file holding the bearer token the admin API was started with (its --admin-token).
    #[arg(
        id = "ctl_admin_token",
        long = "admin-token",
        value_name = "FILE",
        global = true
    )]
    admin_token: Option<PathBuf>,

    /// Print the admin API's JSON answer unchanged instead of a table.
    #[arg(id = "ctl_json", long = "json", global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Ask(Ask),
    /// A live view refreshed every --interval: pairs and throughput per route and upstream, the busiest
    /// and the stuck pairs. q or Ctrl-C quits.
    Top(top::TopArgs),
}

/// The commands that are one request and its answer.
#[derive(Debug, Subcommand)]
enum Ask {
    /// List the live connection pairs (filters combine).
    Connections {
        /// Only this route's pairs.
        #[arg(long, value_name = "NAME")]
        route: Option<String>,
        /// Only pairs older than this (e.g. 5s, 500ms, 2m).
        #[arg(long, value_name = "DURATION", value_parser = duration_text)]
        older_than: Option<String>,
        /// Only pairs that are not moving (see docs/admin.md for the test).
        #[arg(long)]
        stuck: bool,
    },
    /// One pair: its fields, why it is not moving, and its last events as a timeline.
    Connection {
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Close one pair: FIN both ways, or with --rst reset both sockets.
    Close {
        #[arg(value_name = "ID")]
        id: u64,
        /// Reset (RST) instead of closing gracefully.
        #[arg(long)]
        rst: bool,
    },
    /// List the routes with their pairs and limits.
    Routes,
    /// List the upstreams with their health, admin state, weight and failures.
    Upstreams,
    /// Give an upstream no new pairs and let its live ones finish (until `enable`; survives reloads).
    Drain(Target),
    /// Like drain, and stop probing it.
    Disable(Target),
    /// Undo drain or disable.
    Enable(Target),
    /// Set an upstream's balancing weight.
    Weight {
        #[command(flatten)]
        target: Target,
        #[arg(value_name = "N")]
        weight: u32,
    },
}

/// The upstream an action names.
#[derive(Debug, Args)]
struct Target {
    /// The upstream's address as `ctl upstreams` shows it (127.0.0.1:9000, [::1]:9000, unix:/PATH).
    #[arg(value_name = "ADDR", value_parser = upstream_addr)]
    addr: UpstreamAddr,
    /// Only the upstream of this route [default: every route's with that address].
    #[arg(long, value_name = "NAME")]
    route: Option<String>,
}

/// An upstream address as the server names one: a socket address, or a Unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
enum UpstreamAddr {
    Socket(SocketAddr),
    Unix(UnixAddr),
}

/// `IP:PORT` or `unix:/PATH` / `unix:@NAME`; a host name is refused, the server knowing addresses only.
fn upstream_addr(text: &str) -> Result<UpstreamAddr, String> {
    if UnixAddr::is_unix(text) {
        return text.parse().map(UpstreamAddr::Unix);
    }
    text.parse().map(UpstreamAddr::Socket).map_err(|_| {
        format!("'{text}' is not an upstream address: expected IP:PORT, [IPv6]:PORT or unix:/PATH as `ctl upstreams` shows it")
    })
}

/// A duration flag that is checked here (a bad one exits 2 before any request) and sent as typed.
fn duration_text(text: &str) -> Result<String, String> {
    config::parse_duration(text).map(|_| text.to_string())
}

/// Runs one `ctl` command against the admin API.
pub(super) fn run(ctl: Ctl) -> Result<(), Failure> {
    let client = client(&ctl)?;
    match &ctl.command {
        Command::Top(_) if ctl.json => Err(usage(String::from(
            "--json does not apply to top (use `ctl connections --json`)",
        ))),
        Command::Top(args) => top::run(&client, args),
        Command::Ask(ask) => {
            let (method, path, body) = request(ask);
            let answer = call(&client, method, &path, body.as_deref())?;
            if ctl.json {
                return print(&answer.text);
            }
            let shown = show(ask, &answer.json).map_err(|why| format!("{method} {path}: {why}"))?;
            print(&shown)
        }
    }
}

/// A command's answer as text.
fn show(ask: &Ask, json: &Value) -> Result<String, String> {
    match ask {
        Ask::Connections { .. } => view::connections(json),
        Ask::Connection { .. } => view::connection(json),
        Ask::Close { .. } => view::closed(json),
        Ask::Routes => view::routes(json),
        Ask::Upstreams | Ask::Drain(_) | Ask::Disable(_) | Ask::Enable(_) | Ask::Weight { .. } => {
            view::upstreams(json)
        }
    }
}

/// `--admin` (or `EDGEFWD_ADMIN`, or the default) and `--admin-token`'s token.
fn client(ctl: &Ctl) -> Result<Client, Failure> {
    let admin = ctl
        .admin
        .clone()
        .or_else(|| {
            std::env::var("EDGEFWD_ADMIN")
                .ok()
                .filter(|a| !a.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
    let endpoint = Endpoint::parse(&admin).map_err(usage)?;
    let token = match &ctl.admin_token {
        Some(path) => Some(read_token(path).map_err(usage)?),
        None => None,
    };
    Ok(Client {
        endpoint,
        token,
        timeout: REQUEST_TIMEOUT,
    })
}

/// The token file's content without surrounding whitespace (a trailing newline is not part of the
/// token): read as the server reads its own `--admin-token` file, so both may use the same file.
fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        format!(
            "cannot read --admin-token {}: {}",
            path.display(),
            plain(&err)
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "--admin-token {}: the file is empty",
            path.display()
        ));
    }
    Ok(token.to_string())
}

/// The method, path (with its query) and body of a command's request.
fn request(ask: &Ask) -> (&'static str, String, Option<String>) {
    match ask {
        Ask::Connections {
            route,
            older_than,
            stuck,
        } => {
            let mut query = Vec::new();
            if let Some(route) = route {
                query.push(format!("route={}", encode(route)));
            }
            if let Some(older_than) = older_than {
                query.push(format!("older_than={}", encode(older_than)));
            }
            if *stuck {
                query.push(String::from("stuck=1"));
            }
            let path = match query.is_empty() {
                true => String::from("/connections"),
                false => format!("/connections?{}", query.join("&")),
            };
            ("GET", path, None)
        }
        Ask::Connection { id } => ("GET", format!("/connections/{id}"), None),
        Ask::Close { id, rst } => {
            let how = if *rst { "rst" } else { "fin" };
            ("DELETE", format!("/connections/{id}?how={how}"), None)
        }
        Ask::Routes => ("GET", String::from("/routes"), None),
        Ask::Upstreams => ("GET", String::from("/upstreams"), None),
        Ask::Drain(target) => ("POST", target.path("drain"), None),
        Ask::Disable(target) => ("POST", target.path("disable"), None),
        Ask::Enable(target) => ("POST", target.path("enable"), None),
        Ask::Weight { target, weight } => ("PUT", target.path("weight"), Some(weight.to_string())),
    }
}

impl Target {
    /// `/upstreams/ADDR/ACTION`, with `?route=` when one is named. A socket address goes as it is
    /// (`[::1]:9000`); a Unix one percent-encoded, its slashes being no path separators.
    fn path(&self, action: &str) -> String {
        let addr = match &self.addr {
            UpstreamAddr::Socket(addr) => addr.to_string(),
            UpstreamAddr::Unix(addr) => encode(&addr.to_string()),
        };
        match &self.route {
            Some(route) => format!("/upstreams/{addr}/{action}?route={}", encode(route)),
            None => format!("/upstreams/{addr}/{action}"),
        }
    }
}

/// A query value percent-encoded: every byte but the unreserved ones (RFC 3986) as `%XX`.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte))
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A successful answer: its text as sent and its JSON.
struct Answer {
    text: String,
    json: Value,
}

/// One request; anything but a 2xx JSON answer is a failure line naming the endpoint and the reason.
fn call(client: &Client, method: &str, path: &str, body: Option<&str>) -> Result<Answer, Failure> {
    let at = &client.endpoint;
    let response = client
        .request(method, path, body)
        .map_err(|err| describe(&format!("the admin API at {at}"), err))?;
    let json = serde_json::from_str::<Value>(&response.body);
    let reason = |json: &Result<Value, _>| match json {
        Ok(Value::Object(map)) => map
            .get("error")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| response.body.trim().to_string()),
        _ => response.body.trim().to_string(),
    };
    match response.status {
        200..=299 => {}
        400 => return Err(usage(format!("{method} {path}: {}", reason(&json)))),
        401 => {
            return Err(Failure::from(format!(
                "the admin API at {at} refused the request ({}): give the token file with --admin-token FILE",
                reason(&json)
            )))
        }
        status => {
            return Err(Failure::from(format!(
                "{method} {path}: {} (HTTP {status})",
                reason(&json)
            )))
        }
    }
    let json = json.map_err(|err| {
        format!(
            "the admin API at {at} answered {method} {path} with something other than JSON: {err}"
        )
    })?;
    Ok(Answer {
        text: response.body,
        json,
    })
}

/// A failed request as one line about `server` ("the admin API at 127.0.0.1:9091").
fn describe(server: &str, err: Error) -> String {
    match err {
        Error::Unreachable(err) => format!("cannot reach {server}: {}", plain(&err)),
        Error::Exchange(err) => format!("{server} did not answer: {}", plain(&err)),
        Error::Malformed(why) => format!("{server} answered no HTTP: {why}"),
    }
}

/// An I/O error as words: "connection refused", without the "(os error 111)" a user cannot act on.
fn plain(err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Prints `text` with a final newline; a closed stdout (`ctl ... | head`) is not an error worth a line.
fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let ending = if text.ends_with('\n') { "" } else { "\n" };
    match out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(ending.as_bytes()))
        .and_then(|()| out.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::from(format!(
            "cannot write the answer: {}",
            plain(&err)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `edgefwd ctl ARGS` as clap parses it.
    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        ctl: Ctl,
    }

    fn parse(args: &[&str]) -> Result<Ctl, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("ctl").chain(args.iter().copied())).map(|w| w.ctl)
    }

    fn path_of(args: &[&str]) -> (&'static str, String, Option<String>) {
        match parse(args).expect("parses").command {
            Command::Ask(ask) => request(&ask),
            Command::Top(_) => panic!("{args:?} is top"),
        }
    }

    #[test]
    fn test_requests_of_commands() {
        assert_eq!(path_of(&["connections"]).1, "/connections");
        assert_eq!(
            path_of(&[
                "connections",
                "--route",
                "web api",
                "--older-than",
                "5s",
                "--stuck"
            ])
            .1,
            "/connections?route=web%20api&older_than=5s&stuck=1"
        );
        assert_eq!(
            path_of(&["connection", "17"]),
            ("GET", "/connections/17".into(), None)
        );
        assert_eq!(
            path_of(&["close", "17", "--rst"]),
            ("DELETE", "/connections/17?how=rst".into(), None)
        );
        assert_eq!(path_of(&["close", "17"]).1, "/connections/17?how=fin");
        assert_eq!(
            path_of(&["drain", "[::1]:9000", "--route", "web"]),
            ("POST", "/upstreams/[::1]:9000/drain?route=web".into(), None)
        );
        assert_eq!(
            path_of(&["disable", "127.0.0.1:9000"]).1,
            "/upstreams/127.0.0.1:9000/disable"
        );
        assert_eq!(
            path_of(&["drain", "unix:/run/app.sock"]).1,
            "/upstreams/unix%3A%2Frun%2Fapp.sock/drain"
        );
        assert_eq!(
            path_of(&["enable", "127.0.0.1:9000"]).1,
            "/upstreams/127.0.0.1:9000/enable"
        );
        assert_eq!(
            path_of(&["weight", "127.0.0.1:9000", "3"]),
            (
                "PUT",
                "/upstreams/127.0.0.1:9000/weight".into(),
                Some("3".into())
            )
        );
        // The shared flags go before or after the command.
        let ctl = parse(&["routes", "--json", "--admin", "unix:/run/a.sock"]).expect("parses");
        assert!(ctl.json);
        assert_eq!(ctl.admin.as_deref(), Some("unix:/run/a.sock"));
    }

    /// Bad arguments are clap's errors (exit 2), each naming the value.
    #[test]
    fn test_bad_arguments_are_refused() {
        for (args, named) in [
            (&["connection", "seventeen"][..], "seventeen"),
            (
                &["connections", "--older-than", "5 parsecs"][..],
                "5 parsecs",
            ),
            (&["drain", "not-an-address"][..], "not-an-address"),
            (&["weight", "127.0.0.1:9000", "-1"][..], "-1"),
            (&["frobnicate"][..], "frobnicate"),
        ] {
            let err = parse(args).expect_err(named);
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains(named), "{args:?}: {err}");
        }
    }

    /// Through the binary's own parser: `ctl`'s shared flags, before or after the command, do not
    /// collide with the forwarder's flags of the same names.
    #[test]
    fn test_the_binary_parses_ctl() {
        use crate::{Cli, Command as Binary};
        for args in [
            &[
                "edgefwd",
                "ctl",
                "--admin",
                "unix:/a.sock",
                "--admin-token",
                "/t",
                "routes",
            ][..],
            &[
                "edgefwd",
                "ctl",
                "routes",
                "--admin",
                "unix:/a.sock",
                "--admin-token",
                "/t",
            ][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|err| panic!("{args:?}: {err}"));
            let Some(Binary::Ctl(ctl)) = cli.command else {
                panic!("{args:?}: not ctl");
            };
            assert_eq!(ctl.admin.as_deref(), Some("unix:/a.sock"), "{args:?}");
            assert_eq!(ctl.admin_token, Some(PathBuf::from("/t")), "{args:?}");
            assert!(matches!(ctl.command, Command::Ask(Ask::Routes)));
        }
    }

    #[test]
    fn test_encode_query_values() {
        assert_eq!(encode("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn test_plain_io_errors() {
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(plain(&refused), "connection refused");
    }

    #[test]
    fn test_token_file() {
        let path = std::env::temp_dir().join(format!("edgefwd-ctl-token-{}", std::process::id()));
        std::fs::write(&path, "  s3cret\n").expect("write");
        assert_eq!(read_token(&path), Ok(String::from("s3cret")));
        std::fs::write(&path, "\n").expect("write");
        assert!(read_token(&path).expect_err("empty").contains("empty"));
        std::fs::remove_file(&path).expect("remove");
        let missing = read_token(&path).expect_err("missing");
        assert!(
            missing.contains("cannot read --admin-token") && missing.contains("no such file"),
            "{missing}"
        );
    }
}
