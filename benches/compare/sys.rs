//! Linux specifics: reading a process's CPU time and memory from /proc, CPU pinning,
//! RLIMIT_NOFILE, and a description of the machine for the report.
//!
//! Everything is measured from the outside (/proc of the forwarder's pid), so the same
//! numbers come out for edgefwd, the tokio baselines and any `--against` peer.

use std::collections::HashMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::support::procfs::{self, status_field};
use crate::support::{cpu, nofile};
use crate::util::{fail, BenchResult, Context};

/// Counters of the whole machine's processes at one instant, split into the forwarder
/// (its process and any children, for forking `--against` peers), the bench itself, and
/// everything else. Deltas of two snapshots around a scenario give each one's cost.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Forwarder utime+stime (+ reaped children's), seconds; 0 without a forwarder.
    pub fwd_cpu_s: f64,
    /// The user-space part of `fwd_cpu_s` (the rest is kernel: socket I/O, epoll).
    pub fwd_user_s: f64,
    /// Voluntary context switches of all forwarder threads: each is a thread going to
    /// sleep (usually in epoll_wait), i.e. roughly one wakeup.
    pub fwd_wakeups: u64,
    /// The bench process's own utime+stime (load generator and backends).
    pub bench_cpu_s: f64,
    /// utime+stime of every other user-space process, by pid: to name the worst one, and to
    /// count foreign load process by process. Kernel threads are left out: ksoftirqd and the
    /// kworkers mostly do the benchmark's own network work.
    pub others: HashMap<u32, f64>,
    /// user+nice+system time of the whole machine (/proc/stat): with the forwarder's and
    /// the bench's own time taken out, what is left is load that does not belong to the
    /// benchmark, including processes that started and ended inside the window.
    pub machine_s: f64,
    /// Busy time of the whole machine, interrupts included ([`CpuTicks::busy`]): the cost of
    /// the work wherever the kernel did it.
    pub machine_busy_s: f64,
    pub at: Instant,
}

/// One row of the process table.
struct ProcRow {
    pid: u32,
    ppid: u32,
    /// utime + stime (own threads only).
    own_s: f64,
    /// utime alone (own threads), plus cutime.
    user_s: f64,
    /// cutime + cstime (children already reaped).
    reaped_s: f64,
}

impl Snapshot {
    /// Scans /proc once. Fails if the forwarder `fwd` is gone.
    pub fn take(fwd: Option<u32>) -> BenchResult<Snapshot> {
        let table = process_table();
        let me = std::process::id();
        let fwd_tree = match fwd {
            Some(pid) => tree(pid, &table)?,
            None => Vec::new(),
        };
        let machine = machine_ticks()?;
        let mut snap = Snapshot {
            fwd_cpu_s: 0.0,
            fwd_user_s: 0.0,
            fwd_wakeups: 0,
            bench_cpu_s: 0.0,
            others: HashMap::new(),
            machine_s: ticks_to_seconds(machine.task()),
            machine_busy_s: ticks_to_seconds(machine.busy()),
            at: Instant::now(),
        };
        for row in &table {
            if fwd_tree.contains(&row.pid) {
                snap.fwd_cpu_s += row.own_s + row.reaped_s;
                snap.fwd_user_s += row.user_s;
                snap.fwd_wakeups += voluntary_ctxsw(row.pid);
            } else if row.pid == me || row.ppid == me {
                // The bench's other children (the http scenario's nginx, and wrk once reaped)
                // are its load generator and backend.
                snap.bench_cpu_s += row.own_s + row.reaped_s;
            } else if !row.is_kernel_thread() {
                snap.others.insert(row.pid, row.own_s);
            }
        }
        Ok(snap)
    }

