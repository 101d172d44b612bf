//! The experiment's harness, for the tests: the four sockets of a forwarded connection on loopback,
//! byte patterns that show a lost or reordered chunk, and the kernel's own counters (`TCP_INFO`,
//! `SIOCOUTQ`) that say how many bytes a redirected direction holds inside the kernel.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use super::Offload;

/// The offload, or `None` with the reason printed when this process may not load BPF (not root) or
/// the kernel refuses: CI runs as root, so there these tests run.
pub(super) fn offload() -> Option<Offload> {
    match Offload::new(16) {
        Ok(offload) => Some(offload),
        Err(e) => {
            eprintln!("skipped: sockmap offload unavailable here ({e})");
            None
        }
    }
}

/// A client connected to a "forwarder" socket `front`, and the forwarder's `back` socket connected to
/// a `server`: the four sockets of a forwarded connection, all on loopback, blocking, with timeouts.
pub(super) struct Path {
    pub(super) client: TcpStream,
    pub(super) front: TcpStream,
    pub(super) back: TcpStream,
    pub(super) server: TcpStream,
}

impl Path {
    /// Hands the forwarder's two sockets to `offload`, as the reactor would once the pair is established.
    pub(super) fn hand_to(&self, offload: &Offload) {
        offload
            .insert_pair(self.front.as_fd(), self.back.as_fd())
            .expect("insert pair");
    }
}

pub(super) fn path() -> Path {
    let connect = || {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let near = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (far, _) = listener.accept().expect("accept");
        for s in [&near, &far] {
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s.set_write_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
        }
        (near, far)
    };
    let (client, front) = connect();
    let (back, server) = connect();
    Path {
        client,
        front,
        back,
        server,
    }
}

/// `len` bytes that differ from any shift of themselves over short distances, so a lost, repeated
/// or reordered chunk shows.
pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// Writes `data` into `to` on one thread while reading it all from `from` on this one.
pub(super) fn send_through(mut to: TcpStream, mut from: &TcpStream, data: &[u8]) -> Vec<u8> {
    let owned = data.to_vec();
    let writer = std::thread::spawn(move || {
        to.write_all(&owned).expect("write");
        to
    });
    let mut got = vec![0u8; data.len()];
    from.read_exact(&mut got).expect("read what was sent");
    writer.join().expect("writer thread");
    got
}

/// poll(2) for `events` on `socket`, for at most `within`; the revents seen.
pub(super) fn poll_for(
    socket: BorrowedFd<'_>,
    events: libc::c_short,
    within: Duration,
) -> libc::c_short {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one live pollfd, count 1.
    let n = unsafe { libc::poll(&mut fd, 1, within.as_millis() as libc::c_int) };
    assert!(n >= 0, "poll: {}", io::Error::last_os_error());
    fd.revents
}

/// The bytes a redirected direction holds inside the kernel, from `TCP_INFO` and `SIOCOUTQ`: what the
/// source socket received since the insert, less what reached the destination's send queue since.
/// `tcpi_bytes_received` counts a received FIN as one byte (it follows `rcv_nxt`), so once the FIN
/// has shown, one less.
pub(super) struct Flight {
    received: u64,
    queued: u64,
}

impl Flight {
    pub(super) fn start(src: &TcpStream, dst: &TcpStream) -> Flight {
        Flight {
            received: tcp_info_u64(src, TCPI_BYTES_RECEIVED),
            queued: tcp_info_u64(dst, TCPI_BYTES_ACKED) + outq(dst),
        }
    }

    pub(super) fn in_flight(&self, src: &TcpStream, dst: &TcpStream, fin_seen: bool) -> u64 {
        let received = tcp_info_u64(src, TCPI_BYTES_RECEIVED) - self.received - u64::from(fin_seen);
        let queued = tcp_info_u64(dst, TCPI_BYTES_ACKED) + outq(dst) - self.queued;
        received.saturating_sub(queued)
    }
}

/// Offsets in `struct tcp_info` (include/uapi/linux/tcp.h).
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;

fn tcp_info_u64(socket: &TcpStream, offset: usize) -> u64 {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a live 256-byte buffer.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(ret, 0, "TCP_INFO: {}", io::Error::last_os_error());
    assert!(len as usize >= offset + 8, "TCP_INFO too short: {len}");
    let mut field = [0u8; 8];
    field.copy_from_slice(&info[offset..offset + 8]);
    u64::from_ne_bytes(field)
}

/// Bytes in `socket`'s send queue (sent and unacknowledged, or not sent yet).
fn outq(socket: &TcpStream) -> u64 {
    let mut value: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one c_int into `value`.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut value) };
    assert_eq!(ret, 0, "SIOCOUTQ: {}", io::Error::last_os_error());
    value as u64
}

/// Writes `data` into `client` without blocking, until all of it went in or the socket has refused
/// for a second (the sender is held back); the bytes written.
pub(super) fn fill(client: &mut TcpStream, data: &[u8]) -> usize {
    client.set_nonblocking(true).expect("nonblocking");
    let mut total = 0;
    let mut refused_since = None;
    while total < data.len() {
        match client.write(&data[total..(total + 65536).min(data.len())]) {
            Ok(n) => {
                total += n;
                refused_since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let since = *refused_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    client.set_nonblocking(false).expect("blocking");
    total
}

/// Fixes every buffer on the client -> server way at 128 KiB (the kernel doubles it for its own
/// bookkeeping and turns off autotuning) and returns their sum: all TCP itself may hold that way.
pub(super) fn small_buffers(p: &Path) -> usize {
    let size = 128 * 1024;
    let client = socket2::SockRef::from(&p.client);
    let front = socket2::SockRef::from(&p.front);
    let back = socket2::SockRef::from(&p.back);
    let server = socket2::SockRef::from(&p.server);
    client.set_send_buffer_size(size).expect("SO_SNDBUF");
    front.set_recv_buffer_size(size).expect("SO_RCVBUF");
    back.set_send_buffer_size(size).expect("SO_SNDBUF");
    server.set_recv_buffer_size(size).expect("SO_RCVBUF");
    client.send_buffer_size().expect("SO_SNDBUF")
        + front.recv_buffer_size().expect("SO_RCVBUF")
        + back.send_buffer_size().expect("SO_SNDBUF")
        + server.recv_buffer_size().expect("SO_RCVBUF")
}
