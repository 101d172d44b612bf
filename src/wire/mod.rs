//! Wire formats: what a client (or an upstream) sends before forwarding starts, parsed and encoded.
//! Everything here is pure (no sockets, no clock) and fuzzed: the parsers read untrusted bytes.
//!
//! - [`proxy_protocol`]: PROXY protocol v1/v2 headers, encoded and parsed (TLVs walked);
//!   [`crc32c`]: the checksum a v2 header may carry.
//! - [`connect_request`]: the head of an HTTP CONNECT request, and the statuses answered to it.
//! - [`allow`]: the destinations a CONNECT may reach (default deny).
//! - [`greeting`]: a client's greeting (PROXY header, CONNECT head, or both), read incrementally to a
//!   verdict: where to connect, what to answer, or why to drop.
//! - [`tls_hello`]: a TLS ClientHello, read without being consumed, for SNI routing; [`sni`]: which
//!   route of a shared listen address takes it.
//! - [`tcp_check`]: a health probe's `health_send` / `health_expect`, and the verdict on an answer.

pub mod allow;
pub mod connect_request;
pub mod crc32c;
pub(crate) mod greeting;
pub mod proxy_protocol;
pub mod sni;
pub mod tcp_check;
pub mod tls_hello;
