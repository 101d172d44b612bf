//! The access log's two settings, `--access-log -|PATH` and `--log-format text|json` (also the file's
//! top-level `access_log` and `log_format`): where the lines go and how they are written. The lines
//! themselves and the writer thread are `observe::access_log`'s.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `-`: standard output (SIGUSR1 has nothing to reopen).
    Stdout,
    /// A file, appended to, created if missing, reopened on SIGUSR1.
    File(PathBuf),
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(text: &str) -> Result<Destination, String> {
        match text {
            "" => Err(String::from(
                "invalid access log '': expected - (stdout) or a file path",
            )),
            "-" => Ok(Destination::Stdout),
            path => Ok(Destination::File(PathBuf::from(path))),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Stdout => f.write_str("-"),
            Destination::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How each line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// logfmt: `key=value` pairs, a value quoted when it holds a space, a quote or an `=`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Format, String> {
        match text {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!(
                "invalid log format '{text}': expected text or json"
            )),
        }
    }
}

/// The access log's settings: off unless a destination is given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLog {
    /// `None`: no access log.
    pub destination: Option<Destination>,
    pub format: Format,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_destination_parses_dash_and_paths() {
        assert_eq!("-".parse(), Ok(Destination::Stdout));
        assert_eq!(
            "/var/log/edgefwd/access.log".parse(),
            Ok(Destination::File(PathBuf::from(
                "/var/log/edgefwd/access.log"
            )))
        );
        assert!("".parse::<Destination>().is_err());
    }

    #[test]
    fn test_format_names_the_bad_value() {
        assert_eq!("json".parse(), Ok(Format::Json));
        assert_eq!("text".parse(), Ok(Format::Text));
        let err = "xml".parse::<Format>().unwrap_err();
        assert!(err.contains("'xml'"), "{err}");
    }
}
