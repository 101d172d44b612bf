//! The admin API's answers as text: each function takes the JSON the server sent (docs/admin.md has
//! the objects) and returns what `edgefwd ctl` prints. Pure, so the unit tests feed them the contract's
//! own examples.
//!
//! A field this client does not know is not lost: `connection ID` lists any extra fields after the
//! known ones, and `--json` prints the answer as it came.

use serde_json::Value;

use super::table::{age, age_cell, bytes_cell, cell, flag, Align, Table};

/// The answer was JSON, but not the shape the contract promises (a list where an object was due...).
pub(crate) fn unexpected(what: &str) -> String {
    format!("the admin API answered something other than {what}")
}

/// The fields `connection ID` prints in its own layout; the rest are listed after them.
const KNOWN_FIELDS: [&str; 22] = [
    "id",
    "route",
    "client",
    "upstream",
    "sni",
    "phase",
    "age_ms",
    "idle_ms",
    "c2u_bytes",
    "u2c_bytes",
    "c2u_held",
    "u2c_held",
    "c2u_path",
    "u2c_path",
    "client_interest",
    "upstream_interest",
    "client_read_closed",
    "client_write_closed",
    "upstream_read_closed",
    "upstream_write_closed",
    "stuck",
    "diagnosis",
];

/// `GET /connections`: one line per pair.
pub(crate) fn connections(list: &Value) -> Result<String, String> {
    let pairs = list
        .as_array()
        .ok_or_else(|| unexpected("a list of connections"))?;
    if pairs.is_empty() {
        return Ok(String::from("no connections\n"));
    }
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("ROUTE", Align::Left),
        ("CLIENT", Align::Left),
        ("UPSTREAM", Align::Left),
        ("PHASE", Align::Left),
        ("AGE", Align::Right),
        ("IDLE", Align::Right),
        ("C2U", Align::Right),
        ("U2C", Align::Right),
        ("HELD C2U", Align::Right),
        ("HELD U2C", Align::Right),
        ("PATH", Align::Left),
        ("STUCK", Align::Left),
    ]);
    for pair in pairs {
        table.row(vec![
            cell(pair, "id"),
            cell(pair, "route"),
            cell(pair, "client"),
            cell(pair, "upstream"),
            cell(pair, "phase"),
            age_cell(pair, "age_ms"),
            age_cell(pair, "idle_ms"),
            bytes_cell(pair, "c2u_bytes"),
            bytes_cell(pair, "u2c_bytes"),
            bytes_cell(pair, "c2u_held"),
            bytes_cell(pair, "u2c_held"),
            paths(pair),
            if flag(pair, "stuck") { "stuck" } else { "" }.to_string(),
        ]);
    }
    Ok(table.render())
}

/// Both directions' paths, `ring` when they agree, `ring/splice` (c2u/u2c) when not.
fn paths(pair: &Value) -> String {
    let (c2u, u2c) = (cell(pair, "c2u_path"), cell(pair, "u2c_path"));
    if c2u == u2c {
        c2u
    } else {
        format!("{c2u}/{u2c}")
    }
}

/// One socket's state: `interest r, read-closed`.
fn socket(pair: &Value, side: &str) -> String {
    let mut words = vec![format!(
        "interest {}",
        cell(pair, &format!("{side}_interest"))
    )];
    for (key, word) in [
        ("read_closed", "read-closed"),
        ("write_closed", "write-closed"),
    ] {
        if flag(pair, &format!("{side}_{key}")) {
            words.push(word.to_string());
        }
    }
    words.join(", ")
}

/// One direction: `1.0K forwarded, 0 held, ring`.
fn direction(pair: &Value, way: &str) -> String {
    format!(
        "{} forwarded, {} held, {}",
        bytes_cell(pair, &format!("{way}_bytes")),
        bytes_cell(pair, &format!("{way}_held")),
        cell(pair, &format!("{way}_path"))
    )
}

