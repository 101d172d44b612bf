//! `cargo bench --bench epoll_study -- <experiment> [OPTIONS]`: the measurements behind docs/epoll.md.
//!
//! Every figure in that chapter comes from one of these experiments, run against the edgefwd binary
//! cargo built for this bench (release profile), on loopback. The counts (epoll_wait calls, events,
//! read/write syscalls) are read from edgefwd's own `--metrics` endpoint before and after the load and
//! printed as deltas, so they stay meaningful on a busy, shared machine; times are printed as context.
//!
//! # Experiments
//! - `wakeups`: N connections doing small echo ping-pong through edgefwd: epoll_wait calls, events per
//!   call, spurious wakeups, syscalls per request. `--idle N` adds N open, silent pairs.
//! - `buffers`: one bulk stream per `--buffer-size` into a sink: syscalls and epoll_wait calls per MiB,
//!   bytes per syscall, how the reads ended. `--strace` adds `strace -c` counts.
//! - `trace`: small scripted exchanges under `--trace` (half-close, upstream reset, a stale event, a
//!   ring-full stall, EMFILE), printing the log lines (and, with `--strace`, syscall excerpts).
//!
//! # Layout (one file, top to bottom)
//! - options and `main`
//! - `Fwd`: the edgefwd child process (stderr drained in a thread, killed on drop)
//! - `Sample`: a /metrics scrape, deltas, histogram summaries
//! - `Strace`: `strace -p` attached to the child
//! - backends: the mio echo server, the sink, one-shot scripted backends
//! - load: the mio ping-pong engine, the bulk sender
//! - the three experiments, and the markdown table printer

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::{TcpListener as MioListener, TcpStream as MioStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, SockRef, Socket, Type};

const USAGE: &str = "\
The measurements behind docs/epoll.md, taken from edgefwd's own --metrics counters.

usage: cargo bench --bench epoll_study -- <EXPERIMENT> [OPTIONS]

experiments:
  wakeups    N connections doing echo ping-pong: polls, events per poll, syscalls per request
  buffers    one bulk stream per buffer size into a sink: syscalls and polls per MiB
  trace      scripted exchanges under --trace: half-close, reset, stale event, ring-full stall, EMFILE

options:
  --conns LIST        wakeups: concurrent ping-pong connections, one run each (default 1,100,5000)
  --idle N            wakeups: extra established, silent connections held open (default 0)
  --seconds S         wakeups: measured seconds per run (default 3)
  --settle S          wakeups: wait this long after the last connect before measuring, so each new
                      pair's one-off connect-deadline wakeup (--connect-timeout, 5 s) stays out of
                      the window (default 5.5)
  --repeat N          wakeups: runs per connection count (default 1)
  --message BYTES     wakeups: request and response size (default 64)
  --sizes LIST        buffers: --buffer-size values (default 4k,16k,64k,256k)
  --mib N             buffers: MiB sent per run (default 1024)
  --splice            buffers: add a --splice run for every size
  --strace            buffers: count syscalls with `strace -c -f -p PID` during each run (slower);
                      trace: print strace excerpts for the stall and EMFILE cases
  --cases LIST        trace: normal,reset,stale,stall,emfile (default all)
  --fwd-arg ARG       pass ARG to edgefwd as well (repeatable), e.g. --fwd-arg=--no-nodelay
  --pin               pin edgefwd to the first allowed CPU and the load generator and backends to
                      the others (sched_setaffinity), so the loop never waits for a CPU
  -h, --help          this text
";

/// Everything in this harness fails with a message that says what was being done.
type R<T> = Result<T, String>;

/// Adds what was being done to an error.
trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|err| format!("{what}: {err}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Experiment {
    Wakeups,
    Buffers,
    Trace,
}

/// The scripted exchanges of the `trace` experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Normal,
    Reset,
    Stale,
    Stall,
    Emfile,
}

impl Case {
    const ALL: [Case; 5] = [
        Case::Normal,
        Case::Reset,
        Case::Stale,
        Case::Stall,
        Case::Emfile,
    ];

    fn parse(name: &str) -> R<Case> {
        Case::ALL
            .into_iter()
            .find(|case| case.name() == name)
            .ok_or_else(|| {
                format!("unknown trace case {name:?} (normal, reset, stale, stall, emfile)")
            })
    }

    fn name(self) -> &'static str {
        match self {
            Case::Normal => "normal",
            Case::Reset => "reset",
            Case::Stale => "stale",
            Case::Stall => "stall",
            Case::Emfile => "emfile",
        }
    }
}

#[derive(Debug, Clone)]
struct Options {
    experiment: Experiment,
    conns: Vec<usize>,
    idle: usize,
    seconds: f64,
    /// Seconds between opening the last connection and measuring.
    settle: f64,
    repeat: usize,
    message: usize,
    sizes: Vec<usize>,
    mib: u64,
    splice: bool,
    strace: bool,
    cases: Vec<Case>,
    fwd_args: Vec<String>,
    /// Pin edgefwd to the first CPU and this process (load, backends) to the others.
    pin: bool,
    /// With `--pin`, edgefwd's CPU (set once this process has moved off it).
    fwd_cpu: Option<usize>,
    /// The command line, echoed above the tables.
    command: String,
}

enum Parsed {
    Run(Box<Options>),
    Help,
}

fn parse_args(args: &[String]) -> R<Parsed> {
    let mut experiment = None;
    let mut opts = Options {
        experiment: Experiment::Wakeups,
        conns: vec![1, 100, 5000],
        idle: 0,
        seconds: 3.0,
        settle: 5.5,
        repeat: 1,
        message: 64,
        sizes: vec![4 << 10, 16 << 10, 64 << 10, 256 << 10],
        mib: 1024,
        splice: false,
        strace: false,
        cases: Case::ALL.to_vec(),
        fwd_args: Vec::new(),
        pin: false,
        fwd_cpu: None,
        command: String::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> R<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            // cargo bench appends --bench to every bench binary it runs.
            "--bench" => {}
            "--splice" => opts.splice = true,
            "--strace" => opts.strace = true,
            "--pin" => opts.pin = true,
            "--conns" => opts.conns = list(&value()?, |s| number(flag, s))?,
            "--idle" => opts.idle = number(flag, &value()?)?,
            "--seconds" => {
                opts.seconds = value()?
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0 && *s <= 600.0)
                    .ok_or_else(|| format!("{flag}: expected seconds in (0, 600]"))?;
            }
            "--message" => opts.message = number(flag, &value()?)?,
            "--settle" => {
                opts.settle = value()?
                    .parse::<f64>()
                    .ok()
                    .filter(|s| (0.0..=600.0).contains(s))
                    .ok_or_else(|| format!("{flag}: expected seconds in [0, 600]"))?;
            }
            "--repeat" => opts.repeat = number(flag, &value()?)?,
            "--sizes" => opts.sizes = list(&value()?, parse_size)?,
            "--mib" => opts.mib = number(flag, &value()?)?,
            "--cases" => opts.cases = list(&value()?, Case::parse)?,
            "--fwd-arg" => opts.fwd_args.push(value()?),
            "wakeups" => experiment = Some(Experiment::Wakeups),
            "buffers" => experiment = Some(Experiment::Buffers),
            "trace" => experiment = Some(Experiment::Trace),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    opts.experiment = experiment.ok_or("name an experiment: wakeups, buffers or trace")?;
    if opts.conns.contains(&0) || opts.message == 0 || opts.mib == 0 || opts.repeat == 0 {
        return Err("--conns, --message, --mib and --repeat must be positive".into());
    }
    let shown: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    opts.command = format!("cargo bench --bench epoll_study -- {}", shown.join(" "));
    Ok(Parsed::Run(Box::new(opts)))
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> R<T> {
    text.parse()
        .map_err(|_| format!("{flag}: {text:?} is not a number"))
}

fn list<T>(text: &str, parse: impl Fn(&str) -> R<T>) -> R<Vec<T>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse)
        .collect()
}

/// `4096`, `4k`, `16K`, `1m`: binary multiples, as edgefwd's `--buffer-size` reads them.
fn parse_size(text: &str) -> R<usize> {
    let lower = text.to_ascii_lowercase();
    let (digits, shift) = match lower.strip_suffix('k') {
        Some(d) => (d, 10),
        None => match lower.strip_suffix('m') {
            Some(d) => (d, 20),
            None => (lower.as_str(), 0),
        },
    };
    digits
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n << shift)
        .ok_or_else(|| format!("bad size {text:?} (e.g. 4k, 64k, 1m)"))
}

