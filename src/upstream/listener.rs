//! A route's listening sockets: TCP (`Listener`, shared by every `--threads` reactor under its own
//! descriptor) and Unix stream (`UnixListening`, reactor 0's alone), each with the edge-triggered
//! `ready` bit the accept phase drains to WouldBlock.

use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpListener;

use crate::config::unix::UnixAddr;
use crate::config::RouteConfig;
use crate::datapath::net;
use crate::datapath::unix::{self, SocketFile};
use crate::wire::greeting::Rules;

/// A bound listening socket.
#[derive(Debug)]
pub struct Listener {
    pub(crate) socket: TcpListener,
    /// The address the config asked for (port 0 stays 0 here): what a reload matches on.
    pub(crate) requested: SocketAddr,
    /// The address actually bound.
    pub(crate) local: SocketAddr,
    /// An edge arrived that no accept has drained to WouldBlock yet.
    pub(crate) ready: bool,
    /// What its clients send first when that is not its route's: a ClientHello, on a listener of SNI
    /// routing (`upstream::route::sni_rules`; set by the reactor from the configuration in force).
    pub(crate) greeting: Option<Arc<Rules>>,
}

impl Listener {
    /// Binds `addr` with the route's backlog and TCP_NODELAY. The error names the address (and says
    /// "Address already in use" when another socket, of this process or another, listens there).
    pub(crate) fn bind(addr: SocketAddr, route: &RouteConfig) -> Result<Listener, String> {
        let socket = net::bind_listener(addr, route.backlog, route.nodelay)
            .map_err(|err| format!("cannot listen on {addr}: {err}"))?;
        Listener::adopt(addr, socket)
    }

    /// A listening socket bound for `requested`, here or by another reactor ([`net::share_listener`]).
    pub(crate) fn adopt(requested: SocketAddr, socket: TcpListener) -> Result<Listener, String> {
        let local = socket
            .local_addr()
            .map_err(|err| format!("cannot read the address of listener {requested}: {err}"))?;
        Ok(Listener {
            socket,
            requested,
            local,
            ready: false,
            greeting: None,
        })
    }

    /// The same listening socket under another descriptor, for a `--threads` sibling reactor
    /// ([`net::share_listener`]): it remembers the same requested and bound addresses, so a reload
    /// matches it as it matches this one.
    pub(crate) fn share(&self) -> Result<Listener, String> {
        let socket = net::share_listener(&self.socket)
            .map_err(|err| format!("cannot share listener {}: {err}", self.local))?;
        Listener::adopt(self.requested, socket)
    }
}

/// A bound Unix stream listener (`unix:/path` or `unix:@name`). Only the first reactor binds and
/// accepts on these (docs/unix-sockets.md): `--threads` siblings accept TCP only.
#[derive(Debug)]
pub(crate) struct UnixListening {
    pub(crate) socket: mio::net::UnixListener,
    pub(crate) addr: UnixAddr,
    /// An edge arrived that no accept has drained to WouldBlock yet.
    pub(crate) ready: bool,
    /// Removes the socket file when the listener goes (declared after `socket`: closed first). `None`
    /// for an abstract name, and for a listener a predecessor handed over until the hand-over is done
    /// ([`UnixListening::own_file`]).
    file: Option<SocketFile>,
}

impl UnixListening {
    /// Binds `addr` with the route's `unix_mode` and backlog ([`unix::bind`]).
    pub(crate) fn bind(addr: &UnixAddr, route: &RouteConfig) -> Result<UnixListening, String> {
        let (socket, file) = unix::bind(addr, route.unix_mode, route.backlog)?;
        Ok(UnixListening {
            socket,
            addr: addr.clone(),
            ready: false,
            file,
        })
    }

    /// A listener a predecessor bound at `addr` and handed over (binary upgrade): its file is not
    /// this process's to remove until the predecessor has let go ([`UnixListening::own_file`]).
    pub(crate) fn handed(socket: mio::net::UnixListener, addr: UnixAddr) -> UnixListening {
        UnixListening {
            socket,
            addr,
            ready: false,
            file: None,
        }
    }

    /// The predecessor let go: the socket file at this handed-over listener's path is this process's
    /// now, removed when the listener goes. A listener with its file already, or an abstract one, is
    /// left as it is.
    pub(crate) fn own_file(&mut self) -> Result<(), String> {
        if let (None, UnixAddr::Path(path)) = (&self.file, &self.addr) {
            let file = SocketFile::created(path)
                .map_err(|err| format!("cannot own the socket file {}: {err}", path.display()))?;
            self.file = Some(file);
        }
        Ok(())
    }

    /// A successor took this listener over: its file stays when the listener goes.
    pub(crate) fn keep_file(&mut self) {
        if let Some(file) = self.file.take() {
            file.keep();
        }
    }
}
