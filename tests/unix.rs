//! Unix domain stream listeners (docs/unix-sockets.md): byte-exact forwarding from a Unix client to a
//! TCP upstream (path and abstract listeners, TCP and Unix on one route), half-close both ways, the
//! socket file's mode and its removal at exit, a stale file replaced, a live socket refused, the PROXY
//! header a Unix client gets, `queue_timeout` for a queued Unix client, and a real client (curl
//! --unix-socket). CI runs this file in every `--splice` mode (`EDGEFWD_TEST_SPLICE`), which puts
//! splice(2) between a Unix stream and TCP.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// A fresh directory for socket files, removed (with whatever is left in it) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "edgefwd-unix-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn sock(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// An abstract name no other test process uses.
fn abstract_name(tag: &str) -> String {
    format!("edgefwd-test-{tag}-{}", std::process::id())
}

/// A forwarder whose one route listens on 127.0.0.1:0 (whose start line `Forwarder::start` waits for)
/// and on `unix`, with `extra` TOML lines.
fn start_route(unix: &str, upstream: &str, extra: &str) -> (Forwarder, ConfigFile) {
    let config = ConfigFile::new(&format!(
        "[[route]]\nname = \"u\"\nlisten = [\"127.0.0.1:0\", \"{unix}\"]\nupstreams = [\"{upstream}\"]\n{extra}\n"
    ));
    let fwd = Forwarder::start(&["--config", config.path()]);
    fwd.expect_log(&format!("listening on {unix} route=u"), WAIT);
    (fwd, config)
}

/// A connected client with bounded reads and writes.
fn unix_client(connect: impl FnOnce() -> std::io::Result<UnixStream>) -> UnixStream {
    let stream = connect().expect("connect to the Unix listener");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream.set_write_timeout(Some(WAIT)).expect("timeout");
    stream
}

#[cfg(target_os = "linux")]
fn connect_abstract(name: &str) -> std::io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    UnixStream::connect_addr(&addr)
}

/// Sends `total` pattern bytes through `stream` to an echo upstream, half-closes, and checks that the
/// same bytes come back in order, then the end of stream.
fn echo_exact(stream: UnixStream, total: usize) {
    let mut writer = stream.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        write_pattern(&mut writer, total as u64, 64 * 1024).expect("write");
        writer.shutdown(Shutdown::Write).expect("shutdown(Write)");
    });
    let mut reader = stream;
    let mut back = Vec::with_capacity(total);
    reader.read_to_end(&mut back).expect("read until the end");
    sender.join().expect("sender");
    assert_eq!(back.len(), total, "bytes echoed");
    assert!(back == pattern_vec(total), "the echoed bytes differ");
}

#[test]
fn test_unix_path_client_to_tcp_upstream_is_byte_exact() {
    let dir = TempDir::new();
    let path = dir.sock("in.sock");
    let echo = Backend::echo();
    let unix = format!("unix:{}", path.display());
    let (fwd, _config) = start_route(&unix, &echo.addr().to_string(), "");
    echo_exact(unix_client(|| UnixStream::connect(&path)), 8 << 20);
    // Several at once, and a TCP client of the same route besides.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            thread::spawn(move || echo_exact(unix_client(|| UnixStream::connect(&path)), 1 << 20))
        })
        .collect();
    echo_roundtrip(fwd.addr(), 1 << 20, 16 * 1024);
    for client in clients {
        client.join().expect("client");
    }
    fwd.wait_for_n_closes(6, WAIT);
}

/// `queue_timeout` covers a route's Unix listeners too: a Unix client queued behind `max_connections`
/// is accepted and closed while the pair holding the route is still served.
#[test]
fn test_queue_timeout_closes_a_queued_unix_client() {
    let dir = TempDir::new();
    let path = dir.sock("in.sock");
    let echo = Backend::echo();
    let unix = format!("unix:{}", path.display());
    let extra = "max_connections = 1\nqueue_timeout = \"1s\"";
    let (fwd, _config) = start_route(&unix, &echo.addr().to_string(), extra);
    let mut held = std::net::TcpStream::connect(fwd.addr()).expect("connect");
    set_timeouts(&held, WAIT);
    let ping = |held: &mut std::net::TcpStream| {
        held.write_all(b"hello").expect("write");
        let mut back = [0u8; 5];
        held.read_exact(&mut back).expect("read the echo");
        assert_eq!(&back, b"hello");
    };
    ping(&mut held);
    let mut queued = unix_client(|| UnixStream::connect(&path));
    queued.write_all(b"waiting").expect("write");
    // Closed with its bytes unread, the Unix socket resets its peer; the wait's timeout is a failure.
    let mut back = Vec::new();
    match queued.read_to_end(&mut back) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the queued Unix client is not closed within {WAIT:?}: {e}"),
    }
    assert!(back.is_empty(), "a queued client gets no bytes");
    ping(&mut held);
    assert_eq!(echo.accepted(), 1);
}

