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
//! - **No BPF toolchain.** The program is twelve instruction slots, hand-encoded below (`verdict_program`),
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
//! ([`Offload::remove_pair`]) or closed (the kernel unhashes it).

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `bpf(2)` commands used here (include/uapi/linux/bpf.h, `enum bpf_cmd`).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;

/// `enum bpf_map_type`: a hash of sockets, any 64-bit key.
const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
/// `enum bpf_prog_type`: programs that see the skbs a socket in a sockmap receives.
const BPF_PROG_TYPE_SK_SKB: u32 = 14;
/// `enum bpf_attach_type`: run on every chunk of a stream, without a parser program.
const BPF_SK_SKB_STREAM_VERDICT: u32 = 5;
/// `BPF_NOEXIST` for map updates: a key present already is an error, never silently replaced.
const BPF_NOEXIST: u64 = 1;

/// Helper numbers (`enum bpf_func_id`).
const BPF_FUNC_GET_SOCKET_COOKIE: i32 = 46;
const BPF_FUNC_SK_REDIRECT_HASH: i32 = 72;
/// `enum sk_action`.
const SK_PASS: i32 = 1;

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

/// One BPF instruction, laid out as `struct bpf_insn`: opcode, destination and source registers in one
/// byte (dst in the low nibble on little-endian machines), a signed offset and a signed immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        }
    }
}

/// Opcodes: class | operation | source (include/uapi/linux/bpf_common.h and bpf.h).
const MOV64_REG: u8 = 0x07 | 0xb0 | 0x08; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_IMM: u8 = 0x07 | 0xb0; // BPF_ALU64 | BPF_MOV | BPF_K
const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const STX_DW: u8 = 0x03 | 0x60 | 0x18; // BPF_STX | BPF_MEM | BPF_DW
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW, two instruction slots
const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
/// `src_reg` of an `LD_IMM64` whose immediate is a map fd the kernel turns into the map's address.
const PSEUDO_MAP_FD: u8 = 1;

/// Registers: r0 return value, r1-r5 arguments (clobbered by calls), r6 callee-saved, r10 frame pointer.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const R10: u8 = 10;

/// Instructions in [`verdict_program`] (the 64-bit load takes two).
const PROGRAM_LEN: usize = 12;

/// The stream-verdict program for `map_fd`. In C it reads:
///
/// ```c
/// int verdict(struct __sk_buff *skb) {
///     __u64 key = bpf_get_socket_cookie(skb);          // this socket's cookie
///     bpf_sk_redirect_hash(skb, &peers, &key, 0);       // to the peer's egress (flags 0)
///     return SK_PASS;                                    // redirected, or kept if no peer
/// }
/// ```
fn verdict_program(map_fd: i32) -> [Insn; PROGRAM_LEN] {
    [
        // r6 = r1: keep the skb, r1 is clobbered by the first call.
        Insn::new(MOV64_REG, R6, R1, 0, 0),
        // r0 = bpf_get_socket_cookie(r1 = skb)
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_GET_SOCKET_COOKIE),
        // *(u64 *)(r10 - 8) = r0: the key, on the stack.
        Insn::new(STX_DW, R10, R0, -8, 0),
        // r1 = skb
        Insn::new(MOV64_REG, R1, R6, 0, 0),
        // r2 = &map (the loader replaces the fd with the map), two slots.
        Insn::new(LD_IMM64, R2, PSEUDO_MAP_FD, 0, map_fd),
        Insn::new(0, 0, 0, 0, 0),
        // r3 = r10 - 8: the key's address.
        Insn::new(MOV64_REG, R3, R10, 0, 0),
        Insn::new(ADD64_IMM, R3, 0, 0, -8),
        // r4 = 0: flags; 0 means the peer's egress (BPF_F_INGRESS would queue to its receive side).
        Insn::new(MOV64_IMM, R4, 0, 0, 0),
        // bpf_sk_redirect_hash(skb, map, &key, 0): marks the skb for the peer; SK_DROP if no peer.
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_SK_REDIRECT_HASH),
        // return SK_PASS: with the mark, the skb goes to the peer; without it, it stays here.
        Insn::new(MOV64_IMM, R0, 0, 0, SK_PASS),
        Insn::new(EXIT, 0, 0, 0, 0),
    ]
}

