//! Socket activation: listening sockets handed over by the service manager instead of bound here.
//!
//! systemd (a `.socket` unit, or `systemd-socket-activate`) binds the addresses itself, then starts the
//! service with the sockets as descriptors 3, 4, ... and three variables (`sd_listen_fds(3)`):
//! `LISTEN_PID` (the sockets are for this process only: a child that inherited the variables must not
//! take them), `LISTEN_FDS` (how many) and `LISTEN_FDNAMES` (colon-separated, `FileDescriptorName=`,
//! which defaults to the socket unit's name). The manager keeps its own copy of each socket, so clients
//! queue in its backlog while the service restarts: none is refused.
//!
//! Each socket goes to a route listen address ([`plan`]; the reactor builds the listeners): to the
//! route whose `name` is the socket's name (at the listen address equal to the socket's bound address,
//! else at the route's first address still free), or else to the listen address equal to its bound
//! address. A socket that matches no route is a start error: it was meant for something, and accepting
//! on it under a guess, or leaving its clients queued forever, would both be wrong. A listen address no
//! socket matched is bound as usual, as a reload binds a new address: a `.socket` unit may carry only
//! the privileged ports.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use mio::net::TcpListener;
use socket2::{Socket, Type};

/// The environment variables of socket activation, unset once read so that nothing edgefwd starts
/// takes them for its own.
pub(super) const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The name a socket has when `LISTEN_FDNAMES` is not set, as `sd_listen_fds_with_names(3)` says.
const UNNAMED: &str = "unknown";

/// One socket handed over.
#[derive(Debug)]
pub struct Passed {
    pub(crate) socket: TcpListener,
    /// Its `LISTEN_FDNAMES` entry.
    pub(crate) name: String,
    /// The address it is bound to.
    pub(crate) local: SocketAddr,
    /// The descriptor it came as, for messages.
    pub(crate) fd: RawFd,
    /// It came from the process this one upgrades (`service::upgrade`), not from the service manager.
    pub(crate) handed_over: bool,
}

/// The sockets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` (as read from the environment) hand to
/// process `pid`: none when `LISTEN_FDS` is unset or `LISTEN_PID` names another process.
///
/// Call once, before any thread starts: it takes ownership of descriptors 3.. (and the caller then
/// unsets the variables, so no second call can take them again).
pub(super) fn take(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
    pid: u32,
) -> Result<Vec<Passed>, String> {
    let Some(count) = listen_fds else {
        return Ok(Vec::new());
    };
    if listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) != Some(pid) {
        return Ok(Vec::new());
    }
    let count: RawFd = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=RawFd::MAX - FIRST_FD).contains(n))
        .ok_or_else(|| format!("LISTEN_FDS={count}: not a number of descriptors"))?;
    let names: Vec<String> = match names {
        Some(names) => names.split(':').map(String::from).collect(),
        None => vec![UNNAMED.to_string(); count as usize],
    };
    if names.len() != count as usize {
        return Err(format!(
            "LISTEN_FDNAMES has {} names for LISTEN_FDS={count} sockets",
            names.len()
        ));
    }
    (FIRST_FD..)
        .zip(names)
        .map(|(fd, name)| adopt(fd, name))
        .collect()
}

/// Takes descriptor `fd` as a listening TCP socket: non-blocking (systemd passes them blocking unless
/// `NonBlocking=yes`) and close-on-exec.
fn adopt(fd: RawFd, name: String) -> Result<Passed, String> {
    let what = format!("socket-activation fd {fd} (name {name:?})");
    // SAFETY: F_GETFD only reads the descriptor's flags; on a number that is not open it fails with
    // EBADF and touches nothing.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("{what}: not an open descriptor"));
    }
    // SAFETY: the descriptor is open (checked above) and, LISTEN_PID being ours, was handed to this
    // process to own: nothing else in it uses descriptors it did not open, and `take` runs once.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    listening(socket, name, &what, false)
}

/// Takes an owned descriptor as a listening TCP socket, non-blocking and close-on-exec; `what` names it
/// in errors. Shared with the sockets a predecessor hands over (`service::upgrade`: `handed_over`).
pub(super) fn listening(
    socket: OwnedFd,
    name: String,
    what: &str,
    handed_over: bool,
) -> Result<Passed, String> {
    let fd = socket.as_raw_fd();
    let socket = Socket::from(socket);
    let stream = socket.r#type().is_ok_and(|t| t == Type::STREAM);
    let listening = socket.is_listener().unwrap_or(false);
    let local = socket.local_addr().ok().and_then(|addr| addr.as_socket());
    let (true, true, Some(local)) = (stream, listening, local) else {
        return Err(format!("{what}: not a listening TCP socket"));
    };
    socket
        .set_nonblocking(true)
        .and_then(|()| socket.set_cloexec(true))
        .map_err(|err| format!("{what}: {err}"))?;
    Ok(Passed {
        socket: TcpListener::from_std(socket.into()),
        name,
        local,
        fd,
        handed_over,
    })
}

