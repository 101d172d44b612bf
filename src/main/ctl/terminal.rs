//! The terminal while `ctl top` runs: keys arrive one by one without echo (so `q` quits without Enter),
//! and whatever ends the view puts the terminal back as it was.
//!
//! Only canonical mode and echo are turned off (`ICANON`, `ECHO`), not the whole of raw mode: the
//! terminal still turns Ctrl-C into SIGINT, which `top` catches like `q`, and output processing still
//! turns `\n` into `\r\n`. The saved settings are restored by [`Keys`]'s `Drop`, so a normal return,
//! an error returned with `?` and a panic (which unwinds) all restore them.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A terminal in key-at-a-time mode; dropping it restores the settings it found.
pub(crate) struct Keys<'fd> {
    fd: BorrowedFd<'fd>,
    saved: libc::termios,
}

impl<'fd> Keys<'fd> {
    /// Switches the terminal on `fd` to key-at-a-time, no echo. `None` when `fd` is not a terminal
    /// (stdin from a pipe or /dev/null): there is nothing to switch, and keys are read as they come.
    pub(crate) fn start(fd: BorrowedFd<'fd>) -> io::Result<Option<Keys<'fd>>> {
        let Some(saved) = settings(fd)? else {
            return Ok(None);
        };
        let mut keys = saved;
        keys.c_lflag &= !(libc::ICANON | libc::ECHO);
        // A read returns as soon as one byte is there, and waits for it.
        keys.c_cc[libc::VMIN] = 1;
        keys.c_cc[libc::VTIME] = 0;
        apply(fd, &keys)?;
        Ok(Some(Keys { fd, saved }))
    }
}

impl Drop for Keys<'_> {
    fn drop(&mut self) {
        // Nothing better to do with a failure here than to leave the terminal as it is: the process
        // is on its way out.
        let _ = apply(self.fd, &self.saved);
    }
}

/// The width in columns of the terminal on `fd`, asked at each frame (a window may be resized);
/// `None` if it is no terminal or does not say.
pub(crate) fn width(fd: BorrowedFd<'_>) -> Option<usize> {
    // SAFETY: `winsize` is four integers, for which all zeroes is a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the borrow's lifetime, and TIOCGWINSZ writes one `winsize`
    // into the valid, writable struct it is given.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// The terminal settings of `fd`, `None` if it is no terminal.
fn settings(fd: BorrowedFd<'_>) -> io::Result<Option<libc::termios>> {
    // SAFETY: `termios` is a plain C struct of integers and arrays, for which all zeroes is a valid
    // value; tcgetattr overwrites it whole before it is read.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the borrow's lifetime, and `termios` is a valid, writable
    // struct of the type tcgetattr fills.
    if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut termios) } == 0 {
        return Ok(Some(termios));
    }
    match io::Error::last_os_error() {
        err if err.raw_os_error() == Some(libc::ENOTTY) => Ok(None),
        err => Err(err),
    }
}

/// Applies `termios` to `fd` at once.
fn apply(fd: BorrowedFd<'_>, termios: &libc::termios) -> io::Result<()> {
    // SAFETY: the descriptor is open for the borrow's lifetime, and `termios` is a valid struct that
    // tcsetattr only reads.
    if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, termios) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::test_pty::{local_modes, pty};
    use std::os::fd::AsFd;

    /// On a terminal: canonical mode and echo are off while `Keys` lives, back as they were after.
    #[test]
    fn test_keys_switch_and_restore_a_terminal() {
        let (_controller, terminal) = pty(80);
        let before = local_modes(&terminal);
        assert_ne!(before & libc::ICANON, 0, "a new pty starts canonical");
        let keys = Keys::start(terminal.as_fd())
            .expect("start")
            .expect("a terminal");
        let during = local_modes(&terminal);
        assert_eq!(during & (libc::ICANON | libc::ECHO), 0);
        assert_ne!(during & libc::ISIG, 0, "Ctrl-C still signals");
        drop(keys);
        assert_eq!(local_modes(&terminal), before);
    }

    #[test]
    fn test_width_of_a_terminal() {
        let (_controller, terminal) = pty(57);
        assert_eq!(width(terminal.as_fd()), Some(57));
        let null = std::fs::File::open("/dev/null").expect("/dev/null");
        assert_eq!(width(null.as_fd()), None);
    }

    /// Not a terminal (stdin from /dev/null): nothing to switch, no error.
    #[test]
    fn test_keys_on_a_file_is_none() {
        let null = std::fs::File::open("/dev/null").expect("/dev/null");
        assert!(Keys::start(null.as_fd()).expect("no error").is_none());
    }
}
