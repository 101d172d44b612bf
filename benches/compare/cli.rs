//! Command-line options of `cargo bench --bench compare -- [OPTIONS]`.
//!
//! Hand-parsed (clap is a dependency of the binary, but a bench must also swallow the
//! `--bench` flag cargo appends, and the option set is small).

use std::path::PathBuf;
use std::time::Duration;

use crate::scenario::Scenario;
use crate::support::args::{command_line, Flags};
use crate::util::{fail, parse_size, BenchResult, Context};

pub const USAGE: &str = "\
Compare edgefwd with tokio forwarders (and optional other peers) on this machine.

usage: cargo bench --bench compare -- [OPTIONS]

  --quick                 short run (about a minute): smaller transfers, 2 s windows, fewer
                          repeats
  --scenarios LIST        comma list of bulk, bulk-up, bulk-duplex, rr1, rr100, churn, idle,
                          http (wrk through the forwarder to nginx, unpinned; needs wrk and
                          nginx, skipped without them) (default: all)
  --only LIST             comma list of peers: direct, edgefwd, tokio-current, tokio-multi and
                          the names given to --against (default: all); keep direct for the
                          whole-machine overheads over direct
  --against NAME=CMD      add a peer run as `sh -c \"exec CMD\"`; CMD may use {listen},
                          {listen_host}, {listen_port}, {upstream}, {upstream_host},
                          {upstream_port}, and {edgefwd} (the edgefwd binary under test). It
                          must stay in the foreground. Repeatable. e.g.
                          --against 'socat=socat TCP-LISTEN:{listen_port},bind=127.0.0.1,fork,reuseaddr TCP:{upstream}'
                          benches/peers/ has HAProxy and nginx set up like edgefwd:
                          --against 'haproxy=sh benches/peers/haproxy.sh {listen} {upstream}'
                          --against 'nginx=sh benches/peers/nginx.sh {listen} {upstream}'
  --buffer-size SIZE      buffer per direction for every forwarder (default 64k)
  --bulk-mib N            MiB per direction in the bulk scenarios
  --duration SECS         measured window of rr1/rr100/churn (and http with --quick; else 5 s)
  --idle-max N            cap on idle pairs (also limited by RLIMIT_NOFILE)
  --repeat N              runs per scenario and peer, the median is reported (default: bulk 5,
                          rr1/rr100/churn/http 3, idle 1; --quick: bulk 3, others 1)
  --udp                   instead of the TCP scenarios: UDP forwarding (1 and 100 clients, 64 B
                          and 1,400 B datagrams) through direct, edgefwd (udp://), socat
                          (UDP4-LISTEN,fork; needs socat) and a tokio UDP forwarder: round
                          trips/s, CPU per million, loss (--only and --duration apply)
  --perf                  afterwards, profile each forwarder with `perf record -e cpu-clock`
                          in bulk-up, rr100 and churn (separate passes): kernel share, hot symbols
  --strace                afterwards, count syscalls with `strace -c -f -p PID` for bulk-up,
                          rr100 and churn (separate passes, not timed)
  --no-wait-quiet         do not wait for other processes to go quiet before each run,
                          nor repeat runs they disturbed (by default: up to 15 s, 2 repeats,
                          4 min in all)
  --no-pin                do not pin the forwarder to the first CPU and the load to the rest
  --edgefwd-bin PATH      edgefwd binary to test (default: the one cargo built)
  --out DIR               where results go (default: <crate>/bench-results)
  -h, --help              this text

Exit status: 0 when every run completed; 3 when the report is written but runs failed (a
corrupted stream, a stall, a forwarder that died: listed under \"Failed runs\"); 1 when the
harness could not run; 2 for bad options.
";

/// Parsed options, with `--quick` and explicit values resolved into plain numbers.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub buffer_size: usize,
    pub only: Option<Vec<String>>,
    pub scenarios: Vec<Scenario>,
    pub against: Vec<(String, String)>,
    pub bulk_mib: u64,
    pub warmup: Duration,
    pub measure: Duration,
    pub idle_max: usize,
    /// Runs per (scenario, peer) for bulk, rr/churn and idle scenarios.
    pub repeats: Repeats,
    pub strace: bool,
    pub perf: bool,
    pub pin: bool,
    pub wait_quiet: bool,
    pub edgefwd_bin: PathBuf,
    pub out_dir: PathBuf,
    /// The command line as given, for the report.
    pub command: String,
    /// Run the UDP scenarios (`udp.rs`) instead of the TCP ones.
    pub udp: bool,
}

/// Runs per (scenario, peer), by kind of scenario.
#[derive(Debug, Clone, Copy)]
pub struct Repeats {
    pub bulk: usize,
    pub rr: usize,
    pub idle: usize,
}

impl Repeats {
    pub fn of(&self, sc: Scenario) -> usize {
        match sc {
            Scenario::BulkUp | Scenario::BulkDuplex => self.bulk,
            Scenario::Idle => self.idle,
            _ => self.rr,
        }
    }
}

/// What the command line asked for.
pub enum Parsed {
    Run(Box<Options>),
    Help,
}

/// Explicit values before `--quick` picks the defaults for the rest.
#[derive(Default)]
struct Raw {
    quick: bool,
    buffer_size: Option<usize>,
    only: Option<Vec<String>>,
    scenarios: Option<Vec<Scenario>>,
    against: Vec<(String, String)>,
    bulk_mib: Option<u64>,
    duration: Option<f64>,
    idle_max: Option<usize>,
    repeat: Option<usize>,
    strace: bool,
    perf: bool,
    udp: bool,
    no_pin: bool,
    no_wait_quiet: bool,
    edgefwd_bin: Option<PathBuf>,
    out_dir: Option<PathBuf>,
}

pub fn parse(args: &[String]) -> BenchResult<Parsed> {
    let mut raw = Raw::default();
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        let mut value = || flags.value().or_else(fail);
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--quick" => raw.quick = true,
            "--strace" => raw.strace = true,
            "--perf" => raw.perf = true,
            "--udp" => raw.udp = true,
            "--no-pin" => raw.no_pin = true,
            "--no-wait-quiet" => raw.no_wait_quiet = true,
            "--buffer-size" => raw.buffer_size = Some(parse_size(&value()?)?),
            "--only" => raw.only = Some(split_list(&value()?)),
            "--scenarios" => raw.scenarios = Some(Scenario::parse_list(&value()?)?),
            "--against" => raw.against.push(parse_against(&value()?)?),
            "--bulk-mib" => raw.bulk_mib = Some(number(flag, &value()?)?),
            "--duration" => raw.duration = Some(number(flag, &value()?)?),
            "--idle-max" => raw.idle_max = Some(number(flag, &value()?)?),
            "--repeat" => raw.repeat = Some(number(flag, &value()?)?),
            "--edgefwd-bin" => raw.edgefwd_bin = Some(PathBuf::from(value()?)),
            "--out" => raw.out_dir = Some(PathBuf::from(value()?)),
            other => return fail(format!("unknown option {other:?} (see --help)")),
        }
    }
    resolve(raw, args).map(|o| Parsed::Run(Box::new(o)))
}

