//! DNS: a host-name upstream is resolved again every `--resolve-interval`, and new connections follow
//! a changed answer without a restart; every address of a name is an endpoint sharing its weight; a
//! name that does not resolve starts down and joins when it does; an address dropped from a name takes
//! no new connection while its live pair finishes. And a CONNECT destination whose name has several
//! addresses is tried at the next one when a connect fails.
//!
//! The names are made-up ones that these tests write into /etc/hosts (which getaddrinfo reads), for
//! 127.0.0.1, ::1 or both, and remove again when they end, however they end. Where /etc/hosts
//! cannot be written (not root), a test says so and does nothing. They take turns with /etc/hosts
//! through a lock in this process and an flock(2) on a lock file beside it, so that two runs of the
//! suite at once (two checkouts, a developer's run beside CI's) do not rewrite each other's names.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use common::{connect, echo_conn, unused_port, Backend, Blackhole, Forwarder};

const HOSTS: &str = "/etc/hosts";

/// The tests of this file take turns with /etc/hosts.
static HOSTS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Our line at the end of /etc/hosts; the file is put back as it was on drop.
struct HostsEntry {
    name: String,
    original: String,
    /// Held until the file is put back: the other processes' turn (flock(2) on [`HOSTS_LOCK_FILE`]).
    _process_turn: fs::File,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// The lock file other processes running these tests take turns on.
const HOSTS_LOCK_FILE: &str = "/tmp/edgefwd-test-etc-hosts.lock";

/// Waits for this process's turn, then for every other process's, with /etc/hosts.
fn process_turn() -> Option<fs::File> {
    use std::os::fd::AsRawFd;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HOSTS_LOCK_FILE)
        .ok()?;
    // SAFETY: flock(2) on a descriptor this function owns; the lock lives as long as the file, which
    // the caller keeps until /etc/hosts is put back. Exercised by every test of this file.
    (unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0).then_some(file)
}

impl HostsEntry {
    /// [`HostsEntry::add`] for the made-up name `edgefwd-dns-LABEL-PID.test`; where /etc/hosts cannot be
    /// written, says that the test is skipped because no name can `what`, and gives `None`.
    fn made_up(label: &str, ips: &[&str], what: &str) -> Option<HostsEntry> {
        let name = format!("edgefwd-dns-{label}-{}.test", std::process::id());
        let entry = HostsEntry::add(&name, ips);
        if entry.is_none() {
            eprintln!("skipped: {HOSTS} cannot be written here, so no name can {what}");
        }
        entry
    }

    /// Adds `ip name` for each of `ips`; `None` if /etc/hosts cannot be written here.
    fn add(name: &str, ips: &[&str]) -> Option<HostsEntry> {
        let turn = HOSTS_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let process_turn = process_turn()?;
        let original = without_leftovers(&fs::read_to_string(HOSTS).ok()?);
        let entry = HostsEntry {
            name: name.into(),
            original,
            _process_turn: process_turn,
            _turn: turn,
        };
        entry.point_to(ips).ok()?;
        Some(entry)
    }

    /// Writes the original file plus `ip name` for each of `ips`.
    fn point_to(&self, ips: &[&str]) -> std::io::Result<()> {
        let separator = if self.original.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        let ours: String = ips
            .iter()
            .map(|ip| format!("{ip} {}\n", self.name))
            .collect();
        fs::write(HOSTS, format!("{}{separator}{ours}", self.original))
    }
}

/// `text` without the lines an earlier run of these tests left behind: a run that is killed (SIGKILL,
/// a CI timeout) never reaches `Drop`, and its line would otherwise stay in /etc/hosts for good.
fn without_leftovers(text: &str) -> String {
    text.lines()
        .filter(|line| !is_our_line(line))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// A line these tests write: `IP edgefwd-dns-*.test` (the `.test` TLD is reserved, RFC 2606).
fn is_our_line(line: &str) -> bool {
    line.split_whitespace()
        .nth(1)
        .is_some_and(|name| name.starts_with("edgefwd-dns-") && name.ends_with(".test"))
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        let _ = fs::write(HOSTS, &self.original);
    }
}

/// An echo backend on `bind` that first greets each connection with `label\n`.
fn greeter(bind: SocketAddr, label: &'static str) -> Backend {
    Backend::spawn(bind, move |mut stream: TcpStream| {
        if stream.write_all(format!("{label}\n").as_bytes()).is_ok() {
            echo_conn(stream);
        }
    })
}