#[cfg(target_os = "linux")]
#[test]
fn test_abstract_client_to_tcp_upstream_is_byte_exact() {
    let name = abstract_name("abs");
    let echo = Backend::echo();
    let (_fwd, _config) = start_route(&format!("unix:@{name}"), &echo.addr().to_string(), "");
    echo_exact(unix_client(|| connect_abstract(&name)), 4 << 20);
}

#[test]
fn test_half_close_passes_both_ways() {
    let dir = TempDir::new();
    let path = dir.sock("half.sock");
    let up = Upstream::bind();
    let unix = format!("unix:{}", path.display());
    let (_fwd, _config) = start_route(&unix, &up.addr().to_string(), "");

    // The client finishes first: the upstream sees its FIN and can still answer.
    let mut client = unix_client(|| UnixStream::connect(&path));
    let mut upstream = up.try_accept(WAIT).expect("upstream connection");
    client.write_all(b"request").expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown(Write)");
    let mut got = Vec::new();
    upstream
        .read_to_end(&mut got)
        .expect("upstream reads to the FIN");
    assert_eq!(got, b"request");
    upstream
        .write_all(b"answer")
        .expect("upstream answers after the FIN");
    upstream.shutdown(Shutdown::Write).expect("upstream FIN");
    let mut answer = Vec::new();
    client
        .read_to_end(&mut answer)
        .expect("client reads to the FIN");
    assert_eq!(answer, b"answer");

    // The upstream finishes first: the client sees the end of stream and can still send.
    let mut client = unix_client(|| UnixStream::connect(&path));
    let mut upstream = up.try_accept(WAIT).expect("upstream connection");
    upstream.write_all(b"banner").expect("write");
    upstream.shutdown(Shutdown::Write).expect("upstream FIN");
    let mut banner = Vec::new();
    client
        .read_to_end(&mut banner)
        .expect("client reads to the FIN");
    assert_eq!(banner, b"banner");
    client
        .write_all(b"late")
        .expect("client writes after the FIN");
    client.shutdown(Shutdown::Write).expect("client FIN");
    let mut late = Vec::new();
    upstream
        .read_to_end(&mut late)
        .expect("upstream reads to the FIN");
    assert_eq!(late, b"late");
}

/// `edgefwd --listen unix:PATH ...` started by hand: `Forwarder::start` waits for a TCP start line.
struct UnixOnly {
    child: Child,
}

impl UnixOnly {
    fn start(path: &Path, extra: &[&str]) -> UnixOnly {
        let mut cmd = edgefwd_command(&[]);
        cmd.arg("--listen").arg(format!("unix:{}", path.display()));
        if let Some(mode) = splice_under_test() {
            cmd.args(["--splice", &mode]);
        }
        let child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn edgefwd");
        let started = UnixOnly { child };
        assert!(
            wait_until(WAIT, || UnixStream::connect(path).is_ok()),
            "nothing listens on {} within {WAIT:?}",
            path.display()
        );
        started
    }

    /// SIGTERM, then the exit within the bound.
    fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut status = None;
        assert!(
            wait_until(WAIT, || {
                status = self.child.try_wait().expect("try_wait");
                status.is_some()
            }),
            "edgefwd did not exit within {WAIT:?} of SIGTERM"
        );
        status.expect("exited")
    }
}

impl Drop for UnixOnly {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn test_flags_file_mode_and_removal_at_exit() {
    let dir = TempDir::new();
    let path = dir.sock("flags.sock");
    let echo = Backend::echo();
    let upstream = echo.addr().to_string();
    let fwd = UnixOnly::start(&path, &["--upstream", &upstream, "--unix-mode", "600"]);
    let meta = fs::symlink_metadata(&path).expect("socket file");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the file's mode");
    echo_exact(unix_client(|| UnixStream::connect(&path)), 1 << 20);
    assert!(fwd.stop().success(), "a clean exit");
    assert!(!path.exists(), "the socket file is removed at a clean exit");

