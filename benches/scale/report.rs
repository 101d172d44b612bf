//! The scale benchmark's outputs: a markdown report (printed, and written as `scale-latest.md`),
//! the raw runs as JSON, and the select/poll/epoll chart as SVG (log-log, hand-written like the
//! compare bench's chart, so it diffs as text).

use std::fmt::Write;

use crate::json::Json;
use crate::pairs::PairsRun;
use crate::stats::{count_label, Spread};
use crate::util::sig3;
use crate::wait::{Point, Waiter};

/// A size that was not run, and why.
pub struct Skipped {
    pub pairs: usize,
    pub why: String,
}

/// The idle-pairs table: one row per size, each figure the median of the repeats with its range.
pub fn pairs_table(sizes: &[usize], runs: &[PairsRun], skipped: &[Skipped]) -> String {
    let mut out = String::from(
        "| idle pairs | runs | edgefwd RSS with the pairs | RSS per idle pair | kernel slab per pair (machine) | rr100 p50 | rr100 p99 | rr100 requests/s | edgefwd CPU per request | wakeups per request | epoll_wait calls per request | events per request | other processes |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for &pairs in sizes {
        let mine: Vec<&PairsRun> = runs.iter().filter(|r| r.pairs == pairs).collect();
        if mine.is_empty() {
            continue;
        }
        let col =
            |f: fn(&PairsRun) -> f64| Spread::of(&mine.iter().map(|r| f(r)).collect::<Vec<_>>());
        let unit = |u: &'static str| move |v: f64| format!("{}{u}", sig3(v));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            count_label(pairs),
            mine.len(),
            col(|r| r.rss_after as f64 / (1 << 20) as f64).show(unit(" MiB")),
            if pairs == 0 {
                "—".to_string()
            } else {
                col(PairsRun::per_pair_bytes).show(unit(" B"))
            },
            if pairs == 0 {
                "—".to_string()
            } else {
                col(|r| r.slab_per_pair).show(unit(" B"))
            },
            col(|r| r.p50_us).show(unit(" µs")),
            col(|r| r.p99_us).show(unit(" µs")),
            col(|r| r.rps).show(crate::util::human_count),
            col(|r| r.cpu_us_per_req).show(unit(" µs")),
            col(|r| r.wakeups_per_req).show(sig3),
            col(|r| r.polls_per_req).show(sig3),
            col(|r| r.events_per_req).show(sig3),
            col(|r| r.others_pct).show(unit(" %")),
        );
    }
    for s in skipped {
        let _ = writeln!(
            out,
            "| {} | skipped: {} ||||||||||||",
            count_label(s.pairs),
            s.why
        );
    }
    out
}

/// The wait-call table: CPU ns per call (median and range of the rounds) for each waiter and size,
/// and how many times epoll_wait's cost poll's is.
pub fn wait_table(points: &[Point]) -> String {
    let mut out = String::from(
        "| idle sockets registered | select, ns per call | poll, ns per call | epoll_wait, ns per call | poll / epoll_wait |\n\
         |---:|---:|---:|---:|---:|\n",
    );
    for idle in sizes_of(points) {
        let cell = |w: Waiter| {
            find(points, w, idle).map_or_else(
                || "— (fd ≥ FD_SETSIZE)".to_string(),
                |p| Spread::of(&p.cpu_ns).show(sig3),
            )
        };
        let median =
            |w: Waiter| find(points, w, idle).map_or(f64::NAN, |p| Spread::of(&p.cpu_ns).median);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {}x |",
            count_label(idle),
            cell(Waiter::Select),
            cell(Waiter::Poll),
            cell(Waiter::Epoll),
            sig3(median(Waiter::Poll) / median(Waiter::Epoll)),
        );
    }
    out
}

fn sizes_of(points: &[Point]) -> Vec<usize> {
    let mut sizes: Vec<usize> = points.iter().map(|p| p.idle).collect();
    sizes.dedup();
    sizes
}

fn find(points: &[Point], waiter: Waiter, idle: usize) -> Option<&Point> {
    points.iter().find(|p| p.waiter == waiter && p.idle == idle)
}

