//! Who may connect to a route's listeners, and how much: the syntaxes of the per-client settings
//! (`client_allow`/`client_deny` CIDR lists, `conn_rate_per_client`, `per_client_prefix`) and the
//! access decision. Pure: the table that counts clients is `upstream::clients`.
//!
//! The access lists are named `client_*` because `allow` already means the destinations of a
//! `--mode connect` route. The decision is the most specific rule's (longest prefix), a tie going to
//! `client_deny`, so `client_deny = ["10.0.0.0/8"]` with `client_allow = ["10.1.0.0/16"]` lets
//! 10.1.x.x in and keeps the rest of 10/8 out, whatever order the rules were written in. An address
//! no rule matches is let in when `client_allow` is empty, and kept out otherwise.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

/// `ADDR/LEN` (or a bare address, a /32 or /128). An IPv4-mapped IPv6 client (`::ffff:a.b.c.d`) is
/// matched as the IPv4 address it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// Whether `addr` is inside this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.net, canonical(addr)) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => mask_v4(addr, self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(addr)) => mask_v6(addr, self.len) == u128::from(net),
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad = |why: &str| format!("invalid CIDR '{text}': {why} (e.g. 10.0.0.0/8, ::1/128)");
        let (addr, len) = text.split_once('/').unwrap_or((text, ""));
        let net: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let net = canonical(net);
        let most = if net.is_ipv4() { 32 } else { 128 };
        let len = if len.is_empty() {
            most
        } else {
            len.parse::<u8>()
                .ok()
                .filter(|len| *len <= most)
                .ok_or_else(|| bad(&format!("the prefix length must be 0..={most}")))?
        };
        let masked = match net {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(mask_v4(v4, len))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask_v6(v6, len))),
        };
        if masked != net {
            return Err(bad(&format!(
                "host bits set, the network is {masked}/{len}"
            )));
        }
        Ok(Cidr { net, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`: a dual-stack listener reports IPv4 clients that way.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

fn mask_v4(addr: Ipv4Addr, len: u8) -> u32 {
    u32::from(addr)
        .checked_shr(32 - u32::from(len))
        .map_or(0, |high| high << (32 - u32::from(len)))
}

fn mask_v6(addr: Ipv6Addr, len: u8) -> u128 {
    u128::from(addr)
        .checked_shr(128 - u32::from(len))
        .map_or(0, |high| high << (128 - u32::from(len)))
}

/// `client_allow` and `client_deny` (see the module doc for the rule).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAcl {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl ClientAcl {
    /// Whether a client from `addr` may connect: the longest matching prefix decides, deny on a tie;
    /// no match lets it in only when there is no allow list.
    pub fn admits(&self, addr: IpAddr) -> bool {
        let longest = |rules: &[Cidr]| {
            rules
                .iter()
                .filter(|rule| rule.contains(addr))
                .map(|rule| rule.len)
                .max()
        };
        match (longest(&self.allow), longest(&self.deny)) {
            (None, None) => self.allow.is_empty(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(allow), Some(deny)) => allow > deny,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// `conn_rate_per_client = "N/WINDOW"`: at most N new connections per client in each window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let bad = |why: &str| format!("invalid rate '{text}': {why} (e.g. 20/10s)");
        let (count, window) = text
            .split_once('/')
            .ok_or_else(|| bad("expected N/DURATION"))?;
        let count = count
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad("N must be a whole number from 1"))?;
        let window = super::parse_duration(window).map_err(|err| bad(&err))?;
        if window < Duration::from_millis(1) || window > Duration::from_secs(24 * 3600) {
            return Err(bad("the window must be 1ms..24h"));
        }
        Ok(Rate { count, window })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}ms", self.count, self.window.as_millis())
    }
}

/// `per_client_prefix = "V4,V6"`: how much of a client's address is the client (its key in the
/// per-client table): `32,128` is each address, `24,64` each IPv4 /24 and IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPrefix {
    pub v4: u8,
    pub v6: u8,
}

impl Default for ClientPrefix {
    fn default() -> ClientPrefix {
        ClientPrefix { v4: 32, v6: 128 }
    }
}

impl ClientPrefix {
    /// The network `addr` is counted under.
    pub fn key(&self, addr: IpAddr) -> IpAddr {
        match canonical(addr) {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(mask_v4(v4, self.v4))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask_v6(v6, self.v6))),
        }
    }
}

impl FromStr for ClientPrefix {
    type Err = String;

    fn from_str(text: &str) -> Result<ClientPrefix, String> {
        let bad = || {
            format!("invalid per-client prefix '{text}': expected V4,V6 lengths, V4 1..=32 and V6 1..=128 (e.g. 24,64)")
        };
        let (v4, v6) = text.split_once(',').ok_or_else(bad)?;
        let v4 = v4
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=32).contains(n));
        let v6 = v6
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=128).contains(n));
        match (v4, v6) {
            (Some(v4), Some(v6)) => Ok(ClientPrefix { v4, v6 }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for ClientPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.v4, self.v6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn acl(allow: &[&str], deny: &[&str]) -> ClientAcl {
        let parse = |list: &[&str]| list.iter().map(|c| c.parse().expect("cidr")).collect();
        ClientAcl {
            allow: parse(allow),
            deny: parse(deny),
        }
    }

    #[test]
    fn test_cidr_parse_and_contains() {
        let net: Cidr = "10.0.0.0/8".parse().expect("valid");
        assert!(net.contains(ip("10.200.1.1")));
        assert!(net.contains(ip("::ffff:10.1.1.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        let one: Cidr = "::1".parse().expect("valid");
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        let all: Cidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains(ip("1.2.3.4")));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "nope/8",
            "::/129",
            "10.0.0.0/x",
        ] {
            let err = bad.parse::<Cidr>().expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn test_acl_longest_prefix_wins_deny_on_tie() {
        let open = ClientAcl::default();
        assert!(open.admits(ip("1.2.3.4")));
        let nested = acl(&["10.1.0.0/16"], &["10.0.0.0/8"]);
        assert!(nested.admits(ip("10.1.2.3")));
        assert!(!nested.admits(ip("10.2.0.1")));
        assert!(
            !nested.admits(ip("192.0.2.1")),
            "an allow list keeps the unmatched out"
        );
        let reverse = acl(&["10.0.0.0/8"], &["10.1.0.0/16"]);
        assert!(!reverse.admits(ip("10.1.2.3")));
        assert!(reverse.admits(ip("10.2.0.1")));
        let tie = acl(&["127.0.0.0/8"], &["127.0.0.0/8"]);
        assert!(!tie.admits(ip("127.0.0.1")));
        let deny_only = acl(&[], &["127.0.0.2"]);
        assert!(deny_only.admits(ip("127.0.0.1")));
        assert!(!deny_only.admits(ip("127.0.0.2")));
    }

    #[test]
    fn test_rate_and_prefix_syntax() {
        let rate: Rate = "20/10s".parse().expect("valid");
        assert_eq!(rate.count, 20);
        assert_eq!(rate.window, Duration::from_secs(10));
        for bad in ["20", "0/1s", "x/1s", "5/0s", "5/2d"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        let prefix: ClientPrefix = "24,64".parse().expect("valid");
        assert_eq!(prefix.key(ip("127.0.0.9")), ip("127.0.0.0"));
        assert_eq!(prefix.key(ip("::ffff:127.0.0.9")), ip("127.0.0.0"));
        assert_eq!(prefix.key(ip("2001:db8::1:2")), ip("2001:db8::"));
        assert_eq!(
            ClientPrefix::default().key(ip("127.0.0.9")),
            ip("127.0.0.9")
        );
        for bad in ["24", "0,64", "33,64", "24,129", "a,b"] {
            assert!(bad.parse::<ClientPrefix>().is_err(), "{bad}");
        }
    }
}
