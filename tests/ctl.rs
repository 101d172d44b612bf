//! `edgefwd ctl` against a real edgefwd serving `--admin`: the commands a user types, their tables and
//! exit codes, with real pairs on loopback held open while the client looks at them.
//!
//! Each test runs the binary twice over: the forwarder (`Forwarder`, with `--admin 127.0.0.1:0` or a
//! Unix socket) and `edgefwd ctl ...` as a child that must exit by itself (`run_edgefwd_to_exit`).

mod common;
#[path = "../src/main/ctl/test_pty.rs"]
mod test_pty;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use test_pty::{local_modes, pty};

/// [`start_with_admin`], the admin address as the text `ctl --admin` takes.
fn with_admin(args: &[&str]) -> (Forwarder, String) {
    let (fwd, admin) = start_with_admin(args);
    (fwd, admin.to_string())
}

/// `edgefwd ctl --admin ADMIN ARGS`: (exit code, stdout, stderr).
fn ctl(admin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["ctl", "--admin", admin];
    all.extend_from_slice(args);
    run_edgefwd_to_exit(&all)
}

/// `edgefwd ctl --admin ADMIN ARGS`, which must succeed; its stdout.
fn ctl_ok(admin: &str, args: &[&str]) -> String {
    let (code, stdout, stderr) = ctl(admin, args);
    assert_eq!(
        code,
        Some(0),
        "ctl {args:?}: stderr {stderr}\nstdout {stdout}"
    );
    stdout
}

/// The live pairs as JSON (`ctl connections --json`).
fn pairs(admin: &str) -> Vec<Value> {
    let text = ctl_ok(admin, &["connections", "--json"]);
    match serde_json::from_str(&text) {
        Ok(Value::Array(pairs)) => pairs,
        other => panic!("ctl connections --json printed no JSON list: {other:?}\n{text}"),
    }
}

/// The id of the pair whose client is `client`, waiting for it to be listed.
fn id_of(admin: &str, client: SocketAddr) -> String {
    let mut found = None;
    let listed = wait_until(Duration::from_secs(10), || {
        found = pairs(admin)
            .into_iter()
            .find(|pair| pair["client"] == client.to_string())
            .and_then(|pair| pair["id"].as_u64());
        found.is_some()
    });
    assert!(listed, "pair of client {client} never listed");
    found.map(|id| id.to_string()).unwrap_or_default()
}

/// A client whose 1000 bytes the upstream has read: an established pair, held open by both ends.
fn held_pair(fwd: &Forwarder, upstream: &Upstream) -> (TcpStream, TcpStream) {
    let mut client = connect(fwd.addr());
    client.write_all(&[7u8; 1000]).expect("client write");
    let mut server = upstream.accept(IO_TIMEOUT);
    let mut got = [0u8; 1000];
    server.read_exact(&mut got).expect("upstream read");
    (client, server)
}

/// The line of `table` that contains `needle`.
fn line_with<'t>(table: &'t str, needle: &str) -> &'t str {
    table
        .lines()
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle} in:\n{table}"))
}

