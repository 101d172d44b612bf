//! The file as TOML says it: serde's model of a `--config` file, before any value is checked.
//!
//! Every value that needs checking beyond its TOML type (durations, sizes, addresses) is a `Spanned`
//! string here, so that [`super::validate`] knows its line when it turns out to be bad. Unknown keys are
//! refused (`deny_unknown_fields`): a misspelled key is an error that names it, never a silent default.

use serde::Deserialize;
use toml::Spanned;

use crate::config::{Algorithm, Mode};

/// The whole file: the global keys, then the `[[route]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) shutdown_timeout: Option<Spanned<String>>,
    pub(super) metrics: Option<Spanned<String>>,
    pub(super) stats_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) route: Vec<RawRoute>,
}

/// One `[[route]]` table: a key per setting of [`crate::config::settings::ROUTE`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Option<Spanned<String>>,
    pub(super) listen: Spanned<OneOrMany>,
    /// Required in forward mode, absent in connect mode.
    pub(super) upstreams: Option<Spanned<Vec<RawUpstream>>>,
    pub(super) balance: Option<Algorithm>,
    pub(super) buffer_size: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<u32>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) connect_attempts: Option<Spanned<u32>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) fin_timeout: Option<Spanned<String>>,
    pub(super) max_connection_duration: Option<Spanned<String>>,
    pub(super) health_interval: Option<Spanned<String>>,
    pub(super) health_timeout: Option<Spanned<String>>,
    pub(super) fall: Option<Spanned<u32>>,
    pub(super) resolve_interval: Option<Spanned<String>>,
    pub(super) nodelay: Option<bool>,
    pub(super) keepalive: Option<Spanned<String>>,
    pub(super) backlog: Option<Spanned<u32>>,
    pub(super) unix_mode: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<Mode>>,
    pub(super) allow: Option<Spanned<Vec<String>>>,
    pub(super) proxy_auth: Option<Spanned<String>>,
    pub(super) send_proxy: Option<Spanned<String>>,
    pub(super) send_proxy_tlvs: Option<Spanned<Vec<String>>>,
    pub(super) accept_proxy: Option<bool>,
    pub(super) header_timeout: Option<Spanned<String>>,
}

/// `listen = "addr"` or `listen = ["addr", ...]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `"HOST:PORT"`, `"HOST:PORT,weight=N"` or `{ addr = "HOST:PORT", weight = N }`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "an upstream: \"HOST:PORT[,weight=N]\" or { addr = \"HOST:PORT\", weight = N } (no other keys)"
)]
pub(super) enum RawUpstream {
    Spec(String),
    Table(UpstreamTable),
}

/// `{ addr = "HOST:PORT", weight = N }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamTable {
    pub(super) addr: String,
    pub(super) weight: Option<u32>,
}