/// `GET /connections/ID`: the fields, the diagnosis, then the flight recorder as a timeline.
pub(crate) fn connection(pair: &Value) -> Result<String, String> {
    let object = pair
        .as_object()
        .ok_or_else(|| unexpected("a connection object"))?;
    let mut fields = Table::new(&[("", Align::Left), ("", Align::Left)]);
    let mut field = |name: &str, value: String| fields.row(vec![name.to_string(), value]);
    field("route", cell(pair, "route"));
    field("client", cell(pair, "client"));
    field("upstream", cell(pair, "upstream"));
    // A server older than the field does not send it.
    if object.contains_key("sni") {
        field("sni", cell(pair, "sni"));
    }
    field("phase", cell(pair, "phase"));
    field("age", age_cell(pair, "age_ms"));
    field("idle", age_cell(pair, "idle_ms"));
    field("client -> upstream", direction(pair, "c2u"));
    field("upstream -> client", direction(pair, "u2c"));
    field("client socket", socket(pair, "client"));
    field("upstream socket", socket(pair, "upstream"));
    field(
        "stuck",
        if flag(pair, "stuck") { "yes" } else { "no" }.into(),
    );
    let extra = object
        .keys()
        .filter(|key| !KNOWN_FIELDS.contains(&key.as_str()) && *key != "events");
    for key in extra {
        field(key, cell(pair, key));
    }
    let mut out = format!("connection {}\n", cell(pair, "id"));
    // The two-column table without its (empty) header line, indented.
    for line in fields.render().lines().skip(1) {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str(&format!("diagnosis: {}\n", cell(pair, "diagnosis")));
    out.push_str(&timeline(pair.get("events")));
    Ok(out)
}

/// The flight recorder, oldest first: the time since accept, the gap since the event before, the event.
fn timeline(events: Option<&Value>) -> String {
    let Some(events) = events.and_then(Value::as_array).filter(|e| !e.is_empty()) else {
        return String::from("events: none recorded\n");
    };
    let mut table = Table::new(&[
        ("AT", Align::Right),
        ("GAP", Align::Right),
        ("EVENT", Align::Left),
    ]);
    let mut before = None;
    for event in events {
        let at = event.get("at_ms").and_then(Value::as_f64);
        let gap = match (at, before) {
            (Some(at), Some(before)) => format!("+{}", offset(at - before)),
            _ => String::new(),
        };
        table.row(vec![
            at.map_or_else(|| String::from("-"), offset),
            gap,
            cell(event, "event"),
        ]);
        before = at.or(before);
    }
    let mut out = format!("events ({}, oldest first):\n", events.len());
    for line in table.render().lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// A time within a pair's life, finer than [`age`] below a minute: `0.3ms`, `12.0ms`, `1.204s`.
fn offset(ms: f64) -> String {
    match ms {
        ms if ms < 1_000.0 => format!("{ms:.1}ms"),
        ms if ms < 60_000.0 => format!("{:.3}s", ms / 1_000.0),
        ms => age(ms),
    }
}

/// `GET /routes`.
pub(crate) fn routes(list: &Value) -> Result<String, String> {
    let routes = list
        .as_array()
        .ok_or_else(|| unexpected("a list of routes"))?;
    if routes.is_empty() {
        return Ok(String::from("no routes\n"));
    }
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("LISTEN", Align::Left),
        ("BALANCE", Align::Left),
        ("PAIRS", Align::Right),
        ("MAX", Align::Right),
        ("UPSTREAMS", Align::Right),
    ]);
    for route in routes {
        table.row(vec![
            cell(route, "name"),
            cell(route, "listen"),
            cell(route, "balance"),
            cell(route, "pairs"),
            cell(route, "max_connections"),
            cell(route, "upstreams"),
        ]);
    }
    Ok(table.render())
}

/// `GET /upstreams`, and the answer of drain, disable, enable and weight (the changed upstreams).
pub(crate) fn upstreams(list: &Value) -> Result<String, String> {
    let upstreams = list
        .as_array()
        .ok_or_else(|| unexpected("a list of upstreams"))?;
    if upstreams.is_empty() {
        return Ok(String::from("no upstreams\n"));
    }
    let mut table = Table::new(&[
        ("ROUTE", Align::Left),
        ("ADDRESS", Align::Left),
        ("NAME", Align::Left),
        ("HEALTH", Align::Left),
        ("ADMIN", Align::Left),
        ("WEIGHT", Align::Right),
        ("ACTIVE", Align::Right),
        ("FAILURES", Align::Right),
        ("CONNECT FAILURES", Align::Right),
    ]);
    for upstream in upstreams {
        table.row(vec![
            cell(upstream, "route"),
            cell(upstream, "address"),
            cell(upstream, "name"),
            cell(upstream, "health"),
            cell(upstream, "admin"),
            cell(upstream, "weight"),
            cell(upstream, "active"),
            cell(upstream, "failures"),
            cell(upstream, "connect_failures"),
        ]);
    }
    Ok(table.render())
}

