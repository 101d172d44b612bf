//! `edgefwd ctl top`: a live view of a running edgefwd, in the spirit of hatop for HAProxy.
//!
//! Every `--interval` it takes a [`Sample`] (GET /connections, /routes, /upstreams, and the byte
//! counters of `--metrics` when given) and draws a [`frame`] from it and the sample before: a header
//! (pairs open, stuck, traffic), then per route and per upstream their pairs, throughput each way,
//! health and admin state, then the busiest and the stuck pairs.
//!
//! # Throughput
//! A pair's rate is the growth of its byte counts between two samples over the time between them; a
//! pair new since the sample before counts all its bytes. A pair that closed between two samples has
//! left no count to compare, so the bytes it moved since the sample before are missing from the routes'
//! and upstreams' rates: over a busy stream of short connections they read low. With `--metrics ADDR`
//! the rates come from the server's byte counters instead ([`Counters`]), every byte forwarded, closed
//! pairs included: the header's from `edgefwd_bytes_total`, a route's or an upstream's from its own
//! series where the server exports them (else from its live pairs, as without). The header's traffic
//! line says which it shows. The first frame has no sample before it and shows `-`; `--once` therefore
//! samples twice, one `--interval` apart.
//!
//! # The terminal
//! Frames are drawn with plain ANSI escapes (clear, home, hide the cursor) when stdout is a terminal,
//! each line cut to its width, and never with `--once` or when stdout is a pipe (frames then follow
//! one another, whole). Keys are read
//! one at a time ([`Keys`]); `q`, Ctrl-C, SIGTERM or SIGHUP end the view and the terminal's settings
//! and cursor are restored on the way out, whatever the way out. Ctrl-Z (SIGTSTP) ends it too: a
//! stopped view would leave the shell a terminal without echo, and a view put back in the background
//! has nothing to show.
//!
//! `--interval` is at least [`MIN_INTERVAL`]: every refresh is several requests served by the
//! forwarder's own event loop, so a shorter one would load the server it is watching.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTSTP};
use signal_hook::iterator::Signals;

use edgefwd::config;

use super::counters::{Counters, Rates};
use super::http::{Client, Endpoint};
use super::table::{age_cell, bytes_cell, cell, flag, number, rate, Align, Table};
use super::terminal::{self, Keys};
use super::{call, describe, plain, print, Failure};

/// Rows of each pair list (busiest, stuck) in one frame.
const PAIR_ROWS: usize = 10;

/// The shortest `--interval`.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, clap::Args)]
pub(crate) struct TopArgs {
    /// How often the view refreshes (e.g. 1s, 500ms; at least 100ms).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    interval: Duration,

    /// Print one frame, its throughput measured over one --interval, without terminal escapes, and exit.
    #[arg(long)]
    once: bool,

    /// Stop after N frames [default: until q or Ctrl-C].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    iterations: Option<u64>,

