//! The admin API's client: one blocking HTTP/1.1 request per connection, over TCP or a Unix socket.
//!
//! The admin server answers one request per connection with `Connection: close` and a `Content-Length`
//! (docs/admin.md), so a client needs no pooling, chunked decoding or keep-alive: it writes the request,
//! reads until the server closes, and splits head from body. Every socket operation has a deadline, so
//! a server that stops answering is an error after `timeout`, never a hang. What the answer means (a
//! 404 for an unknown connection...) is the caller's business; a failure here is one line naming the
//! address and what went wrong.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use edgefwd::config::unix::UnixAddr;

/// The most of an answer read (head and body): a server far past it is not the admin API.
const MAX_RESPONSE: u64 = 64 << 20;

/// Where the admin API listens: `IP:PORT` / `HOST:PORT`, or `unix:/PATH` / `unix:@NAME` (Linux's
/// abstract names), as the server's `--admin` takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Tcp(String),
    Unix(UnixAddr),
}

impl Endpoint {
    /// `unix:/PATH`, `unix:@NAME` or a TCP address; anything else (an empty string, a path without
    /// `unix:`, a TCP address without a port) is refused with a line naming it.
    pub(crate) fn parse(text: &str) -> Result<Endpoint, String> {
        if UnixAddr::is_unix(text) {
            return text
                .parse()
                .map(Endpoint::Unix)
                .map_err(|why| format!("--admin: {why}"));
        }
        let port = text
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .map(|(_, port)| port.parse::<u16>());
        match port {
            Some(Ok(_)) => Ok(Endpoint::Tcp(text.to_string())),
            _ => Err(format!(
                "--admin '{text}': expected IP:PORT, HOST:PORT or unix:/PATH (e.g. 127.0.0.1:9091)"
            )),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(addr) => f.write_str(addr),
            Endpoint::Unix(addr) => addr.fmt(f),
        }
    }
}

/// A request that failed before a whole answer came back.
#[derive(Debug)]
pub(crate) enum Error {
    /// The connect failed: nothing listens there, or it cannot be reached in time.
    Unreachable(io::Error),
    /// Connected, but writing the request or reading the answer failed or timed out.
    Exchange(io::Error),
    /// The answer is not HTTP/1.x as the admin API speaks it.
    Malformed(String),
}

/// One answer: its status code and its body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// The admin API at one endpoint, with an optional bearer token.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) endpoint: Endpoint,
    pub(crate) token: Option<String>,
    /// Deadline of one whole request: connect, write, read.
    pub(crate) timeout: Duration,
}

/// Either socket, read and written alike.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Client {
    /// `METHOD PATH` (the path with its query), with a JSON body if given.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, Error> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = self.connect().map_err(Error::Unreachable)?;
        let request = self.encode(method, path, body);
        let mut raw = Vec::new();
        exchange(&mut stream, request.as_bytes(), &mut raw, deadline).map_err(Error::Exchange)?;
        parse(&raw)
    }

    fn connect(&self) -> io::Result<Stream> {
        match &self.endpoint {
            Endpoint::Tcp(addr) => {
                let mut last = None;
                for resolved in addr.to_socket_addrs()? {
                    match TcpStream::connect_timeout(&resolved, self.timeout) {
                        Ok(stream) => return Ok(Stream::Tcp(stream)),
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the name has no address")
                }))
            }
            Endpoint::Unix(addr) => connect_unix(addr).map(Stream::Unix),
        }
    }

    fn encode(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let host = match &self.endpoint {
            Endpoint::Tcp(addr) => addr.as_str(),
            Endpoint::Unix(_) => "localhost",
        };
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        if let Some(token) = &self.token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method != "GET" {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(body);
        request
    }
}

/// A Unix connect does not wait on a peer's handshake: it succeeds or fails at once. Through socket2,
/// which spells an abstract name (a leading NUL) on every platform the forwarder builds for.
fn connect_unix(addr: &UnixAddr) -> io::Result<UnixStream> {
    let sockaddr = match addr {
        UnixAddr::Path(path) => SockAddr::unix(path)?,
        UnixAddr::Abstract(name) => {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(name.as_bytes());
            SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes))?
        }
    };
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.connect(&sockaddr)?;
    Ok(socket.into())
}

/// Writes `request`, then reads the answer into `raw` until the server closes, each step bounded by
/// what is left of the time to `deadline`.
fn exchange(
    stream: &mut Stream,
    request: &[u8],
    raw: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<()> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    };
    stream.set_timeouts(left()?)?;
    stream.write_all(request)?;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream.set_timeouts(left()?)?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            // A timed-out read is WouldBlock on Linux: name it for what it is.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
            }
            Err(err) => return Err(err),
        }
        if raw.len() as u64 > MAX_RESPONSE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("answer larger than {MAX_RESPONSE} bytes"),
            ));
        }
    }
}