/// Every run and point, raw, with the medians beside them.
pub fn json(
    info: Vec<(&str, Json)>,
    runs: &[PairsRun],
    skipped: &[Skipped],
    points: &[Point],
) -> Json {
    let num = |v: f64| Json::Num(v);
    let nums = |v: &[f64]| Json::Arr(v.iter().map(|x| Json::Num(*x)).collect());
    let runs = runs
        .iter()
        .map(|r| {
            Json::obj(vec![
                ("idle_pairs", num(r.pairs as f64)),
                ("repeat", num(r.repeat as f64)),
                ("rss_before_bytes", num(r.rss_before as f64)),
                ("rss_after_bytes", num(r.rss_after as f64)),
                ("rss_per_pair_bytes", num(r.per_pair_bytes())),
                ("slab_per_pair_bytes", num(r.slab_per_pair)),
                ("p50_us", num(r.p50_us)),
                ("p99_us", num(r.p99_us)),
                ("rps", num(r.rps)),
                ("cpu_us_per_request", num(r.cpu_us_per_req)),
                ("wakeups_per_request", num(r.wakeups_per_req)),
                ("epoll_wait_calls_per_request", num(r.polls_per_req)),
                ("events_per_request", num(r.events_per_req)),
                ("other_processes_pct", num(r.others_pct)),
                ("open_seconds", num(r.open_s)),
            ])
        })
        .collect();
    let skipped = skipped
        .iter()
        .map(|s| {
            Json::obj(vec![
                ("idle_pairs", num(s.pairs as f64)),
                ("why", Json::str(&s.why)),
            ])
        })
        .collect();
    let points = points
        .iter()
        .map(|p| {
            Json::obj(vec![
                ("waiter", Json::str(p.waiter.name())),
                ("idle_sockets", num(p.idle as f64)),
                ("cpu_ns_per_call_median", num(Spread::of(&p.cpu_ns).median)),
                ("cpu_ns_per_call", nums(&p.cpu_ns)),
                ("wall_ns_per_call", nums(&p.wall_ns)),
            ])
        })
        .collect();
    let mut fields = info;
    fields.push(("pairs_runs", Json::Arr(runs)));
    fields.push(("pairs_skipped", Json::Arr(skipped)));
    fields.push(("wait_points", Json::Arr(points)));
    Json::obj(fields)
}

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 130.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 55.0;

fn colour(w: Waiter) -> &'static str {
    match w {
        Waiter::Select => "#f59e0b",
        Waiter::Poll => "#dc2626",
        Waiter::Epoll => "#2563eb",
    }
}

/// The curves: ns per call against idle sockets registered, both axes log10, a line through each
/// waiter's medians and a bar over its range of rounds.
pub fn wait_svg(points: &[Point], title: &str) -> String {
    let finite = |v: &f64| v.is_finite() && *v > 0.0;
    let xs: Vec<f64> = points.iter().map(|p| p.idle.max(1) as f64).collect();
    let ys: Vec<f64> = points
        .iter()
        .flat_map(|p| p.cpu_ns.iter().copied())
        .filter(finite)
        .collect();
    let decade = |v: f64| v.log10();
    let (x0, x1) = bounds(&xs);
    let (y0, y1) = bounds(&ys);
    let px = |x: f64| LEFT + (decade(x) - x0) / (x1 - x0).max(1.0) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (decade(y) - y0) / (y1 - y0).max(1.0) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    for e in x0 as i32..=x1 as i32 {
        let x = px(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e5e7eb"/>"##,
            H - BOTTOM
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            H - BOTTOM + 16.0,
            count_label(10usize.pow(e as u32))
        );
    }
    for e in y0 as i32..=y1 as i32 {
        let y = py(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e7eb"/>"##,
            W - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            ns_label(10f64.powi(e))
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">idle sockets registered (plus one ready socket)</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">CPU per wait call</text>"#,
        (TOP + H - BOTTOM) / 2.0
    );
    for (k, w) in Waiter::ALL.into_iter().enumerate() {
        let mine: Vec<&Point> = points.iter().filter(|p| p.waiter == w).collect();
        let c = colour(w);
        let line: Vec<String> = mine
            .iter()
            .map(|p| (p.idle.max(1) as f64, Spread::of(&p.cpu_ns)))
            .filter(|(_, sp)| finite(&sp.median))
            .map(|(x, sp)| {
                let _ = writeln!(
                    s,
                    r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="{c}"/>"#,
                    px(x),
                    py(sp.min),
                    py(sp.max)
                );
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                    px(x),
                    py(sp.median)
                );
                format!("{:.1},{:.1}", px(x), py(sp.median))
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
            line.join(" ")
        );
        let ly = TOP + 10.0 + 20.0 * k as f64;
        let lx = W - RIGHT + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"/>"#,
            lx + 20.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 26.0,
            ly + 4.0,
            w.name()
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Whole decades around the values (log10), at least one decade wide.
fn bounds(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = (lo.log10().floor(), hi.log10().ceil());
    (lo, hi.max(lo + 1.0))
}

/// A decade of the y axis: `100 ns`, `1 µs`, `10 ms` (whole numbers, so no `sig3` padding).
fn ns_label(ns: f64) -> String {
    match ns {
        ns if ns >= 1e6 => format!("{:.0} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{:.0} µs", ns / 1e3),
        ns => format!("{ns:.0} ns"),
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
