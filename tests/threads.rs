//! `--threads N`: independent reactors accepting from the same listening sockets, which no other
//! process can join.

mod common;

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use common::{
    connect, echo_roundtrip, log_counter, serve_forty, stats_total, two_reactors, Backend,
    Forwarder, Options,
};

#[test]
fn test_two_reactors_share_the_port_and_both_serve() {
    let echo = Backend::echo();
    let fwd = two_reactors(&echo.upstream_arg(), &[]);
    let (zero, one) = serve_forty(&fwd);
    assert!(
        zero > 0 && one > 0,
        "40 concurrent connections should be spread over both reactors: {zero} and {one}"
    );
}

/// A second process started on the address a `--threads 2` edgefwd listens on must fail as it
/// would against a single reactor (a SO_REUSEPORT group would have let it in, to take a share of
/// the clients unseen), and the first must go on serving every client.
fn second_process_is_refused(listen: &str) {
    let echo = Backend::echo();
    let fwd = two_reactors(&echo.upstream_arg(), &["--listen", listen]);
    let addr = fwd.addr().to_string();
    for threads in ["2", "1"] {
        let (code, stderr) = common::run_edgefwd_expect_fail(&[
            "--listen",
            &addr,
            "--upstream",
            &echo.upstream_arg(),
            "--threads",
            threads,
        ]);
        assert_eq!(
            code,
            Some(1),
            "second process, --threads {threads}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("cannot listen on {addr}"))
                && stderr.to_lowercase().contains("address already in use"),
            "second process, --threads {threads}: {stderr}"
        );
    }
    serve_forty(&fwd);
}

#[test]
fn test_second_process_with_threads_is_refused_ipv4() {
    second_process_is_refused("127.0.0.1:0");
}

#[test]
fn test_second_process_with_threads_is_refused_ipv6() {
    second_process_is_refused("[::1]:0");
}

/// A reload that adds a route on an address another process holds is rejected with "address in
/// use", even when that process's socket admits others into its SO_REUSEPORT group, and the holder
/// keeps all of its clients.
#[test]
fn test_reload_does_not_join_another_process_on_its_port() {
    let echo = Backend::echo();
    let holder =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    holder.set_reuse_port(true).expect("SO_REUSEPORT");
    holder
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    holder.listen(64).expect("listen");
    let held = holder
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let route = |name: &str, listen: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\nlisten = \"{listen}\"\nupstreams = [\"{}\"]\n",
            echo.upstream_arg()
        )
    };
    let file = common::ConfigFile::new(&route("web", "127.0.0.1:0"));
    let opts = Options {
        rust_log: Some("info".into()),
        ..Options::default()
    };
    let fwd = Forwarder::start_with(&["--config", file.path(), "--threads", "2"], &opts);
    file.write(&format!(
        "{}{}",
        route("web", "127.0.0.1:0"),
        route("api", &held.to_string())
    ));
    fwd.signal(libc::SIGHUP);
    assert!(
        fwd.wait_for_log("reload rejected", Duration::from_secs(10)),
        "a reload onto another process's port was not rejected:\n{}",
        fwd.logs()
    );
    let logs = fwd.logs();
    assert!(
        logs.contains(&format!("cannot listen on {held}"))
            && logs.to_lowercase().contains("address already in use"),
        "{logs}"
    );
    assert!(!logs.contains("route=api"), "{logs}");
    let holder = std::net::TcpListener::from(holder);
    holder.set_nonblocking(true).expect("nonblocking");
    for _ in 0..20 {
        let _client = connect(held);
        let accepted = common::wait_until(Duration::from_secs(5), || holder.accept().is_ok());
        assert!(accepted, "a client of the holder went elsewhere");
    }
    echo_roundtrip(fwd.addr(), 1000, 1000);
}

#[test]
fn test_metrics_sum_every_reactor() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&[
        "--upstream",
        &echo.upstream_arg(),
        "--threads",
        "3",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = fwd.metrics_addr();
    for _ in 0..30 {
        echo_roundtrip(fwd.addr(), 1000, 1000);
    }
    fwd.wait_for_n_closes(30, Duration::from_secs(10));
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            common::sample(&common::scrape(metrics), "edgefwd_accepts_total") == 30
        }),
        "accepts over all reactors"
    );
    assert_eq!(
        common::sample(
            &common::scrape(metrics),
            "edgefwd_bytes_total{direction=\"c2u\"}"
        ),
        30_000
    );
}

/// With `--threads 2`, every figure `/metrics` reports is the sum of what each reactor counted, as its
/// own stats lines tell (the board's merge for every metric is unit-tested in src/observe/metrics.rs).
#[test]
fn test_metrics_totals_are_the_sum_of_each_reactors_stats_lines() {
    let echo = Backend::echo();
    let fwd = two_reactors(&echo.upstream_arg(), &["--metrics", "127.0.0.1:0"]);
    let metrics = fwd.metrics_addr();
    let (zero, one) = serve_forty(&fwd);
    assert!(
        zero > 0 && one > 0,
        "both reactors must serve: {zero} and {one}"
    );
    let pairs = [
        ("accepts", "edgefwd_accepts_total"),
        ("reads", "edgefwd_reads_total"),
        ("writes", "edgefwd_writes_total"),
        ("c2u", "edgefwd_bytes_total{direction=\"c2u\""),
        ("u2c", "edgefwd_bytes_total{direction=\"u2c\""),
        ("closes", "edgefwd_closes_total{"),
    ];
    // A series prefix's total: `closes` sums the sample of every cause.
    let scraped = |body: &str, prefix: &str| -> u64 {
        body.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    };
    let mismatches = || -> Vec<String> {
        let (body, logs) = (common::scrape(metrics), fwd.logs());
        pairs
            .iter()
            .filter_map(|(key, prefix)| {
                let reactors = [stats_total(&logs, 0, key), stats_total(&logs, 1, key)];
                let total = scraped(&body, prefix);
                (reactors[0] + reactors[1] != total || total == 0)
                    .then(|| format!("{key}: reactors {reactors:?}, /metrics {total}"))
            })
            .collect()
    };
    let agreed = common::wait_until(Duration::from_secs(10), || mismatches().is_empty());
    assert!(agreed, "{:?}\n{}", mismatches(), fwd.logs());
}

