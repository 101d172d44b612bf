//! What the process counts: every metric declared once in [`metrics`]'s table, over the kinds in
//! `metric_kinds` (counter, gauge, labelled counters, histogram), rendered as Prometheus text and the
//! `--stats-interval` line; and in [`routed`], the figures labelled by route and upstream, which the
//! reactors share rather than copy. The `--metrics` HTTP responder is the reactor's (`reactor::scrape`).
//! [`admin`]: the admin API's requests, parsed and routed, and its answers merged and written as JSON
//! (its HTTP server is `reactor::admin`). And what the process writes down: the access log
//! ([`access_log`]), a line per connection.

pub mod access_log;
pub(crate) mod admin;
pub(crate) mod metric_kinds;
pub mod metrics;
pub mod routed;
