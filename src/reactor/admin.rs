//! The admin API (`--admin`), served inside reactor 0 like the metrics port: the listener and its
//! bounds are `exchange`'s; requests are parsed and answers merged by `observe::admin`; this module
//! puts each request to every reactor and writes the answer.
//!
//! With `--threads N` each reactor owns its pairs and its copy of the routes, so a request cannot be
//! answered from reactor 0 alone. Reactor 0 computes its own part, sends an `Ask` to every other
//! reactor through its inbox (the channel and `Waker` reloads use), and parks the connection: nothing
//! more is read from it and nothing is written until every part is back (each reactor answers on
//! its next turn) or [`ASK_TIMEOUT`] passes (503). A `DELETE` reaches the pair's own reactor the same
//! way; a steering change is applied by every reactor to its own routes.
//!
//! Connection ids are unique process-wide: reactor `i` of `N` shows its pair of generation `g` as
//! `g × N + i` (with one reactor, the id of the log lines).
//!
//! A hostile client gets no more than a metrics scraper: [`MAX_ADMIN`] connections (the oldest goes),
//! 8 KiB per request, 10 s each; every answer is computed in one go from what the reactors hold.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;
use mio::event::Source;
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Registry, Token};
use serde::Serialize;

use super::exchange::{http, Accept, Front, Progress, Request as Http};
use super::worker::Ask;
use super::Reactor;
use crate::close::Cause;
use crate::config::admin::AdminAddr;
use crate::config::unix::UnixAddr;
use crate::datapath::net;
use crate::datapath::stream::Conn;
use crate::datapath::unix::{self, SocketFile};
use crate::observe::admin::{
    self, answer, Filter, How, Part, Refusal, Request, RouteRow, UpstreamRow,
};
use crate::service::activation::Passed;
use crate::service::upgrade::Kind;
use crate::session::pair::diagnosis::{diagnose, Limits};
use crate::session::pair::recorder::EventView;
use crate::session::pair::{Pair, PairView};
use crate::token::{self, MAX_ADMIN};
use crate::upstream::route::{Route, UnixListening};

/// How long a request waits for the other reactors' parts.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection object (docs/admin.md): the pair's view under its process-wide id and its route's
/// name; `GET /connections/ID` adds the diagnosis and the flight recorder's events.
#[derive(Debug, Serialize)]
struct Connection<'a> {
    id: u64,
    route: &'a str,
    #[serde(flatten)]
    view: PairView,
    #[serde(skip_serializing_if = "Option::is_none")]
    diagnosis: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<EventView>>,
}

/// The admin listener: TCP, or a Unix socket.
#[derive(Debug)]
pub(super) enum AdminListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Accept for AdminListener {
    type Stream = Conn;

    fn accept_one(&self) -> io::Result<Conn> {
        match self {
            AdminListener::Tcp(listener) => listener.accept().map(|(s, _)| Conn::Tcp(s)),
            AdminListener::Unix(listener) => listener.accept_one(),
        }
    }
}

impl AdminListener {
    /// The listener inside, for the `Source` calls that are the same on both kinds.
    fn inner(&mut self) -> &mut dyn Source {
        match self {
            AdminListener::Tcp(listener) => listener,
            AdminListener::Unix(listener) => listener,
        }
    }
}

impl Source for AdminListener {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.inner().register(registry, token, interest)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.inner().reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.inner().deregister(registry)
    }
}

/// The admin endpoint of reactor 0.
#[derive(Debug)]
pub(super) struct AdminServer {
    front: Front<AdminListener>,
    /// `--admin-token`: what `Authorization: Bearer` must say.
    token: Option<String>,
    /// A Unix socket's file, removed when the server goes; `None` for TCP, an abstract name, a
    /// listener a successor took over, or one handed over until the predecessor has let go.
    file: Option<SocketFile>,
    /// Requests waiting for other reactors' parts.
    waiting: Vec<Waiting>,
    next_ticket: u64,
}

