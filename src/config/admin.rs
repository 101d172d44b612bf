//! Where the admin API listens (`--admin`, `admin = "..."`): a TCP address, or a Unix socket
//! (`unix:/path`, created mode 0600). Parsing and the one rule that ties it to `--admin-token`: an
//! address other hosts can reach needs a token. No I/O.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use crate::config::unix::UnixAddr;

/// The admin API's listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddr {
    Tcp(SocketAddr),
    Unix(UnixAddr),
}

impl AdminAddr {
    /// Only this host can connect: a loopback address, or a Unix socket (a file of mode 0600, or an
    /// abstract name, which only this host's processes see).
    pub fn is_local(&self) -> bool {
        match self {
            AdminAddr::Tcp(addr) => addr.ip().is_loopback(),
            AdminAddr::Unix(_) => true,
        }
    }

    /// Refuses an address other hosts can reach unless requests must carry a token; the caller names
    /// where the address was written (`--admin ADDR`, or the file's `admin = "ADDR"`).
    pub fn check(&self, has_token: bool) -> Result<(), &'static str> {
        if self.is_local() || has_token {
            return Ok(());
        }
        Err("not a loopback address; an admin API other hosts can reach needs --admin-token FILE")
    }
}

impl FromStr for AdminAddr {
    type Err = String;

    /// `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` (127.0.0.1) or `unix:/path` (`unix:@name`).
    fn from_str(text: &str) -> Result<AdminAddr, String> {
        if UnixAddr::is_unix(text) {
            return text.parse().map(AdminAddr::Unix);
        }
        if let Some(port) = text.strip_prefix("localhost:") {
            if let Ok(port) = port.parse::<u16>() {
                return Ok(AdminAddr::Tcp(SocketAddr::from((
                    Ipv4Addr::LOCALHOST,
                    port,
                ))));
            }
        }
        text.parse().map(AdminAddr::Tcp).map_err(|_| {
            format!(
                "invalid admin address '{text}': expected IP:PORT, [IPv6]:PORT, localhost:PORT, unix:/PATH or unix:@NAME"
            )
        })
    }
}

impl fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminAddr::Tcp(addr) => addr.fmt(f),
            AdminAddr::Unix(addr) => addr.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_the_three_forms() {
        let tcp = |text: &str| AdminAddr::Tcp(text.parse().expect("addr"));
        assert_eq!("127.0.0.1:9091".parse(), Ok(tcp("127.0.0.1:9091")));
        assert_eq!("[::1]:9091".parse(), Ok(tcp("[::1]:9091")));
        assert_eq!("localhost:9091".parse(), Ok(tcp("127.0.0.1:9091")));
        assert_eq!(
            "unix:/run/edgefwd.sock".parse(),
            Ok(AdminAddr::Unix(UnixAddr::Path("/run/edgefwd.sock".into())))
        );
        let err = "admin.example:9091".parse::<AdminAddr>().expect_err("bad");
        assert!(err.contains("'admin.example:9091'"), "{err}");
        assert!("unix:".parse::<AdminAddr>().is_err());
    }

    #[test]
    fn test_non_loopback_needs_a_token() {
        let public: AdminAddr = "0.0.0.0:9091".parse().expect("addr");
        let err = public.check(false).expect_err("refused");
        assert!(
            err.contains("not a loopback address") && err.contains("--admin-token"),
            "{err}"
        );
        assert_eq!(public.check(true), Ok(()));
        for local in ["127.0.0.1:1", "[::1]:1", "unix:/tmp/a.sock"] {
            let addr: AdminAddr = local.parse().expect("addr");
            assert_eq!(addr.check(false), Ok(()), "{local}");
        }
    }
}
