//! SNI routing end to end (docs/tls-sni.md): several routes on one listen address, told apart by the
//! server name of the client's TLS ClientHello, which edgefwd reads without consuming.
//!
//! Two kinds of upstream: echo backends, which send back exactly what reached them (so a test sees the
//! hello arrive unchanged, and whether anything arrived at all), and `openssl s_server` with a
//! self-signed certificate made here, which real clients (`openssl s_client`, `curl`) finish a
//! handshake with: the certificate's subject, or the file the server serves, says which one they
//! reached. Tests that need openssl or curl say SKIPPED when it is missing (`.ci/run` installs them).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    connect, expect_closed_without_data, have, sample, scrape, wait_until, Backend, ConfigFile,
    Forwarder,
};

/// A real ClientHello (curl, `--resolve api.example.com:...`), from the reader's corpus.
const HELLO_API: &[u8] = include_bytes!("corpus/tls/curl-resolve.bin");
/// A real ClientHello for `www.example.com` (openssl s_client with ALPN).
const HELLO_WWW: &[u8] = include_bytes!("corpus/tls/openssl-sni-alpn.bin");
/// A real ClientHello without `server_name` (`openssl s_client -noservername`).
const HELLO_NONE: &[u8] = include_bytes!("corpus/tls/openssl-no-sni.bin");
/// The fatal `unrecognized_name` alert a client whose hello no route takes gets.
const ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

const IO: Duration = Duration::from_secs(10);

/// A port free on 127.0.0.1 right now: SNI routes share a fixed address (port 0 would give each
/// route its own).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// One `[[route]]` on `listen` to `upstream`, with `extra` TOML lines.
fn route(name: &str, listen: SocketAddr, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nlisten = \"{listen}\"\nupstreams = [\"{upstream}\"]\n{extra}\n"
    )
}

/// `routes` (name, upstream, extra TOML lines), each a [`route`] on `listen`.
fn routes_on(listen: SocketAddr, routes: &[(&str, SocketAddr, &str)]) -> String {
    routes
        .iter()
        .map(|&(name, upstream, extra)| route(name, listen, upstream, extra))
        .collect()
}

/// Starts edgefwd (with `--metrics` and `args`) on a file of `routes` (name, upstream, extra TOML
/// lines), all listening on one port free now, which is returned.
fn start(
    routes: &[(&str, SocketAddr, &str)],
    args: &[&str],
) -> (Forwarder, ConfigFile, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = ConfigFile::new(&routes_on(addr, routes));
    let mut all = vec!["--config", file.path(), "--metrics", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let fwd = Forwarder::start(&all);
    (fwd, file, addr)
}

/// [`start`] with two routes on one port: `api` for `api.example.com` to `api`, and `rest`, the
/// default, to `rest`.
fn start_api_and_rest(
    api: &Backend,
    rest: &Backend,
    args: &[&str],
) -> (Forwarder, ConfigFile, SocketAddr) {
    let routes = [
        ("api", api.addr(), "sni = [\"api.example.com\"]"),
        ("rest", rest.addr(), "default = true"),
    ];
    start(&routes, args)
}

/// Writes `bytes` one per write, with a short pause between (each its own segment: TCP_NODELAY).
fn write_byte_by_byte(stream: &mut TcpStream, bytes: &[u8]) {
    stream.set_nodelay(true).expect("nodelay");
    for byte in bytes {
        stream.write_all(&[*byte]).expect("write one byte");
        thread::sleep(Duration::from_micros(300));
    }
}

/// Reads exactly `len` bytes (bounded by [`IO`]).
fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    stream.set_read_timeout(Some(IO)).expect("timeout");
    let mut got = vec![0u8; len];
    stream.read_exact(&mut got).expect("read the echo");
    got
}

/// `edgefwd_sni_rejected_total{reason}`, waited for (bounded) to reach `expected`.
fn expect_rejected(metrics: SocketAddr, reason: &str, expected: u64) {
    let name = format!("edgefwd_sni_rejected_total{{reason=\"{reason}\"}}");
    let mut seen = 0;
    let reached = wait_until(Duration::from_secs(5), || {
        seen = sample(&scrape(metrics), &name);
        seen >= expected
    });
    assert!(
        reached && seen == expected,
        "{name}: {seen}, expected {expected}"
    );
}