impl Stream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Status line, headers, body: the body is what `Content-Length` says (all that follows the head if
/// there is none), and must be UTF-8 (the admin API answers JSON).
fn parse(raw: &[u8]) -> Result<Response, Error> {
    let malformed = |what: &str| Error::Malformed(what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("the answer ended before its head did"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| malformed("a head not in UTF-8"))?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| Error::Malformed(format!("not an HTTP status line: '{status_line}'")))?;
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>())
        .transpose()
        .map_err(|_| malformed("a Content-Length that is not a number"))?;
    let body = match length {
        Some(length) if length > body.len() => {
            return Err(Error::Malformed(format!(
                "the body ended after {} of its {length} bytes",
                body.len()
            )))
        }
        Some(length) => &body[..length],
        None => body,
    };
    let body = String::from_utf8(body.to_vec()).map_err(|_| malformed("a body not in UTF-8"))?;
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn client(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            token: Some(String::from("s3cret")),
            timeout: Duration::from_secs(5),
        }
    }

    /// A one-shot server on loopback: reads the request head, answers `answer`, closes; hands back
    /// what it read.
    fn serve_once(answer: &'static str) -> (String, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            while !seen.ends_with(b"\r\n\r\n") && stream.read(&mut byte).expect("read") == 1 {
                seen.push(byte[0]);
            }
            stream.write_all(answer.as_bytes()).expect("answer");
            String::from_utf8(seen).expect("utf-8 request")
        });
        (addr, server)
    }

    #[test]
    fn test_endpoint_parse() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:9091"),
            Ok(Endpoint::Tcp("127.0.0.1:9091".into()))
        );
        assert_eq!(
            Endpoint::parse("[::1]:9091"),
            Ok(Endpoint::Tcp("[::1]:9091".into()))
        );
        assert_eq!(
            Endpoint::parse("unix:/run/edgefwd/admin.sock"),
            Ok(Endpoint::Unix(UnixAddr::Path(
                "/run/edgefwd/admin.sock".into()
            )))
        );
        assert_eq!(
            Endpoint::parse("unix:@edgefwd-admin"),
            Ok(Endpoint::Unix(UnixAddr::Abstract("edgefwd-admin".into())))
        );
        for bad in [
            "",
            "unix:",
            "127.0.0.1",
            ":9091",
            "host:port",
            "127.0.0.1:70000",
        ] {
            let err = Endpoint::parse(bad).expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    /// The request carries the token and asks to close; the answer's body is cut at its length.
    #[test]
    fn test_request_over_tcp() {
        let (addr, server) = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]",
        );
        let answer = client(Endpoint::Tcp(addr))
            .request("GET", "/connections?stuck=1", None)
            .expect("answer");
        assert_eq!((answer.status, answer.body.as_str()), (200, "[]"));
        let seen = server.join().expect("server");
        assert!(
            seen.starts_with("GET /connections?stuck=1 HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(seen.contains("Authorization: Bearer s3cret\r\n"), "{seen}");
        assert!(seen.contains("Connection: close\r\n"), "{seen}");
    }

    #[test]
    fn test_request_over_unix_socket() {
        let path = std::env::temp_dir().join(format!("edgefwd-ctl-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut head = [0u8; 256];
            let _ = stream.read(&mut head).expect("read");
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 27\r\n\r\n{\"error\":\"no connection 9\"}")
                .expect("answer");
        });
        let answer = client(Endpoint::Unix(UnixAddr::Path(path.clone())))
            .request("DELETE", "/connections/9?how=rst", None)
            .expect("answer");
        server.join().expect("server");
        let _ = std::fs::remove_file(&path);
        assert_eq!(answer.status, 404);
        assert_eq!(answer.body, "{\"error\":\"no connection 9\"}");
    }

    /// `unix:@NAME`: Linux's abstract namespace, which the server's `--admin` also takes.
    #[cfg(target_os = "linux")]
    #[test]
    fn test_request_over_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("edgefwd-ctl-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind");
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut head = [0u8; 256];
            let _ = stream.read(&mut head).expect("read");
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]")
                .expect("answer");
        });
        let endpoint = Endpoint::parse(&format!("unix:@{name}")).expect("endpoint");
        let answer = client(endpoint)
            .request("GET", "/routes", None)
            .expect("answer");
        server.join().expect("server");
        assert_eq!((answer.status, answer.body.as_str()), (200, "[]"));
    }

    #[test]
    fn test_refused_connect_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let err = client(Endpoint::Tcp(addr)).request("GET", "/routes", None);
        match err {
            Err(Error::Unreachable(err)) => {
                assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused)
            }
            other => panic!("expected a refused connect, got {other:?}"),
        }
    }

    /// A server that accepts and never answers costs the client its timeout, not a hang.
    #[test]
    fn test_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let mut silent = client(Endpoint::Tcp(addr));
        silent.timeout = Duration::from_millis(300);
        let started = Instant::now();
        match silent.request("GET", "/routes", None) {
            Err(Error::Exchange(err)) => assert_eq!(err.kind(), io::ErrorKind::TimedOut),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(listener);
    }

    #[test]
    fn test_parse_answers() {
        let ok = parse(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ntrueXX").expect("ok");
        assert_eq!((ok.status, ok.body.as_str()), (201, "true"));
        let no_length = parse(b"HTTP/1.0 200 OK\r\n\r\n{}").expect("no length");
        assert_eq!(no_length.body, "{}");
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"),
            Err(Error::Malformed(why)) if why.contains("2 of its 10")
        ));
        assert!(matches!(
            parse(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\n"),
            Err(Error::Malformed(_))
        ));
    }
}