/// Two greeters on `port`, "v4" on 127.0.0.1 and "v6" on ::1.
fn greeters_on(port: u16) -> (Backend, Backend) {
    let v4 = greeter(SocketAddr::from(([127, 0, 0, 1], port)), "v4");
    let v6 = greeter(
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        "v6",
    );
    (v4, v6)
}

/// [`greeters_on`] a port free on both loopbacks; `None`, having said why, where ::1 cannot be bound.
fn greeters_on_one_port() -> Option<(Backend, Backend, u16)> {
    let port = port_free_on_both()?;
    let (a, b) = greeters_on(port);
    Some((a, b, port))
}

/// A forwarder over `upstreams` that re-resolves their names every 200 ms, with `extra` flags.
fn re_resolving(upstreams: &[&str], extra: &[&str]) -> Forwarder {
    let mut args: Vec<&str> = upstreams.iter().flat_map(|u| ["--upstream", u]).collect();
    args.extend_from_slice(&["--resolve-interval", "200ms"]);
    args.extend_from_slice(extra);
    Forwarder::start(&args)
}

/// The first line the greeter behind `fwd` sends a new client.
fn greeting_through(fwd: &Forwarder) -> String {
    read_label(connect(fwd.addr()))
}

#[test]
fn test_changed_dns_answer_applies_to_new_connections() {
    let Some(entry) = HostsEntry::made_up("test", &["127.0.0.1"], "be made to change") else {
        return;
    };
    let name = entry.name.clone();
    let Some((_v4, _v6, port)) = greeters_on_one_port() else {
        return;
    };
    let upstream = format!("{name}:{port}");
    let fwd = re_resolving(&[&upstream], &[]);
    assert_eq!(greeting_through(&fwd), "v4");

    entry.point_to(&["::1"]).expect("rewrite /etc/hosts");
    fwd.expect_log("now resolves to [::1]", Duration::from_secs(10));
    assert_eq!(
        greeting_through(&fwd),
        "v6",
        "a new connection went to the old address"
    );
}

/// With re-resolution off, a SIGHUP is how a DNS change is made to apply: the route is kept (nothing
/// else changed) but takes the address the reloaded file resolved.
#[test]
fn test_sighup_applies_a_changed_dns_answer() {
    let Some((_v4, _v6, port)) = greeters_on_one_port() else {
        return;
    };
    let Some(entry) = HostsEntry::made_up("hup", &["127.0.0.1"], "be made to change") else {
        return;
    };
    let name = entry.name.clone();
    let text = format!(
        "[[route]]\nname = \"dns\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{name}:{port}\"]\nresolve_interval = \"0s\"\n"
    );
    let file = common::ConfigFile::new(&text);
    let fwd = Forwarder::start(&["--config", file.path()]);
    assert_eq!(greeting_through(&fwd), "v4");
    entry.point_to(&["::1"]).expect("rewrite /etc/hosts");
    fwd.signal(libc::SIGHUP);
    fwd.expect_log("now resolves to [::1]", Duration::from_secs(10));
    assert_eq!(greeting_through(&fwd), "v6");
}

/// The greeting line of a new connection through `fwd`, read byte by byte (nothing past it is
/// consumed), and the connection, still open.
fn open_labelled(fwd: &Forwarder) -> (String, TcpStream) {
    let mut client = connect(fwd.addr());
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match client.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            other => panic!("no greeting: {other:?} after {line:?}"),
        }
    }
    let text = String::from_utf8(line).expect("utf-8 greeting");
    (text.trim_end().to_string(), client)
}

/// How many of `n` new connections reached each label.
fn labels_of(fwd: &Forwarder, n: usize) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for _ in 0..n {
        let label = greeting_through(fwd);
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, count)) => *count += 1,
            None => counts.push((label, 1)),
        }
    }
    counts.sort();
    counts
}