/// `edgefwd_sni_routed_total{route,by}`.
fn routed(metrics: SocketAddr, route: &str, by: &str) -> u64 {
    let name = format!("edgefwd_sni_routed_total{{route=\"{route}\",by=\"{by}\"}}");
    let body = scrape(metrics);
    if body.contains(&name) {
        sample(&body, &name)
    } else {
        0
    }
}

/// Two routes on one port, `api` for `api.example.com` and `rest` the default, each to its own echo
/// backend: a hello written a byte at a time reaches `api` unchanged, as does one with no name the
/// default; `--threads 2` so both reactors take clients of the shared socket.
#[test]
fn test_hello_split_byte_by_byte_reaches_its_route_unchanged() {
    let (api, rest) = (Backend::echo(), Backend::echo());
    let (fwd, _file, addr) = start_api_and_rest(&api, &rest, &["--threads", "2"]);
    let metrics = fwd.metrics_addr();
    fwd.expect_log(&format!("listening on {addr} route=api "), IO);
    fwd.expect_log(&format!("sharing {addr} route=rest "), IO);
    for round in 0..4 {
        let mut client = connect(addr);
        write_byte_by_byte(&mut client, HELLO_API);
        assert_eq!(
            read_exactly(&mut client, HELLO_API.len()),
            HELLO_API,
            "round {round}"
        );
    }
    assert_eq!((api.accepted(), rest.accepted()), (4, 0));
    let mut client = connect(addr);
    client.write_all(HELLO_NONE).expect("hello");
    assert_eq!(read_exactly(&mut client, HELLO_NONE.len()), HELLO_NONE);
    assert_eq!((api.accepted(), rest.accepted()), (4, 1));
    assert_eq!(routed(metrics, "api", "name"), 4);
    assert_eq!(routed(metrics, "rest", "default"), 1);
    // The socket's route counts the accepts; each route the pairs its hellos chose.
    let body = scrape(metrics);
    let series = |name: &str, route: &str| sample(&body, &format!("{name}{{route=\"{route}\"}}"));
    assert_eq!(series("edgefwd_route_accepts_total", "api"), 5);
    assert_eq!(series("edgefwd_route_pairs_total", "api"), 4);
    assert_eq!(series("edgefwd_route_pairs_total", "rest"), 1);
}

/// A bad SNI setting exits 2 with one line naming the key the operator wrote: `sni = []` (which
/// would silently make a plain route), `alpn` without `sni`.
#[test]
fn test_bad_sni_settings_name_their_key() {
    let echo = Backend::echo();
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    for (extra, expected) in [
        ("sni = []", ":5: route[0].sni: sni = [] lists no name"),
        ("alpn = [\"h2\"]", ":5: route[0].alpn: alpn needs sni"),
    ] {
        let file = ConfigFile::new(&route("api", listen, echo.addr(), extra));
        let (code, stderr) = common::run_edgefwd_expect_fail(&["--config", file.path()]);
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line:\n{stderr}");
        assert!(stderr.contains(expected), "{extra}: {stderr}");
    }
}

/// The admin API's connection object names the server name a pair was routed by, and `null` for a
/// pair whose hello carried none (routed to the default).
#[test]
fn test_admin_connection_shows_the_routing_name() {
    let (api, rest) = (Backend::echo(), Backend::echo());
    let (fwd, _file, addr) = start_api_and_rest(&api, &rest, &["--admin", "127.0.0.1:0"]);
    let admin = fwd.admin_addr();
    let mut named = connect(addr);
    named.write_all(HELLO_API).expect("hello");
    assert_eq!(read_exactly(&mut named, HELLO_API.len()), HELLO_API);
    let mut nameless = connect(addr);
    nameless.write_all(HELLO_NONE).expect("hello");
    assert_eq!(read_exactly(&mut nameless, HELLO_NONE.len()), HELLO_NONE);

    let (status, rest_of) = common::http_get(admin, "/connections");
    assert!(status.contains(" 200 "), "{status}");
    let (_, body) = rest_of.split_once("\r\n\r\n").expect("head/body separator");
    let list: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let sni_of = |client: &TcpStream| {
        let local = client.local_addr().expect("local").to_string();
        let pairs = list.as_array().expect("a list");
        let pair = pairs
            .iter()
            .find(|pair| pair["client"] == local.as_str())
            .unwrap_or_else(|| panic!("no pair for {local} in {body}"));
        (pair["route"].clone(), pair["sni"].clone())
    };
    assert_eq!(
        sni_of(&named),
        ("api".into(), "api.example.com".into()),
        "{body}"
    );
    assert_eq!(
        sni_of(&nameless),
        ("rest".into(), serde_json::Value::Null),
        "{body}"
    );
}

