//! A route's per-client table: who is connected how often, for `max_conns_per_client` and
//! `conn_rate_per_client`, and the `client_allow`/`client_deny` decision in front of it. The
//! reactor asks [`SharedClients::admit`] when a client is accepted (or, with `accept_proxy`, when its
//! PROXY header named it) and calls [`SharedClients::release`] when its pair closes.
//!
//! **One table per route for the whole process.** With `--threads N` every reactor accepts from the
//! same sockets, so a client's connections land in any of them: a table per reactor would let a
//! client have N times its limit. So the reactors of a route share one table ([`SharedClients`], a
//! mutex), found by route name in [`ClientTables`]: a route that a reload replaces (same name) keeps
//! counting the connections its predecessor still drains. The lock is taken only for the count
//! itself (no syscall, no log line under it), and not at all on a route without per-client limits.
//!
//! A client is its address cut to `per_client_prefix` (`config::clients::ClientPrefix`). An entry
//! holds the client's open connections and its current rate window. The rate is a fixed window that
//! starts at the client's first connection after the previous window ended; only admitted connections
//! count, so a client over the rate is let in again as soon as its window turns.
//!
//! **Bounded, and aging without timers.** The table holds at most [`CAPACITY`] clients. An entry is
//! idle once it has no open connection and its window has ended (at once when there is no rate
//! limit): the last close removes an idle entry on the spot, and the rest are swept lazily, by a
//! pass over the table when a client is admitted at least [`SWEEP_EVERY`] after the last pass. When
//! the table is full a new client triggers a pass early (at most once per [`FULL_SWEEP_GAP`]); if it
//! is still full the new client is refused (`limit="table-full"`), never an old entry evicted: an
//! evicted entry would forget a client's open connections, and a flood of new addresses would then
//! reset every other client's limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::RouteConfig;
use crate::observe::metric_kinds::ClientReject;

/// Most clients one route's table holds, for all its reactors together (about 64 bytes each).
pub(crate) const CAPACITY: usize = 65_536;

/// How often idle entries are swept, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// How often a full table is swept early, at most.
const FULL_SWEEP_GAP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Its connections open now.
    open: u32,
    /// When its rate window started, and the connections admitted in it.
    window_start: Instant,
    in_window: u32,
}

impl Entry {
    fn idle(&self, window: Option<Duration>, now: Instant) -> bool {
        self.open == 0
            && window
                .is_none_or(|window| now.saturating_duration_since(self.window_start) >= window)
    }
}

#[derive(Debug)]
pub(crate) struct ClientTable {
    entries: HashMap<IpAddr, Entry>,
    capacity: usize,
    swept_at: Option<Instant>,
}

impl Default for ClientTable {
    fn default() -> ClientTable {
        ClientTable::with_capacity(CAPACITY)
    }
}

impl ClientTable {
    pub(crate) fn with_capacity(capacity: usize) -> ClientTable {
        ClientTable {
            entries: HashMap::new(),
            capacity,
            swept_at: None,
        }
    }

    /// Counts a client from `addr` of a route with a per-client limit, if it is under them: `Ok(key)`
    /// to be [released](ClientTable::release) with `key` when its connection closes; `Err`: refused,
    /// and why.
    fn admit(
        &mut self,
        addr: IpAddr,
        config: &RouteConfig,
        now: Instant,
    ) -> Result<IpAddr, ClientReject> {
        let window = config.conn_rate_per_client.map(|rate| rate.window);
        let key = config.per_client_prefix.key(addr);
        if self.due(now, SWEEP_EVERY) {
            self.sweep(window, now);
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            if self.due(now, FULL_SWEEP_GAP) {
                self.sweep(window, now);
            }
            if self.entries.len() >= self.capacity {
                return Err(ClientReject::TableFull);
            }
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            open: 0,
            window_start: now,
            in_window: 0,
        });
        if let Some(rate) = config.conn_rate_per_client {
            if now.saturating_duration_since(entry.window_start) >= rate.window {
                entry.window_start = now;
                entry.in_window = 0;
            }
            if entry.in_window >= rate.count {
                return Err(ClientReject::Rate);
            }
        }
        if config
            .max_conns_per_client
            .is_some_and(|most| entry.open >= most)
        {
            return Err(ClientReject::MaxConns);
        }
        entry.in_window += 1;
        entry.open += 1;
        Ok(key)
    }

    /// A connection [admitted](ClientTable::admit) under `key` closed.
    fn release(&mut self, key: IpAddr, config: &RouteConfig, now: Instant) {
        let window = config.conn_rate_per_client.map(|rate| rate.window);
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.open = entry.open.saturating_sub(1);
            if entry.idle(window, now) {
                self.entries.remove(&key);
            }
        }
    }

    fn due(&self, now: Instant, gap: Duration) -> bool {
        self.swept_at
            .is_none_or(|at| now.saturating_duration_since(at) >= gap)
    }

    fn sweep(&mut self, window: Option<Duration>, now: Instant) {
        self.entries.retain(|_, entry| !entry.idle(window, now));
        self.swept_at = Some(now);
    }

    /// Clients in the table.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// One route's [`ClientTable`], shared by the reactors serving the route (and by a route that a reload
