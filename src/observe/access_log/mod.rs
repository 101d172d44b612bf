//! The access log: one line per finished connection (and per client turned away), in logfmt or JSON.
//!
//! This file is the record and its two renderings, pure; [`writer`] is the thread that writes them.
//! The reactor fills a [`Record`] as it tears a pair down and hands it to the writer without waiting
//! (a full queue drops the line and counts it): the log is a window on the forwarder, never a brake on
//! it. Rendering happens on the writer thread, so a reactor pays for a record's fields, not its text.
//!
//! Every line has the same ten keys, in this order, `-` (logfmt) or `null` (JSON) when a connection
//! never had the value: `time`, `route`, `client`, `upstream`, `c2u_bytes`, `u2c_bytes`,
//! `duration_ms`, `connect_ms`, `cause`, `path`. Then the [`Details`] that apply, and only those:
//! what a PROXY header carried, a CONNECT target and status, why a client was turned away, the TLS
//! server name. docs/operations.md lists them for the reader.

pub mod writer;

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::access_log::Format;
use crate::config::UpstreamAddr;

/// One finished connection, as the reactor saw it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// When it closed.
    pub(crate) time: SystemTime,
    pub(crate) route: String,
    /// The client: the peer, or the source a PROXY header carried (`--accept-proxy`).
    pub(crate) client: SocketAddr,
    /// The upstream address connected to, or the last one tried; `None` if none was.
    pub(crate) upstream: Option<UpstreamAddr>,
    /// Bytes forwarded client -> upstream (the PROXY header edgefwd sends included).
    pub(crate) c2u_bytes: u64,
    /// Bytes forwarded upstream -> client (a CONNECT `200` line included).
    pub(crate) u2c_bytes: u64,
    /// From accept to close.
    pub(crate) duration: Duration,
    /// From accept to the upstream connect completing; `None` if it never did.
    pub(crate) connect: Option<Duration>,
    /// The close cause's label (`edgefwd_closes_total{cause}`).
    pub(crate) cause: &'static str,
    /// How bytes moved at the end; `None` if the pair never forwarded.
    pub(crate) path: Option<Path>,
    /// What only some connections have; boxed, so that a plain pair's record stays small.
    pub(crate) details: Option<Box<Details>>,
}

/// How a pair moved its bytes when it closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// At least one direction was splicing (`--splice`): bytes went socket -> pipe -> socket.
    Splice,
    /// Both directions went through their rings.
    Ring,
}

impl Path {
    fn as_str(self) -> &'static str {
        match self {
            Path::Splice => "splice",
            Path::Ring => "ring",
        }
    }
}

/// The fields a line has only when they apply. Each becomes a key when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Details {
    /// `proxy_peer`: the address that sent the PROXY header (a load balancer), when the header's
    /// source became the `client`.
    pub(crate) proxy_peer: Option<SocketAddr>,
    /// `proxy_dst`: the destination the PROXY header carried.
    pub(crate) proxy_dst: Option<SocketAddr>,
    /// `proxy_reject`: why the PROXY header was refused (`edgefwd_proxy_header_rejected_total{reason}`).
    pub(crate) proxy_reject: Option<&'static str>,
    /// `connect_target`: the `host:port` a CONNECT client asked for, as it wrote it.
    pub(crate) connect_target: Option<String>,
    /// `status`: the HTTP status a CONNECT client was answered with, when it was refused (403, 502...).
    pub(crate) status: Option<u16>,
    /// `limit`: the ACL or per-client limit that turned the client away
    /// (`edgefwd_client_rejects_total{limit}`).
    pub(crate) limit: Option<&'static str>,
    /// `sni`: the server name of the TLS ClientHello that chose the route (SNI routing,
    /// docs/tls-sni.md).
    pub(crate) sni: Option<String>,
}

/// One value of a line, before rendering.
enum Value<'a> {
    Text(&'a str),
    Addr(SocketAddr),
    Count(u64),
    Millis(Duration),
    Absent,
}

impl Record {
    /// A client turned away before it became a pair (an ACL or per-client limit at accept, nothing to
    /// connect to): no bytes, no upstream, closed as it arrived.
    pub(crate) fn turned_away(route: &str, client: SocketAddr, cause: &'static str) -> Record {
        Record {
            time: SystemTime::now(),
            route: route.to_owned(),
            client,
            upstream: None,
            c2u_bytes: 0,
            u2c_bytes: 0,
            duration: Duration::ZERO,
            connect: None,
            cause,
            path: None,
            details: None,
        }
    }