/// No route takes `www.example.com` and there is no default: the client reads the fatal
/// `unrecognized_name` alert, then the close; no upstream sees a connection.
#[test]
fn test_no_route_and_no_default_sends_the_alert() {
    let api = Backend::echo();
    let (fwd, _file, addr) = start(&[("api", api.addr(), "sni = [\"api.example.com\"]")], &[]);
    let mut client = connect(addr);
    client.write_all(HELLO_WWW).expect("hello");
    client.set_read_timeout(Some(IO)).expect("timeout");
    let mut answer = Vec::new();
    client
        .read_to_end(&mut answer)
        .expect("the alert, then EOF");
    assert_eq!(answer, ALERT);
    assert_eq!(api.accepted(), 0);
    expect_rejected(fwd.metrics_addr(), "no-route", 1);
}

/// Bytes that are not a ClientHello (an HTTP request, a TLS record of another type, a hello whose
/// length passes the 16 KiB bound), and a hello cut short by the client's FIN: closed promptly, no
/// upstream ever sees a connection; each counted by its reason.
#[test]
fn test_junk_truncated_and_oversized_are_closed_with_nothing_upstream() {
    let (api, rest) = (Backend::echo(), Backend::echo());
    let (fwd, _file, addr) = start_api_and_rest(&api, &rest, &[]);
    let metrics = fwd.metrics_addr();
    let oversized = [0x16, 0x03, 0x01, 0x40, 0x01];
    let cases: [(&[u8], &str); 3] = [
        (
            b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
            "not-handshake",
        ),
        (
            &[0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5],
            "not-handshake",
        ),
        (&oversized, "record-length"),
    ];
    for (bytes, _) in cases {
        let mut client = connect(addr);
        client.write_all(bytes).expect("junk");
        let started = Instant::now();
        expect_closed_without_data(&mut client, Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "closed promptly"
        );
    }
    expect_rejected(metrics, "not-handshake", 2);
    expect_rejected(metrics, "record-length", 1);
    let mut client = connect(addr);
    client
        .write_all(&HELLO_API[..HELLO_API.len() / 2])
        .expect("half");
    client.shutdown(Shutdown::Write).expect("FIN");
    expect_closed_without_data(&mut client, Duration::from_secs(5));
    expect_rejected(metrics, "client-closed", 1);
    // Refused before a hello chose a route: pairs of the route holding the socket.
    let body = scrape(metrics);
    let pairs = |route: &str| {
        sample(
            &body,
            &format!("edgefwd_route_pairs_total{{route=\"{route}\"}}"),
        )
    };
    assert_eq!((pairs("api"), pairs("rest")), (4, 0));
    assert_eq!(
        (api.accepted(), rest.accepted()),
        (0, 0),
        "nothing upstream"
    );
}

/// `client_deny` is the chosen route's: a client it denies is reset once its hello names that route,
/// and reaches the other route with a hello for it.
#[test]
fn test_client_deny_is_the_chosen_routes() {
    let (api, rest) = (Backend::echo(), Backend::echo());
    let api_extra = "sni = [\"api.example.com\"]\nclient_deny = [\"127.0.0.0/8\"]";
    let routes = [
        ("api", api.addr(), api_extra),
        ("rest", rest.addr(), "default = true"),
    ];
    let (fwd, _file, addr) = start(&routes, &[]);
    let mut denied = connect(addr);
    denied.write_all(HELLO_API).expect("hello");
    expect_closed_without_data(&mut denied, Duration::from_secs(5));
    let mut allowed = connect(addr);
    allowed.write_all(HELLO_NONE).expect("hello");
    assert_eq!(read_exactly(&mut allowed, HELLO_NONE.len()), HELLO_NONE);
    assert_eq!((api.accepted(), rest.accepted()), (0, 1));
    let name = "edgefwd_client_rejects_total{route=\"api\",limit=\"acl\"}";
    assert_eq!(sample(&scrape(fwd.metrics_addr()), name), 1);
}

