//! A pseudo-terminal for tests, and a reader of its modes. One copy for the unit tests of
//! `terminal` (the binary compiles it under `#[cfg(test)]`) and for tests/ctl.rs, which includes
//! this file by `#[path]`; so it names nothing of the crate.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A pseudo-terminal's two ends (controller, terminal) of `columns` x 24, closed on drop.
pub(crate) fn pty(columns: u16) -> (OwnedFd, OwnedFd) {
    let (mut controller, mut terminal) = (-1, -1);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the two out-pointers are valid ints, the window size a valid struct openpty only
    // reads; the name and termios pointers may be null (openpty then writes no name and uses
    // default settings).
    let rc = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
    // SAFETY: openpty succeeded, so both are open descriptors that nothing else owns.
    unsafe {
        (
            OwnedFd::from_raw_fd(controller),
            OwnedFd::from_raw_fd(terminal),
        )
    }
}

/// The local modes (`c_lflag`) of a terminal, read with tcgetattr here rather than through the
/// code under test.
pub(crate) fn local_modes(terminal: &OwnedFd) -> libc::tcflag_t {
    // SAFETY: all zeroes is a valid termios (plain integers), and tcgetattr overwrites it.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open (borrowed), and `termios` is a writable struct of the right type.
    let rc = unsafe { libc::tcgetattr(terminal.as_raw_fd(), &mut termios) };
    assert_eq!(rc, 0, "tcgetattr: {}", io::Error::last_os_error());
    termios.c_lflag
}
