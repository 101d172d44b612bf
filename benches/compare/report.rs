//! Turning run records into the markdown tables, the target verdicts and the JSON file.
//!
//! Every ratio is "peer / tokio-current" for the same metric in the same run, so a reader
//! never compares numbers from different machines or different days.

use std::fmt::Write;

use crate::json::Json;
use crate::probe::{PerfReport, Probes, StraceReport};
use crate::scenario::{Better, MetricDef, Scenario, Show, Target, Values, METRICS};
use crate::sys::MachineInfo;
use crate::util::{human_count, median, sig3};

/// The peer every ratio is relative to.
pub const BASELINE: &str = "tokio-current";
/// The peer the targets apply to.
pub const SUBJECT: &str = "edgefwd";
/// The client talking to the backend with no forwarder: the reference for overheads.
pub const DIRECT: &str = "direct";

/// Whole-machine CPU per unit of work (a scenario's `machine_per_*` value) and the overhead
/// derived from it: the same with a forwarder minus the same with `direct`.
const OVERHEADS: &[(&str, &str)] = &[
    ("machine_per_gib", "overhead_per_gib"),
    ("machine_per_100k", "overhead_per_100k"),
    ("machine_per_10k", "overhead_per_10k"),
];

/// Adds each forwarder's overhead over `direct` to its runs: its whole-machine CPU per unit
/// minus `direct`'s in the same scenario and repeat. Peers run in turn within a repeat, so the
/// two windows are moments apart; a forwarder that moves work into softirq or into its peers'
/// system calls (splice) pays for it here, where its own CPU would not show it. A run whose
/// `direct` failed or was not run gets no overhead, and `direct` itself none (it would be 0).
pub fn add_overheads(records: &mut [Record]) {
    let mut found = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if r.peer == DIRECT || r.error.is_some() {
            continue;
        }
        let direct = records.iter().find(|d| {
            d.peer == DIRECT
                && d.scenario == r.scenario
                && d.repeat == r.repeat
                && d.error.is_none()
        });
        let Some(direct) = direct else { continue };
        for &(machine, overhead) in OVERHEADS {
            if let (Some(with), Some(without)) = (r.get(machine), direct.get(machine)) {
                found.push((i, overhead, with - without));
            }
        }
    }
    for (i, key, v) in found {
        records[i].values.push((key, v));
    }
}

/// One (scenario, peer, repeat) run.
#[derive(Debug, Clone)]
pub struct Record {
    pub scenario: Scenario,
    pub peer: String,
    pub repeat: usize,
    pub values: Values,
    pub error: Option<String>,
}