    /// The other process that used the most CPU since `before`: (command name, seconds).
    pub fn top_other_since(&self, before: &Snapshot) -> Option<(String, f64)> {
        let (pid, secs) = self
            .others
            .iter()
            .map(|(pid, now)| (*pid, now - before.others.get(pid).copied().unwrap_or(0.0)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        Some((format!("{} (pid {pid})", comm.trim()), secs))
    }

    /// CPU seconds used since `before` by processes that are not the benchmark's: the larger of
    /// two estimates that can each only fall short. The machine's task time less the
    /// forwarder's and the bench's catches processes that started and ended inside the window
    /// (a compiler's short jobs), but falls short by the softirq time the kernel ran inside the
    /// benchmark's own system calls: that is charged to their stime, and to `softirq`, not
    /// `system`, in /proc/stat (on loopback it is most of the network work). The sum over the
    /// other processes alive at the end, counted from 0 for those that started inside the
    /// window, has no such bias but misses those that exited.
    pub fn others_since(&self, before: &Snapshot) -> f64 {
        let all = self.machine_s - before.machine_s;
        let ours = (self.fwd_cpu_s - before.fwd_cpu_s) + (self.bench_cpu_s - before.bench_cpu_s);
        let by_process: f64 = self
            .others
            .iter()
            .map(|(pid, now)| (now - before.others.get(pid).copied().unwrap_or(0.0)).max(0.0))
            .sum();
        (all - ours).max(by_process).max(0.0)
    }

    /// CPU seconds the whole machine spent on the benchmark since `before`: every busy tick of
    /// every CPU (processes, kernel threads, hard and soft interrupts) minus what unrelated
    /// processes used ([`Snapshot::others_since`]), so a build next to the benchmark is not
    /// charged to the forwarder. That estimate of foreign load is task time only, so interrupts
    /// are all counted as the benchmark's own: on loopback they are.
    pub fn machine_work_since(&self, before: &Snapshot) -> f64 {
        let busy = self.machine_busy_s - before.machine_busy_s;
        (busy - self.others_since(before)).max(0.0)
    }
}

/// The time columns of one `cpu` line of /proc/stat, in clock ticks (proc(5)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    /// Time a hypervisor ran something else while this CPU wanted to run: not work done here.
    pub steal: u64,
}

impl CpuTicks {
    /// Parses `cpu  1 2 3 ...` (the aggregate line) or `cpuN 1 2 3 ...`. Kernels before 2.6.11
    /// lack `steal`, so a short line reads it as 0; `guest` and `guest_nice` are ignored because
    /// the kernel already counts them in `user` and `nice`. None when it is not a `cpu` line or
    /// a column is not a number.
    pub fn parse(line: &str) -> Option<CpuTicks> {
        let mut cols = line.split_whitespace();
        if !cols.next()?.starts_with("cpu") {
            return None;
        }
        let nums: Vec<u64> = cols.map(str::parse).collect::<Result<_, _>>().ok()?;
        let at = |i: usize| nums.get(i).copied();
        Some(CpuTicks {
            user: at(0)?,
            nice: at(1)?,
            system: at(2)?,
            idle: at(3)?,
            iowait: at(4)?,
            irq: at(5)?,
            softirq: at(6)?,
            steal: at(7).unwrap_or(0),
        })
    }

    /// Time spent running tasks, user space and kernel (what processes' utime+stime add up to).
    pub fn task(&self) -> u64 {
        self.user + self.nice + self.system
    }

    /// Every kind of work done on the CPU: tasks plus hard and soft interrupts. Idle and iowait
    /// are waiting, steal is another guest's work. The network stack's receive path runs in
    /// softirq, charged to no process, which is why whole-machine accounting reads this.
    pub fn busy(&self) -> u64 {
        self.task() + self.irq + self.softirq
    }
}

/// The `cpu` line named `name` (`cpu` for the aggregate of all CPUs, `cpu0`, ...) of /proc/stat.
pub fn cpu_line(stat: &str, name: &str) -> BenchResult<CpuTicks> {
    let Some(line) = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
    else {
        return fail(format!("no {name} line in /proc/stat"));
    };
    match CpuTicks::parse(line) {
        Some(t) => Ok(t),
        None => fail(format!("cannot parse /proc/stat line {line:?}")),
    }
}

/// The aggregate `cpu` line of /proc/stat now: every CPU of the machine.
fn machine_ticks() -> BenchResult<CpuTicks> {
    let stat = fs::read_to_string("/proc/stat").ctx("read /proc/stat")?;
    cpu_line(&stat, "cpu")
}

fn ticks_to_seconds(ticks: u64) -> f64 {
    ticks as f64 / clock_ticks_per_second()
}

/// Every process in /proc (threads are not listed there, only thread-group leaders,
/// whose stat times cover all their threads).
fn process_table() -> Vec<ProcRow> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let st = parse_stat(&stat)?;
            Some(ProcRow {
                pid,
                ppid: st.ppid,
                own_s: st.utime + st.stime,
                user_s: st.utime + st.cutime,
                reaped_s: st.cutime + st.cstime,
            })
        })
        .collect()
}

