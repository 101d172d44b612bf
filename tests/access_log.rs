//! `--access-log` end to end: the line of a forwarded connection in both formats (exact byte counts, the
//! cause, the path the splice mode under test implies), a CONNECT through curl, a PROXY header's client,
//! an unreachable upstream, a client turned away by the ACL, standard output, SIGUSR1 after a rename
//! (logrotate), a writer stuck on a FIFO nobody reads (lines dropped and counted, forwarding unharmed),
//! and `--threads 2` writing whole lines to one file.

mod common;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use common::{
    connect, echo_roundtrip, expect_closed_without_data, parse_listen_addr, read_until_end,
    refused_addr, run_edgefwd_expect_fail, run_with_upstream_expect_fail, sample, scrape,
    splice_under_test, try_connect, wait_until, Backend, ConfigFile, Forwarder,
};

/// How long a line may take to reach the file: the writer writes out as soon as its queue is empty, so
/// this only bounds a loaded machine.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ten keys every line has, in order.
const KEYS: [&str; 10] = [
    "time",
    "route",
    "client",
    "upstream",
    "c2u_bytes",
    "u2c_bytes",
    "duration_ms",
    "connect_ms",
    "cause",
    "path",
];

/// A unique path under the temp dir, removed (with what a test renamed it to) on drop.
struct LogPath(PathBuf);

impl LogPath {
    fn new(tag: &str) -> LogPath {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "edgefwd-access-{tag}-{}-{}.log",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        LogPath(std::env::temp_dir().join(name))
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }

    fn rotated(&self) -> PathBuf {
        self.0.with_extension("log.1")
    }

    fn lines(&self) -> Vec<String> {
        lines_of(&self.0)
    }

    /// Waits until the file holds `n` lines (or more) and returns them.
    fn wait_lines(&self, n: usize) -> Vec<String> {
        let mut lines = Vec::new();
        let enough = wait_until(LINE_TIMEOUT, || {
            lines = self.lines();
            lines.len() >= n
        });
        assert!(enough, "expected {n} lines in {:?}, got {lines:?}", self.0);
        lines
    }

    /// Waits for line `i` (from 0) and returns its fields by key, the ten keys checked first.
    fn fields(&self, i: usize) -> HashMap<String, String> {
        by_key(logfmt(&self.wait_lines(i + 1)[i]))
    }
}

impl Drop for LogPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
        let _ = fs::remove_file(self.rotated());
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A logfmt line's fields, in order, quotes removed and escapes undone.
fn logfmt(line: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("key=value");
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted),
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_owned(), &after[end..])
            }
        };
        fields.push((key.to_owned(), value));
        rest = after.trim_start_matches(' ');
    }
    fields
}

/// A quoted value (after its opening quote): the value, and what follows the closing quote.
fn unquote(text: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return (value, &text[at + 1..]),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('n') => value.push('\n'),
                Some(other) => value.push(other),
                None => break,
            },
            c => value.push(c),
        }
    }
    panic!("unterminated quoted value in {text:?}");
}

/// A flat JSON object's members, in order: strings unquoted, numbers and `null` as written.
fn json(line: &str) -> Vec<(String, String)> {
    let body = line
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not one JSON object: {line:?}"));
    let mut fields = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = unquote(rest.strip_prefix('"').expect("a quoted key"));
        let after = after.strip_prefix(':').expect("':' after a key");
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted),
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].to_owned(), &after[end..])
            }
        };
        fields.push((key, value));
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    fields
}

/// Checks the ten keys come first, in order, and returns every field by key.
fn by_key(fields: Vec<(String, String)>) -> HashMap<String, String> {
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).take(10).collect();
    assert_eq!(keys, KEYS, "{fields:?}");
    fields.into_iter().collect()
}

/// `2026-12-07T01:10:34.123Z`: RFC 3339, UTC, milliseconds.
fn assert_rfc3339_millis(time: &str) {
    let bytes = time.as_bytes();
    let shape = time.len() == 24
        && time.ends_with('Z')
        && [4, 7].iter().all(|&i| bytes[i] == b'-')
        && bytes[10] == b'T'
        && [13, 16].iter().all(|&i| bytes[i] == b':')
        && bytes[19] == b'.'
        && time
            .char_indices()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit());
    assert!(shape, "not RFC 3339 UTC with milliseconds: {time}");
}