impl Record {
    /// The value of metric `key`, if this run measured it.
    fn get(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// All records of a run plus what was selected.
pub struct Results {
    pub records: Vec<Record>,
    pub peers: Vec<String>,
    pub scenarios: Vec<Scenario>,
}

impl Results {
    /// Median over the successful repeats; NaN when there is none.
    pub fn value(&self, sc: Scenario, peer: &str, key: &str) -> f64 {
        let mut vals: Vec<f64> = self
            .records
            .iter()
            .filter(|r| r.scenario == sc && r.peer == peer && r.error.is_none())
            .filter_map(|r| r.get(key))
            .collect();
        median(&mut vals)
    }

    /// `peer / tokio-current`; NaN when either is missing.
    pub fn ratio(&self, sc: Scenario, peer: &str, key: &str) -> f64 {
        self.value(sc, peer, key) / self.value(sc, BASELINE, key)
    }

    /// Median over repeats of `peer / tokio-current` taken within the same repeat, and how many repeats
    /// had both. Peers run in turn inside each repeat, so a pair shares the machine's state of that
    /// moment; on a host whose speed drifts over minutes this is steadier than a ratio of medians.
    pub fn paired_ratio(&self, sc: Scenario, peer: &str, key: &str) -> (f64, usize) {
        let mut ratios: Vec<f64> = self
            .records
            .iter()
            .filter(|r| r.scenario == sc && r.peer == peer && r.error.is_none())
            .filter_map(|r| {
                let base = self.records.iter().find(|b| {
                    b.scenario == sc
                        && b.peer == BASELINE
                        && b.repeat == r.repeat
                        && b.error.is_none()
                })?;
                Some(r.get(key)? / base.get(key)?)
            })
            .filter(|x| x.is_finite())
            .collect();
        let pairs = ratios.len();
        (median(&mut ratios), pairs)
    }

    /// Errors of the failed repeats of (sc, peer).
    pub fn errors(&self, sc: Scenario, peer: &str) -> Vec<&str> {
        self.records
            .iter()
            .filter(|r| r.scenario == sc && r.peer == peer)
            .filter_map(|r| r.error.as_deref())
            .collect()
    }

    /// The metric definitions of the selected scenarios.
    pub fn metrics(&self, evidence: bool) -> impl Iterator<Item = &'static MetricDef> + '_ {
        METRICS
            .iter()
            .filter(move |d| d.evidence() == evidence && self.scenarios.contains(&d.scenario))
    }
}

/// Whether edgefwd met one target, with the figures.
#[derive(Debug, Clone)]
pub struct TargetCheck {
    pub def: MetricDef,
    /// edgefwd's value (in the metric's unit).
    pub value: f64,
    /// edgefwd / tokio-current.
    pub ratio: f64,
    /// None when a figure is missing (edgefwd or the baseline failed or was not run).
    pub met: Option<bool>,
    /// A missed "at least" goal (throughput) with the load generator's cores this busy (%) during
    /// edgefwd's runs: the harness, not the forwarder, set the figure (see [`LOADGEN_SATURATED`]).
    pub loadgen_bound: Option<f64>,
}

/// Load generator busy (% of its cores) from which a missed throughput goal is put down to the
/// harness: past this, the sender and sink have no time left to go faster, whatever the forwarder.
pub const LOADGEN_SATURATED: f64 = 85.0;

impl TargetCheck {
    /// "≥ 1.25×" etc.
    pub fn goal(&self) -> String {
        match self.def.target {
            Some(Target::RatioAtLeast(t)) => format!("≥ {t}×"),
            Some(Target::RatioAtMost(t)) => format!("≤ {t}×"),
            Some(Target::AtMost(t)) => format!("≤ {t} {}", self.def.unit),
            None => String::new(),
        }
    }

    /// The figure the goal is about: a ratio, or the absolute value.
    pub fn figure(&self) -> String {
        match self.def.target {
            Some(Target::AtMost(_)) => format!("{} {}", sig3(self.value), self.def.unit),
            _ => format!("{}×", sig3(self.ratio)),
        }
    }

    /// "met" / "MISSED" / "n/a", for tables and the progress output.
    pub fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        }
    }

    /// What the figure says, plus, for a throughput goal missed with the load generator saturated,
    /// that the harness set the figure.
    pub fn figure_note(&self) -> String {
        match self.loadgen_bound {
            Some(busy) => format!(
                "{}; load generator {busy:.0} % busy: the harness limits this figure",
                self.figure()
            ),
            None => self.figure(),
        }
    }
}

/// Evaluates every target of the selected scenarios.
pub fn check_targets(res: &Results) -> Vec<TargetCheck> {
    res.metrics(false)
        .filter_map(|d| d.target.map(|t| (d, t)))
        .map(|(d, t)| {
            let value = res.value(d.scenario, SUBJECT, d.key);
            let ratio = res.ratio(d.scenario, SUBJECT, d.key);
            let met = match t {
                Target::RatioAtLeast(x) => ratio.is_finite().then_some(ratio >= x),
                Target::RatioAtMost(x) => ratio.is_finite().then_some(ratio <= x),
                Target::AtMost(x) => value.is_finite().then_some(value <= x),
            };
            let busy = res.value(d.scenario, SUBJECT, "loadgen_cpu");
            let loadgen_bound = (matches!(t, Target::RatioAtLeast(_))
                && met == Some(false)
                && busy >= LOADGEN_SATURATED)
                .then_some(busy);
            TargetCheck {
                def: *d,
                value,
                ratio,
                met,
                loadgen_bound,
            }
        })
        .collect()
}

/// A value in its unit's usual style (rates get k/M).
pub fn fmt_value(d: &MetricDef, v: f64) -> String {
    if !v.is_finite() {
        return "—".to_string();
    }
    match d.unit {
        "req/s" | "conn/s" | "pairs" => human_count(v),
        "%" => format!("{v:.0}"),
        _ => sig3(v),
    }
}

