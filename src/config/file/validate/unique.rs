//! The checks across routes: unique names, and listen addresses shared only by SNI routes whose names
//! do not conflict.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use super::super::{render, FileError};
use super::{key, Reader};
use crate::config::{Protocol, RouteConfig};
use crate::wire::sni;

impl Reader<'_> {
    /// Route names must be unique across routes, and so must fixed listen addresses, except that routes
    /// taking part in SNI routing (`sni` or `default`) may share one, when their names do not conflict
    /// ([`sni::Table::build`] names both routes of a conflict). A UDP and a TCP route may share an
    /// address: they are different sockets.
    pub(super) fn check_unique(&self, routes: &[RouteConfig]) -> Result<(), FileError> {
        let mut names = HashSet::new();
        let mut sharing: BTreeMap<(Protocol, SocketAddr), Vec<usize>> = BTreeMap::new();
        let mut unix_addrs = HashSet::new();
        for (index, route) in routes.iter().enumerate() {
            if !names.insert(route.name.as_str()) {
                let why = if route.named {
                    format!("'{}' names two routes", route.name)
                } else {
                    format!(
                        "this route has no name and its default, '{}', is taken by another route: name it",
                        route.name
                    )
                };
                let key = key(index, "name");
                return Err(render::rejected(self.label, Some(&key), &why));
            }
            for addr in route.listen.iter().filter(|addr| addr.port() != 0) {
                let group = sharing.entry((route.protocol, *addr)).or_default();
                let sni = |index: usize| routes[index].sni.is_set();
                if group
                    .first()
                    .is_some_and(|&first| !(sni(first) && sni(index)))
                {
                    let key = key(index, "listen");
                    let why = format!(
                        "{addr} is used by two routes (routes may share one only with sni or default)"
                    );
                    return Err(render::rejected(self.label, Some(&key), &why));
                }
                group.push(index);
            }
        }
        let sni = |group: &Vec<usize>| group.iter().any(|&index| routes[index].sni.is_set());
        for ((_, addr), group) in sharing.iter().filter(|(_, group)| sni(group)) {
            let rules = group
                .iter()
                .map(|&index| (index, routes[index].name.as_str(), &routes[index].sni));
            if let Err(why) = sni::Table::build(rules) {
                let why = format!("listen {addr}: {why}");
                return Err(render::rejected(self.label, None, &why));
            }
            if let Some(why) = greeting_mismatch(routes, group) {
                let why = format!("listen {addr}: {why}");
                return Err(render::rejected(self.label, None, &why));
            }
        }
        for (index, route) in routes.iter().enumerate() {
            for addr in &route.listen_unix {
                let why = if route.sni.is_set() {
                    format!("{addr}: a Unix listener takes no part in SNI routing (sni or default)")
                } else if !unix_addrs.insert(addr.clone()) {
                    format!("{addr} is used by two routes")
                } else {
                    continue;
                };
                let key = key(index, "listen");
                return Err(render::rejected(self.label, Some(&key), &why));
            }
        }
        Ok(())
    }
}