/// `connections` lists a held pair, `connection ID` shows it with its diagnosis and events, `close ID`
/// closes it (FIN: both peers read EOF) and the list is then empty.
#[test]
fn test_ctl_lists_shows_and_closes_a_held_pair() {
    let upstream = Upstream::bind();
    let (fwd, admin) = with_admin(&["--upstream", &upstream.addr().to_string()]);
    let (mut client, mut server) = held_pair(&fwd, &upstream);
    let me = client.local_addr().expect("client addr");
    let id = id_of(&admin, me);

    let table = ctl_ok(&admin, &["connections"]);
    assert!(table.starts_with("ID  ROUTE"), "{table}");
    let row = line_with(&table, &me.to_string());
    assert!(row.trim_start().starts_with(&format!("{id} ")), "{row}");
    for cell in [upstream.addr().to_string().as_str(), "established", "1000"] {
        assert!(row.contains(cell), "no {cell} in {row}");
    }

    let detail = ctl_ok(&admin, &["connection", &id]);
    assert!(
        detail.starts_with(&format!("connection {id}\n")),
        "{detail}"
    );
    for field in [
        String::from("\n  client -> upstream  1000 forwarded, 0 held, "),
        String::from("\n  stuck               no\n"),
        format!("\n  client              {me}\n"),
        format!("\n  upstream            {}\n", upstream.addr()),
        String::from("\n  phase               established\n"),
        // Not an SNI route: no server name.
        String::from("\n  sni                 -\n"),
    ] {
        assert!(detail.contains(&field), "no {field:?} in\n{detail}");
    }

    assert!(!detail.contains("\ndiagnosis: -\n"), "{detail}");
    let first = detail
        .split_once("oldest first):\n")
        .and_then(|(_, timeline)| timeline.lines().nth(1))
        .unwrap_or_else(|| panic!("no timeline:\n{detail}"));
    assert!(
        first.trim_start().starts_with("0.0ms") && first.contains("accepted"),
        "{detail}"
    );
    assert_eq!(
        ctl_ok(&admin, &["close", &id]),
        format!("closed connection {id} (fin)\n")
    );
    assert_eq!(read_until_end(&mut client, IO_TIMEOUT).1, End::Eof);
    assert_eq!(read_until_end(&mut server, IO_TIMEOUT).1, End::Eof);
    assert!(
        wait_until(Duration::from_secs(10), || ctl_ok(&admin, &["connections"])
            == "no connections\n"),
        "the closed pair is still listed"
    );
    // Gone: asking for it again is a run-time failure naming it.
    let (code, _, stderr) = ctl(&admin, &["connection", &id]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("edgefwd: error: ") && stderr.contains(&id),
        "{stderr}"
    );
}

/// `close ID --rst` resets both peers; filters reach the server (`--route` of another route lists nothing).
#[test]
fn test_ctl_close_rst_and_filters() {
    let upstream = Upstream::bind();
    let (fwd, admin) = with_admin(&["--upstream", &upstream.addr().to_string()]);
    let (mut client, _server) = held_pair(&fwd, &upstream);
    let id = id_of(&admin, client.local_addr().expect("client addr"));
    assert_eq!(
        ctl_ok(&admin, &["connections", "--route", "no-such-route"]),
        "no connections\n"
    );
    assert_eq!(
        ctl_ok(&admin, &["connections", "--older-than", "1h"]),
        "no connections\n"
    );
    let all = ctl_ok(&admin, &["connections", "--older-than", "0s"]);
    let me = client.local_addr().expect("client addr").to_string();
    assert!(
        line_with(&all, &me)
            .trim_start()
            .starts_with(&format!("{id} ")),
        "{all}"
    );
    assert_eq!(
        ctl_ok(&admin, &["close", &id, "--rst"]),
        format!("closed connection {id} (rst)\n")
    );
    assert_eq!(read_until_end(&mut client, IO_TIMEOUT).1, End::Reset);
}

/// `drain ADDR`: the table shows it draining and new clients go to the other upstream only; `enable`
/// undoes it; `weight` sets a weight; `routes` and `upstreams` list them.
#[test]
fn test_ctl_drain_enable_and_weight() {
    let (a, b) = (Backend::echo(), Backend::echo());
    let (fwd, admin) = with_admin(&[
        "--upstream",
        &a.upstream_arg(),
        "--upstream",
        &b.upstream_arg(),
    ]);
    let a_addr = a.addr().to_string();
    let drained = ctl_ok(&admin, &["drain", &a_addr]);
    assert!(
        line_with(&drained, &a_addr).contains(" draining "),
        "{drained}"
    );
    let listed = ctl_ok(&admin, &["upstreams"]);
    assert!(
        line_with(&listed, &a_addr).contains(" draining "),
        "{listed}"
    );
    assert!(
        line_with(&listed, &b.addr().to_string()).contains(" enabled "),
        "{listed}"
    );
    let before = a.accepted();
    for _ in 0..4 {
        echo_roundtrip(fwd.addr(), 1000, 1000);
    }
    assert_eq!(a.accepted(), before, "a drained upstream took new clients");

    let enabled = ctl_ok(&admin, &["enable", &a_addr]);
    assert!(
        line_with(&enabled, &a_addr).contains(" enabled "),
        "{enabled}"
    );
    let weighted = ctl_ok(&admin, &["weight", &a_addr, "3"]);
    let row: Vec<&str> = line_with(&weighted, &a_addr).split_whitespace().collect();
    assert_eq!(row[5], "3", "WEIGHT column of {row:?}");

    let routes = ctl_ok(&admin, &["routes"]);
    assert!(routes.starts_with("NAME  "), "{routes}");
    assert_eq!(routes.lines().count(), 2, "{routes}");
}