fn millis(fields: &HashMap<String, String>, key: &str) -> f64 {
    fields[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number: {fields:?}"))
}

/// The path a small transfer takes in the splice mode under test: a pipe from the first byte under
/// `always`, else the ring (`auto` switches only once a read fills the ring).
fn expected_path() -> &'static str {
    match splice_under_test().as_deref() {
        Some("always") => "splice",
        _ => "ring",
    }
}

/// A forwarder to `upstream` with `extra` flags, logging to a new [`LogPath`] named after `tag`.
fn start_logged(tag: &str, upstream: &str, extra: &[&str]) -> (LogPath, Forwarder) {
    let log = LogPath::new(tag);
    let mut args = vec!["--upstream", upstream];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--access-log", log.arg()]);
    let fwd = Forwarder::start(&args);
    (log, fwd)
}

/// Sends `bytes`, half-closes, and reads the answer until the forwarder closes.
fn send_and_read(stream: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
    stream.write_all(bytes).expect("write");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    read_until_end(stream, Duration::from_secs(10)).0
}

/// [`echo_roundtrip`], over a connection whose address is returned.
fn echo_roundtrip_from(addr: SocketAddr, total: u64) -> SocketAddr {
    let mut stream = connect(addr);
    let client = stream.local_addr().expect("client address");
    let data = vec![b'x'; usize::try_from(total).expect("fits")];
    let echoed = send_and_read(&mut stream, &data);
    assert_eq!(echoed.len(), data.len(), "echoed everything");
    client
}

