//! edgefwd: a TCP port forwarder written as an explicit, edge-triggered `mio` reactor.
//!
//! One thread runs one loop ([`reactor`]). Every accepted client gets an upstream connection, and the two
//! sockets form a [`pair`] in a slab. Each pair moves bytes in two independent [`pump`] directions, each
//! through one fixed-capacity [`ring`]. Both sockets are registered once, edge-triggered, for reading and
//! writing (a socket whose direction is blocked by a slow reader is muted for reads meanwhile); the
//! kernel's edges are cached in user space ([`readiness`]) and a bit is cleared only when a syscall proves
//! it stale. docs/architecture.md tells the whole story with transition tables.
//!
//! # Layout
//! - [`config`]: validated configuration and the size/duration syntaxes. No I/O.
//! - [`settings`]: every route setting declared once (key, flag, default, reload, doc line, start line);
//!   docs/config.md's table is rendered from it.
//! - [`fdlimit`]: raises RLIMIT_NOFILE at start.
//! - [`budget`]: the process's fd budget, in slots of two fds, shared by pairs and pipes of every route
//!   and reactor.
//! - [`file`](mod@file): the `--config` TOML file -> [`config::Config`], errors naming file, line and key.
//! - [`dns`]: host names to addresses (blocking `getaddrinfo`), the first few of each, each once.
//! - [`resolve`]: the worker threads for blocking work (DNS, reading the file on SIGHUP, CONNECT lookups),
//!   which wake the loop through a `Waker`.
//! - [`balance`]: picking an upstream (round-robin, least-conn, random-two, source-hash). Pure.
//! - [`health`]: one upstream's up/down state machine with backoff. Pure.
//! - [`proxy_protocol`]: PROXY protocol v1/v2 headers, encoded and parsed (TLVs walked). Pure.
//! - [`crc32c`]: the CRC-32C a PROXY v2 header may carry. Pure.
//! - [`connect_request`]: the head of an HTTP CONNECT request and the status answers. Pure.
//! - [`allow`]: the destinations a CONNECT may reach (default deny). Pure.
//! - [`greeting`]: what a client sends before forwarding starts (PROXY header, CONNECT head).
//! - [`net`]: socket2 setup (listener, non-blocking connect, options) and `io::Error` -> outcome.
//! - [`ring`]: fixed-capacity byte ring with vectored I/O; storage borrowed from a pool while non-empty.
//! - [`readiness`]: cached readiness of one socket.
//! - [`token`]: `mio::Token` <-> listener / signals / (slot, side, generation).
//! - [`timer`]: the deadline heap.
//! - [`throttle`]: rate-limited warnings.
//! - [`sockmap`]: in-kernel forwarding through a BPF sockhash (Linux); measured, not wired into the
//!   reactor (docs/sockmap.md says why).
//! - [`splice`]: `--splice` zero-copy pipes (Linux).
//! - [`way`]: which way bytes flow (c2u, u2c): named by pumps, logs and metrics alike.
//! - [`close`]: why a pair closed: named by pairs, the reactor and metrics alike.
//! - [`pump`]: one direction, `src -> ring -> dst`, its state machine.
//! - [`pair`]: a client and its upstream: lifecycle, connect check, timeouts.
//! - [`endpoint`]: a route's upstreams and their endpoints (one per address of a name): health, load,
//!   shared weights, the set kept current by re-resolution. Pure.
//! - [`route`]: one route's listeners, upstreams (their endpoints), balancer, pool and settings.
//! - [`metrics`]: every metric one row of a table -> plain-integer counters, Prometheus text, the
//!   `--stats-interval` line; `metric_kinds`: counter, gauge, labelled counters, histogram.
//! - [`scrape`]: the `--metrics` HTTP responder, served inside the loop.
//! - [`prewarm`]: `--prewarm` pool of never-used upstream connections.
//! - [`reactor`]: owns `Poll`, the routes, the pairs, the probes and the timers; the loop, accept,
//!   failover, teardown and reload.

pub mod allow;
pub mod balance;
pub mod budget;
pub mod close;
pub mod config;
pub mod connect_request;
pub mod crc32c;
pub mod dns;
pub mod endpoint;
pub mod fdlimit;
pub mod file;
#[cfg(test)]
mod fuzz;
pub mod greeting;
pub mod health;
mod metric_kinds;
pub mod metrics;
pub mod net;
pub mod pair;
pub mod prewarm;
pub mod proxy_protocol;
pub mod pump;
pub mod reactor;
pub mod readiness;
pub mod resolve;
pub mod ring;
pub mod route;
pub mod scrape;
pub mod settings;
#[cfg(target_os = "linux")]
pub mod sockmap;
pub mod splice;
pub mod throttle;
pub mod timer;
pub mod token;
pub mod way;
