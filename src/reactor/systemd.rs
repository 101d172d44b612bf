//! The reactor's side of `Type=notify` ([`crate::service::notify`]): reactor 0 speaks for the process.
//! It says `READY=1` when it starts running (every reactor of `--threads` was built, so every listener
//! is bound, before the first one runs), `RELOADING=1` when a SIGHUP reload begins and `READY=1` with the
//! verdict, `STOPPING=1` when a shutdown begins, and after each loop turn the watchdog ping and
//! `STATUS=` that are due.
//!
//! With `--threads`, the live connections are the sum of the metrics board, which every reactor
//! publishes each turn; reactor 0 reads it when it wakes, so the status may lag while reactor 0 itself
//! has nothing to do (it is not woken for the others' pairs: that would cost every pair a cross-thread
//! wakeup).

use std::time::Instant;

use super::Reactor;
use crate::service::notify::Notifier;

impl Reactor {
    /// Makes this reactor (reactor 0) the one that notifies the service manager.
    pub fn notify_to(&mut self, notifier: Notifier) {
        self.notifier = Some(notifier);
    }

    /// Connections open in the whole process, as far as this reactor knows.
    fn live_pairs(&self) -> usize {
        match self.siblings.board.as_ref() {
            Some(board) => usize::try_from(board.total().pairs_open.get()).unwrap_or(usize::MAX),
            None => self.pairs.len(),
        }
    }

    /// `READY=1`: at start, and when a reload has been applied or rejected.
    pub(super) fn notify_ready(&mut self) {
        let live = self.live_pairs();
        let now = self.now;
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.ready(live, now);
        }
    }

    /// `RELOADING=1`, unless a shutdown has begun (systemd is then waiting for the process to exit).
    pub(super) fn notify_reloading(&mut self) {
        if self.drain.is_some() {
            return;
        }
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.reloading();
        }
    }

    pub(super) fn notify_stopping(&mut self) {
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.stopping();
        }
    }

    /// When the notifier next has something to send: `None` without a watchdog or a held-back status.
    pub(super) fn notify_deadline(&self) -> Option<Instant> {
        self.notifier.as_ref().and_then(Notifier::deadline)
    }

    /// After each turn: the watchdog ping and the status, when due.
    pub(super) fn tend_notifier(&mut self) {
        if self.notifier.is_none() {
            return;
        }
        let live = self.live_pairs();
        let now = self.now;
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.tend(live, now);
        }
    }
}
