//! Binary upgrade, the wire: how a running edgefwd hands its listening sockets to its successor over a
//! Unix stream socket (`--upgrade-socket PATH` on the old process, `--upgrade-from PATH` on the new).
//!
//! The exchange, in order:
//! 1. The successor connects to PATH. The old process answers at once with one message ([`offer`]):
//!    the text `edgefwd-upgrade 1\n`, one line `ADDR NAME\n` per listening TCP socket (its bound
//!    address and its route's name) and `unix NAME\n` per Unix stream listener, `end\n`; and, as
//!    `SCM_RIGHTS` ancillary data of the same `sendmsg`, the sockets themselves. The successor receives
//!    them ([`Predecessor::connect`]): the TCP ones as socket activation receives systemd's (the same
//!    [`Passed`], matched to routes by the same plan), the Unix ones as [`PassedUnix`], which reactor 0
//!    takes instead of binding a listen address equal to the socket's own (read from the socket: a path
//!    may hold any byte, so it stays out of the text). The `--metrics` listener comes along under the
//!    name [`METRICS_NAME`], the `--admin` one (TCP or Unix) under [`ADMIN_NAME`].
//! 2. Once its own reactors have the sockets registered, the successor writes `take-over\n`
//!    ([`Predecessor::take_over`]). The old process closes its upgrade socket, then this connection,
//!    and stops accepting; the successor waits for that end of file, then binds PATH itself (`reactor::upgrade`, through `datapath::unix::bind`).
//!
//! The sockets are never closed in between: both processes hold them for a moment, and clients wait
//! in the kernel's accept queue, which neither process owns alone. If the successor dies before step 2,
//! the old process sees the connection end without `take-over` and keeps serving. A Unix listener's
//! file is never unlinked nor bound again: the old process leaves it in place when it exits after the
//! hand-over, and the successor owns it (removes it at its own exit) only from step 2 on, so a
//! successor that dies before cannot take the file from under the old process.
//!
//! Like the rest of `service`, this uses no other module of the crate.

use std::io::{self, Read, Write};
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixStream};
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::activation::{self, Passed};

/// Most sockets one hand-over carries: the kernel's limit on descriptors in one message (`SCM_MAX_FD`).
pub(crate) const MAX_SOCKETS: usize = 253;
/// The first line of an offer; the number is the protocol's version.
const HELLO: &str = "edgefwd-upgrade 1\n";
/// The last line of an offer.
const END: &str = "end\n";
/// The name the `--metrics` listener is offered under: no route's (route names do not start with `@`,
/// and the successor takes it out before matching the others to routes).
pub const METRICS_NAME: &str = "@metrics";
/// The name the `--admin` listener is offered under, TCP or Unix (a Unix one is matched to the
/// successor's `--admin` by its path, like a route's).
pub const ADMIN_NAME: &str = "@admin";
/// What the successor writes once it accepts on the sockets.
pub(crate) const TAKE_OVER: &[u8] = b"take-over\n";
/// Most bytes of text an offer may have: enough for [`MAX_SOCKETS`] lines with long route names.
const MAX_OFFER: usize = 64 * 1024;
/// How long the successor waits for each step of the old process (a busy debug build included).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The word an offer line has for a Unix listener where a TCP one has its address.
const UNIX: &str = "unix";

/// What an offered listening socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// TCP, bound to this address.
    Tcp(SocketAddr),
    /// Unix stream: the successor reads its address from the socket.
    Unix,
}

/// One listening socket to offer: its descriptor, its route's name, what it is.
pub(crate) type Offered<'a> = (RawFd, &'a str, Kind);

/// A Unix stream listener a predecessor handed over: non-blocking, close-on-exec.
#[derive(Debug)]
pub struct PassedUnix {
    pub(crate) socket: mio::net::UnixListener,
    /// The address it is bound to, as the socket says.
    pub(crate) local: UnixSocketAddr,
}