/// A request whose answer waits for other reactors.
#[derive(Debug)]
struct Waiting {
    ticket: u64,
    /// The exchange it came on, and that exchange's serial (the slot may be reused after it closed).
    slot: usize,
    serial: u64,
    request: Arc<Request>,
    parts: Vec<Part>,
    /// Reactors that have not answered yet.
    missing: usize,
    deadline: Instant,
}

impl AdminServer {
    /// Binds the admin listener: TCP, or a Unix socket file of mode 0600.
    fn bind(addr: &AdminAddr) -> Result<(AdminListener, Option<SocketFile>), String> {
        match addr {
            AdminAddr::Tcp(at) => {
                let listener = net::bind_listener(*at, 128, false)
                    .map_err(|err| format!("cannot listen for the admin API on {at}: {err}"))?;
                Ok((AdminListener::Tcp(listener), None))
            }
            AdminAddr::Unix(at) => {
                let (listener, file) = unix::bind(at, 0o600, 128)?;
                Ok((AdminListener::Unix(listener), file))
            }
        }
    }

    /// Registers `listener` and serves the admin API on it.
    fn serve(
        listener: AdminListener,
        file: Option<SocketFile>,
        token: Option<String>,
        registry: &Registry,
    ) -> Result<AdminServer, String> {
        let tokens = (
            "admin",
            token::ADMIN,
            token::admin_token as fn(usize) -> Token,
        );
        let front = Front::serve(listener, registry, tokens, MAX_ADMIN)
            .map_err(|err| format!("cannot register the admin listener: {err}"))?;
        Ok(AdminServer {
            front,
            token,
            file,
            waiting: Vec::new(),
            next_ticket: 1,
        })
    }

    /// The listener's descriptor and kind, to offer a successor (binary upgrade).
    pub(super) fn offered(&self) -> Option<(RawFd, Kind)> {
        match &self.front.listener {
            AdminListener::Tcp(listener) => {
                let local = listener.local_addr().ok()?;
                Some((listener.as_raw_fd(), Kind::Tcp(local)))
            }
            AdminListener::Unix(listener) => Some((listener.as_raw_fd(), Kind::Unix)),
        }
    }

    /// A successor took the listener over: stop serving (requests in progress are dropped, new
    /// connections go to the successor), and leave a Unix socket's file where it is.
    pub(super) fn hand_over(mut self, registry: &Registry) {
        if let Some(file) = self.file.take() {
            file.keep();
        }
        self.front.close(registry);
    }

    /// The predecessor let go of the handed-over listener: its socket file at `addr` is this process's
    /// now, removed when the server goes.
    pub(super) fn own_file(&mut self, addr: &AdminAddr) -> Result<(), String> {
        if let (None, AdminAddr::Unix(UnixAddr::Path(path))) = (&self.file, addr) {
            let file = SocketFile::created(path)
                .map_err(|err| format!("cannot own the socket file {}: {err}", path.display()))?;
            self.file = Some(file);
        }
        Ok(())
    }

