//! A scripted in-memory [`Socket`] for unit tests: every read, write and peek returns what the test
//! queued (bytes, WouldBlock, EOF, ECONNRESET...), and the stream records what was written to it and
//! how often it was shut down, so a state machine's edge-triggered traps can be tested without a socket.
//!
//! [`Scripted`] is a handle: clones share one script, so a test keeps one while the code under test owns
//! another (as a pair owns its sockets), and queues steps or inspects writes at any time. What it does
//! with an empty queue is what a real non-blocking socket does with nothing queued: a read or a peek
//! says WouldBlock (until a scripted EOF, after which every read returns 0, as after a FIN); a write
//! says WouldBlock (the send buffer is full) unless room was scripted.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use crate::datapath::net::ConnectState;
use crate::datapath::stream::{Socket, Stream};

/// What the next read (or peek) finds.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// Bytes queued in the socket. A read smaller than them takes a prefix; the rest stays first.
    Data(Vec<u8>),
    /// The peer's FIN: this read and every later one return 0.
    Eof,
    /// An error (`WouldBlock` for "drained for now", `ConnectionReset` for an RST...); consumed by a read.
    Fail(io::ErrorKind),
}

/// What the next write finds.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Room for at most this many bytes in the send buffer; a bigger write is short.
    Room(usize),
    /// An error (`WouldBlock` for a full send buffer, `BrokenPipe`...).
    Fail(io::ErrorKind),
}

/// Where a connect started on the stream stands ([`Socket::connect_result`]), as a copyable script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connect {
    Pending,
    Connected,
    Failed(io::ErrorKind),
}

#[derive(Debug)]
struct Script {
    incoming: VecDeque<Incoming>,
    outgoing: VecDeque<Outgoing>,
    /// A read has returned the scripted EOF.
    eof: bool,
    connect: Connect,
    written: Vec<u8>,
    reads: usize,
    writes: usize,
    shutdowns: usize,
}

/// A scripted stream (see the module docs). Not a kernel socket: its fd is -1, so any syscall on it
/// fails with EBADF; directions over it must not splice (tests use `Splice::Off`).
#[derive(Debug, Clone)]
pub(crate) struct Scripted(Rc<RefCell<Script>>);

impl Default for Scripted {
    fn default() -> Scripted {
        Scripted(Rc::new(RefCell::new(Script {
            incoming: VecDeque::new(),
            outgoing: VecDeque::new(),
            eof: false,
            connect: Connect::Connected,
            written: Vec::new(),
            reads: 0,
            writes: 0,
            shutdowns: 0,
        })))
    }
}

impl Scripted {
    /// Queues what the next reads find.
    pub(crate) fn incoming(&self, steps: impl IntoIterator<Item = Incoming>) -> &Scripted {
        self.0.borrow_mut().incoming.extend(steps);
        self
    }

    /// Queues bytes for the next read.
    pub(crate) fn data(&self, bytes: &[u8]) -> &Scripted {
        self.incoming([Incoming::Data(bytes.to_vec())])
    }

    /// Queues what the next writes find.
    pub(crate) fn outgoing(&self, steps: impl IntoIterator<Item = Outgoing>) -> &Scripted {
        self.0.borrow_mut().outgoing.extend(steps);
        self
    }

    /// Queues room for `n` more bytes, taken by the next write.
    pub(crate) fn room(&self, n: usize) -> &Scripted {
        self.outgoing([Outgoing::Room(n)])
    }

    pub(crate) fn set_connect(&self, connect: Connect) {
        self.0.borrow_mut().connect = connect;
    }

    /// Everything written so far.
    pub(crate) fn written(&self) -> Vec<u8> {
        self.0.borrow().written.clone()
    }

    /// Read calls made (each `read` or `read_vectored`, whatever it returned).
    pub(crate) fn reads(&self) -> usize {
        self.0.borrow().reads
    }

    /// Write calls made.
    pub(crate) fn writes(&self) -> usize {
        self.0.borrow().writes
    }

    /// `shutdown_write` calls made.
    pub(crate) fn shutdowns(&self) -> usize {
        self.0.borrow().shutdowns
    }

