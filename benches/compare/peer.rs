//! The things being compared ("peers") and how each is started as a child process.
//!
//! Every forwarder runs as its own process so its CPU time and RSS can be read from
//! /proc/<pid>. Children are killed when their guard drops, and also get
//! PR_SET_PDEATHSIG(SIGKILL), so they die with the bench even if it is killed hard.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::logs::listen_addr;
use crate::support::procfs::port_is_listening;
use crate::sys::{pin_current_to, wait_until};
use crate::tokio_fwd::Flavor;
use crate::util::{fail, BenchResult, Context};

/// How long a forwarder may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of a child's stderr kept for error messages.
const TAIL_LINES: usize = 20;

/// What a peer is.
#[derive(Debug, Clone)]
pub enum PeerKind {
    /// No forwarder: the load generator talks to the backend. The upper limit.
    Direct,
    /// The edgefwd binary under test.
    Edgefwd(PathBuf),
    /// The tokio baseline, this bench binary re-executed with `--role`.
    Tokio(Flavor),
    /// `--against NAME='CMD {listen} {upstream}'`, run through `sh -c "exec CMD"`.
    External(String),
}

/// A named peer, as it appears in the table.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub kind: PeerKind,
}

impl Peer {
    /// Whether there is a forwarder process whose CPU and memory can be measured.
    pub fn has_process(&self) -> bool {
        !matches!(self.kind, PeerKind::Direct)
    }
}

/// How forwarders are launched in this run.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Ring/copy buffer size per direction, the same for every forwarder.
    pub buffer_size: usize,
    /// CPUs the forwarder is pinned to (None: no pinning).
    pub forwarder_cpus: Option<Vec<usize>>,
    /// edgefwd's `--max-connections`: the idle scenario's pair count (at least 1000). Its default budgets pipe fds
    /// under `--splice auto` (2.5 per pair, after HAProxy), which would stop it short of the pairs
    /// the fd limit allows and the other peers hold; no other scenario comes near either figure.
    pub max_connections: usize,
    /// The edgefwd binary under test, for an `--against` command's `{edgefwd}`.
    pub edgefwd_bin: PathBuf,
}

/// A started peer: where the load generator connects, and the process (if any).
pub struct Running {
    pub addr: SocketAddr,
    pub child: Option<ChildGuard>,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// Fails with the child's exit status and last stderr lines if it is gone.
    pub fn check_alive(&mut self) -> BenchResult<()> {
        match self.child.as_mut() {
            Some(c) => c.check_alive(),
            None => Ok(()),
        }
    }
}

/// Owns a child process; kills and reaps it on drop.
pub struct ChildGuard {
    name: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the child wrote to stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    pub fn check_alive(&mut self) -> BenchResult<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => fail(format!(
                "{} exited ({status}); stderr: {}",
                self.name,
                self.stderr_tail()
            )),
            Err(e) => fail(format!("{}: wait: {e}", self.name)),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `peer` forwarding to `upstream` and waits until it accepts connections.
pub fn start(peer: &Peer, upstream: SocketAddr, launch: &Launch) -> BenchResult<Running> {
    match &peer.kind {
        PeerKind::Direct => Ok(Running {
            addr: upstream,
            child: None,
        }),
        PeerKind::Edgefwd(bin) => {
            let mut cmd = Command::new(bin);
            cmd.arg("--listen").arg("127.0.0.1:0");
            cmd.arg("--upstream").arg(upstream.to_string());
            cmd.arg("--buffer-size").arg(launch.buffer_size.to_string());
            cmd.arg("--max-connections")
                .arg(launch.max_connections.to_string());
            // Per-connection logs are DEBUG; keep them off whatever the user's RUST_LOG is,
            // or the run would measure logging.
            cmd.env("RUST_LOG", "info");
            spawn_announcing(&peer.name, cmd, launch)
        }
        PeerKind::Tokio(flavor) => {
            let exe = std::env::current_exe().ctx("locate the bench binary for --role")?;
            let mut cmd = Command::new(exe);
            cmd.arg("--role").arg(flavor.role_name());
            cmd.arg("--listen").arg("127.0.0.1:0");
            cmd.arg("--upstream").arg(upstream.to_string());
            cmd.arg("--buffer-size").arg(launch.buffer_size.to_string());
            spawn_announcing(&peer.name, cmd, launch)
        }
        PeerKind::External(template) => start_external(&peer.name, template, upstream, launch),
    }
}

/// Spawns a forwarder that prints `listening on ADDR` on stderr and returns that address.
fn spawn_announcing(name: &str, cmd: Command, launch: &Launch) -> BenchResult<Running> {
    let (mut guard, rx) = spawn(name, cmd, launch)?;
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(addr) => Ok(Running {
            addr,
            child: Some(guard),
        }),
        Err(_) => {
            let status = guard.check_alive().err().map(|e| e.0);
            fail(status.unwrap_or_else(|| {
                format!(
                    "{name} did not print 'listening on ADDR' within {START_TIMEOUT:?}; stderr: {}",
                    guard.stderr_tail()
                )
            }))
        }
    }
}

