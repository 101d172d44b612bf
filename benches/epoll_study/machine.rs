//! The machine around the run: the header that says where figures came from, and CPU pinning.

use std::process::{Command, Stdio};

use crate::cli::Options;
use crate::support::clock::Utc;
use crate::support::{cpu, procfs};
use crate::{Ctx, R};

/// The machine and command, so a reader of the output can tell where the figures came from.
pub(crate) fn print_header(opts: &Options, nofile: u64) {
    let cpu = procfs::cpu_model().unwrap_or_else(|| "unknown CPU".into());
    let kernel = procfs::kernel_release().unwrap_or_else(|| "unknown kernel".into());
    // SAFETY: sysconf has no preconditions. (available_parallelism would count only the CPUs this
    // process may use, which --pin has narrowed.)
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let load = procfs::load_average();
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

/// `--pin`: this process (and every thread it starts later) leaves the first allowed CPU to edgefwd;
/// returns that CPU.
pub(crate) fn pin_self() -> R<usize> {
    let cpus = cpu::allowed_cpus().ctx("sched_getaffinity")?;
    if cpus.len() < 2 {
        return Err("--pin needs at least two CPUs".into());
    }
    cpu::pin(0, &cpus[1..]).ctx("sched_setaffinity (this process)")?;
    Ok(cpus[0])
}

/// `YYYY-MM-DD HH:MM` in UTC.
fn utc_now() -> String {
    let now = Utc::now();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        now.year, now.month, now.day, now.hour, now.minute
    )
}
