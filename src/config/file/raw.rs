//! The file as TOML says it: serde's model of a `--config` file, before any value is checked.
//!
//! Every value that needs checking beyond its TOML type (durations, sizes, addresses) is a `Spanned`
//! string here, so that [`super::validate`] knows its line when it turns out to be bad. Unknown keys are
//! refused (`deny_unknown_fields`): a misspelled key is an error that names it, never a silent default.
//! Durations and sizes are a [`Quantity`]: a string in the flag syntax, or a TOML integer.

use std::fmt;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::config::{Algorithm, Mode};

/// The whole file: the global keys, then the `[[route]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) shutdown_timeout: Option<Spanned<Quantity>>,
    pub(super) metrics: Option<Spanned<String>>,
    pub(super) admin: Option<Spanned<String>>,
    pub(super) stats_interval: Option<Spanned<Quantity>>,
    pub(super) access_log: Option<Spanned<String>>,
    pub(super) log_format: Option<Spanned<String>>,
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
    pub(super) buffer_size: Option<Spanned<Quantity>>,
    pub(super) max_connections: Option<Spanned<u32>>,
    pub(super) connect_timeout: Option<Spanned<Quantity>>,
    pub(super) connect_attempts: Option<Spanned<u32>>,
    pub(super) idle_timeout: Option<Spanned<Quantity>>,
    pub(super) fin_timeout: Option<Spanned<Quantity>>,
    pub(super) max_connection_duration: Option<Spanned<Quantity>>,
    pub(super) health_interval: Option<Spanned<Quantity>>,
    pub(super) health_timeout: Option<Spanned<Quantity>>,
    pub(super) fall: Option<Spanned<u32>>,
    pub(super) rise: Option<Spanned<u32>>,
    pub(super) health_send: Option<Spanned<String>>,
    pub(super) health_expect: Option<Spanned<String>>,
    pub(super) resolve_interval: Option<Spanned<Quantity>>,
    pub(super) nodelay: Option<bool>,
    pub(super) keepalive: Option<Spanned<Quantity>>,
    pub(super) backlog: Option<Spanned<u32>>,
    pub(super) unix_mode: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<Mode>>,
    pub(super) allow: Option<Spanned<Vec<String>>>,
    pub(super) proxy_auth: Option<Spanned<String>>,
    pub(super) send_proxy: Option<Spanned<String>>,
    pub(super) send_proxy_tlvs: Option<Spanned<Vec<String>>>,
    pub(super) accept_proxy: Option<bool>,
    pub(super) header_timeout: Option<Spanned<Quantity>>,
    pub(super) max_conns_per_client: Option<Spanned<u32>>,
    pub(super) conn_rate_per_client: Option<Spanned<String>>,
    pub(super) per_client_prefix: Option<Spanned<String>>,
    pub(super) client_allow: Option<Spanned<Vec<String>>>,
    pub(super) client_deny: Option<Spanned<Vec<String>>>,
    pub(super) queue_timeout: Option<Spanned<Quantity>>,
    pub(super) sni: Option<Spanned<Vec<String>>>,
    pub(super) alpn: Option<Spanned<Vec<String>>>,
    pub(super) default: Option<Spanned<bool>>,
    pub(super) udp_idle_timeout: Option<Spanned<Quantity>>,
    pub(super) udp_max_sessions: Option<Spanned<u32>>,
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
    expecting = "an upstream: \"HOST:PORT[,weight=N]\", \"unix:PATH[,weight=N]\" or { addr = \"HOST:PORT\", weight = N } (no other keys)"
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

/// A duration or a size as the file gives it: a string in the flag syntax (`"5s"`, `"16k"`), or a TOML
/// integer, which means what a bare number means to the flag (seconds, bytes). `connect_timeout = 5` is
/// what an operator writes first, and the docs had always said a bare number is seconds; only the TOML
/// type refused it. Kept as text, so that [`super::validate`] parses both forms with the flag's parser.
#[derive(Debug)]
pub(super) struct Quantity(String);

impl AsRef<str> for Quantity {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Quantity, D::Error> {
        deserializer.deserialize_any(QuantityVisitor)
    }
}

/// Accepts a string or a non-negative integer; anything else (a float, a negative number, a boolean)
/// is refused with [`Visitor::expecting`]'s words.
struct QuantityVisitor;

impl Visitor<'_> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(
            "a string such as \"5s\" or \"16k\", or a whole number (seconds for a duration, bytes for a size)",
        )
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Quantity, E> {
        Ok(Quantity(text.to_string()))
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Quantity, E> {
        Ok(Quantity(number.to_string()))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Quantity, E> {
        u64::try_from(number)
            .map(|number| Quantity(number.to_string()))
            .map_err(|_| E::invalid_value(Unexpected::Signed(number), &self))
    }
}
