//! UDP forwarding: a session per client address, each with its own connected upstream socket.
//!
//! - [`table`]: the sessions by client address, in recency order, bounded, with idle expiry. Pure.
//! - [`batch`]: datagrams in batches (`recvmmsg`/`sendmmsg` on Linux).
//! - [`forward`]: a UDP route's sockets and the datagrams between them.
//!
//! docs/udp.md has the design and its limits.

pub(crate) mod batch;
pub(crate) mod forward;
pub(crate) mod table;
