//! The command line: usage errors exit 2 naming the bad value, start failures exit 1 with one
//! line naming what failed, and accepted value forms really start a forwarder.

mod common;

use std::net::TcpListener;

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

/// An upstream whose shape is wrong is a usage error (2), not a resolution failure (1).
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

#[test]
fn test_unresolvable_upstream() {
    let stderr = expect_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "no-such-host.invalid:80",
        ],
        1,
        "no-such-host.invalid",
    );
    assert_eq!(stderr.lines().count(), 1, "one line expected:\n{stderr}");
    assert!(stderr.starts_with("edgefwd: error:"), "{stderr}");
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