/// Routes sharing an address read what comes before the ClientHello (a PROXY header) and the hello
/// itself before it is known which of them the client is for, so they must agree on how: the same
/// `accept_proxy`, `send_proxy_tlvs` and `header_timeout`. The first disagreement, naming both routes.
fn greeting_mismatch(routes: &[RouteConfig], group: &[usize]) -> Option<String> {
    let first = &routes[*group.first()?];
    group.iter().map(|&index| &routes[index]).find_map(|route| {
        let differs = if route.accept_proxy != first.accept_proxy {
            "accept_proxy"
        } else if route.send_proxy_tlvs != first.send_proxy_tlvs {
            "send_proxy_tlvs"
        } else if route.header_timeout != first.header_timeout {
            "header_timeout"
        } else {
            return None;
        };
        Some(format!(
            "route '{}' and route '{}' differ in {differs} (routes sharing an address read the PROXY header and ClientHello before either is chosen, so they must agree)",
            first.name, route.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use crate::config;
    use crate::config::file::tests::{accepts, rejects, ROUTE};

    #[test]
    fn test_duplicates_across_routes_are_rejected() {
        let named = "name = \"a\"\n";
        rejects(
            &format!("{ROUTE}{named}{ROUTE}{named}"),
            "test.toml: route[1].name: 'a' names two routes",
            &[],
        );
        let fixed = ROUTE.replace("127.0.0.1:0", "127.0.0.1:7000");
        rejects(
            &format!("{fixed}{fixed}"),
            "test.toml: route[1].listen: 127.0.0.1:7000 is used by two routes",
            &[],
        );
    }

    /// Routes with `sni` or `default` may share a listen address; a conflict among them names both.
    #[test]
    fn test_sni_routes_sharing_an_address() {
        let fixed = ROUTE.replace("127.0.0.1:0", "127.0.0.1:7000");
        let api =
            format!("{fixed}name = \"api\"\nsni = [\"API.example.com\", \"*.example.com\"]\n");
        let other = format!("{fixed}name = \"other\"\nsni = [\"api.example.com\"]\n");
        rejects(
            &format!("{api}{other}"),
            "test.toml: listen 127.0.0.1:7000: sni 'api.example.com' is declared by route 'api' and route 'other'",
            &[],
        );
        let fallback = format!("{fixed}name = \"fallback\"\ndefault = true\n");
        let second = format!("{fixed}name = \"second\"\ndefault = true\n");
        rejects(
            &format!("{fallback}{api}{second}"),
            "test.toml: listen 127.0.0.1:7000: route 'fallback' and route 'second' are both marked default",
            &[],
        );
        rejects(
            &format!("{api}{fixed}"),
            "test.toml: route[1].listen: 127.0.0.1:7000 is used by two routes (routes may share one only with sni or default)",
            &[],
        );
        rejects(
            &format!("{fixed}sni = [\"a.example\", \"A.example\"]\n"),
            "test.toml: listen 127.0.0.1:7000: sni 'a.example' is listed twice by route 'route-1'",
            &[],
        );
        rejects(
            &format!("{api}{fixed}name = \"late\"\ndefault = true\nheader_timeout = \"1s\"\n"),
            "test.toml: listen 127.0.0.1:7000: route 'api' and route 'late' differ in header_timeout",
            &[],
        );
        rejects(
            &format!("{api}{fixed}name = \"pp\"\ndefault = true\naccept_proxy = true\n"),
            "test.toml: listen 127.0.0.1:7000: route 'api' and route 'pp' differ in accept_proxy",
            &[],
        );
    }

    /// A well-formed SNI group: the first route holds the socket, every route is in its group.
    #[test]
    fn test_sni_group_shares_one_socket() {
        let fixed = ROUTE.replace("127.0.0.1:0", "127.0.0.1:7000");
        let config = accepts(&format!(
            "{fixed}name = \"api\"\nsni = [\"api.example.com\"]\n\
             {fixed}name = \"acme\"\nsni = [\"api.example.com\"]\nalpn = [\"acme-tls/1\"]\n\
             {fixed}name = \"fallback\"\ndefault = true\n{ROUTE}"
        ));
        let addr = "127.0.0.1:7000".parse().expect("addr");
        let bound = |index| config::bound_addresses(&config.routes, index);
        assert_eq!(bound(0), vec![addr]);
        assert!(bound(1).is_empty() && bound(2).is_empty());
        assert_eq!(config::sni_group(&config.routes, 0, addr), vec![0, 1, 2]);
        let plain = config.routes[3].listen[0];
        assert_eq!(bound(3), vec![plain], "a port-0 route binds its own");
        assert!(config::sni_group(&config.routes, 3, plain).is_empty());
    }

    #[test]
    fn test_unnamed_route_clashing_with_a_named_one_is_told_to_take_a_name() {
        rejects(
            &format!("{ROUTE}name = \"route-2\"\n{ROUTE}"),
            "test.toml: route[1].name: this route has no name",
            &[],
        );
    }
}
