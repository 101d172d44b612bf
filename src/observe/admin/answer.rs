//! From the reactors' parts to one answer. With `--threads N` every reactor holds its own pairs and its
//! own copy of each route (its load, its passive health), so a request is put to each of them
//! (`reactor::admin`) and each answers a [`Part`]; [`answer`] merges them into the one JSON body the
//! client gets: connections in id order, routes by name, upstream addresses by route and address.

use std::fmt::Display;

use serde::{Serialize, Serializer};

use super::{Refusal, Request};
use crate::config::UpstreamAddr;

/// One reactor's answer to a request.
#[derive(Debug, Default)]
pub(crate) struct Part {
    /// Connection objects, rendered as JSON, with their ids: those the filters kept, or the one asked
    /// for (the connection object is `session::pair::PairView` under the reactor's id and route name).
    pub(crate) connections: Vec<(u64, String)>,
    /// `GET /routes`: one row per route this reactor runs (draining ones left out).
    pub(crate) routes: Vec<RouteRow>,
    /// `GET /upstreams`, or the addresses a steering request changed.
    pub(crate) upstreams: Vec<UpstreamRow>,
    /// `DELETE /connections/ID`: this reactor had the pair, and closed it.
    pub(crate) closed: bool,
}

/// A route as `GET /routes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RouteRow {
    pub(crate) name: String,
    pub(crate) listen: Vec<String>,
    pub(crate) balance: String,
    /// Pairs open (summed over the reactors).
    pub(crate) pairs: usize,
    /// The route's limit (each reactor holds a share; summed).
    pub(crate) max_connections: usize,
    /// Upstreams configured.
    pub(crate) upstreams: usize,
}

impl RouteRow {
    /// Adds another reactor's view of the same route.
    fn absorb(&mut self, other: &RouteRow) {
        self.pairs += other.pairs;
        self.max_connections += other.max_connections;
    }
}

/// An upstream address (an endpoint) as `GET /upstreams` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct UpstreamRow {
    pub(crate) route: String,
    #[serde(serialize_with = "as_text")]
    pub(crate) address: UpstreamAddr,
    /// The upstream as configured (`app:9000`, or the address itself).
    pub(crate) name: String,
    /// Health checking has it up (with `--threads`: every reactor has); `"health": "up"|"down"`.
    #[serde(rename = "health", serialize_with = "up_or_down")]
    pub(crate) up: bool,
    /// `enabled`, `draining` or `disabled`.
    pub(crate) admin: &'static str,
    /// The configured weight, or the one `PUT .../weight` set.
    pub(crate) weight: u32,
    /// Pairs connected or connecting to it (summed over the reactors).
    pub(crate) active: usize,
    /// Consecutive failures now (the most any reactor counts).
    pub(crate) failures: u32,
    /// Connects and probes that failed since it appeared (summed).
    pub(crate) connect_failures: u64,
}

impl UpstreamRow {
    fn absorb(&mut self, other: &UpstreamRow) {
        self.up &= other.up;
        self.active += other.active;
        self.failures = self.failures.max(other.failures);
        self.connect_failures += other.connect_failures;
    }
}

fn as_text<Z: Serializer>(value: &impl Display, serializer: Z) -> Result<Z::Ok, Z::Error> {
    serializer.collect_str(value)
}

fn up_or_down<Z: Serializer>(up: &bool, serializer: Z) -> Result<Z::Ok, Z::Error> {
    serializer.serialize_str(if *up { "up" } else { "down" })
}

/// `[a,b,...]` of values rendered as JSON already.
fn array(items: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(","))
}

/// `value` as JSON; the rows here always serialize (strings, numbers and lists of them).
fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
}

/// Merges every reactor's part of the answer to `request` into the JSON body.
pub(crate) fn answer(request: &Request, parts: Vec<Part>) -> Result<String, Refusal> {
    let body = match request {
        Request::Connections(_) => {
            let mut all: Vec<(u64, String)> = parts
                .into_iter()
                .flat_map(|part| part.connections)
                .collect();
            all.sort_by_key(|(id, _)| *id);
            array(all.into_iter().map(|(_, json)| json))
        }
        Request::Connection(id) => parts
            .into_iter()
            .flat_map(|part| part.connections)
            .find(|(found, _)| found == id)
            .map(|(_, object)| object)
            .ok_or_else(|| no_connection(*id))?,
        Request::Close { id, how } => {
            if !parts.iter().any(|part| part.closed) {
                return Err(no_connection(*id));
            }
            serde_json::json!({ "closed": id, "how": how.as_str() }).to_string()
        }
        Request::Routes => {
            let rows = merge(
                parts.into_iter().flat_map(|part| part.routes),
                |a, b| a.name == b.name,
                RouteRow::absorb,
            );
            json(&rows)
        }
        Request::Upstreams => upstreams(parts),
        Request::Steer { addr, route, .. } => {
            let body = upstreams(parts);
            if body == "[]" {
                let within = route
                    .as_deref()
                    .map_or_else(String::new, |route| format!(" in route '{route}'"));
                return Err(Refusal::new(
                    404,
                    format!("no upstream address {addr}{within}"),
                ));
            }
            body
        }
    };
    Ok(body + "\n")
}

