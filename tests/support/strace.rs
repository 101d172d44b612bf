//! The summary table `strace -c` prints when it detaches.

/// `(syscall, calls)` for each row of a `strace -c` table
/// (`% time  seconds  usecs/call  calls  [errors]  syscall`), without the `total` row.
pub fn parse_summary(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 5 || cols[0].parse::<f64>().is_err() {
                return None;
            }
            let name = *cols.last()?;
            (name != "total").then_some(())?;
            Some((name.to_string(), cols[3].parse().ok()?))
        })
        .collect()
}
