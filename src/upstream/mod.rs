//! Where a client's bytes go: a route and its upstreams.
//!
//! - [`admin`]: what the admin API set on upstream addresses: drained, disabled, a weight. Pure.
//! - [`balance`]: picking an upstream (round-robin, least-conn, random-two, source-hash). Pure.
//! - [`health`]: one upstream's up/down state machine with backoff. Pure.
//! - [`endpoint`]: a route's upstreams and their endpoints (one per address of a name): health, load,
//!   shared weights, the set kept current by re-resolution. Pure.
//! - [`listener`]: a route's listening sockets, TCP and Unix, with their `ready` bits.
//! - [`route`]: one route's listeners, upstreams, balancer, buffer pool and settings.
//! - [`prewarm`]: the `--prewarm` pool of never-used upstream connections.

pub(crate) mod admin;
pub(crate) mod balance;
pub(crate) mod clients;
pub(crate) mod endpoint;
pub(crate) mod health;
pub mod listener;
pub(crate) mod prewarm;
pub mod route;