    // The default mode.
    let fwd = UnixOnly::start(&path, &["--upstream", &upstream]);
    let mode = fs::symlink_metadata(&path)
        .expect("file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "the default mode");
    drop(fwd);
}

#[test]
fn test_stale_file_is_replaced() {
    let dir = TempDir::new();
    let path = dir.sock("stale.sock");
    // A socket whose process went without removing it: connect(2) says ECONNREFUSED.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(UnixStream::connect(&path).is_err());
    let echo = Backend::echo();
    let _fwd = UnixOnly::start(&path, &["--upstream", &echo.addr().to_string()]);
    echo_exact(unix_client(|| UnixStream::connect(&path)), 64 * 1024);
}

#[test]
fn test_live_socket_is_not_stolen() {
    let dir = TempDir::new();
    let path = dir.sock("live.sock");
    let owner = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let listen = format!("unix:{}", path.display());
    let (code, stderr) =
        run_edgefwd_expect_fail(&["--listen", &listen, "--upstream", "127.0.0.1:9"]);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(
        stderr.contains(&format!("another process listens on {}", path.display())),
        "{stderr}"
    );
    // The owner's socket is untouched and still takes clients.
    let _client = UnixStream::connect(&path).expect("the live socket still accepts");
    owner.accept().expect("accept");

    // A file that is not a socket is not removed either.
    let plain = dir.sock("plain");
    fs::write(&plain, b"data").expect("write");
    let listen = format!("unix:{}", plain.display());
    let (code, stderr) =
        run_edgefwd_expect_fail(&["--listen", &listen, "--upstream", "127.0.0.1:9"]);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(fs::read(&plain).expect("still there"), b"data");
}

#[test]
fn test_bad_unix_address_is_a_usage_error() {
    let (code, stderr) =
        run_edgefwd_expect_fail(&["--listen", "unix:", "--upstream", "127.0.0.1:9"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("invalid Unix address 'unix:'"), "{stderr}");
    let (code, stderr) = run_edgefwd_expect_fail(&[
        "--listen",
        "unix:/tmp/x.sock",
        "--unix-mode",
        "999",
        "--upstream",
        "127.0.0.1:9",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("invalid unix mode '999'"), "{stderr}");
}

#[test]
fn test_send_proxy_names_a_unix_client_unknown() {
    let dir = TempDir::new();
    let path = dir.sock("proxy.sock");
    let up = Upstream::bind();
    let unix = format!("unix:{}", path.display());
    for (version, header) in [
        ("v1", b"PROXY UNKNOWN\r\n".to_vec()),
        (
            "v2",
            [&b"\r\n\r\n\0\r\nQUIT\n"[..], &[0x21, 0x00, 0x00, 0x00][..]].concat(),
        ),
    ] {
        let (_fwd, _config) = start_route(
            &unix,
            &up.addr().to_string(),
            &format!("send_proxy = \"{version}\""),
        );
        let mut client = unix_client(|| UnixStream::connect(&path));
        client.write_all(b"payload").expect("write");
        client.shutdown(Shutdown::Write).expect("FIN");
        let mut upstream = up.try_accept(WAIT).expect("upstream connection");
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).expect("read");
        assert_eq!(got, [&header[..], b"payload"].concat(), "{version}");
    }
}

/// A real client: curl over the Unix socket, through edgefwd, to a local HTTP server.
#[test]
fn test_curl_over_the_unix_socket() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed (.ci/run installs it)");
        return;
    }
    let dir = TempDir::new();
    let path = dir.sock("http.sock");
    let body = "hello over a unix socket\n";
    let http = Backend::spawn("127.0.0.1:0".parse().expect("addr"), move |mut stream| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    let (_fwd, _config) = start_route(
        &format!("unix:{}", path.display()),
        &http.addr().to_string(),
        "",
    );
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--unix-socket"])
        .arg(&path)
        .arg("http://localhost/")
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), body);
}

/// A reload that replaces the route keeps its Unix listener (a client connected before it still gets
/// its bytes, new ones are accepted, the file is not removed and bound again); a reload that drops the
/// route closes the listener and removes the file.
#[test]
fn test_reload_keeps_then_drops_the_unix_listener() {
    let dir = TempDir::new();
    let path = dir.sock("reload.sock");
    let echo = Backend::echo();
    let unix = format!("unix:{}", path.display());
    let route = |extra: &str| {
        format!(
            "[[route]]\nname = \"u\"\nlisten = [\"127.0.0.1:0\", \"{unix}\"]\nupstreams = [\"{}\"]\n{extra}\n",
            echo.addr()
        )
    };
    let (fwd, config) = start_route(&unix, &echo.addr().to_string(), "");
    let before = unix_client(|| UnixStream::connect(&path));
    let identity = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::symlink_metadata(path).expect("socket file");
        (meta.ino(), meta.ctime_nsec())
    };
    let first = identity(&path);
    let reload = |text: &str, expect: &str| {
        let seen = fwd.count_log(expect);
        config.write(text);
        fwd.signal(libc::SIGHUP);
        assert!(
            wait_until(WAIT, || fwd.count_log(expect) > seen),
            "no {expect:?} after SIGHUP; log:\n{}",
            fwd.logs()
        );
    };
    reload(
        &route("buffer_size = \"32k\""),
        "reload: 1 routes (+0 -0 ~1)",
    );
    assert_eq!(identity(&path), first, "the same socket file");
    echo_exact(before, 256 * 1024);
    echo_exact(unix_client(|| UnixStream::connect(&path)), 256 * 1024);

    let other = format!(
        "[[route]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{}\"]\n",
        echo.addr()
    );
    reload(&other, "reload: 1 routes (+1 -1 ~0)");
    assert!(
        wait_until(WAIT, || !path.exists()),
        "the dropped route's socket file is removed"
    );
}

