//! One client and its upstream, from accept to close.
//!
//! - [`pair`]: the two sockets, their two pump directions, the phases and deadlines.
//! - [`interest`]: how each of a pair's sockets is registered with the poller (muted reads under
//!   backpressure, write interest only while a write waits), one state machine per socket.
//! - `attempt`: the one retry policy: the next upstream (or CONNECT address) to try, or give up.
//! - `connect`: the lifecycle of getting a pair its upstream, which the reactor calls into.
//! - [`udp`]: UDP sessions, one per client address, and their datagrams.

pub(crate) mod attempt;
pub(crate) mod connect;
mod interest;
pub(crate) mod pair;
mod refusal;
pub(crate) mod udp;