/// `DELETE /connections/ID`: `{"closed": 17, "how": "fin"}`.
pub(crate) fn closed(answer: &Value) -> Result<String, String> {
    if answer.get("closed").is_none() {
        return Err(unexpected("a closed connection"));
    }
    Ok(format!(
        "closed connection {} ({})\n",
        cell(answer, "closed"),
        cell(answer, "how")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection object of docs/admin.md (the contract's example).
    pub(crate) const PAIR: &str = r#"{
        "id": 17, "route": "web", "client": "127.0.0.1:50312", "upstream": "127.0.0.1:8080",
        "sni": null, "phase": "established", "age_ms": 12403, "idle_ms": 12399,
        "c2u_bytes": 1024, "u2c_bytes": 65536, "c2u_held": 0, "u2c_held": 65536,
        "c2u_path": "ring", "u2c_path": "splice", "client_interest": "r", "upstream_interest": "w",
        "client_read_closed": false, "client_write_closed": false,
        "upstream_read_closed": true, "upstream_write_closed": false, "stuck": true
    }"#;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).expect("json")
    }

    #[test]
    fn test_connections_table() {
        let greeting = r#"{"id": 3, "route": "db", "client": "[::1]:40000", "upstream": null,
            "phase": "greeting", "age_ms": 350, "idle_ms": 350, "c2u_bytes": 0, "u2c_bytes": 0,
            "c2u_held": 0, "u2c_held": 0, "c2u_path": "ring", "u2c_path": "ring", "stuck": false}"#;
        let text = connections(&json(&format!("[{greeting}, {PAIR}]"))).expect("table");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            "ID  ROUTE  CLIENT           UPSTREAM        PHASE          AGE   IDLE   C2U    U2C  HELD C2U  HELD U2C  PATH         STUCK"
        );
        assert_eq!(
            lines[1],
            " 3  db     [::1]:40000      -               greeting     350ms  350ms     0      0         0         0  ring"
        );
        assert_eq!(
            lines[2],
            "17  web    127.0.0.1:50312  127.0.0.1:8080  established  12.4s  12.3s  1.0K  64.0K         0     64.0K  ring/splice  stuck"
        );
        assert_eq!(connections(&json("[]")).expect("empty"), "no connections\n");
        assert!(connections(&json("{}")).is_err());
    }

    #[test]
    fn test_connection_detail_with_timeline() {
        let mut pair = json(PAIR);
        pair["diagnosis"] =
            json(r#""upstream has not read for 12.4 s; 64 KiB held in upstream-bound ring""#);
        pair["events"] = json(
            r#"[{"at_ms": 0, "event": "accepted"}, {"at_ms": 3.25, "event": "upstream writable"},
                {"at_ms": 1204, "event": "connecting => established"}]"#,
        );
        pair["reactor"] = json("1");
        let text = connection(&pair).expect("detail");
        let expected = "\
connection 17
  route               web
  client              127.0.0.1:50312
  upstream            127.0.0.1:8080
  sni                 -
  phase               established
  age                 12.4s
  idle                12.3s
  client -> upstream  1.0K forwarded, 0 held, ring
  upstream -> client  64.0K forwarded, 64.0K held, splice
  client socket       interest r
  upstream socket     interest w, read-closed
  stuck               yes
  reactor             1
diagnosis: upstream has not read for 12.4 s; 64 KiB held in upstream-bound ring
events (3, oldest first):
      AT      GAP  EVENT
   0.0ms           accepted
   3.2ms   +3.2ms  upstream writable
  1.204s  +1.201s  connecting => established
";
        assert_eq!(text, expected);
        assert!(connection(&json("[]")).is_err());
    }

    #[test]
    fn test_connection_without_events() {
        let text = connection(&json(PAIR)).expect("detail");
        assert!(
            text.ends_with("diagnosis: -\nevents: none recorded\n"),
            "{text}"
        );
    }

    #[test]
    fn test_routes_table() {
        let text = routes(&json(
            r#"[{"name": "web", "listen": ["127.0.0.1:8080", "[::1]:8080"], "balance": "round-robin",
                "pairs": 3, "max_connections": 1024, "upstreams": 2}]"#,
        ))
        .expect("routes");
        assert_eq!(
            text,
            "NAME  LISTEN                     BALANCE      PAIRS   MAX  UPSTREAMS\n\
             web   127.0.0.1:8080,[::1]:8080  round-robin      3  1024          2\n"
        );
    }

    #[test]
    fn test_upstreams_table() {
        let text = upstreams(&json(
            r#"[{"route": "web", "address": "127.0.0.1:9000", "name": "app:9000", "health": "up",
                 "admin": "draining", "weight": 1, "active": 2, "failures": 0, "connect_failures": 5}]"#,
        ))
        .expect("upstreams");
        assert_eq!(
            text,
            "ROUTE  ADDRESS         NAME      HEALTH  ADMIN     WEIGHT  ACTIVE  FAILURES  CONNECT FAILURES\n\
             web    127.0.0.1:9000  app:9000  up      draining       1       2         0                 5\n"
        );
    }

    #[test]
    fn test_closed_answer() {
        assert_eq!(
            closed(&json(r#"{"closed": 17, "how": "rst"}"#)).expect("closed"),
            "closed connection 17 (rst)\n"
        );
        assert!(closed(&json("{}")).is_err());
    }
}
