//! Running under systemd: `Type=notify` notices on a `NOTIFY_SOCKET` (path and abstract), socket
//! activation through `LISTEN_FDS` (by name, by address, with `--threads`, across a reload, and the
//! errors), and the example unit files checked by `systemd-analyze verify`.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// The service manager's end of `NOTIFY_SOCKET`: every datagram the forwarder sent, in order.
struct Manager {
    socket: UnixDatagram,
    /// The `NOTIFY_SOCKET` value naming it.
    address: String,
    path: Option<PathBuf>,
    seen: Vec<String>,
}

impl Manager {
    fn on_path(tag: &str) -> Manager {
        let path =
            std::env::temp_dir().join(format!("edgefwd-notify-{}-{tag}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind notify path");
        Manager::with(socket, path.display().to_string(), Some(path))
    }

    fn abstract_(tag: &str) -> Manager {
        let name = format!("edgefwd-notify-{}-{tag}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        Manager::with(socket, format!("@{name}"), None)
    }

    fn with(socket: UnixDatagram, address: String, path: Option<PathBuf>) -> Manager {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        Manager {
            socket,
            address,
            path,
            seen: Vec::new(),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![("NOTIFY_SOCKET".into(), self.address.clone())]
    }

    /// Reads datagrams for `time`.
    fn collect(&mut self, time: Duration) {
        let until = Instant::now() + time;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    /// The first message not seen before index `from` that has line `line`; its index and text.
    fn expect(&mut self, from: usize, line: &str) -> (usize, String) {
        let until = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        loop {
            let found = self
                .seen
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, m)| m.lines().any(|l| l == line));
            if let Some((at, message)) = found {
                return (at, message.clone());
            }
            assert!(
                Instant::now() < until,
                "no {line:?} after message {from}; got {:?}",
                self.seen
            );
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    fn count(&self, line: &str) -> usize {
        self.seen
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn start(args: &[&str], env: Vec<(String, String)>) -> Forwarder {
    Forwarder::start_with(
        args,
        &Options {
            env,
            ..Options::default()
        },
    )
}

fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

fn route(name: &str, listen: &str, upstream: &Backend) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nlisten = \"{listen}\"\nupstreams = [\"{}\"]\n",
        upstream.upstream_arg()
    )
}

/// READY comes once the listener accepts; STATUS follows the live connections; SIGTERM says
/// STOPPING; no watchdog pings without WATCHDOG_USEC.
#[test]
fn test_ready_status_and_stopping_on_a_path_socket() {
    let backend = Backend::echo();
    let mut manager = Manager::on_path("ready");
    let mut fwd = start(&["--upstream", &backend.upstream_arg()], manager.env());
    let (ready, message) = manager.expect(0, "READY=1");
    assert!(message.contains("STATUS=0 live connections"), "{message}");
    echo_roundtrip(fwd.addr(), 1024, 1024);

    let client = connect(fwd.addr());
    let (at, _) = manager.expect(ready, "STATUS=1 live connections");
    drop(client);
    manager.expect(at, "STATUS=0 live connections");

    fwd.signal(libc::SIGTERM);
    manager.expect(at, "STOPPING=1");
    assert!(fwd.wait_exit(WAIT).is_some(), "no exit after SIGTERM");
    manager.collect(Duration::from_millis(100));
    assert_eq!(manager.count("WATCHDOG=1"), 0, "{:?}", manager.seen);
    assert_eq!(manager.count("READY=1"), 1, "{:?}", manager.seen);
}

/// A reload, applied or rejected, is bracketed by RELOADING=1 (with the monotonic clock of its start)
/// and READY=1; on an abstract socket.
#[test]
fn test_reload_is_bracketed_by_reloading_and_ready_on_an_abstract_socket() {
    let backend = Backend::echo();
    let file = ConfigFile::new(&route("web", "127.0.0.1:0", &backend));
    let mut manager = Manager::abstract_("reload");
    let fwd = start(&["--config", file.path()], manager.env());
    let (ready, _) = manager.expect(0, "READY=1");

    let pinned = fwd.addr().to_string();
    file.write(&route("web", &pinned, &backend));
    let before = monotonic_usec();
    fwd.signal(libc::SIGHUP);
    let (reloading, message) = manager.expect(ready + 1, "RELOADING=1");
    let usec: u64 = message
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {message:?}"));
    assert!(
        before <= usec && usec <= monotonic_usec(),
        "MONOTONIC_USEC={usec} is not the time of the reload (from {before})"
    );
    let (applied, _) = manager.expect(reloading + 1, "READY=1");
    fwd.expect_log("reload: 1 routes", WAIT);

    file.write("[[route]\nbroken");
    fwd.signal(libc::SIGHUP);
    let (reloading, _) = manager.expect(applied + 1, "RELOADING=1");
    manager.expect(reloading + 1, "READY=1");
    fwd.expect_log("reload rejected", WAIT);
    echo_roundtrip(fwd.addr(), 1024, 1024);
}

/// Times the loop's thread (the main thread, reactor 0) went to sleep and was woken, so far.
fn loop_wakeups(fwd: &Forwarder) -> u64 {
    let pid = fwd.pid();
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).expect("task status");
    support::procfs::status_field(&status, "voluntary_ctxt_switches:").expect("field")
}

/// With WATCHDOG_USEC the forwarder pings every half interval, idle or not; with a WATCHDOG_PID of
/// another process it does not, and then, notifying or not, an idle loop sleeps without waking.
#[test]
fn test_watchdog_pings_every_half_interval_and_only_then() {
    let backend = Backend::echo();
    let mut manager = Manager::abstract_("watchdog");
    let mut env = manager.env();
    env.push(("WATCHDOG_USEC".into(), "400000".into()));
    let fwd = start(&["--upstream", &backend.upstream_arg()], env);
    manager.expect(0, "READY=1");
    let before = loop_wakeups(&fwd);
    manager.collect(Duration::from_secs(2));
    // Every 200ms: about 10 in 2s; generous bounds for a loaded machine.
    let pings = manager.count("WATCHDOG=1");
    assert!((4..=20).contains(&pings), "{pings} pings in 2s");
    assert!(loop_wakeups(&fwd) - before >= 4, "pings without wakeups?");

    let mut other = Manager::abstract_("watchdog-other");
    let mut env = other.env();
    env.push(("WATCHDOG_USEC".into(), "400000".into()));
    env.push(("WATCHDOG_PID".into(), "1".into()));
    let fwd = start(&["--upstream", &backend.upstream_arg()], env);
    other.expect(0, "READY=1");
    // Past the status interval, so that nothing held back is due either.
    std::thread::sleep(Duration::from_millis(1200));
    let before = loop_wakeups(&fwd);
    other.collect(Duration::from_secs(1));
    assert_eq!(other.count("WATCHDOG=1"), 0, "{:?}", other.seen);
    assert_eq!(loop_wakeups(&fwd) - before, 0, "an idle loop woke up");
}

/// A listening socket bound here, as the `.socket` unit would.
fn socket_unit() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

fn activated(args: &[&str], sockets: &[(&TcpListener, &str)]) -> Forwarder {
    Forwarder::start_with(
        args,
        &Options {
            listen_fds: sockets
                .iter()
                .map(|(s, name)| (s.as_raw_fd(), name.to_string()))
                .collect(),
            ..Options::default()
        },
    )
}

/// A socket whose name is the route's is that route's listener, although the file asks for another
/// address; the route's other address is bound as usual.
#[test]
fn test_activated_socket_matched_by_name() {
    let backend = Backend::echo();
    let unit = socket_unit();
    let passed = unit.local_addr().expect("addr");
    let text = format!(
        "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:0\"]\nupstreams = [\"{}\"]\n",
        backend.upstream_arg()
    );
    let file = ConfigFile::new(&text);
    let fwd = activated(&["--config", file.path()], &[(&unit, "web")]);
    fwd.expect_log(
        &format!(
            "route web: 127.0.0.1:1 is socket-activated fd 3 (name \"web\", bound to {passed})"
        ),
        WAIT,
    );
    drop(unit); // the child holds its own copy, as the forwarder does systemd's
    let stray = format!("/proc/{}/fd/100", fwd.pid());
    assert!(
        !std::path::Path::new(&stray).exists(),
        "the launcher's spare copy leaked"
    );
    echo_roundtrip(passed, 64 * 1024, 16 * 1024);
    let lines: Vec<SocketAddr> = fwd.logs().lines().filter_map(parse_listen_addr).collect();
    assert_eq!(lines.len(), 2, "{}", fwd.logs());
    assert_eq!(lines[0], passed);
    echo_roundtrip(lines[1], 1024, 1024);
}

/// An unnamed socket goes to the route listening on its address: the forwarder could not bind that
/// address itself (the socket holds it, without SO_REUSEPORT), so a forwarded client proves it took
/// the socket; with `--threads 2` both reactors accept from it, and the process says READY once.
#[test]
fn test_activated_socket_matched_by_address_with_threads() {
    let backend = Backend::echo();
    let unit = socket_unit();
    let addr = unit.local_addr().expect("addr").to_string();
    let mut manager = Manager::abstract_("threads");
    let upstream = backend.upstream_arg();
    let mut fwd = Forwarder::start_with(
        &["--listen", &addr, "--upstream", &upstream, "--threads", "2"],
        &Options {
            listen_fds: vec![(unit.as_raw_fd(), "unknown".into())],
            env: manager.env(),
            ..Options::default()
        },
    );
    assert_eq!(fwd.addr().to_string(), addr);
    drop(unit);
    let (ready, _) = manager.expect(0, "READY=1");
    for _ in 0..8 {
        echo_roundtrip(fwd.addr(), 16 * 1024, 4 * 1024);
    }
    fwd.signal(libc::SIGTERM);
    manager.expect(ready, "STOPPING=1");
    assert!(fwd.wait_exit(WAIT).is_some(), "no exit after SIGTERM");
    manager.collect(Duration::from_millis(100));
    assert_eq!(manager.count("READY=1"), 1, "{:?}", manager.seen);
    assert_eq!(manager.count("STOPPING=1"), 1, "{:?}", manager.seen);
}

/// A reload that replaces the route keeps the socket-activated listener: its address never stops
/// accepting, and is not bound again.
#[test]
fn test_reload_keeps_an_activated_listener() {
    let (a, b) = (Backend::echo(), Backend::echo());
    let unit = socket_unit();
    let addr = unit.local_addr().expect("addr");
    let file = ConfigFile::new(&route("web", &addr.to_string(), &a));
    let fwd = activated(&["--config", file.path()], &[(&unit, "web")]);
    drop(unit);
    echo_roundtrip(addr, 1024, 1024);
    file.write(&route("web", &addr.to_string(), &b));
    fwd.signal(libc::SIGHUP);
    fwd.expect_log("reload: 1 routes (+0 -0 ~1)", WAIT);
    echo_roundtrip(addr, 1024, 1024);
    assert_eq!((a.accepted(), b.accepted()), (1, 1));
}

/// Runs the forwarder with sockets handed over, expecting it to fail at start; (exit code, stderr).
fn activated_failure(args: &[&str], fds: &[(RawFd, String)]) -> (Option<i32>, String) {
    let out = edgefwd_command(fds)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run edgefwd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A socket no route wants by name or address stops the start, naming it.
#[test]
fn test_activated_socket_matching_no_route_is_an_error() {
    let backend = Backend::echo();
    let unit = socket_unit();
    let passed = unit.local_addr().expect("addr");
    let (code, stderr) = activated_failure(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &backend.upstream_arg(),
        ],
        &[(unit.as_raw_fd(), "metrics".into())],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "socket-activation fd 3 (name \"metrics\", bound to {passed}) matches no route"
        )),
        "{stderr}"
    );
}

/// What is passed as descriptor 3 must be a listening TCP socket.
#[test]
fn test_activated_descriptor_that_is_not_listening_is_an_error() {
    let backend = Backend::echo();
    let idle =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let (code, stderr) = activated_failure(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &backend.upstream_arg(),
        ],
        &[(idle.as_raw_fd(), "web".into())],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("socket-activation fd 3 (name \"web\"): not a listening TCP socket"),
        "{stderr}"
    );
}

/// docs/edgefwd.service and docs/edgefwd.socket pass `systemd-analyze verify`, which needs no running
/// systemd. verify also checks that ExecStart's binary exists: the units are checked from a copy whose
/// ExecStart names the binary cargo built.
#[test]
fn test_example_units_verify() {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (.ci/run installs package systemd as root)"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("edgefwd-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut units = Vec::new();
    for unit in ["edgefwd.socket", "edgefwd.service"] {
        let text = std::fs::read_to_string(docs.join(unit)).expect("read unit");
        let text = text.replace("/usr/local/bin/edgefwd", env!("CARGO_BIN_EXE_edgefwd"));
        assert!(
            unit != "edgefwd.service" || text.contains(env!("CARGO_BIN_EXE_edgefwd")),
            "docs/edgefwd.service no longer starts /usr/local/bin/edgefwd"
        );
        std::fs::write(dir.join(unit), text).expect("write unit");
        units.push(dir.join(unit));
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .current_dir(&dir)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}
