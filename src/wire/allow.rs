//! The allow-list of a `--mode connect` route: which destinations a CONNECT may reach. Pure.
//!
//! A CONNECT proxy without one is an open proxy, so the list is required in connect mode and anything it
//! does not name is refused (403): default deny. Each rule is `DESTINATION:PORT`, where PORT is a
//! number, a range `LOW-HIGH`, or `*`, and DESTINATION is
//! - an address or network: `10.0.0.5`, `10.0.0.0/8`, `[2001:db8::]/32`, `[::1]`;
//! - a host name suffix: `.example.com` (any name under example.com), or an exact name `example.com`;
//! - `*`: any destination (only the port is checked, e.g. `*:443`).
//!
//! Names are matched as names: a rule for `10.0.0.0/8` does not allow `intranet.example` even if it
//! resolves there, and a name rule does not allow its address given literally. Nor is an allowed name's
//! address checked once it is looked up: the rule trusts the system resolver (search domains included).

use std::net::IpAddr;

use crate::wire::connect_request::Host;

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    dest: Dest,
    /// Inclusive port range.
    ports: (u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Any,
    Net {
        base: IpAddr,
        prefix: u8,
    },
    /// Lower-case; a leading dot matches any name under it (and not the bare name).
    Name(String),
}

/// Rules in the order given; the first match allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Rule>);

impl AllowList {
    pub fn new(rules: Vec<Rule>) -> AllowList {
        AllowList(rules)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a CONNECT to `host:port` may go through.
    pub(super) fn allows(&self, host: &Host, port: u16) -> bool {
        self.0.iter().any(|rule| rule.matches(host, port))
    }
}

impl Rule {
    fn matches(&self, host: &Host, port: u16) -> bool {
        if port < self.ports.0 || port > self.ports.1 {
            return false;
        }
        match (&self.dest, host) {
            (Dest::Any, _) => true,
            (Dest::Net { base, prefix }, Host::Ip(ip)) => in_network(*ip, *base, *prefix),
            (Dest::Name(pattern), Host::Name(name)) => match pattern.strip_prefix('.') {
                Some(suffix) => name.len() > suffix.len() && name.ends_with(pattern.as_str()),
                None => name == pattern,
            },
            _ => false,
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = String;

    fn from_str(text: &str) -> Result<Rule, String> {
        let bad = |why: &str| format!("invalid allow rule '{text}': {why}");
        let (dest, ports) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("expected DESTINATION:PORT, e.g. 10.0.0.0/8:443"))?;
        let ports = parse_ports(ports).ok_or_else(|| bad("the port must be N, LOW-HIGH or *"))?;
        let dest = parse_dest(dest).ok_or_else(|| {
            bad("the destination must be an address, ADDR/PREFIX, [IPV6]/PREFIX, a host name, .suffix or *")
        })?;
        Ok(Rule { dest, ports })
    }
}

fn parse_ports(text: &str) -> Option<(u16, u16)> {
    let number = |t: &str| -> Option<u16> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    if text == "*" {
        return Some((1, u16::MAX));
    }
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (number(low)?, number(high)?),
        None => (number(text)?, number(text)?),
    };
    (low >= 1 && low <= high).then_some((low, high))
}

fn parse_dest(text: &str) -> Option<Dest> {
    if text == "*" {
        return Some(Dest::Any);
    }
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let ip = match addr.strip_prefix('[') {
        Some(inner) => Some(
            inner
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()?
                .into(),
        ),
        None => addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::from),
    };
    match (ip, prefix) {
        (Some(base), prefix) => {
            let max = if base.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().ok()?
                }
                Some(_) => return None,
                None => max,
            };
            (prefix <= max).then_some(normalise_mapped(base, prefix))
        }
        (None, Some(_)) => None,
        (None, None) => parse_name_pattern(text).map(Dest::Name),
    }
}

/// A network of IPv4-mapped IPv6 addresses (`[::ffff:10.0.0.0]/104`) is the IPv4 network it maps,
/// because destinations are checked in their IPv4 form ([`in_network`]); kept as IPv6 it would
/// silently match nothing.
fn normalise_mapped(base: IpAddr, prefix: u8) -> Dest {
    match base {
        IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => Dest::Net {
                base: IpAddr::V4(v4),
                prefix: prefix - 96,
            },
            None => Dest::Net { base, prefix },
        },
        _ => Dest::Net { base, prefix },
    }
}