/// Metric column text: label plus unit.
fn metric_cell(d: &MetricDef) -> String {
    if d.unit.is_empty() {
        d.label.to_string()
    } else {
        format!("{} ({})", d.label, d.unit)
    }
}

/// One cell: the value, plus its ratio to tokio-current where a ratio means something.
fn value_cell(res: &Results, d: &MetricDef, peer: &str) -> String {
    let v = res.value(d.scenario, peer, d.key);
    if !v.is_finite() {
        // direct is the reference of the overheads, never missing one through its errors.
        let reference = peer == DIRECT && OVERHEADS.iter().any(|(_, o)| *o == d.key);
        return if reference || res.errors(d.scenario, peer).is_empty() {
            "—".to_string()
        } else {
            "error".to_string()
        };
    }
    let mut cell = fmt_value(d, v);
    let r = res.ratio(d.scenario, peer, d.key);
    if peer != BASELINE && d.better != Better::Neither && r.is_finite() {
        let _ = write!(cell, " ({}×)", sig3(r));
    }
    cell
}

/// The head of a table with a scenario and a metric column, a right-aligned column per peer and, if
/// given, a last column `extra`.
fn peer_table_head(peers: &[impl std::fmt::Display], extra: Option<&str>) -> String {
    let mut head = String::from("| scenario | metric |");
    let mut rule = String::from("|---|---|");
    for p in peers {
        let _ = write!(head, " {p} |");
        rule.push_str("---:|");
    }
    if let Some(extra) = extra {
        let _ = write!(head, " {extra} |");
        rule.push_str("---|");
    }
    format!("{head}\n{rule}\n")
}

/// The main table (evidence = false) or the evidence table (evidence = true).
pub fn markdown_table(res: &Results, evidence: bool) -> String {
    let checks = check_targets(res);
    let with_targets = !evidence && res.peers.iter().any(|p| p == SUBJECT);
    let mut out = peer_table_head(&res.peers, with_targets.then_some("edgefwd target"));
    for d in res.metrics(evidence) {
        let _ = write!(out, "| {} | {} |", d.scenario.name(), metric_cell(d));
        for p in &res.peers {
            let _ = write!(out, " {} |", value_cell(res, d, p));
        }
        if with_targets {
            let check = checks
                .iter()
                .find(|c| c.def.scenario == d.scenario && c.def.key == d.key);
            match check {
                Some(c) => {
                    let _ = write!(
                        out,
                        " {} → **{}** ({}) |",
                        c.goal(),
                        c.verdict(),
                        c.figure_note()
                    );
                }
                None => out.push_str(" |"),
            }
        }
        out.push('\n');
    }
    out
}

/// Run-to-run spread (max/min - 1 over the repeats) of the charted metrics, so a reader
/// can tell a real difference from noise. Empty with a single repeat.
pub fn markdown_spread(res: &Results) -> String {
    let repeats = res.records.iter().map(|r| r.repeat + 1).max().unwrap_or(1);
    if repeats < 2 {
        return String::new();
    }
    let mut out = peer_table_head(&res.peers, None);
    let mut rows = 0;
    for d in res.metrics(false).filter(|d| d.show == Show::Chart) {
        let spreads: Vec<Option<f64>> = res.peers.iter().map(|p| spread(res, d, p)).collect();
        if spreads.iter().all(Option::is_none) {
            continue; // a scenario run once
        }
        rows += 1;
        let _ = write!(out, "| {} | {} |", d.scenario.name(), metric_cell(d));
        for sp in spreads {
            match sp {
                Some(x) => {
                    let _ = write!(out, " {:.0}% |", x * 100.0);
                }
                None => out.push_str(" — |"),
            }
        }
        out.push('\n');
    }
    if rows == 0 {
        return String::new();
    }
    out
}