    /// The line in `format`, newline included, appended to `out`.
    pub(crate) fn render(&self, format: Format, out: &mut String) {
        let time = rfc3339_millis(self.time);
        let upstream = self.upstream.as_ref().map(ToString::to_string);
        let mut fields = vec![
            ("time", Value::Text(&time)),
            ("route", Value::Text(&self.route)),
            ("client", Value::Addr(self.client)),
            (
                "upstream",
                upstream.as_deref().map_or(Value::Absent, Value::Text),
            ),
            ("c2u_bytes", Value::Count(self.c2u_bytes)),
            ("u2c_bytes", Value::Count(self.u2c_bytes)),
            ("duration_ms", Value::Millis(self.duration)),
            (
                "connect_ms",
                self.connect.map_or(Value::Absent, Value::Millis),
            ),
            ("cause", Value::Text(self.cause)),
            (
                "path",
                self.path
                    .map_or(Value::Absent, |path| Value::Text(path.as_str())),
            ),
        ];
        if let Some(details) = self.details.as_deref() {
            details.push(&mut fields);
        }
        match format {
            Format::Text => logfmt(&fields, out),
            Format::Json => json(&fields, out),
        }
    }
}

impl Details {
    /// Adds the fields that are set, in a fixed order.
    fn push<'a>(&'a self, fields: &mut Vec<(&'static str, Value<'a>)>) {
        let addrs = [
            ("proxy_peer", self.proxy_peer),
            ("proxy_dst", self.proxy_dst),
        ];
        fields.extend(
            addrs
                .into_iter()
                .filter_map(|(key, addr)| Some((key, Value::Addr(addr?)))),
        );
        let texts = [
            ("proxy_reject", self.proxy_reject),
            ("connect_target", self.connect_target.as_deref()),
            ("limit", self.limit),
            ("sni", self.sni.as_deref()),
        ];
        fields.extend(
            texts
                .into_iter()
                .filter_map(|(key, text)| Some((key, Value::Text(text?)))),
        );
        if let Some(status) = self.status {
            fields.push(("status", Value::Count(u64::from(status))));
        }
    }
}

