//! In-kernel forwarding with a sockmap (Linux only): once a pair is established, both sockets go into a
//! `BPF_MAP_TYPE_SOCKHASH` and a stream-verdict program sends every byte that arrives on one socket out
//! of the other, inside the kernel, without waking the reactor.
//!
//! Not wired into the reactor: on Linux 6.18 a slow reader does not bound the kernel's redirect queue
//! and a pair taken out of the map loses what was queued for it (the `kernel_finding_*` tests below;
//! docs/sockmap.md has the figures). The module, its tests and `benches/sockmap.rs` are the evidence,
//! and the starting point should a kernel bound that queue.
//!
//! # Why it is built this way
//! - **No BPF toolchain.** The program is twelve instruction slots, hand-encoded in `program.rs`,
//!   each one commented, and loaded with `bpf(2)` through `libc::syscall`. Nothing beyond crates.io is
//!   needed to build edgefwd.
//! - **Keyed by socket cookie, not by 4-tuple.** `SO_COOKIE` gives user space the same 64-bit number
//!   `bpf_get_socket_cookie(skb)` gives the program, for IPv4 and IPv6 alike, with no byte-order
//!   traps (`struct __sk_buff` holds `remote_port` in network order and `local_port` in host order, and
//!   IPv4 and IPv6 sockets fill different fields). The map holds, under each socket's
//!   cookie, its *peer*: `map[cookie(a)] = b`, `map[cookie(b)] = a`. A socket is attached to the
//!   program when it is stored as a value, so inserting that entry is what hands it to the kernel.
//! - **A peer not (yet) in the map passes, never drops.** `bpf_sk_redirect_hash` returns `SK_DROP`
//!   when the key is missing; the program returns `SK_PASS` whatever it returned, so a byte that cannot
//!   be redirected stays on its own socket for the process to read, instead of being acknowledged by
//!   TCP and lost.
//! - **Insertion is gated, so bytes keep their order.** Between the two map updates one socket is
//!   attached and its peer is not: a byte arriving then would be passed to the process while later
//!   bytes are redirected past it. [`Offload::insert_pair`] therefore first raises `SO_RCVLOWAT` on both
//!   sockets, so TCP does not call the (soon replaced) `sk_data_ready` for new data, inserts both entries,
//!   and then lowers `SO_RCVLOWAT` to 1: `tcp_set_rcvlowat` calls `tcp_data_ready` itself, so whatever
//!   queued meanwhile runs through the program, in order, with both peers present.
//!
//! The map and the program live as long as the [`Offload`]; a socket leaves the map when it is removed
//! (`remove_pair`, which only the tests use: the kernel finding below says a pair may leave only when
//! it is done) or closed (the kernel unhashes it).
//!
//! # Layout
//! Here the [`Offload`] (the map, a pair in and out) and its tests over real sockets; `program.rs` the
//! verdict program, instruction by instruction; `sys.rs` the `bpf(2)` and socket-option calls behind
//! safe functions (every `unsafe` of the offload is there); `harness.rs` the tests' loopback paths,
//! byte patterns and kernel counters.

#[cfg(test)]
mod harness;
mod program;
mod sys;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// `SO_RCVLOWAT` while a pair is being inserted: large enough that no new segment reaches it (TCP caps
/// it at half of `tcp_rmem[2]`), so `sk_data_ready` is not called until it is lowered again.
const GATE_RCVLOWAT: libc::c_int = libc::c_int::MAX;