/// A name that does not resolve at start does not stop the start: the route runs on its other upstream,
/// the name is down in /metrics, and once it appears in /etc/hosts it takes its share after the next
/// re-resolution.
#[test]
fn test_an_unresolvable_name_starts_down_and_joins_once_it_resolves() {
    let Some(entry) = HostsEntry::made_up("late", &[], "be made to appear") else {
        return;
    };
    let name = entry.name.clone();
    let good = greeter(common::loopback4(), "good");
    let late = greeter(common::loopback4(), "late");
    let upstream = format!("{name}:{}", late.addr().port());
    let fwd = re_resolving(
        &[&good.upstream_arg(), &upstream],
        &["--metrics", "127.0.0.1:0"],
    );
    fwd.expect_log(
        &format!("upstream {upstream} of route default is down: cannot resolve '{upstream}'"),
        Duration::from_secs(10),
    );
    assert_eq!(labels_of(&fwd, 4), vec![("good".to_string(), 4)]);
    let body = common::scrape(fwd.metrics_addr());
    let up = |label: &str| format!("edgefwd_upstream_up{{route=\"default\",upstream=\"{label}\"}}");
    assert_eq!(common::sample(&body, &up(&upstream)), 0);
    assert_eq!(common::sample(&body, &up(&good.upstream_arg())), 1);

    entry.point_to(&["127.0.0.1"]).expect("rewrite /etc/hosts");
    let resolved = format!(
        "upstream {upstream} of route default now resolves to {} (was unresolved)",
        late.addr()
    );
    fwd.expect_log(&resolved, Duration::from_secs(10));
    assert_eq!(
        labels_of(&fwd, 4),
        vec![("good".to_string(), 2), ("late".to_string(), 2)]
    );
    let body = common::scrape(fwd.metrics_addr());
    let endpoint = format!("{upstream} ({})", late.addr());
    assert_eq!(common::sample(&body, &up(&endpoint)), 1);
    assert!(
        !body.contains(&up(&upstream)),
        "the unresolved row is gone:\n{body}"
    );
}

/// A name with two addresses (127.0.0.1 and ::1, a different backend on each) contributes both as
/// endpoints, sharing its weight: beside an IP literal of the same weight, round-robin sends it half
/// the clients, a quarter to each address.
#[test]
fn test_every_address_of_a_name_is_an_endpoint_sharing_its_weight() {
    let Some((entry, port, _addrs)) = name_with_two_addresses("both") else {
        return;
    };
    let (_v4, _v6) = greeters_on(port);
    let solo = greeter(common::loopback4(), "solo");
    let upstream = format!("{}:{port}", entry.name);
    let fwd = Forwarder::start(&["--upstream", &upstream, "--upstream", &solo.upstream_arg()]);
    assert_eq!(
        labels_of(&fwd, 40),
        vec![
            ("solo".to_string(), 20),
            ("v4".to_string(), 10),
            ("v6".to_string(), 10)
        ]
    );
}