/// Which passed socket (by index in `passed`: (name, bound address)) serves each listen address of each
/// route (`routes`: (name, listen addresses)); `Err(i)` when socket `i` matches none. By name first,
/// each socket at the route's address equal to its own if free, else at the route's first free one;
/// then the others by address.
pub(crate) fn plan(
    passed: &[(&str, SocketAddr)],
    routes: &[(&str, &[SocketAddr])],
) -> Result<Vec<Vec<Option<usize>>>, usize> {
    let mut slots: Vec<Vec<Option<usize>>> = routes
        .iter()
        .map(|(_, listen)| vec![None; listen.len()])
        .collect();
    let mut placed = vec![false; passed.len()];
    for (i, (name, local)) in passed.iter().enumerate() {
        let Some(r) = routes.iter().position(|(route, _)| route == name) else {
            continue;
        };
        let listen = routes[r].1;
        let free = |at: &usize| slots[r][*at].is_none();
        let same = (0..listen.len())
            .filter(free)
            .find(|&at| listen[at] == *local);
        if let Some(at) = same.or_else(|| (0..listen.len()).find(free)) {
            slots[r][at] = Some(i);
            placed[i] = true;
        }
    }
    for (i, (_, local)) in passed.iter().enumerate().filter(|(i, _)| !placed[*i]) {
        let at = routes.iter().enumerate().find_map(|(r, (_, listen))| {
            let at =
                (0..listen.len()).find(|&at| slots[r][at].is_none() && listen[at] == *local)?;
            Some((r, at))
        });
        let (r, at) = at.ok_or(i)?;
        slots[r][at] = Some(i);
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("addr")
    }

    #[test]
    fn test_plan_by_name_then_by_address() {
        let (a, b, c) = (addr("127.0.0.1:80"), addr("127.0.0.1:81"), addr("[::1]:82"));
        let web = [a, b];
        let api = [c];
        let routes = [("web", &web[..]), ("api", &api[..])];
        // "web" by name lands on its address 81; the unnamed one by address on api's 82.
        let passed = [("web", b), ("unknown", c)];
        assert_eq!(
            plan(&passed, &routes),
            Ok(vec![vec![None, Some(0)], vec![Some(1)]])
        );
        // A named socket bound elsewhere takes its route's first free address.
        let other = addr("127.0.0.1:9999");
        assert_eq!(
            plan(&[("api", other)], &routes),
            Ok(vec![vec![None, None], vec![Some(0)]])
        );
    }

    #[test]
    fn test_plan_rejects_a_socket_no_route_wants() {
        let web = [addr("127.0.0.1:80")];
        let routes = [("web", &web[..])];
        assert_eq!(plan(&[("nope", addr("127.0.0.1:81"))], &routes), Err(0));
        // Two sockets for one address: the second matches nothing left.
        let twice = [("web", addr("127.0.0.1:80")), ("x", addr("127.0.0.1:80"))];
        assert_eq!(plan(&twice, &routes), Err(1));
    }

    #[test]
    fn test_no_variables_no_sockets() {
        assert!(take(None, None, None, 1).expect("ok").is_empty());
        // For another process: not ours to take.
        assert!(take(Some("2"), Some("1"), None, 1).expect("ok").is_empty());
        assert!(take(None, Some("1"), None, 1).expect("ok").is_empty());
    }

    #[test]
    fn test_bad_variables_are_errors() {
        let err = take(Some("1"), Some("many"), None, 1).expect_err("bad count");
        assert!(err.contains("LISTEN_FDS=many"), "{err}");
        let err = take(Some("1"), Some("2"), Some("a"), 1).expect_err("bad names");
        assert!(err.contains("LISTEN_FDNAMES"), "{err}");
    }

    /// A descriptor that is not a listening TCP socket is refused; a listening one is taken, with its
    /// name and address.
    #[test]
    fn test_adopt_checks_the_descriptor() {
        use std::os::fd::IntoRawFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let err = adopt(a.into_raw_fd(), "x".into()).expect_err("unix stream");
        assert!(err.contains("not a listening TCP socket"), "{err}");
        let unlistened =
            socket2::Socket::new(socket2::Domain::IPV4, Type::STREAM, None).expect("socket");
        let err = adopt(unlistened.into_raw_fd(), "x".into()).expect_err("not listening");
        assert!(err.contains("not a listening TCP socket"), "{err}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = listener.local_addr().expect("addr");
        let passed = adopt(listener.into_raw_fd(), "web".into()).expect("listener");
        assert_eq!((passed.local, passed.name.as_str()), (local, "web"));
    }
}
