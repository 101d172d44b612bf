//! Datagrams in batches: `recvmmsg`/`sendmmsg` on Linux (one syscall for up to [`BATCH`] datagrams),
//! one `recv_from`/`send_to` per datagram elsewhere. Batching is the lever on CPU per datagram: a
//! forwarder's cost is its syscalls, not its copies.
//!
//! A [`Batch`] owns its buffers for good ([`BATCH`] x [`SLOT`] bytes, allocated once per route), so the
//! data path allocates nothing per datagram. Each slot holds the largest datagram a socket can give
//! (65,507 bytes of IPv4 payload, 65,527 of IPv6 without jumbograms), so nothing is ever truncated:
//! boundaries are exact, one datagram in, one datagram out.

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

/// Datagrams moved by one syscall at most.
pub(crate) const BATCH: usize = 16;
/// Bytes per datagram slot: above any UDP payload over IPv4 or IPv6 (without jumbograms).
pub(crate) const SLOT: usize = 65_536;

/// Received datagrams: `count` of them, each a slot's first `len` bytes, with its sender.
pub(crate) struct Batch {
    buffers: Box<[u8]>,
    lens: [usize; BATCH],
    peers: [Option<SocketAddr>; BATCH],
    count: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("count", &self.count).finish()
    }
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::new()
    }
}

impl Batch {
    pub(crate) fn new() -> Batch {
        Batch {
            buffers: vec![0; BATCH * SLOT].into_boxed_slice(),
            lens: [0; BATCH],
            peers: [None; BATCH],
            count: 0,
        }
    }

    /// Datagram `index` of the last receive and its sender (`None` if the kernel gave none, as on a
    /// connected socket some platforms do).
    pub(crate) fn get(&self, index: usize) -> (&[u8], Option<SocketAddr>) {
        let start = index * SLOT;
        let len = self.lens.get(index).copied().unwrap_or(0);
        let data = self.buffers.get(start..start + len).unwrap_or(&[]);
        (data, self.peers.get(index).copied().flatten())
    }

    /// Receives up to `limit` (at most [`BATCH`]) datagrams; `Ok(0)` never happens (an empty queue is
    /// WouldBlock).
    pub(crate) fn recv(&mut self, socket: &UdpSocket, limit: usize) -> io::Result<usize> {
        self.count = 0;
        let limit = limit.clamp(1, BATCH);
        self.count = sys::recv(
            socket,
            &mut self.buffers,
            &mut self.lens,
            &mut self.peers,
            limit,
        )?;
        Ok(self.count)
    }
}

/// Sends `datagrams` in as few syscalls as the platform allows, from `socket` to `to`: empty for the
/// connected peer, one address for all of them, or one address per datagram. Returns how many were
/// sent before an error, and the error if one stopped it.
pub(crate) fn send(
    socket: &UdpSocket,
    datagrams: &[&[u8]],
    to: &[SocketAddr],
) -> (usize, Option<io::Error>) {
    let mut sent = 0;
    while sent < datagrams.len() {
        let end = (sent + BATCH).min(datagrams.len());
        let dests = if to.len() > 1 {
            to.get(sent..end).unwrap_or(&[])
        } else {
            to
        };
        match sys::send(socket, &datagrams[sent..end], dests) {
            Ok(0) => return (sent, Some(io::ErrorKind::WriteZero.into())),
            Ok(count) => sent += count,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return (sent, Some(err)),
        }
    }
    (sent, None)
}

/// Where datagram `index` of a send goes (see [`send`]).
fn destination(to: &[SocketAddr], index: usize) -> Option<SocketAddr> {
    match to {
        [] => None,
        [all] => Some(*all),
        each => each.get(index).copied(),
    }
}

/// Replies waiting to leave by one socket, each for its own client: the replies of many sessions
/// found ready in one loop turn go out in one `sendmmsg` instead of one each. Copied in (a copy costs
/// far less than a syscall), flushed when full and at the end of every loop turn.
pub(crate) struct Outbox {
    buffers: Box<[u8]>,
    lens: [usize; BATCH],
    dests: [SocketAddr; BATCH],
    count: usize,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("count", &self.count)
            .finish()
    }
}

/// What a flush did: datagrams and bytes sent, datagrams dropped, and the error that dropped them.
#[derive(Debug, Default)]
pub(crate) struct Flushed {
    pub(crate) sent: u64,
    pub(crate) bytes: u64,
    pub(crate) dropped: u64,
    pub(crate) error: Option<io::Error>,
}