    /// The same edgefwd's --metrics address: the rates then count every byte forwarded, pairs that
    /// closed between refreshes included (the header's, and a route's or upstream's where the server
    /// exports its series).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

/// `--interval`: a duration of at least [`MIN_INTERVAL`].
fn parse_interval(text: &str) -> Result<Duration, String> {
    match config::parse_timeout(text)? {
        d if d < MIN_INTERVAL => Err(format!(
            "interval '{text}' is too short: at least 100ms (each refresh queries the server)"
        )),
        d => Ok(d),
    }
}

/// One look at the server.
#[derive(Debug)]
pub(crate) struct Sample {
    /// When it was taken: rates divide by the time between two samples.
    at: Instant,
    connections: Vec<Value>,
    routes: Vec<Value>,
    upstreams: Vec<Value>,
    /// The byte counters of `--metrics`, when given.
    counters: Option<Counters>,
    /// The diagnosis of each stuck pair the frame lists, by id (GET /connections/ID).
    diagnoses: HashMap<u64, String>,
}

/// Runs the view until `q`, a signal or `--iterations`; or prints one frame with `--once`.
pub(crate) fn run(client: &Client, args: &TopArgs) -> Result<(), Failure> {
    let metrics = args.metrics.map(|addr| Client {
        endpoint: Endpoint::Tcp(addr.to_string()),
        token: None,
        timeout: client.timeout,
    });
    let look = || sample(client, metrics.as_ref());
    let title = format!(
        "edgefwd top: admin {}, every {}",
        client.endpoint,
        super::table::age(args.interval.as_secs_f64() * 1_000.0)
    );
    if args.once {
        let before = look()?;
        thread::sleep(args.interval);
        return print(&frame(&title, Some(&before), &look()?));
    }
    live(&title, args, look)
}

/// What ends the wait between two frames.
enum Input {
    Key(u8),
    /// SIGINT (Ctrl-C), SIGTSTP (Ctrl-Z), SIGTERM, SIGHUP or SIGQUIT.
    Quit,
}

/// The refreshing view.
fn live(
    title: &str,
    args: &TopArgs,
    look: impl Fn() -> Result<Sample, Failure>,
) -> Result<(), Failure> {
    // The first look fails fast (an unreachable admin API is exit 1, not an empty screen).
    let mut now: Result<Sample, Failure> = Ok(look()?);
    let inputs = inputs().map_err(|err| format!("cannot watch the keyboard: {}", plain(&err)))?;
    // After the signals are caught: a Ctrl-C from here on reaches `inputs`, and the guard restores.
    let stdin = io::stdin();
    let _keys = Keys::start(stdin.as_fd())
        .map_err(|err| format!("cannot set up the terminal: {}", plain(&err)))?;
    let screen = Screen::start(io::stdout().is_terminal());
    let title = format!("{title}; q quits");
    let mut before: Option<Sample> = None;
    let mut drawn = 0;
    loop {
        let text = match &now {
            Ok(sample) => frame(&title, before.as_ref(), sample),
            Err(failure) => format!("{title}\n\n{} (retrying)\n", failure.message),
        };
        screen.draw(&text)?;
        drawn += 1;
        if args.iterations.is_some_and(|n| drawn >= n) {
            return Ok(());
        }
        if wait(&inputs, args.interval) == Wait::Quit {
            return Ok(());
        }
        // A failed look forgets the sample before: the next rates start afresh.
        before = now.ok();
        now = look();
    }
}

#[derive(PartialEq, Eq)]
enum Wait {
    Refresh,
    Quit,
}

/// Waits `interval` for the next frame, unless `q` or a signal comes first.
fn wait(inputs: &Receiver<Input>, interval: Duration) -> Wait {
    let deadline = Instant::now() + interval;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match inputs.recv_timeout(left) {
            Ok(Input::Key(b'q' | b'Q')) | Ok(Input::Quit) => return Wait::Quit,
            Ok(Input::Key(_)) => {}
            Err(RecvTimeoutError::Timeout) => return Wait::Refresh,
            Err(RecvTimeoutError::Disconnected) => {
                thread::sleep(left);
                return Wait::Refresh;
            }
        }
    }
}

/// Keys from stdin and the signals that end the view, as one stream. The threads live until the
/// process ends (the key reader blocks in `read` meanwhile, which is harmless).
fn inputs() -> io::Result<Receiver<Input>> {
    let (send, receive) = mpsc::channel();
    let mut signals = Signals::new([SIGINT, SIGTSTP, SIGTERM, SIGHUP, SIGQUIT])?;
    let quit = send.clone();
    thread::Builder::new()
        .name(String::from("ctl-signals"))
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = quit.send(Input::Quit);
            }
        })?;
    thread::Builder::new()
        .name(String::from("ctl-keys"))
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut byte = [0u8; 1];
            // Until EOF (stdin from /dev/null: no keys) or the view is gone.
            while let Ok(1) = stdin.read(&mut byte) {
                if send.send(Input::Key(byte[0])).is_err() {
                    return;
                }
            }
        })?;
    Ok(receive)
}

/// Stdout while the view runs: a terminal gets each frame on a cleared screen, the cursor hidden
/// until the view ends; anything else gets the frames one after another.
struct Screen {
    terminal: bool,
}

impl Screen {
    fn start(terminal: bool) -> Screen {
        if terminal {
            let _ = io::stdout().write_all(b"\x1b[?25l");
        }
        Screen { terminal }
    }

