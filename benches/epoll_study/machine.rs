//! The machine around the run: the header that says where figures came from, CPU pinning, the fd limit.

use std::io;
use std::process::{Command, Stdio};

use crate::cli::Options;
use crate::R;

/// The machine and command, so a reader of the output can tell where the figures came from.
pub(crate) fn print_header(opts: &Options, nofile: u64) {
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
pub(crate) fn pin(pid: libc::pid_t, cpus: &[usize]) -> R<()> {
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
pub(crate) fn pin_self() -> R<usize> {
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
pub(crate) fn raise_nofile_limit() -> R<u64> {
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
