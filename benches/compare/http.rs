//! The `http` scenario's real client and server: `wrk` (HTTP/1.1 keep-alive) fetching a 1 KiB
//! file from nginx through the forwarder, as a user would try a forwarder out.
//!
//! Unlike every other scenario, nothing is pinned here: the forwarder, wrk and nginx share all
//! the CPUs, so the figures include how well each forwarder gets its share of contended cores
//! (wakeups, run-queue waits), not only what its work costs. nginx and wrk are children of the
//! bench, and [`Snapshot`](crate::sys::Snapshot) counts children as the bench's own load, so
//! they are neither charged to the forwarder nor taken for a disturbing build.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::peer::free_port;
use crate::support::procfs::port_is_listening;
use crate::sys::{pin_current_to, wait_until};
use crate::util::{fail, BenchResult, Context};

/// The file wrk fetches, and its size (a small request, as in the issue).
const FILE: &str = "1k.bin";
const FILE_SIZE: usize = 1024;

/// wrk's connections (`-c`) and threads (`-t`, its default).
pub const CONNECTIONS: usize = 50;
const THREADS: usize = 2;

/// How long nginx may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether wrk and nginx can be run; else the sentence saying what is missing.
pub fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = ["wrk", "nginx"]
        .into_iter()
        .filter(|tool| !on_path(tool))
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "the http scenario needs {} (Debian: apt-get install wrk nginx-light); skipping it",
        missing.join(" and ")
    ))
}

fn on_path(tool: &str) -> bool {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(tool).is_file())
}

/// A child that may run on `cpus`, dies with the bench, and is killed and reaped on drop.
fn spawn_on(mut cmd: Command, cpus: &[usize], what: &str) -> BenchResult<Child> {
    let cpus = cpus.to_vec();
    // SAFETY: the closure only makes async-signal-safe calls (sched_setaffinity, prctl) and does
    // not allocate.
    unsafe {
        cmd.pre_exec(move || {
            pin_current_to(&cpus)?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().with_ctx(|| format!("start {what}"))
}

/// nginx serving [`FILE`] from a private directory, one process (no master), access log off.
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    pub fn start(cpus: &[usize]) -> BenchResult<Nginx> {
        let dir = std::env::temp_dir().join(format!("edgefwd-bench-http-{}", std::process::id()));
        // A leftover of an earlier bench with this pid (it was killed): ours, replace it.
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_ctx(|| format!("create {}", dir.display()))?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        fs::write(dir.join(FILE), vec![b'x'; FILE_SIZE]).ctx("write the file nginx serves")?;
        fs::write(dir.join("nginx.conf"), config(&dir, addr)).ctx("write nginx.conf")?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"));
        cmd.arg("-e").arg("stderr");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_on(cmd, cpus, "nginx")?;
        let mut nginx = Nginx { addr, child, dir };
        let up = wait_until(START_TIMEOUT, || {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return fail(format!("nginx exited at start ({status})"));
            }
            Ok(port_is_listening(port))
        })?;
        if !up {
            return fail(format!(
                "nginx did not listen on {addr} within {START_TIMEOUT:?}"
            ));
        }
        nginx.addr = addr;
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// nginx's configuration: HTTP/1.1 keep-alive for the whole run (`keepalive_requests` raised from
/// its default 1000, which would add a reconnect per thousand requests to every figure).
fn config(dir: &Path, addr: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
master_process off;
pid \"{dir}/nginx.pid\";
error_log stderr error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path \"{dir}/client_body\";
    proxy_temp_path \"{dir}/proxy\";
    fastcgi_temp_path \"{dir}/fastcgi\";
    uwsgi_temp_path \"{dir}/uwsgi\";
    scgi_temp_path \"{dir}/scgi\";
    server {{
        listen {addr};
        root \"{dir}\";
    }}
}}
"
    )
}

/// Runs `wrk -c 50 -t 2 -d SECS --latency` (`secs` rounded up to whole seconds) against `target`
/// on `cpus` and parses its report.
pub fn run_wrk(target: SocketAddr, secs: f64, cpus: &[usize]) -> BenchResult<WrkReport> {
    let mut cmd = Command::new("wrk");
    cmd.arg("-c").arg(CONNECTIONS.to_string());
    cmd.arg("-t").arg(THREADS.to_string());
    // wrk takes whole seconds only.
    cmd.arg("-d")
        .arg(format!("{}s", secs.ceil().max(1.0) as u64));
    cmd.arg("--latency");
    cmd.arg(format!("http://{target}/{FILE}"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn_on(cmd, cpus, "wrk")?;
    let out = child.wait_with_output().ctx("wait for wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return fail(format!(
            "wrk failed ({}): {}",
            out.status,
            format!("{}{}", String::from_utf8_lossy(&out.stderr), text).trim()
        ));
    }
    parse_wrk(&text)
}