/// SIGTERM while a Unix client's transfer is under way: the listener closes at once (its file goes,
/// new clients are refused), the pair finishes byte-exact, then the process exits cleanly.
#[test]
fn test_graceful_shutdown_finishes_a_unix_pair() {
    let dir = TempDir::new();
    let path = dir.sock("drain.sock");
    let echo = Backend::echo();
    let fwd = UnixOnly::start(&path, &["--upstream", &echo.addr().to_string()]);
    let total = 2 << 20;
    let mut client = unix_client(|| UnixStream::connect(&path));
    let half = pattern_vec(total);
    client.write_all(&half[..total / 2]).expect("first half");
    let mut back = vec![0u8; total / 2];
    client.read_exact(&mut back).expect("first half echoed");
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    unsafe { libc::kill(fwd.child.id() as i32, libc::SIGTERM) };
    assert!(
        wait_until(WAIT, || !path.exists()),
        "the socket file goes when the drain begins"
    );
    assert!(
        UnixStream::connect(&path).is_err(),
        "new clients are refused"
    );
    client.write_all(&half[total / 2..]).expect("second half");
    client.shutdown(Shutdown::Write).expect("FIN");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("read to the end");
    back.extend_from_slice(&rest);
    assert!(
        back == half,
        "the transfer finished byte-exact across the drain"
    );
    assert!(fwd.stop().success(), "a clean exit once the pair is done");
}

/// Writes `chunk` over and over to a non-blocking `client` until the writes have been refused
/// (WouldBlock) for 500 ms: the whole path is full. Returns how many bytes it took, which must be
/// some but bounded.
fn write_until_refused(client: &mut impl Write, chunk: &[u8]) -> usize {
    let mut written = 0usize;
    let mut quiet_since = std::time::Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(500) {
        match client.write(&chunk[written % chunk.len()..]) {
            Ok(n) => {
                written += n;
                quiet_since = std::time::Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("write: {e}"),
        }
        assert!(
            written < 256 << 20,
            "no backpressure: {written} bytes taken"
        );
    }
    assert!(written > 0);
    written
}

/// `upstream` reads to the end exactly the `written` bytes of `chunk` repeated, in order.
fn assert_all_arrive(upstream: &mut impl Read, chunk: &[u8], written: usize) {
    let mut got = Vec::new();
    upstream
        .read_to_end(&mut got)
        .expect("upstream reads it all");
    assert_eq!(got.len(), written, "every byte written arrives");
    let expected: Vec<u8> = chunk.iter().copied().cycle().take(written).collect();
    assert!(got == expected, "the bytes arrive in order");
}

/// Backpressure from a TCP upstream that does not read reaches the Unix client: its writes stop
/// (WouldBlock) after a bounded amount, and everything written arrives once the upstream reads.
#[test]
fn test_backpressure_reaches_the_unix_client() {
    let dir = TempDir::new();
    let path = dir.sock("slow.sock");
    let up = Upstream::bind();
    let unix = format!("unix:{}", path.display());
    let (_fwd, _config) = start_route(&unix, &up.addr().to_string(), "");
    let mut client = unix_client(|| UnixStream::connect(&path));
    let mut upstream = up.try_accept(WAIT).expect("upstream connection");
    client.set_nonblocking(true).expect("nonblocking");
    let chunk = pattern_vec(64 * 1024);
    let written = write_until_refused(&mut client, &chunk);
    client.set_nonblocking(false).expect("blocking");
    client.shutdown(Shutdown::Write).expect("FIN");
    assert_all_arrive(&mut upstream, &chunk, written);
}

// ---------------------------------------------------------------------------------------------
// Unix upstreams: `upstreams = ["unix:/PATH"]`, `["unix:@NAME"]`
// ---------------------------------------------------------------------------------------------

/// Binds a Unix stream listener on `addr` (`unix:/PATH` or, on Linux, `unix:@NAME`).
fn bind_unix(addr: &str) -> std::os::unix::net::UnixListener {
    match addr.strip_prefix("unix:@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let at = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .expect("abstract name");
            std::os::unix::net::UnixListener::bind_addr(&at).expect("bind abstract")
        }
        _ => {
            let path = addr.strip_prefix("unix:").expect("unix: address");
            std::os::unix::net::UnixListener::bind(path).expect("bind path")
        }
    }
}

