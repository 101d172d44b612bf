//! The command line: usage errors exit 2 naming the bad value, start failures exit 1 with one
//! line naming what failed, and accepted value forms really start a forwarder.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;

/// Runs edgefwd expecting `code`, a stderr that names `needle`, and no panic.
fn expect_exit(args: &[&str], code: i32, needle: &str) -> String {
    let (got, stderr) = run_edgefwd_expect_fail(args);
    assert_eq!(got, Some(code), "edgefwd {args:?}; stderr:\n{stderr}");
    assert!(
        stderr.contains(needle),
        "stderr of edgefwd {args:?} does not name {needle:?}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic in stderr:\n{stderr}");
    stderr
}

const UP: &str = "127.0.0.1:9";

#[test]
fn test_unknown_flag() {
    expect_exit(
        &["--listen", "127.0.0.1:0", "--upstream", UP, "--bogus-flag"],
        2,
        "--bogus-flag",
    );
}

#[test]
fn test_bad_listen_address() {
    expect_exit(&["--listen", "nope", "--upstream", UP], 2, "nope");
}

#[test]
fn test_bad_size() {
    expect_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            UP,
            "--buffer-size",
            "12q",
        ],
        2,
        "12q",
    );
}

/// Values the kernel or the reactor could not use would fail every connection at run time, with
/// nothing said at start: a zero timeout, or a keepalive TCP_KEEPIDLE refuses.
#[test]
fn test_zero_timeouts_and_unusable_keepalive() {
    for (flag, value) in [
        ("--connect-timeout", "0"),
        ("--fin-timeout", "0s"),
        ("--health-timeout", "0ms"),
        ("--header-timeout", "0"),
        ("--keepalive", "0"),
        ("--keepalive", "500ms"),
        ("--keepalive", "10h"),
    ] {
        expect_exit(
            &["--listen", "127.0.0.1:0", "--upstream", UP, flag, value],
            2,
            value,
        );
    }
}

/// An upstream whose shape is wrong is a usage error (2); a well-written name that does not resolve is
/// no error at all (`test_a_route_with_no_resolvable_upstream_starts_and_refuses_clients`).
#[test]
fn test_malformed_upstream_is_a_usage_error() {
    for upstream in ["127.0.0.1:0", "127.0.0.1:99999", "bad host:80", "[::1:80"] {
        expect_exit(
            &["--listen", "127.0.0.1:0", "--upstream", upstream],
            2,
            upstream,
        );
    }
}

#[test]
fn test_bad_splice_mode_and_pipe_size() {
    for (flag, value) in [
        ("--splice", "sometimes"),
        ("--pipe-size", "1k"),
        ("--pipe-size", "1g"),
        ("--pipe-size", "big"),
    ] {
        expect_exit(
            &["--listen", "127.0.0.1:0", "--upstream", UP, flag, value],
            2,
            value,
        );
    }
}

#[test]
fn test_bad_duration() {
    for flag in [
        "--connect-timeout",
        "--idle-timeout",
        "--fin-timeout",
        "--shutdown-timeout",
        "--keepalive",
    ] {
        expect_exit(
            &[
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                UP,
                flag,
                "5parsecs",
            ],
            2,
            "5parsecs",
        );
    }
}

#[test]
fn test_bad_count() {
    expect_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            UP,
            "--max-connections",
            "lots",
        ],
        2,
        "lots",
    );
}

#[test]
fn test_missing_upstream() {
    expect_exit(&["--listen", "127.0.0.1:0"], 2, "--upstream");
}

#[test]
fn test_missing_listen() {
    expect_exit(&["--upstream", UP], 2, "--listen");
}

#[test]
fn test_port_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("local_addr").to_string();
    let stderr = expect_exit(&["--listen", &addr, "--upstream", UP], 1, &addr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{stderr}");
    assert!(
        lines[0].starts_with("edgefwd: error:"),
        "unexpected form: {stderr}"
    );
    assert!(
        lines[0].contains("in use"),
        "the OS reason is missing: {stderr}"
    );
}