/// Fills in what was not given, from the quick or the default profile.
fn resolve(raw: Raw, args: &[String]) -> BenchResult<Options> {
    // Bulk figures vary most from one connection to the next (TCP autotuning and where
    // the kernel runs the receive path), so bulk gets more, shorter repeats; the idle
    // figures barely move, so one run is enough.
    let (bulk_mib, secs, warmup_ms, idle_max, repeats) = if raw.quick {
        (
            512,
            2.0,
            300,
            5_000,
            Repeats {
                bulk: 3,
                rr: 1,
                idle: 1,
            },
        )
    } else {
        (
            1024,
            2.5,
            500,
            10_000,
            Repeats {
                bulk: 5,
                rr: 3,
                idle: 1,
            },
        )
    };
    let measure = raw.duration.unwrap_or(secs);
    if !(0.1..=600.0).contains(&measure) {
        return fail("--duration must be between 0.1 and 600 seconds");
    }
    let repeats = match raw.repeat {
        Some(0) => return fail("--repeat must be at least 1"),
        Some(n) => Repeats {
            bulk: n,
            rr: n,
            idle: n,
        },
        None => repeats,
    };
    let bulk_mib = raw.bulk_mib.unwrap_or(bulk_mib);
    if bulk_mib == 0 {
        return fail("--bulk-mib must be at least 1");
    }
    Ok(Options {
        quick: raw.quick,
        buffer_size: raw.buffer_size.unwrap_or(64 * 1024),
        only: raw.only,
        scenarios: raw.scenarios.unwrap_or_else(|| Scenario::ALL.to_vec()),
        against: raw.against,
        bulk_mib,
        warmup: Duration::from_millis(warmup_ms),
        measure: Duration::from_secs_f64(measure),
        idle_max: raw.idle_max.unwrap_or(idle_max),
        repeats,
        strace: raw.strace,
        perf: raw.perf,
        pin: !raw.no_pin,
        wait_quiet: !raw.no_wait_quiet,
        edgefwd_bin: raw
            .edgefwd_bin
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_edgefwd"))),
        out_dir: raw
            .out_dir
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results")),
        command: command_line("compare", args),
        udp: raw.udp,
    })
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> BenchResult<T>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>().with_ctx(|| format!("{flag} {v:?}"))
}

