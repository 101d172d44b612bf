//! Binary upgrade, the old process's side: reactor 0 serves `--upgrade-socket` ([`crate::service::upgrade`]
//! has the exchange). A successor that connects is offered reactor 0's listening sockets (the other
//! reactors of `--threads` hold duplicates of the same TCP sockets, and only reactor 0 has Unix ones, so
//! these are all of them), and the `--metrics` and `--admin` listeners, which the successor serves once
//! the old one stops (the old one closes its admin connections in progress at the hand-over); when it
//! says
//! `take-over`, this process closes the upgrade socket and the connection, and stops accepting: it sends
//! itself SIGTERM (and marks it as the hand-over's, so that the shutdown log says why), so that every reactor deregisters and closes its listener descriptors and drains its
//! pairs under `--shutdown-timeout`, exactly as on a signal from outside. Closing its descriptors closes
//! no socket: the successor holds them.
//!
//! A Unix listener's socket file stays where it is through all this: the old process lets go of it at
//! the hand-over (it does not remove it when it exits), and the successor, which took the listener
//! instead of binding the path ([`adopt_unix`]), owns it from `take-over` on ([`Reactor::own_socket_files`]).
//!
//! Bounded like the metrics port: one successor at a time (a second connection is closed at once), for
//! at most [`SUCCESSOR_TIMEOUT`], and at most [`MAX_REPLY`] bytes read from it. A successor that goes
//! away, or says anything else, is dropped and this process keeps serving.
//!
//! **Out of descriptors.** The upgrade socket is edge-triggered like every listener: an `accept` that
//! fails with EMFILE/ENFILE leaves the successor queued with no new edge to come. So the failure pauses
//! accepting as a pair's accept does (`pause_accepting`: 100 ms, spare pipes shed, one rate-limited
//! warning), and the upgrade socket is accepted from again when that pause ends; any other error is
//! retried after [`ACCEPT_RETRY`]. The successor waits in the backlog meanwhile (it gives up after its
//! own 30 s step timeout), and never makes this loop spin.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
#[cfg(target_os = "linux")]
use std::os::linux::net::SocketAddrExt;
use std::path::Path;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::{UnixListener, UnixStream};
use mio::Interest;

use super::scrape::MetricsServer;
use super::Reactor;
use crate::config::unix::UnixAddr;
use crate::datapath::net;
use crate::datapath::unix::{self, SocketFile};
use crate::service::activation::Passed;
use crate::service::upgrade::{self, Kind, Offered, PassedUnix, TAKE_OVER};
use crate::throttle::Throttle;
use crate::token;
use crate::upstream::route::UnixListening;

/// How long a successor may take between connecting and `take-over` (building its reactors, in a debug
/// build on a loaded machine included).
const SUCCESSOR_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections the upgrade socket queues: one successor at a time is served.
const UPGRADE_BACKLOG: i32 = 4;
/// Most bytes read from a successor: `take-over\n` and no more.
const MAX_REPLY: usize = TAKE_OVER.len();
/// How long the upgrade socket waits after an accept error that is not fd exhaustion (which waits
/// out the reactor's accept pause instead).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// At most one warning per this long about accept errors other than fd exhaustion.
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// The `--upgrade-socket` listener and the successor being offered the sockets, if one is.
#[derive(Debug)]
pub(super) struct UpgradeServer {
    listener: UnixListener,
    /// Removes the socket file at exit if it is still ours; `None` once a successor took the path over.
    file: Option<SocketFile>,
    successor: Option<Successor>,
    /// An accept failed: the listener is still ready (no new edge will come), and is accepted from
    /// again then.
    retry_at: Option<Instant>,
    accept_warning: Throttle,
}

#[derive(Debug)]
struct Successor {
    conn: UnixStream,
    deadline: Instant,
    said: Vec<u8>,
}

impl UpgradeServer {
    /// When the pending successor runs out of time, or a failed accept is retried.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let successor = self.successor.as_ref().map(|s| s.deadline);
        successor.into_iter().chain(self.retry_at).min()
    }
}

/// The Unix listeners a predecessor handed over, as listeners at their own addresses, for the routes
/// listening there to take instead of binding (`insert_route`'s spares). One whose address is
/// neither a path nor an abstract name cannot be asked for: it is closed.
pub(super) fn adopt_unix(handed: Vec<PassedUnix>) -> Vec<UnixListening> {
    handed
        .into_iter()
        .filter_map(|passed| match unix_addr(&passed.local) {
            Some(addr) => Some(UnixListening::handed(passed.socket, addr)),
            None => {
                warn!("upgrade: a handed-over Unix listener has no address; closed");
                None
            }
        })
        .collect()
}