/// The next connection on `listener` within [`WAIT`], with bounded reads and writes.
fn accept_unix(listener: &std::os::unix::net::UnixListener) -> UnixStream {
    listener.set_nonblocking(true).expect("nonblocking");
    let mut accepted = None;
    let got = wait_until(WAIT, || match listener.accept() {
        Ok((stream, _)) => {
            accepted = Some(stream);
            true
        }
        Err(_) => false,
    });
    assert!(
        got,
        "no connection reached the Unix upstream within {WAIT:?}"
    );
    unix_client(|| {
        let stream = accepted.take().expect("accepted");
        stream.set_nonblocking(false)?;
        Ok(stream)
    })
}

/// A Unix stream echo upstream: every connection on its own thread, echoed until its end of stream,
/// then shut down for writing. Stopped and joined when dropped.
struct UnixEcho {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepted: std::sync::Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl UnixEcho {
    fn on(addr: &str) -> UnixEcho {
        let listener = bind_unix(addr);
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), accepted.clone());
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        thread::spawn(move || echo_unix(stream));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        UnixEcho {
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for UnixEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn echo_unix(mut stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(WAIT));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if stream.write_all(&buf[..n]).is_ok() => {}
            _ => return,
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// A forwarder whose one route `u` listens on 127.0.0.1:0 (and `unix`, if given) and forwards to
/// `upstreams` (TOML strings), with `extra` TOML lines.
fn start_upstreams(unix: Option<&str>, upstreams: &[&str], extra: &str) -> (Forwarder, ConfigFile) {
    let listen = match unix {
        Some(unix) => format!("[\"127.0.0.1:0\", \"{unix}\"]"),
        None => "\"127.0.0.1:0\"".to_string(),
    };
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    let config = ConfigFile::new(&format!(
        "[[route]]\nname = \"u\"\nlisten = {listen}\nupstreams = [{}]\n{extra}\n",
        list.join(", ")
    ));
    let fwd = Forwarder::start(&["--config", config.path()]);
    fwd.expect_log("listening on 127.0.0.1:", WAIT);
    (fwd, config)
}

/// [`start_upstreams`] to one Unix upstream, `name` in `dir`, that the test accepts from itself.
fn start_to_unix_listener(
    dir: &TempDir,
    name: &str,
    extra: &str,
) -> (Forwarder, ConfigFile, std::os::unix::net::UnixListener) {
    let upstream = format!("unix:{}", dir.sock(name).display());
    let listener = bind_unix(&upstream);
    let (fwd, config) = start_upstreams(None, &[&upstream], extra);
    (fwd, config, listener)
}

/// TCP clients to a `unix:/PATH` upstream: byte-exact both ways, MiBs, several at once.
#[test]
fn test_tcp_client_to_unix_path_upstream_is_byte_exact() {
    let dir = TempDir::new();
    let upstream = format!("unix:{}", dir.sock("up.sock").display());
    let echo = UnixEcho::on(&upstream);
    let (fwd, _config) = start_upstreams(None, &[&upstream], "");
    fwd.expect_log(&format!("upstreams={upstream} "), WAIT);
    echo_roundtrip(fwd.addr(), 8 << 20, 64 * 1024);
    let addr = fwd.addr();
    let clients: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || echo_roundtrip(addr, 1 << 20, 16 * 1024)))
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    assert_eq!(echo.accepted(), 5);
    fwd.wait_for_n_closes(5, WAIT);
}

/// Unix clients to Unix upstreams, path to abstract and abstract to path: byte-exact both ways.
#[cfg(target_os = "linux")]
#[test]
fn test_unix_client_to_unix_upstream_path_and_abstract_are_byte_exact() {
    let dir = TempDir::new();
    // A path listener forwarding to an abstract upstream.
    let path = dir.sock("in.sock");
    let abstract_up = format!("unix:@{}", abstract_name("up"));
    let echo = UnixEcho::on(&abstract_up);
    let unix = format!("unix:{}", path.display());
    let (_fwd, _config) = start_upstreams(Some(&unix), &[&abstract_up], "");
    echo_exact(unix_client(|| UnixStream::connect(&path)), 4 << 20);
    assert_eq!(echo.accepted(), 1);

    // An abstract listener forwarding to a path upstream.
    let name = abstract_name("in");
    let path_up = format!("unix:{}", dir.sock("up.sock").display());
    let echo = UnixEcho::on(&path_up);
    let (_fwd, _config) = start_upstreams(Some(&format!("unix:@{name}")), &[&path_up], "");
    echo_exact(unix_client(|| connect_abstract(&name)), 4 << 20);
    assert_eq!(echo.accepted(), 1);
}