/// `SO_COOKIE` (asm-generic/socket.h, the value on x86-64 and arm64; a few architectures such as sparc
/// number it differently, and libc does not export it): the socket's 64-bit cookie, the number
/// `bpf_get_socket_cookie` returns for it.
const SO_COOKIE: libc::c_int = 57;

/// `union bpf_attr` for `BPF_MAP_CREATE` (the leading fields; the kernel zero-fills the rest).
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for `BPF_MAP_*_ELEM`.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// Calls `bpf(cmd, attr, size_of::<A>())`, returning its non-negative result.
///
/// # Safety
/// `A` must be the `#[repr(C)]` attribute struct above that belongs to `cmd`, and every pointer it
/// carries (as a `u64`) must point at memory valid, for the access `cmd` makes, until the call returns.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed struct of exactly the size passed, laid out as the
    // leading fields of `union bpf_attr` for `cmd` (the kernel zero-fills the rest); the pointers inside
    // it are valid by this function's contract. Exercised by every test below.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut A as *mut libc::c_void,
            std::mem::size_of::<A>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a file descriptor `bpf(2)` just returned.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` is a descriptor the kernel has just created for this process (a successful
    // BPF_MAP_CREATE / BPF_PROG_LOAD), owned by nobody else; OwnedFd closes it once.
    unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) }
}

/// The 64-bit cookie of `socket`.
pub fn cookie(socket: BorrowedFd<'_>) -> io::Result<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` (8) bytes into `value`, a live u64, and updates `len`.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_COOKIE,
            &mut value as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Sets `SO_RCVLOWAT` on `socket`.
fn set_rcvlowat(socket: BorrowedFd<'_>, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `value`, a live c_int.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

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
        let mut create = MapCreateAttr {
            map_type: BPF_MAP_TYPE_SOCKHASH,
            key_size: std::mem::size_of::<u64>() as u32,
            value_size: std::mem::size_of::<u32>() as u32,
            max_entries: pairs.saturating_mul(2).max(2),
            map_flags: 0,
        };
        // SAFETY: the map-create attributes for BPF_MAP_CREATE; they carry no pointers.
        let map = unsafe { bpf(BPF_MAP_CREATE, &mut create) }.map_err(|source| Error::Bpf {
            step: "map create",
            source,
            log: String::new(),
        })?;
        let map = owned(map);
        let program = load(&verdict_program(map.as_raw_fd()))?;
        let mut attach = AttachAttr {
            target_fd: map.as_raw_fd() as u32,
            attach_bpf_fd: program.as_raw_fd() as u32,
            attach_type: BPF_SK_SKB_STREAM_VERDICT,
            attach_flags: 0,
        };
        // SAFETY: the attach attributes for BPF_PROG_ATTACH; they carry no pointers.
        unsafe { bpf(BPF_PROG_ATTACH, &mut attach) }.map_err(|source| Error::Bpf {
            step: "attach",
            source,
            log: String::new(),
        })?;
        // The map holds its own reference to the attached program: `program` may close here.
        Ok(Offload { map })
    }

    /// Hands the pair `a`, `b` to the kernel: from now on what arrives on one leaves by the other,
    /// including whatever was queued on either and not yet read. On error, neither socket is left in
    /// the map and both are as they were (the caller keeps them on its own path).
    pub fn insert_pair(&self, a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> Result<(), Error> {
        let socket = |step| move |source| Error::Socket { step, source };
        let (key_a, key_b) = (
            cookie(a).map_err(socket("SO_COOKIE"))?,
            cookie(b).map_err(socket("SO_COOKIE"))?,
        );
        set_rcvlowat(a, GATE_RCVLOWAT).map_err(socket("SO_RCVLOWAT"))?;
        set_rcvlowat(b, GATE_RCVLOWAT).map_err(socket("SO_RCVLOWAT"))?;
        let inserted = self.update(key_a, b).and_then(|()| {
            self.update(key_b, a).inspect_err(|_| {
                let _ = self.delete(key_a);
            })
        });
        // Lowering the mark runs the program over what queued while the gate was up.
        let released_a = set_rcvlowat(a, 1).map_err(socket("SO_RCVLOWAT"));
        let released_b = set_rcvlowat(b, 1).map_err(socket("SO_RCVLOWAT"));
        inserted.and(released_a).and(released_b)
    }

    /// Takes the pair back out of the map (either may already be gone: a closed socket leaves by
    /// itself). Bytes already redirected stay queued on the peer's send side.
    pub fn remove_pair(&self, a: BorrowedFd<'_>, b: BorrowedFd<'_>) {
        for socket in [a, b] {
            if let Ok(key) = cookie(socket) {
                let _ = self.delete(key);
            }
        }
    }

    /// `map[key] = peer`, refusing to replace an entry.
    fn update(&self, key: u64, peer: BorrowedFd<'_>) -> Result<(), Error> {
        let value = peer.as_raw_fd() as u32;
        let mut attr = ElemAttr {
            map_fd: self.map.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u64 as u64,
            value: &value as *const u32 as u64,
            flags: BPF_NOEXIST,
        };
        // SAFETY: element attributes for BPF_MAP_UPDATE_ELEM; `key` (8 bytes, the map's key size) and
        // `value` (4 bytes, its value size) are locals that outlive the call.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }
            .map(drop)
            .map_err(|source| Error::Bpf {
                step: "map update",
                source,
                log: String::new(),
            })
    }

    /// Removes `map[key]`.
    fn delete(&self, key: u64) -> io::Result<()> {
        let mut attr = ElemAttr {
            map_fd: self.map.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u64 as u64,
            value: 0,
            flags: 0,
        };
        // SAFETY: element attributes for BPF_MAP_DELETE_ELEM; `key` (8 bytes, the map's key size) is a
        // local that outlives the call, `value` is unused.
        unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) }.map(drop)
    }
}

