//! The edgefwd child process: started on port 0, stderr drained in a thread, killed on drop.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::{self};
use std::time::Duration;

use crate::cli::Options;
use crate::sample::Sample;
use crate::support::logs::{listen_addr, metrics_addr};
use crate::support::{cpu, nofile, procfs};
use crate::{Ctx, R};

/// How long edgefwd may take to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept per child (the reader keeps draining past this so the child never blocks).
const MAX_LOG_LINES: usize = 400_000;

/// A running edgefwd, started on `127.0.0.1:0` with `--metrics 127.0.0.1:0`; killed on drop.
pub(crate) struct Fwd {
    pub(crate) child: Child,
    pub(crate) listen: SocketAddr,
    pub(crate) metrics: SocketAddr,
    /// Every stderr line so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Fwd {
    /// Starts edgefwd in front of `upstream`, with `args` added to its command line. The study is about
    /// the ring path, so unless `args` choose a `--splice` mode it is `off` (the default `auto` would move
    /// a stalled or bulk stream to pipes half-way through a figure).
    pub(crate) fn start(upstream: SocketAddr, args: &[String]) -> R<Fwd> {
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
                    listen = listen.or_else(|| listen_addr(&line));
                    metrics = metrics.or_else(|| metrics_addr(&line));
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn scrape(&self) -> R<Sample> {
        Sample::scrape(self.metrics)
    }

    /// The descriptor numbers the child holds now, sorted.
    pub(crate) fn fds(&self) -> R<Vec<u64>> {
        procfs::fd_numbers(self.pid()).ctx("read /proc/PID/fd of edgefwd")
    }

    /// Sets the running child's RLIMIT_NOFILE, soft and hard, with prlimit(2). Done after start so the
    /// limit can be the descriptors it holds now plus an exact number of spares.
    pub(crate) fn set_nofile(&self, limit: u64) -> R<()> {
        nofile::set_for(self.pid(), limit).ctx(&format!("prlimit(edgefwd, RLIMIT_NOFILE, {limit})"))
    }

    pub(crate) fn signal(&self, signal: libc::c_int) {
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
pub(crate) fn die_with_parent(cmd: &mut Command) {
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
pub(crate) fn start_fwd(opts: &Options, upstream: SocketAddr, args: &[String]) -> R<Fwd> {
    let fwd = Fwd::start(upstream, args)?;
    if let Some(cpu) = opts.fwd_cpu {
        let pid = libc::pid_t::try_from(fwd.pid()).ctx("edgefwd pid")?;
        cpu::pin(pid, &[cpu]).ctx(&format!("sched_setaffinity({pid}, [{cpu}])"))?;
    }
    Ok(fwd)
}

/// A log line without env_logger's `[timestamp ` prefix: `TRACE edgefwd::datapath::pump] conn=1 ...`.
pub(crate) fn strip_timestamp(line: &str) -> String {
    match line.strip_prefix('[').and_then(|rest| rest.split_once(' ')) {
        Some((_, rest)) => rest.to_string(),
        None => line.to_string(),
    }
}