/// `4k`, `256k`, `1m` for printing.
fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size % (1 << 20) == 0 {
        format!("{}m", size >> 20)
    } else if size >= 1 << 10 && size % (1 << 10) == 0 {
        format!("{}k", size >> 10)
    } else {
        size.to_string()
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().all(|a| a == "--bench") {
        // A plain `cargo bench` runs every bench target: say what this one does instead of failing.
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut opts = match parse_args(&args) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("epoll_study: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = raise_nofile_limit().and_then(|nofile| {
        if opts.pin {
            opts.fwd_cpu = Some(pin_self()?);
        }
        print_header(&opts, nofile);
        match opts.experiment {
            Experiment::Wakeups => wakeups(&opts),
            Experiment::Buffers => buffers(&opts),
            Experiment::Trace => trace(&opts),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("epoll_study: error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The machine and command, so a reader of the output can tell where the figures came from.
fn print_header(opts: &Options, nofile: u64) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown kernel".into());
    // SAFETY: sysconf has no preconditions. (available_parallelism would count only the CPUs this
    // process may use, which --pin has narrowed.)
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map_or_else(
            || "unknown".into(),
            |out| String::from_utf8_lossy(&out.stdout).trim().to_string(),
        );
    println!("<!-- {} -->", opts.command);
    println!(
        "<!-- {} UTC; {cpus} CPUs, {cpu}, Linux {kernel}, load average {load}, RLIMIT_NOFILE {nofile}; commit {commit}; edgefwd {}; {} -->",
        utc_now(),
        env!("CARGO_BIN_EXE_edgefwd"),
        match opts.fwd_cpu {
            Some(cpu) => format!("edgefwd pinned to CPU {cpu}, load generator and backends to the others"),
            None => "no CPU pinning".to_string(),
        }
    );
    println!();
}

/// The CPUs this process may run on.
fn allowed_cpus() -> R<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data, valid when zeroed; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Err(format!("sched_getaffinity: {}", io::Error::last_os_error()));
    }
    // SAFETY: CPU_ISSET only reads `set`, for indexes below CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Restricts `pid` (0: the calling thread, and the threads it starts later) to `cpus`.
fn pin(pid: libc::pid_t, cpus: &[usize]) -> R<()> {
    // SAFETY: cpu_set_t is plain data, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU_SET writes one bit of `set`; `cpu` came from sched_getaffinity.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; the kernel only reads it.
    if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(format!(
            "sched_setaffinity({pid}, {cpus:?}): {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `--pin`: this process (and every thread it starts later) leaves the first allowed CPU to edgefwd;
/// returns that CPU.
fn pin_self() -> R<usize> {
    let cpus = allowed_cpus()?;
    if cpus.len() < 2 {
        return Err("--pin needs at least two CPUs".into());
    }
    pin(0, &cpus[1..])?;
    Ok(cpus[0])
}

/// `YYYY-MM-DD HH:MM` in UTC, without a date library (days to civil date after H. Hinnant).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit (5,000 connections need ~10,000 fds here:
/// each client socket and each echo-server socket).
fn raise_nofile_limit() -> R<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", io::Error::last_os_error()));
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(format!(
                "setrlimit(RLIMIT_NOFILE, {}): {}",
                limit.rlim_max,
                io::Error::last_os_error()
            ));
        }
    }
    Ok(limit.rlim_cur)
}

// ---------------------------------------------------------------------------------------------------
// The edgefwd child process

/// How long edgefwd may take to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept per child (the reader keeps draining past this so the child never blocks).
const MAX_LOG_LINES: usize = 400_000;

/// A running edgefwd, started on `127.0.0.1:0` with `--metrics 127.0.0.1:0`; killed on drop.
struct Fwd {
    child: Child,
    listen: SocketAddr,
    metrics: SocketAddr,
    /// Every stderr line so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Fwd {
    /// Starts edgefwd in front of `upstream`, with `args` added to its command line. The study is about
    /// the ring path, so unless `args` choose a `--splice` mode it is `off` (the default `auto` would move
    /// a stalled or bulk stream to pipes half-way through a figure).
    fn start(upstream: SocketAddr, args: &[String]) -> R<Fwd> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefwd"));
        cmd.args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
        if !args.iter().any(|arg| arg == "--splice") {
            cmd.args(["--splice", "off"]);
        }
        cmd.arg("--upstream")
            .arg(upstream.to_string())
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().ctx("start edgefwd")?;
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("edgefwd started without a stderr pipe".into());
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = Arc::clone(&log);
        thread::spawn(move || {
            let (mut listen, mut metrics, mut sent) = (None, None, false);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    listen = listen.or_else(|| addr_after(&line, "listening on ", " "));
                    metrics = metrics.or_else(|| addr_after(&line, "metrics on http://", "/"));
                    if let (Some(l), Some(m)) = (listen, metrics) {
                        let _ = tx.send((l, m));
                        sent = true;
                    }
                }
                let mut lines = lines.lock().unwrap_or_else(PoisonError::into_inner);
                if lines.len() < MAX_LOG_LINES {
                    lines.push(line);
                }
            }
        });
        let mut fwd = Fwd {
            child,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            metrics: SocketAddr::from(([0, 0, 0, 0], 0)),
            log,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok((listen, metrics)) => {
                fwd.listen = listen;
                fwd.metrics = metrics;
                Ok(fwd)
            }
            Err(_) => {
                let _ = fwd.child.kill();
                let _ = fwd.child.wait();
                thread::sleep(Duration::from_millis(100));
                Err(format!(
                    "edgefwd printed no 'listening on' / 'metrics on' lines within {START_TIMEOUT:?}; stderr:\n{}",
                    fwd.lines().join("\n")
                ))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn lines(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn scrape(&self) -> R<Sample> {
        Sample::scrape(self.metrics)
    }

    /// The descriptor numbers the child holds now, sorted.
    fn fds(&self) -> R<Vec<u64>> {
        let dir = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .ctx("read /proc/PID/fd of edgefwd")?;
        let mut fds: Vec<u64> = dir
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort_unstable();
        Ok(fds)
    }

    /// Sets the running child's RLIMIT_NOFILE, soft and hard, with prlimit(2). Done after start so the
    /// limit can be the descriptors it holds now plus an exact number of spares.
    fn set_nofile(&self, limit: libc::rlim_t) -> R<()> {
        let pid = libc::pid_t::try_from(self.pid()).ctx("edgefwd pid")?;
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: `lim` is a valid rlimit that prlimit only reads; the old-limit pointer may be null.
        if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) } != 0 {
            return Err(format!(
                "prlimit(edgefwd, RLIMIT_NOFILE, {limit}): {}",
                io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    fn signal(&self, signal: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.pid()) {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

impl Drop for Fwd {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT); // in case a case left it stopped
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the kernel kill the child when this bench dies without running its destructors (Ctrl-C).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Starts edgefwd and, with `--pin`, moves it to its own CPU.
fn start_fwd(opts: &Options, upstream: SocketAddr, args: &[String]) -> R<Fwd> {
    let fwd = Fwd::start(upstream, args)?;
    if let Some(cpu) = opts.fwd_cpu {
        let pid = libc::pid_t::try_from(fwd.pid()).ctx("edgefwd pid")?;
        pin(pid, &[cpu])?;
    }
    Ok(fwd)
}

/// The socket address after `marker`, up to `end`.
fn addr_after(line: &str, marker: &str, end: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let token = rest.split(end).next()?.trim();
    token.parse().ok()
}

/// A log line without env_logger's `[timestamp ` prefix: `TRACE edgefwd::pump] conn=1 ...`.
fn strip_timestamp(line: &str) -> String {
    match line.strip_prefix('[').and_then(|rest| rest.split_once(' ')) {
        Some((_, rest)) => rest.to_string(),
        None => line.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------------
// Metrics scrapes

/// One /metrics exposition: `name{labels}` -> value.
#[derive(Debug, Clone, Default)]
struct Sample(BTreeMap<String, u64>);

impl Sample {
    fn scrape(addr: SocketAddr) -> R<Sample> {
        Sample::scrape_within(addr, Duration::from_secs(5))
    }

    fn scrape_within(addr: SocketAddr, timeout: Duration) -> R<Sample> {
        let what = format!("scrape http://{addr}/metrics");
        let mut stream = TcpStream::connect_timeout(&addr, timeout).ctx(&what)?;
        stream.set_read_timeout(Some(timeout)).ctx(&what)?;
        stream.set_write_timeout(Some(timeout)).ctx(&what)?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: edgefwd\r\n\r\n")
            .ctx(&what)?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ctx(&what)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{what}: no HTTP header in the reply"))?;
        if !head.lines().next().is_some_and(|l| l.contains(" 200")) {
            return Err(format!("{what}: {}", head.lines().next().unwrap_or("")));
        }
        let mut values = BTreeMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            if let Some((name, value)) = line.rsplit_once(' ') {
                if let Ok(value) = value.parse::<u64>() {
                    values.insert(name.to_string(), value);
                }
            }
        }
        if values.is_empty() {
            return Err(format!("{what}: no samples in the reply"));
        }
        Ok(Sample(values))
    }

    /// `self - before`, per series (gauges come out as the later value minus the earlier, floored at 0).
    fn since(&self, before: &Sample) -> Sample {
        Sample(
            self.0
                .iter()
                .map(|(name, value)| {
                    let old = before.0.get(name).copied().unwrap_or(0);
                    (name.clone(), value.saturating_sub(old))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// A counter by its short name: `reads` is `edgefwd_reads_total`.
    fn c(&self, short: &str) -> u64 {
        self.get(&format!("edgefwd_{short}_total"))
    }

    fn close(&self, cause: &str) -> u64 {
        self.get(&format!("edgefwd_closes_total{{cause=\"{cause}\"}}"))
    }

    fn bytes(&self) -> u64 {
        self.get("edgefwd_bytes_total{direction=\"c2u\"}")
            + self.get("edgefwd_bytes_total{direction=\"u2c\"}")
    }

    /// Mean observation of histogram `name` (0 when it saw none).
    fn mean(&self, name: &str) -> f64 {
        let count = self.get(&format!("{name}_count"));
        ratio(self.get(&format!("{name}_sum")), count)
    }

    /// `(upper bound, cumulative count)` of histogram `name`, in bound order (`+Inf` last).
    fn buckets(&self, name: &str) -> Vec<(String, u64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, String, u64)> = self
            .0
            .iter()
            .filter_map(|(key, value)| {
                let le = key.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, le.to_string(), *value))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets.into_iter().map(|(_, le, n)| (le, n)).collect()
    }

    /// The upper bound of the bucket holding the median observation, e.g. `"<=8"`.
    fn median_bucket(&self, name: &str) -> String {
        let count = self.get(&format!("{name}_count"));
        if count == 0 {
            return "-".into();
        }
        self.buckets(name)
            .into_iter()
            .find(|(_, cumulative)| cumulative * 2 >= count)
            .map_or_else(|| "-".into(), |(le, _)| format!("<={le}"))
    }

    /// Observations of histogram `name` at or below `le` (a bucket bound as printed, e.g. `"1"`).
    fn at_or_below(&self, name: &str, le: &str) -> u64 {
        self.get(&format!("{name}_bucket{{le=\"{le}\"}}"))
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn pct(num: u64, den: u64) -> String {
    format!("{:.1}%", 100.0 * ratio(num, den))
}

/// What a no-load scrape costs the reactor, measured by two back-to-back scrapes, so every table can
/// say how much of its deltas is the measurement itself.
fn scrape_overhead(fwd: &Fwd) -> R<(Sample, String)> {
    let first = fwd.scrape()?;
    thread::sleep(Duration::from_millis(50));
    let second = fwd.scrape()?;
    let d = second.since(&first);
    let note = format!(
        "one scrape costs the reactor about {} polls, {} events, {} spurious wakeups (a no-load scrape-to-scrape delta; included in the figures)",
        d.c("polls"),
        d.c("events"),
        d.c("spurious_wakeups")
    );
    Ok((second, note))
}

// ---------------------------------------------------------------------------------------------------
// strace

/// `strace -p PID` attached to edgefwd, writing to a temporary file; killed on drop.
struct Strace {
    child: Child,
    out: PathBuf,
}

impl Strace {
    /// Attaches with the given strace options and waits until strace says it is attached.
    fn attach(pid: u32, options: &[&str]) -> R<Strace> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let out = std::env::temp_dir().join(format!(
            "epoll-study-strace-{}-{pid}-{}.txt",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let mut cmd = Command::new("strace");
        cmd.args(options)
            .arg("-o")
            .arg(&out)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().ctx("start strace (apt-get install strace)")?;
        let (tx, rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let tracer = Strace { child, out };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("attached") => break,
                Ok(_) => {}
                Err(_) => return Err(format!("strace did not attach to {pid} within 10 s")),
            }
        }
        thread::sleep(Duration::from_millis(200));
        Ok(tracer)
    }

    /// Detaches (SIGINT) and returns what strace wrote.
    fn finish(mut self) -> R<String> {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => return Err("strace did not exit within 10 s of SIGINT".into()),
                Err(err) => return Err(format!("wait for strace: {err}")),
            }
        }
        std::fs::read_to_string(&self.out).ctx("read strace output")
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

/// `(syscall, calls)` from a `strace -c` table.
fn parse_strace_summary(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 5 || cols[0].parse::<f64>().is_err() {
                return None;
            }
            let name = *cols.last()?;
            (name != "total").then_some(())?;
            Some((name.to_string(), cols[3].parse().ok()?))
        })
        .collect()
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------------------------------
// Backends

/// A loopback listener with a deep backlog (5,000 connections arrive in bursts), optionally with a
/// small receive buffer that accepted sockets inherit.
fn listen_socket(backlog: i32, rcvbuf: Option<usize>) -> R<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ctx("backend socket")?;
    socket.set_reuse_address(true).ctx("SO_REUSEADDR")?;
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).ctx("SO_RCVBUF")?;
    }
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .ctx("bind backend")?;
    socket.listen(backlog).ctx("listen backend")?;
    Ok(socket)
}

const ECHO_LISTENER: Token = Token(usize::MAX);
const ECHO_WAKER: Token = Token(usize::MAX - 1);

/// An echo server on one mio thread: cheap enough for 5,000 connections, never the bottleneck of a
/// 64-byte ping-pong. It echoes as it reads and passes the client's FIN back once everything is echoed.
struct EchoServer {
    addr: SocketAddr,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<R<()>>>,
}

struct EchoConn {
    stream: MioStream,
    out: Vec<u8>,
    eof: bool,
}

impl EchoServer {
    fn start() -> R<EchoServer> {
        let socket = listen_socket(8192, None)?;
        socket.set_nonblocking(true).ctx("nonblocking backend")?;
        let std_listener: TcpListener = socket.into();
        let addr = std_listener.local_addr().ctx("backend address")?;
        let mut listener = MioListener::from_std(std_listener);
        let poll = Poll::new().ctx("backend poll")?;
        poll.registry()
            .register(&mut listener, ECHO_LISTENER, Interest::READABLE)
            .ctx("register backend listener")?;
        let waker = Arc::new(Waker::new(poll.registry(), ECHO_WAKER).ctx("backend waker")?);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("echo".into())
            .spawn(move || echo_loop(poll, listener, &flag))
            .ctx("start echo thread")?;
        Ok(EchoServer {
            addr,
            waker,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => eprintln!("epoll_study: echo backend: {err}"),
                Err(_) => eprintln!("epoll_study: echo backend panicked"),
            }
        }
    }
}

fn echo_loop(mut poll: Poll, listener: MioListener, stop: &AtomicBool) -> R<()> {
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<EchoConn> = Slab::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if let Err(err) = poll.poll(&mut events, None) {
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("echo backend poll: {err}"));
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        for event in events.iter() {
            match event.token() {
                ECHO_WAKER => {}
                ECHO_LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let entry = conns.vacant_entry();
                            let both = Interest::READABLE | Interest::WRITABLE;
                            if poll
                                .registry()
                                .register(&mut stream, Token(entry.key()), both)
                                .is_ok()
                            {
                                entry.insert(EchoConn {
                                    stream,
                                    out: Vec::new(),
                                    eof: false,
                                });
                            }
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => return Err(format!("echo backend accept: {err}")),
                    }
                },
                Token(key) => {
                    let keep = conns
                        .get_mut(key)
                        .is_some_and(|c| echo_service(c, &mut buf));
                    if !keep {
                        conns.try_remove(key);
                    }
                }
            }
        }
    }
}

/// Reads to WouldBlock, echoes what it can, and ends the connection after the client's FIN. Returns
/// false when the connection is finished.
fn echo_service(conn: &mut EchoConn, buf: &mut [u8]) -> bool {
    while !conn.eof {
        match conn.stream.read(buf) {
            Ok(0) => conn.eof = true,
            Ok(n) => conn.out.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(n) => {
                conn.out.drain(..n);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    if conn.eof && conn.out.is_empty() {
        let _ = conn.stream.shutdown(Shutdown::Write);
        return false;
    }
    true
}

/// How a sink reads.
#[derive(Debug, Clone, Copy)]
struct SinkCfg {
    /// Bytes asked for per read.
    chunk: usize,
    /// Pause after every read (a slow reader), zero for a fast one.
    delay: Duration,
    /// Pause before the first read (a reader that stalls, so every buffer on the way fills up).
    initial_delay: Duration,
    /// SO_RCVBUF for accepted sockets, to make backpressure reach edgefwd sooner.
    rcvbuf: Option<usize>,
}

impl SinkCfg {
    fn fast() -> SinkCfg {
        SinkCfg {
            chunk: 1 << 20,
            delay: Duration::ZERO,
            initial_delay: Duration::ZERO,
            rcvbuf: None,
        }
    }
}

/// A backend that reads and discards, one thread per connection, and closes after the peer's FIN.
struct Sink {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn start(cfg: SinkCfg) -> R<Sink> {
        let socket = listen_socket(1024, cfg.rcvbuf)?;
        socket.set_nonblocking(true).ctx("nonblocking sink")?;
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr().ctx("sink address")?;
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, flag) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = thread::Builder::new()
            .name("sink".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (count, flag) = (Arc::clone(&count), Arc::clone(&flag));
                            thread::spawn(move || sink_conn(stream, cfg, &count, &flag));
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
            .ctx("start sink thread")?;
        Ok(Sink {
            addr,
            received,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sink_conn(mut stream: TcpStream, cfg: SinkCfg, count: &AtomicU64, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; cfg.chunk];
    thread::sleep(cfg.initial_delay);
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::SeqCst);
                if !cfg.delay.is_zero() {
                    thread::sleep(cfg.delay);
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// A backend for exactly one connection, run by `script` on its own thread.
fn one_shot<F>(script: F) -> R<(SocketAddr, JoinHandle<R<()>>)>
where
    F: FnOnce(TcpStream) -> R<()> + Send + 'static,
{
    let socket = listen_socket(16, None)?;
    socket.set_nonblocking(true).ctx("nonblocking backend")?;
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr().ctx("backend address")?;
    let thread = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).ctx("blocking backend")?;
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .ctx("backend timeout")?;
                    return script(stream);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err("the one-shot backend saw no connection within 10 s".into());
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                Err(err) => return Err(format!("one-shot backend accept: {err}")),
            }
        }
    });
    Ok((addr, thread))
}

fn join_backend(thread: JoinHandle<R<()>>) -> R<()> {
    thread
        .join()
        .map_err(|_| "a backend thread panicked".to_string())?
}

/// Makes the next close of `stream` send RST.
fn set_linger0(stream: &TcpStream) -> R<()> {
    SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .ctx("SO_LINGER 0")
}

/// A blocking loopback client with timeouts on both directions.
fn client(addr: SocketAddr, timeout: Duration) -> R<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .ctx(&format!("connect to edgefwd at {addr}"))?;
    stream.set_read_timeout(Some(timeout)).ctx("read timeout")?;
    stream
        .set_write_timeout(Some(timeout))
        .ctx("write timeout")?;
    Ok(stream)
}

/// Reads until EOF; returns the bytes and how the stream ended (`"EOF"` or the error).
fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, "EOF".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return (got, format!("{:?}", err.kind())),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Load: the ping-pong engine and the bulk sender

/// Connections opened per batch, so the bursts stay inside edgefwd's default backlog of 1024.
const CONNECT_BATCH: usize = 500;
/// How long opening (and warming) one batch of connections may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long outstanding requests may take to finish after the measured window.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// One client connection of the ping-pong engine.
struct PingConn {
    stream: MioStream,
    connected: bool,
    /// Bytes of the current request not yet written.
    to_write: usize,
    /// Bytes of the current response not yet read.
    to_read: usize,
    /// A request is outstanding (events on a connection without one are ignored).
    in_flight: bool,
    /// Takes part in the measured window (idle connections only do the warm-up exchange).
    active: bool,
}

/// N connections doing request/response ping-pong, all on one mio thread (this one): the load
/// generator costs one poll per batch of ready connections, however many there are.
struct PingPong {
    poll: Poll,
    events: Events,
    conns: Vec<PingConn>,
    message: Vec<u8>,
    scratch: Vec<u8>,
    /// Start a new request when a response completes.
    continuing: bool,
}

impl PingPong {
    /// Opens `active + idle` connections through edgefwd and completes one exchange on each, so every
    /// pair is established (and its rings empty) before anything is measured.
    fn open(target: SocketAddr, active: usize, idle: usize, message: usize) -> R<PingPong> {
        let mut engine = PingPong {
            poll: Poll::new().ctx("client poll")?,
            events: Events::with_capacity(1024),
            conns: Vec::with_capacity(active + idle),
            message: vec![0x61; message],
            scratch: vec![0u8; 64 << 10],
            continuing: false,
        };
        let total = active + idle;
        while engine.conns.len() < total {
            let first = engine.conns.len();
            let batch = CONNECT_BATCH.min(total - first);
            for i in first..first + batch {
                let mut stream = MioStream::connect(target).ctx(&format!(
                    "connect #{i} to edgefwd (fds or ephemeral ports?)"
                ))?;
                engine
                    .poll
                    .registry()
                    .register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .ctx("register client")?;
                engine.conns.push(PingConn {
                    stream,
                    connected: false,
                    to_write: message,
                    to_read: message,
                    in_flight: true,
                    active: i < active,
                });
            }
            let deadline = Instant::now() + OPEN_TIMEOUT;
            let mut done = 0u64;
            while done < batch as u64 {
                if Instant::now() > deadline {
                    return Err(format!(
                        "opening connections: only {} of {total} finished their first exchange within {OPEN_TIMEOUT:?}",
                        first as u64 + done
                    ));
                }
                done += engine.turn(Some(Duration::from_millis(100)))?;
            }
        }
        Ok(engine)
    }

    /// Runs the active connections for `window`, then lets outstanding requests finish. Returns the
    /// requests completed.
    fn run(&mut self, window: Duration) -> R<u64> {
        let len = self.message.len();
        self.continuing = true;
        let mut completed = 0;
        for i in 0..self.conns.len() {
            let conn = &mut self.conns[i];
            if conn.active {
                if conn.in_flight {
                    return Err(format!("client #{i}: still busy before the window"));
                }
                conn.to_write = len;
                conn.to_read = len;
                conn.in_flight = true;
                completed += self.service(i)?;
            }
        }
        let end = Instant::now() + window;
        while Instant::now() < end {
            completed += self.turn(Some(Duration::from_millis(10)))?;
        }
        self.continuing = false;
        // Every active connection has at most one request in flight.
        let settle = Instant::now() + SETTLE_TIMEOUT;
        let in_flight = |conns: &[PingConn]| conns.iter().filter(|c| c.in_flight).count();
        while in_flight(&self.conns) > 0 {
            if Instant::now() > settle {
                return Err(format!(
                    "{} requests still unanswered {SETTLE_TIMEOUT:?} after the window",
                    in_flight(&self.conns)
                ));
            }
            completed += self.turn(Some(Duration::from_millis(10)))?;
        }
        Ok(completed)
    }

    /// One poll; returns how many responses completed.
    fn turn(&mut self, timeout: Option<Duration>) -> R<u64> {
        if let Err(err) = self.poll.poll(&mut self.events, timeout) {
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(format!("client poll: {err}"));
        }
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        let mut completed = 0;
        for i in ready {
            completed += self.service(i)?;
        }
        Ok(completed)
    }

    /// Advances connection `i` as far as it goes; returns 1 if a response completed.
    fn service(&mut self, i: usize) -> R<u64> {
        let len = self.message.len();
        let continuing = self.continuing;
        let Some(conn) = self.conns.get_mut(i) else {
            return Ok(0);
        };
        if !conn.connected {
            if let Some(err) = conn.stream.take_error().ctx("client take_error")? {
                return Err(format!("client #{i}: connect to edgefwd failed: {err}"));
            }
            match conn.stream.peer_addr() {
                Ok(_) => conn.connected = true,
                Err(err) if err.kind() == io::ErrorKind::NotConnected => return Ok(0),
                Err(err) => return Err(format!("client #{i}: connect failed: {err}")),
            }
        }
        let mut completed = 0;
        while conn.in_flight {
            while conn.to_write > 0 {
                match conn.stream.write(&self.message[len - conn.to_write..]) {
                    Ok(n) => conn.to_write -= n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(format!("client #{i}: write: {err}")),
                }
            }
            while conn.to_read > 0 {
                match conn.stream.read(&mut self.scratch) {
                    Ok(0) => return Err(format!("client #{i}: edgefwd closed the connection")),
                    Ok(n) if n > conn.to_read => {
                        return Err(format!("client #{i}: {n} bytes for a {len}-byte response"))
                    }
                    Ok(n) => conn.to_read -= n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(format!("client #{i}: read: {err}")),
                }
            }
            if conn.to_read > 0 || conn.to_write > 0 {
                return Ok(completed);
            }
            completed += 1;
            conn.in_flight = continuing && conn.active;
            if conn.in_flight {
                conn.to_write = len;
                conn.to_read = len;
            }
        }
        Ok(completed)
    }
}

/// Sends `bytes` through edgefwd, half-closes, and waits for edgefwd's FIN (the sink closing after
/// our FIN, passed back). Returns the time from connect to that FIN.
fn bulk_send(target: SocketAddr, bytes: u64) -> R<Duration> {
    let start = Instant::now();
    let mut stream = client(target, Duration::from_secs(60))?;
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).ctx("bulk write")?;
        left -= n as u64;
    }
    stream.shutdown(Shutdown::Write).ctx("bulk shutdown")?;
    let (back, end) = read_to_end(&mut stream);
    if end != "EOF" || !back.is_empty() {
        return Err(format!(
            "bulk: expected a clean EOF and no data back, got {} bytes then {end}",
            back.len()
        ));
    }
    Ok(start.elapsed())
}

// ---------------------------------------------------------------------------------------------------
// Experiment: wakeups

fn wakeups(opts: &Options) -> R<()> {
    println!(
        "## wakeups: {}-byte echo ping-pong, {} s per run after {} s settling, {} idle pairs\n",
        opts.message, opts.seconds, opts.settle, opts.idle
    );
    let mut table = Table::new(&[
        "conns",
        "idle",
        "requests",
        "req/s",
        "polls",
        "events",
        "events/poll",
        "median",
        "spurious",
        "polls/req",
        "events/req",
        "reads/req",
        "writes/req",
        "read WB/req",
        "write WB/req",
    ]);
    let mut notes = Vec::new();
    let runs = opts
        .conns
        .iter()
        .flat_map(|&conns| std::iter::repeat_n(conns, opts.repeat));
    for conns in runs {
        eprintln!("[wakeups] {conns} connections ...");
        let echo = EchoServer::start()?;
        let fwd = start_fwd(opts, echo.addr, &opts.fwd_args)?;
        let mut engine = PingPong::open(fwd.listen, conns, opts.idle, opts.message)?;
        // A new pair's connect deadline stays armed after the connect succeeds and wakes the loop
        // once when it passes: keep those one-off wakeups out of the steady-state figures.
        thread::sleep(Duration::from_secs_f64(opts.settle));
        let (before, note) = scrape_overhead(&fwd)?;
        if notes.is_empty() {
            notes.push(note);
        }
        let start = Instant::now();
        let requests = engine.run(Duration::from_secs_f64(opts.seconds))?;
        let elapsed = start.elapsed();
        thread::sleep(Duration::from_millis(100));
        let d = fwd.scrape()?.since(&before);
        let per = |n: u64| format!("{:.2}", ratio(n, requests));
        table.row(vec![
            conns.to_string(),
            opts.idle.to_string(),
            requests.to_string(),
            format!("{:.0}", requests as f64 / elapsed.as_secs_f64()),
            d.c("polls").to_string(),
            d.c("events").to_string(),
            format!("{:.2}", ratio(d.c("events"), d.c("polls"))),
            d.median_bucket("edgefwd_events_per_poll"),
            format!(
                "{} ({})",
                d.c("spurious_wakeups"),
                pct(d.c("spurious_wakeups"), d.c("polls"))
            ),
            per(d.c("polls")),
            per(d.c("events")),
            per(d.c("reads")),
            per(d.c("writes")),
            per(d.c("reads_would_block")),
            per(d.c("writes_would_block")),
        ]);
        let empty = d.at_or_below("edgefwd_events_per_poll", "1");
        let expected = 2 * requests * opts.message as u64;
        notes.push(format!(
            "{conns} conns: polls returning 0 or 1 events {} of {}; budget yields {}; short writes {}; bytes forwarded {} ({})",
            empty,
            d.c("polls"),
            d.c("budget_yields"),
            d.c("writes_short"),
            d.bytes(),
            if d.bytes() == expected {
                "= 2 x requests x message".to_string()
            } else {
                format!("MISMATCH: 2 x requests x message = {expected}")
            }
        ));
        drop(engine);
        drop(fwd);
        drop(echo);
    }
    table.print();
    println!();
    for note in notes {
        println!("- {note}");
    }
    println!(
        "- polls = epoll_wait calls; events = readiness events they returned; median = the events_per_poll \
histogram bucket holding the median poll; spurious = polls whose events moved no byte and changed no state; \
WB = WouldBlock; req/s is context only (three busy threads share the CPUs)"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Experiment: buffers

/// One bulk run's figures.
struct BulkRun {
    label: String,
    mib: f64,
    d: Sample,
    elapsed: Duration,
    strace: Option<Vec<(String, u64)>>,
}

fn buffers(opts: &Options) -> R<()> {
    let traced = opts.strace && strace_available();
    if opts.strace && !traced {
        return Err("--strace needs strace (apt-get install strace)".into());
    }
    println!(
        "## buffers: one {} MiB stream client -> edgefwd -> sink, per --buffer-size\n",
        opts.mib
    );
    let mut runs = Vec::new();
    let mut overhead = None;
    for &size in &opts.sizes {
        for splice in [false, true] {
            if splice && !opts.splice {
                continue;
            }
            let label = format!(
                "{}{}",
                size_label(size),
                if splice { " splice" } else { "" }
            );
            eprintln!("[buffers] {label} ...");
            let sink = Sink::start(SinkCfg::fast())?;
            let mut args = vec!["--buffer-size".to_string(), size.to_string()];
            if splice {
                // Pipes as large as the ring, from the first byte, so the rows compare like with like.
                args.extend(["--splice".into(), "always".into()]);
                args.extend(["--pipe-size".into(), size.max(4096).to_string()]);
            }
            args.extend(opts.fwd_args.iter().cloned());
            let fwd = start_fwd(opts, sink.addr, &args)?;
            let (before, note) = scrape_overhead(&fwd)?;
            overhead.get_or_insert(note);
            let tracer = match traced {
                true => Some(Strace::attach(fwd.pid(), &["-c", "-f"])?),
                false => None,
            };
            let elapsed = bulk_send(fwd.listen, opts.mib << 20)?;
            let strace = match tracer {
                Some(tracer) => Some(parse_strace_summary(&tracer.finish()?)),
                None => None,
            };
            let got = sink.received.load(Ordering::SeqCst);
            if got != opts.mib << 20 {
                return Err(format!(
                    "{label}: the sink received {got} bytes of {}",
                    opts.mib << 20
                ));
            }
            thread::sleep(Duration::from_millis(100));
            let d = fwd.scrape()?.since(&before);
            runs.push(BulkRun {
                label,
                mib: got as f64 / f64::from(1u32 << 20),
                d,
                elapsed,
                strace,
            });
        }
    }
    let per_mib = |n: u64, run: &BulkRun| {
        let v = n as f64 / run.mib;
        if v < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.1}")
        }
    };

    println!("### syscalls and wakeups per MiB (edgefwd's counters)\n");
    let mut table = Table::new(&[
        "buffer",
        "reads/MiB",
        "writes/MiB",
        "epoll_wait/MiB",
        "events/MiB",
        "bytes/read",
        "bytes/write",
        "read median",
        "budget yields/MiB",
        "spurious",
        "MiB/s",
    ]);
    for run in &runs {
        let d = &run.d;
        table.row(vec![
            run.label.clone(),
            per_mib(d.c("reads"), run),
            per_mib(d.c("writes"), run),
            per_mib(d.c("polls"), run),
            per_mib(d.c("events"), run),
            format!("{:.0}", d.mean("edgefwd_read_bytes")),
            format!("{:.0}", d.mean("edgefwd_write_bytes")),
            d.median_bucket("edgefwd_read_bytes"),
            per_mib(d.c("budget_yields"), run),
            d.c("spurious_wakeups").to_string(),
            format!("{:.0}", run.mib / run.elapsed.as_secs_f64()),
        ]);
    }
    table.print();

    println!("\n### how reads and writes ended\n");
    let mut table = Table::new(&[
        "buffer",
        "reads",
        "with data",
        "WouldBlock",
        "EOF",
        "ring-full stops",
        "writes",
        "short writes",
        "write WouldBlock",
        "polls with 0-1 events",
    ]);
    for run in &runs {
        let d = &run.d;
        let (reads, writes) = (d.c("reads"), d.c("writes"));
        let data = d.get("edgefwd_read_bytes_count");
        table.row(vec![
            run.label.clone(),
            reads.to_string(),
            format!("{data} ({})", pct(data, reads)),
            format!(
                "{} ({})",
                d.c("reads_would_block"),
                pct(d.c("reads_would_block"), reads)
            ),
            d.c("reads_eof").to_string(),
            d.c("reads_ring_full").to_string(),
            writes.to_string(),
            format!(
                "{} ({})",
                d.c("writes_short"),
                pct(d.c("writes_short"), writes)
            ),
            format!(
                "{} ({})",
                d.c("writes_would_block"),
                pct(d.c("writes_would_block"), writes)
            ),
            format!(
                "{} of {}",
                d.at_or_below("edgefwd_events_per_poll", "1"),
                d.c("polls")
            ),
        ]);
    }
    table.print();

    if runs.iter().any(|r| r.strace.is_some()) {
        println!("\n### strace -c -f -p PID during the same runs (calls per MiB)\n");
        // The per-byte calls get a column each; connection setup and teardown go into "other".
        const HOT: [&str; 9] = [
            "epoll_wait",
            "epoll_pwait",
            "read",
            "readv",
            "recvfrom",
            "write",
            "writev",
            "sendto",
            "splice",
        ];
        let names: Vec<&str> = HOT
            .into_iter()
            .filter(|name| {
                runs.iter()
                    .flat_map(|r| r.strace.iter().flatten())
                    .any(|(c, _)| c == name)
            })
            .collect();
        let mut header = vec!["buffer"];
        header.extend(names.iter().copied());
        header.extend(["other", "total"]);
        let mut table = Table::new(&header);
        for run in &runs {
            let calls = run.strace.clone().unwrap_or_default();
            let count = |name: &str| calls.iter().find(|(c, _)| c == name).map_or(0, |(_, n)| *n);
            let total: u64 = calls.iter().map(|(_, n)| n).sum();
            let hot: u64 = names.iter().map(|name| count(name)).sum();
            let mut row = vec![run.label.clone()];
            row.extend(names.iter().map(|name| per_mib(count(name), run)));
            row.push(per_mib(total - hot, run));
            row.push(per_mib(total, run));
            table.row(row);
        }
        table.print();
        println!("\n- strace slows edgefwd several-fold, so it finds more bytes per wakeup than at full speed: compare with the first table, not with other machines");
    }
    println!();
    if let Some(note) = overhead {
        println!("- {note}");
    }
    println!("- reads/writes count read/readv and write/writev calls (splice calls on the --splice rows); ring-full stops are reads *not* made because the ring was full; MiB/s is context only");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Experiment: trace

fn trace(opts: &Options) -> R<()> {
    let traced = opts.strace && strace_available();
    if opts.strace && !traced {
        return Err("--strace needs strace (apt-get install strace)".into());
    }
    for case in &opts.cases {
        eprintln!("[trace] {} ...", case.name());
        match case {
            Case::Normal => trace_normal(opts)?,
            Case::Reset => trace_reset(opts)?,
            Case::Stale => trace_stale(opts)?,
            Case::Stall => trace_stall(opts, traced)?,
            Case::Emfile => trace_emfile(opts, traced)?,
        }
    }
    Ok(())
}

fn trace_args(opts: &Options, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--trace".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(opts.fwd_args.iter().cloned());
    args
}

/// The log lines after the start lines, timestamps stripped, metrics-scrape events left out.
fn case_lines(fwd: &Fwd) -> Vec<String> {
    fwd.lines()
        .iter()
        .filter(|l| !l.contains("listening on ") && !l.contains("metrics on http://"))
        .filter(|l| !l.contains("event Metrics") && !l.contains("event Scrape("))
        .map(|l| strip_timestamp(l))
        .collect()
}

fn print_lines(lines: &[String], limit: usize) {
    println!("```");
    for line in lines.iter().take(limit) {
        println!("{line}");
    }
    if lines.len() > limit {
        println!("... {} more lines", lines.len() - limit);
    }
    println!("```");
}

/// Waits until edgefwd has logged a line containing `needle` (bounded).
fn wait_for_line(fwd: &Fwd, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if fwd.lines().iter().any(|l| l.contains(needle)) {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A client sends a line and half-closes; the echo backend answers and passes the FIN back.
fn trace_normal(opts: &Options) -> R<()> {
    let echo = EchoServer::start()?;
    let fwd = Fwd::start(echo.addr, &trace_args(opts, &[]))?;
    let mut stream = client(fwd.listen, Duration::from_secs(5))?;
    stream.write_all(b"hello\n").ctx("write")?;
    stream.shutdown(Shutdown::Write).ctx("shutdown(Write)")?;
    let (got, end) = read_to_end(&mut stream);
    wait_for_line(&fwd, "closed conn=", Duration::from_secs(5));
    println!("### trace: normal connection with half-close\n");
    println!(
        "client: write \"hello\\n\", shutdown(Write), read {:?} then {end}\n",
        String::from_utf8_lossy(&got)
    );
    print_lines(&case_lines(&fwd), 60);
    println!();
    Ok(())
}

/// The backend reads the request and resets the connection.
fn trace_reset(opts: &Options) -> R<()> {
    let (addr, backend) = one_shot(|mut stream| {
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).ctx("backend read")?;
        if n == 0 {
            return Err("backend: no request".into());
        }
        set_linger0(&stream)?;
        drop(stream);
        Ok(())
    })?;
    let fwd = Fwd::start(addr, &trace_args(opts, &[]))?;
    let mut stream = client(fwd.listen, Duration::from_secs(5))?;
    stream.write_all(b"hello\n").ctx("write")?;
    let (got, end) = read_to_end(&mut stream);
    join_backend(backend)?;
    wait_for_line(&fwd, "closed conn=", Duration::from_secs(5));
    println!("### trace: upstream reset\n");
    println!(
        "backend: read the request, close with SO_LINGER 0 (RST); client: read {} bytes then {end}\n",
        got.len()
    );
    print_lines(&case_lines(&fwd), 60);
    println!();
    Ok(())
}

/// Two events for one pair in one epoll_wait batch, the first of which tears the pair down: edgefwd is
/// stopped (SIGSTOP) while the upstream resets and the client sends and half-closes, then resumed. A new
/// client also connects meanwhile; it gets the freed slot, with a new generation, after the batch.
fn trace_stale(opts: &Options) -> R<()> {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (addr, backend) = one_shot(move |mut stream| {
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).ctx("backend read")?;
        stream.write_all(&buf[..n]).ctx("backend write")?;
        go_rx
            .recv_timeout(Duration::from_secs(10))
            .ctx("backend waiting for the go")?;
        set_linger0(&stream)?;
        drop(stream);
        Ok(())
    })?;
    let fwd = Fwd::start(addr, &trace_args(opts, &[]))?;
    let mut first = client(fwd.listen, Duration::from_secs(5))?;
    first.write_all(b"hello\n").ctx("write")?;
    let mut buf = [0u8; 6];
    first.read_exact(&mut buf).ctx("first echo")?;
    thread::sleep(Duration::from_millis(100));
    let mark = fwd.lines().len();
    fwd.signal(libc::SIGSTOP);
    thread::sleep(Duration::from_millis(100));
    go_tx.send(()).ctx("signal the backend")?;
    join_backend(backend)?;
    thread::sleep(Duration::from_millis(50));
    first.write_all(b"bye\n").ctx("write")?;
    first.shutdown(Shutdown::Write).ctx("shutdown(Write)")?;
    // The second client's upstream is the same one-shot port, now closed: its connect is refused,
    // which is fine: the point is which slot and generation it gets.
    let second = client(fwd.listen, Duration::from_secs(5))?;
    thread::sleep(Duration::from_millis(100));
    fwd.signal(libc::SIGCONT);
    wait_for_line(&fwd, "closed conn=2", Duration::from_secs(5));
    let (got, end) = read_to_end(&mut first);
    drop(second);
    println!("### trace: two events for one pair in one batch (edgefwd stopped with SIGSTOP meanwhile)\n");
    println!(
        "while stopped: the upstream of conn=1 resets, the client of conn=1 sends \"bye\" and half-closes, a second client connects; \
client 1 then read {} bytes and {end}\n",
        got.len()
    );
    let lines: Vec<String> = fwd.lines()[mark..]
        .iter()
        .filter(|l| !l.contains("event Metrics") && !l.contains("event Scrape("))
        .map(|l| strip_timestamp(l))
        .collect();
    print_lines(&lines, 40);
    println!();
    Ok(())
}

/// A slow reader behind a 4 KiB ring: the ring fills, reading stops with `readable` still set, and each
/// upstream EPOLLOUT edge lets the pump write and then read the client again without a client edge.
fn trace_stall(opts: &Options, traced: bool) -> R<()> {
    const TOTAL: u64 = 8 << 20;
    let sink = Sink::start(SinkCfg {
        chunk: 8 << 10,
        delay: Duration::from_millis(1),
        initial_delay: Duration::from_millis(1000),
        rcvbuf: Some(16 << 10),
    })?;
    let fwd = Fwd::start(sink.addr, &trace_args(opts, &["--buffer-size", "4k"]))?;
    let before = fwd.scrape()?;
    let tracer = match traced {
        true => Some(Strace::attach(
            fwd.pid(),
            &[
                "-yy",
                "-s",
                "1",
                "-e",
                "trace=epoll_wait,epoll_pwait,read,readv,recvfrom,write,writev,sendto,shutdown",
                "-e",
                "signal=none",
            ],
        )?),
        false => None,
    };
    let elapsed = bulk_send(fwd.listen, TOTAL)?;
    let syscalls = match tracer {
        Some(tracer) => Some(tracer.finish()?),
        None => None,
    };
    thread::sleep(Duration::from_millis(100));
    let d = fwd.scrape()?.since(&before);
    let lines = case_lines(&fwd);
    let mut sides: BTreeMap<String, u64> = BTreeMap::new();
    for line in &lines {
        if let Some(at) = line.find("side=") {
            let side = line[at..].split_whitespace().next().unwrap_or("");
            let flags = line.rsplit(' ').next().unwrap_or("");
            *sides.entry(format!("{side} {flags}")).or_default() += 1;
        }
    }
    println!("### trace: ring-full stall and resume (--buffer-size 4k; the sink has SO_RCVBUF 16 KiB, waits 1 s, then reads 8 KiB per ms)\n");
    println!(
        "client sent {} KiB in {:.2} s (context); counters over the transfer:\n",
        TOTAL >> 10,
        elapsed.as_secs_f64()
    );
    let mut table = Table::new(&[
        "reads",
        "ring-full stops",
        "read WouldBlock",
        "writes",
        "short writes",
        "write WouldBlock",
        "polls",
        "events",
        "spurious",
    ]);
    table.row(vec![
        d.c("reads").to_string(),
        d.c("reads_ring_full").to_string(),
        d.c("reads_would_block").to_string(),
        d.c("writes").to_string(),
        d.c("writes_short").to_string(),
        d.c("writes_would_block").to_string(),
        d.c("polls").to_string(),
        d.c("events").to_string(),
        d.c("spurious_wakeups").to_string(),
    ]);
    table.print();
    println!("\nreadiness events by side and flags (from the --trace lines):\n");
    let mut table = Table::new(&["side and flags", "events"]);
    for (key, n) in &sides {
        table.row(vec![key.clone(), n.to_string()]);
    }
    table.print();
    println!("\nfirst trace lines:\n");
    print_lines(&lines, 24);
    if let Some(text) = syscalls {
        let log = stall_log(&text, fwd.listen.port());
        println!(
            "\nstrace: {} epoll_wait returns; {} held only upstream events and yet read the client socket (resume without a client edge); {} held pair events and were followed by no syscall at all (empty wakeups)\n",
            log.polls, log.resumes, log.empty
        );
        println!("the first resume:\n");
        print_lines(&log.resume_excerpt, 40);
        println!("\nthe first empty wakeup:\n");
        print_lines(&log.empty_excerpt, 40);
        println!("\nthe end of the transfer (the client's last data and FIN):\n");
        print_lines(&log.end_excerpt, 40);
    }
    println!();
    Ok(())
}

/// What a `strace -yy` log of the stall case shows.
struct StallLog {
    /// epoll_wait calls.
    polls: usize,
    /// Wakeups whose events were all on upstream sockets, yet read a client socket with data.
    resumes: usize,
    /// The first such wakeup, with the tail of the one before.
    resume_excerpt: Vec<String>,
    /// Wakeups with pair events after which not one read or write was made (once data flows).
    empty: usize,
    /// The first such wakeup, with the tail of the one before.
    empty_excerpt: Vec<String>,
    /// The end of the transfer: from the last wakeup with a client event on.
    end_excerpt: Vec<String>,
}

/// Reads a `strace -yy` log; `listen_port` identifies client sockets (their local port). Tokens are
/// annotated with their decoded (conn, slot, side).
fn stall_log(text: &str, listen_port: u16) -> StallLog {
    // The log lines edgefwd writes to stderr (fd 2) are not part of the story.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("write(2<"))
        .collect();
    let polls: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("epoll_wait(") || l.starts_with("epoll_pwait("))
        .map(|(i, _)| i)
        .collect();
    let client_fd = format!(":{listen_port}->");
    let mut log = StallLog {
        polls: polls.len(),
        resumes: 0,
        resume_excerpt: Vec::new(),
        empty: 0,
        empty_excerpt: Vec::new(),
        end_excerpt: Vec::new(),
    };
    if let Some(&last) = polls.iter().rev().find(|&&at| {
        tokens_in(lines[at])
            .iter()
            .any(|t| t & 1 == 0 && *t < 1 << 63)
    }) {
        let from = last.saturating_sub(4);
        log.end_excerpt = lines[from..(last + 12).min(lines.len())]
            .iter()
            .map(|l| annotate_tokens(l))
            .collect();
    }
    // Empty wakeups count from the first data read on (before it, the pair is still connecting).
    let flowing = lines
        .iter()
        .position(|l| l.starts_with("readv(") || l.starts_with("recvfrom("))
        .unwrap_or(lines.len());
    for (k, &at) in polls.iter().enumerate() {
        let tokens = tokens_in(lines[at]);
        let pairs_only = !tokens.is_empty() && tokens.iter().all(|t| *t < 1 << 63);
        let end = polls.get(k + 1).copied().unwrap_or(lines.len());
        if pairs_only && at > flowing && end == at + 1 && k + 1 < polls.len() {
            log.empty += 1;
            if log.empty_excerpt.is_empty() {
                log.empty_excerpt = wakeup_excerpt(&lines, at, end);
            }
        }
        if !pairs_only || tokens.iter().any(|t| t & 1 == 0) {
            continue;
        }
        let reads_client = lines[at + 1..end].iter().any(|l| {
            (l.starts_with("read(") || l.starts_with("readv(") || l.starts_with("recvfrom("))
                && l.contains(&client_fd)
                && !l.contains("= -1")
        });
        if reads_client {
            log.resumes += 1;
            if log.resume_excerpt.is_empty() {
                log.resume_excerpt = wakeup_excerpt(&lines, at, end);
            }
        }
    }
    log
}

/// The tail of the wakeup before line `at` (where reading stopped), the epoll_wait at `at`, the head of
/// its wakeup (up to `end`), and the next epoll_wait.
fn wakeup_excerpt(lines: &[&str], at: usize, end: usize) -> Vec<String> {
    const TAIL: usize = 6;
    const HEAD: usize = 8;
    let mut out: Vec<String> = Vec::new();
    let from = at.saturating_sub(TAIL);
    if from > 0 {
        out.push(format!("... ({from} earlier lines)"));
    }
    out.extend(lines[from..at].iter().map(|l| annotate_tokens(l)));
    out.push(annotate_tokens(lines[at]));
    let batch = &lines[at + 1..end];
    out.extend(batch.iter().take(HEAD).map(|l| annotate_tokens(l)));
    if batch.len() > HEAD {
        out.push(format!(
            "... ({} more syscalls in this wakeup)",
            batch.len() - HEAD
        ));
    }
    if let Some(next) = lines.get(end) {
        out.push(annotate_tokens(next));
    }
    out
}

/// The `u64=` values of an epoll_wait line.
fn tokens_in(line: &str) -> Vec<u64> {
    line.split("u64=")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Appends the decoded pair token after every `u64=N` (64-bit layout of src/token.rs: generation in
/// the high 32 bits, then slot, then the side bit).
fn annotate_tokens(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("u64=") {
        let (head, tail) = rest.split_at(at + 4);
        out.push_str(head);
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        out.push_str(&digits);
        rest = &tail[digits.len()..];
        if let Ok(token) = digits.parse::<u64>() {
            if token < 1 << 63 {
                let side = if token & 1 == 0 { "Client" } else { "Upstream" };
                out.push_str(&format!(
                    " /* conn={} slot={} {side} */",
                    token >> 32,
                    (token & 0xffff_ffff) >> 1
                ));
            }
        }
    }
    out.push_str(rest);
    out
}

/// EMFILE: edgefwd's RLIMIT_NOFILE is lowered (prlimit) to the descriptors it holds plus room for
/// [`EMFILE_PAIRS`] pairs, with --max-connections far above, so descriptors run out first. With an even
/// number of spares the next accept fails: clients wait in the backlog while accepting pauses 100 ms at
/// a time, and are accepted without any new edge once pairs close. With one spare more, the accept
/// succeeds and the upstream socket cannot be made.
fn trace_emfile(opts: &Options, traced: bool) -> R<()> {
    println!("### trace: EMFILE and the silent listener\n");
    emfile_phase(opts, traced, 0)?;
    emfile_phase(opts, false, 1)
}

/// Pairs that fit under the lowered descriptor limit.
const EMFILE_PAIRS: usize = 3;
/// Clients that connect: the pairs that fit, and as many again that do not.
const EMFILE_CLIENTS: usize = 2 * EMFILE_PAIRS;

/// Connects, sends one line and waits 300 ms for the echo: `served`, `waiting`, or how it failed (a
/// client that edgefwd accepts and resets at once can see the reset before connect() even returns).
fn emfile_client(addr: SocketAddr, i: usize) -> (Option<TcpStream>, String) {
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(stream) => stream,
        Err(err) => return (None, format!("{:?} at connect", err.kind())),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    if let Err(err) = stream.write_all(format!("ping {i}\n").as_bytes()) {
        return (Some(stream), format!("{:?} at write", err.kind()));
    }
    let mut buf = [0u8; 16];
    let outcome = match stream.read(&mut buf) {
        Ok(0) => "EOF".to_string(),
        Ok(_) => "served".to_string(),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => "waiting".to_string(),
        Err(err) => format!("{:?}", err.kind()),
    };
    (Some(stream), outcome)
}

fn emfile_phase(opts: &Options, traced: bool, odd: u64) -> R<()> {
    const STALL: Duration = Duration::from_millis(1500);
    let echo = EchoServer::start()?;
    let fwd = Fwd::start(echo.addr, &trace_args(opts, &["--max-connections", "1000"]))?;
    let before = fwd.scrape()?;
    thread::sleep(Duration::from_millis(100));
    // RLIMIT_NOFILE bounds descriptor *numbers*: a new fd gets the lowest free number, and EMFILE means
    // none is left below the limit. So the limit is where exactly `spare` numbers below it are free
    // (descriptors inherited from the environment, at any number, are accounted for).
    let fds = fwd.fds()?;
    let spare = (2 * EMFILE_PAIRS) as u64 + odd;
    let free_below = |limit: u64| limit - fds.iter().filter(|fd| **fd < limit).count() as u64;
    let limit = (0..1 << 16)
        .find(|limit| free_below(*limit) == spare)
        .ok_or("no descriptor limit leaves the wanted spares")?;
    let held = fds.iter().filter(|fd| **fd < limit).count();
    fwd.set_nofile(limit as libc::rlim_t)?;
    let mark = fwd.lines().len();
    let mut clients = Vec::new();
    let mut first = Vec::new();
    for i in 0..EMFILE_CLIENTS {
        let (stream, outcome) = emfile_client(fwd.listen, i);
        clients.push(stream);
        first.push(outcome);
    }
    let stalled_at = Instant::now();
    let tracer = match traced {
        true => Some(Strace::attach(
            fwd.pid(),
            &["-r", "-e", "trace=epoll_wait,epoll_pwait,accept4,accept"],
        )?),
        false => None,
    };
    let scrape = match Sample::scrape_within(fwd.metrics, Duration::from_millis(500)) {
        Ok(_) => "answered".to_string(),
        Err(err) => format!("failed: {err}"),
    };
    thread::sleep(STALL.saturating_sub(stalled_at.elapsed()));
    let accept_log = match tracer {
        Some(tracer) => Some(tracer.finish()?),
        None => None,
    };
    let stalled_for = stalled_at.elapsed();
    // Free descriptors: the served clients half-close, the echo backend answers with its FIN, and their
    // pairs close. The waiting clients should then be accepted with no new edge on the listener.
    let freed_at = Instant::now();
    for (stream, outcome) in clients.iter().zip(&first) {
        if let (Some(stream), "served") = (stream, outcome.as_str()) {
            let _ = stream.shutdown(Shutdown::Write);
        }
    }
    let mut later = Vec::new();
    for (stream, outcome) in clients.iter_mut().zip(&first) {
        let Some(stream) = stream.as_mut().filter(|_| outcome == "waiting") else {
            later.push("-".to_string());
            continue;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .ctx("read timeout")?;
        let mut buf = [0u8; 16];
        later.push(match stream.read(&mut buf) {
            Ok(0) => "EOF".to_string(),
            Ok(_) => format!(
                "served {} ms after the frees",
                freed_at.elapsed().as_millis()
            ),
            Err(err) => format!("{:?}", err.kind()),
        });
    }
    drop(clients);
    thread::sleep(Duration::from_millis(300));
    let d = fwd.scrape()?.since(&before);
    println!(
        "#### RLIMIT_NOFILE {limit}: {held} descriptors held below it, {spare} free ({}), --max-connections 1000; {EMFILE_CLIENTS} clients each send one line\n",
        if odd == 0 { "the next accept fails" } else { "one spare fd: the next accept succeeds, the upstream socket fails" }
    );
    let mut table = Table::new(&["client", "first 300 ms", "after the served clients close"]);
    for (i, (a, b)) in first.iter().zip(&later).enumerate() {
        table.row(vec![i.to_string(), a.clone(), b.clone()]);
    }
    table.print();
    println!(
        "\na metrics scrape while out of fds: {scrape}\n\ncounters over the phase ({:.2} s out of fds):\n",
        stalled_for.as_secs_f64()
    );
    let mut table = Table::new(&[
        "accepts",
        "accept pauses (EMFILE)",
        "polls",
        "spurious",
        "closes client-fin",
        "closes connect-error",
    ]);
    table.row(vec![
        d.c("accepts").to_string(),
        d.c("accept_pauses_exhausted").to_string(),
        d.c("polls").to_string(),
        d.c("spurious_wakeups").to_string(),
        d.close("client-fin").to_string(),
        d.close("connect-error").to_string(),
    ]);
    table.print();
    println!("\nlog lines (WARN, listener events, closes; per-pair events left out):\n");
    let lines: Vec<String> = fwd.lines()[mark..]
        .iter()
        .filter(|l| {
            l.contains("WARN") || l.contains("event Listener") || l.contains("closed conn=")
        })
        .map(|l| strip_timestamp(l))
        .collect();
    print_lines(&lines, 30);
    if let Some(text) = accept_log {
        let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
        println!(
            "\nstrace -r -e trace=epoll_wait,accept4 while out of fds: {} accept4 calls ({} EMFILE), {} epoll_wait calls:\n",
            count("accept"),
            count("EMFILE"),
            count("epoll_")
        );
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        print_lines(&lines, 12);
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Tables

/// A markdown table, columns padded to their widest cell.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn print(&self) {
        let mut widths: Vec<usize> = self.header.iter().map(String::len).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.len());
                }
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
                .collect();
            format!("| {} |", padded.join(" | "))
        };
        println!("{}", line(&self.header));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!("|-{}-|", rule.join("-|-"));
        for row in &self.rows {
            println!("{}", line(row));
        }
    }
}
