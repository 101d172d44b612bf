//! The admin API's HTTP requests, parsed and routed without a socket: a request head (and its small
//! body) becomes a [`Request`] or a [`Refusal`] (the status and the one-line error a client gets).
//! The reactor serves the answer (`reactor::admin`); what each reactor contributes and how the parts
//! become one JSON body is [`answer()`]'s.
//!
//! One request per connection, as on the metrics port; no HTTP library: the API has six paths, and a
//! parser this small can be read whole and tested byte by byte. docs/admin.md is the reference.

mod answer;

pub(crate) use answer::{answer, Part, RouteRow, UpstreamRow};

use std::time::Duration;

use crate::config::{parse_duration, UpstreamAddr, MAX_WEIGHT};

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// `GET /connections`, with its filters.
    Connections(Filter),
    /// `GET /connections/ID`.
    Connection(u64),
    /// `DELETE /connections/ID?how=rst|fin`.
    Close { id: u64, how: How },
    /// `GET /routes`.
    Routes,
    /// `GET /upstreams`.
    Upstreams,
    /// `POST /upstreams/ADDR/{drain,disable,enable}`, `PUT /upstreams/ADDR/weight`.
    Steer {
        addr: UpstreamAddr,
        /// `?route=NAME`: that route's upstream only; `None`: every route's.
        route: Option<String>,
        change: Change,
    },
}

/// `GET /connections` filters; they combine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// `?route=NAME`.
    pub(crate) route: Option<String>,
    /// `?older_than=DURATION`.
    pub(crate) older_than: Option<Duration>,
    /// `?stuck=1`.
    pub(crate) stuck: bool,
}

/// How `DELETE /connections/ID` closes a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    /// Both sockets shut down for writing after what is queued: each peer reads to the end, then EOF.
    Fin,
    /// Both sockets closed with RST at once: each peer gets ECONNRESET.
    Rst,
}

impl How {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            How::Fin => "fin",
            How::Rst => "rst",
        }
    }
}

/// What a steering request changes about an upstream address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// No new pairs; live ones finish.
    Drain,
    /// No new pairs and no health probes; live ones finish.
    Disable,
    /// Undoes drain and disable.
    Enable,
    /// Its share of new pairs, 1 to `MAX_WEIGHT`, in place of the configured one.
    Weight(u32),
}

/// A request answered with an error: the status and the one line of `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> String {
        serde_json::json!({ "error": self.message }).to_string() + "\n"
    }
}