/// `NAME=CMD`; the name becomes a table column, so it must be non-empty and plain.
fn parse_against(v: &str) -> BenchResult<(String, String)> {
    let Some((name, cmd)) = v.split_once('=') else {
        return fail(format!("--against {v:?}: expected NAME=CMD"));
    };
    let name = name.trim();
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok || cmd.trim().is_empty() {
        return fail(format!(
            "--against {v:?}: NAME must be [A-Za-z0-9_-]+ and CMD non-empty"
        ));
    }
    if ["direct", "edgefwd", "tokio-current", "tokio-multi"].contains(&name) {
        return fail(format!("--against: {name:?} is a built-in peer name"));
    }
    Ok((name.to_string(), cmd.to_string()))
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/compare.rs
mod tests {
    use super::*;

    fn run(args: &[&str]) -> BenchResult<Options> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match parse(&args)? {
            Parsed::Run(options) => Ok(*options),
            Parsed::Help => fail("help"),
        }
    }

    #[test]
    fn test_options_and_the_command_line_recorded() {
        let o = run(&[
            "--quick",
            "--scenarios",
            "bulk,churn",
            "--repeat=2",
            "--bench",
        ])
        .expect("parse");
        assert_eq!(
            o.scenarios,
            vec![Scenario::BulkUp, Scenario::BulkDuplex, Scenario::Churn]
        );
        assert_eq!((o.repeats.bulk, o.repeats.rr, o.repeats.idle), (2, 2, 2));
        assert_eq!(o.bulk_mib, 512);
        assert_eq!(
            o.command,
            "cargo bench --bench compare -- --quick --scenarios bulk,churn --repeat=2"
        );
        let o = run(&[
            "--against",
            "socat=socat A B",
            "--against",
            "h=sh x.sh {listen}",
        ])
        .expect("parse");
        assert_eq!(
            o.against[1],
            ("h".to_string(), "sh x.sh {listen}".to_string())
        );
    }

    /// Bad input is an error naming the bad value, never a panic or a silent default.
    #[test]
    fn test_bad_options_name_the_value() {
        for (args, expect) in [
            (&["--against", "nocommand"][..], "\"nocommand\""),
            (&["--against", "bad name=cmd"][..], "\"bad name=cmd\""),
            (&["--against", "edgefwd=cmd"][..], "built-in"),
            (&["--against", "=cmd"][..], "\"=cmd\""),
            (&["--against", "x= "][..], "\"x= \""),
            (&["--scenarios", "bulk,warp"][..], "\"warp\""),
            (&["--repeat", "0"][..], "--repeat"),
            (&["--repeat", "x"][..], "--repeat \"x\""),
            (&["--duration", "0"][..], "--duration"),
            (&["--bulk-mib", "0"][..], "--bulk-mib"),
            (&["--buffer-size", "64q"][..], "\"64q\""),
            (&["--only"][..], "--only needs a value"),
            (&["--fast"][..], "\"--fast\""),
        ] {
            let err = run(args).expect_err(expect).0;
            assert!(err.contains(expect), "{args:?}: {err}");
        }
    }
}
