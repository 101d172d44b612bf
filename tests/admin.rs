//! The admin API (`--admin`, docs/admin.md) as an operator uses it: `curl` for the requests and `jq` for
//! the JSON, against a forwarder carrying real pairs on loopback. Each endpoint and its filters, closing a
//! pair with RST or FIN as its client sees it, draining an upstream (new clients go elsewhere, a live
//! transfer finishes byte-exact, the drain survives reloads), the token, the loopback rule, a Unix
//! socket, a hostile admin client next to a transfer, and `--threads 2`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn tools() -> bool {
    have("curl") && have("jq")
}

/// `curl -s ARGS URL`: the status and the body.
fn curl(args: &[&str], url: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "-g", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.parse().unwrap_or(0), body.to_string())
}

/// `GET http://ADDR/PATH`, which must answer 200.
fn get(addr: SocketAddr, path: &str) -> String {
    let (status, body) = curl(&[], &format!("http://{addr}{path}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// `curl -X METHOD`, with a body when given.
fn send(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut args = vec!["-X", method];
    if let Some(body) = body {
        args.extend(["--data", body]);
    }
    curl(&args, &format!("http://{addr}{path}"))
}

/// `jq -r FILTER` over `json`, its output trimmed.
fn jq(filter: &str, json: &str) -> String {
    let mut child = Command::new("jq")
        .args(["-r", filter])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run jq");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json.as_bytes())
        .expect("feed jq");
    let output = child.wait_with_output().expect("jq output");
    assert!(output.status.success(), "jq {filter} failed on {json}");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// A client whose pair is established: one byte echoed back through it.
fn echoing_client(addr: SocketAddr) -> TcpStream {
    let mut client = connect(addr);
    client.write_all(b"x").expect("write");
    let mut byte = [0u8; 1];
    client.read_exact(&mut byte).expect("echo");
    client
}

/// The id of the pair whose client is `client` (its local address), from `GET /connections`.
fn id_of(addr: SocketAddr, client: &TcpStream) -> String {
    let local = client.local_addr().expect("local").to_string();
    let filter = format!(".[] | select(.client == \"{local}\") | .id");
    let mut id = String::new();
    wait_until(Duration::from_secs(5), || {
        id = jq(&filter, &get(addr, "/connections"));
        !id.is_empty()
    });
    assert!(!id.is_empty(), "no pair for client {local}");
    id
}

#[test]
fn test_connections_routes_upstreams_with_filters() {
    if !tools() {
        return;
    }
    let echo = Backend::echo();
    let upstream = echo.upstream_arg();
    let (fwd, admin) = start_with_admin(&["--upstream", &upstream]);
    let mut first = echoing_client(fwd.addr());
    let second = echoing_client(fwd.addr());
    first.write_all(&[7u8; 999]).expect("write");
    let mut back = [0u8; 999];
    first.read_exact(&mut back).expect("echo");

    let list = get(admin, "/connections");
    assert_eq!(jq("length", &list), "2", "{list}");
    assert_eq!(jq("[.[].route] | unique | join(\",\")", &list), "default");
    assert_eq!(jq("[.[].upstream] | unique | join(\",\")", &list), upstream);
    assert_eq!(
        jq("[.[].phase] | unique | join(\",\")", &list),
        "established"
    );
    assert_eq!(
        jq("(map(.id) | sort) == map(.id)", &list),
        "true",
        "ordered by id"
    );
    let id = id_of(admin, &first);
    let one = get(admin, &format!("/connections/{id}"));
    assert_eq!(jq(".id | tostring", &one), id);
    assert_eq!(
        jq(".client", &one),
        first.local_addr().expect("addr").to_string()
    );
    assert_eq!(jq(".c2u_bytes", &one), "1000");
    assert_eq!(jq(".u2c_bytes", &one), "1000");
    assert_eq!(jq(".age_ms >= 0", &one), "true");

    assert_eq!(jq("length", &get(admin, "/connections?route=default")), "2");
    assert_eq!(jq("length", &get(admin, "/connections?route=other")), "0");
    assert_eq!(jq("length", &get(admin, "/connections?older_than=1h")), "0");
    assert_eq!(
        jq("length", &get(admin, "/connections?older_than=0ms")),
        "2"
    );
    // Idle pairs holding nothing are not stuck.
    assert_eq!(jq("length", &get(admin, "/connections?stuck=1")), "0");
    assert_eq!(jq("[.[].stuck] | any", &list), "false");
    let (status, body) = curl(&[], &format!("http://{admin}/connections?older_than=soon"));
    assert_eq!(status, 400);
    assert!(jq(".error", &body).contains("'soon'"), "{body}");

    let routes = get(admin, "/routes");
    assert_eq!(jq(".[0].name", &routes), "default");
    assert_eq!(jq(".[0].pairs", &routes), "2");
    assert_eq!(jq(".[0].listen[0]", &routes), fwd.addr().to_string());
    assert_eq!(jq(".[0].balance", &routes), "round-robin");
    let upstreams = get(admin, "/upstreams");
    assert_eq!(jq(".[0].address", &upstreams), upstream);
    assert_eq!(jq(".[0].active", &upstreams), "2");
    assert_eq!(jq(".[0].health", &upstreams), "up");
    assert_eq!(jq(".[0].admin", &upstreams), "enabled");

    let (status, body) = curl(&[], &format!("http://{admin}/nowhere"));
    assert_eq!(
        (status, jq(".error | length > 0", &body)),
        (404, "true".into())
    );
    assert_eq!(send(admin, "POST", "/routes", None).0, 405);
    assert_eq!(
        curl(&[], &format!("http://{admin}/connections/999999")).0,
        404
    );
    drop((first, second));
    assert!(
        wait_until(Duration::from_secs(5), || {
            jq("length", &get(admin, "/connections")) == "0"
        }),
        "closed pairs are still listed"
    );
}

/// `DELETE /connections/ID?how=rst` resets the client; the default (`fin`) ends its stream cleanly.
#[test]
fn test_delete_closes_with_rst_or_fin() {
    if !tools() {
        return;
    }
    let echo = Backend::echo();
    let (fwd, admin) = start_with_admin(&["--upstream", &echo.upstream_arg()]);
    let mut reset = echoing_client(fwd.addr());
    let mut finished = echoing_client(fwd.addr());

    let id = id_of(admin, &reset);
    let (status, body) = send(admin, "DELETE", &format!("/connections/{id}?how=rst"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(jq(".how", &body), "rst");
    assert_eq!(jq(".closed | tostring", &body), id);
    assert_eq!(
        read_until_end(&mut reset, Duration::from_secs(10)).1,
        End::Reset
    );
    let again = send(admin, "DELETE", &format!("/connections/{id}"), None);
    assert_eq!(again.0, 404, "closed already: {}", again.1);

    let id = id_of(admin, &finished);
    let (status, body) = send(admin, "DELETE", &format!("/connections/{id}"), None);
    assert_eq!((status, jq(".how", &body)), (200, "fin".into()), "{body}");
    assert_eq!(
        read_until_end(&mut finished, Duration::from_secs(10)),
        (Vec::new(), End::Eof)
    );
    fwd.wait_for_close("admin", Duration::from_secs(5));
    assert_eq!(
        send(admin, "DELETE", "/connections/1?how=slam", None).0,
        400
    );
}

/// An upstream that accepts and never reads: the client's bytes fill the kernel buffers and the
/// upstream-bound ring, the pair stops moving, and after 5 s `?stuck=1` finds it; `GET /connections/ID`
/// says why in words and shows its flight recorder (docs/operations.md's worked example).
#[test]
fn test_stuck_pair_is_found_and_diagnosed() {
    if !tools() {
        return;
    }
    let (deaf, _reports) = Backend::sink_stalled(Duration::from_secs(30));
    let (fwd, admin) = start_with_admin(&["--upstream", &deaf.upstream_arg()]);
    let client = connect(fwd.addr());
    let mut writer = client.try_clone().expect("clone");
    writer
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let chunk = vec![0u8; 64 * 1024];
    while writer.write(&chunk).is_ok() {}
    let mut stuck = String::new();
    let found = wait_until(Duration::from_secs(15), || {
        stuck = get(admin, "/connections?stuck=1");
        jq("length", &stuck) == "1"
    });
    assert!(found, "no stuck pair: {}", get(admin, "/connections"));
    assert_eq!(jq(".[0].c2u_held > 0", &stuck), "true", "{stuck}");
    let id = jq(".[0].id", &stuck);
    let one = get(admin, &format!("/connections/{id}"));
    let diagnosis = jq(".diagnosis", &one);
    assert!(
        diagnosis.contains("upstream has not read") && diagnosis.contains("upstream-bound"),
        "{diagnosis}"
    );
    // The recorder keeps the last 32 events: the accept is the first of them unless the pair's reads
    // (one per 64 KiB edge) have already pushed it out.
    assert_eq!(
        jq(
            "(.events[0].event | startswith(\"accepted\")) or (.events | length == 32)",
            &one
        ),
        "true",
        "{one}"
    );
    assert_eq!(jq(".events | length <= 32", &one), "true");
    assert_eq!(
        jq(".[0] | has(\"diagnosis\")", &stuck),
        "false",
        "lists carry no diagnosis"
    );
    drop((client, writer));
}

/// Which of two backends the pair of `client` went to.
fn upstream_of(admin: SocketAddr, client: &TcpStream) -> String {
    let id = id_of(admin, client);
    jq(".upstream", &get(admin, &format!("/connections/{id}")))
}

/// New clients each make one echo round trip; returns how many each backend accepted meanwhile.
fn new_clients(fwd: &Forwarder, n: usize, backends: [&Backend; 2]) -> [usize; 2] {
    let before = backends.map(Backend::accepted);
    for _ in 0..n {
        drop(echoing_client(fwd.addr()));
    }
    [0, 1].map(|i| backends[i].accepted() - before[i])
}

/// A drained upstream takes no new clients (they all go to the other), while its live pair moves a long
/// transfer to the end, byte-exact; enable gives it clients again; a weight tilts the shares.
#[test]
fn test_drain_sends_new_clients_elsewhere_and_live_ones_finish() {
    if !tools() {
        return;
    }
    let (a, b) = (Backend::echo(), Backend::echo());
    let (fwd, admin) = start_with_admin(&[
        "--upstream",
        &a.upstream_arg(),
        "--upstream",
        &b.upstream_arg(),
    ]);
    let mut live = echoing_client(fwd.addr());
    let drained = upstream_of(admin, &live);
    let backends = if drained == a.upstream_arg() {
        [&a, &b]
    } else {
        [&b, &a]
    };
    let (status, body) = send(admin, "POST", &format!("/upstreams/{drained}/drain"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(jq(".[0].admin", &body), "draining");
    assert_eq!(jq(".[0].address", &body), drained);
    assert_eq!(
        new_clients(&fwd, 10, backends),
        [0, 10],
        "drained upstream got clients"
    );

    // The live pair on the drained upstream carries 8 MiB each way to the end.
    let total = 8 << 20;
    let mut writer = live.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        write_pattern(&mut writer, total, 64 * 1024).expect("write");
        writer.shutdown(Shutdown::Write).expect("shutdown");
    });
    let mut checker = PatternChecker::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match live.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => checker.check(&buf[..n]),
            Err(e) => panic!("live transfer on the drained upstream failed: {e}"),
        }
    }
    sender.join().expect("sender");
    assert_eq!((checker.offset, checker.mismatch), (total, None));

    let upstreams = get(admin, "/upstreams");
    let state = format!(".[] | select(.address == \"{drained}\") | .admin");
    assert_eq!(jq(&state, &upstreams), "draining");
    assert_eq!(
        send(admin, "POST", &format!("/upstreams/{drained}/enable"), None).0,
        200
    );
    let got = new_clients(&fwd, 10, backends);
    assert!(got[0] > 0, "enabled upstream got no clients: {got:?}");

    // Weight 3 against 1: smooth round-robin gives it 3 of every 4 clients (give or take one, from
    // where the scores stood).
    let (status, body) = send(
        admin,
        "PUT",
        &format!("/upstreams/{drained}/weight"),
        Some("3"),
    );
    assert_eq!(
        (status, jq(".[0].weight", &body)),
        (200, "3".into()),
        "{body}"
    );
    let got = new_clients(&fwd, 8, backends);
    assert!(got[0] >= 5 && got[1] >= 1, "weights 3:1 gave {got:?}");
    let bad = send(
        admin,
        "PUT",
        &format!("/upstreams/{drained}/weight"),
        Some("0"),
    );
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert_eq!(
        send(admin, "POST", "/upstreams/127.0.0.1:1/drain", None).0,
        404
    );
}

fn file_route(name: &str, upstreams: &[&Backend], extra: &str) -> String {
    let list: Vec<String> = upstreams
        .iter()
        .map(|b| format!("\"{}\"", b.upstream_arg()))
        .collect();
    format!(
        "admin = \"127.0.0.1:0\"\n[[route]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nupstreams = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// A drain lasts through reloads that keep the route and through one that replaces it (changed
/// settings, same name), until it is undone.
#[test]
fn test_drain_survives_reloads() {
    if !tools() {
        return;
    }
    let (a, b) = (Backend::echo(), Backend::echo());
    let text = file_route("web", &[&a, &b], "");
    let file = ConfigFile::new(&text);
    let fwd = Forwarder::start(&["--config", file.path()]);
    let admin = fwd.admin_addr();
    let drained = a.upstream_arg();
    let path = format!("/upstreams/{drained}/drain?route=web");
    assert_eq!(send(admin, "POST", &path, None).0, 200);
    let steered = |fwd: &Forwarder| new_clients(fwd, 6, [&a, &b]);
    assert_eq!(steered(&fwd), [0, 6]);
    for extra in ["", "idle_timeout = \"5m\"\n"] {
        let before = fwd.count_log("reload: ");
        file.write(&file_route("web", &[&a, &b], extra));
        fwd.signal(libc::SIGHUP);
        assert!(
            wait_until(Duration::from_secs(10), || fwd.count_log("reload: ")
                > before),
            "no reload; log:\n{}",
            fwd.logs()
        );
        let state = format!(".[] | select(.address == \"{drained}\") | .admin");
        assert_eq!(
            jq(&state, &get(admin, "/upstreams")),
            "draining",
            "after {extra:?}"
        );
        assert_eq!(steered(&fwd), [0, 6], "after reload {extra:?}");
    }
    let path = format!("/upstreams/{drained}/enable");
    assert_eq!(send(admin, "POST", &path, None).0, 200);
    assert!(steered(&fwd)[0] > 0);
}

#[test]
fn test_token_is_required_and_non_loopback_needs_one() {
    if !tools() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("edgefwd-admin-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token\n").expect("token file");
    let echo = Backend::echo();
    let upstream = echo.upstream_arg();
    let token_path = token.to_str().expect("path");
    let (_fwd, admin) = start_with_admin(&["--upstream", &upstream, "--admin-token", token_path]);
    let url = format!("http://{admin}/routes");
    let (status, body) = curl(&[], &url);
    assert_eq!(status, 401, "{body}");
    assert!(jq(".error", &body).contains("Bearer"), "{body}");
    assert_eq!(curl(&["-H", "Authorization: Bearer wrong"], &url).0, 401);
    let (status, body) = curl(&["-H", "Authorization: Bearer s3cret-token"], &url);
    assert_eq!((status, jq(".[0].name", &body)), (200, "default".into()));

    // Refused before anything is bound: the address is never listened on.
    let (code, stderr) = run_edgefwd_expect_fail(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--admin",
        "0.0.0.0:9091",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--admin 0.0.0.0:9091: not a loopback address")
            && stderr.contains("--admin-token"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let (code, stderr) =
        run_edgefwd_expect_fail(&["--upstream", &upstream, "--admin", "admin.example:9091"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("'admin.example:9091'"), "{stderr}");
    std::fs::write(&token, "  \n").expect("empty token");
    let (code, stderr) = run_edgefwd_expect_fail(&[
        "--upstream",
        &upstream,
        "--admin",
        "127.0.0.1:0",
        "--admin-token",
        token_path,
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--admin unix:/path`: a socket file of mode 0600, spoken to with `curl --unix-socket`, removed at exit.
#[test]
fn test_unix_socket_admin() {
    if !tools() {
        return;
    }
    let path = std::env::temp_dir().join(format!("edgefwd-admin-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let echo = Backend::echo();
    let spec = format!("unix:{}", path.display());
    let mut fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--admin", &spec]);
    fwd.expect_log(&format!("admin API on {spec}"), Duration::from_secs(10));
    let mode = std::fs::metadata(&path)
        .expect("socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let _client = echoing_client(fwd.addr());
    let socket = path.to_str().expect("path");
    let (status, body) = curl(&["--unix-socket", socket], "http://admin/connections");
    assert_eq!((status, jq("length", &body)), (200, "1".into()), "{body}");
    fwd.signal(libc::SIGTERM);
    drop(_client);
    assert!(fwd.wait_exit(Duration::from_secs(20)).is_some());
    assert!(!path.exists(), "socket file left behind");
}

/// A transfer of `total` bytes through an echo pair; how long it took.
fn timed_transfer(addr: SocketAddr, total: u64) -> Duration {
    let started = Instant::now();
    echo_roundtrip(addr, total, 256 * 1024);
    started.elapsed()
}

/// Admin clients that trickle a request head a byte at a time, never finishing it, and more of them
/// than the endpoint serves at once, do not slow a transfer beyond noise; and a real request still gets
/// its answer meanwhile.
#[test]
fn test_hostile_admin_clients_do_not_slow_a_transfer() {
    if !tools() {
        return;
    }
    let echo = Backend::echo();
    let (fwd, admin) = start_with_admin(&["--upstream", &echo.upstream_arg()]);
    let total = 64 << 20;
    let quiet = timed_transfer(fwd.addr(), total);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle: Vec<_> = (0..40)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(admin) else {
                    return;
                };
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    if s.write_all(b"G").is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    let hostile = timed_transfer(fwd.addr(), total);
    let routes = get(admin, "/routes");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in trickle {
        t.join().expect("trickler");
    }
    assert_eq!(jq(".[0].name", &routes), "default");
    // Generous: fails only if the admin clients stalled the data path, not on a noisy machine.
    assert!(
        hostile < quiet * 5 + Duration::from_secs(5),
        "transfer took {hostile:?} beside hostile admin clients, {quiet:?} without"
    );
}

/// With `--threads 2`, `GET /connections` lists the pairs of both reactors (ids are unique
/// process-wide: the reactor is the id modulo 2), a `DELETE` reaches the pair's own reactor, and a drain
/// applies on both.
#[test]
fn test_threads_list_and_steer_every_reactor() {
    if !tools() {
        return;
    }
    let (a, b) = (Backend::echo(), Backend::echo());
    let (fwd, admin) = start_with_admin(&[
        "--upstream",
        &a.upstream_arg(),
        "--upstream",
        &b.upstream_arg(),
        "--threads",
        "2",
    ]);
    let mut clients = Vec::new();
    let reactors = |admin: SocketAddr| {
        jq(
            "[.[].id % 2] | unique | length",
            &get(admin, "/connections"),
        )
    };
    while reactors(admin) != "2" {
        assert!(clients.len() < 200, "200 clients, all on one reactor");
        clients.push(echoing_client(fwd.addr()));
    }
    let list = get(admin, "/connections");
    assert_eq!(jq("length", &list), clients.len().to_string());
    assert_eq!(
        jq("[.[].id] | unique | length", &list),
        clients.len().to_string()
    );
    assert_eq!(
        jq(".[0].pairs", &get(admin, "/routes")),
        clients.len().to_string()
    );
    let active = jq("[.[].active] | add", &get(admin, "/upstreams"));
    assert_eq!(active, clients.len().to_string());
    for parity in [0, 1] {
        let filter = format!("[.[] | select(.id % 2 == {parity})][0].client");
        let client_addr = jq(&filter, &get(admin, "/connections"));
        let index = clients
            .iter()
            .position(|c| c.local_addr().expect("addr").to_string() == client_addr)
            .expect("listed client");
        let mut client = clients.swap_remove(index);
        let id = id_of(admin, &client);
        let (status, body) = send(admin, "DELETE", &format!("/connections/{id}"), None);
        assert_eq!(status, 200, "reactor {parity}: {body}");
        assert_eq!(
            read_until_end(&mut client, Duration::from_secs(10)).1,
            End::Eof
        );
    }
    let drained = a.upstream_arg();
    let (status, body) = send(admin, "POST", &format!("/upstreams/{drained}/drain"), None);
    assert_eq!(
        (status, jq(".[0].admin", &body)),
        (200, "draining".into()),
        "{body}"
    );
    assert_eq!(
        new_clients(&fwd, 20, [&a, &b]),
        [0, 20],
        "a reactor ignored the drain"
    );
}