/// The charted ratios again, as medians of per-repeat ratios ([`Results::paired_ratio`]). Where
/// they differ much from the table's ratio of medians, the host's speed moved during the run. Empty with
/// a single repeat.
pub fn markdown_paired(res: &Results) -> String {
    let peers: Vec<&String> = res.peers.iter().filter(|p| *p != BASELINE).collect();
    let mut out = peer_table_head(&peers, None);
    let mut rows = 0;
    for d in res
        .metrics(false)
        .filter(|d| d.show == Show::Chart && d.better != Better::Neither)
    {
        let cells: Vec<(f64, usize)> = peers
            .iter()
            .map(|p| res.paired_ratio(d.scenario, p, d.key))
            .collect();
        if cells.iter().all(|(_, n)| *n < 2) {
            continue;
        }
        rows += 1;
        let _ = write!(out, "| {} | {} |", d.scenario.name(), metric_cell(d));
        for (ratio, pairs) in cells {
            if pairs == 0 {
                out.push_str(" — |");
            } else {
                let _ = write!(out, " {}× ({pairs}) |", sig3(ratio));
            }
        }
        out.push('\n');
    }
    if rows == 0 {
        return String::new();
    }
    out
}

/// max/min - 1 of one metric over the successful repeats of one peer.
fn spread(res: &Results, d: &MetricDef, peer: &str) -> Option<f64> {
    let vals: Vec<f64> = res
        .records
        .iter()
        .filter(|r| r.scenario == d.scenario && r.peer == peer && r.error.is_none())
        .filter_map(|r| r.get(d.key))
        .filter(|v| v.is_finite())
        .collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (vals.len() >= 2 && lo > 0.0).then(|| hi / lo - 1.0)
}

/// The failed runs, one line each, so an "error" cell can be explained.
pub fn markdown_errors(res: &Results) -> String {
    let mut out = String::new();
    for r in res.records.iter().filter(|r| r.error.is_some()) {
        let _ = writeln!(
            out,
            "- {} / {} (repeat {}): {}",
            r.scenario.name(),
            r.peer,
            r.repeat + 1,
            r.error.as_deref().unwrap_or("")
        );
    }
    out
}

/// A table of profiled passes, a row each: scenario, peer, one `figure` and the `top` entries.
fn profile_table<'a>(
    figure: &str,
    top: &str,
    rows: impl Iterator<Item = (Scenario, &'a str, String, Vec<String>)>,
) -> String {
    let mut out = format!("| scenario | peer | {figure} | {top} |\n|---|---|---:|---|\n");
    for (scenario, peer, figure, top) in rows {
        let _ = writeln!(
            out,
            "| {} | {peer} | {figure} | {} |",
            scenario.name(),
            top.join(", ")
        );
    }
    out
}

/// The syscall counts from `--strace`, per unit of work.
pub fn markdown_strace(reports: &[StraceReport]) -> String {
    let rows = reports.iter().map(|r| {
        let top = r
            .top(6)
            .iter()
            .map(|(name, n)| format!("{name} {}", sig3(*n as f64 / r.units)))
            .collect();
        let per_unit = format!("{} per {}", sig3(r.total() as f64 / r.units), r.unit);
        (r.scenario, r.peer.as_str(), per_unit, top)
    });
    profile_table("syscalls per unit", "top syscalls per unit", rows)
}

/// The `--perf` profiles: kernel share and the hottest symbols.
pub fn markdown_perf(reports: &[PerfReport]) -> String {
    let rows = reports.iter().map(|r| {
        let top = r
            .symbols
            .iter()
            .take(6)
            .map(|(name, pct, _)| format!("{} {pct:.1}", short_symbol(name)))
            .collect();
        (
            r.scenario,
            r.peer.as_str(),
            format!("{:.0}%", r.kernel_pct()),
            top,
        )
    });
    profile_table("in kernel", "hottest symbols (% of samples)", rows)
}

/// Keeps table cells readable: Rust paths lose their generic arguments and are cut.
fn short_symbol(name: &str) -> String {
    let base = name.split('<').next().unwrap_or(name);
    let mut s: String = base.chars().take(48).collect();
    if base.len() > 48 {
        s.push('…');
    }
    s.replace('|', "\\|")
}