/// What one wrk run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkReport {
    /// Completed requests (`N requests in T`).
    pub requests: u64,
    /// wrk's own measured duration of the run, seconds.
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Socket errors of every kind plus non-2xx/3xx responses.
    pub errors: u64,
}

impl WrkReport {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
}

/// Parses wrk's text report (`--latency` must have been given, for the percentiles).
pub fn parse_wrk(text: &str) -> BenchResult<WrkReport> {
    let mut requests = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => p50 = Some(duration_ms(v)?),
            ["99%", v] => p99 = Some(duration_ms(v)?),
            [n, "requests", "in", t, ..] => {
                let n: u64 = n.parse().map_err(|_| bad(format!("request count {n:?}")))?;
                requests = Some((n, duration_ms(t.trim_end_matches(','))? / 1e3));
            }
            ["Socket", "errors:", rest @ ..] => {
                for count in rest.iter().skip(1).step_by(2) {
                    errors += count
                        .trim_end_matches(',')
                        .parse::<u64>()
                        .map_err(|_| bad(format!("socket error count {count:?}")))?;
                }
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                errors += n
                    .parse::<u64>()
                    .map_err(|_| bad(format!("non-2xx count {n:?}")))?;
            }
            _ => {}
        }
    }
    let (Some((requests, secs)), Some(p50_ms), Some(p99_ms)) = (requests, p50, p99) else {
        return fail(format!(
            "wrk's report lacks the request count or the --latency percentiles: {:?}",
            text.trim()
        ));
    };
    if secs <= 0.0 {
        return fail(format!("wrk ran for {secs} s"));
    }
    Ok(WrkReport {
        requests,
        secs,
        p50_ms,
        p99_ms,
        errors,
    })
}

fn bad(what: String) -> crate::util::BenchError {
    crate::util::BenchError(format!("wrk's report: cannot read the {what}"))
}

/// wrk's durations (`812.00us`, `3.60ms`, `5.00s`, `1.20m`) in milliseconds.
fn duration_ms(text: &str) -> BenchResult<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| bad(format!("duration {text:?} (no unit)")))?;
    let (num, unit) = text.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad(format!("duration {text:?}")))?;
    let scale = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return Err(bad(format!("duration unit {unit:?} in {text:?}"))),
    };
    Ok(value * scale)
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/compare.rs
mod tests {
    use super::*;

    /// A report of wrk 4.1 (Debian's), errors included.
    const REPORT: &str = "\
Running 5s test @ http://127.0.0.1:40311/1k.bin
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.01ms  21.34ms   81.23%
    Req/Sec    12.05k     1.10k   14.20k    70.00%
  Latency Distribution
     50%  812.00us
     75%    2.51ms
     90%    3.12ms
     99%    5.80ms
  120345 requests in 5.01s, 147.50MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  24020.96
Transfer/sec:     29.44MB
";

    #[test]
    fn test_parse_wrk_reads_requests_latency_and_errors() {
        let r = parse_wrk(REPORT).expect("parse");
        assert_eq!(r.requests, 120_345);
        assert!((r.secs - 5.01).abs() < 1e-9, "{}", r.secs);
        assert!((r.p50_ms - 0.812).abs() < 1e-9, "{}", r.p50_ms);
        assert!((r.p99_ms - 5.8).abs() < 1e-9, "{}", r.p99_ms);
        assert_eq!(r.errors, 2 + 1 + 3 + 4);
        assert!((r.rps() - 120_345.0 / 5.01).abs() < 1e-6);
    }

    /// A clean run has no error lines at all, and durations may be in seconds or minutes.
    #[test]
    fn test_parse_wrk_without_errors_and_other_units() {
        let clean: String = REPORT
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .replace("99%    5.80ms", "99%    1.50s")
            .replace("in 5.01s", "in 1.00m");
        let r = parse_wrk(&clean).expect("parse");
        assert_eq!(r.errors, 0);
        assert!((r.p99_ms - 1500.0).abs() < 1e-9);
        assert!((r.secs - 60.0).abs() < 1e-9);
    }

    /// Without `--latency` there are no percentiles: an error naming what is missing, not a 0.
    #[test]
    fn test_parse_wrk_rejects_a_report_without_percentiles() {
        let no_latency: String = REPORT
            .lines()
            .filter(|l| {
                !l.trim_start().starts_with(|c: char| c.is_ascii_digit()) || l.contains("requests")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let err = parse_wrk(&no_latency).expect_err("no percentiles");
        assert!(err.0.contains("--latency percentiles"), "{err}");
        let err = parse_wrk(&REPORT.replace("5.80ms", "5.80xs")).expect_err("bad unit");
        assert!(err.0.contains("unit \"xs\""), "{err}");
        assert!(parse_wrk("").is_err());
    }
}
