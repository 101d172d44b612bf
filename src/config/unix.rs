//! Unix domain socket addresses as a route's `listen` gives them: `unix:/path` (a file in the file
//! system, created with the route's `unix_mode`) or `unix:@name` (Linux's abstract namespace: no file,
//! gone with the last descriptor). Parsing only; binding is `datapath::unix`'s.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The prefix that tells a Unix address from `IP:PORT`.
pub const PREFIX: &str = "unix:";

/// Longest name `sun_path` holds (108 bytes on Linux, less the NUL a path ends with).
const MAX_NAME: usize = 107;

/// Where a Unix stream socket listens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnixAddr {
    /// A socket file: `unix:/run/app.sock` (relative paths are taken from the working directory).
    Path(PathBuf),
    /// An abstract name, without the leading NUL the kernel stores: `unix:@app`.
    Abstract(String),
}

impl UnixAddr {
    /// `text` names a Unix address (it starts with `unix:`), well formed or not.
    pub fn is_unix(text: &str) -> bool {
        text.starts_with(PREFIX)
    }
}

impl FromStr for UnixAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<UnixAddr, String> {
        let Some(rest) = text.strip_prefix(PREFIX) else {
            return Err(format!(
                "invalid Unix address '{text}': expected unix:/PATH or unix:@NAME"
            ));
        };
        let (addr, name) = match rest.strip_prefix('@') {
            Some(name) => (UnixAddr::Abstract(name.to_string()), name),
            None => (UnixAddr::Path(PathBuf::from(rest)), rest),
        };
        if name.is_empty() || name.contains('\0') {
            return Err(format!(
                "invalid Unix address '{text}': expected unix:/PATH or unix:@NAME"
            ));
        }
        if name.len() > MAX_NAME {
            return Err(format!(
                "invalid Unix address '{text}': longer than {MAX_NAME} bytes"
            ));
        }
        if cfg!(not(target_os = "linux")) && matches!(addr, UnixAddr::Abstract(_)) {
            return Err(format!(
                "invalid Unix address '{text}': abstract names exist on Linux only"
            ));
        }
        Ok(addr)
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(path) => write!(f, "{PREFIX}{}", path.display()),
            UnixAddr::Abstract(name) => write!(f, "{PREFIX}@{name}"),
        }
    }
}

/// Parses a `unix_mode` value: octal permission bits, e.g. `660` or `0660`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| {
            format!("invalid unix mode '{text}': expected octal permission bits, e.g. 0660")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_paths_and_abstract_names_parse_and_print_back() {
        for text in ["unix:/run/app.sock", "unix:rel.sock", "unix:@app"] {
            let addr: UnixAddr = text.parse().expect(text);
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(
            "unix:/a".parse::<UnixAddr>(),
            Ok(UnixAddr::Path(PathBuf::from("/a")))
        );
        assert_eq!(
            "unix:@a".parse::<UnixAddr>(),
            Ok(UnixAddr::Abstract("a".into()))
        );
    }

    #[test]
    fn test_bad_addresses_are_refused_by_name() {
        for text in ["unix:", "unix:@", "127.0.0.1:80", "unix:/a\0b"] {
            let err = text.parse::<UnixAddr>().expect_err(text);
            assert!(err.contains("invalid Unix address"), "{err}");
        }
        let long = format!("unix:/{}", "x".repeat(200));
        assert!(long.parse::<UnixAddr>().is_err());
    }

    #[test]
    fn test_modes_are_octal() {
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert!(parse_mode("888").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("rw").is_err());
    }
}
