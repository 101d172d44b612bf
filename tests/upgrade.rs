//! Binary upgrade (`--upgrade-socket` / `--upgrade-from`): the binary hands its listening sockets to
//! itself while clients keep coming. New connections at a steady rate, each echoing a pattern, and long
//! transfers, across two hops: not one is refused or reset, every byte comes back, each old process exits
//! once its own pairs have drained. Also with `--threads 2`, over a Unix listener (handed over, never
//! bound again), with the old process out of fds when its successor comes, and a successor that dies
//! before taking over (the old one keeps serving).

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::{pattern, set_timeouts, unused_port, Backend, Forwarder, PatternChecker, IO_TIMEOUT};

/// Pause between two new connections of one client thread.
const RATE: Duration = Duration::from_millis(3);
/// Bytes each short connection echoes.
const SHORT: usize = 2048;
/// Bytes of each long transfer, written at a pace that makes it outlast the hand-over.
const LONG: u64 = 24 << 20;
/// How long a drained old process may take to exit (a debug build on a busy machine).
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A socket path unique to this test.
fn socket_path(tag: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("edgefwd-upgrade-{}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Where [`Steady`] clients connect.
#[derive(Debug, Clone)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Clients that open a new connection every [`RATE`] until stopped, each echoing [`SHORT`] pattern
/// bytes; every failure is kept, with what it was.
struct Steady {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Steady {
    fn start(target: Target, threads: usize) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|t| {
                let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
                let target = target.clone();
                thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let offset = (t as u64 * 1_000_003 + n * 4099) % (1 << 20);
                        match short_echo(&target, offset) {
                            Ok(()) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(err) => failures
                                .lock()
                                .expect("failures")
                                .push(format!("client {t} connection {n}: {err}")),
                        }
                        n += 1;
                        thread::sleep(RATE);
                    }
                })
            })
            .collect();
        Steady {
            stop,
            done,
            failures,
            threads,
        }
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops the clients; the failures they met.
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("client thread");
        }
        let failures = self.failures.lock().expect("failures").clone();
        failures
    }
}

/// One short connection: write the pattern at `offset`, half-close, read it all back, expect EOF.
fn short_echo(target: &Target, offset: u64) -> io::Result<()> {
    let sent = pattern(offset, SHORT);
    let mut back = Vec::with_capacity(SHORT);
    match target {
        Target::Tcp(addr) => {
            let mut stream = TcpStream::connect(addr)?;
            set_timeouts(&stream, IO_TIMEOUT);
            stream.write_all(sent)?;
            stream.shutdown(Shutdown::Write)?;
            stream.read_to_end(&mut back)?;
        }
        Target::Unix(path) => {
            let mut stream = UnixStream::connect(path)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            stream.write_all(sent)?;
            stream.shutdown(Shutdown::Write)?;
            stream.read_to_end(&mut back)?;
        }
    }
    if back != sent {
        return Err(io::Error::other(format!(
            "echoed {} bytes, not the {SHORT} sent",
            back.len()
        )));
    }
    Ok(())
}

type Transfer = JoinHandle<Result<(u64, Option<u64>), String>>;

/// A long echo transfer, written in paced chunks; joins to (bytes checked, first mismatch). The counter
/// is the bytes echoed so far.
fn long_transfer(addr: SocketAddr) -> (Transfer, Arc<AtomicU64>) {
    let echoed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&echoed);
    let transfer = thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        set_timeouts(&stream, IO_TIMEOUT);
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let w = thread::spawn(move || -> io::Result<()> {
            let chunk = 256 << 10;
            for start in (0..LONG).step_by(chunk) {
                let n = (LONG - start).min(chunk as u64) as usize;
                writer.write_all(pattern(start, n))?;
                thread::sleep(Duration::from_millis(25));
            }
            writer.shutdown(Shutdown::Write)
        });
        let mut checker = PatternChecker::default();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    checker.check(&buf[..n]);
                    counter.store(checker.offset, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read after {} bytes: {e}", checker.offset)),
            }
        }
        w.join()
            .map_err(|_| String::from("writer panicked"))?
            .map_err(|e| format!("write: {e}"))?;
        Ok((checker.offset, checker.mismatch))
    });
    (transfer, echoed)
}

fn check_long(transfer: Transfer) {
    let (bytes, mismatch) = transfer
        .join()
        .expect("transfer thread")
        .unwrap_or_else(|e| panic!("long transfer failed: {e}"));
    assert_eq!(
        (bytes, mismatch),
        (LONG, None),
        "long transfer not byte-exact"
    );
}

