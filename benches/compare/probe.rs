//! `--strace` and `--perf`: extra, untimed passes that explain the timed figures.
//!
//! `--strace` counts the forwarder's syscalls per unit of work with `strace -c -f -p PID`.
//! ptrace stops the forwarder at every syscall, which slows it several-fold; counts per
//! unit stay meaningful, with one bias to keep in mind: a slowed forwarder finds more
//! data per readiness event, so under strace it may make somewhat fewer calls per GiB
//! than at full speed. All forwarders get the same treatment.
//!
//! `--perf` samples where the forwarder's CPU time goes with `perf record -e cpu-clock
//! -F 999 -p PID` (cheap, so the pass runs at nearly full speed) and reports the share
//! spent in the kernel and the hottest symbols.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{start_bulk, start_echo};
use crate::json::Json;
use crate::load::{bulk_send, RrEngine};
use crate::peer::{self, Peer};
use crate::scenario::{rr_config, RunCtx, Scenario};
use crate::support::strace;
use crate::util::{fail, BenchResult, Context};

/// The scenarios `--strace` and `--perf` cover.
pub const PROBED: [Scenario; 3] = [Scenario::BulkUp, Scenario::Rr100, Scenario::Churn];

/// Which tool a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Strace,
    Perf,
}

impl Tool {
    fn program(self) -> &'static str {
        match self {
            Tool::Strace => "strace",
            Tool::Perf => "perf",
        }
    }
}

/// Bulk bytes traced (at most): enough calls for stable ratios, short under ptrace.
const TRACE_BULK_MAX: u64 = 1 << 30;

/// Syscall counts of one forwarder over one traced pass.
#[derive(Debug, Clone)]
pub struct StraceReport {
    pub scenario: Scenario,
    pub peer: String,
    /// What one unit of work is ("GiB", "request", "connection").
    pub unit: &'static str,
    /// How many units the pass did.
    pub units: f64,
    /// (syscall, calls), as strace counted them.
    pub calls: Vec<(String, u64)>,
}

impl StraceReport {
    pub fn total(&self) -> u64 {
        self.calls.iter().map(|(_, n)| n).sum()
    }

    /// The `n` most frequent syscalls.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut c = self.calls.clone();
        c.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        c.truncate(n);
        c
    }

    pub fn to_json(&self) -> Json {
        let per_unit: Vec<(String, Json)> = self
            .top(usize::MAX)
            .into_iter()
            .map(|(name, n)| (name, Json::Num(n as f64 / self.units)))
            .collect();
        Json::obj(vec![
            ("scenario", Json::str(self.scenario.name())),
            ("peer", Json::str(&self.peer)),
            ("unit", Json::str(self.unit)),
            ("units", Json::Num(self.units)),
            ("total_calls", Json::Num(self.total() as f64)),
            (
                "calls_per_unit",
                Json::Num(self.total() as f64 / self.units),
            ),
            ("per_unit_by_syscall", Json::Obj(per_unit)),
        ])
    }
}

