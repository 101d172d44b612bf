//! Binary upgrade, the old process's side: reactor 0 serves `--upgrade-socket` ([`crate::service::upgrade`]
//! has the exchange). A successor that connects is offered reactor 0's listening sockets (the other
//! reactors of `--threads` hold duplicates of the same sockets, so these are all of them), and the
//! `--metrics` listener, which the successor serves once the old one stops; when it says
//! `take-over`, this process closes the upgrade socket and the connection, and stops accepting: it sends
//! itself SIGTERM, so that every reactor deregisters and closes its listener descriptors and drains its
//! pairs under `--shutdown-timeout`, exactly as on a signal from outside. Closing its descriptors closes
//! no socket: the successor holds them.
//!
//! Bounded like the metrics port: one successor at a time (a second connection is closed at once), for
//! at most [`SUCCESSOR_TIMEOUT`], and at most [`MAX_REPLY`] bytes read from it. A successor that goes
//! away, or says anything else, is dropped and this process keeps serving.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::{UnixListener, UnixStream};
use mio::Interest;

use super::scrape::MetricsServer;
use super::Reactor;
use crate::config::unix::UnixAddr;
use crate::datapath::unix::{self, SocketFile};
use crate::service::activation::Passed;
use crate::service::upgrade::{self, Offered, TAKE_OVER};
use crate::token;

/// How long a successor may take between connecting and `take-over` (building its reactors, in a debug
/// build on a loaded machine included).
const SUCCESSOR_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections the upgrade socket queues: one successor at a time is served.
const UPGRADE_BACKLOG: i32 = 4;
/// Most bytes read from a successor: `take-over\n` and no more.
const MAX_REPLY: usize = TAKE_OVER.len();

/// The `--upgrade-socket` listener and the successor being offered the sockets, if one is.
#[derive(Debug)]
pub(super) struct UpgradeServer {
    listener: UnixListener,
    /// Removes the socket file at exit if it is still ours; `None` once a successor took the path over.
    file: Option<SocketFile>,
    successor: Option<Successor>,
}

#[derive(Debug)]
struct Successor {
    conn: UnixStream,
    deadline: Instant,
    said: Vec<u8>,
}

impl UpgradeServer {
    /// When the pending successor runs out of time.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.successor.as_ref().map(|s| s.deadline)
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
        });
        Ok(())
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

    /// Accepts until WouldBlock: the first connection is offered the sockets, any other is closed.
    pub(super) fn on_upgrade_listener(&mut self) {
        loop {
            let Some(server) = self.upgrade.as_mut() else {
                return;
            };
            match server.listener.accept() {
                Ok((conn, _)) => self.offer_to(conn),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    warn!("upgrade socket: accept failed: {err}");
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
            Some((listener.as_raw_fd(), upgrade::METRICS_NAME, local))
        });
        let offered: Vec<Offered> = self
            .routes
            .iter()
            .flat_map(|(_, route)| {
                route
                    .listeners
                    .iter()
                    .map(|l| (l.socket.as_raw_fd(), route.config.name.as_str(), l.local))
            })
            .chain(metrics)
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

    /// A successor past [`SUCCESSOR_TIMEOUT`] is dropped.
    pub(super) fn expire_successor(&mut self) {
        let due = self
            .upgrade
            .as_ref()
            .and_then(UpgradeServer::deadline)
            .is_some_and(|at| at <= self.now);
        if due {
            self.drop_successor("did not take over in time");
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
        info!("upgrade: the successor took over the listening sockets; stopping");
        // Every reactor stops accepting on SIGTERM: signal-hook wakes each one's signal pipe.
        if let Err(err) = signal_hook::low_level::raise(signal_hook::consts::SIGTERM) {
            warn!("upgrade: cannot signal this process to stop accepting: {err}");
        }
    }
}
