//! The reactor's side of `--access-log`: offering a line to the writer thread without waiting (a full
//! queue drops it, counted in `edgefwd_access_log_dropped_total`), the line of a client turned away at
//! accept, and SIGUSR1. The lines themselves are `observe::access_log`'s; a closing pair's is built in
//! `teardown`.

use std::net::SocketAddr;

use log::info;

use super::Reactor;
use crate::close::Cause;
use crate::observe::access_log::{Details, Record};

impl Reactor {
    /// Whether lines are wanted: building one costs a clock read and a copy of the route's name.
    fn logs_access(&self) -> bool {
        self.siblings.access_log.is_some()
    }

    /// Hands `record` to the writer thread, or counts it dropped.
    pub(super) fn log_access(&mut self, record: Record) {
        if let Some(log) = self.siblings.access_log.as_ref() {
            if !log.offer(record) {
                self.metrics.access_log_dropped += 1;
            }
        }
    }

    /// A client reset at accept by the route's ACL or a per-client limit (`limit`, its
    /// `edgefwd_client_rejects_total` label).
    pub(super) fn log_turned_away(
        &mut self,
        route: usize,
        client: SocketAddr,
        limit: &'static str,
    ) {
        let Some(route) = self.routes.get(route).filter(|_| self.logs_access()) else {
            return;
        };
        let name = &route.config.name;
        let mut record = Record::turned_away(name, client, Cause::Rejected.as_str());
        record.details = Some(Box::new(Details {
            limit: Some(limit),
            ..Details::default()
        }));
        self.log_access(record);
    }

    /// SIGUSR1: reactor 0 asks the writer to reopen the file (every reactor receives the signal).
    pub(super) fn reopen_access_log(&self) {
        if self.siblings.index != 0 {
            return;
        }
        if let Some(log) = self.siblings.access_log.as_ref() {
            info!("SIGUSR1: reopening the access log");
            log.reopen();
        }
    }
}