/// Half-close each way between a TCP client and a Unix upstream: a FIN passes as a shutdown(SHUT_WR)
/// and the other direction keeps flowing.
#[test]
fn test_half_close_passes_both_ways_to_a_unix_upstream() {
    let dir = TempDir::new();
    let (fwd, _config, listener) = start_to_unix_listener(&dir, "half.sock", "");

    // The client finishes first: the upstream sees the end of stream and can still answer.
    let mut client = connect(fwd.addr());
    let mut up = accept_unix(&listener);
    client.write_all(b"request").expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown(Write)");
    let mut got = Vec::new();
    up.read_to_end(&mut got).expect("upstream reads to the end");
    assert_eq!(got, b"request");
    up.write_all(b"answer")
        .expect("upstream answers after the FIN");
    up.shutdown(Shutdown::Write).expect("upstream shutdown");
    let (answer, end) = read_until_end(&mut client, WAIT);
    assert_eq!((answer.as_slice(), end), (&b"answer"[..], End::Eof));

    // The upstream finishes first: the client sees the FIN and can still send.
    let mut client = connect(fwd.addr());
    let mut up = accept_unix(&listener);
    up.write_all(b"banner").expect("write");
    up.shutdown(Shutdown::Write).expect("upstream shutdown");
    let mut banner = [0u8; 6];
    client.read_exact(&mut banner).expect("banner");
    assert_eq!(&banner, b"banner");
    let mut fin = [0u8; 1];
    assert_eq!(client.read(&mut fin).expect("the FIN"), 0);
    client
        .write_all(b"late")
        .expect("client writes after the FIN");
    client.shutdown(Shutdown::Write).expect("client FIN");
    let mut late = Vec::new();
    up.read_to_end(&mut late)
        .expect("upstream reads to the end");
    assert_eq!(late, b"late");
}