/// Starts `edgefwd` with the common flags plus `extra` (whose `--config`, if any, gives the route
/// instead of `--listen 127.0.0.1:PORT --upstream BACKEND`).
fn start(port: u16, backend: &Backend, path: &str, extra: &[&str]) -> Forwarder {
    let listen = format!("127.0.0.1:{port}");
    let upstream = backend.upstream_arg();
    let mut args = if extra.contains(&"--config") {
        Vec::new()
    } else {
        vec!["--listen", &listen, "--upstream", &upstream]
    };
    args.extend(["--upgrade-socket", path, "--shutdown-timeout", "60s"]);
    args.extend_from_slice(extra);
    let fwd = Forwarder::start(&args);
    // A first process binds its upgrade socket just after its listeners (a successor, only once it
    // has taken over): connecting before that finds no file.
    if !extra.contains(&"--upgrade-from") {
        fwd.expect_log("upgrade socket on", EXIT_TIMEOUT);
    }
    fwd
}

/// One hop: two long transfers start on `old`, a successor (`extra` flags) takes over, `old` exits once
/// they end.
fn hop(
    old: &mut Forwarder,
    (port, backend, path): (u16, &Backend, &str),
    extra: &[&str],
) -> Forwarder {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let long = [long_transfer(addr), long_transfer(addr)];
    // Both transfers are the old process's pairs (bytes come back) before the successor comes.
    assert!(
        common::wait_until(Duration::from_secs(20), || long
            .iter()
            .all(|(_, echoed)| echoed.load(Ordering::Relaxed) > 0)),
        "the long transfers never got going"
    );
    let mut flags = vec!["--upgrade-from", path];
    flags.extend_from_slice(extra);
    let new = start(port, backend, path, &flags);
    new.expect_log("upgrade: took over the listening sockets", EXIT_TIMEOUT);
    old.expect_log("the successor took over", EXIT_TIMEOUT);
    // The hand-over's SIGTERM is the process's own: its log says why it stops, not a signal.
    old.expect_log("handed over to the successor: draining", EXIT_TIMEOUT);
    assert!(
        !old.logs().contains("SIGTERM"),
        "no signal was sent:\n{}",
        old.logs()
    );
    assert!(
        old.is_running(),
        "the old process must wait for its long transfers"
    );
    for (transfer, _) in long {
        check_long(transfer);
    }
    let status = old
        .wait_exit(EXIT_TIMEOUT)
        .expect("the old process exits once drained");
    assert!(status.success(), "old process: {status}");
    new.expect_log("upgrade socket on", EXIT_TIMEOUT);
    new
}

fn upgrade_twice(threads: &str) {
    let backend = Backend::echo();
    let port = unused_port();
    let path = socket_path(&format!("twice-{threads}"));
    let at = path.to_str().expect("utf-8 path");
    // The metrics port goes along with the listeners: the successor could not bind it meanwhile.
    let metrics = format!("127.0.0.1:{}", unused_port());
    // One pid file for all: each successor takes it over from its predecessor.
    let pid_file = socket_path(&format!("twice-{threads}.pid"));
    let pid_at = pid_file.to_str().expect("utf-8 path");
    let flags = [
        "--threads",
        threads,
        "--metrics",
        &metrics,
        "--pid-file",
        pid_at,
    ];
    let names = |fwd: &Forwarder| {
        std::fs::read_to_string(&pid_file).is_ok_and(|text| text.trim() == fwd.pid().to_string())
    };
    let mut first = start(port, &backend, at, &flags);
    assert!(common::wait_until(Duration::from_secs(10), || names(
        &first
    )));
    let mode = std::fs::metadata(&path)
        .expect("the upgrade socket")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600,
        "only the owner may hand the sockets over"
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let steady = Steady::start(Target::Tcp(addr), 2);
    let mut second = hop(&mut first, (port, &backend, at), &flags);
    assert!(names(&second), "the successor holds the pid file");
    let after_first = steady.done();
    let mut third = hop(&mut second, (port, &backend, at), &flags);
    assert!(
        names(&third),
        "the pid file survives its predecessor's exit"
    );
    // The last one serves the steady clients too.
    let before = steady.done();
    assert!(common::wait_until(Duration::from_secs(20), || steady
        .done()
        > before + 20));
    let done = steady.done();
    let failures = steady.finish();
    eprintln!(
        "threads={threads}: {done} short connections ({after_first} by the end of the first hop), {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} connections failed across the upgrades: {:?}",
        failures.len(),
        done + failures.len() as u64,
        &failures[..failures.len().min(10)]
    );
    assert!(
        after_first > 0 && done > after_first,
        "the clients kept coming: {after_first}, {done}"
    );
    assert!(third.is_running());
    let served = common::sample(
        &common::scrape(third.metrics_addr()),
        "edgefwd_accepts_total",
    );
    assert!(served > 0, "the last process serves the metrics port");
    third.signal(libc::SIGTERM);
    assert!(third.wait_exit(EXIT_TIMEOUT).is_some_and(|s| s.success()));
    assert!(
        !path.exists(),
        "the last process removes its socket at exit"
    );
    assert!(!pid_file.exists(), "and its pid file");
}