/// One text line per forwarded connection, with the exact byte counts each way (an upstream that
/// answers 10,000 bytes with 2,500), the client and the upstream.
#[test]
fn test_text_line_for_a_forwarded_connection() {
    let backend = Backend::spawn("127.0.0.1:0".parse().expect("addr"), |mut stream| {
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        let _ = stream.write_all(&[b'y'; 2500]);
    });
    let (log, fwd) = start_logged("text", &backend.upstream_arg(), &[]);
    let mut stream = connect(fwd.addr());
    let client = stream.local_addr().expect("client address");
    let answer = send_and_read(&mut stream, &[b'x'; 10_000]);
    assert_eq!(answer.len(), 2500);
    let lines = log.wait_lines(1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fields = by_key(logfmt(&lines[0]));
    assert_rfc3339_millis(&fields["time"]);
    assert_eq!(fields["route"], "default");
    assert_eq!(fields["client"], client.to_string());
    assert_eq!(fields["upstream"], backend.addr().to_string());
    assert_eq!(fields["c2u_bytes"], "10000");
    assert_eq!(fields["u2c_bytes"], "2500");
    assert_eq!(fields["cause"], "client-fin");
    assert_eq!(fields["path"], expected_path());
    let (duration, connected) = (
        millis(&fields, "duration_ms"),
        millis(&fields, "connect_ms"),
    );
    assert!(
        connected <= duration && duration < 10_000.0,
        "connect {connected} ms, duration {duration} ms"
    );
    assert_eq!(fields.len(), 10, "no details for a plain pair: {fields:?}");
}

/// The same facts as one JSON object per line, numbers as numbers; two connections, two lines.
#[test]
fn test_json_lines() {
    let backend = Backend::echo();
    let (log, fwd) = start_logged("json", &backend.upstream_arg(), &["--log-format", "json"]);
    let first = echo_roundtrip_from(fwd.addr(), 1);
    log.wait_lines(1);
    let second = echo_roundtrip_from(fwd.addr(), 70_000);
    let lines = log.wait_lines(2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (a, b) = (by_key(json(&lines[0])), by_key(json(&lines[1])));
    assert_rfc3339_millis(&a["time"]);
    assert_eq!(a["client"], first.to_string());
    assert_eq!(
        (a["c2u_bytes"].as_str(), a["u2c_bytes"].as_str()),
        ("1", "1")
    );
    assert_eq!(b["client"], second.to_string());
    assert_eq!(
        (b["c2u_bytes"].as_str(), b["u2c_bytes"].as_str()),
        ("70000", "70000")
    );
    assert_eq!(b["upstream"], backend.addr().to_string());
    assert_eq!(b["cause"], "client-fin");
    assert!(millis(&b, "connect_ms") <= millis(&b, "duration_ms"));
    assert!(
        lines[0].contains("\"c2u_bytes\":1,"),
        "a number: {}",
        lines[0]
    );
    // jq, as a user reads the file: every line an object, the numbers numbers.
    let Ok(jq) = Command::new("jq")
        .args([
            "-r",
            r#""\(.client) \(.c2u_bytes + .u2c_bytes) \(.connect_ms | type)""#,
            log.arg(),
        ])
        .output()
    else {
        // .ci/run installs jq: in CI a missing client is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "jq is required in CI");
        eprintln!("SKIPPED the jq part of test_json_lines: jq is missing");
        return;
    };
    assert!(
        jq.status.success(),
        "{}",
        String::from_utf8_lossy(&jq.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&jq.stdout),
        format!("{first} 2 number\n{second} 140000 number\n")
    );
}

/// An upstream that refuses: `connect-refused`, the upstream tried, no connect time, no path.
#[test]
fn test_unreachable_upstream_is_connect_refused() {
    let refused = refused_addr();
    let (log, fwd) = start_logged("refused", &refused.to_string(), &[]);
    match try_connect(fwd.addr()) {
        Ok(mut stream) => {
            expect_closed_without_data(&mut stream, Duration::from_secs(10));
        }
        // The reset may come before connect() returns.
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset),
    }
    let fields = log.fields(0);
    assert_eq!(fields["cause"], "connect-refused");
    assert_eq!(fields["upstream"], refused.to_string());
    assert_eq!(fields["connect_ms"], "-");
    assert_eq!(fields["path"], "-");
    assert_eq!(
        (fields["c2u_bytes"].as_str(), fields["u2c_bytes"].as_str()),
        ("0", "0")
    );
}

/// `--accept-proxy`: the client is the header's source; the peer that sent it and the destination it
/// carried follow.
#[test]
fn test_accept_proxy_logs_the_real_client() {
    let backend = Backend::echo();
    let (log, fwd) = start_logged("proxy", &backend.upstream_arg(), &["--accept-proxy"]);
    let mut stream = connect(fwd.addr());
    let peer = stream.local_addr().expect("address");
    let echoed = send_and_read(
        &mut stream,
        b"PROXY TCP4 192.0.2.7 198.51.100.9 5555 443\r\nping",
    );
    assert_eq!(echoed, b"ping");
    let fields = log.fields(0);
    assert_eq!(fields["client"], "192.0.2.7:5555");
    assert_eq!(fields["proxy_peer"], peer.to_string());
    assert_eq!(fields["proxy_dst"], "198.51.100.9:443");
    // The header is not forwarded: only the 4 bytes after it went upstream.
    assert_eq!(fields["c2u_bytes"], "4");
    // A malformed header: closed before any upstream connect, and why.
    let mut bad = connect(fwd.addr());
    let peer = bad.local_addr().expect("address");
    bad.write_all(b"PROXY TCP4 not-an-address\r\n")
        .expect("write");
    expect_closed_without_data(&mut bad, Duration::from_secs(10));
    let fields = log.fields(1);
    assert_eq!(fields["client"], peer.to_string());
    assert_eq!(fields["cause"], "rejected");
    assert_eq!(fields["upstream"], "-");
    assert!(fields.contains_key("proxy_reject"), "{fields:?}");
}

/// SNI routing: the server name of the ClientHello that chose the route (a real curl hello for
/// `api.example.com`, from the reader's corpus) is the line's `sni`.
#[test]
fn test_sni_names_the_server_name() {
    const HELLO_API: &[u8] = include_bytes!("corpus/tls/curl-resolve.bin");
    let backend = Backend::echo();
    let log = LogPath::new("sni");
    let config = ConfigFile::new(&format!(
        "access_log = \"{}\"\n\n[[route]]\nname = \"api\"\nlisten = \"127.0.0.1:0\"\n\
         upstreams = [\"{}\"]\nsni = [\"api.example.com\"]\n",
        log.arg(),
        backend.addr()
    ));
    let fwd = Forwarder::start(&["--config", config.path()]);
    let mut stream = connect(fwd.route_addr("api"));
    let echoed = send_and_read(&mut stream, HELLO_API);
    assert_eq!(
        echoed, HELLO_API,
        "the hello reached the route's upstream unchanged"
    );
    let fields = log.fields(0);
    assert_eq!(fields["route"], "api");
    assert_eq!(fields["sni"], "api.example.com");
    assert_eq!(fields["c2u_bytes"], HELLO_API.len().to_string());
}

/// A client the route's ACL refuses gets a line: `rejected`, and the limit that said no.
#[test]
fn test_client_refused_by_acl() {
    let backend = Backend::echo();
    let (log, fwd) = start_logged(
        "acl",
        &backend.upstream_arg(),
        &["--client-deny", "127.0.0.0/8"],
    );
    // Bound before connecting: the reset may come before connect() returns.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&any.into()).expect("bind");
    let client = socket
        .local_addr()
        .expect("address")
        .as_socket()
        .expect("inet");
    match socket.connect_timeout(&fwd.addr().into(), Duration::from_secs(5)) {
        Ok(()) => {
            let mut stream = TcpStream::from(socket);
            expect_closed_without_data(&mut stream, Duration::from_secs(10));
        }
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset),
    }
    let fields = log.fields(0);
    assert_eq!(fields["client"], client.to_string());
    assert_eq!(fields["cause"], "rejected");
    assert_eq!(fields["limit"], "acl");
    assert_eq!(fields["upstream"], "-");
}