/// A route whose only upstream does not resolve still starts: the name is reported once, shown down in
/// /metrics, and each client is reset at once and counted under `unresolved`, with a rate-limited
/// warning, while the name is asked again every interval.
#[test]
fn test_a_route_with_no_resolvable_upstream_starts_and_refuses_clients() {
    let name = "no-such-host.invalid:80";
    let fwd = Forwarder::start(&[
        "--upstream",
        name,
        "--resolve-interval",
        "200ms",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let down = format!("upstream {name} of route default is down: cannot resolve '{name}'");
    fwd.expect_log(&down, Duration::from_secs(5));
    for _ in 0..3 {
        // The reset can beat the client's own connect(2) on loopback (tests/connect.rs says why).
        match try_connect(fwd.addr()) {
            Ok(mut client) => {
                let end = expect_closed_without_data(&mut client, Duration::from_secs(5));
                assert_eq!(end, End::Reset, "a refused client is reset");
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    fwd.expect_log(
        "no upstream of route default resolves to an address; refusing clients",
        Duration::from_secs(5),
    );
    let body = scrape(fwd.metrics_addr());
    assert_eq!(
        sample(&body, "edgefwd_closes_total{cause=\"unresolved\"}"),
        3
    );
    let up = format!("edgefwd_upstream_up{{route=\"default\",upstream=\"{name}\"}}");
    assert_eq!(sample(&body, &up), 0);
    // Several re-resolutions later, still one line about it.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(fwd.count_log(&down), 1, "{}", fwd.logs());
    assert_eq!(fwd.count_log("refusing clients"), 1, "rate-limited");
}

#[test]
fn test_accepted_value_forms_start() {
    let echo = Backend::echo();
    let up = echo.upstream_arg();
    for dur in ["500ms", "5s", "2m", "1h", "5"] {
        let fwd = Forwarder::start(&["--upstream", &up, "--connect-timeout", dur]);
        echo_roundtrip(fwd.addr(), 1024, 1024);
    }
    let fwd = Forwarder::start(&[
        "--upstream",
        &up,
        "--idle-timeout",
        "1h",
        "--fin-timeout",
        "2m",
        "--shutdown-timeout",
        "5",
        "--keepalive",
        "30s",
        "--no-nodelay",
        "--backlog",
        "16",
        "--max-connections",
        "10",
        "--buffer-size",
        "4096",
    ]);
    echo_roundtrip(fwd.addr(), 64 * 1024, 4096);
}

#[test]
fn test_start_line_names_bound_address() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg()]);
    assert_eq!(fwd.addr().ip().to_string(), "127.0.0.1");
    assert_ne!(
        fwd.addr().port(),
        0,
        "port 0 must be replaced by the real port"
    );
    // The default RUST_LOG (info) still prints the start line.
    let quiet = Forwarder::start_with(
        &["--upstream", &echo.upstream_arg()],
        &Options {
            rust_log: Some("info".into()),
            ..Options::default()
        },
    );
    echo_roundtrip(quiet.addr(), 1024, 1024);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !quiet.logs().contains(" cause="),
        "close lines are DEBUG, not INFO:\n{}",
        quiet.logs()
    );
}

/// `--send-proxy-tlvs`: an unknown name, or the option without both `--send-proxy v2` and
/// `--accept-proxy`, is a usage error naming the value.
#[test]
fn test_send_proxy_tlvs_errors() {
    let base = ["--listen", "127.0.0.1:0", "--upstream", UP];
    let with = |extra: &[&'static str]| [base.as_slice(), extra].concat();
    expect_exit(
        &with(&[
            "--send-proxy",
            "v2",
            "--accept-proxy",
            "--send-proxy-tlvs",
            "alpn,sni",
        ]),
        2,
        "unknown TLV 'sni'",
    );
    for missing in [
        &["--send-proxy", "v1", "--accept-proxy"][..],
        &["--accept-proxy"],
        &["--send-proxy", "v2"],
    ] {
        let args = [with(missing), vec!["--send-proxy-tlvs", "unique_id"]].concat();
        let stderr = expect_exit(
            &args,
            2,
            "--send-proxy-tlvs unique_id needs --send-proxy v2 and --accept-proxy",
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

/// `--listen HOST:PORT`: the name is resolved at start and every address it has is bound, each with its
/// start line, and each forwards. What cannot be a listen address, or a name that does not resolve, is
/// a usage error saying what is accepted.
#[test]
fn test_listen_host_name_binds_every_address() {
    use std::collections::BTreeSet;
    use std::net::{IpAddr, ToSocketAddrs};
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--listen",
        "localhost:0",
        "--upstream",
        &echo.upstream_arg(),
    ]);
    let expected: BTreeSet<IpAddr> = ("localhost", 0)
        .to_socket_addrs()
        .expect("localhost resolves")
        .map(|addr| addr.ip())
        .collect();
    let bound: Vec<std::net::SocketAddr> =
        fwd.logs().lines().filter_map(parse_listen_addr).collect();
    let ips: BTreeSet<IpAddr> = bound.iter().map(|addr| addr.ip()).collect();
    assert_eq!(
        ips,
        expected,
        "one listener per address of localhost:\n{}",
        fwd.logs()
    );
    assert_eq!(bound.len(), expected.len(), "{}", fwd.logs());
    for addr in bound {
        echo_roundtrip(addr, 64 * 1024, 8192);
    }
    for bad in ["localhost:http", "local host:80", "::1:80"] {
        expect_exit(&["--listen", bad, "--upstream", UP], 2, "HOST:PORT");
    }
    expect_exit(
        &["--listen", "no-such-host.invalid:80", "--upstream", UP],
        2,
        "no-such-host.invalid:80",
    );
}

/// An upstream the quick start itself starts, killed when the test ends.
struct Upstream(std::process::Child);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's quick start works as written on a fresh machine: its first command starts an upstream,
/// its second forwards to it. Both are read from the README and run as they are, on free ports (the
/// only change: `127.0.0.1:8080` becomes port 0, `8000` a free port) and with the binary under test in
/// place of `cargo run --release --`; a page is then fetched through the forwarder. The third command
/// is `cargo test`, this very run.
#[test]
fn test_readme_quick_start_forwards() {
    let readme = include_str!("../README.md");
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("README has a Quick start sh block");
    let commands: Vec<&str> = quick
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert_eq!(
        commands.len(),
        3,
        "upstream, forwarder, tests: {commands:?}"
    );
    assert_eq!(commands[2], "cargo test");
    let upstream = commands[0]
        .strip_suffix(" &")
        .expect("the upstream runs in the background");
    let forward = commands[1]
        .strip_prefix("cargo run --release -- ")
        .expect("the forwarder runs with cargo run --release");

    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port().to_string()
    };
    let words: Vec<String> = upstream
        .split_whitespace()
        .map(|word| {
            if word == "8000" {
                port.clone()
            } else {
                word.into()
            }
        })
        .collect();
    assert!(
        words.contains(&port),
        "the upstream listens on 8000: {upstream}"
    );
    let root = std::env::temp_dir().join(format!("edgefwd-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(root.join("hello.txt"), "hello through edgefwd\n").expect("write page");
    let spawned = std::process::Command::new(&words[0])
        .args(&words[1..])
        .current_dir(&root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(child) = spawned else {
        eprintln!(
            "skipped: cannot run `{}` (.ci/run installs python3)",
            words[0]
        );
        return;
    };
    let _upstream = Upstream(child);
    let up_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        wait_until(Duration::from_secs(20), || try_connect(up_addr).is_ok()),
        "`{upstream}` did not listen"
    );

    let args: Vec<String> = forward
        .split_whitespace()
        .map(|word| match word {
            "127.0.0.1:8080" => "127.0.0.1:0".into(),
            "127.0.0.1:8000" => up_addr.to_string(),
            other => other.into(),
        })
        .collect();
    assert!(
        args.contains(&up_addr.to_string()),
        "forwards to 8000: {forward}"
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fwd = Forwarder::start(&args);
    let (status, body) = http_fetch(fwd.addr(), "/hello.txt");
    let _ = std::fs::remove_dir_all(&root);
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, "hello through edgefwd\n");
}

/// `--help` lists every form `--admin` takes, IPv6 and abstract Unix names included.
#[test]
fn test_help_lists_every_admin_address_form() {
    let (code, stdout, stderr) = run_edgefwd_to_exit(&["--help"]);
    assert_eq!(code, Some(0), "{stderr}");
    let help = stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains(
            "at ADDR: IP:PORT, [IPv6]:PORT, localhost:PORT, unix:/PATH (mode 0600) or unix:@NAME"
        ),
        "{stdout}"
    );
    // And a bad address is refused listing the same forms.
    expect_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            UP,
            "--admin",
            "nope",
        ],
        2,
        "expected IP:PORT, [IPv6]:PORT, localhost:PORT, unix:/PATH or unix:@NAME",
    );
}

/// `--log-format` without an access log to format is refused (exit 2, naming both flags), with flags
/// or with a file that has no `access_log`; with `--access-log`, or a file's `access_log`, it is fine.
#[test]
fn test_log_format_needs_an_access_log() {
    let refused = "--log-format needs --access-log";
    let flags = ["--listen", "127.0.0.1:0", "--upstream", UP];
    let mut args = flags.to_vec();
    args.extend(["--log-format", "json"]);
    expect_exit(&args, 2, refused);
    args.extend(["--access-log", "-", "--check"]);
    let (code, _, stderr) = run_edgefwd_to_exit(&args);
    assert_eq!(code, Some(0), "with --access-log: {stderr}");
    let route = "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:9\"]\n";
    let bare = ConfigFile::new(route);
    expect_exit(
        &["--config", bare.path(), "--log-format", "json", "--check"],
        2,
        refused,
    );
    let logged = ConfigFile::new(&format!("access_log = \"-\"\n{route}"));
    let (code, _, stderr) =
        run_edgefwd_to_exit(&["--config", logged.path(), "--log-format", "json", "--check"]);
    assert_eq!(code, Some(0), "the file's access_log: {stderr}");
}
