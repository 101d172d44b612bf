//! Answering a CONNECT client with an error status (the bytes are [`Status::response`]'s), or an SNI
//! client whose hello names no route with the TLS `unrecognized_name` alert, the socket part: write the status, `shutdown(Write)`, then discard what the client still sends until its FIN,
//! and close after [`REFUSAL_LINGER`] whatever the client does. Closing a socket with unread bytes would
//! send an RST that can destroy the status before the client reads it.

use std::io;
use std::time::{Duration, Instant};

use crate::datapath::stream::Socket;
#[cfg(doc)]
use crate::wire::connect_request::Status;
use crate::wire::proxy_protocol::Reason;

/// How long a refused client has to read its status before the connection is closed anyway.
pub(super) const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// Reads a refused client's leftover bytes are discarded with, per event (the linger bounds the rest).
const DISCARD_READS: usize = 16;

/// An error status being written to a refused client.
#[derive(Debug)]
pub(super) struct Refusal {
    response: &'static [u8],
    written: usize,
    /// `shutdown(Write)` was done after the response.
    shut: bool,
    /// Close at this moment whatever the client does.
    pub(super) until: Instant,
    /// The PROXY header before the CONNECT head was rejected for this (a timeout): the reactor counts
    /// it as it closes the pair.
    pub(super) rejected: Option<Reason>,
}

/// Where a refusal stands after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// Waiting for the client (room to write, its FIN).
    Waiting,
    /// The per-event read slice is spent with bytes perhaps left: run again after the other pairs.
    Yield,
    /// The client's FIN came, or the socket failed: close.
    Done,
}

impl Refusal {
    /// A refusal writing `response`: a CONNECT client's [`Status::response`], or the TLS alert an SNI
    /// client with no route gets.
    pub(super) fn new(response: &'static [u8], now: Instant, rejected: Option<Reason>) -> Refusal {
        Refusal {
            response,
            written: 0,
            shut: false,
            until: now + REFUSAL_LINGER,
            rejected,
        }
    }

    /// Writes the status (a fresh socket's send buffer takes it whole, but WouldBlock is honoured), then
    /// `shutdown(Write)`, then discards what the client sends until its FIN.
    pub(super) fn write<S: Socket>(&mut self, client: &mut S) -> Progress {
        while self.written < self.response.len() {
            match client.write(&self.response[self.written..]) {
                Ok(0) => return Progress::Done,
                Ok(n) => self.written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Progress::Waiting,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Done,
            }
        }
        if !self.shut {
            self.shut = true;
            if client.shutdown_write().is_err() {
                return Progress::Done;
            }
        }
        let mut sink = [0u8; 4096];
        for _ in 0..DISCARD_READS {
            match client.read(&mut sink) {
                Ok(0) => return Progress::Done,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Progress::Waiting,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Done,
            }
        }
        // The slice is spent and the socket may still hold bytes (and a FIN behind them). No new edge
        // will say so: come back after the other pairs had their turn.
        Progress::Yield
    }
}