/// `top --once` with --threads 2: one frame, no escapes, both pairs counted whichever reactor holds
/// them, and the streaming one among the busiest with a rate.
#[test]
fn test_ctl_top_once() {
    let (sink, _reports) = Backend::sink();
    let (fwd, admin) = with_admin(&["--upstream", &sink.upstream_arg(), "--threads", "2"]);
    let idle = connect(fwd.addr());
    let mut streaming = connect(fwd.addr());
    let stream_id = id_of(&admin, streaming.local_addr().expect("addr"));
    id_of(&admin, idle.local_addr().expect("addr"));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let chunk = vec![1u8; 16 * 1024];
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if streaming.write_all(&chunk).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let (code, frame, stderr) = ctl(&admin, &["top", "--once", "--interval", "500ms"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !frame.contains('\x1b'),
        "escapes in --once output:\n{frame}"
    );
    assert!(frame.contains("\npairs: 2 open, "), "{frame}");
    assert!(
        frame.contains("\nROUTES\n") && frame.contains("\nUPSTREAMS\n"),
        "{frame}"
    );
    assert!(
        line_with(&frame, &sink.addr().to_string()).contains(" up "),
        "{frame}"
    );
    let busiest = frame
        .split("\nBUSIEST PAIRS\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no busiest pairs:\n{frame}"));
    let top_row: Vec<&str> = busiest
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(top_row[0], stream_id, "{frame}");
    assert!(
        top_row[5].ends_with("/s") && top_row[5] != "0/s",
        "c2u rate of {top_row:?}"
    );
}

/// No admin API there: exit 1 and one line naming the address and the reason; `top` alike.
#[test]
fn test_ctl_unreachable_admin() {
    let addr = refused_addr().to_string();
    for args in [
        &["routes"][..],
        &["top", "--once", "--interval", "100ms"][..],
    ] {
        let (code, stdout, stderr) = ctl(&addr, args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr,
            format!("edgefwd: error: cannot reach the admin API at {addr}: connection refused\n")
        );
        assert!(stdout.is_empty(), "{stdout}");
    }
}

