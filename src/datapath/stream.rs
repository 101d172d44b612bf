//! The socket seam: what the data path and a pair need of a socket, as two small traits, so the code
//! that drives sockets can be unit-tested without any.
//!
//! - [`Stream`]: what one direction's pump needs ([`crate::datapath::pump`]): read, write, pass a FIN
//!   on with `shutdown(Write)`, and a raw fd for `--splice`.
//! - [`Socket`]: what a pair needs besides ([`crate::session::pair`]): peek at the client while its
//!   upstream connects (is a FIN a half-close or a client that left?), ask a connecting socket where its
//!   connect stands, and the address the client connected to (a `--send-proxy` header's destination).
//!
//! Both are implemented for `mio::net::TcpStream`, and for [`Conn`], the socket the reactor runs: TCP or
//! a Unix stream, each side of a pair on its own (a Unix client may have a TCP upstream). `Conn` is an
//! enum, not a trait object: a read or write is one predictable branch, inlined, with no dynamic
//! dispatch, and `Pair` stays one type (a generic pair per mix would make four types that the slab, the
//! connect path and the reactor would each have to name). Registering a socket with `Poll` and the
//! close-with-RST option stay the reactor's: a pair never touches `Poll`. In unit tests, `script::Scripted` stands in for a socket: each read and write returns
//! what the test scripted.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::config::UpstreamAddr;
use crate::datapath::net::{self, ConnectState, StreamOptions};
use crate::datapath::unix;

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

impl Stream for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// One side of a pair as the reactor runs it: a TCP stream or a Unix stream.
#[derive(Debug)]
pub(crate) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    /// Starts a non-blocking connect to an upstream (or a probe of one): TCP with `options`, or a Unix
    /// stream ([`unix::start_connect`], whose failures are immediate). `Err` is a connect that failed
    /// to start, which counts as a failed attempt.
    pub(crate) fn connect(addr: &UpstreamAddr, options: StreamOptions) -> io::Result<Conn> {
        match addr {
            UpstreamAddr::Inet(addr) => net::start_connect(*addr, options).map(Conn::Tcp),
            UpstreamAddr::Unix(addr) => unix::start_connect(addr).map(Conn::Unix),
        }
    }

    /// The TCP stream, for the options only TCP has (TCP_NODELAY, keepalive).
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Tcp(stream) => Some(stream),
            Conn::Unix(_) => None,
        }
    }

    /// [`net::set_reset_on_close`] on TCP. A Unix stream has no RST: its peer sees the close as an end
    /// of stream, or ECONNRESET when the close left bytes unread (Linux).
    pub(crate) fn reset_on_close(&self) {
        if let Some(stream) = self.tcp() {
            net::set_reset_on_close(stream);
        }
    }
}

/// Calls `$body` with `$stream` bound to the inner stream, whichever kind it is.
macro_rules! each {
    ($conn:expr, $stream:ident => $body:expr) => {
        match $conn {
            Conn::Tcp($stream) => $body,
            Conn::Unix($stream) => $body,
        }
    };
}

impl Read for Conn {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, stream => stream.read(buf))
    }

    #[inline]
    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        each!(self, stream => stream.read_vectored(bufs))
    }
}

impl Write for Conn {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        each!(self, stream => stream.write(buf))
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        each!(self, stream => stream.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        each!(self, stream => stream.flush())
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        each!(self, stream => stream.as_raw_fd())
    }
}

impl Stream for Conn {
    fn shutdown_write(&self) -> io::Result<()> {
        each!(self, stream => stream.shutdown_write())
    }
}

impl Socket for Conn {
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(stream) => stream.peek(buf),
            // mio's UnixStream has no peek: recv(2) with MSG_PEEK through socket2.
            Conn::Unix(stream) => {
                // SAFETY: `recv` writes initialised bytes only, into the first `n` it returns; a
                // `&mut [u8]` seen as `&mut [MaybeUninit<u8>]` is sound (u8 has no invalid values) as
                // long as nothing uninitialised is written back, which recv(2) never does.
                let uninit =
                    unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
                socket2::SockRef::from(stream).peek(uninit)
            }
        }
    }

    fn connect_result(&self) -> ConnectState {
        match self {
            Conn::Tcp(stream) => net::connect_result(stream),
            // As for TCP: a peer proves the connection (on Linux a Unix connect is settled inside
            // connect(2), [`unix::start_connect`]); without one, a pending error is its failure.
            Conn::Unix(stream) => match stream.peer_addr() {
                Ok(_) => ConnectState::Connected,
                Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                    match stream.take_error() {
                        Ok(Some(err)) | Err(err) => ConnectState::Failed(err),
                        Ok(None) => ConnectState::Pending,
                    }
                }
                Err(err) => ConnectState::Failed(err),
            },
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Conn::Tcp(stream) => stream.local_addr(),
            Conn::Unix(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a Unix socket has no IP address",
            )),
        }
    }
}

impl Source for Conn {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        each!(self, stream => stream.register(registry, token, interests))
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        each!(self, stream => stream.reregister(registry, token, interests))
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        each!(self, stream => stream.deregister(registry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair of non-blocking Unix streams, as `Conn`s.
    fn unix_pair() -> (Conn, Conn) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        (Conn::Unix(a), Conn::Unix(b))
    }

    #[test]
    fn test_unix_peek_does_not_consume() {
        let (mut a, b) = unix_pair();
        a.write_all(b"hello").expect("write");
        let mut peeked = [0u8; 16];
        assert_eq!(b.peek(&mut peeked).expect("peek"), 5);
        assert_eq!(&peeked[..5], b"hello");
        let mut b = b;
        let mut read = [0u8; 16];
        assert_eq!(
            b.read(&mut read).expect("read"),
            5,
            "the peeked bytes are still there"
        );
        assert_eq!(&read[..5], b"hello");
        a.shutdown_write().expect("shutdown");
        assert_eq!(b.peek(&mut peeked).expect("peek at the FIN"), 0);
    }

    #[test]
    fn test_unix_conn_has_no_ip_address_and_is_connected() {
        let (a, _b) = unix_pair();
        assert!(a.local_addr().is_err());
        assert!(matches!(a.connect_result(), ConnectState::Connected));
        assert!(a.tcp().is_none());
        a.reset_on_close();
    }
}
