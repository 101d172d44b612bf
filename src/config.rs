//! Validated configuration, and the parsers for the value syntaxes the CLI accepts.
//!
//! Nothing here does I/O: `main.rs` turns flags into a [`Config`], resolving the upstream name once at
//! start, and the reactor only ever sees values that are already known to be good.

use std::net::SocketAddr;
use std::time::Duration;

/// Default ring size per direction. 64 KiB matches the default loopback socket buffers closely enough that
/// one `readv` usually empties the kernel's receive queue; see docs/architecture.md for the measurement.
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;

/// Everything the reactor needs to run one listener -> upstream route.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the listener binds (port 0 lets the kernel choose; the start line logs the real one).
    pub listen: SocketAddr,
    /// The upstream as the user wrote it, for log lines.
    pub upstream_name: String,
    /// The resolved upstream address new connections go to.
    pub upstream: SocketAddr,
    /// Capacity of each direction's ring buffer, in bytes.
    pub buffer_size: usize,
    /// Most pairs alive at once; past it the listener is left undrained.
    pub max_connections: usize,
    /// How long a non-blocking upstream connect may stay pending.
    pub connect_timeout: Duration,
    /// Close a pair with no traffic in either direction for this long; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Close a half-closed pair with no traffic for this long.
    pub fin_timeout: Duration,
    /// After SIGTERM/SIGINT, how long live pairs may finish before they are cut.
    pub shutdown_timeout: Duration,
    /// TCP_NODELAY on both sockets of a pair.
    pub nodelay: bool,
    /// TCP keepalive idle time on both sockets; `None` = off.
    pub keepalive: Option<Duration>,
    /// Listen backlog.
    pub backlog: i32,
    /// Where to serve Prometheus metrics; `None` = not served.
    pub metrics: Option<SocketAddr>,
    /// Log a line of counter deltas this often; `None` = never.
    pub stats_interval: Option<Duration>,
    /// Move bytes with splice(2) through pipes instead of the rings (Linux).
    pub splice: bool,
    /// Independent reactors, one thread each, sharing the listen address with SO_REUSEPORT.
    pub threads: usize,
    /// Never-used upstream connections each reactor keeps ready; 0 = off.
    pub prewarm: usize,
}

/// Parses a byte size: `4096`, `16k`, `64K`, `1m`, `64KiB`, `1MB` (all multiples are binary).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    let bad = || {
        format!(
            "invalid size '{text}': expected a number with an optional k, m or g suffix (e.g. 16k)"
        )
    };
    let number: usize = digits.parse().map_err(|_| bad())?;
    let multiplier: usize = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("invalid size '{text}': too large"))
}

/// Parses a duration: `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    let bad = || {
        format!("invalid duration '{text}': expected a number with a unit ms, s, m or h (e.g. 5s, 500ms)")
    };
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration '{text}': too large"))
}

/// Parses a buffer size and checks it is usable as a ring capacity.
pub fn parse_buffer_size(text: &str) -> Result<usize, String> {
    let size = parse_size(text)?;
    if !(1024..=(256 << 20)).contains(&size) {
        return Err(format!(
            "invalid buffer size '{text}': must be between 1k and 256m"
        ));
    }
    Ok(size)
}

/// The default connection limit for a process allowed `nofile` descriptors: each pair holds two, and a few
/// are kept back for the listener, epoll, the signal pipe, stdio and the accept-then-refuse path.
pub fn default_max_connections(nofile: u64) -> usize {
    const RESERVED_FDS: u64 = 32;
    let usable = nofile.saturating_sub(RESERVED_FDS) / 2;
    usable.clamp(1, 1 << 20) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_size_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16k"), Ok(16 * 1024));
        assert_eq!(parse_size("64K"), Ok(64 * 1024));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
    }

    #[test]
    fn test_size_rejects_garbage_and_names_it() {
        for bad in ["", "k", "12q", "-5", "1.5m", "99999999999999999999k"] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn test_buffer_size_bounds() {
        assert!(parse_buffer_size("512").is_err());
        assert!(parse_buffer_size("1g").is_err());
        assert_eq!(parse_buffer_size("16k"), Ok(16384));
    }

    #[test]
    fn test_duration_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn test_duration_rejects_garbage_and_names_it() {
        for bad in ["", "s", "5parsecs", "1.5s", "-1s", "5 s"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn test_default_max_connections_from_nofile() {
        assert_eq!(default_max_connections(1024), 496);
        assert_eq!(default_max_connections(10), 1);
        assert_eq!(default_max_connections(1 << 20), (1 << 20) / 2 - 16);
    }
}