/// Bad arguments exit 2 with a line naming the value: the client's own checks, and a value the server
/// refuses (400).
#[test]
fn test_ctl_bad_arguments() {
    let refused = refused_addr().to_string();
    for (args, named) in [
        (&["connection", "seventeen"][..], "seventeen"),
        (&["connections", "--older-than", "soon"][..], "soon"),
        (&["drain", "app.internal"][..], "app.internal"),
    ] {
        let (code, _, stderr) = ctl(&refused, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = run_edgefwd_to_exit(&["ctl", "--admin", "nowhere", "routes"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("'nowhere'"), "{stderr}");

    let backend = Backend::echo();
    let (_fwd, admin) = with_admin(&["--upstream", &backend.upstream_arg()]);
    let (code, _, stderr) = ctl(&admin, &["weight", &backend.addr().to_string(), "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("edgefwd: error: PUT /upstreams/"),
        "{stderr}"
    );
}

/// A Unix socket admin API with a token: without `--admin-token` the server's 401 is exit 1 saying
/// what to give; with it, the answer; `EDGEFWD_ADMIN` stands in for `--admin`.
#[test]
fn test_ctl_unix_socket_and_token() {
    let dir = std::env::temp_dir().join(format!("edgefwd-ctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (socket, token) = (dir.join("admin.sock"), dir.join("token"));
    std::fs::write(&token, "s3cret-token\n").expect("token");
    let admin = format!("unix:{}", socket.display());
    let backend = Backend::echo();
    let _fwd = Forwarder::start(&[
        "--upstream",
        &backend.upstream_arg(),
        "--admin",
        &admin,
        "--admin-token",
        token.to_str().expect("utf-8 path"),
    ]);
    assert!(
        wait_until(START_TIMEOUT, || socket.exists()),
        "no admin socket"
    );
    let (code, _, stderr) = ctl(&admin, &["upstreams"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--admin-token FILE"), "{stderr}");
    let listed = ctl_ok(
        &admin,
        &["upstreams", "--admin-token", token.to_str().expect("utf-8")],
    );
    assert!(listed.contains(&backend.addr().to_string()), "{listed}");

    let (code, stdout, stderr) = run_edgefwd_to_exit_with_env(
        &[
            "ctl",
            "routes",
            "--admin-token",
            token.to_str().expect("utf-8"),
        ],
        &[("EDGEFWD_ADMIN", &admin)],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("NAME  "), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ctl top` on a terminal (a pty, 60 columns), as a user runs it: frames on a cleared screen with
/// the cursor hidden, no line wider than the terminal, keys read one at a time without echo; `q` (no Enter) quits, SIGINT too, and either way the
/// terminal's modes are as before and the cursor shown again.
#[test]
fn test_ctl_top_on_a_terminal_quits_and_restores_it() {
    use std::sync::Mutex;
    let backend = Backend::echo();
    let (_fwd, admin) = with_admin(&["--upstream", &backend.upstream_arg()]);
    for quit in ["q", "SIGINT"] {
        let (controller, terminal) = pty(60);
        let before = local_modes(&terminal);
        assert_ne!(before & libc::ICANON, 0, "a new pty starts canonical");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgefwd"))
            .args(["ctl", "--admin", &admin, "top", "--interval", "200ms"])
            .stdin(terminal.try_clone().expect("dup"))
            .stdout(terminal.try_clone().expect("dup"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ctl top");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = std::fs::File::from(controller.try_clone().expect("dup"));
        let sink = Arc::clone(&screen);
        // Ends when every copy of the terminal side is closed (EIO), after the child and this test.
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut chunk) {
                sink.lock().expect("screen").extend_from_slice(&chunk[..n]);
            }
        });
        let shown = |needle: &str| {
            String::from_utf8_lossy(&screen.lock().expect("screen")).contains(needle)
        };
        assert!(
            wait_until(Duration::from_secs(10), || shown("edgefwd top: admin")),
            "no frame on the terminal"
        );
        let during = local_modes(&terminal);
        assert_eq!(
            during & (libc::ICANON | libc::ECHO),
            0,
            "{quit}: keys not read one at a time"
        );
        match quit {
            "q" => {
                let mut keys = std::fs::File::from(controller.try_clone().expect("dup"));
                keys.write_all(b"q").expect("type q");
            }
            // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
            _ => assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0),
        }
        let status = exit_within(&mut child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{quit}: ctl top did not quit"));
        assert!(status.success(), "{quit}: {status}");
        assert_eq!(
            local_modes(&terminal),
            before,
            "{quit}: terminal modes not restored"
        );
        assert!(
            wait_until(Duration::from_secs(5), || shown("\x1b[?25h")),
            "{quit}: cursor not shown again"
        );
        assert!(
            shown("\x1b[?25l") && shown("\x1b[H\x1b[2J"),
            "{quit}: no screen escapes"
        );
        let text = String::from_utf8_lossy(&screen.lock().expect("screen")).to_string();
        let last = text.rsplit("\x1b[H\x1b[2J").next().unwrap_or_default();
        let frame = last.split('\x1b').next().unwrap_or_default();
        assert!(frame.contains("UPSTREAMS"), "{quit}: {frame:?}");
        for line in frame.split('\n') {
            let line = line.trim_end_matches('\r');
            assert!(
                line.chars().count() <= 60,
                "{quit}: wider than the terminal: {line:?}"
            );
        }
    }
}

/// `top --iterations N` with stdout a pipe: N frames one after another, no escapes; the first has no
/// rates yet, the next have.
#[test]
fn test_ctl_top_iterations_to_a_pipe() {
    let backend = Backend::echo();
    let (_fwd, admin) = with_admin(&["--upstream", &backend.upstream_arg()]);
    let (code, out, stderr) = ctl(&admin, &["top", "--iterations", "2", "--interval", "100ms"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!out.contains('\x1b'), "{out}");
    assert_eq!(out.matches("edgefwd top: admin").count(), 2, "{out}");
    let second = out.rfind("edgefwd top: admin").expect("second frame");
    assert!(out[..second].contains("traffic: c2u -  u2c -"), "{out}");
    assert!(out[second..].contains("traffic: c2u 0/s  u2c 0/s"), "{out}");
}

/// A Unix upstream (`unix:/PATH`) is steered by its address as `ctl upstreams` shows it; the client
/// sends it as one percent-encoded path segment.
#[test]
fn test_ctl_drain_a_unix_upstream() {
    let path = std::env::temp_dir().join(format!("edgefwd-ctl-up-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind upstream");
    let upstream = format!("unix:{}", path.display());
    let (_fwd, admin) = with_admin(&["--upstream", &upstream]);
    let listed = ctl_ok(&admin, &["upstreams"]);
    assert!(
        line_with(&listed, &upstream).contains(" enabled "),
        "{listed}"
    );
    let drained = ctl_ok(&admin, &["drain", &upstream, "--route", "default"]);
    assert!(
        line_with(&drained, &upstream).contains(" draining "),
        "{drained}"
    );
    let enabled = ctl_ok(&admin, &["enable", &upstream]);
    assert!(
        line_with(&enabled, &upstream).contains(" enabled "),
        "{enabled}"
    );
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

/// A pair whose upstream stops reading: once it has held bytes unmoved for 5 s, `connections --stuck`
/// lists it, `connection ID` says why in plain words, with what is held and the flight recorder's
/// timeline from the accept, and `top` lists it among the stuck pairs with its diagnosis.
#[test]
fn test_ctl_explains_a_stuck_pair() {
    let upstream = Upstream::bind();
    let (fwd, admin) = with_admin(&["--upstream", &upstream.addr().to_string()]);
    let mut client = connect(fwd.addr());
    let _server = upstream.accept(IO_TIMEOUT);
    // More than the rings, pipes and socket buffers hold: the last writes block, then time out.
    client
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    let chunk = vec![9u8; 256 * 1024];
    for _ in 0..64 {
        if client.write_all(&chunk).is_err() {
            break;
        }
    }
    let id = id_of(&admin, client.local_addr().expect("client addr"));
    assert!(
        wait_until(Duration::from_secs(15), || {
            ctl_ok(&admin, &["connections", "--stuck"])
                .contains(&client.local_addr().expect("addr").to_string())
        }),
        "the pair never listed as stuck"
    );
    let detail = ctl_ok(&admin, &["connection", &id]);
    assert!(detail.contains("\n  stuck               yes\n"), "{detail}");
    let c2u = line_with(&detail, "client -> upstream");
    assert!(!c2u.contains(" 0 held"), "nothing held c2u: {detail}");
    let diagnosis = line_with(&detail, "diagnosis: ");
    assert!(diagnosis.contains("upstream has not read for"), "{detail}");
    let timeline: Vec<&str> = detail
        .split_once("oldest first):\n")
        .unwrap_or_else(|| panic!("no timeline:\n{detail}"))
        .1
        .lines()
        .skip(1)
        .collect();
    // The recorder keeps the last 32: a pair that filled its rings has pushed its accept out.
    assert!((2..=32).contains(&timeline.len()), "{detail}");
    // Reads are muted lazily, on an edge that comes while the ring is full: when the read that filled
    // the ring also left the client's receive buffer full, no edge comes and nothing is muted. Either
    // way the timeline ends in the client's reads.
    assert!(
        timeline
            .iter()
            .any(|line| line.contains("client reads muted") || line.contains("client readable")),
        "{detail}"
    );

    let frame = ctl_ok(&admin, &["top", "--once", "--interval", "100ms"]);
    let stuck = frame
        .split_once("\nSTUCK PAIRS\n")
        .unwrap_or_else(|| panic!("no stuck pairs:\n{frame}"))
        .1;
    let row = line_with(stuck, &client.local_addr().expect("addr").to_string());
    assert!(row.trim_start().starts_with(&format!("{id} ")), "{frame}");
    assert!(row.contains("upstream has not read for"), "{frame}");
}

/// `top --metrics`: a pair that opens, moves 1 MiB and closes between the two samples of `--once`
/// leaves no live pair to measure, yet the header's traffic (from `edgefwd_bytes_total`) counts it, and
/// so do its route's and its upstream's rates (from their series).
#[test]
fn test_ctl_top_counts_closed_pairs_from_metrics() {
    let backend = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &backend.upstream_arg(),
        "--admin",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let (admin, metrics) = (fwd.admin_addr().to_string(), fwd.metrics_addr().to_string());
    let top = thread::spawn(move || {
        ctl(
            &admin,
            &["top", "--once", "--interval", "3s", "--metrics", &metrics],
        )
    });
    // Well after the first sample, well before the second.
    thread::sleep(Duration::from_millis(1000));
    echo_roundtrip(fwd.addr(), 1 << 20, 64 * 1024);
    let (code, frame, stderr) = top.join().expect("top");
    assert_eq!(code, Some(0), "{stderr}");
    let traffic = line_with(&frame, "traffic: ");
    assert!(traffic.ends_with("(every pair, from --metrics)"), "{frame}");
    let c2u: Vec<&str> = traffic.split_whitespace().collect();
    assert_eq!(c2u[1], "c2u", "{traffic}");
    assert!(
        c2u[2].ends_with("K/s"),
        "1 MiB over 3 s is some hundred K/s: {traffic}"
    );
    assert!(frame.contains("pairs: 0 open"), "{frame}");
    // The route's and the upstream's from their own series (edgefwd_route_bytes_total,
    // edgefwd_upstream_bytes_total).
    let route: Vec<&str> = line_with(&frame, "default  ").split_whitespace().collect();
    assert!(route[3].ends_with("K/s"), "route c2u rate: {frame}");
    let upstream: Vec<&str> = line_with(&frame, &backend.addr().to_string())
        .split_whitespace()
        .collect();
    assert!(upstream[6].ends_with("K/s"), "upstream c2u rate: {frame}");
}

/// `top --interval` below 100ms would hammer the server: refused with exit 2, naming the value.
#[test]
fn test_ctl_top_refuses_a_too_short_interval() {
    for short in ["1ms", "99ms"] {
        let (code, _, stderr) = ctl("127.0.0.1:9", &["top", "--once", "--interval", short]);
        assert_eq!(code, Some(2), "{short}: {stderr}");
        assert!(
            stderr.contains(&format!("'{short}'")) && stderr.contains("at least 100ms"),
            "{short}: {stderr}"
        );
    }
}

/// Ctrl-Z (SIGTSTP, which the terminal sends to its foreground job) on `ctl top` on a terminal: the
/// view ends like `q`, with the terminal's modes restored, instead of stopping with echo off.
#[test]
fn test_ctl_top_on_a_terminal_ctrl_z_restores_it() {
    let backend = Backend::echo();
    let (_fwd, admin) = with_admin(&["--upstream", &backend.upstream_arg()]);
    let (controller, terminal) = pty(60);
    let before = local_modes(&terminal);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgefwd"))
        .args(["ctl", "--admin", &admin, "top", "--interval", "200ms"])
        .stdin(terminal.try_clone().expect("dup"))
        .stdout(terminal.try_clone().expect("dup"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ctl top");
    let screen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut reader = std::fs::File::from(controller.try_clone().expect("dup"));
    let sink = Arc::clone(&screen);
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut chunk) {
            sink.lock().expect("screen").extend_from_slice(&chunk[..n]);
        }
    });
    let shown = || String::from_utf8_lossy(&screen.lock().expect("screen")).contains("UPSTREAMS");
    assert!(
        wait_until(Duration::from_secs(10), shown),
        "no frame on the terminal"
    );
    assert_ne!(local_modes(&terminal), before, "the view set its modes");
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTSTP) }, 0);
    let status = exit_within(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
        panic!("ctl top did not end on SIGTSTP (stopped, its terminal left without echo?)")
    });
    assert!(status.success(), "{status}");
    assert_eq!(
        local_modes(&terminal),
        before,
        "terminal modes not restored"
    );
}