/// The listen address a Unix socket is bound to.
fn unix_addr(local: &std::os::unix::net::SocketAddr) -> Option<UnixAddr> {
    if let Some(path) = local.as_pathname() {
        return Some(UnixAddr::Path(path.to_path_buf()));
    }
    #[cfg(target_os = "linux")]
    if let Some(name) = local.as_abstract_name() {
        return Some(UnixAddr::Abstract(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    None
}

/// Handed-over Unix listeners no route listens at any more (the successor's configuration dropped
/// them): closed, and their files left in place, since until `take-over` the predecessor serves them.
pub(super) fn close_unwanted(left: Vec<UnixListening>) {
    for listener in left {
        warn!(
            "upgrade: no route listens on {} any more: the handed-over listener is closed",
            listener.addr
        );
    }
}

impl Reactor {
    /// Serves `--upgrade-socket` at `path` from this reactor (reactor 0).
    pub fn serve_upgrades(&mut self, path: &Path) -> Result<(), String> {
        // Mode 0600 is set between bind and listen, and a stale file is replaced, a live one refused,
        // as for any Unix listener.
        let addr = UnixAddr::Path(path.to_path_buf());
        let (mut listener, file) = unix::bind(&addr, 0o600, UPGRADE_BACKLOG)
            .map_err(|err| format!("--upgrade-socket: {err}"))?;
        self.poll
            .registry()
            .register(&mut listener, token::UPGRADE, Interest::READABLE)
            .map_err(|err| format!("--upgrade-socket {}: {err}", path.display()))?;
        info!("upgrade socket on {}", path.display());
        self.upgrade = Some(UpgradeServer {
            listener,
            file,
            successor: None,
            retry_at: None,
            accept_warning: Throttle::new(ACCEPT_WARNING_INTERVAL),
        });
        Ok(())
    }

    /// The predecessor let go (`take-over` done): the socket files of the Unix listeners it handed
    /// over are this process's now, removed at its exit (or left to its own successor).
    pub fn own_socket_files(&mut self) {
        for (_, route) in self.routes.iter_mut() {
            for listener in &mut route.unix_listeners {
                if let Err(err) = listener.own_file() {
                    warn!("upgrade: {err}; it stays when this process exits");
                }
            }
        }
        if let (Some(admin), Some(addr)) = (self.admin.as_mut(), self.config.admin.as_ref()) {
            if let Err(err) = admin.own_file(addr) {
                warn!("upgrade: {err}; it stays when this process exits");
            }
        }
    }

    /// Serves `--metrics` on the listener a predecessor handed over (see
    /// [`upgrade::take_metrics`]) instead of binding it, which would fail while the predecessor drains:
    /// built without `metrics`, this reactor (reactor 0) takes it now, and its address becomes the
    /// configuration's again.
    pub fn adopt_metrics(&mut self, handed: Passed) -> Result<(), String> {
        let addr = handed.local;
        let server = MetricsServer::serve(handed.socket, self.poll.registry())
            .map_err(|err| format!("cannot serve metrics on {addr}: {err}"))?;
        self.metrics_server = Some(server);
        self.config.metrics = Some(addr);
        Ok(())
    }

    /// Accepts until WouldBlock: the first connection is offered the sockets, any other is closed. On
    /// an error the listener is left ready and accepted from again later (see the module doc).
    pub(super) fn on_upgrade_listener(&mut self) {
        loop {
            if self.accept_paused_until.is_some() {
                // Out of fds: the pause's end retries (`upgrade_due`).
                if let Some(server) = self.upgrade.as_mut() {
                    server.retry_at = self.accept_paused_until;
                }
                return;
            }
            let Some(server) = self.upgrade.as_mut() else {
                return;
            };
            server.retry_at = None;
            match server.listener.accept() {
                Ok((conn, _)) => self.offer_to(conn),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if net::is_passing_accept_error(&err) => {}
                Err(err) if net::is_resource_exhaustion(&err) => {
                    // The loop's first check sets the retry for the pause's end.
                    self.pause_accepting(&err);
                }
                Err(err) => {
                    let now = self.now;
                    if let Some(suppressed) = server.accept_warning.allow(now) {
                        warn!(
                            "upgrade socket: accept failed: {err}; retrying in {}ms ({suppressed} similar warnings suppressed)",
                            ACCEPT_RETRY.as_millis()
                        );
                    }
                    server.retry_at = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Sends a new successor the offer, and waits for its word.
    fn offer_to(&mut self, mut conn: UnixStream) {
        let busy = self.drain.is_some();
        let Some(server) = self.upgrade.as_mut() else {
            return;
        };
        if busy || server.successor.is_some() {
            warn!(
                "upgrade socket: a successor connected while {}; closed it",
                if busy {
                    "this process is shutting down"
                } else {
                    "another one is taking over"
                }
            );
            return;
        }
        let metrics = self.metrics_server.as_ref().and_then(|server| {
            let listener = server.listener();
            let local = listener.local_addr().ok()?;
            Some((
                listener.as_raw_fd(),
                upgrade::METRICS_NAME,
                Kind::Tcp(local),
            ))
        });
        let admin = self
            .admin
            .as_ref()
            .and_then(|server| server.offered())
            .map(|(fd, kind)| (fd, upgrade::ADMIN_NAME, kind));
        let offered: Vec<Offered> = self
            .routes
            .iter()
            .flat_map(|(_, route)| {
                let name = route.config.name.as_str();
                let tcp = route
                    .listeners
                    .iter()
                    .map(move |l| (l.socket.as_raw_fd(), name, Kind::Tcp(l.local)));
                let unix = route
                    .unix_listeners
                    .iter()
                    .map(move |l| (l.socket.as_raw_fd(), name, Kind::Unix));
                tcp.chain(unix)
            })
            .chain(metrics)
            .chain(admin)
            .collect();
        if let Err(err) = upgrade::offer(&conn, &offered) {
            warn!("upgrade socket: cannot offer the listening sockets: {err}");
            return;
        }
        if let Err(err) =
            self.poll
                .registry()
                .register(&mut conn, token::SUCCESSOR, Interest::READABLE)
        {
            warn!("upgrade socket: cannot wait for the successor: {err}");
            return;
        }
        info!(
            "upgrade: offered {} listening sockets to a successor; still serving until it takes over",
            offered.len()
        );
        server.successor = Some(Successor {
            conn,
            deadline: self.now + SUCCESSOR_TIMEOUT,
            said: Vec::new(),
        });
    }

    /// Reads the successor's word: `take-over`, or the end of an upgrade that failed.
    pub(super) fn on_successor_event(&mut self) {
        let Some(successor) = self.upgrade.as_mut().and_then(|s| s.successor.as_mut()) else {
            return;
        };
        let mut buf = [0u8; MAX_REPLY];
        loop {
            let room = MAX_REPLY - successor.said.len();
            match successor.conn.read(&mut buf[..room.max(1)]) {
                Ok(0) => return self.drop_successor("went away before taking over"),
                Ok(n) => {
                    successor.said.extend_from_slice(&buf[..n]);
                    if successor.said == TAKE_OVER {
                        return self.hand_over();
                    }
                    if !TAKE_OVER.starts_with(&successor.said) {
                        return self.drop_successor("said something other than take-over");
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.drop_successor("went away before taking over"),
            }
        }
    }

    /// The upgrade socket's timers: a successor past [`SUCCESSOR_TIMEOUT`] is dropped; an accept that
    /// failed is tried again.
    pub(super) fn upgrade_due(&mut self) {
        let Some(server) = self.upgrade.as_ref() else {
            return;
        };
        let now = self.now;
        let expired = server.successor.as_ref().is_some_and(|s| s.deadline <= now);
        let retry = server.retry_at.is_some_and(|at| at <= now);
        if expired {
            self.drop_successor("did not take over in time");
        }
        if retry {
            self.on_upgrade_listener();
        }
    }

    fn drop_successor(&mut self, why: &str) {
        let registry = self.poll.registry();
        if let Some(mut successor) = self.upgrade.as_mut().and_then(|s| s.successor.take()) {
            let _ = registry.deregister(&mut successor.conn);
            warn!("upgrade: the successor {why}; still serving");
        }
    }

    /// The successor accepts on the sockets: let go of the upgrade socket (closed before the
    /// connection, whose end tells the successor the path is free), then stop accepting and drain.
    fn hand_over(&mut self) {
        let Some(mut server) = self.upgrade.take() else {
            return;
        };
        // The path is the successor's now: it binds there as soon as the connection ends.
        if let Some(file) = server.file.take() {
            file.keep();
        }
        // So are the Unix listeners' files: the successor accepts on the same sockets.
        for (_, route) in self.routes.iter_mut() {
            for listener in &mut route.unix_listeners {
                listener.keep_file();
            }
        }
        let registry = self.poll.registry();
        let _ = registry.deregister(&mut server.listener);
        let successor = server.successor.take();
        drop(server);
        if let Some(mut successor) = successor {
            let _ = registry.deregister(&mut successor.conn);
        }
        // The successor serves the metrics port from now on (it took the listener, see `main`).
        if let Some(metrics) = self.metrics_server.take() {
            metrics.close(registry);
        }
        // And the admin API: new admin connections reach the successor.
        if let Some(admin) = self.admin.take() {
            admin.hand_over(registry);
        }
        info!("upgrade: the successor took over the listening sockets; stopping");
        (self.siblings.stopped.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .hand_over();
        // Every reactor stops accepting on SIGTERM: signal-hook wakes each one's signal pipe.
        if let Err(err) = signal_hook::low_level::raise(signal_hook::consts::SIGTERM) {
            warn!("upgrade: cannot signal this process to stop accepting: {err}");
        }
    }
}
