//! What a closing pair tells the access log ([`crate::observe::access_log`]): its plain fields, read
//! from its stage as it closes, and the details gathered on the way (a PROXY header's addresses, a
//! CONNECT target and the status it was refused with, the limit that turned it away), kept boxed in
//! the pair only when there are some; the ClientHello's server name joins them at the close.

use std::time::{Instant, SystemTime};

use super::phase::Phase;
use super::Pair;
use crate::close::Cause;
use crate::datapath::stream::Socket;
use crate::observe::access_log::{Details, Path, Record};

impl<S: Socket> Pair<S> {
    /// The pair's details, created empty the first time one is noted.
    pub(super) fn details_mut(&mut self) -> &mut Details {
        self.details.get_or_insert_with(Box::default)
    }

    /// With `--accept-proxy`, the per-client limit (its `edgefwd_client_rejects_total` label) that
    /// turned the header's client away.
    pub(crate) fn note_limit(&mut self, limit: &'static str) {
        self.details_mut().limit = Some(limit);
    }

    /// The access log's line for this pair, closing now on `route` for `cause`. Its `details` move
    /// into the record: the pair is being torn down.
    pub(crate) fn access_record(&mut self, route: &str, cause: Cause, now: Instant) -> Record {
        let (c2u_bytes, u2c_bytes) = self.bytes();
        let path = (self.phase() == Phase::Established).then(|| {
            if self.c2u.splices() || self.u2c.splices() {
                Path::Splice
            } else {
                Path::Ring
            }
        });
        if let Some(reason) = self.proxy_header_rejection() {
            self.details_mut().proxy_reject = Some(reason.label());
        }
        if let Some(name) = self.sni.take() {
            self.details_mut().sni = Some(name.into());
        }
        Record {
            time: SystemTime::now(),
            route: route.to_owned(),
            client: self.client_addr,
            upstream: self.upstream_addr().cloned(),
            c2u_bytes,
            u2c_bytes,
            duration: now.duration_since(self.started),
            connect: self.connect_time(),
            cause: cause.as_str(),
            path,
            details: self.details.take(),
        }
    }
}