/// The reason phrase of the statuses the API answers with.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Parses one request: `head` up to and including its blank line, `body` the bytes after it (as many
/// as its `Content-Length` said). With `token`, the request must carry `Authorization: Bearer TOKEN`.
pub(crate) fn parse(head: &[u8], body: &[u8], token: Option<&str>) -> Result<Request, Refusal> {
    let head =
        std::str::from_utf8(head).map_err(|_| Refusal::new(400, "request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut words = line.split(' ');
    let (method, target) = match (words.next(), words.next(), words.next()) {
        (Some(method), Some(target), Some(version)) if version.starts_with("HTTP/1.") => {
            (method, target)
        }
        _ => return Err(Refusal::new(400, format!("bad request line '{line}'"))),
    };
    if let Some(expected) = token {
        let given = lines.find_map(|header| {
            let (name, value) = header.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("authorization")
                .then(|| value.trim())
        });
        let bearer = given.and_then(|value| value.strip_prefix("Bearer "));
        if !bearer.is_some_and(|given| same_secret(given.trim(), expected)) {
            return Err(Refusal::new(
                401,
                "missing or wrong 'Authorization: Bearer' token",
            ));
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = Query::parse(query)?;
    let segments: Vec<String> = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(percent_decode)
        .collect::<Result<_, _>>()?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    route(method, &segments, &query, body)
}

/// Maps method and path to a request.
fn route(method: &str, path: &[&str], query: &Query, body: &[u8]) -> Result<Request, Refusal> {
    let wrong = |allowed: &str| {
        Refusal::new(
            405,
            format!("method {method} not allowed here (only {allowed})"),
        )
    };
    match path {
        ["connections"] => match method {
            "GET" => Ok(Request::Connections(filter(query)?)),
            _ => Err(wrong("GET")),
        },
        ["connections", id] => {
            let id = id.parse::<u64>().map_err(|_| {
                Refusal::new(400, format!("bad connection id '{id}': expected a number"))
            })?;
            match method {
                "GET" => Ok(Request::Connection(id)),
                "DELETE" => Ok(Request::Close {
                    id,
                    how: how(query)?,
                }),
                _ => Err(wrong("GET, DELETE")),
            }
        }
        ["routes"] => match method {
            "GET" => Ok(Request::Routes),
            _ => Err(wrong("GET")),
        },
        ["upstreams"] => match method {
            "GET" => Ok(Request::Upstreams),
            _ => Err(wrong("GET")),
        },
        ["upstreams", addr, action] => {
            let change = match (*action, method) {
                ("drain", "POST") => Change::Drain,
                ("disable", "POST") => Change::Disable,
                ("enable", "POST") => Change::Enable,
                ("weight", "PUT") => Change::Weight(weight(body)?),
                ("drain" | "disable" | "enable", _) => return Err(wrong("POST")),
                ("weight", _) => return Err(wrong("PUT")),
                _ => return Err(not_found(path)),
            };
            let addr = addr.parse::<UpstreamAddr>().map_err(|_| {
                Refusal::new(
                    400,
                    format!(
                        "bad upstream address '{addr}': expected IP:PORT, [IPv6]:PORT or unix:PATH"
                    ),
                )
            })?;
            Ok(Request::Steer {
                addr,
                route: query.get("route").map(str::to_string),
                change,
            })
        }
        _ => Err(not_found(path)),
    }
}

fn not_found(path: &[&str]) -> Refusal {
    Refusal::new(
        404,
        format!(
            "no such path '/{}' (try /connections, /routes, /upstreams)",
            path.join("/")
        ),
    )
}

fn filter(query: &Query) -> Result<Filter, Refusal> {
    let older_than = query
        .get("older_than")
        .map(|text| {
            parse_duration(text).map_err(|err| Refusal::new(400, format!("older_than: {err}")))
        })
        .transpose()?;
    let stuck = match query.get("stuck") {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") | Some("") => true,
        Some(other) => {
            return Err(Refusal::new(
                400,
                format!("bad stuck '{other}': expected 1 or 0"),
            ))
        }
    };
    Ok(Filter {
        route: query.get("route").map(str::to_string),
        older_than,
        stuck,
    })
}

fn how(query: &Query) -> Result<How, Refusal> {
    match query.get("how") {
        None | Some("fin") => Ok(How::Fin),
        Some("rst") => Ok(How::Rst),
        Some(other) => Err(Refusal::new(
            400,
            format!("bad how '{other}': expected fin or rst"),
        )),
    }
}

/// A weight body: `3` or `{"weight": 3}`.
fn weight(body: &[u8]) -> Result<u32, Refusal> {
    let text = std::str::from_utf8(body).unwrap_or_default().trim();
    let number = match text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        Some(inner) => inner
            .split_once(':')
            .filter(|(key, _)| key.trim() == "\"weight\"")
            .map_or("", |(_, value)| value.trim()),
        None => text,
    };
    match number.parse::<u32>() {
        Ok(weight) if (1..=MAX_WEIGHT).contains(&weight) => Ok(weight),
        _ => Err(Refusal::new(
            400,
            format!(
                "bad weight '{text}': expected a whole number from 1 to {MAX_WEIGHT}, or {{\"weight\": N}}"
            ),
        )),
    }
}

/// Compares a secret in time that does not depend on where the first difference is.
fn same_secret(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A query string's `key=value` pairs, percent-decoded.
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(text: &str) -> Result<Query, Refusal> {
        let mut pairs = Vec::new();
        for item in text.split('&').filter(|item| !item.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            pairs.push((percent_decode(key)?, percent_decode(value)?));
        }
        Ok(Query(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `%5B::1%5D` -> `[::1]`; `+` stays `+` (paths and these values never hold spaces).
fn percent_decode(text: &str) -> Result<String, Refusal> {
    let bad = || Refusal::new(400, format!("bad percent-encoding in '{text}'"));
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'%' {
            out.push(byte);
            continue;
        }
        let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
        let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
        out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str) -> Result<Request, Refusal> {
        let head = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        parse(head.as_bytes(), b"", None)
    }

    fn status(result: Result<Request, Refusal>) -> u16 {
        result.map_or_else(|refusal| refusal.status, |_| 200)
    }

    #[test]
    fn test_connections_filters_combine() {
        assert_eq!(
            get("/connections?route=web&older_than=500ms&stuck=1"),
            Ok(Request::Connections(Filter {
                route: Some("web".into()),
                older_than: Some(Duration::from_millis(500)),
                stuck: true,
            }))
        );
        assert_eq!(
            get("/connections?older_than=5"),
            Ok(Request::Connections(Filter {
                older_than: Some(Duration::from_secs(5)),
                ..Filter::default()
            }))
        );
        let refusal = get("/connections?older_than=soon").expect_err("bad duration");
        assert_eq!(refusal.status, 400);
        assert!(refusal.message.contains("'soon'"), "{}", refusal.message);
        assert_eq!(status(get("/connections?stuck=maybe")), 400);
    }

    #[test]
    fn test_connection_by_id_and_close() {
        assert_eq!(get("/connections/17"), Ok(Request::Connection(17)));
        assert_eq!(status(get("/connections/x7")), 400);
        let delete = |target: &str| {
            let head = format!("DELETE {target} HTTP/1.1\r\n\r\n");
            parse(head.as_bytes(), b"", None)
        };
        assert_eq!(
            delete("/connections/3"),
            Ok(Request::Close {
                id: 3,
                how: How::Fin
            })
        );
        assert_eq!(
            delete("/connections/3?how=rst"),
            Ok(Request::Close {
                id: 3,
                how: How::Rst
            })
        );
        assert_eq!(status(delete("/connections/3?how=slam")), 400);
        assert_eq!(status(delete("/connections")), 405);
    }

    #[test]
    fn test_steering_requests() {
        let send = |line: &str, body: &str| {
            let head = format!("{line} HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
            parse(head.as_bytes(), body.as_bytes(), None)
        };
        assert_eq!(
            send("POST /upstreams/127.0.0.1:9000/drain?route=web", ""),
            Ok(Request::Steer {
                addr: "127.0.0.1:9000".parse().expect("addr"),
                route: Some("web".into()),
                change: Change::Drain,
            })
        );
        assert_eq!(
            send("POST /upstreams/%5B::1%5D:9000/disable", ""),
            Ok(Request::Steer {
                addr: "[::1]:9000".parse().expect("addr"),
                route: None,
                change: Change::Disable,
            })
        );
        for body in ["3", "{\"weight\": 3}", " 3\n"] {
            assert!(
                matches!(
                    send("PUT /upstreams/[::1]:9000/weight", body),
                    Ok(Request::Steer {
                        change: Change::Weight(3),
                        ..
                    })
                ),
                "{body:?}"
            );
        }
        for body in ["0", "", "-1", "{\"w\": 3}", "10001"] {
            assert_eq!(
                status(send("PUT /upstreams/[::1]:9000/weight", body)),
                400,
                "{body:?}"
            );
        }
        assert_eq!(status(send("GET /upstreams/127.0.0.1:1/drain", "")), 405);
        assert_eq!(status(send("POST /upstreams/app:9000/drain", "")), 400);
        assert_eq!(status(send("POST /upstreams/127.0.0.1:1/boot", "")), 404);
    }

    #[test]
    fn test_unknown_paths_and_bad_lines() {
        assert_eq!(get("/routes"), Ok(Request::Routes));
        assert_eq!(get("/upstreams"), Ok(Request::Upstreams));
        assert_eq!(status(get("/")), 404);
        assert_eq!(status(get("/metrics")), 404);
        assert_eq!(status(parse(b"GET /routes\r\n\r\n", b"", None)), 400);
        assert_eq!(status(parse(b"\xff\r\n\r\n", b"", None)), 400);
        assert_eq!(status(get("/connections?route=%zz")), 400);
        let post = parse(b"POST /routes HTTP/1.1\r\n\r\n", b"", None);
        assert_eq!(status(post), 405);
    }

    #[test]
    fn test_token_is_required_when_set() {
        let with = |header: &str| {
            let head = format!("GET /routes HTTP/1.1\r\n{header}\r\n\r\n");
            parse(head.as_bytes(), b"", Some("s3cret"))
        };
        assert_eq!(with("Authorization: Bearer s3cret"), Ok(Request::Routes));
        assert_eq!(
            with("authorization:   Bearer s3cret  "),
            Ok(Request::Routes)
        );
        assert_eq!(status(with("Authorization: Bearer s3cre")), 401);
        assert_eq!(status(with("Authorization: Bearer s3cretX")), 401);
        assert_eq!(status(with("Authorization: Basic s3cret")), 401);
        assert_eq!(status(with("X-Other: 1")), 401);
        // The token is checked before the path: an unauthenticated client learns nothing of the API.
        let head = b"GET /nowhere HTTP/1.1\r\n\r\n";
        assert_eq!(status(parse(head, b"", Some("s3cret"))), 401);
    }

    #[test]
    fn test_refusal_body_is_one_json_line() {
        let body = Refusal::new(404, "no \"x\"\n").body();
        assert_eq!(body, "{\"error\":\"no \\\"x\\\"\\n\"}\n");
    }
}
