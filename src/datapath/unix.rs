//! Unix domain stream listeners: bound with the route's file mode, replacing a stale socket file but
//! never a live one, and removing their file when they go. And connects to Unix upstreams
//! ([`start_connect`]).
//!
//! A socket file outlives the process that bound it: after a crash (or `kill -9`) the next start finds
//! it, and bind(2) fails with EADDRINUSE although nobody listens. Whether somebody does is only known by
//! asking: a connect(2) to a file whose listener is gone fails with ECONNREFUSED, and that file is
//! stale and removed. Any other answer (a connection, or a timeout-free error such as EACCES) leaves it
//! alone, and the bind fails with an error naming the path: taking a live daemon's socket from under it
//! would silently split its clients.
//!
//! The mode is applied between bind(2) and listen(2), so no client can connect while the file still has
//! the umask's permissions. Abstract names (Linux) have no file: no mode, nothing stale, nothing to remove.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::unix::UnixAddr;

/// The socket file a listener created: removed when dropped, unless another socket replaced it since
/// (same path, another inode), which belongs to whoever bound it.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device, inode and change time: an inode number alone is reused at once by the next file.
    identity: (u64, u64, i64, i64),
}

impl SocketFile {
    /// The socket file now at `path` (this process bound it, or took its listener over).
    pub(crate) fn created(path: &Path) -> io::Result<SocketFile> {
        let meta = fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            identity: identity(&meta),
        })
    }
}

impl SocketFile {
    /// Lets go of the path without removing it: another process took it over (a binary upgrade's
    /// successor binds there next). Forgetting the guard leaks its path buffer, once, in a process
    /// that is about to exit.
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours =
            fs::symlink_metadata(&self.path).is_ok_and(|meta| identity(&meta) == self.identity);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn identity(meta: &fs::Metadata) -> (u64, u64, i64, i64) {
    (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
}

/// The kernel's address for `addr`: a path, or an abstract name after its leading NUL.
fn sockaddr(addr: &UnixAddr) -> io::Result<SockAddr> {
    match addr {
        UnixAddr::Path(path) => SockAddr::unix(path),
        UnixAddr::Abstract(name) => {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(name.as_bytes());
            SockAddr::unix(OsStr::from_bytes(&bytes))
        }
    }
}

/// Starts a non-blocking, close-on-exec connect to the Unix stream socket `addr` (an upstream, or a
/// probe of one). Unlike TCP's, a Unix connect is settled inside connect(2): it succeeds at once when
/// the listener's backlog has room, and fails at once otherwise: ECONNREFUSED (nobody listens), EAGAIN
/// (Linux: the backlog is full), ENOENT (no such file), EACCES (the file's mode). A failure
/// is an `Err` here, which the connect path counts as a failed attempt and fails over from, as it does a
/// TCP connect refused. EINPROGRESS, which POSIX allows, is taken as a connect under way: its outcome
/// is asked like a TCP one's.
pub(crate) fn start_connect(addr: &UnixAddr) -> io::Result<mio::net::UnixStream> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None)?;
    match socket.connect(&sockaddr(addr)?) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(err) => return Err(err),
    }
    Ok(mio::net::UnixStream::from_std(socket.into()))
}

/// Binds a non-blocking, close-on-exec Unix stream listener on `addr` with `backlog`; a path gets the
/// permission bits `mode` and its [`SocketFile`]. The error names the address.
pub fn bind(
    addr: &UnixAddr,
    mode: u32,
    backlog: i32,
) -> Result<(mio::net::UnixListener, Option<SocketFile>), String> {
    let fail = |err: io::Error| format!("cannot listen on {addr}: {err}");
    match addr {
        UnixAddr::Abstract(_) => {
            let sockaddr = sockaddr(addr).map_err(fail)?;
            let socket = listening(&sockaddr, None, backlog).map_err(|err| match err.kind() {
                io::ErrorKind::AddrInUse => {
                    format!("cannot listen on {addr}: another socket listens there")
                }
                _ => fail(err),
            })?;
            Ok((socket, None))
        }
        UnixAddr::Path(path) => {
            let sockaddr = sockaddr(addr).map_err(fail)?;
            let socket = match listening(&sockaddr, Some((path, mode)), backlog) {
                Err(err) if err.kind() == io::ErrorKind::AddrInUse => {
                    remove_if_stale(addr, path)?;
                    listening(&sockaddr, Some((path, mode)), backlog).map_err(fail)?
                }
                other => other.map_err(fail)?,
            };
            let file = SocketFile::created(path).map_err(fail)?;
            Ok((socket, Some(file)))
        }
    }
}