impl ProcRow {
    /// Kernel threads are kthreadd (pid 2) and its children.
    fn is_kernel_thread(&self) -> bool {
        self.pid == 2 || self.ppid == 2
    }
}

/// `root` and all its descendants; fails when `root` is not running.
fn tree(root: u32, table: &[ProcRow]) -> BenchResult<Vec<u32>> {
    if !table.iter().any(|r| r.pid == root) {
        return fail(format!(
            "process {root} is gone (has the forwarder exited?)"
        ));
    }
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        pids.extend(table.iter().filter(|r| r.ppid == parent).map(|r| r.pid));
        i += 1;
    }
    Ok(pids)
}

/// `root` and its descendants, read now.
fn tree_now(root: u32) -> BenchResult<Vec<u32>> {
    tree(root, &process_table())
}

/// The fields of /proc/<pid>/stat the harness uses; times in seconds.
struct Stat {
    ppid: u32,
    utime: f64,
    stime: f64,
    cutime: f64,
    cstime: f64,
}

/// Parses a /proc/<pid>/stat line. Fields are counted after the last `)` because the
/// command name may contain spaces or parentheses.
fn parse_stat(stat: &str) -> Option<Stat> {
    let close = stat.rfind(')')?;
    // Field 3 (state) is index 0 after the ')': ppid is field 4, utime 14, stime 15,
    // cutime 16, cstime 17 (proc(5)).
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let hz = clock_ticks_per_second();
    let secs = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| v.max(0) as f64 / hz)
    };
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        utime: secs(11)?,
        stime: secs(12)?,
        cutime: secs(13)?,
        cstime: secs(14)?,
    })
}