#[test]
fn test_sigterm_stops_every_reactor() {
    let echo = Backend::echo();
    let mut fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--threads", "2"]);
    let mut held = connect(fwd.addr());
    held.write_all(b"ping").expect("write");
    let mut back = [0u8; 4];
    held.read_exact(&mut back).expect("echo");
    fwd.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(200));
    assert!(fwd.is_running(), "a live pair must be drained, not cut");
    drop(held);
    let status = fwd.wait_exit(Duration::from_secs(10)).expect("exit");
    let logs = fwd.logs();
    assert_eq!(status.code(), Some(0), "{logs}");
    let finished: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("] shutdown complete"))
        .collect();
    assert_eq!(finished.len(), 1, "one line for the process:\n{logs}");
    assert_eq!(log_counter(finished[0], "drained="), Some(1), "{logs}");
}

#[test]
fn test_reload_keeps_the_shared_port_of_every_reactor() {
    // The first reactor binds `:0` and its siblings bind the port it got; an unchanged file reloaded
    // on SIGHUP must leave every reactor on that one port. At debug, the siblings' lines show too.
    let echo = Backend::echo();
    let text = format!(
        "[[route]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{}\"]\n",
        echo.upstream_arg()
    );
    let file = common::ConfigFile::new(&text);
    let opts = Options {
        rust_log: Some("debug".into()),
        ..Options::default()
    };
    let fwd = Forwarder::start_with(
        &[
            "--config",
            file.path(),
            "--threads",
            "2",
            "--metrics",
            "127.0.0.1:0",
        ],
        &opts,
    );
    let metrics = fwd.metrics_addr();
    let listening = fwd.count_log("listening on");
    fwd.signal(libc::SIGHUP);
    assert!(
        common::wait_until(Duration::from_secs(10), || fwd.count_log("reload: ") >= 2),
        "both reactors reload:\n{}",
        fwd.logs()
    );
    let logs = fwd.logs();
    assert_eq!(
        fwd.count_log("listening on"),
        listening,
        "a reactor bound a new port on reload:\n{logs}"
    );
    assert_eq!(
        logs.lines()
            .filter(|line| line.contains("reload: ") && line.contains("~0"))
            .count(),
        2,
        "an unchanged route counted as changed:\n{logs}"
    );
    assert_eq!(
        common::sample(
            &common::scrape(metrics),
            "edgefwd_reloads_total{result=\"ok\"}"
        ),
        1,
        "one SIGHUP is one reload, however many reactors apply it"
    );
    for _ in 0..10 {
        echo_roundtrip(fwd.addr(), 1000, 1000);
    }
}

#[test]
fn test_reload_gives_an_added_route_one_port_in_every_reactor() {
    // A route added by a reload with port 0 on two addresses: the first reactor reads the file and
    // binds, the other accepts from the sockets it bound, each address from its own, as at start. At
    // debug, the sibling's lines show too.
    let echo = Backend::echo();
    let route = |name: &str, listen: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\nlisten = {listen}\nupstreams = [\"{}\"]\n",
            echo.upstream_arg()
        )
    };
    let web = route("web", "\"127.0.0.1:0\"");
    let file = common::ConfigFile::new(&web);
    let opts = Options {
        rust_log: Some("debug".into()),
        ..Options::default()
    };
    let fwd = Forwarder::start_with(&["--config", file.path(), "--threads", "2"], &opts);
    file.write(&format!(
        "{web}{}",
        route("api", "[\"127.0.0.1:0\", \"[::1]:0\"]")
    ));
    fwd.signal(libc::SIGHUP);
    let api_lines = || {
        fwd.logs()
            .lines()
            .filter(|line| line.contains("listening on") && line.contains("route=api"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(
        common::wait_until(Duration::from_secs(10), || api_lines().len() >= 4),
        "both reactors start the added route:\n{}",
        fwd.logs()
    );
    let addrs: Vec<std::net::SocketAddr> = api_lines()
        .iter()
        .filter_map(|line| line.split_whitespace().skip_while(|w| *w != "on").nth(1))
        .filter_map(|addr| addr.parse().ok())
        .collect();
    assert_eq!(addrs.len(), 4, "{:?}", api_lines());
    // Reactor 0 logs its two listeners before it hands them on.
    assert_eq!(
        addrs[..2],
        addrs[2..],
        "the reactors listen on different sockets for the added route"
    );
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6(), "{addrs:?}");
    for addr in &addrs[..2] {
        for _ in 0..10 {
            echo_roundtrip(*addr, 1000, 1000);
        }
    }
}