/// `alpn`: of two routes for one name, the one listing a protocol the client offers (OpenSSL's hello
/// offers `h2`) takes its hello, and the route without `alpn` takes a hello offering none.
#[test]
fn test_alpn_picks_among_routes_of_one_name() {
    let (h2, plain) = (Backend::echo(), Backend::echo());
    let name = "sni = [\"www.example.com\", \"api.example.com\"]";
    let with_alpn = format!("{name}\nalpn = [\"h2\"]");
    let routes = [
        ("h2", h2.addr(), with_alpn.as_str()),
        ("plain", plain.addr(), name),
    ];
    let (_fwd, _file, addr) = start(&routes, &[]);
    let mut client = connect(addr);
    client.write_all(HELLO_WWW).expect("hello with h2");
    assert_eq!(read_exactly(&mut client, HELLO_WWW.len()), HELLO_WWW);
    assert_eq!((h2.accepted(), plain.accepted()), (1, 0));
    let no_alpn: &[u8] = include_bytes!("corpus/tls/openssl-sni.bin");
    let mut client = connect(addr);
    client.write_all(no_alpn).expect("api.example.com, no ALPN");
    assert_eq!(read_exactly(&mut client, no_alpn.len()), no_alpn);
    assert_eq!((h2.accepted(), plain.accepted()), (1, 1));
}

/// A hello that does not come within `header_timeout` closes the client, counted `timeout`.
#[test]
fn test_hello_timeout_closes() {
    let api = Backend::echo();
    let api_extra = "sni = [\"api.example.com\"]\nheader_timeout = \"300ms\"";
    let (fwd, _file, addr) = start(&[("api", api.addr(), api_extra)], &[]);
    let mut client = connect(addr);
    client.write_all(&HELLO_API[..20]).expect("a start");
    expect_closed_without_data(&mut client, Duration::from_secs(5));
    expect_rejected(fwd.metrics_addr(), "timeout", 1);
    assert_eq!(api.accepted(), 0);
}

