//! `--mode connect`: an HTTP CONNECT proxy with an allow-list, over real loopback sockets; every error
//! status, the pipelined-bytes path, credentials, and a real client (curl).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection Established\r\n\r\n";

fn proxy(extra: &[&str]) -> Forwarder {
    let mut args = vec!["--mode", "connect"];
    args.extend_from_slice(extra);
    Forwarder::start(&args)
}

/// Sends `request` and returns everything the proxy answers until it closes.
fn answer(fwd: &Forwarder, request: &[u8]) -> String {
    let mut client = connect(fwd.addr());
    client.write_all(request).expect("write request");
    let (bytes, end) = read_until_end(&mut client, Duration::from_secs(5));
    assert_eq!(
        end,
        End::Eof,
        "the proxy must close cleanly after its answer"
    );
    String::from_utf8_lossy(&bytes).into_owned()
}

fn status_of(fwd: &Forwarder, request: &[u8]) -> String {
    let text = answer(fwd, request);
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn test_connect_tunnels_and_forwards_pipelined_bytes() {
    let echo = Backend::echo();
    let allow = format!("{}", echo.addr());
    let fwd = proxy(&["--allow", &allow]);
    let mut client = connect(fwd.addr());
    let request = format!(
        "CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\npipelined",
        echo.addr(),
        echo.addr()
    );
    client.write_all(request.as_bytes()).expect("write");
    let mut got = vec![0u8; ESTABLISHED.len() + "pipelined".len()];
    client.read_exact(&mut got).expect("read 200 and the echo");
    assert_eq!(&got[..ESTABLISHED.len()], ESTABLISHED);
    assert_eq!(&got[ESTABLISHED.len()..], b"pipelined");
    client.write_all(b" and more").expect("write");
    let mut more = [0u8; 9];
    client.read_exact(&mut more).expect("read echo");
    assert_eq!(&more, b" and more");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let (rest, end) = read_until_end(&mut client, Duration::from_secs(5));
    assert!(rest.is_empty() && end == End::Eof, "{rest:?} {end:?}");
    let close = fwd.wait_for_close("client-fin", Duration::from_secs(5));
    assert!(close.line.contains("upstream=-"), "{}", close.line);
}

#[test]
fn test_connect_outside_allow_list_is_403() {
    let echo = Backend::echo();
    let fwd = proxy(&["--allow", "127.0.0.1:1"]);
    let request = format!("CONNECT {} HTTP/1.1\r\n\r\n", echo.addr());
    assert_eq!(
        status_of(&fwd, request.as_bytes()),
        "HTTP/1.1 403 Forbidden"
    );
    fwd.wait_for_close("rejected", Duration::from_secs(5));
    fwd.expect_log("not in the allow-list", Duration::from_secs(5));
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn test_bad_requests_get_their_status() {
    let fwd = proxy(&["--allow", "127.0.0.1:*"]);
    let cases: [(&[u8], &str); 5] = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "405"),
        (b"POST http://x/ HTTP/1.1\r\n\r\n", "405"),
        (b"CONNECT nohostport HTTP/1.1\r\n\r\n", "400"),
        (
            b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nbroken header\r\n\r\n",
            "400",
        ),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", "400"),
    ];
    for (request, code) in cases {
        let status = status_of(&fwd, request);
        assert!(
            status.starts_with(&format!("HTTP/1.1 {code} ")),
            "{:?} -> {status}",
            String::from_utf8_lossy(request)
        );
    }
}

#[test]
fn test_oversized_head_is_431() {
    let fwd = proxy(&["--allow", "127.0.0.1:*"]);
    let mut request = b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 9000));
    assert_eq!(
        status_of(&fwd, &request),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}