/// Run facts for the report and the JSON.
pub struct RunInfo {
    pub date: String,
    pub command: String,
    pub machine: MachineInfo,
    pub pinning: String,
    pub settings: Vec<(&'static str, Json)>,
}

/// The whole markdown report (also written to bench-results/latest.md).
pub fn markdown_report(info: &RunInfo, res: &Results, probes: &Probes) -> String {
    let mut out = String::new();
    let m = &info.machine;
    let _ = writeln!(out, "## edgefwd vs tokio — {}\n", info.date);
    let _ = writeln!(out, "- command: `{}`", info.command);
    let _ = writeln!(
        out,
        "- machine: {} CPUs, {}, Linux {}, RLIMIT_NOFILE {}",
        m.nproc, m.cpu_model, m.kernel, m.nofile_limit
    );
    let _ = writeln!(out, "- {}", info.pinning);
    let _ = writeln!(
        out,
        "- values are medians over repeats; (×) is the ratio to {BASELINE} in this run; CPU is the forwarder process's utime+stime"
    );
    let _ = writeln!(
        out,
        "- machine CPU is every busy tick of every CPU in the window (/proc/stat: processes, kernel threads, irq and softirq) minus unrelated processes' CPU; \
         machine CPU over {DIRECT} is a forwarder's minus {DIRECT}'s in the same repeat (no figure where {DIRECT} failed or was not run)"
    );
    let noisy = res
        .records
        .iter()
        .flat_map(|r| r.values.iter())
        .filter(|(k, _)| *k == "other_cpu")
        .map(|(_, v)| *v)
        .fold(0.0f64, f64::max);
    let _ = writeln!(
        out,
        "- unrelated processes used at most {noisy:.0}% of a core during any measured window{}\n",
        if noisy > crate::scenario::NOISY_PCT {
            " — the machine was NOT quiet, treat the figures with care"
        } else {
            ""
        }
    );
    out.push_str(&markdown_table(res, false));
    let spread = markdown_spread(res);
    if !spread.is_empty() {
        out.push_str(
            "\nRun-to-run spread of the charted figures (max/min − 1 over the repeats):\n\n",
        );
        out.push_str(&spread);
    }
    let paired = markdown_paired(res);
    if !paired.is_empty() {
        let _ = write!(
            out,
            "\nThe same ratios to {BASELINE} as medians of per-repeat ratios (peers run in turn within a repeat; number of pairs in brackets):\n\n"
        );
        out.push_str(&paired);
    }
    let errors = markdown_errors(res);
    if !errors.is_empty() {
        out.push_str("\nFailed runs:\n\n");
        out.push_str(&errors);
    }
    out.push_str("\nEvidence (wakeups = voluntary context switches of the forwarder; load generator busy = bench process CPU / its cores):\n\n");
    out.push_str(&markdown_table(res, true));
    if !probes.strace.is_empty() {
        out.push_str(
            "\nSyscalls counted with `strace -c -f -p PID` (separate, untimed passes):\n\n",
        );
        out.push_str(&markdown_strace(&probes.strace));
    }
    if !probes.perf.is_empty() {
        out.push_str("\nWhere the forwarder's CPU goes, `perf record -e cpu-clock -p PID` (separate passes):\n\n");
        out.push_str(&markdown_perf(&probes.perf));
    }
    out
}

/// The JSON results file.
pub fn json_report(info: &RunInfo, res: &Results, probes: &Probes) -> Json {
    let m = &info.machine;
    let machine = Json::obj(vec![
        ("nproc", Json::Num(m.nproc as f64)),
        ("cpu_model", Json::str(&m.cpu_model)),
        ("kernel", Json::str(&m.kernel)),
        ("nofile_limit", Json::Num(m.nofile_limit as f64)),
    ]);
    let mut summary = Vec::new();
    for &sc in &res.scenarios {
        for p in &res.peers {
            let metrics: Vec<(String, Json)> = METRICS
                .iter()
                .filter(|d| d.scenario == sc)
                .map(|d| (d.key.to_string(), Json::Num(res.value(sc, p, d.key))))
                .collect();
            let ratios: Vec<(String, Json)> = METRICS
                .iter()
                .filter(|d| d.scenario == sc && d.better != Better::Neither)
                .map(|d| (d.key.to_string(), Json::Num(res.ratio(sc, p, d.key))))
                .collect();
            let paired: Vec<(String, Json)> = METRICS
                .iter()
                .filter(|d| d.scenario == sc && d.better != Better::Neither)
                .map(|d| {
                    (
                        d.key.to_string(),
                        Json::Num(res.paired_ratio(sc, p, d.key).0),
                    )
                })
                .collect();
            let errors: Vec<Json> = res.errors(sc, p).into_iter().map(Json::str).collect();
            summary.push(Json::obj(vec![
                ("scenario", Json::str(sc.name())),
                ("peer", Json::str(p)),
                ("metrics", Json::Obj(metrics)),
                ("ratio_to_baseline", Json::Obj(ratios)),
                ("paired_ratio_to_baseline", Json::Obj(paired)),
                ("errors", Json::Arr(errors)),
            ]));
        }
    }
    let runs: Vec<Json> = res
        .records
        .iter()
        .map(|r| {
            Json::obj(vec![
                ("scenario", Json::str(r.scenario.name())),
                ("peer", Json::str(&r.peer)),
                ("repeat", Json::Num(r.repeat as f64)),
                (
                    "values",
                    Json::Obj(
                        r.values
                            .iter()
                            .map(|(k, v)| (k.to_string(), Json::Num(*v)))
                            .collect(),
                    ),
                ),
                ("error", r.error.as_ref().map_or(Json::Null, Json::str)),
            ])
        })
        .collect();
    let targets: Vec<Json> = check_targets(res)
        .iter()
        .map(|c| {
            Json::obj(vec![
                ("scenario", Json::str(c.def.scenario.name())),
                ("metric", Json::str(c.def.key)),
                ("goal", Json::str(c.goal())),
                ("edgefwd", Json::Num(c.value)),
                ("ratio", Json::Num(c.ratio)),
                ("met", c.met.map_or(Json::Null, Json::Bool)),
                (
                    "loadgen_bound_pct",
                    c.loadgen_bound.map_or(Json::Null, Json::Num),
                ),
            ])
        })
        .collect();
    let strace_json: Vec<Json> = probes.strace.iter().map(StraceReport::to_json).collect();
    let perf_json: Vec<Json> = probes.perf.iter().map(PerfReport::to_json).collect();
    Json::obj(vec![
        ("schema", Json::str("edgefwd-compare/1")),
        ("date", Json::str(&info.date)),
        ("command", Json::str(&info.command)),
        ("machine", machine),
        ("pinning", Json::str(&info.pinning)),
        ("settings", Json::obj(info.settings.clone())),
        ("baseline", Json::str(BASELINE)),
        (
            "peers",
            Json::Arr(res.peers.iter().map(Json::str).collect()),
        ),
        ("summary", Json::Arr(summary)),
        ("targets", Json::Arr(targets)),
        ("runs", Json::Arr(runs)),
        ("strace", Json::Arr(strace_json)),
        ("perf", Json::Arr(perf_json)),
    ])
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/compare.rs
mod tests {
    use super::*;

    #[test]
    fn test_peer_table_head_has_a_column_per_peer_then_the_extra_one() {
        let peers = ["direct", "edgefwd"];
        assert_eq!(
            peer_table_head(&peers, Some("edgefwd target")),
            "| scenario | metric | direct | edgefwd | edgefwd target |\n|---|---|---:|---:|---|\n"
        );
        assert_eq!(
            peer_table_head(&peers, None),
            "| scenario | metric | direct | edgefwd |\n|---|---|---:|---:|\n"
        );
    }

    #[test]
    fn test_profile_table_has_a_row_per_pass() {
        let top = vec!["read 2".to_string(), "write 1".to_string()];
        let rows = [(Scenario::Rr1, "edgefwd", "3 per request".to_string(), top)];
        assert_eq!(
            profile_table("syscalls", "top", rows.into_iter()),
            "| scenario | peer | syscalls | top |\n|---|---|---:|---|\n\
             | rr1 | edgefwd | 3 per request | read 2, write 1 |\n"
        );
    }

    fn record(scenario: Scenario, peer: &str, repeat: usize, values: Values) -> Record {
        Record {
            scenario,
            peer: peer.to_string(),
            repeat,
            values,
            error: None,
        }
    }

    fn churn(peer: &str, repeat: usize, cpu: f64) -> Record {
        record(Scenario::Churn, peer, repeat, vec![("cpu_per_10k", cpu)])
    }

    fn failed(mut r: Record, why: &str) -> Record {
        r.error = Some(why.to_string());
        r
    }

    fn results(records: Vec<Record>) -> Results {
        Results {
            records,
            peers: vec![SUBJECT.to_string(), BASELINE.to_string()],
            scenarios: vec![
                Scenario::BulkUp,
                Scenario::BulkDuplex,
                Scenario::Churn,
                Scenario::Idle,
            ],
        }
    }

    fn check<'a>(checks: &'a [TargetCheck], scenario: Scenario, key: &str) -> &'a TargetCheck {
        checks
            .iter()
            .find(|c| c.def.scenario == scenario && c.def.key == key)
            .expect("target checked")
    }

