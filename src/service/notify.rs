//! `Type=notify`: telling the service manager how the process stands, in `sd_notify(3)` datagrams.
//!
//! systemd hands a service the address of a Unix datagram socket in `NOTIFY_SOCKET` (a path, or an
//! abstract name written `@name`) and reads `KEY=VALUE` lines from it, one message per datagram. edgefwd
//! sends:
//! - `READY=1` once every listener is bound (so `systemctl start` returns when clients can connect, and
//!   units ordered `After=` it start then), and again after each reload, applied or rejected;
//! - `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC now, which `Type=notify-reload` requires to
//!   tell this reload from an older one) when a SIGHUP reload begins;
//! - `STOPPING=1` when a graceful shutdown begins, so systemd does not take the drain for a hang;
//! - `STATUS=` with the live connections, shown by `systemctl status`, when their number changed, at
//!   most once per [`STATUS_INTERVAL`];
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC` when systemd set it (`WatchdogSec=`) for this process
//!   (`WATCHDOG_PID` is ours or absent). The loop wakes for a ping only then: without a watchdog, and
//!   with no status change pending, an idle forwarder makes no periodic wakeups.
//!
//! A datagram that cannot be sent is not fatal (the manager may be restarting): it is logged, at most
//! once per [`SEND_WARNING_INTERVAL`].

use std::io;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::{Duration, Instant};

use log::warn;

/// Least time between two `STATUS=` updates.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// At most one warning this often about datagrams that could not be sent.
const SEND_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The environment variables of the notify protocol, unset once read (nothing edgefwd starts should
/// speak for it).
pub(super) const VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// The manager's notify socket and what is owed to it.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    to: UnixAddr,
    /// When to ping next, with the interval; `None` without a watchdog.
    watchdog: Option<(Instant, Duration)>,
    /// The live connections last reported, and when.
    status: Option<(usize, Instant)>,
    /// A changed count held back by [`STATUS_INTERVAL`]: report it then.
    status_due: Option<Instant>,
    /// When the last warning about a datagram not sent was logged.
    warned: Option<Instant>,
}

/// Why `NOTIFY_SOCKET` could not be used.
#[derive(Debug)]
pub(super) struct Unusable(pub(super) String);

impl Notifier {
    /// The notifier `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (as read from the environment)
    /// describe for process `pid`; `Ok(None)` without `NOTIFY_SOCKET`.
    pub(super) fn from_vars(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
        now: Instant,
    ) -> Result<Option<Notifier>, Unusable> {
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let to = notify_address(socket)?;
        let local = UnixDatagram::unbound()
            .map_err(|err| Unusable(format!("cannot open a datagram socket: {err}")))?;
        local.set_nonblocking(true).map_err(|err| {
            Unusable(format!("cannot make the notify socket non-blocking: {err}"))
        })?;
        let interval = watchdog_interval(watchdog_usec, watchdog_pid, pid)?;
        Ok(Some(Notifier {
            socket: local,
            to,
            watchdog: interval.map(|half| (now + half, half)),
            status: None,
            status_due: None,
            warned: None,
        }))
    }

    /// `READY=1`, with the live connections.
    pub(crate) fn ready(&mut self, live: usize, now: Instant) {
        self.send(&format!("READY=1\n{}", status_line(live)));
        self.status = Some((live, now));
        self.status_due = None;
    }

    /// `RELOADING=1` and the monotonic clock.
    pub(crate) fn reloading(&mut self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// `STOPPING=1`.
    pub(crate) fn stopping(&mut self) {
        self.send("STOPPING=1");
    }

    /// The next time [`Self::tend`] has something to send, if any.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let ping = self.watchdog.map(|(next, _)| next);
        ping.into_iter().chain(self.status_due).min()
    }

    /// Sends what is due at `now`: the watchdog ping, and `STATUS=` if the live connections changed
    /// (or holds it back until [`STATUS_INTERVAL`] after the last one).
    pub(crate) fn tend(&mut self, live: usize, now: Instant) {
        if let Some((_, half)) = self.watchdog.filter(|(next, _)| *next <= now) {
            self.send("WATCHDOG=1");
            // From now, not from when it was due: after a stall, one ping, not a burst of late ones.
            self.watchdog = Some((now + half, half));
        }
        let Some((reported, at)) = self.status else {
            return;
        };
        if reported == live {
            self.status_due = None;
        } else if now >= at + STATUS_INTERVAL {
            self.send(&status_line(live));
            self.status = Some((live, now));
            self.status_due = None;
        } else {
            self.status_due = Some(at + STATUS_INTERVAL);
        }
    }

    fn send(&mut self, message: &str) {
        if let Err(err) = self.socket.send_to_addr(message.as_bytes(), &self.to) {
            let now = Instant::now();
            if self
                .warned
                .is_none_or(|at| now >= at + SEND_WARNING_INTERVAL)
            {
                self.warned = Some(now);
                warn!("cannot notify the service manager ({:?}): {err}", self.to);
            }
        }
    }
}

/// `STATUS=` for `live` connections.
fn status_line(live: usize) -> String {
    format!("STATUS={live} live connections")
}

/// The address `NOTIFY_SOCKET` names: `/path` or `@abstract`.
fn notify_address(socket: &str) -> Result<UnixAddr, Unusable> {
    let bad = |err: io::Error| Unusable(format!("NOTIFY_SOCKET={socket}: {err}"));
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        UnixAddr::from_abstract_name(name.as_bytes()).map_err(bad)
    } else if socket.starts_with('/') {
        UnixAddr::from_pathname(socket).map_err(bad)
    } else {
        Err(Unusable(format!(
            "NOTIFY_SOCKET={socket}: not a path or an @abstract name (vsock is not supported)"
        )))
    }
}

