//! Shared harness for edgefwd's end-to-end tests: real sockets on loopback, the real binary.
//!
//! # Layout
//! - [`Forwarder`]: the `edgefwd` binary on `127.0.0.1:0` (unless the test gives `--listen`), its
//!   stderr drained by a thread into a shared string, killed and reaped on drop (also on panic, when
//!   its log is printed to help diagnosis).
//! - Upstreams: [`Backend`] (a thread per connection running a handler: echo, sink, source, reset),
//!   [`Upstream`] (a listener the test accepts from itself for scripted exchanges), [`Blackhole`]
//!   (a connect that never completes until opened), [`refused_addr`].
//! - Data: [`pattern`] / [`PatternChecker`], a deterministic stream that covers all 256 byte values
//!   in every 256-byte block and does not repeat for a prime period of about 1 MiB, so a lost,
//!   duplicated or reordered chunk shows up as a mismatch.
//! - Clients: [`connect`], [`read_until_end`], [`echo_roundtrip`], [`set_linger0`].
//! - Config files: [`ConfigFile`], a uniquely named TOML file under the temp dir, removed on drop;
//!   [`route_addr`] finds a route's listener in the log.
//!
//! - [`support`]: what the benches need too (RLIMIT_NOFILE, /proc readers, the mio echo server,
//!   CPU pinning...), one copy in `tests/support/`, which the benches include as
//!   well; see its own docs.
//!
//! Every blocking socket here carries read/write timeouts, and every wait has a deadline: no test
//! can hang.
#![allow(dead_code)]

pub mod chaos;
pub mod model_connect;
pub mod model_proxy;
pub mod model_tls;
pub mod soak;
#[path = "../support/mod.rs"]
pub mod support;
pub mod wiregen;

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use support::pattern::Repeating;

/// Read/write timeout on every blocking socket the harness hands out.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a debug build may take to print its "listening on" line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Polls `cond` every 10ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// The forwarder process
// ---------------------------------------------------------------------------------------------

/// `EDGEFWD_TEST_SPLICE=MODE` (off, auto or always) runs every forwarder with `--splice MODE`, so the same
/// end-to-end tests cover each path: the ring alone, the ring switching to pipes (also the default), and
/// pipes from the first byte. `.ci/run` runs the suite all three ways.
pub fn splice_under_test() -> Option<String> {
    std::env::var("EDGEFWD_TEST_SPLICE").ok()
}

/// How to start the child beyond its arguments.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `RUST_LOG` for the child; `debug` when `None`, so that close causes are logged.
    pub rust_log: Option<String>,
    /// Sets RLIMIT_NOFILE soft = hard = this value in the child before exec.
    pub nofile: Option<u64>,
    /// More environment variables for the child.
    pub env: Vec<(String, String)>,
    /// Listening sockets (descriptor, name) to hand over as systemd's socket activation does
    /// ([`edgefwd_command`]).
    pub listen_fds: Vec<(RawFd, String)>,
}

/// One `closed ... cause=X c2u=N u2c=M` line of the log.
#[derive(Clone, Debug)]
pub struct CloseRecord {
    pub cause: String,
    pub c2u: Option<u64>,
    pub u2c: Option<u64>,
    pub line: String,
}

/// The running `edgefwd` binary.
pub struct Forwarder {
    child: Child,
    addr: SocketAddr,
    /// Everything the child wrote to stderr so far.
    logs: Arc<Mutex<String>>,
    /// The thread that drains stderr; it ends at EOF (child exit).
    drain: Option<JoinHandle<()>>,
    /// Set once the child has been reaped.
    exited: Option<ExitStatus>,
}

impl Forwarder {
    /// Starts `edgefwd ARGS` (plus `--listen 127.0.0.1:0` unless ARGS has `--listen` or `--config`) with
    /// `RUST_LOG=debug`, and waits for its "listening on ADDR" line.
    pub fn start(args: &[&str]) -> Forwarder {
        Self::start_with(args, &Options::default())
    }

    /// Starts `edgefwd ARGS` under an RLIMIT_NOFILE that leaves it exactly `free` descriptors once it
    /// is up: a first forwarder with the same ARGS shows how many fds it holds at rest
    /// ([`Forwarder::nofile_leaving_free`]), and is stopped before the measured one starts.
    pub fn start_leaving_free(args: &[&str], free: usize) -> Forwarder {
        let nofile = Self::start(args).nofile_leaving_free(free);
        Self::start_with_nofile(args, nofile)
    }

    /// Starts `edgefwd ARGS` under RLIMIT_NOFILE `nofile` (soft = hard).
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> Forwarder {
        Self::start_with(
            args,
            &Options {
                nofile: Some(nofile),
                ..Options::default()
            },
        )
    }