/// logfmt: `key=value` separated by spaces; a value that is empty or holds a space, a quote, an `=` or
/// a control character is quoted, with `"` and `\` escaped (and control characters as `\n`, `\u{..}`).
fn logfmt(fields: &[(&str, Value<'_>)], out: &mut String) {
    for (index, (key, value)) in fields.iter().enumerate() {
        if index > 0 {
            out.push(' ');
        }
        out.push_str(key);
        out.push('=');
        match value {
            Value::Text(text) if needs_quotes(text) => quoted(text, out),
            Value::Text(text) => out.push_str(text),
            Value::Addr(addr) => push_display(out, addr),
            Value::Count(count) => push_display(out, count),
            Value::Millis(duration) => millis(*duration, out),
            Value::Absent => out.push('-'),
        }
    }
    out.push('\n');
}

/// One JSON object; addresses and texts are strings, counts and milliseconds numbers, absent values
/// `null`.
fn json(fields: &[(&str, Value<'_>)], out: &mut String) {
    out.push('{');
    for (index, (key, value)) in fields.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        quoted(key, out);
        out.push(':');
        match value {
            Value::Text(text) => quoted(text, out),
            Value::Addr(addr) => quoted(&addr.to_string(), out),
            Value::Count(count) => push_display(out, count),
            Value::Millis(duration) => millis(*duration, out),
            Value::Absent => out.push_str("null"),
        }
    }
    out.push_str("}\n");
}

fn needs_quotes(text: &str) -> bool {
    text.is_empty()
        || text
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control())
}

/// `text` in double quotes, escaped as JSON escapes it (which logfmt readers accept too).
fn quoted(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_display(out: &mut String, value: &dyn std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{value}");
}

/// Milliseconds with three decimals (microseconds): a loopback connect takes well under one.
fn millis(duration: Duration, out: &mut String) {
    let micros = duration.as_micros();
    let _ = write!(out, "{}.{:03}", micros / 1000, micros % 1000);
}

/// RFC 3339 in UTC with milliseconds: `2026-12-07T01:10:34.123Z`. A time before 1970 (a clock set
/// wrong) is written as the epoch.
fn rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`, for
/// days on or after the epoch): eras of 400 years, years starting in March so the leap day is last.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            time: UNIX_EPOCH + Duration::from_millis(1_796_606_234_123),
            route: String::from("web"),
            client: SocketAddr::from(([127, 0, 0, 1], 40000)),
            upstream: Some(SocketAddr::from(([127, 0, 0, 1], 8000)).into()),
            c2u_bytes: 12,
            u2c_bytes: 3456,
            duration: Duration::from_micros(12_345_678),
            connect: Some(Duration::from_micros(250)),
            cause: "client-fin",
            path: Some(Path::Ring),
            details: None,
        }
    }

    fn rendered(record: &Record, format: Format) -> String {
        let mut out = String::new();
        record.render(format, &mut out);
        out
    }

    #[test]
    fn test_time_is_rfc3339_utc_with_millis() {
        let time = UNIX_EPOCH + Duration::from_millis(1_796_606_234_123);
        assert_eq!(rfc3339_millis(time), "2026-12-07T01:17:14.123Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day, and the last millisecond of a year.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
        let eve = UNIX_EPOCH + Duration::from_millis(1_704_067_199_999);
        assert_eq!(rfc3339_millis(eve), "2023-12-31T23:59:59.999Z");
    }

    /// Every day from 1970 to 2400 follows the day before it.
    #[test]
    fn test_civil_from_days_counts_every_day() {
        let mut last = (1969, 12, 31);
        for days in 0..157_000 {
            let (year, month, day) = civil_from_days(days);
            let next_of_last = if day == 1 {
                (month == 1 && year == last.0 + 1 && last.1 == 12 && last.2 == 31)
                    || (month == last.1 + 1 && year == last.0 && last.2 >= 28)
            } else {
                (year, month, day) == (last.0, last.1, last.2 + 1)
            };
            assert!(next_of_last, "{days}: {last:?} then {year}-{month}-{day}");
            last = (year, month, day);
        }
    }

    #[test]
    fn test_text_line_has_every_key_in_order() {
        assert_eq!(
            rendered(&record(), Format::Text),
            "time=2026-12-07T01:17:14.123Z route=web client=127.0.0.1:40000 upstream=127.0.0.1:8000 \
             c2u_bytes=12 u2c_bytes=3456 duration_ms=12345.678 connect_ms=0.250 cause=client-fin path=ring\n"
        );
    }

    #[test]
    fn test_json_line_is_one_object() {
        assert_eq!(
            rendered(&record(), Format::Json),
            "{\"time\":\"2026-12-07T01:17:14.123Z\",\"route\":\"web\",\"client\":\"127.0.0.1:40000\",\
             \"upstream\":\"127.0.0.1:8000\",\"c2u_bytes\":12,\"u2c_bytes\":3456,\"duration_ms\":12345.678,\
             \"connect_ms\":0.250,\"cause\":\"client-fin\",\"path\":\"ring\"}\n"
        );
    }

    #[test]
    fn test_absent_values_are_dash_and_null() {
        let record = Record {
            upstream: None,
            connect: None,
            path: None,
            cause: "rejected",
            ..record()
        };
        let text = rendered(&record, Format::Text);
        assert!(text.contains(" upstream=- "), "{text}");
        assert!(text.contains(" connect_ms=- "), "{text}");
        assert!(text.ends_with(" path=-\n"), "{text}");
        let json = rendered(&record, Format::Json);
        assert!(json.contains("\"upstream\":null,"), "{json}");
        assert!(json.contains("\"connect_ms\":null,"), "{json}");
        assert!(json.ends_with("\"path\":null}\n"), "{json}");
    }

    #[test]
    fn test_details_follow_when_set() {
        let record = Record {
            details: Some(Box::new(Details {
                proxy_peer: Some(SocketAddr::from(([10, 0, 0, 1], 5000))),
                connect_target: Some(String::from("example.com:443")),
                status: Some(403),
                ..Details::default()
            })),
            ..record()
        };
        let text = rendered(&record, Format::Text);
        assert!(
            text.ends_with(
                " path=ring proxy_peer=10.0.0.1:5000 connect_target=example.com:443 status=403\n"
            ),
            "{text}"
        );
        let json = rendered(&record, Format::Json);
        assert!(
            json.ends_with(
                "\"proxy_peer\":\"10.0.0.1:5000\",\"connect_target\":\"example.com:443\",\"status\":403}\n"
            ),
            "{json}"
        );
    }

    /// A route name (or a CONNECT target) with a space, a quote or a newline stays one field on one line.
    #[test]
    fn test_values_are_quoted_and_escaped() {
        let odd = Record {
            route: String::from("my \"web\"\nroute"),
            ..record()
        };
        let text = rendered(&odd, Format::Text);
        assert!(
            text.contains(" route=\"my \\\"web\\\"\\nroute\" "),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
        let json = rendered(&odd, Format::Json);
        assert!(
            json.contains("\"route\":\"my \\\"web\\\"\\nroute\","),
            "{json}"
        );
        let empty = Record {
            route: String::new(),
            ..record()
        };
        assert!(rendered(&empty, Format::Text).contains(" route=\"\" "));
    }
}