/// Starts an `--against` command with placeholders filled in and waits for its port.
fn start_external(
    name: &str,
    template: &str,
    upstream: SocketAddr,
    launch: &Launch,
) -> BenchResult<Running> {
    let port = free_port()?;
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let line = template
        .replace("{listen}", &listen.to_string())
        .replace("{listen_host}", "127.0.0.1")
        .replace("{listen_port}", &port.to_string())
        .replace("{upstream}", &upstream.to_string())
        .replace("{upstream_host}", &upstream.ip().to_string())
        .replace("{upstream_port}", &upstream.port().to_string())
        .replace(
            "{edgefwd}",
            &shell_quoted(&launch.edgefwd_bin.to_string_lossy()),
        );
    let mut cmd = Command::new("sh");
    // `exec` so that the pid we measure is the forwarder, not the shell.
    cmd.arg("-c").arg(format!("exec {line}"));
    let (mut guard, _rx) = spawn(name, cmd, launch)?;
    let up = wait_until(START_TIMEOUT, || {
        guard.check_alive()?;
        Ok(port_is_listening(port))
    })?;
    if !up {
        return fail(format!(
            "{name} did not listen on {listen} within {START_TIMEOUT:?} (command: {line}); stderr: {}",
            guard.stderr_tail()
        ));
    }
    Ok(Running {
        addr: listen,
        child: Some(guard),
    })
}

/// A port that was free a moment ago (bind to :0, read it, close). Racy by nature, but
/// only used for `--against` commands and nginx, which need the port on their command line.
pub fn free_port() -> BenchResult<u16> {
    let l = TcpListener::bind("127.0.0.1:0").ctx("find a free port")?;
    Ok(l.local_addr().ctx("free port local_addr")?.port())
}

/// Spawns `cmd` pinned (if asked) with its stderr drained by a thread. The channel gets
/// the address from the first `listening on ADDR` line.
fn spawn(
    name: &str,
    mut cmd: Command,
    launch: &Launch,
) -> BenchResult<(ChildGuard, mpsc::Receiver<SocketAddr>)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let cpus = launch.forwarder_cpus.clone();
    // SAFETY: the closure only makes async-signal-safe calls (sched_setaffinity, prctl)
    // and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(cpus) = &cpus {
                pin_current_to(cpus)?;
            }
            // Die with the bench even if it is SIGKILLed. Children are spawned from the
            // main thread only: PDEATHSIG fires when the spawning *thread* exits.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_ctx(|| format!("start {name}"))?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = mpsc::channel();
    if let Some(stderr) = child.stderr.take() {
        let tail = Arc::clone(&tail);
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-stderr"))
            .spawn(move || drain_stderr(stderr, &tail, &tx));
        if let Err(e) = spawned {
            let _ = child.kill();
            let _ = child.wait();
            return fail(format!("spawn stderr reader for {name}: {e}"));
        }
    }
    Ok((
        ChildGuard {
            name: name.to_string(),
            child,
            tail,
        },
        rx,
    ))
}

/// Reads the child's stderr until it closes, so the child never blocks on a full pipe.
fn drain_stderr(
    stderr: std::process::ChildStderr,
    tail: &Mutex<VecDeque<String>>,
    tx: &mpsc::Sender<SocketAddr>,
) {
    let mut announced = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if !announced {
            if let Some(addr) = listen_addr(&line) {
                announced = true;
                let _ = tx.send(addr);
            }
        }
        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

/// `text` as one word for `sh`: in single quotes, each `'` written as `'\''`.
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/compare.rs
mod tests {
    use super::*;

    /// `{edgefwd}` is one word for `sh` whatever the path holds (spaces, quotes).
    #[test]
    fn test_shell_quoted_survives_sh() {
        let path = "/tmp/a dir/it's edgefwd";
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s|' {}", shell_quoted(path)))
            .output()
            .expect("run sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{path}|"));
    }
}