/// Sends the offer (the text and the sockets, in one message) on the connection `conn`.
pub(crate) fn offer(conn: &impl AsRawFd, sockets: &[Offered]) -> io::Result<()> {
    if sockets.len() > MAX_SOCKETS {
        return Err(io::Error::other(format!(
            "{} listening sockets: one hand-over carries at most {MAX_SOCKETS}",
            sockets.len()
        )));
    }
    let mut text = String::from(HELLO);
    for (_, name, kind) in sockets {
        match kind {
            Kind::Tcp(local) => text.push_str(&format!("{local} {name}\n")),
            Kind::Unix => text.push_str(&format!("{UNIX} {name}\n")),
        }
    }
    text.push_str(END);
    let fds: Vec<RawFd> = sockets.iter().map(|(fd, _, _)| *fd).collect();
    let sent = send_with_fds(conn.as_raw_fd(), text.as_bytes(), &fds)?;
    if sent != text.len() {
        return Err(io::Error::other("the offer did not fit the socket buffer"));
    }
    Ok(())
}

/// The old process, as the successor sees it: the connection to its upgrade socket.
#[derive(Debug)]
pub struct Predecessor {
    conn: UnixStream,
}

impl Predecessor {
    /// Connects to the old process's upgrade socket at `path` and receives its listening sockets: TCP
    /// and Unix.
    pub fn connect(path: &Path) -> Result<(Predecessor, Vec<Passed>, Vec<PassedUnix>), String> {
        let at = path.display();
        let conn = UnixStream::connect(path)
            .map_err(|err| format!("--upgrade-from {at}: cannot connect: {err}"))?;
        conn.set_read_timeout(Some(STEP_TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(STEP_TIMEOUT)))
            .map_err(|err| format!("--upgrade-from {at}: {err}"))?;
        let (passed, unix) = receive(&conn).map_err(|err| format!("--upgrade-from {at}: {err}"))?;
        Ok((Predecessor { conn }, passed, unix))
    }

    /// The old process's pid, as the kernel saw it connect (`SO_PEERCRED`): the one live process whose
    /// `--pid-file` this one may take over.
    pub fn pid(&self) -> Option<u32> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: SO_PEERCRED fills at most `len` bytes of `cred`, a plain C struct that lives for the
        // call; the fd is the connection this value owns, open for as long as `self`.
        let rc = unsafe {
            libc::getsockopt(
                self.conn.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        (rc == 0)
            .then(|| u32::try_from(cred.pid).ok())
            .flatten()
            .filter(|pid| *pid > 0)
    }

    /// Tells the old process to stop accepting, and waits until it has let go of its upgrade socket
    /// (it closes the connection after closing that socket), so that the successor may bind the path.
    pub fn take_over(mut self) -> Result<(), String> {
        self.conn
            .write_all(TAKE_OVER)
            .map_err(|err| format!("--upgrade-from: cannot tell the old process to stop: {err}"))?;
        let mut byte = [0u8; 1];
        loop {
            match self.conn.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(format!(
                        "--upgrade-from: the old process did not let go within {}s: {err}",
                        STEP_TIMEOUT.as_secs()
                    ))
                }
            }
        }
    }
}