impl Outbox {
    pub(crate) fn new() -> Outbox {
        Outbox {
            buffers: vec![0; BATCH * SLOT].into_boxed_slice(),
            lens: [0; BATCH],
            dests: [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
            count: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Queues a copy of `datagram` for `to`; true when the outbox is full (flush it before the next).
    pub(crate) fn push(&mut self, datagram: &[u8], to: SocketAddr) -> bool {
        let index = self.count;
        let len = datagram.len().min(SLOT);
        if let Some(slot) = self.buffers.get_mut(index * SLOT..index * SLOT + len) {
            slot.copy_from_slice(&datagram[..len]);
            self.lens[index] = len;
            self.dests[index] = to;
            self.count += 1;
        }
        self.count >= BATCH
    }

    /// Sends what is queued from `socket`, each datagram to its client; whatever the socket refuses
    /// is dropped (never kept for later: UDP semantics, bounded memory).
    pub(crate) fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        let count = std::mem::take(&mut self.count);
        let mut datagrams: [&[u8]; BATCH] = [&[]; BATCH];
        for (index, datagram) in datagrams.iter_mut().enumerate().take(count) {
            *datagram = self
                .buffers
                .get(index * SLOT..index * SLOT + self.lens[index])
                .unwrap_or(&[]);
        }
        let (sent, error) = send(socket, &datagrams[..count], &self.dests[..count]);
        Flushed {
            sent: sent as u64,
            bytes: datagrams[..sent].iter().map(|d| d.len() as u64).sum(),
            dropped: (count - sent) as u64,
            error,
        }
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use mio::net::UdpSocket;

    use super::{destination, BATCH, SLOT};

    pub(super) fn recv(
        socket: &UdpSocket,
        buffers: &mut [u8],
        lens: &mut [usize; BATCH],
        peers: &mut [Option<SocketAddr>; BATCH],
        limit: usize,
    ) -> io::Result<usize> {
        // SAFETY: all-zero bytes are a valid value of these plain C structs (null pointers, zero
        // lengths); every pointer the kernel uses is set below before the call.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut messages: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (index, chunk) in buffers.chunks_exact_mut(SLOT).take(limit).enumerate() {
            iovecs[index] = libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: chunk.len(),
            };
            let header = &mut messages[index].msg_hdr;
            header.msg_name = (&mut names[index] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut iovecs[index];
            header.msg_iovlen = 1;
        }
        let limit = limit.min(buffers.len() / SLOT);
        // SAFETY: `messages[..limit]` each point at one live iovec over a distinct SLOT-byte chunk of
        // `buffers` and at a live sockaddr_storage with its true size; all of them outlive the call,
        // and the kernel writes only within those lengths. A null timeout means none.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                limit as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        let received = received as usize;
        for index in 0..received {
            lens[index] = messages[index].msg_len as usize;
            peers[index] = socket_addr(&names[index], messages[index].msg_hdr.msg_namelen);
        }
        Ok(received)
    }

    pub(super) fn send(
        socket: &UdpSocket,
        datagrams: &[&[u8]],
        to: &[SocketAddr],
    ) -> io::Result<usize> {
        let count = datagrams.len().min(BATCH);
        let names: [Option<socket2::SockAddr>; BATCH] = std::array::from_fn(|index| {
            destination(to, index)
                .filter(|_| index < count)
                .map(socket2::SockAddr::from)
        });
        // SAFETY: all-zero bytes are a valid value of these plain C structs (null pointers, zero
        // lengths); every pointer the kernel uses is set below before the call.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut messages: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (index, datagram) in datagrams.iter().take(count).enumerate() {
            iovecs[index] = libc::iovec {
                iov_base: datagram.as_ptr() as *mut libc::c_void,
                iov_len: datagram.len(),
            };
            let header = &mut messages[index].msg_hdr;
            if let Some(name) = names[index].as_ref() {
                header.msg_name = name.as_ptr() as *mut libc::c_void;
                header.msg_namelen = name.len();
            }
            header.msg_iov = &mut iovecs[index];
            header.msg_iovlen = 1;
        }
        // SAFETY: `messages[..count]` each point at one live iovec over a datagram borrowed for the
        // whole call (sendmmsg only reads through iov_base, despite its `*mut` type) and, when `to` is
        // given, at its SockAddr in `names`, alive until the end of this function, with its true length.
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }

    /// The address the kernel wrote into `storage` (`len` bytes of it).
    fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        match libc::c_int::from(storage.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family is AF_INET and the kernel wrote a whole sockaddr_in; a
                // sockaddr_storage is large and aligned enough for any sockaddr.
                let sin = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: the family is AF_INET6 and the kernel wrote a whole sockaddr_in6; a
                // sockaddr_storage is large and aligned enough for any sockaddr.
                let sin6 = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::net::SocketAddr;

    use mio::net::UdpSocket;

    use super::{BATCH, SLOT};

    pub(super) fn recv(
        socket: &UdpSocket,
        buffers: &mut [u8],
        lens: &mut [usize; BATCH],
        peers: &mut [Option<SocketAddr>; BATCH],
        limit: usize,
    ) -> io::Result<usize> {
        let mut count = 0;
        for chunk in buffers.chunks_exact_mut(SLOT).take(limit) {
            match socket.recv_from(chunk) {
                Ok((len, peer)) => {
                    lens[count] = len;
                    peers[count] = Some(peer);
                    count += 1;
                }
                Err(err) if count > 0 && err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err),
            }
        }
        Ok(count)
    }

    pub(super) fn send(
        socket: &UdpSocket,
        datagrams: &[&[u8]],
        to: &[SocketAddr],
    ) -> io::Result<usize> {
        let mut sent = 0;
        for (index, datagram) in datagrams.iter().enumerate() {
            let result = match super::destination(to, index) {
                Some(to) => socket.send_to(datagram, to),
                None => socket.send(datagram),
            };
            match result {
                Ok(_) => sent += 1,
                Err(err) if sent > 0 => {
                    let _ = err;
                    break;
                }
                Err(err) => return Err(err),
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        (a, b)
    }

    /// Waits (bounded) until `socket` has datagrams, then receives a batch.
    fn recv_some(batch: &mut Batch, socket: &UdpSocket) -> usize {
        for _ in 0..500 {
            match batch.recv(socket, BATCH) {
                Ok(count) => return count,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(err) => panic!("recv: {err}"),
            }
        }
        panic!("no datagram arrived");
    }

    /// sendmmsg with a destination, then recvmmsg: every datagram whole, in order, with its sender, the
    /// largest IPv4 payload included.
    #[test]
    fn test_batches_keep_boundaries_and_senders() {
        let (a, b) = pair();
        let to = b.local_addr().expect("addr");
        let big = vec![0xab_u8; 65_507];
        let datagrams: Vec<Vec<u8>> = (0..20u8)
            .map(|i| vec![i; usize::from(i) * 3])
            .chain([big.clone()])
            .collect();
        let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
        let (sent, error) = send(&a, &refs, &[to]);
        assert_eq!((sent, error.map(|e| e.kind())), (datagrams.len(), None));
        let mut batch = Batch::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < datagrams.len() {
            let count = recv_some(&mut batch, &b);
            assert!(count <= BATCH);
            for index in 0..count {
                let (data, peer) = batch.get(index);
                assert_eq!(peer, Some(a.local_addr().expect("addr")));
                got.push(data.to_vec());
            }
        }
        assert_eq!(got, datagrams);
    }

    /// On a connected socket `send` goes to the peer; an empty queue is WouldBlock, not zero.
    #[test]
    fn test_connected_send_and_empty_queue() {
        let (a, b) = pair();
        a.connect(b.local_addr().expect("addr")).expect("connect");
        let mut batch = Batch::new();
        let empty = batch.recv(&b, BATCH).map_err(|e| e.kind());
        assert_eq!(empty.err(), Some(io::ErrorKind::WouldBlock));
        let (sent, error) = send(&a, &[b"one", b"", b"three"], &[]);
        assert_eq!((sent, error.is_none()), (3, true));
        let mut got = Vec::new();
        while got.len() < 3 {
            let count = recv_some(&mut batch, &b);
            got.extend((0..count).map(|i| batch.get(i).0.to_vec()));
        }
        assert_eq!(got, vec![b"one".to_vec(), Vec::new(), b"three".to_vec()]);
    }

    /// An outbox sends each datagram to its own destination, in one flush, and reports what it sent.
    #[test]
    fn test_outbox_sends_each_to_its_own() {
        let (a, b) = pair();
        let c = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let (to_b, to_c) = (b.local_addr().expect("addr"), c.local_addr().expect("addr"));
        let mut outbox = Outbox::new();
        assert!(outbox.is_empty());
        for index in 0..BATCH {
            let to = if index % 2 == 0 { to_b } else { to_c };
            let full = outbox.push(&[index as u8; 10], to);
            assert_eq!(full, index == BATCH - 1);
        }
        let flushed = outbox.flush(&a);
        assert_eq!(
            (flushed.sent, flushed.bytes, flushed.dropped),
            (BATCH as u64, 10 * BATCH as u64, 0)
        );
        assert!(flushed.error.is_none() && outbox.is_empty());
        let mut batch = Batch::new();
        for (socket, parity) in [(&b, 0), (&c, 1)] {
            let mut got = Vec::new();
            while got.len() < BATCH / 2 {
                let count = recv_some(&mut batch, socket);
                got.extend((0..count).map(|i| batch.get(i).0[0]));
            }
            assert!(
                got.iter().all(|first| usize::from(*first) % 2 == parity),
                "{got:?}"
            );
        }
    }

    /// A connected socket whose peer has no listener gets the ICMP error back as ECONNREFUSED.
    #[test]
    fn test_refused_peer_is_reported() {
        let (a, b) = pair();
        let gone = b.local_addr().expect("addr");
        drop(b);
        a.connect(gone).expect("connect");
        let _ = send(&a, &[b"ping"], &[]);
        let mut batch = Batch::new();
        let mut refused = false;
        for _ in 0..500 {
            match batch.recv(&a, BATCH) {
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    refused = true;
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                other => panic!("unexpected {:?}", other.map_err(|e| e.kind())),
            }
        }
        assert!(refused);
    }
}
