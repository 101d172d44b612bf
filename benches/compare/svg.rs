//! The chart: grouped bars of each peer's ratio to tokio-current, one group per headline
//! metric, on a log2 axis centred on 1× (so 2× better and 2× worse look the same size).
//! Hand-written SVG: no plotting dependency, and the file diffs as text.

use std::fmt::Write;

use crate::report::{Results, BASELINE, SUBJECT};
use crate::scenario::{Better, MetricDef, Show, Target};
use crate::util::sig3;

const BAR_W: f64 = 20.0;
const GROUP_GAP: f64 = 34.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 78.0;
const PLOT_H: f64 = 320.0;
const BOTTOM: f64 = 70.0;

/// Fixed colours for the built-in peers; `--against` peers cycle through the rest.
fn colour(peer: &str, idx: usize) -> &'static str {
    match peer {
        "edgefwd" => "#2563eb",
        "tokio-multi" => "#f59e0b",
        "direct" => "#9ca3af",
        _ => ["#10b981", "#8b5cf6", "#ec4899", "#14b8a6"][idx % 4],
    }
}

/// Renders the chart for the headline metrics of the selected scenarios.
pub fn chart(res: &Results, title: &str) -> String {
    let groups: Vec<&MetricDef> = res
        .metrics(false)
        .filter(|d| d.show == Show::Chart)
        .collect();
    let peers: Vec<&String> = res.peers.iter().filter(|p| *p != BASELINE).collect();
    let ratios: Vec<Vec<f64>> = groups
        .iter()
        .map(|d| {
            peers
                .iter()
                .map(|p| res.ratio(d.scenario, p, d.key))
                .collect()
        })
        .collect();
    let (lo, hi) = axis_range(ratios.iter().flatten().copied());
    let group_w = BAR_W * peers.len().max(1) as f64 + GROUP_GAP;
    let width = LEFT + group_w * groups.len().max(1) as f64 + RIGHT;
    let height = TOP + PLOT_H + BOTTOM;
    // Half a power of two of head-room at both ends for the value labels.
    let (top, bottom) = (f64::from(hi) + 0.5, f64::from(lo) - 0.5);
    let y = |r: f64| TOP + (top - r.log2().clamp(bottom, top)) / (top - bottom) * PLOT_H;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>"##,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="38" fill="#444">ratio to {BASELINE} (= 1×, log scale); ↑/↓ under each group says which way is better; dashed line = edgefwd target; machine−direct = the whole machine's CPU per unit less direct's</text>"##
    );
    legend(&mut s, &peers);
    grid(&mut s, lo, hi, width, &y);
    for (gi, d) in groups.iter().enumerate() {
        let x0 = LEFT + gi as f64 * group_w + GROUP_GAP / 2.0;
        // The target first, so the bars' labels are drawn over it.
        target_mark(&mut s, res, d, &peers, x0, &y);
        for (pi, p) in peers.iter().enumerate() {
            bar(
                &mut s,
                x0 + pi as f64 * BAR_W,
                ratios[gi][pi],
                colour(p, pi),
                &y,
            );
        }
        group_label(&mut s, d, x0 + BAR_W * peers.len() as f64 / 2.0);
    }
    s.push_str("</svg>\n");
    s
}

/// The axis in whole powers of two: always includes 0.5×..2×, at most 1/1024×..1024×.
fn axis_range(ratios: impl Iterator<Item = f64>) -> (i32, i32) {
    let (mut lo, mut hi) = (-1.0f64, 1.0f64);
    for l in ratios.filter(|r| r.is_finite() && *r > 0.0).map(f64::log2) {
        lo = lo.min(l.floor());
        hi = hi.max(l.ceil());
    }
    (lo.max(-10.0) as i32, hi.min(10.0) as i32)
}

fn legend(s: &mut String, peers: &[&String]) {
    let mut x = LEFT;
    for (i, p) in peers.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<rect x="{x}" y="50" width="12" height="12" fill="{}"/><text x="{}" y="60">{}</text>"##,
            colour(p, i),
            x + 16.0,
            esc(p)
        );
        x += 30.0 + 7.0 * p.len() as f64;
    }
}

