//! The system calls of the offload, each behind a safe function: `bpf(2)` through `libc::syscall` (map
//! create, program load and attach, map update and delete, with the `union bpf_attr` layouts they take)
//! and the socket options that key a socket (`SO_COOKIE`) and gate it (`SO_RCVLOWAT`).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::program::Insn;
use super::Error;

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
    // it are valid by this function's contract. Exercised by every test of the offload (here and in
    // mod.rs).
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

/// A `bpf(2)` step that failed, with no verifier log.
fn failed(step: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Bpf {
        step,
        source,
        log: String::new(),
    }
}

/// Creates a sockhash of `max_entries` sockets keyed by a 64-bit cookie.
pub(super) fn create_sockhash(max_entries: u32) -> Result<OwnedFd, Error> {
    let mut create = MapCreateAttr {
        map_type: BPF_MAP_TYPE_SOCKHASH,
        key_size: std::mem::size_of::<u64>() as u32,
        value_size: std::mem::size_of::<u32>() as u32,
        max_entries,
        map_flags: 0,
    };
    // SAFETY: the map-create attributes for BPF_MAP_CREATE; they carry no pointers.
    let map = unsafe { bpf(BPF_MAP_CREATE, &mut create) }.map_err(failed("map create"))?;
    Ok(owned(map))
}

/// Attaches `program` to `map` as its stream verdict: every socket stored in the map runs it.
pub(super) fn attach_verdict(map: BorrowedFd<'_>, program: BorrowedFd<'_>) -> Result<(), Error> {
    let mut attach = AttachAttr {
        target_fd: map.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_SK_SKB_STREAM_VERDICT,
        attach_flags: 0,
    };
    // SAFETY: the attach attributes for BPF_PROG_ATTACH; they carry no pointers.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attach) }
        .map(drop)
        .map_err(failed("attach"))
}

/// `map[key] = peer`, refusing to replace an entry.
pub(super) fn update(map: BorrowedFd<'_>, key: u64, peer: BorrowedFd<'_>) -> Result<(), Error> {
    let value = peer.as_raw_fd() as u32;
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u64 as u64,
        value: &value as *const u32 as u64,
        flags: BPF_NOEXIST,
    };
    // SAFETY: element attributes for BPF_MAP_UPDATE_ELEM; `key` (8 bytes, the map's key size) and
    // `value` (4 bytes, its value size) are locals that outlive the call.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }
        .map(drop)
        .map_err(failed("map update"))
}

/// Removes `map[key]`.
pub(super) fn delete(map: BorrowedFd<'_>, key: u64) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u64 as u64,
        value: 0,
        flags: 0,
    };
    // SAFETY: element attributes for BPF_MAP_DELETE_ELEM; `key` (8 bytes, the map's key size) is a
    // local that outlives the call, `value` is unused.
    unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) }.map(drop)
}

/// Loads `program` as an SK_SKB program, with the verifier's log in the error when it is refused.
pub(super) fn load(program: &[Insn]) -> Result<OwnedFd, Error> {
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

/// `SO_COOKIE` (asm-generic/socket.h, the value on x86-64 and arm64; a few architectures such as sparc
/// number it differently, and libc does not export it): the socket's 64-bit cookie, the number
/// `bpf_get_socket_cookie` returns for it.
const SO_COOKIE: libc::c_int = 57;

/// The 64-bit cookie of `socket`.
pub(super) fn cookie(socket: BorrowedFd<'_>) -> io::Result<u64> {
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
pub(super) fn set_rcvlowat(socket: BorrowedFd<'_>, value: libc::c_int) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::super::harness::path;
    use super::super::program::EXIT;
    use super::super::Offload;
    use super::*;

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
}
