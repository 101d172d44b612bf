//! Readers of /proc: what a process holds (descriptors, memory, TCP sockets) and what the machine
//! is (CPU model, kernel, load), for test assertions and the headers of bench reports.

use std::collections::HashSet;
use std::fs;
use std::io;

/// The descriptor numbers `pid` holds now, sorted.
pub fn fd_numbers(pid: u32) -> io::Result<Vec<u64>> {
    let mut fds: Vec<u64> = fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    Ok(fds)
}

/// How many descriptors `pid` holds now (entries of /proc/PID/fd).
pub fn fd_count(pid: u32) -> io::Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The number of a `Name:   value [kB]` line of a /proc status file (`name` with its colon).
pub fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Resident set size of `pid` in KiB (VmRSS of /proc/PID/status; 0 for a kernel thread).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status_field(&status, "VmRSS:").unwrap_or(0))
}

/// One row of /proc/net/tcp or /proc/net/tcp6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRow {
    pub local_port: u16,
    pub remote_port: u16,
    /// The kernel's TCP state (`0x0A` LISTEN, `0x01` ESTABLISHED, `0x06` TIME_WAIT...).
    pub state: u8,
    /// Which timer is pending: 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero window probe.
    pub timer: u8,
    /// Clock ticks until that timer fires.
    pub timer_ticks: u64,
    /// The socket's inode, as in the `socket:[INODE]` links of /proc/PID/fd.
    pub inode: String,
}

/// The kernel's TCP state LISTEN in [`TcpRow::state`].
pub const TCP_LISTEN: u8 = 0x0A;

/// Every TCP socket of this network namespace, IPv4 and IPv6; a table that cannot be read (no
/// IPv6) adds nothing.
pub fn tcp_table() -> Vec<TcpRow> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(parse_tcp_row)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`, numbers in hex.
fn parse_tcp_row(line: &str) -> Option<TcpRow> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 {
        return None;
    }
    let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
    let (timer, when) = f[5].split_once(':')?;
    Some(TcpRow {
        local_port: port(f[1])?,
        remote_port: port(f[2])?,
        state: u8::from_str_radix(f[3], 16).ok()?,
        timer: u8::from_str_radix(timer, 16).ok()?,
        timer_ticks: u64::from_str_radix(when, 16).ok()?,
        inode: f[9].to_string(),
    })
}

/// The TCP sockets `pid` has open.
pub fn tcp_sockets_of(pid: u32) -> io::Result<Vec<TcpRow>> {
    let inodes: HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    Ok(tcp_table()
        .into_iter()
        .filter(|row| inodes.contains(&row.inode))
        .collect())
}

/// Whether some socket is in LISTEN state on `port`. Lets a harness wait for a server without
/// connecting to it: a probe connection would reach the backend and be mistaken for a measured one.
pub fn port_is_listening(port: u16) -> bool {
    tcp_table()
        .iter()
        .any(|row| row.local_port == port && row.state == TCP_LISTEN)
}

/// The CPU's model name from /proc/cpuinfo.
pub fn cpu_model() -> Option<String> {
    let text = fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg writes them; empty if unreadable.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