/// Half of `WATCHDOG_USEC` when the watchdog is meant for process `pid`.
fn watchdog_interval(
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Result<Option<Duration>, Unusable> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if watchdog_pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(pid)) {
        return Ok(None);
    }
    match usec.trim().parse::<u64>() {
        Ok(usec) if usec > 0 => Ok(Some(Duration::from_micros(usec) / 2)),
        _ => Err(Unusable(format!(
            "WATCHDOG_USEC={usec}: not a positive number of microseconds"
        ))),
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd reads for `MONOTONIC_USEC=`.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a pointer to a live, writable local; with
    // CLOCK_MONOTONIC, which Linux always has, it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs * 1_000_000 + nanos / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;

    /// A bound abstract socket to receive on, and a notifier sending to it.
    fn pair(watchdog: Option<&str>, now: Instant) -> (UnixDatagram, Notifier) {
        let name = format!("edgefwd-notify-test-{}-{:?}", std::process::id(), now);
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("name");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let notifier = Notifier::from_vars(Some(&format!("@{name}")), watchdog, None, 1, now)
            .expect("usable")
            .expect("set");
        (listener, notifier)
    }

    fn received(socket: &UnixDatagram) -> Vec<String> {
        let mut buf = [0u8; 512];
        let mut all = Vec::new();
        while let Ok(n) = socket.recv(&mut buf) {
            all.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        all
    }

    #[test]
    fn test_unset_socket_is_no_notifier() {
        let now = Instant::now();
        assert!(Notifier::from_vars(None, Some("100"), None, 1, now)
            .expect("ok")
            .is_none());
        assert!(Notifier::from_vars(Some(""), None, None, 1, now)
            .expect("ok")
            .is_none());
    }

    #[test]
    fn test_addresses_path_abstract_and_bad() {
        assert!(notify_address("/run/systemd/notify")
            .expect("path")
            .as_pathname()
            .is_some());
        assert_eq!(
            notify_address("@sd").expect("abstract").as_abstract_name(),
            Some(&b"sd"[..])
        );
        let Unusable(message) = notify_address("vsock:2:1").expect_err("not supported");
        assert!(message.contains("vsock:2:1"), "{message}");
    }

    #[test]
    fn test_watchdog_interval_is_half_for_this_pid_only() {
        assert_eq!(
            watchdog_interval(Some("2000000"), None, 7).expect("ok"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval(Some("2000000"), Some("7"), 7).expect("ok"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval(Some("2000000"), Some("8"), 7).expect("ok"),
            None
        );
        assert_eq!(watchdog_interval(None, None, 7).expect("ok"), None);
        assert!(watchdog_interval(Some("0"), None, 7).is_err());
        assert!(watchdog_interval(Some("soon"), None, 7).is_err());
    }

    /// No watchdog and no pending change: nothing to wake for.
    #[test]
    fn test_idle_notifier_has_no_deadline() {
        let now = Instant::now();
        let (_listener, mut notifier) = pair(None, now);
        assert_eq!(notifier.deadline(), None);
        notifier.ready(0, now);
        notifier.tend(0, now + Duration::from_secs(5));
        assert_eq!(notifier.deadline(), None);
    }

    /// A change within the interval is held back until the interval is over, then reported once.
    #[test]
    fn test_status_is_rate_limited() {
        let now = Instant::now();
        let (listener, mut notifier) = pair(None, now);
        notifier.ready(0, now);
        assert_eq!(received(&listener), ["READY=1\nSTATUS=0 live connections"]);
        notifier.tend(3, now + Duration::from_millis(100));
        assert!(received(&listener).is_empty());
        assert_eq!(notifier.deadline(), Some(now + STATUS_INTERVAL));
        notifier.tend(4, now + STATUS_INTERVAL);
        assert_eq!(received(&listener), ["STATUS=4 live connections"]);
        assert_eq!(notifier.deadline(), None);
        notifier.tend(4, now + STATUS_INTERVAL * 3);
        assert!(received(&listener).is_empty());
    }

    /// Pings every half interval, once per due time even after a stall.
    #[test]
    fn test_watchdog_pings_when_due() {
        let now = Instant::now();
        let (listener, mut notifier) = pair(Some("1000000"), now);
        let half = Duration::from_millis(500);
        assert_eq!(notifier.deadline(), Some(now + half));
        notifier.tend(0, now + half / 2);
        assert!(received(&listener).is_empty());
        notifier.tend(0, now + half);
        assert_eq!(received(&listener), ["WATCHDOG=1"]);
        notifier.tend(0, now + half * 10);
        assert_eq!(received(&listener), ["WATCHDOG=1"]);
        assert_eq!(notifier.deadline(), Some(now + half * 11));
    }

    #[test]
    fn test_reloading_carries_the_monotonic_clock() {
        let now = Instant::now();
        let (listener, mut notifier) = pair(None, now);
        let before = monotonic_usec();
        notifier.reloading();
        let after = monotonic_usec();
        let message = received(&listener).concat();
        let usec: u64 = message
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|n| n.parse().ok())
            .expect(&message);
        assert!(before <= usec && usec <= after, "{before} {usec} {after}");
        assert!(before > 0);
    }
}