/// `sysconf(_SC_CLK_TCK)`, the unit of the times in /proc/<pid>/stat (100 on Linux).
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Sums `voluntary_ctxt_switches` over /proc/<pid>/task/*: the per-process file only
/// covers the main thread, and tokio's multi-thread runtime works on its worker threads.
fn voluntary_ctxsw(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0);
    }
    total
}

/// Busy time ([`CpuTicks::busy`]: softirq included) of `cpus` so far, in seconds, from
/// /proc/stat. With the forwarder pinned alone on its CPU this also counts the kernel's softirq
/// network work done on its behalf, which the kernel does not charge to the process's
/// utime/stime.
pub fn cpus_busy_seconds(cpus: &[usize]) -> BenchResult<f64> {
    let stat = fs::read_to_string("/proc/stat").ctx("read /proc/stat")?;
    let mut ticks = 0;
    for &cpu in cpus {
        ticks += cpu_line(&stat, &format!("cpu{cpu}"))?.busy();
    }
    Ok(ticks_to_seconds(ticks))
}

/// Resident set size (VmRSS) of `pid` and its descendants, in bytes.
pub fn rss_bytes(pid: u32) -> BenchResult<u64> {
    let mut total = 0;
    for p in tree_now(pid)? {
        match fs::read_to_string(format!("/proc/{p}/status")) {
            Ok(status) => total += status_field(&status, "VmRSS:").unwrap_or(0) * 1024,
            // A child of a forking peer may exit between the scan and the read.
            Err(_) if p != pid => {}
            Err(e) => {
                return Err(e)
                    .with_ctx(|| format!("read /proc/{p}/status (has the forwarder exited?)"))
            }
        }
    }
    Ok(total)
}

/// Open file descriptors of `pid` and its descendants. A forwarder holds two per live
/// pair, so this tells when all idle pairs are really open, and later really closed.
pub fn fd_count(pid: u32) -> BenchResult<usize> {
    let mut total = 0;
    for p in tree_now(pid)? {
        match procfs::fd_count(p) {
            Ok(count) => total += count,
            // A child of a forking peer may exit between the scan and the listing.
            Err(_) if p != pid => {}
            Err(e) => {
                return Err(e).with_ctx(|| format!("list /proc/{p}/fd (has the forwarder exited?)"))
            }
        }
    }
    Ok(total)
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(
    timeout: Duration,
    mut cond: impl FnMut() -> BenchResult<bool>,
) -> BenchResult<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit and returns the new soft
/// limit. Children inherit it, so the forwarders get the same head-room for the idle test.
pub fn raise_nofile_limit() -> BenchResult<u64> {
    nofile::raise_to_hard().ctx("raise RLIMIT_NOFILE to its hard limit")
}

/// The CPUs this process may run on, in order (sched_getaffinity; all of them if it fails).
pub fn allowed_cpus() -> Vec<usize> {
    cpu::allowed_cpus().unwrap_or_else(|_| {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        (0..n).collect()
    })
}

/// Pins the calling thread (and the threads and children it creates later) to `cpus`.
/// Async-signal-safe, so it may run in `pre_exec` between fork and exec.
pub fn pin_current_to(cpus: &[usize]) -> std::io::Result<()> {
    cpu::pin(0, cpus)
}

/// Waits until `fd` is readable or `timeout` passes (poll(2)); used to accept with a
/// deadline on a blocking std listener without spinning.
pub fn wait_readable(fd: &impl AsRawFd, timeout: Duration) -> BenchResult<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).ctx("poll");
        }
    }
}

/// What the report says about the machine: the numbers only mean something next to it.
#[derive(Debug, Clone)]
pub struct MachineInfo {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub nofile_limit: u64,
}

impl MachineInfo {
    pub fn collect(nofile_limit: u64) -> MachineInfo {
        let cpu_model = procfs::cpu_model().unwrap_or_else(|| "unknown".to_string());
        let kernel = procfs::kernel_release().unwrap_or_else(|| "unknown".to_string());
        MachineInfo {
            nproc: allowed_cpus().len(),
            cpu_model,
            kernel,
            nofile_limit,
        }
    }
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/compare.rs
mod tests {
    use super::*;

    const STAT: &str = "cpu  4705 150 1120 16250 520 30 95 7 11 0
cpu0 2350 75 560 8125 260 15 45 3 11 0
cpu1 2355 75 560 8125 260 15 50 4 0 0
intr 1234 0 0
ctxt 5678
";

    /// Every column lands in its field; busy leaves out idle, iowait and steal (and guest, which
    /// is already in user); each CPU's line is found by its exact name.
    #[test]
    fn test_cpu_lines_parse_into_busy_and_task_time() {
        let all = cpu_line(STAT, "cpu").expect("aggregate line");
        assert_eq!(
            all,
            CpuTicks {
                user: 4705,
                nice: 150,
                system: 1120,
                idle: 16250,
                iowait: 520,
                irq: 30,
                softirq: 95,
                steal: 7,
            }
        );
        assert_eq!(all.task(), 4705 + 150 + 1120);
        assert_eq!(all.busy(), 4705 + 150 + 1120 + 30 + 95);
        let cpu1 = cpu_line(STAT, "cpu1").expect("cpu1 line");
        assert_eq!((cpu1.user, cpu1.softirq, cpu1.steal), (2355, 50, 4));
        assert_eq!(
            cpu_line(STAT, "cpu0").expect("cpu0").busy() + cpu1.busy(),
            all.busy()
        );
    }

    /// An old kernel's line without steal parses; other lines, a missing CPU and a column that
    /// is not a number do not.
    #[test]
    fn test_bad_or_missing_cpu_lines_are_errors() {
        let old = CpuTicks::parse("cpu 1 2 3 4 5 6 7").expect("7 columns");
        assert_eq!((old.busy(), old.steal), (1 + 2 + 3 + 6 + 7, 0));
        assert_eq!(CpuTicks::parse("cpu 1 2 3 4 5 6"), None, "no softirq");
        assert_eq!(CpuTicks::parse("intr 1 2 3 4 5 6 7 8"), None);
        assert_eq!(CpuTicks::parse("cpu 1 2 x 4 5 6 7 8"), None);
        let err = cpu_line(STAT, "cpu2").expect_err("no such CPU").0;
        assert_eq!(err, "no cpu2 line in /proc/stat");
        let err = cpu_line("cpu 1 2\n", "cpu").expect_err("too short").0;
        assert!(err.starts_with("cannot parse /proc/stat line"), "{err}");
    }

    /// kthreadd and its children are kernel threads; init and everything else are not.
    #[test]
    fn test_kernel_threads_are_kthreadd_and_its_children() {
        let row = |pid, ppid| ProcRow {
            pid,
            ppid,
            own_s: 0.0,
            user_s: 0.0,
            reaped_s: 0.0,
        };
        assert!(row(2, 0).is_kernel_thread());
        assert!(row(15, 2).is_kernel_thread());
        assert!(!row(1, 0).is_kernel_thread());
        assert!(!row(300, 1).is_kernel_thread());
    }

    fn snapshot(fwd: f64, bench: f64, other: f64, task: f64, busy: f64) -> Snapshot {
        with_others(fwd, bench, HashMap::from([(1, other)]), task, busy)
    }

    fn with_others(
        fwd: f64,
        bench: f64,
        others: HashMap<u32, f64>,
        task: f64,
        busy: f64,
    ) -> Snapshot {
        Snapshot {
            fwd_cpu_s: fwd,
            fwd_user_s: 0.0,
            fwd_wakeups: 0,
            bench_cpu_s: bench,
            others,
            machine_s: task,
            machine_busy_s: busy,
            at: Instant::now(),
        }
    }

    /// Over a window the machine's work is its busy time (interrupts included) less the task time
    /// nobody in the benchmark accounts for; foreign load that exceeds it leaves zero, not a
    /// negative cost.
    #[test]
    fn test_machine_work_over_a_window_leaves_out_foreign_load() {
        let before = snapshot(10.0, 20.0, 5.0, 100.0, 110.0);
        // 3 s busy, of which 0.5 s softirq; forwarder 1 s, bench 1.5 s, so 0 s foreign.
        let quiet = snapshot(11.0, 21.5, 5.0, 102.5, 113.0);
        assert!((quiet.others_since(&before) - 0.0).abs() < 1e-9);
        assert!((quiet.machine_work_since(&before) - 3.0).abs() < 1e-9);
        // The same plus a compiler's 2 s: the machine was busier, the benchmark's work is the same.
        let busy = snapshot(11.0, 21.5, 7.0, 104.5, 115.0);
        assert!((busy.others_since(&before) - 2.0).abs() < 1e-9);
        assert!((busy.machine_work_since(&before) - 3.0).abs() < 1e-9);
        let odd = snapshot(11.0, 21.5, 9.0, 110.0, 111.0);
        assert_eq!(odd.machine_work_since(&before), 0.0);
    }

    /// Foreign load is the larger of its two estimates. Softirq run inside the forwarder's system
    /// calls is in its stime but not in the machine's task time, which makes the first estimate
    /// short; a compiler job that exited inside the window is missing from the second.
    #[test]
    fn test_foreign_load_takes_the_larger_estimate() {
        let before = with_others(
            10.0,
            20.0,
            HashMap::from([(1, 5.0), (2, 3.0)]),
            100.0,
            110.0,
        );
        // Forwarder 1 s, of which 0.5 s softirq; bench 1.5 s; pid 1 used 2 s: the machine's task
        // time grew by 0.5 + 1.5 + 2 = 4 s and its busy time by 4.5 s.
        let softirq = with_others(
            11.0,
            21.5,
            HashMap::from([(1, 7.0), (2, 3.0)]),
            104.0,
            114.5,
        );
        assert!((softirq.others_since(&before) - 2.0).abs() < 1e-9);
        assert!((softirq.machine_work_since(&before) - 2.5).abs() < 1e-9);
        // pid 2 used 1 s and exited, pid 3 started and used 0.25 s; no softirq.
        let exited = with_others(
            11.0,
            21.5,
            HashMap::from([(1, 5.0), (3, 0.25)]),
            103.75,
            113.75,
        );
        assert!((exited.others_since(&before) - 1.25).abs() < 1e-9);
        assert!((exited.machine_work_since(&before) - 2.5).abs() < 1e-9);
    }
}