    /// The TCP address it listens on (none for a Unix socket).
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        match &self.front.listener {
            AdminListener::Tcp(listener) => listener.local_addr().ok(),
            AdminListener::Unix(_) => None,
        }
    }

    pub(super) fn is_ready(&self, now: Instant) -> bool {
        self.front.is_ready(now)
    }

    /// The earliest of the accept retry and the parked requests' deadlines.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let parked = self.waiting.iter().map(|waiting| waiting.deadline).min();
        [self.front.retry_deadline(), parked]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn on_listener_event(&mut self) {
        self.front.on_listener_event();
    }

    pub(super) fn accept(&mut self, registry: &Registry, now: Instant) -> Option<io::Error> {
        self.front.accept(registry, now)
    }

    /// Reads exchange `slot`; a whole request comes back to be put to the reactors, anything else
    /// (a bad request, a wrong token, a response being written) is handled here.
    fn advance(&mut self, slot: usize) -> Option<Request> {
        let token = self.token.as_deref();
        let exchange = self.front.exchanges.get_mut(slot)?;
        let mut asked = None;
        let progress = exchange.advance(|request| match request {
            Http::TooLarge => Some(respond(Err(Refusal::new(431, "request too large")))),
            Http::Complete { head, body } => match admin::parse(head, body, token) {
                Ok(request) => {
                    asked = Some(request);
                    None
                }
                Err(refusal) => Some(respond(Err(refusal))),
            },
        });
        if progress == Progress::Finished {
            self.front.exchanges.remove(slot);
        }
        asked
    }

    /// Writes the answer of the request on exchange `slot`, if it is still that one.
    fn reply(&mut self, slot: usize, serial: u64, response: Vec<u8>) {
        let Some(exchange) = self
            .front
            .exchanges
            .get_mut(slot)
            .filter(|exchange| exchange.serial == serial)
        else {
            return; // closed meanwhile (its age, or evicted by a newer connection)
        };
        if exchange.reply(response) == Progress::Finished {
            self.front.exchanges.remove(slot);
        }
    }

    /// A reactor's part came back; the answer goes out when it was the last one.
    fn collect(&mut self, ticket: u64, part: Part) {
        let Some(index) = self.waiting.iter().position(|w| w.ticket == ticket) else {
            return; // answered already (timed out)
        };
        let waiting = &mut self.waiting[index];
        waiting.parts.push(part);
        waiting.missing = waiting.missing.saturating_sub(1);
        if waiting.missing == 0 {
            let done = self.waiting.swap_remove(index);
            let response = respond(answer(&done.request, done.parts));
            self.reply(done.slot, done.serial, response);
        }
    }

    /// Answers 503 to requests whose parts did not all come back in time.
    fn expire(&mut self, now: Instant) {
        let (late, waiting): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|waiting| waiting.deadline <= now);
        self.waiting = waiting;
        for waiting in late {
            let message = format!(
                "{} reactor(s) did not answer within {}s",
                waiting.missing,
                ASK_TIMEOUT.as_secs()
            );
            warn!("admin: {message}");
            let response = respond(Err(Refusal::new(503, message)));
            self.reply(waiting.slot, waiting.serial, response);
        }
    }
}

/// The whole HTTP response for an answer: 200 with its JSON body, or the refusal's status and error.
fn respond(result: Result<String, Refusal>) -> Vec<u8> {
    let (status, body) = match result {
        Ok(body) => (200, body),
        Err(refusal) => (refusal.status, refusal.body()),
    };
    http(status, admin::reason(status), "application/json", &body)
}

impl Reactor {
    /// Serves `--admin` (reactor 0 only): on the listener a predecessor handed over for that address
    /// (`tcp`, or the one at the same Unix address in `unix`), else on a new bind, which would fail
    /// while the predecessor drains.
    pub(super) fn bind_admin(
        &mut self,
        tcp: Option<Passed>,
        unix: &mut Vec<UnixListening>,
    ) -> Result<(), String> {
        let Some(addr) = self
            .config
            .admin
            .clone()
            .filter(|_| self.siblings.index == 0)
        else {
            return Ok(());
        };
        let handed = match &addr {
            AdminAddr::Tcp(_) => tcp.map(|passed| AdminListener::Tcp(passed.socket)),
            AdminAddr::Unix(at) => unix
                .iter()
                .position(|listener| listener.addr == *at)
                .map(|index| AdminListener::Unix(unix.swap_remove(index).socket)),
        };
        let (listener, file) = match handed {
            Some(listener) => (listener, None),
            None => AdminServer::bind(&addr)?,
        };
        let token = self.config.admin_token.clone();
        self.admin = Some(AdminServer::serve(
            listener,
            file,
            token,
            self.poll.registry(),
        )?);
        Ok(())
    }