/// Receives an offer: the TCP sockets, each with its route's name, and the Unix ones, each checked to
/// be a listening socket of its kind.
fn receive(conn: &UnixStream) -> Result<(Vec<Passed>, Vec<PassedUnix>), String> {
    let mut data = vec![0u8; MAX_OFFER];
    let (got, fds) = recv_with_fds(conn.as_raw_fd(), &mut data)
        .map_err(|err| format!("cannot receive the sockets: {err}"))?;
    data.truncate(got);
    let mut reader = conn;
    while !data.ends_with(END.as_bytes()) {
        let mut more = [0u8; 4096];
        let n = reader
            .read(&mut more)
            .map_err(|err| format!("cannot receive the offer: {err}"))?;
        if n == 0 || data.len() + n > MAX_OFFER {
            return Err(String::from("the offer ended early or is too long"));
        }
        data.extend_from_slice(&more[..n]);
    }
    let text = String::from_utf8(data).map_err(|_| String::from("the offer is not text"))?;
    let lines = parse(&text)?;
    if lines.len() != fds.len() {
        return Err(format!(
            "the offer names {} sockets but carries {}",
            lines.len(),
            fds.len()
        ));
    }
    let (mut tcp, mut unix) = (Vec::new(), Vec::new());
    for ((kind, name), fd) in lines.into_iter().zip(fds) {
        let what = format!("upgrade fd {} (name {name:?})", fd.as_raw_fd());
        match kind {
            Kind::Tcp(local) => {
                let passed = activation::listening(fd, name, &what, true)?;
                if passed.local != local {
                    return Err(format!("{what}: is bound to {}", passed.local));
                }
                tcp.push(passed);
            }
            Kind::Unix => unix.push(unix_listening(fd, &what)?),
        }
    }
    Ok((tcp, unix))
}

/// Takes an owned descriptor as a listening Unix stream socket, non-blocking and close-on-exec.
fn unix_listening(socket: OwnedFd, what: &str) -> Result<PassedUnix, String> {
    let socket = Socket::from(socket);
    let unix = socket.domain().is_ok_and(|d| d == Domain::UNIX);
    let stream = socket.r#type().is_ok_and(|t| t == Type::STREAM);
    let listening = socket.is_listener().unwrap_or(false);
    if !(unix && stream && listening) {
        return Err(format!("{what}: not a listening Unix stream socket"));
    }
    socket
        .set_nonblocking(true)
        .and_then(|()| socket.set_cloexec(true))
        .map_err(|err| format!("{what}: {err}"))?;
    let listener = std::os::unix::net::UnixListener::from(OwnedFd::from(socket));
    let local = listener
        .local_addr()
        .map_err(|err| format!("{what}: {err}"))?;
    Ok(PassedUnix {
        socket: mio::net::UnixListener::from_std(listener),
        local,
    })
}

/// The `ADDR NAME` and `unix NAME` lines of an offer's text.
fn parse(text: &str) -> Result<Vec<(Kind, String)>, String> {
    let body = text
        .strip_prefix(HELLO)
        .and_then(|rest| rest.strip_suffix(END))
        .ok_or_else(|| String::from("not an edgefwd-upgrade 1 offer (another version?)"))?;
    body.lines()
        .map(|line| {
            let (addr, name) = line
                .split_once(' ')
                .ok_or_else(|| format!("bad offer line {line:?}"))?;
            let kind = match addr {
                UNIX => Kind::Unix,
                addr => Kind::Tcp(
                    addr.parse()
                        .map_err(|_| format!("bad address in offer line {line:?}"))?,
                ),
            };
            Ok((kind, name.to_string()))
        })
        .collect()
}

/// Takes the `--metrics` listener out of the sockets a predecessor handed over: it is returned when it
/// is bound to `wanted` (this process's `--metrics`), else closed.
pub fn take_metrics(passed: &mut Vec<Passed>, wanted: Option<SocketAddr>) -> Option<Passed> {
    take_named(passed, METRICS_NAME, wanted)
}

/// Takes the TCP `--admin` listener out of the sockets a predecessor handed over, as
/// [`take_metrics`] does: returned when it is bound to `wanted` (this process's TCP `--admin`), else
/// closed.
pub fn take_admin(passed: &mut Vec<Passed>, wanted: Option<SocketAddr>) -> Option<Passed> {
    take_named(passed, ADMIN_NAME, wanted)
}

fn take_named(passed: &mut Vec<Passed>, name: &str, wanted: Option<SocketAddr>) -> Option<Passed> {
    let at = passed.iter().position(|p| p.name == name)?;
    Some(passed.remove(at)).filter(|p| Some(p.local) == wanted)
}

/// An all-zero `msghdr` pointing at `iov` and at `control` (empty: none).
fn message(iov: &mut libc::iovec, control: &mut [u64]) -> libc::msghdr {
    // SAFETY: `msghdr` is plain data (integers and raw pointers); all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    if !control.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(control) as _;
    }
    msg
}