/// A client queued at `--max-connections` past `--queue-timeout` is reset, and logged as such.
#[test]
fn test_queue_timeout_line() {
    let backend = Backend::echo();
    let (log, fwd) = start_logged(
        "queue",
        &backend.upstream_arg(),
        &["--max-connections", "1", "--queue-timeout", "200ms"],
    );
    let mut held = connect(fwd.addr());
    held.write_all(b"held").expect("write");
    let mut echoed = [0u8; 4];
    held.read_exact(&mut echoed)
        .expect("the first client is served");
    let mut queued = connect(fwd.addr());
    let client = queued.local_addr().expect("address");
    expect_closed_without_data(&mut queued, Duration::from_secs(15));
    let fields = log.fields(0);
    assert_eq!(fields["client"], client.to_string());
    assert_eq!(fields["cause"], "rejected");
    assert_eq!(fields["limit"], "queue-timeout");
}

/// `curl -p -x` through a connect-mode route: the target curl asked for, the upstream reached, the
/// `200` line counted; then a destination the allow-list refuses: `rejected`, status 403.
#[test]
fn test_connect_through_curl() {
    let curl_present = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !curl_present {
        // .ci/run installs curl: in CI a missing client is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "curl is required in CI");
        eprintln!("SKIPPED test_connect_through_curl: curl is missing");
        return;
    }
    let server = Backend::spawn("127.0.0.1:0".parse().expect("addr"), |mut stream| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
            head.push(byte[0]);
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n");
    });
    let log = LogPath::new("connect");
    let port = server.addr().port();
    let allow = format!("127.0.0.1:{port}");
    let args = [
        "--mode",
        "connect",
        "--allow",
        &allow,
        "--access-log",
        log.arg(),
    ];
    let fwd = Forwarder::start(&args);
    let curl = |target: &str| {
        Command::new("curl")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .args(["-q", "-sS", "--max-time", "10", "-p", "-x"])
            .arg(format!("http://{}", fwd.addr()))
            .arg(target)
            .output()
            .expect("run curl")
    };
    let output = curl(&format!("http://127.0.0.1:{port}/"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"hello\n");
    let fields = log.fields(0);
    assert_eq!(fields["connect_target"], format!("127.0.0.1:{port}"));
    assert_eq!(fields["upstream"], server.addr().to_string());
    let established = "HTTP/1.1 200 Connection Established\r\n\r\n".len();
    let response = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n".len();
    assert_eq!(fields["u2c_bytes"], (established + response).to_string());
    assert_ne!(fields["connect_ms"], "-");
    let refused = curl(&format!("http://127.0.0.2:{port}/"));
    assert!(
        !refused.status.success(),
        "the allow-list refuses 127.0.0.2"
    );
    let lines = log.wait_lines(2);
    let fields = by_key(logfmt(&lines[1]));
    assert_eq!(fields["cause"], "rejected");
    assert_eq!(fields["status"], "403");
}

