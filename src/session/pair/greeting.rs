//! The phases before a connect: reading the client's greeting (a PROXY header, a CONNECT head, a TLS
//! ClientHello) and refusing a CONNECT client with an error status (an SNI client with no route with a
//! TLS alert), and the PROXY header a pair sends upstream
//! (`--send-proxy`).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, info};

use super::phase::Phase;
use super::stage::{Connecting, Stage};
use super::{Outcome, Pair};
use crate::close::Cause;
use crate::datapath::stream::Socket;
use crate::observe::metric_kinds::SniReject;
use crate::session::attempt::Plan;
use crate::session::refusal::{Progress, Refusal};
use crate::wire::connect_request::Status;
use crate::wire::greeting::{Target, Verdict};
use crate::wire::proxy_protocol::{self, Reason, Version};
use crate::wire::sni::UNRECOGNIZED_NAME_ALERT;

impl<S: Socket> Pair<S> {
    /// Reads the client's greeting, never more than its stage's bound: bytes after the greeting stay in
    /// the kernel for the pump (the readable bit stays set, so it will read them).
    pub(super) fn read_greeting(&mut self, now: Instant) -> Outcome {
        let mut chunk = [0u8; 4096];
        loop {
            let Stage::Greeting(greeting) = &mut self.stage else {
                return Outcome::Open;
            };
            let room = greeting.room().min(chunk.len());
            if !self.client_ready.readable {
                return Outcome::Open;
            }
            if room == 0 {
                // Cannot happen: each parser decides before its bound is reached.
                return self.conclude(Verdict::Drop("greeting too long".into()), now);
            }
            match self.client.read(&mut chunk[..room]) {
                Ok(0) => {
                    greeting.give_up(Reason::ClientClosed);
                    self.hello_given_up(SniReject::ClientClosed);
                    return Outcome::Close(Cause::ClientAbort);
                }
                Ok(n) => {
                    greeting.extend(&chunk[..n]);
                    match greeting.advance() {
                        Verdict::More => {}
                        verdict => return self.conclude(verdict, now),
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.client_ready.readable = false;
                    return Outcome::Open;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    greeting.give_up(Reason::ClientClosed);
                    self.hello_given_up(SniReject::ClientClosed);
                    return Outcome::Close(Cause::ClientReset);
                }
            }
        }
    }

    /// The pair gives up on the ClientHello it was waiting for (`why`: its timeout, or the client
    /// left), for the reactor to count as it closes the pair. Nothing if it was not reading one.
    pub(super) fn hello_given_up(&mut self, why: SniReject) {
        if matches!(&self.stage, Stage::Greeting(greeting) if greeting.reading_hello()) {
            self.sni_rejected = Some(why);
        }
    }

    /// Acts on a finished greeting: connect, answer with an error, or drop.
    fn conclude(&mut self, verdict: Verdict, now: Instant) -> Outcome {
        match verdict {
            Verdict::More => Outcome::Open,
            Verdict::Ready { target, leftover } => {
                if let Target::Routed(routed) = &target {
                    // The route's own `--send-proxy`, and its header before the hello.
                    self.send_proxy = routed.choice.send_proxy;
                    self.sni = routed.server_name.as_deref().map(Box::from);
                }
                let connecting = Connecting {
                    socket: None,
                    addr: None,
                    lease: None,
                    plan: Plan::Upstreams {
                        tried: Default::default(),
                    },
                    since: now,
                    client_pipelined: !leftover.is_empty(),
                };
                let Stage::Greeting(greeting) = self.set_stage(Stage::Connecting(connecting), now)
                else {
                    return Outcome::Open;
                };
                if let Some(source) = greeting.source {
                    debug!(
                        "conn={} PROXY header: client={source} (peer {})",
                        self.id, self.client_addr
                    );
                    let peer = self.client_addr;
                    let details = self.details_mut();
                    details.proxy_peer = Some(peer);
                    details.proxy_dst = greeting.destination;
                    self.client_addr = source;
                }
                self.push_proxy_header(greeting.destination, &greeting.carried_tlvs);
                self.c2u.push_preamble(&leftover);
                if matches!(target, Target::Direct(_) | Target::Named(_)) {
                    self.details_mut().connect_target = Some(target.to_string());
                    debug!(
                        "conn={} client={} CONNECT {target}",
                        self.id, self.client_addr
                    );
                    self.u2c.push_preamble(Status::Established.response());
                }
                // A hang-up that came with the head was reported once, while the greeting was read, and
                // edge-triggered epoll will not report it again: act on it now, as `Connecting` acts on a
                // later one, before any connect or lookup is spent on a client that is gone.
                if self.client_ready.read_closed || self.client_ready.failed {
                    if let outcome @ Outcome::Close(_) = self.check_client_left() {
                        return outcome;
                    }
                }
                Outcome::Connect(target)
            }
            Verdict::Answer(status, why) => {
                debug!(
                    "conn={} client={} CONNECT refused: {} ({why})",
                    self.id,
                    self.client_addr,
                    status.code()
                );
                self.refuse(status, now)
            }
            // The greeting stays, for the reactor to count and log the reason as it closes the pair: no
            // upstream exists yet, so nothing reaches one.
            Verdict::BadProxyHeader(_) => Outcome::Close(Cause::Rejected),
            Verdict::Drop(why) => {
                info!("conn={} client={} closed: {why}", self.id, self.client_addr);
                Outcome::Close(Cause::Rejected)
            }
            // Nothing was sent upstream (there is no upstream yet), nor is anything sent to the client.
            Verdict::BadHello(reason) => {
                debug!(
                    "conn={} client={} closed: {reason} (ClientHello rejected, reason={})",
                    self.id,
                    self.client_addr,
                    reason.label()
                );
                self.sni_rejected = Some(SniReject::Hello(reason));
                Outcome::Close(Cause::Rejected)
            }
            Verdict::NoRoute(name) => {
                debug!(
                    "conn={} client={} server name {} matches no route and none is default: unrecognized_name",
                    self.id,
                    self.client_addr,
                    name.as_deref().unwrap_or("(none)")
                );
                self.sni_rejected = Some(SniReject::NoRoute);
                self.answer(&UNRECOGNIZED_NAME_ALERT, now)
            }
        }
    }

    /// Why this pair's PROXY header failed (`edgefwd_proxy_header_rejected_total{reason}`), if it did:
    /// refused by the parser, timed out, or the client left before it ended.
    pub(crate) fn proxy_header_rejection(&self) -> Option<Reason> {
        match &self.stage {
            Stage::Greeting(greeting) => greeting.refused(),
            Stage::Refusing(refusal) => refusal.rejected,
            Stage::Connecting(_) | Stage::Established(_) => None,
        }
    }

    /// Starts answering the client with an error status; whatever was queued for either side is
    /// dropped, and so is the upstream socket if there is one. A PROXY header that was rejected first
    /// (timed out) stays on record for the reactor.
    pub(crate) fn refuse(&mut self, status: Status, now: Instant) -> Outcome {
        self.details_mut().status = Some(status.code());
        self.answer(status.response(), now)
    }

    /// [`Pair::refuse`] with any answer: a status, or a TLS alert.
    fn answer(&mut self, response: &'static [u8], now: Instant) -> Outcome {
        self.c2u.drop_preamble();
        self.u2c.drop_preamble();
        let rejected = self.proxy_header_rejection();
        self.set_stage(Stage::Refusing(Refusal::new(response, now, rejected)), now);
        self.write_refusal()
    }

    /// Writes the status, then waits for the client's FIN ([`Refusal::write`]).
    pub(super) fn write_refusal(&mut self) -> Outcome {
        let Stage::Refusing(refusal) = &mut self.stage else {
            return Outcome::Close(Cause::Rejected);
        };
        match refusal.write(&mut self.client) {
            Progress::Waiting => Outcome::Open,
            Progress::Yield => Outcome::Yield,
            Progress::Done => Outcome::Close(Cause::Rejected),
        }
    }

    /// Queues the PROXY header: from the client's address to `destination` (the one a received header
    /// carried) or else the address the client connected to, with the `tlvs` carried from the client's
    /// own header (`--send-proxy-tlvs`).
    fn push_proxy_header(&mut self, destination: Option<SocketAddr>, tlvs: &[u8]) {
        let Some(version) = self.send_proxy else {
            return;
        };
        // A Unix client has no IP address to send (its socket answers no `local_addr`), unless a PROXY
        // header it sent carried some.
        let header = match destination.map_or_else(|| self.client.local_addr(), Ok) {
            Ok(destination) => {
                proxy_protocol::encode_with_tlvs(version, self.client_addr, destination, tlvs)
            }
            Err(_) => proxy_protocol::encode_unknown(version, tlvs),
        };
        self.c2u.push_preamble(&header);
    }

    /// `--send-proxy`: the upstream stream starts with a PROXY header naming the client. A pair without
    /// a greeting queues it now; one with a greeting when the greeting (which may carry the client's
    /// address) is done.
    pub(crate) fn with_send_proxy(mut self, version: Option<Version>) -> Pair<S> {
        self.send_proxy = version;
        if self.phase() != Phase::Greeting {
            self.push_proxy_header(None, &[]);
        }
        self
    }
}