/// Room for `fds` descriptors of ancillary data, as `u64`s so that its `cmsghdr` is aligned.
fn control_for(fds: usize) -> Vec<u64> {
    let payload = (fds * mem::size_of::<RawFd>()) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    vec![0u64; space.div_ceil(mem::size_of::<u64>())]
}

/// `sendmsg` of `data` with `fds` as one `SCM_RIGHTS` message; how many bytes of `data` went.
fn send_with_fds(conn: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut control = if fds.is_empty() {
        Vec::new()
    } else {
        control_for(fds.len())
    };
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let msg = message(&mut iov, &mut control);
    if !fds.is_empty() {
        let payload = mem::size_of_val(fds) as u32;
        // SAFETY: `msg` points at `control`, which CMSG_SPACE sized for one header and `fds`; so the
        // first header exists (non-null) and its data has room for `fds.len()` descriptors.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: `msg` points at `iov` (over `data`) and `control`, all alive for the call; the kernel
    // only reads them.
    let sent = unsafe { libc::sendmsg(conn, &msg, libc::MSG_NOSIGNAL) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// `recvmsg` into `data`: how many bytes came, and the descriptors that came with them (owned,
/// close-on-exec). A message whose descriptors did not all fit is an error (the ones that did are
/// closed).
fn recv_with_fds(conn: RawFd, data: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = control_for(MAX_SOCKETS);
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut msg = message(&mut iov, &mut control);
    let got = loop {
        // SAFETY: `msg` points at `iov` (over `data`) and `control`, both writable and alive for the
        // call, with their true lengths.
        let got = unsafe { libc::recvmsg(conn, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        match usize::try_from(got) {
            Ok(got) => break got,
            Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(io::Error::last_os_error()),
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` with `msg.msg_controllen` bytes of well-formed headers;
    // CMSG_FIRSTHDR / CMSG_NXTHDR stay within them and return null at the end. Each SCM_RIGHTS
    // header's data holds (cmsg_len - CMSG_LEN(0)) / 4 descriptors the kernel just installed in this
    // process, which nothing else owns: each is taken exactly once.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let first = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(first.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("more sockets than one hand-over carries"));
    }
    Ok((got, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Listening sockets sent one way arrive as other descriptors for the same sockets, with their
    /// names, and still accept the connections queued before.
    #[test]
    fn test_offer_and_receive_carry_the_sockets() {
        let (old, new) = UnixStream::pair().expect("pair");
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = TcpListener::bind("[::1]:0").expect("bind6");
        let (la, lb) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        let queued = std::net::TcpStream::connect(la).expect("connect");
        offer(
            &old,
            &[
                (a.as_raw_fd(), "web", Kind::Tcp(la)),
                (b.as_raw_fd(), "api two", Kind::Tcp(lb)),
            ],
        )
        .expect("offer");
        drop(a); // the sender lets go; the socket lives on in the message
        let (passed, _) = receive(&new).expect("receive");
        let got: Vec<(&str, SocketAddr)> =
            passed.iter().map(|p| (p.name.as_str(), p.local)).collect();
        assert_eq!(got, vec![("web", la), ("api two", lb)]);
        let mut listener = passed.into_iter().next().expect("first").socket;
        let accepted = accept_within(&mut listener);
        assert_eq!(
            accepted.peer_addr().expect("peer"),
            queued.local_addr().expect("local")
        );
    }

    fn accept_within(listener: &mut mio::net::TcpListener) -> mio::net::TcpStream {
        for _ in 0..500 {
            if let Ok((stream, _)) = listener.accept() {
                return stream;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the queued connection was not accepted through the received socket");
    }

    /// A descriptor that is not a listening socket, or a count that disagrees with the text, is refused.
    #[test]
    fn test_receive_checks_what_came() {
        let (old, new) = UnixStream::pair().expect("pair");
        let (x, _y) = UnixStream::pair().expect("pair");
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        offer(&old, &[(x.as_raw_fd(), "web", Kind::Tcp(addr))]).expect("offer");
        let err = receive(&new).expect_err("not a listener");
        assert!(err.contains("not a listening TCP socket"), "{err}");
        let text = format!("{HELLO}{addr} web\n{END}");
        assert_eq!(
            send_with_fds(old.as_raw_fd(), text.as_bytes(), &[]).ok(),
            Some(text.len())
        );
        let err = receive(&new).expect_err("no fds");
        assert!(err.contains("names 1 sockets but carries 0"), "{err}");
    }

    /// The metrics listener is taken out of the sockets for the routes, and kept only for this
    /// process's own `--metrics` address.
    #[test]
    fn test_take_metrics() {
        let (old, new) = UnixStream::pair().expect("pair");
        let web = TcpListener::bind("127.0.0.1:0").expect("bind");
        let metrics = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (lw, lm) = (
            web.local_addr().expect("w"),
            metrics.local_addr().expect("m"),
        );
        let offered = [
            (web.as_raw_fd(), "web", Kind::Tcp(lw)),
            (metrics.as_raw_fd(), METRICS_NAME, Kind::Tcp(lm)),
        ];
        offer(&old, &offered).expect("offer");
        offer(&old, &offered).expect("offer again");
        let (mut passed, _) = receive(&new).expect("receive");
        let taken = take_metrics(&mut passed, Some(lm)).map(|p| p.local);
        assert_eq!(taken, Some(lm));
        assert_eq!(passed.iter().map(|p| p.local).collect::<Vec<_>>(), vec![lw]);
        let (mut passed, _) = receive(&new).expect("receive");
        assert!(take_metrics(&mut passed, Some(lw)).is_none());
        assert_eq!(
            passed.len(),
            1,
            "another metrics address: the handed one is dropped"
        );
    }

    #[test]
    fn test_parse_rejects_other_versions() {
        assert!(parse("edgefwd-upgrade 2\nend\n").is_err());
        assert_eq!(parse(&format!("{HELLO}{END}")), Ok(vec![]));
        assert!(parse(&format!("{HELLO}nonsense\n{END}")).is_err());
    }

    /// A Unix listener goes as `unix NAME`, and arrives with its own address, still accepting the
    /// connection queued before; a descriptor offered as Unix that is not one is refused.
    #[test]
    fn test_offer_and_receive_carry_unix_listeners() {
        let (old, new) = UnixStream::pair().expect("pair");
        let path = std::env::temp_dir().join(format!("edgefwd-offer-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
        let lt = tcp.local_addr().expect("addr");
        let queued = UnixStream::connect(&path).expect("connect");
        offer(
            &old,
            &[
                (listener.as_raw_fd(), "web", Kind::Unix),
                (tcp.as_raw_fd(), "web", Kind::Tcp(lt)),
            ],
        )
        .expect("offer");
        drop(listener);
        let (passed, unix) = receive(&new).expect("receive");
        assert_eq!(passed.iter().map(|p| p.local).collect::<Vec<_>>(), vec![lt]);
        let [handed] = <[PassedUnix; 1]>::try_from(unix).expect("one Unix listener");
        assert_eq!(handed.local.as_pathname(), Some(path.as_path()));
        let mut accepted = None;
        for _ in 0..500 {
            if let Ok((stream, _)) = handed.socket.accept() {
                accepted = Some(stream);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let accepted = accepted.expect("the queued client is accepted through the handed socket");
        assert_eq!(
            accepted.peer_addr().expect("peer").as_pathname(),
            queued.local_addr().expect("local").as_pathname()
        );
        let _ = std::fs::remove_file(&path);

        offer(&old, &[(tcp.as_raw_fd(), "web", Kind::Unix)]).expect("offer");
        let err = receive(&new).expect_err("a TCP socket offered as Unix");
        assert!(err.contains("not a listening Unix stream socket"), "{err}");
    }
}