/// `--access-log -`: the lines go to standard output, the rest of the log to stderr.
#[test]
fn test_stdout() {
    let backend = Backend::echo();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgefwd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &backend.upstream_arg(),
        ])
        .args(["--access-log", "-", "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn edgefwd");
    let guard = KillOnDrop(&mut child);
    let (stdout, stderr) = (
        guard.0.stdout.take().expect("stdout"),
        guard.0.stderr.take().expect("stderr"),
    );
    let reader_of = |stream: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    };
    let (out, err) = (reader_of(Box::new(stdout)), reader_of(Box::new(stderr)));
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let line = err
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a start line on stderr");
        if let Some(addr) = parse_listen_addr(&line) {
            break addr;
        }
    };
    let client = echo_roundtrip_from(addr, 3);
    let line = out.recv_timeout(LINE_TIMEOUT).expect("a line on stdout");
    let fields = by_key(json(&line));
    assert_eq!(fields["client"], client.to_string());
    assert_eq!(fields["c2u_bytes"], "3");
}

/// Kills and reaps a child on drop, so a failed test leaves no process behind.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// logrotate's `create` mode: rename the file, SIGUSR1, and the next lines go to a new file at the
/// path while the renamed one keeps the earlier lines.
#[test]
fn test_sigusr1_reopens_after_a_rename() {
    let backend = Backend::echo();
    let (log, fwd) = start_logged("rotate", &backend.upstream_arg(), &[]);
    let before = echo_roundtrip_from(fwd.addr(), 1);
    log.wait_lines(1);
    fs::rename(&log.0, log.rotated()).expect("rename");
    // Written after the rename but before the signal: still the old file's.
    let renamed = echo_roundtrip_from(fwd.addr(), 2);
    assert!(wait_until(LINE_TIMEOUT, || lines_of(&log.rotated()).len() == 2));
    fwd.signal(libc::SIGUSR1);
    fwd.expect_log("SIGUSR1: reopening the access log", Duration::from_secs(10));
    let after = echo_roundtrip_from(fwd.addr(), 3);
    let new = log.wait_lines(1);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(by_key(logfmt(&new[0]))["client"], after.to_string());
    let old = lines_of(&log.rotated());
    let clients: Vec<String> = old
        .iter()
        .map(|l| by_key(logfmt(l))["client"].clone())
        .collect();
    assert_eq!(clients, [before.to_string(), renamed.to_string()]);
    assert!(fwd.logs().contains("listening on"), "still running");
}

/// A pair cut by the shutdown gets its line (`cause=shutdown`), written before the process exits.
#[test]
fn test_shutdown_cut_is_logged_before_exit() {
    let backend = Backend::echo();
    let (log, mut fwd) = start_logged(
        "shutdown",
        &backend.upstream_arg(),
        &["--shutdown-timeout", "100ms"],
    );
    let mut held = connect(fwd.addr());
    held.write_all(b"held").expect("write");
    let mut echoed = [0u8; 4];
    held.read_exact(&mut echoed).expect("echoed");
    fwd.signal(libc::SIGTERM);
    let status = fwd.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status}");
    let lines = log.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fields = by_key(logfmt(&lines[0]));
    assert_eq!(fields["cause"], "shutdown");
    assert_eq!(fields["c2u_bytes"], "4");
}

