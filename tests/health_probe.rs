//! Send/expect health probes (`--health-send` / `--health-expect`, HAProxy's `tcp-check` in its
//! simplest form) against a real redis-server answering `PING` with `+PONG`, a fake server that answers
//! something else and one that never answers: only redis stays up, and clients (redis-cli, through
//! the forwarder) only ever reach it. Bad values are refused with status 2, naming them.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A redis-server on loopback, killed and reaped on drop.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    /// Starts one on a free port, once it answers; `None` (the test is skipped, saying so) when
    /// redis-server is not installed (.ci/run installs it).
    fn start() -> Option<Redis> {
        let port = unused_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        };
        let redis = Redis {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect(redis.addr)
                .is_ok()),
            "redis-server did not listen on {}",
            redis.addr
        );
        Some(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server that reads what comes and answers `-ERR wrong\r\n` (a redis error, not `+PONG`).
fn wrong_answer() -> Backend {
    Backend::spawn(loopback4(), |mut conn: TcpStream| {
        let mut buf = [0u8; 64];
        if matches!(conn.read(&mut buf), Ok(n) if n > 0) {
            let _ = conn.write_all(b"-ERR wrong\r\n");
        }
    })
}

/// A server that accepts and never answers (until the probe closes).
fn silent() -> Backend {
    Backend::spawn(loopback4(), |mut conn: TcpStream| {
        let mut buf = [0u8; 64];
        while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
    })
}

/// `redis-cli -p PORT PING` through the forwarder.
fn redis_cli_ping(addr: SocketAddr) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "PING"])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn test_send_expect_keeps_redis_up_and_marks_wrong_and_silent_down() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (wrong, quiet) = (wrong_answer(), silent());
    let fwd = Forwarder::start(&[
        "--upstream",
        &redis.addr.to_string(),
        "--upstream",
        &wrong.upstream_arg(),
        "--upstream",
        &quiet.upstream_arg(),
        "--health-interval",
        "200ms",
        "--health-timeout",
        "500ms",
        "--health-send",
        "PING\\r\\n",
        "--health-expect",
        "+PONG",
        "--fall",
        "2",
        "--metrics",
        "127.0.0.1:0",
    ]);
    for (addr, why) in [
        (wrong.addr(), "expected \"+PONG\", got \"-"),
        (
            quiet.addr(),
            "no answer within health_timeout: expected \"+PONG\", got \"\"",
        ),
    ] {
        fwd.expect_log(
            &format!("upstream {addr} of route default is down"),
            Duration::from_secs(20),
        );
        fwd.expect_log(
            &format!("upstream={addr} failed: {why}"),
            Duration::from_secs(5),
        );
    }
    let body = scrape(fwd.metrics_addr());
    let up = |addr: SocketAddr| {
        sample(
            &body,
            &format!("edgefwd_upstream_up{{route=\"default\",upstream=\"{addr}\"}}"),
        )
    };
    assert_eq!(
        (up(redis.addr), up(wrong.addr()), up(quiet.addr())),
        (1, 0, 0),
        "{body}"
    );
    assert!(
        !fwd.logs()
            .contains(&format!("upstream {} of route default is down", redis.addr)),
        "redis answers +PONG: never down\n{}",
        fwd.logs()
    );
    // Real clients only ever reach redis now.
    for _ in 0..6 {
        assert_eq!(redis_cli_ping(fwd.addr()), "PONG");
    }
}

/// `health_expect` alone reads a banner: a server that greets first is up without being sent a byte.
#[test]
fn test_expect_alone_reads_a_greeting() {
    let banner = Backend::spawn(loopback4(), |mut conn: TcpStream| {
        let _ = conn.write_all(b"220 ready\r\n");
        let mut buf = [0u8; 16];
        let _ = conn.read(&mut buf);
    });
    let fwd = Forwarder::start(&[
        "--upstream",
        &banner.upstream_arg(),
        "--health-interval",
        "100ms",
        "--health-expect",
        "220 ",
        "--fall",
        "1",
        "--metrics",
        "127.0.0.1:0",
    ]);
    // Probes have run (the backend counts their connects) and none failed.
    assert!(wait_until(Duration::from_secs(20), || banner.accepted() >= 5));
    assert!(!fwd.logs().contains("failed:"), "{}", fwd.logs());
    let body = scrape(fwd.metrics_addr());
    assert_eq!(
        sample(
            &body,
            &format!(
                "edgefwd_upstream_up{{route=\"default\",upstream=\"{}\"}}",
                banner.addr()
            )
        ),
        1
    );
}

/// An empty text or a bad escape is refused at start with status 2, naming the value, from a flag as
/// from the file; so is either without `--health-interval`.
#[test]
fn test_bad_send_and_expect_exit_2_naming_them() {
    for (flag, value, why) in [
        ("--health-expect", "", "empty"),
        ("--health-send", "PING\\q", "unknown escape \\q"),
        ("--health-send", "\\x4", "two hex digits"),
    ] {
        let (code, stderr) = run_with_upstream_expect_fail(&[flag, value]);
        assert_eq!(code, Some(2), "{flag} {value:?}: {stderr}");
        assert!(stderr.contains(&format!("\"{value}\"")), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
    }
    // Without --health-interval no probe would use them: refused, not ignored.
    let (code, stderr) = run_with_upstream_expect_fail(&["--health-expect", "+PONG"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("health_expect is set but health_interval is off"),
        "{stderr}"
    );
    let file = ConfigFile::new(
        "[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:9\"]\nhealth_interval = \"1s\"\nhealth_expect = ''\n",
    );
    let (code, stderr) = run_edgefwd_expect_fail(&["--config", file.path()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("health_expect"), "{stderr}");
    assert!(stderr.contains("empty"), "{stderr}");
}