    /// The TCP address the admin API is bound to, if it is served over TCP.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(AdminServer::local_addr)
    }

    pub(super) fn on_admin_listener_event(&mut self) {
        if let Some(server) = self.admin.as_mut() {
            server.on_listener_event();
        }
    }

    /// Accepts queued admin connections, unless accepting is paused (as [`Reactor::accept_ready`]
    /// does for scrapes).
    pub(super) fn accept_admin(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        let now = self.now;
        let failed = match self.admin.as_mut() {
            Some(server) => server.accept(self.poll.registry(), now),
            None => None,
        };
        if let Some(err) = failed {
            self.pause_accepting(&err);
        }
    }

    /// An admin connection's event: once its request is whole, this reactor's part is computed and the
    /// request is put to the others; the answer is written when all parts are in.
    pub(super) fn on_admin_event(&mut self, slot: usize) {
        let Some(request) = self.admin.as_mut().and_then(|server| server.advance(slot)) else {
            return;
        };
        let request = Arc::new(request);
        let local = self.admin_part(&request);
        let followers = match self.siblings.followers.lock() {
            Ok(followers) => followers.clone(),
            Err(_) => Vec::new(),
        };
        let reply = self.worker.as_ref().map(|worker| worker.inbox());
        let Some(server) = self.admin.as_mut() else {
            return;
        };
        let Some(serial) = server.front.exchanges.get(slot).map(|e| e.serial) else {
            return;
        };
        let ticket = server.next_ticket;
        server.next_ticket += 1;
        let mut missing = 0;
        if let Some(reply) = reply {
            for inbox in &followers {
                let ask = Ask {
                    ticket,
                    request: Arc::clone(&request),
                    reply: reply.clone(),
                };
                missing += usize::from(inbox.ask(ask));
            }
        }
        if missing == 0 {
            let response = respond(answer(&request, vec![local]));
            server.reply(slot, serial, response);
            return;
        }
        server.waiting.push(Waiting {
            ticket,
            slot,
            serial,
            request,
            parts: vec![local],
            missing,
            deadline: self.now + ASK_TIMEOUT,
        });
    }

    /// Another reactor asks for this one's part of an admin answer.
    pub(super) fn on_admin_ask(&mut self, ask: Ask) {
        let part = self.admin_part(&ask.request);
        ask.reply.answer(ask.ticket, part);
    }

    /// Another reactor's part of an answer came back.
    pub(super) fn on_admin_part(&mut self, ticket: u64, part: Part) {
        if let Some(server) = self.admin.as_mut() {
            server.collect(ticket, part);
        }
    }

    /// Answers 503 to requests whose parts are overdue.
    pub(super) fn expire_admin(&mut self) {
        let now = self.now;
        if let Some(server) = self.admin.as_mut() {
            server.expire(now);
        }
    }

    /// This reactor's part of the answer to `request`; a `DELETE` or a steering change is carried out
    /// here, on this reactor's pair or routes.
    fn admin_part(&mut self, request: &Request) -> Part {
        let mut part = Part::default();
        match request {
            Request::Connections(filter) => {
                part.connections = self
                    .pairs
                    .iter()
                    .filter_map(|(_, pair)| self.connection(pair, Some(filter)))
                    .collect();
            }
            Request::Connection(id) => {
                part.connections = self
                    .pair_slot(*id)
                    .and_then(|slot| self.pairs.get(slot))
                    .and_then(|pair| self.connection(pair, None))
                    .into_iter()
                    .collect();
            }
            Request::Close { id, how } => {
                if let Some(slot) = self.pair_slot(*id) {
                    self.close_by_admin(slot, *how);
                    part.closed = true;
                }
            }
            Request::Routes => {
                part.routes = self.live_routes().map(route_row).collect();
            }
            Request::Upstreams => {
                part.upstreams = self.live_routes().flat_map(upstream_rows).collect();
            }
            Request::Steer {
                addr,
                route: only,
                change,
            } => {
                for (_, route) in self.routes.iter_mut() {
                    let chosen = only.as_deref().is_none_or(|name| name == route.name());
                    if !route.draining && chosen && route.upstreams.steer(addr, *change) {
                        part.upstreams
                            .extend(upstream_rows(route).filter(|row| row.address == *addr));
                    }
                }
            }
        }
        part
    }

    fn live_routes(&self) -> impl Iterator<Item = &Route> {
        self.routes
            .iter()
            .filter(|(_, route)| !route.draining)
            .map(|(_, route)| route)
    }

    /// The id the admin API shows for a pair of this reactor (unique process-wide).
    fn global_id(&self, pair: &Pair) -> u64 {
        let threads = self.config.threads.max(1) as u64;
        u64::from(pair.id) * threads + self.siblings.index as u64
    }

    /// The slot of this reactor's pair whose global id is `id`.
    fn pair_slot(&self, id: u64) -> Option<usize> {
        let threads = self.config.threads.max(1) as u64;
        if id % threads != self.siblings.index as u64 {
            return None;
        }
        let generation = u32::try_from(id / threads).ok()?;
        self.pairs
            .iter()
            .find(|(_, pair)| pair.id == generation)
            .map(|(slot, _)| slot)
    }

    /// The connection object of `pair`, rendered, with its id: with `filter` (a list) only if the pair
    /// passes it, and without diagnosis and events; without (one connection asked for by id), with them.
    fn connection(&self, pair: &Pair, filter: Option<&Filter>) -> Option<(u64, String)> {
        let route = self.routes.get(pair.route)?;
        let view = pair.view(self.now);
        if let Some(filter) = filter {
            let route_ok = filter
                .route
                .as_deref()
                .is_none_or(|name| name == route.name());
            let age = Duration::from_millis(view.age_ms);
            let old_enough = filter.older_than.is_none_or(|least| age >= least);
            if !(route_ok && old_enough && (view.stuck || !filter.stuck)) {
                return None;
            }
        }
        let (diagnosis, events) = match filter {
            Some(_) => (None, None),
            None => (
                Some(diagnose(&view, &Limits::of(route))),
                Some(pair.events()),
            ),
        };
        let id = self.global_id(pair);
        let connection = Connection {
            id,
            route: route.name(),
            view,
            diagnosis,
            events,
        };
        serde_json::to_string(&connection)
            .ok()
            .map(|json| (id, json))
    }

    /// `DELETE /connections/ID`: `rst` resets both sockets; `fin` closes them, which sends FIN (or
    /// RST where bytes are left undelivered, as any close does: `close_pair`).
    fn close_by_admin(&mut self, slot: usize, how: How) {
        if how == How::Rst {
            if let Some(pair) = self.pairs.get(slot) {
                pair.client.reset_on_close();
                if let Some(upstream) = pair.upstream() {
                    upstream.reset_on_close();
                }
            }
        }
        self.close_pair(slot, Cause::Admin);
    }
}

fn route_row(route: &Route) -> RouteRow {
    let tcp = route.listeners.iter().map(|l| l.local.to_string());
    let unix = route.unix_listeners.iter().map(|l| l.addr.to_string());
    RouteRow {
        name: route.name().to_string(),
        listen: tcp.chain(unix).collect(),
        balance: route.config.balance.to_string(),
        pairs: route.pairs,
        max_connections: route.config.max_connections,
        upstreams: route.config.upstreams.len(),
    }
}

/// One row per live endpoint of `route` (an upstream whose name resolves to nothing has none).
fn upstream_rows(route: &Route) -> impl Iterator<Item = UpstreamRow> + '_ {
    let upstreams = &route.upstreams;
    upstreams.live().map(move |(_, endpoint)| UpstreamRow {
        route: route.name().to_string(),
        address: endpoint.addr.clone(),
        name: upstreams.name_of(endpoint).to_string(),
        up: endpoint.health.is_up(),
        admin: upstreams.setting(&endpoint.addr).state.as_str(),
        weight: upstreams.weight_of(endpoint),
        active: endpoint.active,
        failures: endpoint.health.failures(),
        connect_failures: endpoint.connect_failures,
    })
}
