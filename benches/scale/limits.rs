//! Raising the fd limit as far as the largest size needs. Each idle pair takes two fds in edgefwd
//! and two in the bench (its client and its echo backend), so 100k pairs need ~200k per process,
//! ten times the usual hard limit. Raising a hard limit needs root with `CAP_SYS_RESOURCE` (and
//! `fs.nr_open` caps it); where that fails the bench says so and skips the sizes that do not fit.

use std::path::Path;

use crate::support::nofile;
use crate::sys::raise_nofile_limit;
use crate::util::BenchResult;

/// Raises RLIMIT_NOFILE (soft and hard) to `want` when the hard limit is lower and this process may
/// (root), raising fs.nr_open first if it caps it; otherwise the soft limit goes to the hard one.
/// Returns the limit and a note of what was raised, for the report header.
pub fn raise_nofile_to(want: u64) -> BenchResult<(u64, String)> {
    let current = raise_nofile_limit()?;
    if current >= want {
        return Ok((current, String::new()));
    }
    let nr_open_path = Path::new("/proc/sys/fs/nr_open");
    let nr_open: u64 = std::fs::read_to_string(nr_open_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut note = format!(" (raised from {current})");
    if nr_open < want && std::fs::write(nr_open_path, want.to_string()).is_ok() {
        note.push_str(&format!("; fs.nr_open raised from {nr_open} to {want}"));
    }
    if let (got, Some(why)) = nofile::raise_towards(want) {
        eprintln!(
            "scale: {why} (raising the hard limit needs root with CAP_SYS_RESOURCE); sizes that do not fit are skipped"
        );
        return Ok((got, format!(" (hard limit; {why})")));
    }
    Ok((want, note))
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/scale.rs
mod tests {
    use super::*;

    /// The limit it reports is the one the process has, whether raising was allowed or not.
    #[test]
    fn test_raise_nofile_to_reports_the_limit_it_got() {
        let (current, note) = raise_nofile_to(1).expect("getrlimit");
        assert!(current >= 1 && note.is_empty(), "{current} {note:?}");
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if current >= nr_open {
            // One more would mean changing fs.nr_open for the whole machine: not from a test.
            return;
        }
        let (got, note) = raise_nofile_to(current + 1).expect("setrlimit path");
        assert_eq!(raise_nofile_limit().expect("getrlimit"), got, "{note}");
        if got == current + 1 {
            assert!(note.contains(&format!("raised from {current}")), "{note}");
        } else {
            assert!(
                got == current && note.contains("cannot raise"),
                "{got} {note}"
            );
        }
    }
}