/// An address dropped from a name takes no new connection after the next re-resolution, while a pair
/// already through it runs on to its end, byte for byte; the address leaves /metrics.
#[test]
fn test_an_address_dropped_from_a_name_takes_no_new_connections_and_its_pair_finishes() {
    let Some((entry, port, _addrs)) = name_with_two_addresses("drop") else {
        return;
    };
    let (_v4, _v6) = greeters_on(port);
    let upstream = format!("{}:{port}", entry.name);
    let fwd = re_resolving(&[&upstream], &["--metrics", "127.0.0.1:0"]);
    // Round-robin over the two addresses: one of the first two clients is on ::1; keep it open.
    let (first, first_conn) = open_labelled(&fwd);
    let (second, second_conn) = open_labelled(&fwd);
    let mut live = match (first.as_str(), second.as_str()) {
        ("v6", "v4") => first_conn,
        ("v4", "v6") => second_conn,
        other => panic!("two clients did not reach both addresses: {other:?}"),
    };

    entry.point_to(&["127.0.0.1"]).expect("rewrite /etc/hosts");
    fwd.expect_log(
        &format!("of route default now resolves to 127.0.0.1:{port} (was "),
        Duration::from_secs(10),
    );
    assert_eq!(labels_of(&fwd, 6), vec![("v4".to_string(), 6)]);
    // The dropped address is no longer an endpoint (no health, no active row); the traffic series of
    // the pair still on it stay until that pair is gone (docs/operations.md, metrics by upstream).
    let dropped = format!("([::1]:{port})");
    let body = common::scrape(fwd.metrics_addr());
    let rows = |body: &str, prefix: &str| {
        body.lines()
            .filter(|line| line.starts_with(prefix) && line.contains(&dropped))
            .count()
    };
    assert_eq!(
        rows(&body, "edgefwd_upstream_up{") + rows(&body, "edgefwd_upstream_active{"),
        0,
        "a dropped address is still an endpoint in /metrics:\n{body}"
    );

    let data = common::pattern_vec(512 * 1024);
    let mut writer = live.try_clone().expect("clone");
    let sent = data.clone();
    let writing = std::thread::spawn(move || {
        writer
            .write_all(&sent)
            .expect("write through the dropped address");
        writer
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
    });
    let (echoed, end) = common::read_until_end(&mut live, Duration::from_secs(30));
    writing.join().expect("writer");
    assert_eq!(end, common::End::Eof);
    assert!(
        echoed == data,
        "the live pair lost or changed bytes ({} of {})",
        echoed.len(),
        data.len()
    );
    drop(live);
    // Its last pair closed, the address leaves /metrics altogether.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = common::scrape(fwd.metrics_addr());
        if !body.contains(&dropped) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a dropped address outlived its last pair in /metrics:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A name with two addresses of which only one is listened on: with the default attempts (three, since a
/// name may have several addresses), a client whose connect to the dead address is refused fails over to
/// the other address of the same name and never notices; the dead address is marked down.
#[test]
fn test_failover_moves_across_the_addresses_of_one_name() {
    let Some((entry, port, addrs)) = name_with_two_addresses("failover") else {
        return;
    };
    let _alive = greeter(addrs[1], "alive");
    let upstream = format!("{}:{port}", entry.name);
    let fwd = Forwarder::start(&["--upstream", &upstream, "--fall", "1"]);
    assert!(fwd.logs().contains("connect-attempts=3"), "{}", fwd.logs());
    assert_eq!(labels_of(&fwd, 4), vec![("alive".to_string(), 4)]);
    fwd.expect_log(
        &format!(
            "upstream {upstream} ({}) of route default is down",
            addrs[0]
        ),
        Duration::from_secs(5),
    );
    fwd.expect_log(
        &format!("failing over to upstream={upstream} ({})", addrs[1]),
        Duration::from_secs(5),
    );
}

/// A made-up name for 127.0.0.1 and ::1, with a port free on both (picked once the name is ours, so
/// that no other test of this file can take it meanwhile) and the name's addresses in the resolver's
/// order; `None`, having said why, where that cannot be done here.
fn name_with_two_addresses(label: &str) -> Option<(HostsEntry, u16, Vec<SocketAddr>)> {
    let entry = HostsEntry::made_up(label, &["127.0.0.1", "::1"], "have two addresses")?;
    let name = entry.name.clone();
    let port = port_free_on_both()?;
    let addrs: Vec<SocketAddr> = (name.as_str(), port)
        .to_socket_addrs()
        .expect("resolve the name just written")
        .collect();
    assert_eq!(
        addrs.len(),
        2,
        "{name} should have two addresses: {addrs:?}"
    );
    Some((entry, port, addrs))
}

/// A proxy allowing only `name`, with metrics.
fn connect_proxy(name: &str, extra: &[&str]) -> Forwarder {
    let allow = format!("{name}:*");
    let mut args = vec![
        "--mode",
        "connect",
        "--allow",
        &allow,
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Forwarder::start(&args)
}

/// Sends `CONNECT name:port` with `pipelined` bytes behind the head; returns the status line and the
/// reader positioned after the head.
fn send_connect(fwd: &Forwarder, target: &str, pipelined: &str) -> (String, BufReader<TcpStream>) {
    let mut client = connect(fwd.addr());
    write!(client, "CONNECT {target} HTTP/1.1\r\n\r\n{pipelined}").expect("write");
    let mut reader = BufReader::new(client);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status");
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("head") == 0 || line == "\r\n" {
            break;
        }
    }
    (status, reader)
}

/// A CONNECT to a name with two addresses, of which only the second (in the resolver's order) is
/// listened on: the connect to the first is refused, the proxy moves on to the second, and the client
/// gets its tunnel, with the bytes it pipelined behind the head delivered there once.
#[test]
fn test_connect_moves_on_to_the_next_address_of_a_name() {
    let Some((entry, port, addrs)) = name_with_two_addresses("next") else {
        return;
    };
    let _second = greeter(addrs[1], "second");
    let fwd = connect_proxy(&entry.name, &[]);
    let (status, mut reader) = send_connect(&fwd, &format!("{}:{port}", entry.name), "ping\n");
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
    let mut line = String::new();
    reader.read_line(&mut line).expect("greeting");
    assert_eq!(line, "second\n");
    line.clear();
    reader.read_line(&mut line).expect("echo");
    assert_eq!(line, "ping\n");
    fwd.expect_log(
        &format!("trying its next address {}", addrs[1]),
        Duration::from_secs(5),
    );
    let metrics = common::scrape(fwd.metrics_addr());
    assert_eq!(common::sample(&metrics, "edgefwd_failovers_total"), 1);
}

/// Each address of a name gets a connect timeout of its own: with both black-holed, the second is
/// tried once the first's timeout passes, and the client's 504 comes after the second's.
#[test]
fn test_each_address_of_a_name_gets_its_own_connect_timeout() {
    let Some((entry, port, addrs)) = name_with_two_addresses("timeout") else {
        return;
    };
    let _holes: Vec<Blackhole> = addrs.iter().map(|addr| Blackhole::at(*addr)).collect();
    let timeout = Duration::from_millis(400);
    let fwd = connect_proxy(&entry.name, &["--connect-timeout", "400ms"]);
    let started = Instant::now();
    let (status, _reader) = send_connect(&fwd, &format!("{}:{port}", entry.name), "");
    assert!(status.starts_with("HTTP/1.1 504 "), "{status}");
    assert!(
        started.elapsed() >= 2 * timeout,
        "504 after {:?}, before two connect timeouts",
        started.elapsed()
    );
    fwd.expect_log(
        &format!("trying its next address {}", addrs[1]),
        Duration::from_secs(5),
    );
}

/// A port nobody listens on, on 127.0.0.1 and on ::1 alike (found by trying a few); `None`, having said
/// that the test is skipped, where ::1 cannot be bound at all.
fn port_free_on_both() -> Option<u16> {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return None;
    }
    for _ in 0..50 {
        // Below the ephemeral range, so no test running in parallel is handed it meanwhile.
        let port = unused_port();
        if TcpListener::bind(("::1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return Some(port);
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

/// `--prewarm` connections are filed under their endpoint's slot. When one re-resolution drops an
/// address of one upstream (its slot freed at once: no pair on it) and gives another upstream a new
/// address (which takes the freed slot), the warm connections to the dropped address must close, not
/// pass for connections to the new one: every client reaches an address its names have now.
#[test]
fn test_a_warm_connection_to_a_dropped_address_never_serves_the_address_that_reuses_its_slot() {
    let Some(entry) = HostsEntry::made_up("warm", &["127.0.0.1"], "be made to change") else {
        return;
    };
    let name = entry.name.clone();
    let (Some(a), Some(b)) = (port_free_on_both(), port_free_on_both()) else {
        return;
    };
    assert_ne!(a, b, "two upstreams need two ports");
    let _a4 = greeter(SocketAddr::from(([127, 0, 0, 1], a)), "a4");
    let _a6 = greeter(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a)), "a6");
    let _b4 = greeter(SocketAddr::from(([127, 0, 0, 1], b)), "b4");
    let _b6 = greeter(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, b)), "b6");
    let (upstream_a, upstream_b) = (format!("{name}:{a}"), format!("{name}:{b}"));
    let fwd = re_resolving(&[&upstream_a, &upstream_b], &["--prewarm", "8"]);
    // The warm connections to both 127.0.0.1 endpoints are made and confirmed.
    std::thread::sleep(Duration::from_millis(700));

    entry.point_to(&["::1"]).expect("rewrite /etc/hosts");
    fwd.expect_log(
        &format!("now resolves to [::1]:{b}"),
        Duration::from_secs(10),
    );
    // All at once, so that the clients outrun the refill: with the stale connections still filed
    // under a live slot, some of them would be handed out.
    let clients: Vec<TcpStream> = (0..16).map(|_| connect(fwd.addr())).collect();
    let labels: Vec<String> = clients.into_iter().map(read_label).collect();
    assert!(
        labels.iter().all(|label| label == "a6" || label == "b6"),
        "clients reached addresses their names no longer have: {labels:?}"
    );
}

/// The first line a greeter sent on `client`.
fn read_label(client: TcpStream) -> String {
    let mut line = String::new();
    BufReader::new(client)
        .read_line(&mut line)
        .expect("greeting");
    line.trim_end().to_string()
}

/// `--listen NAME:PORT` binds every address the name has: a name for 127.0.0.1 and ::1 gets two
/// listeners, each with its start line, and each forwards.
#[test]
fn test_listen_name_binds_each_address() {
    let Some(entry) = HostsEntry::made_up("listen", &["127.0.0.1", "::1"], "have two addresses")
    else {
        return;
    };
    let echo = Backend::echo();
    let listen = format!("{}:0", entry.name);
    let fwd = Forwarder::start(&["--listen", &listen, "--upstream", &echo.upstream_arg()]);
    let bound: Vec<SocketAddr> = fwd
        .logs()
        .lines()
        .filter_map(common::parse_listen_addr)
        .collect();
    let mut ips: Vec<String> = bound.iter().map(|addr| addr.ip().to_string()).collect();
    ips.sort();
    assert_eq!(ips, ["127.0.0.1", "::1"], "{}", fwd.logs());
    for addr in bound {
        common::echo_roundtrip(addr, 64 * 1024, 8192);
    }
}