/// A missing socket file (ENOENT) and a stale one nobody listens on (ECONNREFUSED) are failed
/// connects: every client fails over to the live Unix upstream, the failures count against the dead
/// two, which are marked down after `fall` of them.
#[test]
fn test_failover_from_missing_and_refused_unix_paths_to_a_live_one() {
    let dir = TempDir::new();
    let missing = format!("unix:{}", dir.sock("missing.sock").display());
    let stale = dir.sock("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let stale = format!("unix:{}", stale.display());
    let live = format!("unix:{}", dir.sock("live.sock").display());
    let echo = UnixEcho::on(&live);
    let (fwd, _config) = start_upstreams(None, &[&missing, &stale, &live], "fall = 2");
    for _ in 0..6 {
        echo_roundtrip(fwd.addr(), 64 * 1024, 16 * 1024);
    }
    assert_eq!(echo.accepted(), 6, "every client reached the live upstream");
    // Failed at once by connect(2), never left pending until the connect timeout.
    fwd.expect_log(&format!("{missing} connect-error: failing over"), WAIT);
    fwd.expect_log(&format!("{stale} connect-refused: failing over"), WAIT);
    let logs = fwd.logs();
    assert!(!logs.contains("connect-timeout:"), "{logs}");
    fwd.expect_log(&format!("failing over to upstream={live}"), WAIT);
    for dead in [&missing, &stale] {
        fwd.expect_log(&format!("upstream {dead} of route u is down"), WAIT);
    }
    let closes = fwd.wait_for_n_closes(6, WAIT);
    let served =
        |c: &CloseRecord| c.line.contains(&format!("upstream={live} ")) && c.u2c == Some(64 * 1024);
    assert!(closes.iter().all(served), "{closes:?}");
}

/// `--send-proxy v2` to a Unix upstream: the header names the TCP client (its address and port) and
/// the address it connected to, as for a TCP upstream, parsed on the upstream's side; then the bytes.
#[test]
fn test_send_proxy_v2_to_a_unix_upstream_names_the_tcp_client() {
    let dir = TempDir::new();
    let (fwd, _config, listener) =
        start_to_unix_listener(&dir, "proxy.sock", "send_proxy = \"v2\"");
    let mut client = connect(fwd.addr());
    client.write_all(b"payload").expect("write");
    client.shutdown(Shutdown::Write).expect("FIN");
    let mut up = accept_unix(&listener);
    let mut head = [0u8; 16];
    up.read_exact(&mut head).expect("the v2 header");
    assert_eq!(&head[..12], b"\r\n\r\n\0\r\nQUIT\n", "the v2 signature");
    assert_eq!(head[12], 0x21, "version 2, PROXY command");
    assert_eq!(head[13], 0x11, "AF_INET, STREAM");
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    assert_eq!(len, 12, "two IPv4 addresses and ports, no TLV");
    let mut addrs = [0u8; 12];
    up.read_exact(&mut addrs).expect("the addresses");
    let at = |ip: &[u8], port: &[u8]| {
        let ip = std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
        std::net::SocketAddr::from((ip, u16::from_be_bytes([port[0], port[1]])))
    };
    let source = at(&addrs[0..4], &addrs[8..10]);
    let destination = at(&addrs[4..8], &addrs[10..12]);
    assert_eq!(source, client.local_addr().expect("client address"));
    assert_eq!(destination, fwd.addr());
    let mut rest = Vec::new();
    up.read_to_end(&mut rest).expect("the payload");
    assert_eq!(rest, b"payload");
}

/// `--prewarm` and health probes work on Unix upstreams: clients take warm Unix connections, probes
/// mark a missing socket down, and /metrics labels both endpoints by their `unix:` address.
#[test]
fn test_prewarm_probes_and_metrics_of_unix_upstreams() {
    let dir = TempDir::new();
    let live = format!("unix:{}", dir.sock("live.sock").display());
    let missing = format!("unix:{}", dir.sock("missing.sock").display());
    let echo = UnixEcho::on(&live);
    let config = ConfigFile::new(&format!(
        "[[route]]\nname = \"u\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{live}\", \"{missing}\"]\nhealth_interval = \"100ms\"\nfall = 1\n"
    ));
    let fwd = Forwarder::start(&[
        "--config",
        config.path(),
        "--prewarm",
        "2",
        "--metrics",
        "127.0.0.1:0",
    ]);
    fwd.expect_log(&format!("upstream {missing} of route u is down"), WAIT);
    assert!(
        wait_until(WAIT, || echo.accepted() >= 2),
        "the pool opened its warm Unix connections"
    );
    for _ in 0..3 {
        echo_roundtrip(fwd.addr(), 64 * 1024, 16 * 1024);
    }
    let body = scrape(fwd.metrics_addr());
    assert!(sample(&body, "edgefwd_warm_hits_total") >= 1, "{body}");
    let row = |name: &str, upstream: &str| format!("{name}{{route=\"u\",upstream=\"{upstream}\"}}");
    assert_eq!(sample(&body, &row("edgefwd_upstream_up", &live)), 1);
    assert_eq!(sample(&body, &row("edgefwd_upstream_up", &missing)), 0);
    assert!(
        sample(
            &body,
            &row("edgefwd_upstream_connect_failures_total", &missing)
        ) >= 1
    );
}

/// A real server behind a Unix upstream: Python's http.server on a Unix socket, fetched through
/// edgefwd's TCP port by curl.
#[test]
fn test_curl_through_edgefwd_to_python_http_server_on_a_unix_socket() {
    let has = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
    if !has("curl") || !has("python3") {
        eprintln!("skipped: curl or python3 is not installed (.ci/run installs both)");
        return;
    }
    let dir = TempDir::new();
    let sock = dir.sock("http.sock");
    let root = dir.sock("www");
    fs::create_dir_all(&root).expect("www");
    fs::write(root.join("hello.txt"), "served over a unix socket\n").expect("file");
    let server = "import http.server, socketserver, sys\n\
        class H(http.server.SimpleHTTPRequestHandler):\n\
        \x20   def address_string(self): return 'unix'\n\
        class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer): daemon_threads = True\n\
        S(sys.argv[1], lambda *a: H(*a, directory=sys.argv[2])).serve_forever()\n";
    let mut python = ChildGuard(
        Command::new("python3")
            .args(["-c", server])
            .arg(&sock)
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3"),
    );
    assert!(
        wait_until(WAIT, || UnixStream::connect(&sock).is_ok()),
        "python's server never listened"
    );
    let upstream = format!("unix:{}", sock.display());
    let (fwd, _config) = start_upstreams(None, &[&upstream], "");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://{}/hello.txt", fwd.addr()))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "served over a unix socket\n"
    );
    let _ = python.0.kill();
}

/// Kills and reaps its child when dropped, whatever the test's outcome.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A reload moves a route from one Unix upstream to another: new clients go to the new one.
#[test]
fn test_reload_moves_a_route_to_another_unix_upstream() {
    let dir = TempDir::new();
    let first = format!("unix:{}", dir.sock("a.sock").display());
    let second = format!("unix:{}", dir.sock("b.sock").display());
    let (echo_a, echo_b) = (UnixEcho::on(&first), UnixEcho::on(&second));
    let (fwd, config) = start_upstreams(None, &[&first], "");
    echo_roundtrip(fwd.addr(), 64 * 1024, 16 * 1024);
    let text =
        format!("[[route]]\nname = \"u\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{second}\"]\n");
    config.write(&text);
    fwd.signal(libc::SIGHUP);
    fwd.expect_log("reload: 1 routes", WAIT);
    let addr = fwd.route_addr("u");
    echo_roundtrip(addr, 64 * 1024, 16 * 1024);
    assert_eq!((echo_a.accepted(), echo_b.accepted()), (1, 1));
}

