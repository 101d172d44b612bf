//! How a direction moves its bytes: `--splice` (through the ring or through a splice(2) pipe), and
//! the pipe size it asks for.

/// Default `--pipe-size`: the capacity asked of each splice pipe. Larger pipes mean fewer splice calls per
/// byte (CPU per GiB falls from 0.62x of tokio's at 64 KiB to 0.50x at 1 MiB, docs/benchmarks.md), and an
/// empty pipe costs only its slot array, because pages are held only while data is in flight. 1 MiB is
/// also Linux's default `/proc/sys/fs/pipe-max-size`, the most an unprivileged process may ask for.
pub const DEFAULT_PIPE_SIZE: usize = 1 << 20;

/// When a direction moves its bytes with splice(2) instead of through its ring (`--splice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Splice {
    /// Always the ring.
    Off,
    /// The ring until one read fills it (a stream, not a request/response exchange), then a pipe, like
    /// HAProxy's `splice-auto`: small messages skip the two extra syscalls a pipe costs per chunk.
    Auto,
    /// A pipe from the first byte.
    Always,
}

/// `--splice`'s default: `auto` where splice(2) exists (Linux), `off` elsewhere.
pub const DEFAULT_SPLICE: &str = if cfg!(target_os = "linux") {
    "auto"
} else {
    "off"
};

impl Default for Splice {
    fn default() -> Splice {
        if cfg!(target_os = "linux") {
            Splice::Auto
        } else {
            Splice::Off
        }
    }
}

impl std::fmt::Display for Splice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Splice::Off => "off",
            Splice::Auto => "auto",
            Splice::Always => "always",
        })
    }
}

impl std::str::FromStr for Splice {
    type Err = String;

    fn from_str(text: &str) -> Result<Splice, String> {
        match text {
            "off" => Ok(Splice::Off),
            "auto" => Ok(Splice::Auto),
            "always" | "on" => Ok(Splice::Always),
            _ => Err(format!(
                "invalid splice mode '{text}': expected off, auto or always"
            )),
        }
    }
}