    /// On a terminal, each line is cut to its width: a wrapped line would push the frame's top out of
    /// view.
    fn draw(&self, frame: &str) -> Result<(), Failure> {
        if self.terminal {
            let frame = match terminal::width(io::stdout().as_fd()) {
                Some(width) => clip(frame, width),
                None => frame.to_string(),
            };
            print(&format!("\x1b[H\x1b[2J{frame}"))
        } else {
            print(&format!("{frame}\n"))
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.terminal {
            let mut out = io::stdout();
            let _ = out.write_all(b"\x1b[?25h").and_then(|()| out.flush());
        }
    }
}

/// Every line of `text` cut to `width` characters.
fn clip(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out.extend(line.chars().take(width));
        out.push('\n');
    }
    out
}

/// GET /connections, /routes, /upstreams, and the byte counters of `--metrics`.
fn sample(client: &Client, metrics: Option<&Client>) -> Result<Sample, Failure> {
    let list = |path: &str| -> Result<Vec<Value>, Failure> {
        match call(client, "GET", path, None)?.json {
            Value::Array(items) => Ok(items),
            _ => Err(Failure::from(format!(
                "GET {path}: {}",
                super::view::unexpected("a list")
            ))),
        }
    };
    let at = Instant::now();
    let connections = list("/connections")?;
    let routes = list("/routes")?;
    let upstreams = list("/upstreams")?;
    let counters = match metrics {
        Some(metrics) => Some(scrape(metrics)?),
        None => None,
    };
    let mut diagnoses = HashMap::new();
    for pair in stuck_first(&connections).into_iter().take(PAIR_ROWS) {
        let id = number(pair, "id");
        // A pair gone since the list (404) just goes without its diagnosis.
        let Ok(answer) = call(client, "GET", &format!("/connections/{id}"), None) else {
            continue;
        };
        if let Some(diagnosis) = answer.json.get("diagnosis").and_then(Value::as_str) {
            diagnoses.insert(id, diagnosis.to_string());
        }
    }
    Ok(Sample {
        at,
        connections,
        routes,
        upstreams,
        counters,
        diagnoses,
    })
}

/// The byte counters of the `--metrics` endpoint.
fn scrape(metrics: &Client) -> Result<Counters, Failure> {
    let at = &metrics.endpoint;
    let answer = metrics
        .request("GET", "/metrics", None)
        .map_err(|err| describe(&format!("--metrics {at}"), err))?;
    if answer.status != 200 {
        return Err(Failure::from(format!(
            "--metrics {at} answered HTTP {}",
            answer.status
        )));
    }
    Counters::parse(&answer.body)
        .ok_or_else(|| Failure::from(format!("--metrics {at} has no edgefwd_bytes_total")))
}

/// Each live pair's rates (c2u, u2c) in bytes per second since `before`, by the pair's index in
/// `now.connections`; `None` with no sample before.
fn pair_rates(before: Option<&Sample>, now: &Sample) -> Vec<Option<[f64; 2]>> {
    let Some(before) = before else {
        return vec![None; now.connections.len()];
    };
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let counts = |pair: &Value| [number(pair, "c2u_bytes"), number(pair, "u2c_bytes")];
    let earlier: HashMap<u64, [u64; 2]> = before
        .connections
        .iter()
        .map(|pair| (number(pair, "id"), counts(pair)))
        .collect();
    now.connections
        .iter()
        .map(|pair| {
            let was = earlier.get(&number(pair, "id")).copied().unwrap_or([0, 0]);
            let is = counts(pair);
            Some([0, 1].map(|way| is[way].saturating_sub(was[way]) as f64 / seconds))
        })
        .collect()
}

/// What the frame sums per route or per upstream.
#[derive(Default)]
struct Load {
    pairs: u64,
    stuck: u64,
    rates: Option<[f64; 2]>,
}

impl Load {
    fn add(&mut self, pair: &Value, rates: Option<[f64; 2]>) {
        self.pairs += 1;
        self.stuck += u64::from(flag(pair, "stuck"));
        self.rates = rates.map(|[c2u, u2c]| {
            let [c, u] = self.rates.unwrap_or([0.0, 0.0]);
            [c + c2u, u + u2c]
        });
    }
}

