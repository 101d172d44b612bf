//! `--config FILE`: several routes with their own listeners and upstreams; errors name file, line and key.

mod common;

use std::time::Duration;

use common::*;
use edgefwd::config::settings;

fn route(name: &str, listen: &str, upstream: &Backend) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nlisten = {listen}\nupstreams = [\"{}\"]\n",
        upstream.upstream_arg()
    )
}

#[test]
fn test_two_routes_each_to_its_own_backend() {
    let a = Backend::echo();
    let b = Backend::echo();
    let file = ConfigFile::new(&format!(
        "shutdown_timeout = \"5s\"\n\n{}\nbuffer_size = \"16k\"\n\n{}\nbalance = \"least-conn\"\n",
        route("alpha", "\"127.0.0.1:0\"", &a),
        route("beta", "\"127.0.0.1:0\"", &b),
    ));
    let fwd = Forwarder::start(&["--config", file.path()]);
    let alpha = fwd.route_addr("alpha");
    let beta = fwd.route_addr("beta");
    assert_eq!(fwd.addr(), alpha, "the first line is the first route's");
    echo_roundtrip(alpha, 256 * 1024, 64 * 1024);
    echo_roundtrip(beta, 256 * 1024, 64 * 1024);
    echo_roundtrip(beta, 1024, 1024);
    assert_eq!((a.accepted(), b.accepted()), (1, 2));
    let closes = fwd.wait_for_n_closes(3, Duration::from_secs(5));
    assert!(
        closes
            .iter()
            .any(|c| c.line.contains("route=beta")
                && c.line.contains(&format!("upstream={}", b.addr()))),
        "{closes:?}"
    );
}

#[test]
fn test_one_route_on_several_addresses() {
    let echo = Backend::echo();
    let file = ConfigFile::new(&route("multi", "[\"127.0.0.1:0\", \"[::1]:0\"]", &echo));
    let fwd = Forwarder::start(&["--config", file.path()]);
    // The start returns at the first listener's line; the second may be logged a moment later.
    let listening = |fwd: &Forwarder| -> Vec<_> {
        fwd.logs()
            .lines()
            .filter(|l| l.contains(" route=multi "))
            .filter_map(parse_listen_addr)
            .collect()
    };
    wait_until(Duration::from_secs(5), || listening(&fwd).len() >= 2);
    let addrs = listening(&fwd);
    assert_eq!(addrs.len(), 2, "{}", fwd.logs());
    for addr in addrs {
        echo_roundtrip(addr, 4096, 4096);
    }
    assert_eq!(echo.accepted(), 2);
}

#[test]
fn test_invalid_file_names_file_line_and_key() {
    let echo = Backend::echo();
    let file = ConfigFile::new(&format!(
        "{}\nconnect_timeout = \"5s\"\nbalance = \"round-robbin\"\n",
        route("web", "\"127.0.0.1:0\"", &echo)
    ));
    let (code, stderr) = run_edgefwd_expect_fail(&["--config", file.path()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line:\n{stderr}");
    let expected = format!(
        "edgefwd: error: {}:7: route[0].balance: unknown variant",
        file.path()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn test_bad_duration_in_file_names_its_key() {
    let echo = Backend::echo();
    let file = ConfigFile::new(&format!(
        "{}\nidle_timeout = \"10 minutes\"\n",
        route("web", "\"127.0.0.1:0\"", &echo)
    ));
    let (code, stderr) = run_edgefwd_expect_fail(&["--config", file.path()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(":6: route[0].idle_timeout: invalid duration '10 minutes'"),
        "{stderr}"
    );
}

#[test]
fn test_config_excludes_route_flags() {
    let file =
        ConfigFile::new("[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:9\"]\n");
    for flag in [
        ["--listen", "127.0.0.1:0"],
        ["--upstream", "127.0.0.1:9"],
        ["--connect-timeout", "1s"],
    ] {
        let (code, stderr) = run_edgefwd_expect_fail(&["--config", file.path(), flag[0], flag[1]]);
        assert_eq!(code, Some(2), "{flag:?}: {stderr}");
        assert!(stderr.contains("--config"), "{stderr}");
    }
}

/// A missing config file is bad input like a bad flag: exit 2 (README, Exit codes), at start and under
/// `--check`, with the path named.
#[test]
fn test_missing_file_is_a_usage_error() {
    for check in [&[][..], &["--check"][..]] {
        let mut args = vec!["--config", "/nonexistent/edgefwd.toml"];
        args.extend_from_slice(check);
        let (code, stderr) = run_edgefwd_expect_fail(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("/nonexistent/edgefwd.toml"), "{stderr}");
    }
}

/// docs/config.md's key table is `settings::docs_table()`: edit the rows in `settings::ROUTE`, then paste
/// the printed table.
#[test]
fn test_docs_table_is_rendered_from_the_settings() {
    let docs = include_str!("../docs/config.md");
    let table = settings::docs_table();
    let start = docs.find("\n| key |").map_or(docs.len(), |at| at + 1);
    let written: String = docs[start..]
        .lines()
        .take_while(|line| line.starts_with('|'))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        written == table,
        "docs/config.md's key table differs from src/config/settings/table.rs; it should read:\n{table}"
    );
}

/// Durations as TOML integers (seconds), as docs/config.md says a bare number is, start a forwarder with
/// those values: `connect_timeout = 5` is 5 s.
#[test]
fn test_integer_durations_start() {
    let echo = Backend::echo();
    let file = ConfigFile::new(&format!(
        "shutdown_timeout = 3\n[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{}\"]\nconnect_timeout = 5\nidle_timeout = 600\nbuffer_size = 16384\n",
        echo.upstream_arg()
    ));
    let fwd = Forwarder::start(&["--config", file.path()]);
    let logs = fwd.logs();
    for shown in [
        "connect-timeout=5000ms",
        "idle-timeout=600000ms",
        "buffer-size=16384",
    ] {
        assert!(logs.contains(shown), "{shown}:\n{logs}");
    }
    echo_roundtrip(fwd.addr(), 64 * 1024, 8192);
}

/// A non-loopback `admin` in the file without `--admin-token` is refused naming the file and its key
/// (`admin = "..."`), not a `--admin` flag that was never given.
#[test]
fn test_non_loopback_admin_in_file_names_the_key() {
    let file = ConfigFile::new(
        "admin = \"10.1.1.1:9\"\n[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:9\"]\n",
    );
    let (code, stderr) = run_edgefwd_expect_fail(&["--config", file.path()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line:\n{stderr}");
    let expected = format!(
        "{}: admin = \"10.1.1.1:9\": not a loopback address",
        file.path()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("--admin 10.1.1.1"), "{stderr}");
}