/// `example.com`, `.example.com` or `*.example.com` (the same as `.example.com`).
fn parse_name_pattern(text: &str) -> Option<String> {
    let text = text.strip_prefix('*').unwrap_or(text).to_ascii_lowercase();
    let (dot, name) = match text.strip_prefix('.') {
        Some(name) => (".", name),
        None => ("", text.as_str()),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then(|| format!("{dot}{name}"))
}

/// Whether `ip` is in `base/prefix` (families must agree; an IPv4-mapped IPv6 address counts as IPv4).
fn in_network(ip: IpAddr, base: IpAddr, prefix: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, base) {
        (IpAddr::V4(ip), IpAddr::V4(base)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(base) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(base)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(base) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::Gen;

    fn list(rules: &[&str]) -> AllowList {
        AllowList::new(rules.iter().map(|r| r.parse().expect(r)).collect())
    }

    fn ip(text: &str) -> Host {
        Host::Ip(text.parse().expect("ip"))
    }

    fn name(text: &str) -> Host {
        Host::Name(text.into())
    }

    #[test]
    fn test_empty_list_denies_everything() {
        let empty = AllowList::default();
        assert!(!empty.allows(&ip("127.0.0.1"), 80));
        assert!(!empty.allows(&name("example.com"), 443));
    }

    #[test]
    fn test_networks_and_ports() {
        let allow = list(&["10.0.0.0/8:443", "[2001:db8::]/32:1000-2000", "127.0.0.1:*"]);
        assert!(allow.allows(&ip("10.200.3.4"), 443));
        assert!(!allow.allows(&ip("10.200.3.4"), 80));
        assert!(!allow.allows(&ip("11.0.0.1"), 443));
        assert!(allow.allows(&ip("::ffff:10.0.0.1"), 443));
        assert!(allow.allows(&ip("2001:db8:ffff::1"), 1500));
        assert!(!allow.allows(&ip("2001:db9::1"), 1500));
        assert!(!allow.allows(&ip("2001:db8::1"), 2001));
        assert!(allow.allows(&ip("127.0.0.1"), 1));
        assert!(!allow.allows(&ip("127.0.0.2"), 1));
        assert!(!allow.allows(&name("localhost"), 443));
    }

    #[test]
    fn test_ipv4_mapped_rules_match_both_forms() {
        let allow = list(&["[::ffff:10.0.0.0]/104:443", "[::ffff:192.0.2.7]:80"]);
        assert!(allow.allows(&ip("10.1.2.3"), 443));
        assert!(allow.allows(&ip("::ffff:10.1.2.3"), 443));
        assert!(!allow.allows(&ip("11.1.2.3"), 443));
        assert!(allow.allows(&ip("192.0.2.7"), 80));
        assert!(!allow.allows(&ip("192.0.2.8"), 80));
    }

    #[test]
    fn test_names_and_suffixes() {
        let allow = list(&[".example.com:443", "exact.org:22", "*.wild.net:*"]);
        assert!(allow.allows(&name("a.example.com"), 443));
        assert!(allow.allows(&name("a.b.example.com"), 443));
        assert!(!allow.allows(&name("example.com"), 443));
        assert!(!allow.allows(&name("badexample.com"), 443));
        assert!(allow.allows(&name("exact.org"), 22));
        assert!(!allow.allows(&name("sub.exact.org"), 22));
        assert!(allow.allows(&name("x.wild.net"), 9));
        assert!(!allow.allows(&ip("1.2.3.4"), 443));
    }

    #[test]
    fn test_any_destination_on_a_port() {
        let allow = list(&["*:443"]);
        assert!(allow.allows(&ip("1.2.3.4"), 443));
        assert!(allow.allows(&name("x.y"), 443));
        assert!(!allow.allows(&name("x.y"), 444));
    }

    #[test]
    fn test_bad_rules_are_named() {
        for bad in [
            "10.0.0.0/8",
            "10.0.0.0/33:1",
            "10.0.0.0/:1",
            "[::1:1",
            "10.0.0.0/8:0",
            "x:2-1",
            "x:65536",
            "a..b:1",
            "bad_host:1",
            ":1",
            "10.0.0.1/8/8:1",
            "name/8:1",
        ] {
            let err = bad.parse::<Rule>().expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    /// Property (fuzzed): any text parses to a rule or an error naming it, without a panic.
    #[test]
    fn test_property_rule_parser_never_panics() {
        fn check(input: &[u8]) {
            let text = String::from_utf8_lossy(input);
            if let Err(err) = text.parse::<Rule>() {
                assert!(err.contains(text.as_ref()), "{err}");
            }
        }
        let seeds = [
            "10.0.0.0/8:443",
            "[2001:db8::]/32:1000-2000",
            ".example.com:*",
            "*:443",
        ]
        .map(|s| s.as_bytes().to_vec())
        .to_vec();
        assert!(crate::fuzz::fuzz_budget("allow_rule", &seeds, check) > 0);
    }

    /// Property: a /N network rule allows exactly the addresses that share the first N bits with it.
    #[test]
    fn test_property_prefix_matches_bit_comparison() {
        let mut g = Gen::new(0x5eed_0003);
        for _ in 0..20_000 {
            let prefix = g.below(33) as u8;
            let base = g.next() as u32;
            let probe = if g.below(2) == 0 {
                base ^ (1u32 << g.below(32))
            } else {
                g.next() as u32
            };
            let rule: Rule = format!("{}/{prefix}:*", std::net::Ipv4Addr::from(base))
                .parse()
                .expect("rule");
            let shared = (base ^ probe).leading_zeros() >= u32::from(prefix);
            let host = Host::Ip(std::net::Ipv4Addr::from(probe).into());
            assert_eq!(
                rule.matches(&host, 80),
                shared,
                "{base:x}/{prefix} vs {probe:x}"
            );
        }
    }
}