/// One frame: the header, the routes, the upstreams, the busiest pairs, the stuck pairs.
pub(crate) fn frame(title: &str, before: Option<&Sample>, now: &Sample) -> String {
    let rates = pair_rates(before, now);
    let mut routes: BTreeMap<String, Load> = BTreeMap::new();
    let mut upstreams: BTreeMap<(String, String), Load> = BTreeMap::new();
    let mut all = Load::default();
    for (pair, rates) in now.connections.iter().zip(&rates) {
        let (route, upstream) = (cell(pair, "route"), cell(pair, "upstream"));
        routes.entry(route.clone()).or_default().add(pair, *rates);
        upstreams
            .entry((route, upstream))
            .or_default()
            .add(pair, *rates);
        all.add(pair, *rates);
    }
    if before.is_some() && all.rates.is_none() {
        all.rates = Some([0.0, 0.0]);
    }
    let metered = before.and_then(|before| {
        let elapsed = now.at.duration_since(before.at);
        Some(
            now.counters
                .as_ref()?
                .rates_since(before.counters.as_ref()?, elapsed),
        )
    });
    let metered = metered.as_ref();
    let mut out = format!("{title}\n");
    out.push_str(&header(now, &all, metered));
    out.push_str(&routes_table(now, &routes, metered, before.is_some()));
    out.push_str(&upstreams_table(now, &upstreams, metered, before.is_some()));
    out.push_str(&busiest(now, &rates));
    out.push_str(&stuck(now));
    out
}

/// Pairs open, traffic, upstream states.
fn header(now: &Sample, all: &Load, metered: Option<&Rates>) -> String {
    let phases = |phase: &str| {
        now.connections
            .iter()
            .filter(|pair| cell(pair, "phase") == phase)
            .count()
    };
    let mut out = format!(
        "pairs: {} open, {} stuck, {} connecting\n",
        all.pairs,
        all.stuck,
        phases("connecting")
    );
    let (traffic, whose) = match (metered, &now.counters) {
        (Some(rates), _) => (Some(rates.total), "every pair, from --metrics"),
        (None, Some(_)) => (None, "every pair, from --metrics"),
        (None, None) => (
            all.rates,
            "live pairs only; --metrics ADDR adds closed ones",
        ),
    };
    out.push_str(&format!(
        "traffic: c2u {}  u2c {}  ({whose})\n",
        rate(traffic.map(|r| r[0])),
        rate(traffic.map(|r| r[1]))
    ));
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for upstream in &now.upstreams {
        *states.entry(cell(upstream, "health")).or_default() += 1;
        let admin = cell(upstream, "admin");
        if admin != "enabled" {
            *states.entry(admin).or_default() += 1;
        }
    }
    let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
    out.push_str(&format!(
        "routes: {}  upstreams: {}{}\n",
        now.routes.len(),
        now.upstreams.len(),
        match states.is_empty() {
            true => String::new(),
            false => format!(" ({})", states.join(", ")),
        }
    ));
    out
}

/// Per route: pairs, stuck, throughput, upstreams up.
fn routes_table(
    now: &Sample,
    loads: &BTreeMap<String, Load>,
    metered: Option<&Rates>,
    rated: bool,
) -> String {
    let mut table = Table::new(&[
        ("ROUTE", Align::Left),
        ("PAIRS", Align::Right),
        ("STUCK", Align::Right),
        ("C2U/S", Align::Right),
        ("U2C/S", Align::Right),
        ("UP", Align::Right),
        ("MAX", Align::Right),
    ]);
    let idle = Load {
        rates: rated.then_some([0.0, 0.0]),
        ..Load::default()
    };
    for route in &now.routes {
        let name = cell(route, "name");
        let load = loads.get(&name).unwrap_or(&idle);
        let rates = metered
            .and_then(|metered| metered.routes.get(&name).copied())
            .or(load.rates);
        let theirs = now.upstreams.iter().filter(|u| cell(u, "route") == name);
        let (total, up) = theirs.fold((0, 0), |(total, up), u| {
            (total + 1, up + usize::from(cell(u, "health") == "up"))
        });
        table.row(vec![
            name.clone(),
            route
                .get("pairs")
                .map_or_else(|| load.pairs.to_string(), |_| cell(route, "pairs")),
            load.stuck.to_string(),
            rate(rates.map(|r| r[0])),
            rate(rates.map(|r| r[1])),
            format!("{up}/{total}"),
            cell(route, "max_connections"),
        ]);
    }
    section("ROUTES", &table, "no routes")
}