fn upstreams(parts: Vec<Part>) -> String {
    let rows = merge(
        parts.into_iter().flat_map(|part| part.upstreams),
        |a, b| a.route == b.route && a.address == b.address,
        UpstreamRow::absorb,
    );
    json(&rows)
}

fn no_connection(id: u64) -> Refusal {
    Refusal::new(404, format!("no connection {id} (closed, or never opened)"))
}

/// Rows in the order they first appear, each absorbing the later rows `same` says are it.
fn merge<T>(
    rows: impl Iterator<Item = T>,
    same: impl Fn(&T, &T) -> bool,
    absorb: impl Fn(&mut T, &T),
) -> Vec<T> {
    let mut merged: Vec<T> = Vec::new();
    for row in rows {
        match merged.iter_mut().find(|kept| same(kept, &row)) {
            Some(kept) => absorb(kept, &row),
            None => merged.push(row),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::super::{Change, Filter, How};
    use super::*;

    fn upstream(route: &str, address: &str, active: usize, up: bool) -> UpstreamRow {
        UpstreamRow {
            route: route.into(),
            address: address.parse().expect("addr"),
            name: address.into(),
            up,
            admin: "enabled",
            weight: 1,
            active,
            failures: u32::from(!up),
            connect_failures: u64::from(!up),
        }
    }

    fn part_with(connections: &[u64]) -> Part {
        Part {
            connections: connections
                .iter()
                .map(|id| (*id, format!("{{\"id\":{id}}}")))
                .collect(),
            ..Part::default()
        }
    }

    #[test]
    fn test_connections_of_every_reactor_in_id_order() {
        let request = Request::Connections(Filter::default());
        let body = answer(&request, vec![part_with(&[4, 2]), part_with(&[3])]);
        assert_eq!(body, Ok("[{\"id\":2},{\"id\":3},{\"id\":4}]\n".into()));
        assert_eq!(answer(&request, vec![]), Ok("[]\n".into()));
    }

    #[test]
    fn test_one_connection_or_404() {
        let parts = || vec![part_with(&[]), part_with(&[9])];
        assert_eq!(
            answer(&Request::Connection(9), parts()),
            Ok("{\"id\":9}\n".into())
        );
        let missing = answer(&Request::Connection(8), parts()).expect_err("404");
        assert_eq!(missing.status, 404);
        assert!(missing.message.contains('8'), "{}", missing.message);
    }

    #[test]
    fn test_close_answers_the_reactor_that_had_it() {
        let close = Request::Close {
            id: 5,
            how: How::Rst,
        };
        let closed = Part {
            closed: true,
            ..Part::default()
        };
        assert_eq!(
            answer(&close, vec![Part::default(), closed]),
            Ok("{\"closed\":5,\"how\":\"rst\"}\n".into())
        );
        assert_eq!(
            answer(&close, vec![Part::default()]).map_err(|r| r.status),
            Err(404)
        );
    }

    #[test]
    fn test_upstreams_merge_by_route_and_address() {
        let parts = vec![
            Part {
                upstreams: vec![
                    upstream("web", "127.0.0.1:1", 2, true),
                    upstream("web", "127.0.0.1:2", 0, true),
                ],
                ..Part::default()
            },
            Part {
                upstreams: vec![
                    upstream("web", "127.0.0.1:1", 3, false),
                    upstream("api", "127.0.0.1:1", 1, true),
                ],
                ..Part::default()
            },
        ];
        let body = answer(&Request::Upstreams, parts).expect("body");
        let rows: Vec<&str> = body.trim().trim_matches(['[', ']']).split("},{").collect();
        assert_eq!(rows.len(), 3, "{body}");
        assert!(rows[0].contains("\"active\":5") && rows[0].contains("\"health\":\"down\""));
        assert!(rows[0].contains("\"connect_failures\":1"), "{body}");
        assert!(rows[2].contains("\"route\":\"api\""), "{body}");
    }

    #[test]
    fn test_steering_nothing_is_404() {
        let steer = Request::Steer {
            addr: "127.0.0.1:9".parse().expect("addr"),
            route: Some("web".into()),
            change: Change::Drain,
        };
        let refusal = answer(&steer, vec![Part::default()]).expect_err("404");
        assert_eq!(refusal.status, 404);
        assert_eq!(
            refusal.message,
            "no upstream address 127.0.0.1:9 in route 'web'"
        );
    }

    #[test]
    fn test_routes_sum_their_reactors_shares() {
        let row = |pairs| RouteRow {
            name: "web".into(),
            listen: vec!["127.0.0.1:80".into()],
            balance: "round-robin".into(),
            pairs,
            max_connections: 512,
            upstreams: 2,
        };
        let parts = vec![
            Part {
                routes: vec![row(1)],
                ..Part::default()
            },
            Part {
                routes: vec![row(2)],
                ..Part::default()
            },
        ];
        assert_eq!(
            answer(&Request::Routes, parts),
            Ok("[{\"name\":\"web\",\"listen\":[\"127.0.0.1:80\"],\"balance\":\"round-robin\",\"pairs\":3,\"max_connections\":1024,\"upstreams\":2}]\n".into())
        );
    }
}