/// put in its place).
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedClients(Arc<Mutex<ClientTable>>);

impl SharedClients {
    #[cfg(test)]
    fn with_capacity(capacity: usize) -> SharedClients {
        SharedClients(Arc::new(Mutex::new(ClientTable::with_capacity(capacity))))
    }

    /// Whether a client from `addr` may connect now. `Ok(Some(key))`: admitted and counted, to be
    /// [released](SharedClients::release) with `key` when its connection closes; `Ok(None)`: admitted,
    /// the route has no per-client limit (the table is not touched); `Err`: refused, and why.
    pub(crate) fn admit(
        &self,
        addr: IpAddr,
        config: &RouteConfig,
        now: Instant,
    ) -> Result<Option<IpAddr>, ClientReject> {
        if !config.client_acl.admits(addr) {
            return Err(ClientReject::Denied);
        }
        if config.max_conns_per_client.is_none() && config.conn_rate_per_client.is_none() {
            return Ok(None);
        }
        self.lock().admit(addr, config, now).map(Some)
    }

    /// A connection [admitted](SharedClients::admit) under `key` closed.
    pub(crate) fn release(&self, key: IpAddr, config: &RouteConfig, now: Instant) {
        self.lock().release(key, config, now);
    }

    /// The table. A reactor that panicked holding the lock left counts, not broken invariants: an
    /// entry is changed in one step, so a poisoned table is used as it stands.
    fn lock(&self) -> MutexGuard<'_, ClientTable> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The routes' tables by route name, one set per process: each reactor, building a route, takes the
/// table of that name ([`ClientTables::route`]), so all reactors of a route, and a route a reload
/// puts in the place of one of the same name, count each client once.
#[derive(Debug, Clone, Default)]
pub struct ClientTables(Arc<Mutex<HashMap<String, SharedClients>>>);

impl ClientTables {
    /// The table of route `name`, new if no live route of that name holds one. Tables that no route
    /// holds any more (their route removed by a reload and drained) are dropped here, so the map
    /// stays as small as the set of live route names.
    pub(crate) fn route(&self, name: &str) -> SharedClients {
        let mut tables = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tables.retain(|_, table| Arc::strong_count(&table.0) > 1);
        tables.entry(name.to_string()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn limits(extra: impl FnOnce(&mut RouteConfig)) -> RouteConfig {
        let mut config = crate::config::file::test_route("");
        extra(&mut config);
        config
    }

    #[test]
    fn test_no_limits_tracks_nothing() {
        let config = limits(|_| {});
        let table = SharedClients::default();
        let now = Instant::now();
        assert_eq!(table.admit(ip("127.0.0.1"), &config, now), Ok(None));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn test_max_conns_per_address_and_per_prefix() {
        let config = limits(|c| c.max_conns_per_client = Some(2));
        let table = SharedClients::default();
        let now = Instant::now();
        let first = table.admit(ip("127.0.0.1"), &config, now);
        assert_eq!(first, Ok(Some(ip("127.0.0.1"))));
        assert!(table.admit(ip("127.0.0.1"), &config, now).is_ok());
        assert_eq!(
            table.admit(ip("127.0.0.1"), &config, now),
            Err(ClientReject::MaxConns)
        );
        assert!(table.admit(ip("127.0.0.2"), &config, now).is_ok());
        table.release(ip("127.0.0.1"), &config, now);
        assert!(table.admit(ip("127.0.0.1"), &config, now).is_ok());

        let by_24 = limits(|c| {
            c.max_conns_per_client = Some(1);
            c.per_client_prefix = "24,64".parse().expect("valid");
        });
        let table = SharedClients::default();
        assert_eq!(
            table.admit(ip("127.0.0.1"), &by_24, now),
            Ok(Some(ip("127.0.0.0")))
        );
        assert_eq!(
            table.admit(ip("127.0.0.2"), &by_24, now),
            Err(ClientReject::MaxConns)
        );
        assert!(table.admit(ip("127.0.1.2"), &by_24, now).is_ok());
    }

    #[test]
    fn test_rate_window_turns_and_entries_age_out() {
        let config = limits(|c| c.conn_rate_per_client = Some("2/10s".parse().expect("valid")));
        let table = SharedClients::default();
        let start = Instant::now();
        for _ in 0..2 {
            let key = table.admit(ip("::1"), &config, start).expect("admitted");
            table.release(key.expect("tracked"), &config, start);
        }
        assert_eq!(
            table.admit(ip("::1"), &config, start),
            Err(ClientReject::Rate)
        );
        let later = start + Duration::from_secs(9);
        assert_eq!(
            table.admit(ip("::1"), &config, later),
            Err(ClientReject::Rate)
        );
        let turned = start + Duration::from_secs(10);
        let key = table
            .admit(ip("::1"), &config, turned)
            .expect("a new window");
        table.release(key.expect("tracked"), &config, turned);
        assert_eq!(table.len(), 1, "its window is still running");
        // Another client, a sweep later: the first one's window ended, so the sweep dropped it.
        let swept = turned + Duration::from_secs(20);
        assert!(table.admit(ip("::2"), &config, swept).is_ok());
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn test_full_table_refuses_new_clients_until_a_sweep_frees_room() {
        let config = limits(|c| c.conn_rate_per_client = Some("5/1s".parse().expect("valid")));
        let table = SharedClients::with_capacity(2);
        let now = Instant::now();
        for client in ["10.0.0.1", "10.0.0.2"] {
            let key = table.admit(ip(client), &config, now).expect("room");
            table.release(key.expect("tracked"), &config, now);
        }
        assert_eq!(
            table.admit(ip("10.0.0.3"), &config, now),
            Err(ClientReject::TableFull)
        );
        assert!(
            table.admit(ip("10.0.0.1"), &config, now).is_ok(),
            "known clients go on"
        );
        let later = now + Duration::from_secs(2);
        // 10.0.0.1 still has a connection open; 10.0.0.2's window ended: swept.
        assert!(table.admit(ip("10.0.0.3"), &config, later).is_ok());
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn test_acl_is_checked_first() {
        let config = limits(|c| {
            c.client_acl.deny = vec!["127.0.0.2".parse().expect("cidr")];
            c.max_conns_per_client = Some(1);
        });
        let table = SharedClients::default();
        let now = Instant::now();
        assert_eq!(
            table.admit(ip("127.0.0.2"), &config, now),
            Err(ClientReject::Denied)
        );
        assert_eq!(table.len(), 0);
        assert!(table.admit(ip("127.0.0.1"), &config, now).is_ok());
    }

    #[test]
    fn test_reactors_of_a_route_share_its_table_by_name() {
        let config = limits(|c| c.max_conns_per_client = Some(1));
        let tables = ClientTables::default();
        let (reactor_0, reactor_1) = (tables.route("web"), tables.clone().route("web"));
        let other = tables.route("api");
        let now = Instant::now();
        let key = reactor_0
            .admit(ip("127.0.0.1"), &config, now)
            .expect("first connection");
        assert_eq!(
            reactor_1.admit(ip("127.0.0.1"), &config, now),
            Err(ClientReject::MaxConns),
            "the other reactor sees the connection"
        );
        assert!(other.admit(ip("127.0.0.1"), &config, now).is_ok());
        reactor_0.release(key.expect("tracked"), &config, now);
        assert!(reactor_1.admit(ip("127.0.0.1"), &config, now).is_ok());
        // A name no route holds any more starts afresh.
        drop((reactor_0, reactor_1));
        assert_eq!(tables.route("web").len(), 0);
        assert_eq!(other.len(), 1, "a live route's table is kept");
    }
}