/// Per upstream: state, pairs, throughput, failures.
fn upstreams_table(
    now: &Sample,
    loads: &BTreeMap<(String, String), Load>,
    metered: Option<&Rates>,
    rated: bool,
) -> String {
    let mut table = Table::new(&[
        ("ROUTE", Align::Left),
        ("UPSTREAM", Align::Left),
        ("HEALTH", Align::Left),
        ("ADMIN", Align::Left),
        ("WEIGHT", Align::Right),
        ("ACTIVE", Align::Right),
        ("C2U/S", Align::Right),
        ("U2C/S", Align::Right),
        ("FAILURES", Align::Right),
    ]);
    let idle = Load {
        rates: rated.then_some([0.0, 0.0]),
        ..Load::default()
    };
    for upstream in &now.upstreams {
        let key = (cell(upstream, "route"), cell(upstream, "address"));
        let load = loads.get(&key).unwrap_or(&idle);
        let rates = metered
            .and_then(|metered| metered.upstream(&key.0, &key.1, &cell(upstream, "name")))
            .or(load.rates);
        table.row(vec![
            key.0.clone(),
            key.1.clone(),
            cell(upstream, "health"),
            cell(upstream, "admin"),
            cell(upstream, "weight"),
            cell(upstream, "active"),
            rate(rates.map(|r| r[0])),
            rate(rates.map(|r| r[1])),
            cell(upstream, "connect_failures"),
        ]);
    }
    section("UPSTREAMS", &table, "no upstreams")
}

/// The pairs that moved the most since the sample before (on the first frame: the most so far).
fn busiest(now: &Sample, rates: &[Option<[f64; 2]>]) -> String {
    let score = |(pair, rates): &(&Value, &Option<[f64; 2]>)| match rates {
        Some([c2u, u2c]) => c2u + u2c,
        None => (number(pair, "c2u_bytes") + number(pair, "u2c_bytes")) as f64,
    };
    let mut moving: Vec<(&Value, &Option<[f64; 2]>)> = now
        .connections
        .iter()
        .zip(rates)
        .filter(|entry| score(entry) > 0.0)
        .collect();
    moving.sort_by(|a, b| score(b).total_cmp(&score(a)));
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("ROUTE", Align::Left),
        ("CLIENT", Align::Left),
        ("UPSTREAM", Align::Left),
        ("AGE", Align::Right),
        ("C2U/S", Align::Right),
        ("U2C/S", Align::Right),
        ("C2U", Align::Right),
        ("U2C", Align::Right),
    ]);
    for (pair, rates) in moving.iter().take(PAIR_ROWS) {
        table.row(vec![
            cell(pair, "id"),
            cell(pair, "route"),
            cell(pair, "client"),
            cell(pair, "upstream"),
            age_cell(pair, "age_ms"),
            rate(rates.map(|r| r[0])),
            rate(rates.map(|r| r[1])),
            bytes_cell(pair, "c2u_bytes"),
            bytes_cell(pair, "u2c_bytes"),
        ]);
    }
    section("BUSIEST PAIRS", &table, "no pair moved bytes")
}

/// The stuck pairs, longest idle first.
fn stuck(now: &Sample) -> String {
    let stuck = stuck_first(&now.connections);
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("ROUTE", Align::Left),
        ("CLIENT", Align::Left),
        ("UPSTREAM", Align::Left),
        ("PHASE", Align::Left),
        ("AGE", Align::Right),
        ("IDLE", Align::Right),
        ("HELD C2U", Align::Right),
        ("HELD U2C", Align::Right),
        ("WHY", Align::Left),
    ]);
    for pair in stuck.iter().take(PAIR_ROWS) {
        let why = now.diagnoses.get(&number(pair, "id"));
        table.row(vec![
            cell(pair, "id"),
            cell(pair, "route"),
            cell(pair, "client"),
            cell(pair, "upstream"),
            cell(pair, "phase"),
            age_cell(pair, "age_ms"),
            age_cell(pair, "idle_ms"),
            bytes_cell(pair, "c2u_held"),
            bytes_cell(pair, "u2c_held"),
            why.map_or_else(|| String::from("-"), String::clone),
        ]);
    }
    let mut out = section("STUCK PAIRS", &table, "no stuck pairs");
    if stuck.len() > PAIR_ROWS {
        out.push_str(&format!(
            "... and {} more (ctl connections --stuck)\n",
            stuck.len() - PAIR_ROWS
        ));
    }
    out
}