/// Loads `program` as an SK_SKB program, with the verifier's log in the error when it is refused.
fn load(program: &[Insn]) -> Result<OwnedFd, Error> {
    let license: &CStr = c"GPL"; // bpf_sk_redirect_hash is GPL-only.
    let mut log = vec![0u8; 64 * 1024];
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"edgefwd_fwd\0\0");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SK_SKB,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: load attributes for BPF_PROG_LOAD; `insns` points at `program` (`insn_cnt` instructions
    // of 8 bytes), `license` at a NUL-terminated static string, `log_buf` at `log` (`log_size` writable
    // bytes); all outlive the call.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => Ok(owned(fd)),
        Err(source) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(Error::Bpf {
                step: "program load",
                source,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::time::Duration;

    /// The offload, or `None` with the reason printed when this process may not load BPF (not root) or
    /// the kernel refuses: CI runs as root, so there these tests run.
    fn offload() -> Option<Offload> {
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
    struct Path {
        client: TcpStream,
        front: TcpStream,
        back: TcpStream,
        server: TcpStream,
    }

    fn path() -> Path {
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
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
            .collect()
    }

    /// Writes `data` into `to` on one thread while reading it all from `from` on this one.
    fn send_through(mut to: TcpStream, mut from: &TcpStream, data: &[u8]) -> Vec<u8> {
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
    fn poll_for(socket: BorrowedFd<'_>, events: libc::c_short, within: Duration) -> libc::c_short {
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

    #[test]
    fn program_keeps_the_map_fd_in_its_64_bit_load() {
        let program = verdict_program(7);
        assert_eq!(program[4].code, LD_IMM64);
        assert_eq!(program[4].regs, R2 | (PSEUDO_MAP_FD << 4));
        assert_eq!(program[4].imm, 7);
        assert_eq!(program[5], Insn::new(0, 0, 0, 0, 0));
        assert_eq!(program[PROGRAM_LEN - 1].code, EXIT);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    #[test]
    fn a_refused_program_brings_the_verifiers_log() {
        if Offload::new(1).is_err() {
            eprintln!("skipped: BPF not permitted here");
            return;
        }
        // `exit` with r0 never written: the verifier refuses it and says why.
        let refused = load(&[Insn::new(EXIT, 0, 0, 0, 0)]).expect_err("an invalid program loaded");
        let message = refused.to_string();
        assert!(
            message.starts_with("bpf program load: ") && message.contains("R0 !read_ok"),
            "{message}"
        );
    }

    #[test]
    fn cookie_differs_per_socket_and_is_stable() {
        let p = path();
        let front = cookie(p.front.as_fd()).expect("cookie");
        assert_ne!(front, 0);
        assert_eq!(front, cookie(p.front.as_fd()).expect("cookie"));
        assert_ne!(front, cookie(p.back.as_fd()).expect("cookie"));
    }

    #[test]
    fn a_redirected_pair_moves_bytes_both_ways_byte_exact_without_the_process() {
        let Some(offload) = offload() else { return };
        let p = path();
        offload
            .insert_pair(p.front.as_fd(), p.back.as_fd())
            .expect("insert pair");
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
        offload
            .insert_pair(p.front.as_fd(), p.back.as_fd())
            .expect("insert pair");
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
        offload
            .insert_pair(p.front.as_fd(), p.back.as_fd())
            .expect("insert pair");
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

    /// The bytes a redirected direction holds inside the kernel, from `TCP_INFO` and `SIOCOUTQ`: what the
    /// source socket received since the insert, less what reached the destination's send queue since.
    /// `tcpi_bytes_received` counts a received FIN as one byte (it follows `rcv_nxt`), so once the FIN
    /// has shown, one less.
    struct Flight {
        received: u64,
        queued: u64,
    }

    impl Flight {
        fn start(src: &TcpStream, dst: &TcpStream) -> Flight {
            Flight {
                received: tcp_info_u64(src, TCPI_BYTES_RECEIVED),
                queued: tcp_info_u64(dst, TCPI_BYTES_ACKED) + outq(dst),
            }
        }

        fn in_flight(&self, src: &TcpStream, dst: &TcpStream, fin_seen: bool) -> u64 {
            let received =
                tcp_info_u64(src, TCPI_BYTES_RECEIVED) - self.received - u64::from(fin_seen);
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

    #[test]
    fn a_reset_shows_as_an_error_on_the_forwarders_socket() {
        let Some(offload) = offload() else { return };
        let p = path();
        offload
            .insert_pair(p.front.as_fd(), p.back.as_fd())
            .expect("insert pair");
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
        offload
            .insert_pair(p.front.as_fd(), p.back.as_fd())
            .expect("insert pair");
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
        offload
            .insert_pair(p.front.as_fd(), p.back.as_fd())
            .expect("insert pair");
        let refused = offload.insert_pair(p.front.as_fd(), q.back.as_fd());
        assert!(refused.is_err(), "a second entry for front was accepted");
        // The first pair still forwards.
        let up = pattern(65536, 5);
        p.client.write_all(&up).expect("write");
        let mut got = vec![0u8; up.len()];
        p.server.read_exact(&mut got).expect("read");
        assert!(got == up);
    }

    /// Writes `data` into `client` without blocking, until all of it went in or the socket has refused
    /// for a second (the sender is held back); the bytes written.
    fn fill(client: &mut TcpStream, data: &[u8]) -> usize {
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
    fn small_buffers(p: &Path) -> usize {
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

    /// A kernel finding (6.18), kept as a test so that a kernel which bounds the queue shows up: with the
    /// server not reading, the client's bytes keep being taken off the front socket and queued for the
    /// back one (the peer's psock `ingress_skb` list, which nothing bounds), far past every socket
    /// buffer on the path. Nothing is lost: once the server reads, every byte arrives, in order.
    #[test]
    fn kernel_finding_a_slow_reader_does_not_bound_the_redirect_queue() {
        let Some(offload) = offload() else { return };
        let mut p = path();
        let buffers = small_buffers(&p);
        offload
            .insert_pair(p.front.as_fd(), p.back.as_fd())
            .expect("insert pair");
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
        offload
            .insert_pair(p.front.as_fd(), p.back.as_fd())
            .expect("insert pair");
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