#[test]
fn test_upgrade_keeps_every_connection() {
    upgrade_twice("1");
}

#[test]
fn test_upgrade_keeps_every_connection_with_threads() {
    upgrade_twice("2");
}

/// A successor that dies before taking over (here: after it has received the sockets, on a metrics port
/// it cannot bind), and a connection that reads the offer and hangs up, leave the old process serving;
/// a later successor still takes over.
#[test]
fn test_failed_upgrade_leaves_the_old_serving() {
    let backend = Backend::echo();
    let port = unused_port();
    let path = socket_path("failed");
    let at = path.to_str().expect("utf-8 path");
    let mut old = start(port, &backend, at, &[]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let steady = Steady::start(Target::Tcp(addr), 1);

    let mut offer = Vec::new();
    let mut peek = UnixStream::connect(&path).expect("connect to the upgrade socket");
    peek.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut buf = [0u8; 256];
    while !offer.ends_with(b"end\n") {
        let n = peek.read(&mut buf).expect("read the offer");
        assert!(n > 0, "the offer ended early");
        offer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&offer);
    assert!(text.contains(&format!("{addr} default")), "{text}");
    drop(peek);
    old.expect_log(
        "the successor went away before taking over; still serving",
        EXIT_TIMEOUT,
    );

    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics = busy.local_addr().expect("addr").to_string();
    let listen = format!("127.0.0.1:{port}");
    let upstream = backend.upstream_arg();
    let (code, stderr) = common::run_edgefwd_expect_fail(&[
        "--listen",
        &listen,
        "--upstream",
        &upstream,
        "--metrics",
        &metrics,
        "--upgrade-from",
        at,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen for metrics"), "{stderr}");
    old.expect_log("upgrade: offered 1 listening sockets", EXIT_TIMEOUT);
    assert!(
        common::wait_until(EXIT_TIMEOUT, || old
            .count_log("went away before taking over")
            >= 2),
        "the old process saw the successor go"
    );
    let before = steady.done();
    assert!(common::wait_until(Duration::from_secs(20), || steady
        .done()
        > before + 20));
    assert!(old.is_running());

    let mut new = hop(&mut old, (port, &backend, at), &[]);
    let failures = steady.finish();
    assert!(failures.is_empty(), "{failures:?}");
    new.signal(libc::SIGTERM);
    assert!(new.wait_exit(EXIT_TIMEOUT).is_some_and(|s| s.success()));
}

/// A socket-activated process hands its sockets on like bound ones: the successor, started without
/// `LISTEN_FDS`, serves the activated socket (matched to its route by name), and no client is refused.
#[test]
fn test_upgrade_from_a_socket_activated_process() {
    let backend = Backend::echo();
    let activated = common::listen_socket(SocketAddr::from(([127, 0, 0, 1], 0)), 128);
    let addr = activated.local_addr().expect("addr");
    let path = socket_path("activated");
    let at = path.to_str().expect("utf-8 path");
    let listen = format!("127.0.0.1:{}", addr.port());
    let upstream = backend.upstream_arg();
    let args = [
        "--listen",
        &listen,
        "--upstream",
        &upstream,
        "--upgrade-socket",
        at,
    ];
    let mut old = Forwarder::start_with(
        &args,
        &common::Options {
            listen_fds: vec![(activated.as_raw_fd(), "default".into())],
            ..common::Options::default()
        },
    );
    old.expect_log("is socket-activated fd 3", EXIT_TIMEOUT);
    old.expect_log("upgrade socket on", EXIT_TIMEOUT);
    drop(activated); // only the processes hold it now
    let steady = Steady::start(Target::Tcp(addr), 2);
    let mut new = hop(&mut old, (addr.port(), &backend, at), &[]);
    new.expect_log("is handed-over fd", EXIT_TIMEOUT);
    let before = steady.done();
    assert!(common::wait_until(Duration::from_secs(20), || steady
        .done()
        > before + 20));
    let failures = steady.finish();
    assert!(failures.is_empty(), "{failures:?}");
    new.signal(libc::SIGTERM);
    assert!(new.wait_exit(EXIT_TIMEOUT).is_some_and(|s| s.success()));
}

/// A route listening on TCP and on a Unix path: the successor takes the Unix listener over (the file
/// keeps its inode: it was neither removed nor bound again), steady clients over the Unix socket meet
/// no failure across the hop, the old process leaves the file behind when it exits, and the last
/// process removes it at its own exit.
#[test]
fn test_upgrade_hands_over_unix_listeners() {
    let backend = Backend::echo();
    let port = unused_port();
    let path = socket_path("unix");
    let at = path.to_str().expect("utf-8 path");
    let unix = socket_path("unix-listener");
    let file = common::ConfigFile::new(&format!(
        "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:{port}\", \"unix:{}\"]\nupstreams = [\"{}\"]\n",
        unix.display(),
        backend.upstream_arg()
    ));
    let flags = ["--config", file.path()];
    let mut old = start(port, &backend, at, &flags);
    let inode = std::fs::metadata(&unix)
        .expect("the Unix listener's file")
        .ino();
    let steady = Steady::start(Target::Unix(unix.clone()), 2);
    assert!(common::wait_until(Duration::from_secs(20), || steady
        .done()
        > 20));
    let mut new = hop(&mut old, (port, &backend, at), &flags);
    assert_eq!(
        std::fs::metadata(&unix).map(|m| m.ino()).ok(),
        Some(inode),
        "the socket file must outlive the old process, untouched"
    );
    let before = steady.done();
    assert!(
        common::wait_until(Duration::from_secs(20), || steady.done() > before + 20),
        "the successor serves the Unix clients"
    );
    let done = steady.done();
    let failures = steady.finish();
    assert!(
        failures.is_empty(),
        "{} of {} Unix connections failed across the upgrade: {:?}",
        failures.len(),
        done + failures.len() as u64,
        &failures[..failures.len().min(10)]
    );
    new.signal(libc::SIGTERM);
    assert!(new.wait_exit(EXIT_TIMEOUT).is_some_and(|s| s.success()));
    assert!(!unix.exists(), "the last process removes the socket file");
}

/// The old process is out of descriptors when its successor connects: the upgrade socket's accept
/// fails (EMFILE) and, edge-triggered, would never be told again; it is retried after the accept
/// pause, and succeeds once pairs closing give fds back, so the successor takes over.
#[test]
fn test_upgrade_socket_accept_retries_after_emfile() {
    let backend = Backend::echo();
    let port = unused_port();
    let path = socket_path("emfile");
    let at = path.to_str().expect("utf-8 path");
    let mut old = start(port, &backend, at, &[]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut client = common::connect(addr);
            client.write_all(b"ping").expect("write");
            let mut buf = [0u8; 4];
            client.read_exact(&mut buf).expect("echo");
            client
        })
        .collect();
    // The lowest free descriptor number: a limit there leaves none, and fds are handed out lowest
    // first, so the clients' pairs (opened last) sit below it and give it room when they close.
    let numbers = common::support::procfs::fd_numbers(old.pid()).expect("/proc/PID/fd");
    let first_free = (0..).find(|n| !numbers.contains(n)).expect("a free number");
    old.lower_nofile(first_free);
    let successor = {
        let backend_arg = backend.upstream_arg();
        let at = at.to_string();
        thread::spawn(move || {
            let listen = format!("127.0.0.1:{port}");
            Forwarder::start(&[
                "--listen",
                &listen,
                "--upstream",
                &backend_arg,
                "--upgrade-from",
                &at,
                "--upgrade-socket",
                &at,
            ])
        })
    };
    old.expect_log("Too many open files", EXIT_TIMEOUT);
    assert!(
        !old.logs().contains("offered"),
        "the accept failed: nothing offered yet"
    );
    drop(clients); // their pairs close, and give fds back
    let new = successor.join().expect("the successor starts");
    new.expect_log("upgrade: took over the listening sockets", EXIT_TIMEOUT);
    old.expect_log("the successor took over", EXIT_TIMEOUT);
    let status = old.wait_exit(EXIT_TIMEOUT).expect("the old process exits");
    assert!(status.success(), "old process: {status}");
    short_echo(&Target::Tcp(addr), 0).expect("the successor serves");
}

/// `curl` of `url` with `args` (`--unix-socket PATH` for a Unix admin socket): the body of a 200
/// answer, `None` for anything else (no answer included).
fn curl_ok(args: &[&str], url: &str) -> Option<String> {
    let output = std::process::Command::new("curl")
        .args(["-s", "-f", "-g", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// An echo connection to `addr` that has round-tripped a byte (a live pair), held open.
fn live_pair(addr: SocketAddr) -> TcpStream {
    let mut conn = common::connect(addr);
    set_timeouts(&conn, IO_TIMEOUT);
    conn.write_all(b"x").expect("write");
    let mut byte = [0u8; 1];
    conn.read_exact(&mut byte).expect("echo");
    conn
}

/// A process with `--admin` (`spec`, asked with `curl` plus `args` at `url`) is upgraded with the same
/// flags: the successor starts (it takes the admin listener over instead of binding it, which the
/// draining old process would make fail), and the same admin address answers from the successor
/// while the old process still runs: `GET /connections` lists a pair opened after the hand-over and
/// not the old process's pair (with `--threads 2`, whose other reactor may hold either). A Unix socket's `file` keeps its inode (neither removed nor bound
/// again, also when the old process exits), and the last process removes it at its exit.
fn upgrade_with_admin(tag: &str, spec: &str, args: &[&str], url: &str, file: Option<&Path>) {
    // Two reactors: reactor 0 serves the API, and hands it over, for both.
    let threads = ["--threads", "2"];
    let inode = || {
        file.and_then(|file| std::fs::metadata(file).ok())
            .map(|m| m.ino())
    };
    let backend = Backend::echo();
    let port = unused_port();
    let path = socket_path(tag);
    let at = path.to_str().expect("utf-8 path");
    let flags = ["--admin", spec, threads[0], threads[1]];
    let mut old = start(port, &backend, at, &flags);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let held = live_pair(addr);
    let held_port = format!(":{}\"", held.local_addr().expect("addr").port());
    let before = curl_ok(args, url).expect("the old process answers admin requests");
    assert!(before.contains(&held_port), "{before}");
    let first_inode = inode();
    let mut new = start(
        port,
        &backend,
        at,
        &[&["--upgrade-from", at], &flags[..]].concat(),
    );
    new.expect_log("upgrade: took over the listening sockets", EXIT_TIMEOUT);
    old.expect_log("the successor took over", EXIT_TIMEOUT);
    assert!(old.is_running(), "the old process drains its held pair");
    let fresh = live_pair(addr);
    let fresh_port = format!(":{}\"", fresh.local_addr().expect("addr").port());
    let after = curl_ok(args, url).expect("the admin address answers after the upgrade");
    assert!(
        after.contains(&fresh_port) && !after.contains(&held_port),
        "the successor answers, not the old process: {after}"
    );
    drop(held);
    let status = old.wait_exit(EXIT_TIMEOUT).expect("the old process exits");
    assert!(status.success(), "old process: {status}");
    assert_eq!(
        inode(),
        first_inode,
        "the socket file must outlive the old process, untouched"
    );
    let last = curl_ok(args, url).expect("the admin address outlives the old process");
    assert!(last.contains(&fresh_port), "{last}");
    drop(fresh);
    new.signal(libc::SIGTERM);
    assert!(new.wait_exit(EXIT_TIMEOUT).is_some_and(|s| s.success()));
    if let Some(file) = file {
        assert!(!file.exists(), "the last process removes the socket file");
    }
}

/// `--admin 127.0.0.1:PORT` across an upgrade with the same flags.
#[test]
fn test_upgrade_hands_over_the_tcp_admin_listener() {
    let admin = format!("127.0.0.1:{}", unused_port());
    let url = format!("http://{admin}/connections");
    upgrade_with_admin("admin-tcp", &admin, &[], &url, None);
}

/// `--admin unix:/path` across an upgrade with the same flags.
#[test]
fn test_upgrade_hands_over_the_unix_admin_listener() {
    let socket = socket_path("admin-unix-listener");
    let at = socket.to_str().expect("utf-8 path");
    let spec = format!("unix:{at}");
    let curl = ["--unix-socket", at];
    let url = "http://admin/connections";
    upgrade_with_admin("admin-unix", &spec, &curl, url, Some(&socket));
}
