//! The balancing algorithms a route may pick (`--balance`, `balance =`), by name.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A balancing algorithm, as named by `--balance` and `balance =`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    #[default]
    RoundRobin,
    LeastConn,
    RandomTwo,
    SourceHash,
}

impl Algorithm {
    /// Every algorithm, in the order the help text lists them.
    pub(crate) const ALL: [Algorithm; 4] = [
        Algorithm::RoundRobin,
        Algorithm::LeastConn,
        Algorithm::RandomTwo,
        Algorithm::SourceHash,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::LeastConn => "least-conn",
            Algorithm::RandomTwo => "random-two",
            Algorithm::SourceHash => "source-hash",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(text: &str) -> Result<Algorithm, String> {
        Algorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "unknown balance '{text}', expected one of {}",
                    names.join(", ")
                )
            })
    }
}