/// Fails early with an install hint when the tool is missing.
pub fn check_available(tool: Tool) -> BenchResult<()> {
    let ok = Command::new(tool.program())
        .arg(if tool == Tool::Strace {
            "-V"
        } else {
            "--version"
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Ok(());
    }
    match tool {
        Tool::Strace => fail("--strace needs strace (apt-get install strace)"),
        Tool::Perf => fail("--perf needs perf (apt-get install linux-perf)"),
    }
}

/// Runs one `--strace` pass of `sc` against `peer`.
pub fn strace(sc: Scenario, peer: &Peer, ctx: &RunCtx) -> BenchResult<StraceReport> {
    let (unit, units, text) = run_pass(sc, peer, ctx, Tool::Strace)?;
    let calls = strace::parse_summary(&text);
    if calls.is_empty() {
        return fail(format!("strace summary had no syscalls: {text:?}"));
    }
    Ok(StraceReport {
        scenario: sc,
        peer: peer.name.clone(),
        unit,
        units,
        calls,
    })
}

/// Runs one `--perf` pass of `sc` against `peer`.
pub fn perf(sc: Scenario, peer: &Peer, ctx: &RunCtx) -> BenchResult<PerfReport> {
    let (_, _, text) = run_pass(sc, peer, ctx, Tool::Perf)?;
    let symbols = parse_perf_report(&text);
    if symbols.is_empty() {
        return fail(format!("perf report had no samples: {text:?}"));
    }
    Ok(PerfReport {
        scenario: sc,
        peer: peer.name.clone(),
        symbols,
    })
}

/// (unit of work, units done, the tool's text output).
type Pass = (&'static str, f64, String);

/// Starts the backend and the forwarder, attaches `tool`, runs the load, detaches.
fn run_pass(sc: Scenario, peer: &Peer, ctx: &RunCtx, tool: Tool) -> BenchResult<Pass> {
    match sc {
        Scenario::BulkUp => bulk_pass(peer, ctx, tool),
        Scenario::Rr100 | Scenario::Churn => rr_pass(sc, peer, ctx, tool),
        _ => fail(format!("--strace/--perf do not cover {}", sc.name())),
    }
}

fn bulk_pass(peer: &Peer, ctx: &RunCtx, tool: Tool) -> BenchResult<Pass> {
    let bytes = match tool {
        Tool::Strace => ctx.settings.bulk_bytes.min(TRACE_BULK_MAX),
        Tool::Perf => ctx.settings.bulk_bytes,
    };
    let (baddr, backend) = start_bulk(Arc::clone(&ctx.pattern), bytes, 0)?;
    let fwd = peer::start(peer, baddr, &ctx.launch)?;
    let Some(pid) = fwd.pid() else {
        return fail("nothing to trace without a forwarder process");
    };
    let probe = Attached::attach(tool, pid)?;
    let client = bulk_send(fwd.addr, &ctx.pattern, bytes)?;
    let report = match backend.join() {
        Ok(r) => r?,
        Err(_) => return fail("bulk backend thread panicked"),
    };
    let text = probe.finish()?;
    drop(client);
    Ok(("GiB", report.bytes as f64 / (1u64 << 30) as f64, text))
}

fn rr_pass(sc: Scenario, peer: &Peer, ctx: &RunCtx, tool: Tool) -> BenchResult<Pass> {
    let echo = start_echo()?;
    let fwd = peer::start(peer, echo.addr(), &ctx.launch)?;
    let Some(pid) = fwd.pid() else {
        return fail("nothing to trace without a forwarder process");
    };
    let probe = Attached::attach(tool, pid)?;
    let mut cfg = rr_config(sc, &ctx.settings);
    // No warm-up: every request made while the tool is attached is counted.
    cfg.warmup = Duration::ZERO;
    let outcome = RrEngine::new(fwd.addr, &ctx.pattern, cfg)?.run(|_| Ok(()))?;
    let text = probe.finish()?;
    drop(fwd);
    echo.stop().ctx("echo server")?;
    Ok(if cfg.churn {
        ("connection", outcome.connections as f64, text)
    } else {
        ("request", outcome.requests as f64, text)
    })
}

/// A running `strace -c -f -p PID` or `perf record -p PID`. Dropping it without
/// `finish` kills the tool (the kernel then detaches the forwarder, which keeps running).
struct Attached {
    tool: Tool,
    child: Child,
    out: PathBuf,
}

impl Attached {
    /// Starts the tool and waits until it is attached to every thread of `pid`.
    fn attach(tool: Tool, pid: u32) -> BenchResult<Attached> {
        let out = std::env::temp_dir().join(format!(
            "edgefwd-compare-{}-{}-{pid}.out",
            tool.program(),
            std::process::id()
        ));
        let pid_s = pid.to_string();
        let mut cmd = Command::new(tool.program());
        match tool {
            Tool::Strace => cmd.args(["-c", "-f", "-p", &pid_s, "-o"]).arg(&out),
            Tool::Perf => cmd
                .args([
                    "record",
                    "-q",
                    "-e",
                    "cpu-clock",
                    "-F",
                    "999",
                    "-p",
                    &pid_s,
                    "-o",
                ])
                .arg(&out),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_ctx(|| format!("start {}", tool.program()))?;
        let (tx, rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let attached = Attached { tool, child, out };
        if tool == Tool::Strace {
            // strace says "Process N attached" per thread; perf says nothing when quiet.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) if line.contains("attached") => break,
                    Ok(_) => {}
                    Err(_) => return fail(format!("strace did not attach to {pid} within 10 s")),
                }
            }
        }
        // Both attach the threads in turn; give them a moment to finish.
        std::thread::sleep(Duration::from_millis(300));
        Ok(attached)
    }

    /// Detaches (SIGINT makes strace print its summary and perf write its data) and
    /// returns the text to parse: strace's summary, or `perf report` of the samples.
    fn finish(mut self) -> BenchResult<String> {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    return fail(format!(
                        "{} did not exit within 10 s of SIGINT",
                        self.tool.program()
                    ))
                }
                Err(e) => return fail(format!("wait for {}: {e}", self.tool.program())),
            }
        }
        match self.tool {
            Tool::Strace => std::fs::read_to_string(&self.out)
                .with_ctx(|| format!("read {}", self.out.display())),
            Tool::Perf => perf_report_text(&self.out),
        }
    }
}