#[test]
fn test_slow_head_is_408() {
    let fwd = proxy(&["--allow", "127.0.0.1:*", "--header-timeout", "300ms"]);
    let started = Instant::now();
    let status = status_of(&fwd, b"CONNECT 127.0.0.1:80 HTTP/1.1\r\n");
    assert_eq!(status, "HTTP/1.1 408 Request Timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[test]
fn test_unreachable_destination_is_502() {
    let refused = refused_addr();
    let fwd = proxy(&["--allow", "127.0.0.1:*"]);
    let request = format!("CONNECT {refused} HTTP/1.1\r\n\r\n");
    assert_eq!(
        status_of(&fwd, request.as_bytes()),
        "HTTP/1.1 502 Bad Gateway"
    );
    // The info line names the destination, not `-` (it is no endpoint of the route).
    fwd.expect_log(
        &format!("upstream connect refused: upstream={refused} "),
        Duration::from_secs(5),
    );
}

/// Where `localhost` leads first: the address edgefwd connects to for `CONNECT localhost:PORT` (127.0.0.1
/// or ::1, as this machine's resolver orders them), so a backend bound there is the one it reaches.
fn localhost() -> IpAddr {
    ("localhost", 0)
        .to_socket_addrs()
        .expect("resolve localhost")
        .next()
        .expect("an address for localhost")
        .ip()
}

#[test]
fn test_connect_to_a_host_name_is_looked_up() {
    let echo = Backend::echo_on(SocketAddr::new(localhost(), 0));
    let fwd = proxy(&["--allow", "localhost:*", "--metrics", "127.0.0.1:0"]);
    let metrics = fwd.metrics_addr();
    assert_eq!(sample(&scrape(metrics), "edgefwd_lookups_total"), 0);
    let mut client = connect(fwd.addr());
    let request = format!(
        "CONNECT localhost:{} HTTP/1.1\r\n\r\npipelined",
        echo.addr().port()
    );
    client.write_all(request.as_bytes()).expect("write");
    let mut got = vec![0u8; ESTABLISHED.len() + "pipelined".len()];
    client.read_exact(&mut got).expect("read 200 and the echo");
    assert_eq!(&got[..ESTABLISHED.len()], ESTABLISHED);
    assert_eq!(&got[ESTABLISHED.len()..], b"pipelined");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let (rest, end) = read_until_end(&mut client, Duration::from_secs(5));
    assert!(rest.is_empty() && end == End::Eof, "{rest:?} {end:?}");
    fwd.wait_for_close("client-fin", Duration::from_secs(5));
    let after = scrape(metrics);
    assert_eq!(sample(&after, "edgefwd_lookups_total"), 1);
    assert_eq!(sample(&after, "edgefwd_connects_ok_total"), 1);
}

/// A name that does not resolve gets 502. The connect timeout is long, so that a machine whose DNS
/// server does not answer (glibc: 5 s per try, 2 tries) still gets its 502 rather than a 504.
#[test]
fn test_a_name_that_does_not_resolve_is_502() {
    let fwd = proxy(&["--allow", ".invalid:*", "--connect-timeout", "60s"]);
    let mut client = connect(fwd.addr());
    client
        .write_all(b"CONNECT no-such-host.invalid:80 HTTP/1.1\r\n\r\n")
        .expect("write");
    let (bytes, end) = read_until_end(&mut client, Duration::from_secs(70));
    assert_eq!(end, End::Eof);
    let answer = String::from_utf8_lossy(&bytes);
    assert!(answer.starts_with("HTTP/1.1 502 Bad Gateway"), "{answer}");
    fwd.expect_log(
        "cannot resolve no-such-host.invalid:80",
        Duration::from_secs(5),
    );
}

/// A name outside the allow-list is refused before anything is resolved.
#[test]
fn test_a_name_outside_the_allow_list_is_403() {
    let fwd = proxy(&["--allow", ".example.com:443"]);
    let status = status_of(&fwd, b"CONNECT localhost:443 HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
}

#[test]
fn test_connect_timeout_is_504() {
    let hole = Blackhole::new();
    let fwd = proxy(&["--allow", "127.0.0.1:*", "--connect-timeout", "300ms"]);
    let request = format!("CONNECT {} HTTP/1.1\r\n\r\n", hole.addr());
    assert_eq!(
        status_of(&fwd, request.as_bytes()),
        "HTTP/1.1 504 Gateway Timeout"
    );
}

#[test]
fn test_credentials_required_407_then_accepted() {
    let echo = Backend::echo();
    let fwd = proxy(&["--allow", "127.0.0.1:*", "--proxy-auth", "alice:s3cret"]);
    let bare = format!("CONNECT {} HTTP/1.1\r\n\r\n", echo.addr());
    let text = answer(&fwd, bare.as_bytes());
    assert!(
        text.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"),
        "{text}"
    );
    assert!(text.contains("Proxy-Authenticate: Basic"), "{text}");
    let wrong = format!(
        "CONNECT {} HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6bm9wZQ==\r\n\r\n",
        echo.addr()
    );
    assert!(status_of(&fwd, wrong.as_bytes()).contains(" 407 "));
    // base64("alice:s3cret")
    let right = format!(
        "CONNECT {} HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\nping",
        echo.addr()
    );
    let mut client = connect(fwd.addr());
    client.write_all(right.as_bytes()).expect("write");
    let mut got = vec![0u8; ESTABLISHED.len() + 4];
    client.read_exact(&mut got).expect("read");
    assert_eq!(&got[ESTABLISHED.len()..], b"ping");
}

#[test]
fn test_connect_mode_needs_an_allow_list() {
    let (code, stderr) = run_edgefwd_expect_fail(&["--listen", "127.0.0.1:0", "--mode", "connect"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("allow-list"), "{stderr}");
    let (code, stderr) = run_edgefwd_expect_fail(&[
        "--listen",
        "127.0.0.1:0",
        "--mode",
        "connect",
        "--allow",
        "10.0.0.0/33:1",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("10.0.0.0/33:1"), "{stderr}");
    let (code, stderr) = run_edgefwd_expect_fail(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
        "--allow",
        "*:443",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("only apply to connect mode"), "{stderr}");
}

#[test]
fn test_connect_route_from_config_file() {
    let echo = Backend::echo();
    let file = ConfigFile::new(&format!(
        "[[route]]\nname = \"tunnel\"\nlisten = \"127.0.0.1:0\"\nmode = \"connect\"\nallow = [\"{}\"]\nheader_timeout = \"2s\"\n",
        echo.addr()
    ));
    let fwd = Forwarder::start(&["--config", file.path()]);
    let mut client = connect(fwd.addr());
    let request = format!("CONNECT {} HTTP/1.1\r\n\r\nx", echo.addr());
    client.write_all(request.as_bytes()).expect("write");
    let mut got = vec![0u8; ESTABLISHED.len() + 1];
    client.read_exact(&mut got).expect("read");
    assert_eq!(&got[..ESTABLISHED.len()], ESTABLISHED);
}

/// A one-shot HTTP server on a std listener: answers every request with a fixed body.
fn http_server(ip: IpAddr) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            set_timeouts(&stream, Duration::from_secs(10));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = "hello through edgefwd\n";
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (addr, handle)
}

/// `curl` on PATH, installed with apt-get if missing and we are root (as in CI).
fn find_curl() -> bool {
    let present = || {
        Command::new("curl")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return true;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if root {
        let _ = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl",
            ])
            .output();
    }
    present()
}

/// `curl -p -x` through a connect-mode edgefwd to a one-shot HTTP server on `ip`, which curl names `host`
/// in its CONNECT (curl does not resolve a proxied host itself).
fn curl_through_proxy(test: &str, ip: IpAddr, host: &str, allow: &str) {
    if !find_curl() {
        // .ci/run installs curl: in CI a missing client is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "curl is required in CI");
        eprintln!("SKIPPED {test}: curl is missing and cannot be installed");
        return;
    }
    let (server, handle) = http_server(ip);
    let fwd = proxy(&["--allow", allow]);
    // NO_PROXY could send curl straight to the server, past the proxy under test.
    let output = Command::new("curl")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args([
            "-q", // first: no ~/.curlrc, which could name a `noproxy` too
            "-sS",
            "--max-time",
            "10",
            "-p",
            "-x",
            &format!("http://{}", fwd.addr()),
            &format!("http://{host}:{}/", server.port()),
        ])
        .output()
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello through edgefwd\n"
    );
    handle.join().expect("server thread");
    fwd.expect_log(&format!("CONNECT {host}:"), Duration::from_secs(5));
}

#[test]
fn test_real_curl_through_connect_proxy() {
    let ip = IpAddr::from([127, 0, 0, 1]);
    curl_through_proxy(
        "test_real_curl_through_connect_proxy",
        ip,
        "127.0.0.1",
        "127.0.0.1:*",
    );
}

#[test]
fn test_real_curl_by_host_name() {
    curl_through_proxy(
        "test_real_curl_by_host_name",
        localhost(),
        "localhost",
        "localhost:*",
    );
}

/// A client that pipelines far more than the 8 KiB head bound after its CONNECT: the greeting reads
/// only up to its bound, the rest waits in the kernel for the pump, and everything arrives in order.
#[test]
fn test_large_pipelined_upload_arrives_intact() {
    let echo = Backend::echo();
    let fwd = proxy(&["--allow", &echo.addr().to_string(), "--buffer-size", "4k"]);
    let mut client = connect(fwd.addr());
    let head = format!("CONNECT {} HTTP/1.1\r\n\r\n", echo.addr());
    let body = pattern_vec(300_000);
    let mut writer = client.try_clone().expect("clone");
    let upload = [head.as_bytes(), &body].concat();
    let sender = thread::spawn(move || writer.write_all(&upload).expect("upload"));
    let mut got = vec![0u8; ESTABLISHED.len() + body.len()];
    client.read_exact(&mut got).expect("read it all back");
    sender.join().expect("sender");
    assert_eq!(&got[..ESTABLISHED.len()], ESTABLISHED);
    assert!(
        got[ESTABLISHED.len()..] == body[..],
        "the echoed stream differs"
    );
}

/// A refused client that keeps sending: the proxy discards its bytes in bounded slices, and must come
/// back for the rest by itself (edge-triggered: no new event for bytes already queued), so the client's
/// FIN behind them closes the pair at once, not when the 2s linger runs out.
#[test]
fn test_refused_client_with_a_large_body_is_closed_on_its_fin() {
    let fwd = proxy(&["--allow", "127.0.0.1:1"]);
    let mut client = connect(fwd.addr());
    let mut writer = client.try_clone().expect("clone");
    let body = thread::spawn(move || {
        writer.write_all(b"CONNECT 127.0.0.1:2 HTTP/1.1\r\n\r\n")?;
        writer.write_all(&vec![b'x'; 400 * 1024])?;
        writer.shutdown(std::net::Shutdown::Write)
    });
    let (bytes, _) = read_until_end(&mut client, Duration::from_secs(5));
    assert!(
        bytes.starts_with(b"HTTP/1.1 403 Forbidden"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    body.join().expect("writer").expect("client body");
    let close = fwd.wait_for_close("rejected", Duration::from_secs(5));
    let duration: u64 = close
        .line
        .split_once("duration=")
        .and_then(|(_, rest)| rest.split_once("ms"))
        .and_then(|(ms, _)| ms.parse().ok())
        .expect("duration in the close line");
    assert!(
        duration < 1500,
        "closed after {duration}ms: the FIN behind the discarded body waited for the linger"
    );
}
