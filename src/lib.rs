//! edgefwd: a TCP port forwarder written as an explicit, edge-triggered `mio` reactor.
//!
//! One thread runs one loop ([`reactor`]). Every accepted client gets an upstream connection, and the
//! two sockets form a [`pair`](session::pair) in a slab. Each pair moves bytes in two independent
//! [`pump`](datapath::pump) directions, each through one fixed-capacity [`ring`](datapath::ring). Both
//! sockets are registered once, edge-triggered, for reading and writing (a socket whose direction is
//! blocked by a slow reader is muted for reads meanwhile); the kernel's edges are cached in user space
//! ([`readiness`](datapath::readiness)) and a bit is cleared only when a syscall proves it stale.
//! docs/architecture.md tells the whole story with transition tables.
//!
//! # Layout
//! `src/` is grouped by layer, lowest first; a module uses modules of its own layer and of the layers
//! below it, never above (tests/modules.rs fails on any cycle, folders included). docs/architecture.md
//! has the module map.
//! - Shared words, used by every layer: [`close`] (why a pair closed), [`way`] (c2u, u2c), [`token`]
//!   (`mio::Token` <-> listener / signals / (slot, side, generation)), [`throttle`] (rate-limited lines).
//! - [`wire`]: the bytes a client or upstream sends before forwarding starts, parsed and encoded. Pure.
//! - [`config`]: the validated configuration, every route setting declared once, the `--config` file,
//!   host names to addresses. No sockets.
//! - [`observe`]: the metrics table, its kinds and its Prometheus text.
//! - [`datapath`]: moving bytes: ring, cached readiness, one direction's pump, splice pipes, the socket
//!   seam (`stream`: what a pump and a pair need of a socket), TCP and Unix socket setup, the fd
//!   budget, the sockmap experiment.
//! - [`upstream`]: where bytes go: balancers, health, endpoints of a route's upstreams, per-client
//!   limits, the route and its listeners, and `--prewarm`.
//! - [`session`]: one client and its upstream: the pair, its phases, its registration (`interest`), its
//!   connect path (`connect`, with one retry policy in `attempt`); and UDP sessions (`udp`).
//! - [`service`]: the process as a system service: what a service manager (systemd) hands it and
//!   expects back (`Type=notify` notices, socket-activated listeners), the `--pid-file`, dropping root
//!   (`--user`, `--group`), the binary upgrade's hand-over. Uses no other module, so any layer may use it.
//! - [`reactor`]: owns `Poll`, the slabs, the timers and the worker threads; dispatches events and
//!   timers to sessions, accepts, reloads, probes, serves `--metrics`.

// The docs are built with `--document-private-items` (.ci/run): the internals are the textbook, so a
// public item's doc may link a private one, whose page exists.
#![allow(rustdoc::private_intra_doc_links)]

pub(crate) mod close;
pub mod config;
pub mod datapath;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod label_table;
pub mod observe;
pub mod reactor;
pub mod service;
pub(crate) mod session;
pub(crate) mod throttle;
pub(crate) mod token;
pub mod upstream;
pub(crate) mod way;
pub mod wire;
