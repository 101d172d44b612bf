//! `strace -p` attached to the child, and its `-c` summary parsed.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self};
use std::time::{Duration, Instant};

use crate::fwd::die_with_parent;
use crate::{Ctx, R};

/// `strace -p PID` attached to edgefwd, writing to a temporary file; killed on drop.
pub(crate) struct Strace {
    pub(crate) child: Child,
    pub(crate) out: PathBuf,
}

impl Strace {
    /// Attaches with the given strace options and waits until strace says it is attached.
    pub(crate) fn attach(pid: u32, options: &[&str]) -> R<Strace> {
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
    pub(crate) fn finish(mut self) -> R<String> {
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

pub(crate) fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