    pub fn start_with(args: &[&str], opts: &Options) -> Forwarder {
        raise_own_nofile();
        let mut cmd = edgefwd_command(&opts.listen_fds);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        if !args.contains(&"--listen") && !args.contains(&"--config") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if let Some(mode) = splice_under_test().filter(|_| !args.contains(&"--splice")) {
            cmd.args(["--splice", &mode]);
        }
        cmd.args(args)
            .env("RUST_LOG", opts.rust_log.as_deref().unwrap_or("debug"))
            .env("RUST_LOG_STYLE", "never")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = opts.nofile {
            set_child_nofile(&mut cmd, n);
        }
        let mut child = cmd.spawn().expect("spawn edgefwd");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&logs);
        let drain = thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => sink
                        .lock()
                        .expect("log mutex")
                        .push_str(&String::from_utf8_lossy(&line)),
                }
            }
        });
        let mut fwd = Forwarder {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            logs,
            drain: Some(drain),
            exited: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(addr) = parse_listen_addr(&fwd.logs()) {
                fwd.addr = addr;
                return fwd;
            }
            if let Some(status) = fwd.child.try_wait().expect("try_wait") {
                fwd.exited = Some(status);
                fwd.join_drain(Duration::from_secs(2));
                panic!(
                    "edgefwd exited ({status}) before listening; args {args:?}; stderr:\n{}",
                    fwd.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "edgefwd printed no 'listening on' line within {START_TIMEOUT:?}; stderr:\n{}",
                fwd.logs()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address it listens on, from its start line.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("log mutex").clone()
    }

    /// Waits until the log contains `needle`; returns whether it did within `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.logs().contains(needle))
    }

    /// The address route `name` listens on, from its start line, waiting up to 5 s for that line: a
    /// file's routes (and a reload's new ones) start one after another, and a test may look before the
    /// last one has logged.
    pub fn route_addr(&self, name: &str) -> SocketAddr {
        let mut found = None;
        wait_until(Duration::from_secs(5), || {
            found = route_addr(&self.logs(), name);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("route {name} logged no start line; log:\n{}", self.logs()))
    }

    /// Like [`Self::wait_for_log`] but panics with the whole log on timeout.
    pub fn expect_log(&self, needle: &str, timeout: Duration) {
        assert!(
            self.wait_for_log(needle, timeout),
            "log has no {needle:?} after {timeout:?}; log:\n{}",
            self.logs()
        );
    }

    /// Number of lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.logs().lines().filter(|l| l.contains(needle)).count()
    }

    /// All "closed ... cause=" lines so far, parsed.
    pub fn closes(&self) -> Vec<CloseRecord> {
        self.logs().lines().filter_map(parse_close_line).collect()
    }

    /// Waits for a close line with `cause` and returns it; panics with the log on timeout.
    pub fn wait_for_close(&self, cause: &str, timeout: Duration) -> CloseRecord {
        let mut found = None;
        wait_until(timeout, || {
            found = self.closes().into_iter().find(|c| c.cause == cause);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no close with cause={cause} after {timeout:?}; log:\n{}",
                self.logs()
            )
        })
    }

    /// Waits until `n` close lines have been logged; panics with the log on timeout.
    pub fn wait_for_n_closes(&self, n: usize, timeout: Duration) -> Vec<CloseRecord> {
        let ok = wait_until(timeout, || self.closes().len() >= n);
        assert!(
            ok,
            "expected {n} close lines after {timeout:?}; log:\n{}",
            self.logs()
        );
        self.closes()
    }

    /// Open file descriptors of the child (entries of /proc/PID/fd).
    pub fn fd_count(&self) -> usize {
        support::procfs::fd_count(self.pid()).expect("read /proc/PID/fd")
    }

    /// The RLIMIT_NOFILE at which a forwarder holding the fds this one holds now would have exactly
    /// `free` descriptors left. A limit caps fd *numbers*, not the count: fds inherited at high numbers
    /// (a CI runner's, say) take no slot below the limit, so they are not counted.
    fn nofile_leaving_free(&self, free: usize) -> u64 {
        let numbers = support::procfs::fd_numbers(self.pid()).expect("read /proc/PID/fd");
        let free = free as u64;
        let mut limit = free;
        loop {
            let below = numbers.iter().filter(|&&fd| fd < limit).count() as u64;
            if below + free == limit {
                return limit;
            }
            limit = below + free;
        }
    }

    /// Lowers the running child's RLIMIT_NOFILE (soft and hard) to `n` with prlimit(2): its fd budget
    /// stays what the start-time limit gave, so the process can now run out of fds for real (EMFILE),
    /// as when descriptors the budget does not know about are in use.
    pub fn lower_nofile(&self, n: u64) {
        support::nofile::set_for(self.pid(), n).expect("prlimit");
    }

    /// The `fd-budget=N` of the start line: the most pairs the process holds at once.
    pub fn fd_budget(&self) -> usize {
        let logs = self.logs();
        let rest = &logs[logs
            .find("fd-budget=")
            .expect("fd-budget= on the start line")
            + 10..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().expect("fd-budget value")
    }

    /// Resident set size of the child in KiB (VmRSS of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        support::procfs::rss_kib(self.pid()).expect("read /proc/PID/status")
    }

    /// utime + stime of the child in clock ticks (fields 14 and 15 of /proc/PID/stat).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read stat");
        // The command name (field 2) may contain spaces; fields after it start at field 3.
        let rest = &stat[stat.rfind(')').expect("')' in stat") + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields[14 - 3].parse().expect("utime");
        let stime: u64 = fields[15 - 3].parse().expect("stime");
        utime + stime
    }

    /// Sends `sig` (libc::SIGTERM, ...) to the child.
    pub fn signal(&self, sig: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes plain integers; the child is ours and not yet reaped (reaping happens
        // only through `self`), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait().expect("try_wait") {
            Some(status) => {
                self.exited = Some(status);
                false
            }
            None => true,
        }
    }

    /// Waits up to `timeout` for the child to exit; reaps it and collects the rest of its log.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(status) = self.child.try_wait().expect("try_wait") {
                    self.exited = Some(status);
                    break;
                }
                if Instant::now() >= deadline {
                    return None;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        self.join_drain(Duration::from_secs(2));
        self.exited
    }

    fn join_drain(&mut self, timeout: Duration) {
        if let Some(handle) = self.drain.take() {
            if wait_until(timeout, || handle.is_finished()) {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.join_drain(Duration::from_secs(2));
        if thread::panicking() {
            eprintln!(
                "---- edgefwd (pid {}) stderr ----\n{}----",
                self.pid(),
                self.logs()
            );
        }
    }
}

/// A command for the edgefwd binary. With `listen_fds`, it is started as systemd's socket activation
/// starts a service: the sockets become descriptors 3, 4, ... (close-on-exec cleared), `LISTEN_FDS` and
/// `LISTEN_FDNAMES` say how many and their names, and `LISTEN_PID` is the binary's pid, which only the
/// child knows: a shell sets it to its own `$$` and execs the binary in its place.
pub fn edgefwd_command(listen_fds: &[(RawFd, String)]) -> Command {
    let binary = env!("CARGO_BIN_EXE_edgefwd");
    if listen_fds.is_empty() {
        return Command::new(binary);
    }
    assert!(listen_fds.len() <= 16, "at most 16 sockets to hand over");
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", binary])
        .env("LISTEN_FDS", listen_fds.len().to_string())
        .env(
            "LISTEN_FDNAMES",
            listen_fds
                .iter()
                .map(|(_, name)| name.as_str())
                .collect::<Vec<_>>()
                .join(":"),
        );
    let fds: Vec<RawFd> = listen_fds.iter().map(|(fd, _)| *fd).collect();
    // SAFETY: between fork and exec the closure only makes fcntl(2) and dup2(2) calls, which are
    // async-signal-safe, on descriptors the parent keeps open until spawn returns; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // First out of the way (above any target), so that dup2 onto 3.. clobbers no source; these
            // copies close at exec.
            let mut high = [0; 16];
            for (slot, fd) in high.iter_mut().zip(&fds) {
                *slot = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                if *slot < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (target, fd) in (3..).zip(&high[..fds.len()]) {
                // dup2's copy does not have close-on-exec.
                if libc::dup2(*fd, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

/// The token after "listening on ", parsed as a socket address.
pub use support::logs::listen_addr as parse_listen_addr;

/// The address of the last `listening on ADDR route=NAME` line for route `name`.
pub fn route_addr(logs: &str, name: &str) -> Option<SocketAddr> {
    let tag = format!(" route={name} ");
    logs.lines()
        .filter(|line| line.contains(&tag))
        .filter_map(parse_listen_addr)
        .next_back()
}

/// A TOML file under `std::env::temp_dir()` with a unique name, removed on drop.
pub struct ConfigFile {
    path: std::path::PathBuf,
}

impl ConfigFile {
    pub fn new(text: &str) -> ConfigFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "edgefwd-test-{}-{}.toml",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let file = ConfigFile {
            path: std::env::temp_dir().join(name),
        };
        file.write(text);
        file
    }

    /// Replaces the contents atomically (write a sibling, rename over), so a reload never reads half.
    pub fn write(&self, text: &str) {
        let staging = self.path.with_extension("toml.new");
        fs::write(&staging, text).expect("write config file");
        fs::rename(&staging, &self.path).expect("rename config file");
    }

    pub fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`; returns (status line, body).
pub fn http_fetch(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let (raw, _) = read_until_end(&mut s, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of the last `key=N` token in the log (e.g. `drained=`), if any.
pub fn log_counter(logs: &str, key: &str) -> Option<u64> {
    logs.split_whitespace()
        .filter_map(|t| t.strip_prefix(key))
        .filter_map(|v| v.trim_end_matches([',', ';']).parse().ok())
        .next_back()
}

/// Sum of `key=+N` over the `--stats-interval` lines of reactor `reactor` (`--threads`): what that
/// reactor alone counted.
pub fn stats_total(logs: &str, reactor: usize, key: &str) -> u64 {
    logs.lines()
        .filter(|line| line.contains(&format!("stats: reactor={reactor} ")))
        .filter_map(|line| {
            let value = line.split_once(&format!(" {key}=+"))?.1;
            value.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

fn parse_close_line(line: &str) -> Option<CloseRecord> {
    if !line.contains("closed") || !line.contains(" cause=") {
        return None;
    }
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(key))
            .map(str::to_owned)
    };
    Some(CloseRecord {
        cause: field("cause=")?,
        c2u: field("c2u=").and_then(|v| v.parse().ok()),
        u2c: field("u2c=").and_then(|v| v.parse().ok()),
        line: line.to_owned(),
    })
}

/// Raises this test process's own soft RLIMIT_NOFILE to its hard limit (hundreds of sockets per
/// test, several tests at once).
fn raise_own_nofile() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Best effort: a test that then runs out of fds says so itself.
        let _ = support::nofile::raise_to_hard();
    });
}

/// Makes the child start with RLIMIT_NOFILE soft = hard = `n`.
fn set_child_nofile(cmd: &mut Command, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n as libc::rlim_t,
        rlim_max: n as libc::rlim_t,
    };
    // SAFETY: the closure runs in the forked child before exec; it only calls setrlimit(2), which is
    // async-signal-safe, on a struct copied into the closure, and builds an io::Error from errno
    // without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `edgefwd ARGS` (no RUST_LOG) expecting it to exit by itself within 30s;
/// returns (exit code, stderr).
pub fn run_edgefwd_expect_fail(args: &[&str]) -> (Option<i32>, String) {
    let (code, _, stderr) = run_edgefwd_to_exit(args);
    (code, stderr)
}

/// [`run_edgefwd_expect_fail`] with a listener and an upstream (`127.0.0.1:9`, never dialled: the
/// run must fail before) and `extra`: for a flag whose bad value must be refused.
pub fn run_with_upstream_expect_fail(extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"];
    args.extend_from_slice(extra);
    run_edgefwd_expect_fail(&args)
}

/// Runs `edgefwd ARGS` (no RUST_LOG) expecting it to exit by itself within 30s;
/// returns (exit code, stdout, stderr).
pub fn run_edgefwd_to_exit(args: &[&str]) -> (Option<i32>, String, String) {
    run_edgefwd_to_exit_with_env(args, &[])
}

/// [`run_edgefwd_to_exit`] with more environment variables for the child.
pub fn run_edgefwd_to_exit_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgefwd"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .env("RUST_LOG_STYLE", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn edgefwd");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr is piped")));
    let status = exit_within(&mut child, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("edgefwd {args:?} did not exit within 30s"));
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    (status.code(), stdout, stderr)
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// Period of the pattern: a prime, so it never lines up with buffer sizes.
pub const PATTERN_PERIOD: usize = 1_048_573;
/// Longest slice [`pattern`] returns.
pub const PATTERN_MAX_CHUNK: usize = 1 << 20;

fn pattern_base() -> &'static Repeating {
    static BASE: OnceLock<Repeating> = OnceLock::new();
    BASE.get_or_init(|| {
        Repeating::new(PATTERN_PERIOD, PATTERN_MAX_CHUNK, |i| {
            // Within an aligned 256-byte block the low byte runs over 0..=255 and the rest is a
            // constant XOR, so each block holds every byte value once.
            (i as u8) ^ ((i >> 8) as u8).wrapping_mul(167) ^ ((i >> 16) as u8).wrapping_mul(29)
        })
    })
}

/// The pattern bytes at stream offset `offset`, `len` of them (at most [`PATTERN_MAX_CHUNK`]).
pub fn pattern(offset: u64, len: usize) -> &'static [u8] {
    assert!(len <= PATTERN_MAX_CHUNK, "pattern chunk too long");
    pattern_base().at(offset, len)
}

/// `total` bytes of the pattern from offset 0, as one vector.
pub fn pattern_vec(total: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(total);
    while v.len() < total {
        let n = (total - v.len()).min(PATTERN_MAX_CHUNK);
        v.extend_from_slice(pattern(v.len() as u64, n));
    }
    v
}

/// Writes pattern bytes `[0, total)` to `w` in chunks of `chunk`.
pub fn write_pattern(w: &mut impl Write, total: u64, chunk: usize) -> io::Result<()> {
    let chunk = chunk.min(PATTERN_MAX_CHUNK);
    let mut off = 0;
    while off < total {
        let n = (total - off).min(chunk as u64) as usize;
        w.write_all(pattern(off, n))?;
        off += n as u64;
    }
    Ok(())
}

/// Checks a received stream against the pattern, chunk by chunk.
#[derive(Debug, Default)]
pub struct PatternChecker {
    /// Bytes checked so far.
    pub offset: u64,
    /// Offset of the first byte that differed, if any.
    pub mismatch: Option<u64>,
}

impl PatternChecker {
    pub fn check(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = data.len().min(PATTERN_MAX_CHUNK);
            let expected = pattern(self.offset, n);
            if self.mismatch.is_none() && &data[..n] != expected {
                let at = data[..n]
                    .iter()
                    .zip(expected)
                    .position(|(a, b)| a != b)
                    .expect("slices differ");
                self.mismatch = Some(self.offset + at as u64);
            }
            self.offset += n as u64;
            data = &data[n..];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

/// How a read loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Clean EOF (FIN).
    Eof,
    /// ECONNRESET.
    Reset,
    /// The read timed out.
    TimedOut,
    Other(io::ErrorKind),
}

pub fn classify(e: &io::Error) -> End {
    match e.kind() {
        io::ErrorKind::ConnectionReset => End::Reset,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => End::TimedOut,
        kind => End::Other(kind),
    }
}

/// Sets the harness's read/write timeouts on a blocking stream.
pub fn set_timeouts(s: &TcpStream, t: Duration) {
    s.set_read_timeout(Some(t)).expect("set_read_timeout");
    s.set_write_timeout(Some(t)).expect("set_write_timeout");
}

/// A client connection with [`IO_TIMEOUT`] read/write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// Like [`connect`], for a peer that may reset the connection at once (connect() then fails with
/// ECONNRESET).
pub fn try_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    set_timeouts(&s, IO_TIMEOUT);
    Ok(s)
}

/// SO_LINGER 0: dropping the stream then sends RST instead of FIN.
pub fn set_linger0(s: &TcpStream) {
    SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("set_linger(0)");
}

/// Closes `s` with RST.
pub fn reset(s: TcpStream) {
    set_linger0(&s);
    drop(s);
}

/// Reads until EOF, error or `timeout` (overall); returns the bytes read and how it ended.
pub fn read_until_end(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, End) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, End::TimedOut);
        }
        s.set_read_timeout(Some(left)).expect("set_read_timeout");
        match s.read(&mut buf) {
            Ok(0) => return (out, End::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (out, classify(&e)),
        }
    }
}

/// Asserts that `s` receives no data and is closed (EOF or RST) within `timeout`; returns which.
pub fn expect_closed_without_data(s: &mut TcpStream, timeout: Duration) -> End {
    let (data, end) = read_until_end(s, timeout);
    assert!(
        data.is_empty(),
        "expected no data, got {} bytes",
        data.len()
    );
    assert!(
        matches!(end, End::Eof | End::Reset),
        "expected EOF or reset within {timeout:?}, got {end:?}"
    );
    end
}

/// Asserts that nothing arrives on `s` for `quiet` (the read times out), then restores the timeout.
pub fn expect_silence(s: &mut TcpStream, quiet: Duration) {
    s.set_read_timeout(Some(quiet)).expect("set_read_timeout");
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Err(e) if classify(&e) == End::TimedOut => {}
        Ok(0) => panic!("expected silence, got EOF"),
        Ok(n) => panic!("expected silence, got {n} bytes"),
        Err(e) => panic!("expected silence, got {e}"),
    }
    s.set_read_timeout(Some(IO_TIMEOUT))
        .expect("set_read_timeout");
}

/// Connects to `addr`, writes `total` pattern bytes (from a second thread, in `chunk`-sized
/// writes) then half-closes, while reading back to EOF and checking every byte against the
/// pattern. For an echo upstream behind the forwarder.
pub fn echo_roundtrip(addr: SocketAddr, total: u64, chunk: usize) {
    let mut stream = connect(addr);
    let mut writer = stream.try_clone().expect("try_clone");
    let w = thread::spawn(move || -> io::Result<()> {
        write_pattern(&mut writer, total, chunk)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut checker = PatternChecker::default();
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        match stream.read(&mut buf) {
            Ok(0) => break End::Eof,
            Ok(n) => checker.check(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break classify(&e),
        }
    };
    w.join()
        .expect("writer thread")
        .unwrap_or_else(|e| panic!("writing {total} bytes: {e}"));
    assert_eq!(end, End::Eof, "echo stream ended with {end:?}");
    assert_eq!(checker.mismatch, None, "echoed bytes differ");
    assert_eq!(checker.offset, total, "echoed byte count");
}

// ---------------------------------------------------------------------------------------------
// Upstreams
// ---------------------------------------------------------------------------------------------

/// What a sink/source backend saw on one connection.
#[derive(Clone, Debug)]
pub struct ConnReport {
    /// Bytes read (sink) or written (source).
    pub bytes: u64,
    /// First offset that differed from the pattern (sink only).
    pub mismatch: Option<u64>,
    /// How the connection ended.
    pub end: End,
}

type Handler = Arc<dyn Fn(TcpStream) + Send + Sync + 'static>;

/// A listener on loopback whose accept thread runs `handler` on its own thread per connection.
/// Dropping it stops accepting; connection threads end with their sockets' timeouts.
pub struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// Binds `bind` (e.g. "127.0.0.1:0", "[::1]:0") and serves each connection with `handler`.
    pub fn spawn(bind: SocketAddr, handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Backend {
        raise_own_nofile();
        let listener = listen_socket(bind, 1024);
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let (stop2, accepted2) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).expect("set_nonblocking");
                        set_timeouts(&s, IO_TIMEOUT);
                        accepted2.fetch_add(1, Ordering::SeqCst);
                        let h = Arc::clone(&handler);
                        thread::spawn(move || h(s));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Backend {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    /// Echoes every byte; answers the client's FIN with its own.
    pub fn echo() -> Backend {
        Self::echo_on(loopback4())
    }

    pub fn echo_on(bind: SocketAddr) -> Backend {
        Self::spawn(bind, echo_conn)
    }

    /// Reads everything, checks it against the pattern, reports per connection.
    pub fn sink() -> (Backend, Receiver<ConnReport>) {
        Self::sink_stalled(Duration::ZERO)
    }

    /// A sink that waits `stall` after accepting before it reads anything.
    pub fn sink_stalled(stall: Duration) -> (Backend, Receiver<ConnReport>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let b = Self::spawn(loopback4(), move |mut s| {
            thread::sleep(stall);
            let report = sink_conn(&mut s);
            let _ = tx.lock().expect("report channel").send(report);
        });
        (b, rx)
    }

    /// Sends `total` pattern bytes, then FIN; drains what the client sends until its EOF.
    pub fn source(total: u64) -> (Backend, Receiver<ConnReport>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let b = Self::spawn(loopback4(), move |mut s| {
            let end = match write_pattern(&mut s, total, 256 * 1024)
                .and_then(|()| s.shutdown(Shutdown::Write))
            {
                Ok(()) => End::Eof,
                Err(e) => classify(&e),
            };
            let _ = tx.lock().expect("report channel").send(ConnReport {
                bytes: if end == End::Eof { total } else { 0 },
                mismatch: None,
                end,
            });
            let _ = io::copy(&mut s, &mut io::sink());
        });
        (b, rx)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `--upstream` value for this backend.
    pub fn upstream_arg(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A forwarder to `echo` with `--splice MODE`, `--metrics` and `extra` flags, under RLIMIT_NOFILE
/// `nofile` if given.
pub fn splice_forwarder(
    echo: &Backend,
    mode: &str,
    extra: &[&str],
    nofile: Option<u64>,
) -> Forwarder {
    let upstream = echo.upstream_arg();
    let mut args = vec![
        "--upstream",
        &upstream,
        "--splice",
        mode,
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    match nofile {
        Some(nofile) => Forwarder::start_with_nofile(&args, nofile),
        None => Forwarder::start(&args),
    }
}

/// A listening socket on `bind` with the given backlog (std's own is 128: too short when the
/// forwarder opens 200 upstream connects at once).
pub fn listen_socket(bind: SocketAddr, backlog: i32) -> TcpListener {
    let socket = Socket::new(Domain::for_address(bind), Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket
        .bind(&SockAddr::from(bind))
        .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    socket.listen(backlog).expect("listen");
    socket.into()
}

pub fn loopback4() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn loopback6() -> SocketAddr {
    "[::1]:0".parse().expect("[::1]:0")
}

/// The echo handler: copy back until EOF, then half-close.
pub fn echo_conn(mut s: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                let _ = s.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The sink handler: read to the end, checking against the pattern.
pub fn sink_conn(s: &mut TcpStream) -> ConnReport {
    let mut checker = PatternChecker::default();
    let mut buf = vec![0u8; 256 * 1024];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break End::Eof,
            Ok(n) => checker.check(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break classify(&e),
        }
    };
    ConnReport {
        bytes: checker.offset,
        mismatch: checker.mismatch,
        end,
    }
}

/// A listener the test accepts from itself, for scripted exchanges.
pub struct Upstream {
    listener: TcpListener,
}

impl Upstream {
    pub fn bind() -> Upstream {
        Self::bind_on(loopback4())
    }

    pub fn bind_on(addr: SocketAddr) -> Upstream {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).expect("set_nonblocking");
        Upstream { listener }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("local_addr")
    }

    /// The next connection within `timeout`, if any.
    pub fn try_accept(&self, timeout: Duration) -> Option<TcpStream> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).expect("set_nonblocking");
                    set_timeouts(&s, IO_TIMEOUT);
                    return Some(s);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// The next connection; panics if none arrives within `timeout`.
    pub fn accept(&self, timeout: Duration) -> TcpStream {
        self.try_accept(timeout)
            .unwrap_or_else(|| panic!("upstream accepted nothing within {timeout:?}"))
    }
}

/// An upstream whose connects stay pending: a listener with backlog 0 whose accept queue is full,
/// so Linux drops further SYNs (the connecting side keeps retransmitting them).
pub struct Blackhole {
    listener: Socket,
    /// Connections that filled the accept queue.
    fillers: Vec<Socket>,
    addr: SocketAddr,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        Blackhole::at(loopback4())
    }

    /// A blackhole on `bind` (port 0: any free one).
    pub fn at(bind: SocketAddr) -> Blackhole {
        let domain = Domain::for_address(bind);
        let listener = Socket::new(domain, Type::STREAM, None).expect("socket");
        listener
            .bind(&SockAddr::from(bind))
            .expect("bind blackhole");
        listener.listen(0).expect("listen(0)");
        let addr = listener
            .local_addr()
            .expect("local_addr")
            .as_socket()
            .expect("inet address");
        let mut fillers = Vec::new();
        for _ in 0..8 {
            let s = Socket::new(domain, Type::STREAM, None).expect("socket");
            match s.connect_timeout(&SockAddr::from(addr), Duration::from_millis(200)) {
                Ok(()) => fillers.push(s),
                Err(e) if classify(&e) == End::TimedOut => {
                    // This SYN was dropped: the queue is full. Dropping `s` stops its retransmits,
                    // which could otherwise take a slot freed by `open`.
                    assert!(!fillers.is_empty(), "blackhole: first connect timed out");
                    return Blackhole {
                        listener,
                        fillers,
                        addr,
                    };
                }
                Err(e) => panic!("blackhole filler connect: {e}"),
            }
        }
        panic!("blackhole: accept queue of a listen(0) socket never filled up");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Frees the accept queue: the next SYN retransmit (about 1s, 3s, 7s after the first SYN)
    /// completes. Returns the listener for the test to accept from.
    pub fn open(self) -> Upstream {
        self.listener
            .set_nonblocking(true)
            .expect("set_nonblocking");
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut drained = 0;
        while drained < self.fillers.len() {
            match self.listener.accept() {
                Ok(_) => drained += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "blackhole fillers not acceptable"
                    );
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept filler: {e}"),
            }
        }
        drop(self.fillers);
        Upstream {
            listener: self.listener.into(),
        }
    }
}

impl Default for Blackhole {
    fn default() -> Self {
        Self::new()
    }
}

/// A loopback port nothing is bound to, below the kernel's ephemeral range (`ip_local_port_range`). A
/// port the kernel hands out for `bind(0)` and takes back can be handed to a test running in parallel
/// before we use it; one below the range is never handed out, so it stays ours (the tests bind no fixed
/// ports). For ports a test later gives to a peer (nginx, haproxy) or listens on again itself.
pub fn unused_port() -> u16 {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let bounds: Vec<u32> = range
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let (first, last) = match bounds[..] {
        [first, last] => (first, last),
        _ => (32768, 60999),
    };
    // Ports below the range if it leaves enough of them, else above it.
    let (low, high) = if first >= 11_000 {
        (10_000, first)
    } else {
        (last + 1, 65_536)
    };
    // No random crate: the clock's nanoseconds and the pid pick a start, then a stride walks the span.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = u64::from(nanos) ^ (u64::from(std::process::id()) << 20);
    let span = u64::from(high.saturating_sub(low).max(1));
    for i in 0..span.min(2000) {
        let port = u64::from(low) + (seed + i * 7919) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        // Never the same port twice in one test binary, even once released: a test may listen on it later.
        static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        let given = given.get_or_insert_with(HashSet::new);
        if !given.contains(&port)
            && TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).is_ok()
        {
            given.insert(port);
            return port;
        }
    }
    panic!("no unused loopback port in [{low}, {high})");
}

/// An address where nothing listens: connects get RST (ECONNREFUSED). Its port is [`unused_port`], so a
/// test may listen on it later. A port that is found listening after all (no test of this binary holds
/// it, so something outside does) is passed over for another.
pub fn refused_addr() -> SocketAddr {
    let mut last = None;
    for _ in 0..20 {
        let addr = SocketAddr::from(([127, 0, 0, 1], unused_port()));
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return addr,
            other => last = Some(format!("{addr}: {other:?}")),
        }
    }
    panic!("no loopback port refused a connect; last: {last:?}");
}

// ---------------------------------------------------------------------------------------------
// /proc/net/tcp
// ---------------------------------------------------------------------------------------------

pub use support::procfs::TcpRow;

/// The TCP sockets that `pid` has open, from /proc/net/tcp and /proc/net/tcp6.
pub fn tcp_sockets_of(pid: u32) -> Vec<TcpRow> {
    support::procfs::tcp_sockets_of(pid).expect("read /proc/PID/fd")
}

/// Clock ticks per second (for /proc figures).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).expect("positive CLK_TCK")
}

// ---------------------------------------------------------------------------------------------
// The --metrics endpoint
// ---------------------------------------------------------------------------------------------

impl Forwarder {
    /// The `--metrics` address, from the "metrics on http://ADDR/metrics" start line.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.expect_log("metrics on http://", Duration::from_secs(10));
        support::logs::metrics_addr(&self.logs()).expect("metrics address")
    }

    /// The `--admin` address, from the "admin API on http://ADDR/" start line.
    pub fn admin_addr(&self) -> SocketAddr {
        self.expect_log("admin API on http://", Duration::from_secs(10));
        let logs = self.logs();
        let (_, rest) = logs.split_once("admin API on http://").expect("admin line");
        rest.split('/')
            .next()
            .and_then(|addr| addr.parse().ok())
            .expect("admin address")
    }
}

/// Waits up to `timeout` for `child` to exit and returns its status; past it, kills and reaps the
/// child and returns `None`, so the caller's panic leaves no process behind.
pub fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `tool` can be started here; when not, says why the test skips (CI installs what the tests
/// use). Only the start counts: `openssl` has no `--version` and fails it.
pub fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("skipped: {tool} is not installed (.ci/run installs it)");
    }
    found
}

/// Starts `edgefwd --threads 2` in front of `upstream` (plus `extra` flags), logging at info with a
/// stats line every 100 ms (per reactor, so that each one's counters can be read).
pub fn two_reactors(upstream: &str, extra: &[&str]) -> Forwarder {
    let opts = Options {
        rust_log: Some("info".into()),
        ..Options::default()
    };
    let mut args = vec![
        "--upstream",
        upstream,
        "--threads",
        "2",
        "--stats-interval",
        "100ms",
    ];
    args.extend_from_slice(extra);
    Forwarder::start_with(&args, &opts)
}

/// 40 echo connections from 8 threads at once, every byte checked, to a `--threads 2` forwarder that
/// logs `--stats-interval` lines at info; returns how many each of the two reactors accepted, once
/// all 40 are closed.
pub fn serve_forty(fwd: &Forwarder) -> (u64, u64) {
    let addr = fwd.addr();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..5 {
                    echo_roundtrip(addr, 64 * 1024, 8192);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("echo worker");
    }
    let served = wait_until(Duration::from_secs(10), || {
        let logs = fwd.logs();
        stats_total(&logs, 0, "closes") + stats_total(&logs, 1, "closes") == 40
    });
    let logs = fwd.logs();
    assert!(served, "40 connections not all closed:\n{logs}");
    let (zero, one) = (
        stats_total(&logs, 0, "accepts"),
        stats_total(&logs, 1, "accepts"),
    );
    assert_eq!(zero + one, 40, "{logs}");
    (zero, one)
}

/// A forwarder started with `args` and an admin API on a free loopback port; that port's address.
pub fn start_with_admin(args: &[&str]) -> (Forwarder, SocketAddr) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--admin", "127.0.0.1:0"]);
    let fwd = Forwarder::start(&all);
    let admin = fwd.admin_addr();
    (fwd, admin)
}

/// One HTTP GET; returns (status line, headers + body).
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    // One write, so the request arrives as one segment and costs the forwarder one event.
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("response until close");
    let (status, rest) = response.split_once("\r\n").expect("status line");
    (status.to_string(), rest.to_string())
}

/// `GET /metrics`: checks the status and content type, returns the body.
pub fn scrape(addr: SocketAddr) -> String {
    let (status, rest) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(rest.contains("Content-Type: text/plain; version=0.0.4"));
    let (_, body) = rest.split_once("\r\n\r\n").expect("head/body separator");
    body.to_string()
}

/// The value of an unlabelled or labelled sample, e.g. `edgefwd_accepts_total` or
/// `edgefwd_bytes_total{direction="c2u"}`.
pub fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{body}"))
        .parse()
        .expect("integer sample")
}