/// Horizontal lines at every power of two, the 1× line darker.
fn grid(s: &mut String, lo: i32, hi: i32, width: f64, y: &impl Fn(f64) -> f64) {
    for k in lo..=hi {
        let r = 2f64.powi(k);
        let yy = y(r);
        let (stroke, w) = if k == 0 { ("#111", 1.5) } else { ("#ddd", 1.0) };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="{stroke}" stroke-width="{w}"/>"##,
            width - RIGHT
        );
        let label = if r >= 1.0 {
            format!("{r:.0}×")
        } else {
            format!("1/{:.0}×", 1.0 / r)
        };
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{label}</text>"##,
            LEFT - 6.0,
            yy + 4.0
        );
    }
}

/// One bar from the 1× line to the ratio, labelled with the ratio; "n/a" if missing.
fn bar(s: &mut String, x: f64, r: f64, fill: &str, y: &impl Fn(f64) -> f64) {
    let base = y(1.0);
    let cx = x + BAR_W / 2.0 - 1.0;
    if !(r.is_finite() && r > 0.0) {
        let _ = writeln!(
            s,
            r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="8" fill="#999">n/a</text>"##,
            base - 3.0
        );
        return;
    }
    let top = y(r).min(base);
    let h = (y(r) - base).abs().max(1.0);
    let _ = writeln!(
        s,
        r##"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{h:.1}" fill="{fill}"/>"##,
        BAR_W - 2.0
    );
    let ly = if r >= 1.0 { y(r) - 3.0 } else { y(r) + 10.0 };
    let _ = writeln!(
        s,
        r##"<text x="{cx:.1}" y="{ly:.1}" text-anchor="middle" font-size="8" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"##,
        ratio_label(r)
    );
}

/// Bar labels: three significant digits, without exponents for tiny ratios.
fn ratio_label(r: f64) -> String {
    if r >= 0.01 {
        sig3(r)
    } else {
        format!("{r:.4}")
    }
}

/// A dashed line over the edgefwd bar at the target, expressed as a ratio to tokio-current.
fn target_mark(
    s: &mut String,
    res: &Results,
    d: &MetricDef,
    peers: &[&String],
    x0: f64,
    y: &impl Fn(f64) -> f64,
) {
    let Some(pi) = peers.iter().position(|p| *p == SUBJECT) else {
        return;
    };
    let ratio = match d.target {
        Some(Target::RatioAtLeast(t) | Target::RatioAtMost(t)) => t,
        Some(Target::AtMost(abs)) => abs / res.value(d.scenario, BASELINE, d.key),
        None => return,
    };
    if !(ratio.is_finite() && ratio > 0.0) {
        return;
    }
    let x = x0 + pi as f64 * BAR_W - 3.0;
    let yy = y(ratio);
    let _ = writeln!(
        s,
        r##"<line x1="{x:.1}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#dc2626" stroke-width="2" stroke-dasharray="4 2"/>"##,
        x + BAR_W + 4.0
    );
}

/// Scenario, metric and direction under the group.
fn group_label(s: &mut String, d: &MetricDef, cx: f64) {
    let arrow = match d.better {
        Better::Higher => "↑ better",
        Better::Lower => "↓ better",
        Better::Neither => "",
    };
    let y0 = TOP + PLOT_H + 16.0;
    let _ = writeln!(
        s,
        r##"<text x="{cx:.1}" y="{y0:.1}" text-anchor="middle" font-weight="bold">{}</text><text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#666">{arrow}</text>"##,
        esc(d.scenario.name()),
        y0 + 14.0,
        esc(short_label(d)),
        y0 + 28.0
    );
}

/// Labels short enough to sit under a group.
fn short_label(d: &MetricDef) -> &'static str {
    match d.key {
        "throughput" => "throughput",
        "cpu_per_gib" => "CPU/GiB",
        "p50_us" => "p50 latency",
        "rps" => "req/s",
        "cpu_per_100k" => "CPU/req",
        "cps" => "conn/s",
        "cpu_per_10k" => "CPU/conn",
        "overhead_per_gib" => "machine−direct/GiB",
        "overhead_per_100k" => "machine−direct/req",
        "overhead_per_10k" => "machine−direct/conn",
        "rss_per_pair_kib" => "RSS/pair",
        _ => d.label,
    }
}

/// XML-escapes text content.
fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