/// `accept_proxy` before the hello and the chosen route's own `send_proxy` after: the PROXY header is
/// read off, the route chosen by the hello behind it, and its upstream gets its header (v1, naming the
/// client the received header named), then the hello unchanged; the other route sends none.
#[test]
fn test_accept_proxy_then_hello_then_send_proxy() {
    let (api, rest) = (Backend::echo(), Backend::echo());
    let api_extra = "sni = [\"api.example.com\"]\naccept_proxy = true\nsend_proxy = \"v1\"";
    let routes = [
        ("api", api.addr(), api_extra),
        ("rest", rest.addr(), "default = true\naccept_proxy = true"),
    ];
    let (_fwd, _file, addr) = start(&routes, &[]);
    let received = b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 443\r\n";
    let mut client = connect(addr);
    client.write_all(received).expect("header");
    write_byte_by_byte(&mut client, &HELLO_API[..40]);
    client
        .write_all(&HELLO_API[40..])
        .expect("rest of the hello");
    let sent = b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 ";
    let echoed = read_exactly(&mut client, sent.len());
    assert_eq!(echoed, sent);
    let mut line = Vec::new();
    while line.last() != Some(&b'\n') {
        line.extend(read_exactly(&mut client, 1));
    }
    assert_eq!(read_exactly(&mut client, HELLO_API.len()), HELLO_API);
    let mut other = connect(addr);
    other.write_all(received).expect("header");
    other.write_all(HELLO_NONE).expect("hello");
    assert_eq!(
        read_exactly(&mut other, HELLO_NONE.len()),
        HELLO_NONE,
        "no header"
    );
    assert_eq!((api.accepted(), rest.accepted()), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// Real clients and servers: openssl s_server behind edgefwd, openssl s_client and curl in front.
// ---------------------------------------------------------------------------------------------

/// A directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "edgefwd-sni-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `openssl s_server` on loopback with a self-signed certificate for `name`, serving the files of
/// its directory (`-WWW`): `/who` answers `name`. Killed on drop.
struct TlsServer {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl TlsServer {
    fn start(name: &str) -> TlsServer {
        let dir = TempDir::new(name);
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-keyout", "key.pem", "-out", "cert.pem", "-subj"])
            .arg(format!("/CN={name}"))
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl req");
        assert!(made.success(), "openssl req failed");
        std::fs::write(dir.0.join("who"), name).expect("who");
        let port = free_port();
        let child = Command::new("openssl")
            .args([
                "s_server", "-quiet", "-WWW", "-cert", "cert.pem", "-key", "key.pem",
            ])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = TlsServer {
            child,
            addr,
            _dir: dir,
        };
        let up = wait_until(IO, || {
            TcpStream::connect(addr).is_ok_and(|s| s.shutdown(Shutdown::Both).is_ok())
        });
        assert!(up, "openssl s_server did not listen on {addr}");
        server
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl -k https://NAME:PORT/who` with NAME resolved to edgefwd's address: the body, or curl's
/// error.
fn curl_who(name: &str, addr: SocketAddr) -> String {
    let port = addr.port();
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", "--resolve"])
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}/who"))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        body
    } else {
        format!("curl failed: {}", String::from_utf8_lossy(&out.stderr))
    }
}

/// `openssl s_client` to edgefwd with `args` (`-servername NAME` or `-noservername`): everything it
/// printed.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    // Closing its stdin ends the session once the handshake is done.
    drop(child.stdin.take());
    let started = Instant::now();
    while started.elapsed() < IO {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("s_client output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The subject line of the certificate s_client was shown.
fn subject(output: &str) -> String {
    output
        .lines()
        .find(|line| line.starts_with("subject="))
        .unwrap_or("no subject")
        .replace(' ', "")
}

/// Three TLS servers behind one edgefwd port: `a` by its name, `b` by a wildcard (one label only),
/// `c` the default (no name, or a name nothing matches); curl and s_client each reach the right one,
/// told by the body it serves or the certificate it shows. Then a hello split byte by byte by a
/// relay in front of curl still reaches its server.
#[test]
fn test_real_clients_reach_the_server_their_name_picks() {
    if !have("openssl") || !have("curl") {
        return;
    }
    let (a, b, c) = (
        TlsServer::start("a.test"),
        TlsServer::start("b.test"),
        TlsServer::start("c.test"),
    );
    let routes = [
        ("a", a.addr, "sni = [\"a.test\"]"),
        ("b", b.addr, "sni = [\"*.b.test\"]"),
        ("c", c.addr, "default = true"),
    ];
    let (fwd, _file, addr) = start(&routes, &[]);
    assert_eq!(curl_who("a.test", addr), "a.test");
    assert_eq!(curl_who("www.b.test", addr), "b.test", "the wildcard");
    assert_eq!(curl_who("x.y.b.test", addr), "c.test", "one label only");
    assert_eq!(curl_who("other.test", addr), "c.test", "no match: default");
    assert_eq!(
        subject(&s_client(addr, &["-servername", "A.TEST"])),
        "subject=CN=a.test",
        "case-insensitive"
    );
    assert_eq!(
        subject(&s_client(addr, &["-noservername"])),
        "subject=CN=c.test"
    );
    let relay = ByteRelay::start(addr);
    assert_eq!(
        curl_who("a.test", relay.addr),
        "a.test",
        "split byte by byte"
    );
    assert!(routed(fwd.metrics_addr(), "a", "name") >= 3);
}

/// Without a default, s_client asking for a name no route takes is told `unrecognized_name`.
#[test]
fn test_s_client_sees_the_unrecognized_name_alert() {
    if !have("openssl") {
        return;
    }
    let a = TlsServer::start("a.test");
    let (_fwd, _file, addr) = start(&[("a", a.addr, "sni = [\"a.test\"]")], &[]);
    let output = s_client(addr, &["-servername", "nobody.test"]);
    assert!(
        output.contains("unrecognized name") || output.contains("alert number 112"),
        "{output}"
    );
}

/// A reload that adds a route for a name on the shared address: before, the name went to the
/// default; after, to its own server; the listening socket stays the same one throughout (its inode),
/// with `--threads 2`.
#[test]
fn test_reload_adds_a_name_and_keeps_the_socket() {
    if !have("openssl") || !have("curl") {
        return;
    }
    let (a, b, c) = (
        TlsServer::start("a.test"),
        TlsServer::start("b.test"),
        TlsServer::start("c.test"),
    );
    let routes = [
        ("a", a.addr, "sni = [\"a.test\"]"),
        ("c", c.addr, "default = true"),
    ];
    let (fwd, file, addr) = start(&routes, &["--threads", "2"]);
    let base = routes_on(addr, &routes);
    assert_eq!(curl_who("b.test", addr), "c.test");
    let before = listening_inode(fwd.pid(), addr.port());
    file.write(&(base.clone() + &route("b", addr, b.addr, "sni = [\"b.test\"]")));
    fwd.signal(libc::SIGHUP);
    fwd.expect_log("reload: 3 routes", IO);
    for _ in 0..4 {
        assert_eq!(curl_who("b.test", addr), "b.test");
        assert_eq!(curl_who("a.test", addr), "a.test");
    }
    assert_eq!(listening_inode(fwd.pid(), addr.port()), before);
    file.write(&base);
    fwd.signal(libc::SIGHUP);
    fwd.expect_log("reload: 2 routes", IO);
    assert_eq!(curl_who("b.test", addr), "c.test", "removed again");
    assert_eq!(listening_inode(fwd.pid(), addr.port()), before);
    // Without `a`, the route that held the socket: `c` holds it now, the same socket.
    file.write(&route("c", addr, c.addr, "default = true"));
    fwd.signal(libc::SIGHUP);
    fwd.expect_log("reload: 1 routes", IO);
    for _ in 0..4 {
        assert_eq!(curl_who("a.test", addr), "c.test", "a removed");
    }
    assert_eq!(listening_inode(fwd.pid(), addr.port()), before);
}

/// The inode of the socket process `pid` listens on at 127.0.0.1:`port` (from /proc/PID/net/tcp).
fn listening_inode(pid: u32, port: u16) -> String {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).expect("net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(9).map(|inode| inode.to_string()))
                .flatten()
        })
        .next()
        .unwrap_or_else(|| panic!("nothing listens on {local}"))
}

/// A relay in front of edgefwd that passes the client's first 1 KiB on one byte per segment (the
/// ClientHello arrives in hundreds of pieces), the rest as it comes. One client at a time.
struct ByteRelay {
    addr: SocketAddr,
}

impl ByteRelay {
    fn start(to: SocketAddr) -> ByteRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(upstream) = TcpStream::connect(to) else {
                    return;
                };
                relay(client, upstream);
            }
        });
        ByteRelay { addr }
    }
}

/// Copies both ways until either side ends; the client's first 1 KiB one byte per write.
fn relay(client: TcpStream, upstream: TcpStream) {
    let timeouts =
        |s: &TcpStream| s.set_read_timeout(Some(IO)).is_ok() && s.set_nodelay(true).is_ok();
    if !timeouts(&client) || !timeouts(&upstream) {
        return;
    }
    let (Ok(mut from_up), Ok(mut to_client)) = (upstream.try_clone(), client.try_clone()) else {
        return;
    };
    let back = thread::spawn(move || {
        let _ = std::io::copy(&mut from_up, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let (mut client, mut upstream) = (client, upstream);
    let mut offset = 0usize;
    let mut chunk = [0u8; 4096];
    loop {
        let n = match client.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let split = 1024usize.saturating_sub(offset).min(n);
        for &byte in &chunk[..split] {
            thread::sleep(Duration::from_micros(200));
            if upstream.write_all(&[byte]).is_err() {
                return;
            }
        }
        if upstream.write_all(&chunk[split..n]).is_err() {
            return;
        }
        offset += n;
    }
    let _ = upstream.shutdown(Shutdown::Write);
    let _ = back.join();
}
