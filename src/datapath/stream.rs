//! The socket seam: what the data path and a pair need of a socket, as two small traits, so the code
//! that drives sockets can be unit-tested without any.
//!
//! - [`Stream`]: what one direction's pump needs ([`crate::datapath::pump`]): read, write, pass a FIN
//!   on with `shutdown(Write)`, and a raw fd for `--splice`.
//! - [`Socket`]: what a pair needs besides ([`crate::session::pair`]): peek at the client while its
//!   upstream connects (is a FIN a half-close or a client that left?), ask a connecting socket where its
//!   connect stands, and the address the client connected to (a `--send-proxy` header's destination).
//!
//! Both are implemented for `mio::net::TcpStream`, the only socket the reactor runs. Registering a socket
//! with `Poll` and the close-with-RST option stay the reactor's, on the concrete type: a pair never
//! touches `Poll`. In unit tests, `script::Scripted` stands in for a socket: each read and write returns
//! what the test scripted.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;

use crate::datapath::net::{self, ConnectState};

#[cfg(test)]
pub(crate) mod script;

/// A connected, non-blocking byte stream whose write half can be shut down (TCP; Unix sockets in tests).
/// `AsRawFd` is for splicing only: a stream that is not a kernel socket never meets a splicing direction.
pub(crate) trait Stream: Read + Write + AsRawFd {
    fn shutdown_write(&self) -> io::Result<()>;
}

/// A [`Stream`] that is one end of a TCP connection, as a pair sees it.
pub(crate) trait Socket: Stream {
    /// Reads without consuming (`MSG_PEEK`): `Ok(0)` is a FIN with nothing before it.
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Where a connect started on this socket stands ([`net::connect_result`]).
    fn connect_result(&self) -> ConnectState;
    /// The local address: for an accepted socket, the one the client connected to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Stream for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Socket for TcpStream {
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::peek(self, buf)
    }

    fn connect_result(&self) -> ConnectState {
        net::connect_result(self)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self)
    }
}

#[cfg(test)]
impl Stream for mio::net::UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}