/// `perf report` of a recording, one line per symbol with its share of the samples.
fn perf_report_text(data: &std::path::Path) -> BenchResult<String> {
    let out = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--sort",
            "sym",
            "--percent-limit",
            "0",
            "-i",
        ])
        .arg(data)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ctx("run perf report")?;
    if !out.status.success() {
        return fail(format!("perf report failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

/// Where one forwarder's CPU went in one `--perf` pass.
#[derive(Debug, Clone)]
pub struct PerfReport {
    pub scenario: Scenario,
    pub peer: String,
    /// (symbol, % of samples, in the kernel?), hottest first.
    pub symbols: Vec<(String, f64, bool)>,
}

impl PerfReport {
    /// Share of the samples taken in the kernel (`[k]`), in %.
    pub fn kernel_pct(&self) -> f64 {
        self.symbols.iter().filter(|s| s.2).map(|s| s.1).sum()
    }

    pub fn to_json(&self) -> Json {
        let top: Vec<Json> = self
            .symbols
            .iter()
            .take(20)
            .map(|(name, pct, kernel)| {
                Json::obj(vec![
                    ("symbol", Json::str(name)),
                    ("percent", Json::Num(*pct)),
                    ("kernel", Json::Bool(*kernel)),
                ])
            })
            .collect();
        Json::obj(vec![
            ("scenario", Json::str(self.scenario.name())),
            ("peer", Json::str(&self.peer)),
            ("kernel_percent", Json::Num(self.kernel_pct())),
            ("top_symbols", Json::Arr(top)),
        ])
    }
}

/// Parses `perf report --sort sym` lines: `    12.34%  [k] copy_user_generic`.
fn parse_perf_report(text: &str) -> Vec<(String, f64, bool)> {
    text.lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let pct: f64 = cols.next()?.strip_suffix('%')?.parse().ok()?;
            let kind = cols.next()?;
            let name: Vec<&str> = cols.collect();
            let kernel = match kind {
                "[k]" => true,
                "[.]" => false,
                _ => return None,
            };
            Some((name.join(" "), pct, kernel))
        })
        .collect()
}

/// What the `--strace` and `--perf` passes found.
#[derive(Default)]
pub struct Probes {
    pub strace: Vec<StraceReport>,
    pub perf: Vec<PerfReport>,
}
