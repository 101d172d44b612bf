//! The syntaxes of sizes and durations: one scaled-number parser ([`parse_scaled`]) and the bounded
//! flavours the settings take (timeouts, keepalive, buffer and pipe sizes).

use std::time::Duration;

/// Parses a timeout that must be positive: a zero `connect_timeout`, `fin_timeout`, `health_timeout`
/// or `header_timeout` would fail every connection at once rather than mean "off".
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("invalid timeout '{text}': must be more than zero")),
        d => Ok(d),
    }
}

/// Parses a TCP keepalive idle time: the kernel takes whole seconds from 1 to 32767 (TCP_KEEPIDLE), and
/// refuses anything else on every socket, which would fail every connection.
pub fn parse_keepalive(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.subsec_nanos() != 0 || !(1..=32767).contains(&d.as_secs()) {
        return Err(format!(
            "invalid keepalive '{text}': must be whole seconds from 1s to 32767s"
        ));
    }
    Ok(d)
}

/// Parses a byte size: `4096`, `16k`, `64K`, `1m`, `64KiB`, `1MB` (all multiples are binary).
fn parse_size(text: &str) -> Result<usize, String> {
    let expected = "expected a number with an optional k, m or g suffix (e.g. 16k)";
    let bytes = parse_scaled(text, "size", expected, |unit| {
        match unit.to_ascii_lowercase().as_str() {
            "" | "b" => Some(1),
            "k" | "kb" | "kib" => Some(1 << 10),
            "m" | "mb" | "mib" => Some(1 << 20),
            "g" | "gb" | "gib" => Some(1 << 30),
            _ => None,
        }
    })?;
    usize::try_from(bytes).map_err(|_| format!("invalid size '{text}': too large"))
}

/// Parses a duration: `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = "expected a number with a unit ms, s, m or h (e.g. 5s, 500ms)";
    let millis = parse_scaled(text, "duration", expected, |unit| match unit {
        "ms" => Some(1),
        "" | "s" => Some(1_000),
        "m" => Some(60_000),
        "h" => Some(3_600_000),
        _ => None,
    })?;
    Ok(Duration::from_millis(millis))
}

/// The one syntax of sizes and durations: a whole number, then a unit that `multiple_of` knows (the
/// empty unit included), times the unit's multiple. `what` and `expected` word the error.
fn parse_scaled(
    text: &str,
    what: &str,
    expected: &str,
    multiple_of: fn(&str) -> Option<u64>,
) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    let bad = || format!("invalid {what} '{text}': {expected}");
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let multiple = multiple_of(unit).ok_or_else(bad)?;
    number
        .checked_mul(multiple)
        .ok_or_else(|| format!("invalid {what} '{text}': too large"))
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

/// Parses a `--pipe-size` and checks it is one the kernel can grant (a page to 64 MiB; above
/// `/proc/sys/fs/pipe-max-size` only a privileged process gets it, and the others keep what the kernel gives).
pub fn parse_pipe_size(text: &str) -> Result<usize, String> {
    let size = parse_size(text)?;
    if !(4096..=(64 << 20)).contains(&size) {
        return Err(format!(
            "invalid pipe size '{text}': must be between 4k and 64m"
        ));
    }
    Ok(size)
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
    fn test_timeouts_and_keepalive_bounds() {
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("0ms").is_err());
        assert_eq!(parse_keepalive("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_keepalive("2m"), Ok(Duration::from_secs(120)));
        for bad in ["0", "500ms", "1500ms", "10h"] {
            let err = parse_keepalive(bad).expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }
}
