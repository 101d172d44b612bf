//! Signals and shutdown. SIGHUP asks for a reload; SIGUSR1 reopens the `--access-log` file (reactor 0
//! passes it on; every reactor takes the signal, so that none dies of it, access log or not); the
//! first SIGTERM/SIGINT stops accepting (the listeners are closed, so new clients are refused by the
//! kernel) and lets live pairs finish until `--shutdown-timeout`, when the rest are cut with RST; a
//! second signal cuts them at once.
//!
//! With `--threads N` every reactor gets the signal and drains its own pairs, but the process says so
//! once: reactor 0 logs the start (with every reactor's pairs), and whichever reactor finishes last logs
//! the end with the sums of all ([`Stopped`]); the others log theirs at debug.

use std::sync::PoisonError;
use std::time::Instant;

use log::{debug, info, log};
use signal_hook::consts::{SIGHUP, SIGINT, SIGUSR1};

use super::{Exit, Reactor};
use crate::close::Cause;

/// The reactors that have finished their shutdown, and what they drained and cut, summed.
#[derive(Debug, Default)]
pub struct Stopped {
    /// The stop comes from a binary upgrade's hand-over (its SIGTERM is this process's own), so the
    /// shutdown logs that, not a signal nobody sent.
    handed_over: bool,
    reactors: usize,
    drained: usize,
    cut: usize,
}

/// Progress of a graceful shutdown.
#[derive(Debug)]
pub(super) struct Drain {
    pub(super) deadline: Instant,
    /// Pairs that ended on their own after the signal.
    drained: usize,
    /// Pairs closed by the shutdown itself.
    cut: usize,
    /// A second signal arrived.
    forced: bool,
}

impl Stopped {
    /// Marks the coming SIGTERM as the upgrade hand-over's own.
    pub(super) fn hand_over(&mut self) {
        self.handed_over = true;
    }
}

impl Drain {
    /// A pair closed during the shutdown: cut by it, or ended on its own.
    pub(super) fn note_closed(&mut self, cause: Cause) {
        if cause == Cause::Shutdown {
            self.cut += 1;
        } else {
            self.drained += 1;
        }
    }
}

impl Reactor {
    pub(super) fn on_signals(&mut self) {
        let received: Vec<i32> = self.signals.pending().collect();
        for signal in received {
            if signal == SIGHUP {
                self.request_reload();
                continue;
            }
            if signal == SIGUSR1 {
                self.reopen_access_log();
                continue;
            }
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            let (level, pairs) = (self.process_level(), self.pairs_everywhere());
            match self.drain.as_mut() {
                Some(drain) => {
                    log!(level, "second signal ({name}): closing {pairs} pairs now");
                    drain.forced = true;
                }
                None => self.begin_shutdown(name),
            }
        }
    }

    /// Stops accepting (closing the listeners refuses new clients) and lets live pairs finish.
    fn begin_shutdown(&mut self, signal: &str) {
        let registry = self.poll.registry();
        for (_, route) in self.routes.iter_mut() {
            for mut listener in route.listeners.drain(..) {
                // A `--threads` sibling's descriptor keeps the socket open, and with it this poller's
                // registration: deregistered first, so that its clients wake only the sibling. Failure
                // means it was not registered.
                let _ = registry.deregister(&mut listener.socket);
            }
            for mut listener in route.unix_listeners.drain(..) {
                let _ = registry.deregister(&mut listener.socket);
            }
        }
        self.warm = None;
        self.notify_stopping();
        let handed_over = (self.siblings.stopped.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .handed_over;
        let why = if handed_over {
            "handed over to the successor: draining".to_string()
        } else {
            format!("{signal}: shutting down")
        };
        log!(
            self.process_level(),
            "{why}, stopped accepting; waiting up to {}ms for {} live pairs",
            self.config.shutdown_timeout.as_millis(),
            self.pairs_everywhere()
        );
        self.drain = Some(Drain {
            deadline: self.now + self.config.shutdown_timeout,
            drained: 0,
            cut: 0,
            forced: false,
        });
    }

    /// Closes every remaining pair with RST: their transfers did not complete.
    pub(super) fn cut_all(&mut self) {
        let slots: Vec<usize> = self.pairs.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close_pair(slot, Cause::Shutdown);
        }
    }

    /// `Some` once a shutdown has nothing left to wait for.
    pub(super) fn finished(&mut self) -> Option<Exit> {
        let forced = self.drain.as_ref()?.forced;
        if forced {
            self.cut_all();
        }
        if !self.pairs.is_empty() {
            return None;
        }
        let drain = self.drain.as_ref()?;
        let mut stopped = (self.siblings.stopped.lock()).unwrap_or_else(PoisonError::into_inner);
        stopped.reactors += 1;
        stopped.drained += drain.drained;
        stopped.cut += drain.cut;
        if stopped.reactors >= self.config.threads {
            info!(
                "shutdown complete: drained={} cut={}",
                stopped.drained, stopped.cut
            );
        } else {
            debug!(
                "reactor {}: shutdown complete: drained={} cut={}",
                self.siblings.index, drain.drained, drain.cut
            );
        }
        Some(if forced { Exit::Forced } else { Exit::Graceful })
    }
}