    /// Fills `bufs` from the front of the script, consuming it unless `peek`.
    fn serve(&self, bufs: &mut [IoSliceMut<'_>], peek: bool) -> io::Result<usize> {
        let mut script = self.0.borrow_mut();
        if !peek {
            script.reads += 1;
        }
        let Some(step) = script.incoming.front_mut() else {
            return if script.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        };
        let data = match step {
            Incoming::Data(data) => data,
            Incoming::Eof => {
                if !peek {
                    script.incoming.pop_front();
                    script.eof = true;
                }
                return Ok(0);
            }
            Incoming::Fail(kind) => {
                let kind = *kind;
                if !peek {
                    script.incoming.pop_front();
                }
                return Err(kind.into());
            }
        };
        let mut n = 0;
        for buf in bufs.iter_mut() {
            let chunk = (data.len() - n).min(buf.len());
            buf[..chunk].copy_from_slice(&data[n..n + chunk]);
            n += chunk;
        }
        if !peek {
            data.drain(..n);
            if data.is_empty() {
                script.incoming.pop_front();
            }
        }
        Ok(n)
    }
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.serve(&mut [IoSliceMut::new(buf)], false)
    }

    /// Fills every slice, as `readv(2)` does: the default would fill only the first, a short read.
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.serve(bufs, false)
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Takes from every slice, as `writev(2)` does: the default would take only the first, a short write.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut script = self.0.borrow_mut();
        script.writes += 1;
        if script.shutdowns > 0 {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = match script.outgoing.pop_front() {
            None => return Err(io::ErrorKind::WouldBlock.into()),
            Some(Outgoing::Fail(kind)) => return Err(kind.into()),
            Some(Outgoing::Room(room)) => room,
        };
        let mut n = 0;
        for buf in bufs {
            let chunk = (room - n).min(buf.len());
            script.written.extend_from_slice(&buf[..chunk]);
            n += chunk;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Scripted {
    /// Not a file descriptor: a stream without a kernel socket has none to splice from or to.
    fn as_raw_fd(&self) -> RawFd {
        -1
    }
}

impl Stream for Scripted {
    fn shutdown_write(&self) -> io::Result<()> {
        self.0.borrow_mut().shutdowns += 1;
        Ok(())
    }
}

impl Socket for Scripted {
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.serve(&mut [IoSliceMut::new(buf)], true)
    }

    fn connect_result(&self) -> ConnectState {
        match self.0.borrow().connect {
            Connect::Pending => ConnectState::Pending,
            Connect::Connected => ConnectState::Connected,
            Connect::Failed(kind) => ConnectState::Failed(kind.into()),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 8080)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reads_follow_the_script_then_block() {
        let mut stream = Scripted::default();
        stream
            .data(b"hello")
            .incoming([Incoming::Fail(io::ErrorKind::ConnectionReset)]);
        let mut buf = [0u8; 3];
        assert_eq!(stream.read(&mut buf).expect("read"), 3);
        assert_eq!(&buf, b"hel");
        let mut peeked = [0u8; 8];
        assert_eq!(stream.peek(&mut peeked).expect("peek"), 2);
        assert_eq!(stream.read(&mut buf).expect("read"), 2);
        let err = stream.read(&mut buf).expect_err("scripted reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        let err = stream.read(&mut buf).expect_err("drained");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(stream.reads(), 4);
    }

    #[test]
    fn test_eof_is_sticky() {
        let mut stream = Scripted::default();
        stream.incoming([Incoming::Eof]);
        let mut buf = [0u8; 4];
        assert_eq!(stream.peek(&mut buf).expect("peek"), 0);
        assert_eq!(stream.read(&mut buf).expect("read"), 0);
        assert_eq!(stream.read(&mut buf).expect("read"), 0);
    }

    #[test]
    fn test_vectored_io_spans_slices_and_writes_honour_room() {
        let mut stream = Scripted::default();
        stream.data(b"abcdef");
        let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
        let n = stream
            .read_vectored(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)])
            .expect("read");
        assert_eq!((n, &a, &b[..2]), (6, b"abcd", &b"ef"[..]));
        stream.room(5);
        let n = stream
            .write_vectored(&[IoSlice::new(b"123"), IoSlice::new(b"456")])
            .expect("write");
        assert_eq!(n, 5);
        assert_eq!(stream.written(), b"12345");
        let err = stream.write(b"x").expect_err("full");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        stream.shutdown_write().expect("shutdown");
        stream.room(1);
        let err = stream.write(b"x").expect_err("shut");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(stream.shutdowns(), 1);
    }
}