/// Without `--access-log`, SIGUSR1 is ignored: a logrotate script sending it kills nothing.
#[test]
fn test_sigusr1_without_an_access_log_is_ignored() {
    let backend = Backend::echo();
    let mut fwd = Forwarder::start(&["--upstream", &backend.upstream_arg()]);
    fwd.signal(libc::SIGUSR1);
    echo_roundtrip_from(fwd.addr(), 10);
    assert!(fwd.is_running());
}

/// A writer stuck on a FIFO nobody reads: lines past the queue are dropped and counted, and forwarding
/// goes on meanwhile. Then the FIFO is read: every line not counted as dropped arrives, whole. Set up
/// from a file with two routes: one whose ACL refuses every client (the cheapest line there is) and
/// one that forwards.
#[test]
fn test_full_queue_drops_and_counts() {
    let fifo = LogPath::new("fifo");
    let made = Command::new("mkfifo")
        .arg(fifo.arg())
        .status()
        .expect("mkfifo");
    assert!(made.success());
    // Opened for reading first, so that edgefwd's open for writing does not wait for a reader.
    let mut reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo.0)
        .expect("open the FIFO");
    let backend = Backend::echo();
    let config = ConfigFile::new(&format!(
        "access_log = \"{}\"\nmetrics = \"127.0.0.1:0\"\n\n\
         [[route]]\nname = \"deny\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{}\"]\n\
         client_deny = [\"127.0.0.0/8\"]\nbacklog = 4096\n\n\
         [[route]]\nname = \"fwd\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{}\"]\n",
        fifo.arg(),
        backend.addr(),
        backend.addr()
    ));
    let fwd = Forwarder::start_with(
        &["--config", config.path()],
        &common::Options {
            rust_log: Some(String::from("info")),
            ..common::Options::default()
        },
    );
    let (deny, forward) = (fwd.route_addr("deny"), fwd.route_addr("fwd"));
    let metrics = fwd.metrics_addr();
    // More clients than the queue (8192 lines) and the FIFO's 64 KiB hold.
    let total = 12_000;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..total / 4 {
                    // The reset says edgefwd accepted (and refused) it; it may come before connect()
                    // returns.
                    match try_connect(deny) {
                        Ok(mut stream) => {
                            let mut byte = [0u8; 1];
                            assert!(!matches!(stream.read(&mut byte), Ok(n) if n > 0));
                        }
                        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("client thread");
    }
    let refused = |body: &str| {
        sample(
            body,
            "edgefwd_client_rejects_total{route=\"deny\",limit=\"acl\"}",
        )
    };
    assert!(wait_until(Duration::from_secs(10), || refused(&scrape(
        metrics
    )) == total));
    let dropped = sample(&scrape(metrics), "edgefwd_access_log_dropped_total");
    assert!(dropped > 0, "the queue overflowed, so lines were dropped");
    assert!(dropped < total, "the queue and the FIFO held some");
    // The reactor never waited for the writer: forwarding still works (its line is dropped, or not).
    echo_roundtrip(forward, 100_000, 16 * 1024);
    assert!(wait_until(Duration::from_secs(10), || {
        sample(&scrape(metrics), "edgefwd_pairs_open") == 0
    }));
    let dropped = sample(&scrape(metrics), "edgefwd_access_log_dropped_total");
    // Everything not dropped arrives once the FIFO is read, one whole line each.
    let expected = usize::try_from(total + 1 - dropped).expect("fits");
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let read_all = wait_until(Duration::from_secs(20), || {
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) => panic!("read the FIFO: {err}"),
            }
        }
        text.iter().filter(|&&b| b == b'\n').count() >= expected
    });
    let text = String::from_utf8(text).expect("utf-8 lines");
    let lines: Vec<&str> = text.lines().collect();
    assert!(read_all, "expected {expected} lines, got {}", lines.len());
    assert_eq!(lines.len(), expected);
    for line in &lines {
        let fields = by_key(logfmt(line));
        let refused = fields["route"] == "deny" && fields["limit"] == "acl";
        assert!(refused || fields["route"] == "fwd", "{line}");
    }
}