/// The stuck pairs, the longest idle first.
fn stuck_first(connections: &[Value]) -> Vec<&Value> {
    let mut stuck: Vec<&Value> = connections.iter().filter(|p| flag(p, "stuck")).collect();
    let idle = |pair: &Value| pair.get("idle_ms").and_then(Value::as_f64).unwrap_or(0.0);
    stuck.sort_by(|a, b| idle(b).total_cmp(&idle(a)));
    stuck
}

/// A blank line, the section's title, its table or a line saying it is empty.
fn section(title: &str, table: &Table, empty: &str) -> String {
    match table.is_empty() {
        true => format!("\n{title}: {empty}\n"),
        false => format!("\n{title}\n{}", table.render()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(id: u64, route: &str, upstream: &str, c2u: u64, u2c: u64, stuck: bool) -> Value {
        serde_json::json!({
            "id": id, "route": route, "client": format!("127.0.0.1:{}", 50000 + id),
            "upstream": upstream, "phase": "established", "age_ms": 12403, "idle_ms": 5000 + id,
            "c2u_bytes": c2u, "u2c_bytes": u2c, "c2u_held": 0, "u2c_held": if stuck { 65536 } else { 0 },
            "c2u_path": "ring", "u2c_path": "ring", "stuck": stuck
        })
    }

    fn sample(at: Instant, connections: Vec<Value>, counters: Option<Counters>) -> Sample {
        Sample {
            at,
            connections,
            routes: serde_json::from_str(
                r#"[{"name": "web", "listen": ["127.0.0.1:8080"], "balance": "round-robin", "pairs": 2,
                     "max_connections": 1024, "upstreams": 2},
                    {"name": "db", "listen": ["127.0.0.1:5432"], "balance": "least-conn", "pairs": 0,
                     "max_connections": 10, "upstreams": 1}]"#,
            )
            .expect("routes"),
            upstreams: serde_json::from_str(
                r#"[{"route": "web", "address": "127.0.0.1:9000", "name": "127.0.0.1:9000", "health": "up",
                     "admin": "enabled", "weight": 1, "active": 1, "failures": 0, "connect_failures": 0},
                    {"route": "web", "address": "127.0.0.1:9001", "name": "127.0.0.1:9001", "health": "up",
                     "admin": "draining", "weight": 2, "active": 1, "failures": 0, "connect_failures": 3},
                    {"route": "db", "address": "127.0.0.1:9002", "name": "127.0.0.1:9002", "health": "down",
                     "admin": "enabled", "weight": 1, "active": 0, "failures": 4, "connect_failures": 9}]"#,
            )
            .expect("upstreams"),
            counters,
            diagnoses: HashMap::new(),
        }
    }

    /// Two samples two seconds apart: pair 1 moved 2 MiB up and 4 KiB down, pair 2 (stuck) nothing,
    /// pair 3 is new with 1 KiB; pair 4 closed in between.
    #[test]
    fn test_frame_rates_from_two_samples() {
        let t0 = Instant::now();
        let before = sample(
            t0,
            vec![
                pair(1, "web", "127.0.0.1:9000", 1 << 20, 0, false),
                pair(2, "web", "127.0.0.1:9001", 10, 10, true),
                pair(4, "web", "127.0.0.1:9000", 0, 0, false),
            ],
            None,
        );
        let now = sample(
            t0 + Duration::from_secs(2),
            vec![
                pair(1, "web", "127.0.0.1:9000", 5 << 20, 8 << 10, false),
                pair(2, "web", "127.0.0.1:9001", 10, 10, true),
                pair(3, "web", "127.0.0.1:9001", 2 << 10, 0, false),
            ],
            None,
        );
        let mut now = now;
        now.diagnoses
            .insert(2, String::from("upstream has not read for 5.0 s"));
        let text = frame("edgefwd top", Some(&before), &now);
        let expected = "\
edgefwd top
pairs: 3 open, 1 stuck, 0 connecting
traffic: c2u 2.0M/s  u2c 4.0K/s  (live pairs only; --metrics ADDR adds closed ones)
routes: 2  upstreams: 3 (1 down, 1 draining, 2 up)

ROUTES
ROUTE  PAIRS  STUCK   C2U/S   U2C/S   UP   MAX
web        2      1  2.0M/s  4.0K/s  2/2  1024
db         0      0     0/s     0/s  0/1    10

UPSTREAMS
ROUTE  UPSTREAM        HEALTH  ADMIN     WEIGHT  ACTIVE   C2U/S   U2C/S  FAILURES
web    127.0.0.1:9000  up      enabled        1       1  2.0M/s  4.0K/s         0
web    127.0.0.1:9001  up      draining       2       1  1.0K/s     0/s         3
db     127.0.0.1:9002  down    enabled        1       0     0/s     0/s         9

BUSIEST PAIRS
ID  ROUTE  CLIENT           UPSTREAM          AGE   C2U/S   U2C/S   C2U   U2C
 1  web    127.0.0.1:50001  127.0.0.1:9000  12.4s  2.0M/s  4.0K/s  5.0M  8.0K
 3  web    127.0.0.1:50003  127.0.0.1:9001  12.4s  1.0K/s     0/s  2.0K     0

STUCK PAIRS
ID  ROUTE  CLIENT           UPSTREAM        PHASE          AGE  IDLE  HELD C2U  HELD U2C  WHY
 2  web    127.0.0.1:50002  127.0.0.1:9001  established  12.4s  5.0s         0     64.0K  upstream has not read for 5.0 s
";
        assert_eq!(text, expected);
    }

    /// The first frame has no rates; the busiest are those that moved the most so far.
    #[test]
    fn test_first_frame_has_no_rates() {
        let now = sample(
            Instant::now(),
            vec![
                pair(1, "web", "127.0.0.1:9000", 10, 0, false),
                pair(2, "web", "127.0.0.1:9000", 0, 0, false),
                pair(3, "web", "127.0.0.1:9000", 0, 500, false),
            ],
            None,
        );
        let text = frame("t", None, &now);
        assert!(text.contains("traffic: c2u -  u2c -"), "{text}");
        assert!(
            text.contains("web        2      0      -      -  2/2  1024"),
            "{text}"
        );
        let busiest: Vec<&str> = text
            .split("BUSIEST PAIRS\n")
            .nth(1)
            .expect("busiest")
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(busiest.len(), 2, "{text}");
        assert!(
            busiest[0].starts_with(" 3 ") && busiest[1].starts_with(" 1 "),
            "{text}"
        );
        assert!(text.ends_with("STUCK PAIRS: no stuck pairs\n"), "{text}");
    }

    #[test]
    fn test_clip_to_width() {
        assert_eq!(clip("abcdef\nab\n\nxyz", 3), "abc\nab\n\nxyz\n");
    }

    /// With --metrics the rates are the counters' growth, closed pairs included: the header's, and a
    /// route's or upstream's where the server has its series (db's upstream has none: its live pairs).
    #[test]
    fn test_rates_from_metrics() {
        let t0 = Instant::now();
        let counters = |total: u64, web: u64| {
            Counters::parse(&format!(
                "edgefwd_bytes_total{{direction=\"c2u\"}} {total}\n\
                 edgefwd_bytes_total{{direction=\"u2c\"}} 1024\n\
                 edgefwd_route_bytes_total{{route=\"web\",direction=\"c2u\"}} {web}\n\
                 edgefwd_upstream_bytes_total{{route=\"web\",upstream=\"127.0.0.1:9001\",direction=\"c2u\"}} {web}\n"
            ))
        };
        let before = sample(t0, vec![], counters(1_000, 0));
        let now = sample(
            t0 + Duration::from_secs(1),
            vec![pair(5, "db", "127.0.0.1:9002", 512, 0, false)],
            counters(1_000 + 3072, 2048),
        );
        let text = frame("t", Some(&before), &now);
        assert!(
            text.contains("traffic: c2u 3.0K/s  u2c 0/s  (every pair, from --metrics)"),
            "{text}"
        );
        assert!(
            text.contains("\nweb        2      0  2.0K/s    0/s  2/2  1024\n"),
            "{text}"
        );
        assert!(
            text.contains("\ndb         0      0   512/s    0/s  0/1    10\n"),
            "{text}"
        );
        assert!(
            text.contains("127.0.0.1:9001  up      draining       2       1  2.0K/s"),
            "{text}"
        );
        assert!(
            text.contains("127.0.0.1:9002  down    enabled        1       0   512/s"),
            "{text}"
        );
    }
}