/// Why the offload could not be set up or used.
#[derive(Debug)]
pub enum Error {
    /// A `bpf(2)` step failed: which one, the errno, and the verifier's log when the kernel wrote one.
    Bpf {
        step: &'static str,
        source: io::Error,
        log: String,
    },
    /// A socket option needed to key or gate a socket failed.
    Socket {
        step: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bpf { step, source, log } if log.is_empty() => write!(f, "bpf {step}: {source}"),
            Error::Bpf { step, source, log } => {
                write!(f, "bpf {step}: {source}; verifier log: {}", log.trim_end())
            }
            Error::Socket { step, source } => write!(f, "{step}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

/// The sockhash with its verdict program attached. Dropping it closes the map: the kernel then takes
/// every socket still in it out (they go back to ordinary sockets) and frees the program.
#[derive(Debug)]
pub struct Offload {
    map: OwnedFd,
}

impl Offload {
    /// Creates a sockhash for `pairs` pairs (two entries each), loads the verdict program and attaches it.
    /// Fails without privilege (CAP_BPF and CAP_NET_ADMIN, or root) or on a kernel without sockmap.
    pub fn new(pairs: u32) -> Result<Offload, Error> {
        let map = sys::create_sockhash(pairs.saturating_mul(2).max(2))?;
        let program = sys::load(&program::verdict_program(map.as_raw_fd()))?;
        sys::attach_verdict(map.as_fd(), program.as_fd())?;
        // The map holds its own reference to the attached program: `program` may close here.
        Ok(Offload { map })
    }

    /// Hands the pair `a`, `b` to the kernel: from now on what arrives on one leaves by the other,
    /// including whatever was queued on either and not yet read. On error, neither socket is left in
    /// the map and both are as they were (the caller keeps them on its own path).
    pub fn insert_pair(&self, a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> Result<(), Error> {
        let socket = |step| move |source| Error::Socket { step, source };
        let (key_a, key_b) = (
            sys::cookie(a).map_err(socket("SO_COOKIE"))?,
            sys::cookie(b).map_err(socket("SO_COOKIE"))?,
        );
        sys::set_rcvlowat(a, GATE_RCVLOWAT).map_err(socket("SO_RCVLOWAT"))?;
        sys::set_rcvlowat(b, GATE_RCVLOWAT).map_err(socket("SO_RCVLOWAT"))?;
        let inserted = sys::update(self.map.as_fd(), key_a, b).and_then(|()| {
            sys::update(self.map.as_fd(), key_b, a).inspect_err(|_| {
                let _ = sys::delete(self.map.as_fd(), key_a);
            })
        });
        // Lowering the mark runs the program over what queued while the gate was up.
        let released_a = sys::set_rcvlowat(a, 1).map_err(socket("SO_RCVLOWAT"));
        let released_b = sys::set_rcvlowat(b, 1).map_err(socket("SO_RCVLOWAT"));
        inserted.and(released_a).and(released_b)
    }

    /// Takes the pair back out of the map (either may already be gone: a closed socket leaves by
    /// itself). Bytes already redirected stay queued on the peer's send side.
    #[cfg(test)]
    fn remove_pair(&self, a: BorrowedFd<'_>, b: BorrowedFd<'_>) {
        for socket in [a, b] {
            if let Ok(key) = sys::cookie(socket) {
                let _ = sys::delete(self.map.as_fd(), key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read, Write};
    use std::net::Shutdown;
    use std::os::fd::AsFd;
    use std::time::Duration;

    use super::harness::{
        fill, offload, path, pattern, poll_for, send_through, small_buffers, Flight,
    };

    #[test]
    fn a_redirected_pair_moves_bytes_both_ways_byte_exact_without_the_process() {
        let Some(offload) = offload() else { return };
        let p = path();
        p.hand_to(&offload);
        let up = pattern(4 << 20, 0x5a);
        let got = send_through(p.client.try_clone().expect("clone"), &p.server, &up);
        assert!(got == up, "client -> server bytes differ");
        let down = pattern(3 << 20, 0xa5);
        let got = send_through(p.server.try_clone().expect("clone"), &p.client, &down);
        assert!(got == down, "server -> client bytes differ");
        // The forwarder's sockets never had a byte for the process: nothing readable is pending.
        p.front.set_nonblocking(true).expect("nonblocking");
        let mut one = [0u8; 1];
        let read = (&p.front).read(&mut one);
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "front had data for the process: {read:?}"
        );
    }

    #[test]
    fn bytes_queued_before_the_insert_go_first_and_in_order() {
        let Some(offload) = offload() else { return };
        let mut p = path();
        let early = pattern(100_000, 1);
        p.client.write_all(&early).expect("write early");
        p.server.write_all(&early).expect("write early");
        std::thread::sleep(Duration::from_millis(50));
        p.hand_to(&offload);
        let late = pattern(200_000, 2);
        p.client.write_all(&late).expect("write late");
        let mut got = vec![0u8; early.len() + late.len()];
        p.server.read_exact(&mut got).expect("read");
        assert!(got[..early.len()] == early[..], "early bytes differ");
        assert!(got[early.len()..] == late[..], "late bytes differ");
        let mut got = vec![0u8; early.len()];
        p.client.read_exact(&mut got).expect("read");
        assert!(got == early, "early server bytes differ");
    }

    #[test]
    fn a_fin_shows_as_rdhup_and_a_shutdown_passes_it_on_while_the_other_way_flows() {
        let Some(offload) = offload() else { return };
        let mut p = path();
        let baseline = Flight::start(&p.front, &p.back);
        p.hand_to(&offload);
        let mut server = p.server.try_clone().expect("clone");
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            server.read_to_end(&mut got).map(|_| got)
        });
        let last = pattern(2 << 20, 8);
        p.client.write_all(&last).expect("write");
        p.client.shutdown(Shutdown::Write).expect("shutdown");
        let revents = poll_for(
            p.front.as_fd(),
            libc::POLLIN | libc::POLLRDHUP,
            Duration::from_secs(10),
        );
        assert!(
            revents & libc::POLLRDHUP != 0,
            "the FIN did not show: {revents:#x}"
        );
        // What the reactor must do on that RDHUP: wait until every byte redirected to the back socket is
        // in its send queue (a shutdown before that cuts them off), then pass the FIN on.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while baseline.in_flight(&p.front, &p.back, true) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the redirect queue did not drain: {} bytes",
                baseline.in_flight(&p.front, &p.back, true)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        p.back.shutdown(Shutdown::Write).expect("shutdown back");
        let got = reader.join().expect("reader").expect("read to EOF");
        assert!(
            got == last,
            "{} of {} bytes arrived, or they differ",
            got.len(),
            last.len()
        );
        // The other way still flows, redirected.
        let down = pattern(1 << 20, 3);
        let got = send_through(p.server.try_clone().expect("clone"), &p.client, &down);
        assert!(
            got == down,
            "server -> client bytes after half-close differ"
        );
    }

    #[test]
    fn a_reset_shows_as_an_error_on_the_forwarders_socket() {
        let Some(offload) = offload() else { return };
        let p = path();
        p.hand_to(&offload);
        socket2::SockRef::from(&p.server)
            .set_linger(Some(Duration::ZERO))
            .expect("linger 0");
        drop(p.server);
        let revents = poll_for(p.back.as_fd(), libc::POLLIN, Duration::from_secs(10));
        assert!(
            revents & (libc::POLLERR | libc::POLLHUP) != 0,
            "the RST did not show: {revents:#x}"
        );
        let error = p.back.take_error().expect("SO_ERROR");
        assert_eq!(
            error.map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionReset)
        );
    }

    #[test]
    fn removing_a_pair_hands_its_sockets_back_to_the_process() {
        let Some(offload) = offload() else { return };
        let mut p = path();
        p.hand_to(&offload);
        offload.remove_pair(p.front.as_fd(), p.back.as_fd());
        p.client.write_all(b"to the process").expect("write");
        let mut got = [0u8; 14];
        (&p.front).read_exact(&mut got).expect("read on the front");
        assert_eq!(&got, b"to the process");
        // The pair can go in again.
        offload
            .insert_pair(p.front.as_fd(), p.back.as_fd())
            .expect("insert again");
        let up = pattern(65536, 4);
        let got = send_through(p.client.try_clone().expect("clone"), &p.server, &up);
        assert!(got == up);
    }

    #[test]
    fn a_socket_already_in_the_map_is_refused_and_nothing_half_inserted_stays() {
        let Some(offload) = offload() else { return };
        let mut p = path();
        let q = path();
        p.hand_to(&offload);
        let refused = offload.insert_pair(p.front.as_fd(), q.back.as_fd());
        assert!(refused.is_err(), "a second entry for front was accepted");
        // The first pair still forwards.
        let up = pattern(65536, 5);
        p.client.write_all(&up).expect("write");
        let mut got = vec![0u8; up.len()];
        p.server.read_exact(&mut got).expect("read");
        assert!(got == up);
    }

    /// A kernel finding (6.18), kept as a test so that a kernel which bounds the queue shows up: with the
    /// server not reading, the client's bytes keep being taken off the front socket and queued for the
    /// back one (the peer's psock `ingress_skb` list, which nothing bounds), far past every socket
    /// buffer on the path. Nothing is lost: once the server reads, every byte arrives, in order.
    #[test]
    fn kernel_finding_a_slow_reader_does_not_bound_the_redirect_queue() {
        let Some(offload) = offload() else { return };
        let mut p = path();
        let buffers = small_buffers(&p);
        p.hand_to(&offload);
        let data = pattern(32 << 20, 6);
        let written = fill(&mut p.client, &data);
        assert!(
            written > 4 * buffers,
            "the sender was held back after {written} bytes, within 4x the socket buffers ({buffers}): \
             this kernel bounds the redirect queue, update docs/sockmap.md"
        );
        let mut got = vec![0u8; written];
        p.server
            .read_exact(&mut got)
            .expect("read all that was written");
        assert!(got[..] == data[..written], "bytes differ");
    }

    /// A kernel finding (6.18): taking a socket out of the map drops what the program had already
    /// redirected to it and it had not yet sent (its psock queue is purged), so a pair may leave the map
    /// only when it is done.
    #[test]
    fn kernel_finding_removing_a_pair_drops_the_bytes_queued_for_it() {
        let Some(offload) = offload() else { return };
        let mut p = path();
        small_buffers(&p);
        p.hand_to(&offload);
        let data = pattern(32 << 20, 7);
        let written = fill(&mut p.client, &data);
        offload.remove_pair(p.front.as_fd(), p.back.as_fd());
        p.back.shutdown(Shutdown::Write).expect("shutdown back");
        let mut got = Vec::new();
        p.server.read_to_end(&mut got).expect("read to EOF");
        assert!(
            got.len() < written,
            "all {written} bytes arrived after the removal: this kernel keeps them, update docs/sockmap.md"
        );
        assert!(
            got[..] == data[..got.len()],
            "the bytes that arrived differ"
        );
    }
}