/// socket(2), bind(2), chmod(2) for a path, listen(2).
fn listening(
    sockaddr: &SockAddr,
    file: Option<(&Path, u32)>,
    backlog: i32,
) -> io::Result<mio::net::UnixListener> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None)?;
    socket.bind(sockaddr)?;
    if let Some((path, mode)) = file {
        if let Err(err) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
            let _ = fs::remove_file(path);
            return Err(err);
        }
    }
    socket.listen(backlog)?;
    Ok(mio::net::UnixListener::from_std(socket.into()))
}

/// Removes the socket file at `path` when nobody listens on it (connect(2) says ECONNREFUSED); a live
/// socket, or a file that is not a socket, is an error naming it.
fn remove_if_stale(addr: &UnixAddr, path: &Path) -> Result<(), String> {
    let is_socket = fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket());
    if !is_socket {
        return Err(format!(
            "cannot listen on {addr}: {} exists and is not a socket",
            path.display()
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(format!(
            "cannot listen on {addr}: another process listens on {}",
            path.display()
        )),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path)
            .map_err(|err| format!("cannot remove the stale socket {}: {err}", path.display())),
        Err(err) => Err(format!(
            "cannot listen on {addr}: {} is in use ({err})",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temp dir, removed by the caller.
    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edgefwd-unix-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn path_addr(path: &Path) -> UnixAddr {
        UnixAddr::Path(path.to_path_buf())
    }

    #[test]
    fn test_file_gets_the_mode_and_goes_with_the_listener() {
        let dir = temp_dir("mode");
        let path = dir.join("a.sock");
        let (listener, file) = bind(&path_addr(&path), 0o600, 16).expect("bind");
        let meta = fs::symlink_metadata(&path).expect("file");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        UnixStream::connect(&path).expect("a client connects");
        drop(listener);
        drop(file);
        assert!(!path.exists(), "the socket file is removed");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn test_stale_file_is_replaced_live_one_refused() {
        let dir = temp_dir("stale");
        let path = dir.join("b.sock");
        let addr = path_addr(&path);
        // A listener that went without removing its file: stale.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let (live, file) = bind(&addr, 0o660, 16).expect("a stale file is replaced");
        let err = bind(&addr, 0o660, 16).expect_err("a live socket is not taken");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("another process listens"), "{err}");
        UnixStream::connect(&path).expect("the live socket still accepts");
        drop((live, file));
        fs::write(&path, b"x").expect("plain file");
        let err = bind(&addr, 0o660, 16).expect_err("a plain file is not removed");
        assert!(err.contains("not a socket"), "{err}");
        assert!(path.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn test_file_replaced_by_another_socket_is_left_to_it() {
        let dir = temp_dir("replaced");
        let path = dir.join("c.sock");
        let (first, file) = bind(&path_addr(&path), 0o660, 16).expect("bind");
        drop(first);
        fs::remove_file(&path).expect("rm");
        let second = std::os::unix::net::UnixListener::bind(&path).expect("rebind");
        drop(file);
        assert!(path.exists(), "another socket's file stays");
        drop(second);
        let _ = fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn test_abstract_name_binds_once() {
        let name = format!("edgefwd-test-{}", std::process::id());
        let addr = UnixAddr::Abstract(name.clone());
        let (_listener, file) = bind(&addr, 0o660, 16).expect("bind");
        assert!(file.is_none());
        let err = bind(&addr, 0o660, 16).expect_err("taken");
        assert!(err.contains(&format!("unix:@{name}")), "{err}");
    }
}