    /// Ratios are of medians over the repeats that did not fail; a goal met exactly is met, in each
    /// direction; and a throughput goal missed with the load generator saturated (from exactly
    /// `LOADGEN_SATURATED` on) is put down to the harness.
    #[test]
    fn test_targets_are_judged_on_medians_of_the_runs_that_completed() {
        let bulk = |scenario, peer, tput, busy| {
            let values = vec![
                ("throughput", tput),
                ("cpu_per_gib", 0.3),
                ("loadgen_cpu", busy),
            ];
            record(scenario, peer, 0, values)
        };
        let idle = |peer, kib| record(Scenario::Idle, peer, 0, vec![("rss_per_pair_kib", kib)]);
        let res = results(vec![
            churn(SUBJECT, 0, 0.70),
            churn(SUBJECT, 1, 0.75),
            churn(SUBJECT, 2, 0.90),
            failed(churn(SUBJECT, 3, 0.1), "stalled"),
            churn(BASELINE, 0, 1.0),
            churn(BASELINE, 1, 1.0),
            churn(BASELINE, 2, 1.0),
            bulk(Scenario::BulkUp, SUBJECT, 1.25, 99.0),
            bulk(Scenario::BulkUp, BASELINE, 1.0, 60.0),
            bulk(Scenario::BulkDuplex, SUBJECT, 1.2, LOADGEN_SATURATED),
            bulk(Scenario::BulkDuplex, BASELINE, 1.0, 60.0),
            idle(SUBJECT, 1.0),
            idle(BASELINE, 94.0),
        ]);
        let checks = check_targets(&res);
        let c = check(&checks, Scenario::Churn, "cpu_per_10k");
        assert_eq!(c.ratio, 0.75, "the median of the three that completed");
        assert_eq!(c.met, Some(true), "0.75 <= 0.75");
        let up = check(&checks, Scenario::BulkUp, "throughput");
        assert_eq!(
            (up.met, up.loadgen_bound),
            (Some(true), None),
            "1.25 >= 1.25"
        );
        let duplex = check(&checks, Scenario::BulkDuplex, "throughput");
        assert_eq!(duplex.met, Some(false), "1.2 < 1.25");
        assert_eq!(duplex.loadgen_bound, Some(LOADGEN_SATURATED));
        assert!(duplex
            .figure_note()
            .contains("the harness limits this figure"));
        let cpu = check(&checks, Scenario::BulkUp, "cpu_per_gib");
        assert_eq!(cpu.met, Some(false), "0.3 / 0.3 = 1 > 0.8");
        assert_eq!(
            cpu.loadgen_bound, None,
            "only throughput goals are put down to the harness"
        );
        let rss = check(&checks, Scenario::Idle, "rss_per_pair_kib");
        assert_eq!(rss.met, Some(true), "1.0 KiB <= 1 KiB");
        assert_eq!(res.errors(Scenario::Churn, SUBJECT), vec!["stalled"]);
        assert!(markdown_errors(&res).contains("churn / edgefwd (repeat 4): stalled"));
    }