/// Bad Unix upstream addresses are usage errors naming the value.
#[test]
fn test_bad_unix_upstream_is_a_usage_error() {
    for (bad, says) in [
        ("unix:", "invalid upstream 'unix:'"),
        ("unix:@", "invalid upstream 'unix:@'"),
        (
            "unix:/a.sock,weight=0",
            "invalid upstream 'unix:/a.sock,weight=0'",
        ),
    ] {
        let (code, stderr) = run_edgefwd_expect_fail(&["--upstream", bad]);
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(stderr.contains(says), "{bad}: {stderr}");
    }
}

/// `--threads 2`: both reactors connect to a Unix upstream; 40 clients at once, every byte checked.
#[test]
fn test_two_reactors_forward_to_a_unix_upstream() {
    let dir = TempDir::new();
    let upstream = format!("unix:{}", dir.sock("up.sock").display());
    let echo = UnixEcho::on(&upstream);
    let fwd = two_reactors(&upstream, &[]);
    let (zero, one) = serve_forty(&fwd);
    assert_eq!(echo.accepted(), 40);
    assert!(zero > 0 && one > 0, "both reactors serve: {zero} and {one}");
}

/// Backpressure from a Unix upstream that does not read reaches the TCP client: its writes stop after
/// a bounded amount, and everything written arrives, in order, once the upstream reads.
#[test]
fn test_backpressure_from_a_unix_upstream_reaches_the_tcp_client() {
    let dir = TempDir::new();
    let (fwd, _config, listener) = start_to_unix_listener(&dir, "slow.sock", "");
    let mut client = connect(fwd.addr());
    let mut up = accept_unix(&listener);
    client.set_nonblocking(true).expect("nonblocking");
    let chunk = pattern_vec(64 * 1024);
    let written = write_until_refused(&mut client, &chunk);
    client.set_nonblocking(false).expect("blocking");
    client.shutdown(Shutdown::Write).expect("FIN");
    assert_all_arrive(&mut up, &chunk, written);
}

/// SIGTERM while a TCP client's transfer to a Unix upstream is under way: the pair finishes
/// byte-exact, then the process exits cleanly.
#[test]
fn test_graceful_shutdown_finishes_a_pair_to_a_unix_upstream() {
    let dir = TempDir::new();
    let upstream = format!("unix:{}", dir.sock("drain.sock").display());
    let echo = UnixEcho::on(&upstream);
    let (mut fwd, _config) = start_upstreams(None, &[&upstream], "");
    let total = 2 << 20;
    let mut client = connect(fwd.addr());
    let data = pattern_vec(total);
    client.write_all(&data[..total / 2]).expect("first half");
    let mut back = vec![0u8; total / 2];
    client.read_exact(&mut back).expect("first half echoed");
    fwd.signal(libc::SIGTERM);
    fwd.expect_log("SIGTERM", WAIT);
    client.write_all(&data[total / 2..]).expect("second half");
    client.shutdown(Shutdown::Write).expect("FIN");
    let (rest, end) = read_until_end(&mut client, WAIT);
    assert_eq!(end, End::Eof);
    back.extend_from_slice(&rest);
    assert!(
        back == data,
        "the transfer finished byte-exact across the drain"
    );
    let status = fwd.wait_exit(WAIT).expect("exits once the pair is done");
    assert!(status.success(), "{status:?}");
    assert_eq!(echo.accepted(), 1);
}

/// The balancers pick Unix endpoints as they pick TCP ones: round-robin by weight (1:3 over 8 clients
/// gives 2 and 6), and `source-hash` keeps one client address on one upstream.
#[test]
fn test_balancers_over_unix_upstreams_weights_and_source_hash() {
    let dir = TempDir::new();
    let light = format!("unix:{}", dir.sock("light.sock").display());
    let heavy = format!("unix:{}", dir.sock("heavy.sock").display());
    let heavy_weighted = format!("{heavy},weight=3");
    let (echo_light, echo_heavy) = (UnixEcho::on(&light), UnixEcho::on(&heavy));
    let (fwd, _config) = start_upstreams(None, &[&light, &heavy_weighted], "");
    for _ in 0..8 {
        echo_roundtrip(fwd.addr(), 4096, 4096);
    }
    assert_eq!((echo_light.accepted(), echo_heavy.accepted()), (2, 6));
    drop(fwd);

    let (fwd, _config) = start_upstreams(None, &[&light, &heavy], "balance = \"source-hash\"");
    for _ in 0..6 {
        echo_roundtrip(fwd.addr(), 4096, 4096);
    }
    let added = (echo_light.accepted() - 2, echo_heavy.accepted() - 6);
    assert!(
        added == (6, 0) || added == (0, 6),
        "one client, one upstream: {added:?}"
    );
}