/// `--threads 2`: both reactors write to the one file through the one writer; every line is whole.
#[test]
fn test_threads_share_one_file() {
    let backend = Backend::echo();
    let (log, fwd) = start_logged(
        "threads",
        &backend.upstream_arg(),
        &["--threads", "2", "--log-format", "json"],
    );
    let addr = fwd.addr();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                (0..50)
                    .map(|i| echo_roundtrip_from(addr, 100 + i).to_string())
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    let mut clients: Vec<String> = workers
        .into_iter()
        .flat_map(|worker| worker.join().expect("client thread"))
        .collect();
    let lines = log.wait_lines(200);
    assert_eq!(lines.len(), 200);
    let mut logged: Vec<String> = lines
        .iter()
        .map(|line| {
            let fields = by_key(json(line));
            assert_eq!(fields["c2u_bytes"], fields["u2c_bytes"]);
            fields["client"].clone()
        })
        .collect();
    clients.sort();
    logged.sort();
    assert_eq!(logged, clients, "one line per connection");
}

/// `--user`: the file is opened before root is dropped, so a directory only root may enter works; the
/// writer thread runs as the user too. A reopen there fails (the user may not create the file): the
/// writer warns and keeps writing to the file it has.
#[test]
fn test_opened_before_the_privilege_drop() {
    // SAFETY: geteuid(2) takes no argument and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("SKIPPED test_opened_before_the_privilege_drop: needs root");
        return;
    }
    let dir = LogPath::new("rootdir");
    fs::create_dir(&dir.0).expect("mkdir");
    let cleanup = RemoveDir(dir.0.clone());
    fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod 0700");
    let path = dir.0.join("access.log");
    let backend = Backend::echo();
    let args = [
        "--upstream",
        &backend.upstream_arg(),
        "--user",
        "nobody",
        "--group",
        "nogroup",
        "--access-log",
        path.to_str().expect("utf-8"),
    ];
    let fwd = Forwarder::start(&args);
    fwd.expect_log("running as user nobody", Duration::from_secs(5));
    let first = echo_roundtrip_from(fwd.addr(), 5);
    assert!(wait_until(LINE_TIMEOUT, || lines_of(&path).len() == 1));
    let writer_uid = fs::read_dir(format!("/proc/{}/task", fwd.pid()))
        .expect("tasks")
        .filter_map(|task| {
            let task = task.ok()?.path();
            let comm = fs::read_to_string(task.join("comm")).ok()?;
            (comm.trim() == "access-log").then(|| fs::read_to_string(task.join("status")).ok())?
        })
        .find_map(|status| {
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            uids.split_whitespace().next().map(str::to_owned)
        })
        .expect("an access-log thread");
    let nobody = Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .expect("id");
    assert_eq!(writer_uid, String::from_utf8_lossy(&nobody.stdout).trim());
    let rotated = dir.0.join("access.log.1");
    fs::rename(&path, &rotated).expect("rename");
    fwd.signal(libc::SIGUSR1);
    fwd.expect_log("access log: cannot reopen", Duration::from_secs(10));
    let second = echo_roundtrip_from(fwd.addr(), 6);
    assert!(wait_until(LINE_TIMEOUT, || lines_of(&rotated).len() == 2));
    let clients: Vec<String> = lines_of(&rotated)
        .iter()
        .map(|line| by_key(logfmt(line))["client"].clone())
        .collect();
    assert_eq!(clients, [first.to_string(), second.to_string()]);
    drop(cleanup);
}

/// Removes a directory and what it holds on drop.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A bad `--log-format` is a usage error naming the value; a log file that cannot be opened stops the
/// start; `--check` finds a missing directory.
#[test]
fn test_bad_settings() {
    let (code, stderr) = run_with_upstream_expect_fail(&["--log-format", "xml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("'xml'"), "{stderr}");
    let (code, stderr) =
        run_with_upstream_expect_fail(&["--access-log", "/nonexistent-dir/access.log"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open access log /nonexistent-dir/access.log"),
        "{stderr}"
    );
    let (code, stderr) = run_edgefwd_expect_fail(&[
        "--check",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
        "--access-log",
        "/nonexistent-dir/access.log",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "access log /nonexistent-dir/access.log: directory /nonexistent-dir does not exist"
        ),
        "{stderr}"
    );
}