    /// Without the baseline's figure there is no verdict, not a pass.
    #[test]
    fn test_a_missing_baseline_gives_no_verdict() {
        let res = results(vec![record(
            Scenario::Churn,
            SUBJECT,
            0,
            vec![("cpu_per_10k", 0.1)],
        )]);
        let checks = check_targets(&res);
        assert_eq!(check(&checks, Scenario::Churn, "cpu_per_10k").met, None);
    }

    /// Paired ratios pair each repeat with the baseline's run of the same repeat, skipping repeats
    /// where either failed.
    #[test]
    fn test_paired_ratios_pair_repeats() {
        let res = results(vec![
            churn(SUBJECT, 0, 0.8),
            churn(SUBJECT, 1, 1.8),
            churn(SUBJECT, 2, 0.1),
            churn(BASELINE, 0, 1.0),
            churn(BASELINE, 1, 2.0),
            failed(churn(BASELINE, 2, 1.0), "died"),
        ]);
        let (ratio, pairs) = res.paired_ratio(Scenario::Churn, SUBJECT, "cpu_per_10k");
        assert_eq!(pairs, 2);
        assert!((ratio - 0.85).abs() < 1e-9, "{ratio}");
    }

    fn rr100(peer: &str, repeat: usize, machine: f64) -> Record {
        record(
            Scenario::Rr100,
            peer,
            repeat,
            vec![("cpu_per_100k", 1.0), ("machine_per_100k", machine)],
        )
    }

    /// Each forwarder's overhead is its machine CPU minus direct's in the same repeat; direct gets
    /// none, nor does a repeat whose direct run failed, nor a failed forwarder run; the reported
    /// figure is the median over repeats, and its paired ratio pairs the overheads of one repeat.
    #[test]
    fn test_overhead_over_direct_is_taken_per_repeat() {
        let mut records = vec![
            rr100(DIRECT, 0, 10.0),
            rr100(SUBJECT, 0, 13.0),
            rr100(BASELINE, 0, 16.0),
            rr100(DIRECT, 1, 12.0),
            rr100(SUBJECT, 1, 14.0),
            rr100(BASELINE, 1, 20.0),
            failed(rr100(DIRECT, 2, 1.0), "refused"),
            rr100(SUBJECT, 2, 50.0),
            rr100(BASELINE, 2, 60.0),
            rr100(DIRECT, 3, 11.0),
            rr100(SUBJECT, 3, 15.0),
            failed(rr100(BASELINE, 3, 19.0), "stalled"),
        ];
        add_overheads(&mut records);
        let overhead = |peer: &str, repeat: usize| {
            records
                .iter()
                .find(|r| r.peer == peer && r.repeat == repeat)
                .and_then(|r| r.get("overhead_per_100k"))
        };
        assert_eq!(overhead(SUBJECT, 0), Some(3.0));
        assert_eq!(overhead(BASELINE, 0), Some(6.0));
        assert_eq!(overhead(SUBJECT, 1), Some(2.0));
        assert_eq!(overhead(BASELINE, 1), Some(8.0));
        assert_eq!(overhead(SUBJECT, 2), None, "direct failed in repeat 3");
        assert_eq!(overhead(SUBJECT, 3), Some(4.0));
        assert_eq!(overhead(BASELINE, 3), None, "a failed run has no figure");
        assert_eq!(overhead(DIRECT, 0), None);
        let res = Results {
            records,
            peers: vec![DIRECT.into(), SUBJECT.into(), BASELINE.into()],
            scenarios: vec![Scenario::Rr100],
        };
        assert_eq!(
            res.value(Scenario::Rr100, SUBJECT, "overhead_per_100k"),
            3.0
        );
        assert_eq!(
            res.value(Scenario::Rr100, BASELINE, "overhead_per_100k"),
            7.0
        );
        assert!(res
            .value(Scenario::Rr100, DIRECT, "overhead_per_100k")
            .is_nan());
        let (ratio, pairs) = res.paired_ratio(Scenario::Rr100, SUBJECT, "overhead_per_100k");
        assert_eq!(pairs, 2, "repeats 1 and 2 have both overheads");
        assert!((ratio - (0.5 + 0.25) / 2.0).abs() < 1e-9, "{ratio}");
        let table = markdown_table(&res, false);
        let row = table
            .lines()
            .find(|l| l.contains("machine CPU over direct per 100k req"))
            .expect("overhead row");
        assert_eq!(
            row,
            "| rr100 | machine CPU over direct per 100k req (CPU s) | — | 3.00 (0.429×) | 7.00 | |"
        );
    }

    /// Without a direct run at all (`--only edgefwd,tokio-current`) there is no overhead anywhere.
    #[test]
    fn test_no_direct_run_gives_no_overhead() {
        let mut records = vec![rr100(SUBJECT, 0, 13.0), rr100(BASELINE, 0, 16.0)];
        add_overheads(&mut records);
        assert!(records.iter().all(|r| r.get("overhead_per_100k").is_none()));
    }
}
