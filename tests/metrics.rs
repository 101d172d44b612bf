//! What `--metrics` exposes, as a contract: every series with its name, help and type, pinned so that
//! a change to how metrics are declared cannot rename, drop or retype one unseen.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{echo_roundtrip, sample, scrape, Backend, Forwarder, IO_TIMEOUT};

/// Every line of a scrape of a fresh forwarder with one upstream, values cut off, sorted. The upstream's
/// address is written `UPSTREAM`. Lines need not be sorted. Two lines stand for several ([`written_out`]): `HISTOGRAM NAME` for
/// the series of histogram NAME, and `NAME{LABEL=*} V1 V2 ...` for `NAME{LABEL="V1"}`, `NAME{LABEL="V2"}`
/// and so on. Adding a metric adds its lines here.
const SERIES: &str = r#"
# HELP edgefwd_accept_pauses_exhausted_total accepting paused after EMFILE/ENFILE
# HELP edgefwd_accept_pauses_limit_total accepting stopped at --max-connections or the fd budget
# HELP edgefwd_accepts_total connections accepted
# HELP edgefwd_access_log_dropped_total access log lines dropped because the writer's queue was full
# HELP edgefwd_budget_yields_total pair runs re-queued after using their byte budget
# HELP edgefwd_bytes_total bytes forwarded
# HELP edgefwd_client_rejects_total clients reset at arrival by client_allow/client_deny, a per-client limit or queue_timeout, by route and limit
# HELP edgefwd_closes_total connection pairs closed, by cause
# HELP edgefwd_connects_ok_total upstream connects that completed
# HELP edgefwd_events_per_poll events returned by one epoll_wait
# HELP edgefwd_events_total readiness events returned by epoll_wait
# HELP edgefwd_failovers_total failed upstream connects retried on another upstream, or on another address of a CONNECT destination
# HELP edgefwd_lookups_total answers from the CONNECT lookup threads (failures and skipped names included)
# HELP edgefwd_loop_guard_trips_total pair runs stopped by the loop guard
# HELP edgefwd_pairs_open connection pairs open now
# HELP edgefwd_pairs_total connection pairs opened
# HELP edgefwd_pipe_shortages_total times a direction found no pipe (fd budget, EMFILE) and used its ring
# HELP edgefwd_polls_total epoll_wait calls
# HELP edgefwd_proxy_header_rejected_total clients closed over their PROXY header (--accept-proxy), by reason
# HELP edgefwd_sni_rejected_total clients of an SNI listener closed before a route took them, by reason
# HELP edgefwd_sni_routed_total clients routed by the server name of their TLS ClientHello, by route and how (name or default)
# HELP edgefwd_read_bytes bytes moved by one read syscall
# HELP edgefwd_read_pauses_total times a blocked direction stopped read events on its socket (backpressure)
# HELP edgefwd_read_resumes_total times a muted socket was registered for reads again (a read found it drained)
# HELP edgefwd_reads_eof_total reads that returned EOF
# HELP edgefwd_reads_ring_full_total pump runs stalled on a full ring with the socket still readable
# HELP edgefwd_reads_short_total reads that returned less than the room offered (queue drained)
# HELP edgefwd_reads_total read syscalls
# HELP edgefwd_reads_would_block_total reads that returned WouldBlock
# HELP edgefwd_reloads_total SIGHUP reloads, by result
# HELP edgefwd_scrapes_total metrics scrapes served
# HELP edgefwd_splice_fallbacks_total directions that fell back from splice to the ring for good
# HELP edgefwd_splice_switches_total directions --splice auto moved from the ring to a pipe
# HELP edgefwd_spurious_wakeups_total loop turns that found nothing to do
# HELP edgefwd_udp_bytes_total UDP payload bytes forwarded
# HELP edgefwd_udp_datagrams_total UDP datagrams forwarded
# HELP edgefwd_udp_drops_total UDP datagrams dropped, by cause
# HELP edgefwd_udp_sessions_created_total UDP sessions opened (a datagram from a new client address)
# HELP edgefwd_udp_sessions_evicted_total UDP sessions closed for a new one at udp_max_sessions (least recently used first)
# HELP edgefwd_udp_sessions_expired_total UDP sessions closed after udp_idle_timeout without a datagram
# HELP edgefwd_udp_sessions_open UDP sessions open now
# HELP edgefwd_upstream_active connections open or connecting to the upstream endpoint
# HELP edgefwd_upstream_connect_failures_total connects and probes to the upstream endpoint that failed
# HELP edgefwd_upstream_up 1 if the upstream endpoint (an address of it) is up, 0 if health checking marked it down or its name does not resolve
# HELP edgefwd_warm_hits_total clients given a prewarmed upstream connection
# HELP edgefwd_warm_misses_total clients that found the prewarm pool empty
# HELP edgefwd_write_bytes bytes moved by one write syscall
# HELP edgefwd_write_drops_total times a writable socket stopped write events after a redundant EPOLLOUT edge
# HELP edgefwd_write_rearms_total times a socket was registered for writes again (a write found it full, or its reads were muted)
# HELP edgefwd_writes_short_total writes that took fewer bytes than offered
# HELP edgefwd_writes_total write syscalls
# HELP edgefwd_writes_would_block_total writes that returned WouldBlock
# TYPE edgefwd_accept_pauses_exhausted_total counter
# TYPE edgefwd_accept_pauses_limit_total counter
# TYPE edgefwd_accepts_total counter
# TYPE edgefwd_access_log_dropped_total counter
# TYPE edgefwd_budget_yields_total counter
# TYPE edgefwd_bytes_total counter
# TYPE edgefwd_client_rejects_total counter
# TYPE edgefwd_closes_total counter
# TYPE edgefwd_connects_ok_total counter
# TYPE edgefwd_events_per_poll histogram
# TYPE edgefwd_events_total counter
# TYPE edgefwd_failovers_total counter
# TYPE edgefwd_lookups_total counter
# TYPE edgefwd_loop_guard_trips_total counter
# TYPE edgefwd_pairs_open gauge
# TYPE edgefwd_pairs_total counter
# TYPE edgefwd_pipe_shortages_total counter
# TYPE edgefwd_polls_total counter
# TYPE edgefwd_proxy_header_rejected_total counter
# TYPE edgefwd_sni_rejected_total counter
# TYPE edgefwd_sni_routed_total counter
# TYPE edgefwd_read_bytes histogram
# TYPE edgefwd_read_pauses_total counter
# TYPE edgefwd_read_resumes_total counter
# TYPE edgefwd_reads_eof_total counter
# TYPE edgefwd_reads_ring_full_total counter
# TYPE edgefwd_reads_short_total counter
# TYPE edgefwd_reads_total counter
# TYPE edgefwd_reads_would_block_total counter
# TYPE edgefwd_reloads_total counter
# TYPE edgefwd_scrapes_total counter
# TYPE edgefwd_splice_fallbacks_total counter
# TYPE edgefwd_splice_switches_total counter
# TYPE edgefwd_spurious_wakeups_total counter
# TYPE edgefwd_udp_bytes_total counter
# TYPE edgefwd_udp_datagrams_total counter
# TYPE edgefwd_udp_drops_total counter
# TYPE edgefwd_udp_sessions_created_total counter
# TYPE edgefwd_udp_sessions_evicted_total counter
# TYPE edgefwd_udp_sessions_expired_total counter
# TYPE edgefwd_udp_sessions_open gauge
# TYPE edgefwd_upstream_active gauge
# TYPE edgefwd_upstream_connect_failures_total counter
# TYPE edgefwd_upstream_up gauge
# TYPE edgefwd_warm_hits_total counter
# TYPE edgefwd_warm_misses_total counter
# TYPE edgefwd_write_bytes histogram
# TYPE edgefwd_write_drops_total counter
# TYPE edgefwd_write_rearms_total counter
# TYPE edgefwd_writes_short_total counter
# TYPE edgefwd_writes_total counter
# TYPE edgefwd_writes_would_block_total counter
edgefwd_accept_pauses_exhausted_total
edgefwd_accept_pauses_limit_total
edgefwd_accepts_total
edgefwd_access_log_dropped_total
edgefwd_budget_yields_total
edgefwd_bytes_total{direction="c2u"}
edgefwd_bytes_total{direction="u2c"}
edgefwd_closes_total{cause=*} admin client-abort client-fin client-reset connect-error connect-refused connect-timeout fin-timeout header-timeout idle-timeout max-duration poller-error rejected shutdown unresolved upstream-fin upstream-reset
edgefwd_connects_ok_total
HISTOGRAM edgefwd_events_per_poll
edgefwd_events_total
edgefwd_failovers_total
edgefwd_lookups_total
edgefwd_loop_guard_trips_total
edgefwd_pairs_open
edgefwd_pairs_total
edgefwd_pipe_shortages_total
edgefwd_polls_total
edgefwd_proxy_header_rejected_total{reason=*} authority-too-long client-closed command crc32c crc32c-length crc32c-repeated family short-address signature ssl-short ssl-subtlv timeout tlv-overrun tlv-truncated too-long unique-id-too-long v1-address v1-bare-lf v1-fields v1-not-ascii v1-protocol v1-too-long version
edgefwd_sni_rejected_total{reason=*} not-handshake record-version record-length handshake-type too-long trailing-data hello-version session-id cipher-suites compression extensions duplicate-extension psk-not-last server-name server-name-syntax alpn no-route route-full timeout client-closed
HISTOGRAM edgefwd_read_bytes
edgefwd_read_pauses_total
edgefwd_read_resumes_total
edgefwd_reads_eof_total
edgefwd_reads_ring_full_total
edgefwd_reads_short_total
edgefwd_reads_total
edgefwd_reads_would_block_total
edgefwd_reloads_total{result="ok"}
edgefwd_reloads_total{result="rejected"}
edgefwd_scrapes_total
edgefwd_splice_fallbacks_total
edgefwd_splice_switches_total
edgefwd_spurious_wakeups_total
edgefwd_udp_bytes_total{direction="c2u"}
edgefwd_udp_bytes_total{direction="u2c"}
edgefwd_udp_datagrams_total{direction="c2u"}
edgefwd_udp_datagrams_total{direction="u2c"}
edgefwd_udp_drops_total{cause=*} upstream_would_block client_would_block upstream_refused no_upstream no_socket send_error
edgefwd_udp_sessions_created_total
edgefwd_udp_sessions_evicted_total
edgefwd_udp_sessions_expired_total
edgefwd_udp_sessions_open
edgefwd_upstream_active{route="default",upstream="UPSTREAM"}
edgefwd_upstream_connect_failures_total{route="default",upstream="UPSTREAM"}
edgefwd_upstream_up{route="default",upstream="UPSTREAM"}
edgefwd_warm_hits_total
edgefwd_warm_misses_total
HISTOGRAM edgefwd_write_bytes
edgefwd_write_drops_total
edgefwd_write_rearms_total
edgefwd_writes_short_total
edgefwd_writes_total
edgefwd_writes_would_block_total
# HELP edgefwd_route_accepts_total connections accepted, by route
# TYPE edgefwd_route_accepts_total counter
# HELP edgefwd_route_pairs_total connection pairs opened, by route
# TYPE edgefwd_route_pairs_total counter
# HELP edgefwd_route_connects_ok_total upstream connects that completed, by route
# TYPE edgefwd_route_connects_ok_total counter
# HELP edgefwd_route_connect_failures_total upstream connect attempts that failed (refused, timed out, or not started), by route
# TYPE edgefwd_route_connect_failures_total counter
# HELP edgefwd_route_failovers_total failed upstream connects retried on another upstream or address, by route
# TYPE edgefwd_route_failovers_total counter
# HELP edgefwd_route_bytes_total bytes forwarded, by route and direction
# TYPE edgefwd_route_bytes_total counter
# HELP edgefwd_route_closes_total connection pairs closed, by route and cause
# TYPE edgefwd_route_closes_total counter
# HELP edgefwd_upstream_connect_seconds time from the start of an upstream connect attempt to its completion, by route
# TYPE edgefwd_upstream_connect_seconds histogram
# HELP edgefwd_connection_duration_seconds time from accept to close of a connection pair, by route
# TYPE edgefwd_connection_duration_seconds histogram
# HELP edgefwd_upstream_connects_ok_total connects to the upstream endpoint that completed
# TYPE edgefwd_upstream_connects_ok_total counter
# HELP edgefwd_upstream_bytes_total bytes forwarded with the upstream endpoint, by direction
# TYPE edgefwd_upstream_bytes_total counter
# HELP edgefwd_upstream_closes_total connection pairs closed while connected or connecting to the upstream endpoint, by cause
# TYPE edgefwd_upstream_closes_total counter
edgefwd_route_accepts_total{route="default"}
edgefwd_route_pairs_total{route="default"}
edgefwd_route_connects_ok_total{route="default"}
edgefwd_route_connect_failures_total{route="default"}
edgefwd_route_failovers_total{route="default"}
edgefwd_route_bytes_total{route="default",direction=*} c2u u2c
edgefwd_route_closes_total{route="default",cause=*} admin client-abort client-fin client-reset connect-error connect-refused connect-timeout fin-timeout header-timeout idle-timeout max-duration poller-error rejected shutdown unresolved upstream-fin upstream-reset
edgefwd_upstream_connect_seconds_bucket{route="default",le=*} 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf
edgefwd_upstream_connect_seconds_count{route="default"}
edgefwd_upstream_connect_seconds_sum{route="default"}
edgefwd_connection_duration_seconds_bucket{route="default",le=*} 0.001 0.01 0.1 1 10 60 300 3600 86400 +Inf
edgefwd_connection_duration_seconds_count{route="default"}
edgefwd_connection_duration_seconds_sum{route="default"}
edgefwd_upstream_connects_ok_total{route="default",upstream="UPSTREAM"}
edgefwd_upstream_bytes_total{route="default",upstream="UPSTREAM",direction=*} c2u u2c
edgefwd_upstream_closes_total{route="default",upstream="UPSTREAM",cause=*} admin client-abort client-fin client-reset connect-error connect-refused connect-timeout fin-timeout header-timeout idle-timeout max-duration poller-error rejected shutdown unresolved upstream-fin upstream-reset
"#;

/// The upper bounds of every histogram's buckets: powers of two up to 1 MiB, then `+Inf`.
const BUCKET_BOUNDS: [&str; 22] = [
    "1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024", "2048", "4096", "8192",
    "16384", "32768", "65536", "131072", "262144", "524288", "1048576", "+Inf",
];

/// The series of histogram `name`: a bucket per bound, its count and its sum.
fn histogram_series(name: &str) -> Vec<String> {
    let buckets = BUCKET_BOUNDS
        .iter()
        .map(|le| format!("{name}_bucket{{le=\"{le}\"}}"));
    buckets
        .chain([format!("{name}_count"), format!("{name}_sum")])
        .collect()
}

/// The series one line of [`SERIES`] stands for.
fn written_out(line: &str) -> Vec<String> {
    if let Some(name) = line.strip_prefix("HISTOGRAM ") {
        return histogram_series(name);
    }
    match line.split_once("=*} ") {
        Some((name_and_label, values)) => values
            .split(' ')
            .map(|value| format!("{name_and_label}=\"{value}\"}}"))
            .collect(),
        None => vec![line.to_string()],
    }
}

/// [`SERIES`] written out, sorted as [`shape`] sorts a scrape.
fn pinned() -> String {
    let mut lines: Vec<String> = SERIES.trim().lines().flat_map(written_out).collect();
    lines.sort();
    lines.join("\n")
}

/// The scrape's lines without their values (the text after the last space of a sample), sorted, with the
/// upstream's address replaced by `UPSTREAM`.
fn shape(body: &str, upstream: &str) -> String {
    let mut lines: Vec<String> = body
        .lines()
        .map(|line| {
            let line = line.replace(upstream, "UPSTREAM");
            if line.starts_with('#') {
                line
            } else {
                line.rsplit_once(' ')
                    .map_or(line.clone(), |(name, _)| name.to_string())
            }
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

#[test]
fn test_metrics_series_are_pinned() {
    let backend = Backend::echo();
    let upstream = backend.upstream_arg();
    let fwd = Forwarder::start(&["--upstream", &upstream, "--metrics", "127.0.0.1:0"]);
    let actual = shape(&scrape(fwd.metrics_addr()), &upstream);
    assert_eq!(
        actual,
        pinned(),
        "the /metrics series changed; if on purpose, update SERIES:\n{actual}"
    );
}

/// A real scrape passes `promtool check metrics` (Prometheus's own linter: names, units, suffixes,
/// histogram shape) after traffic on two routes, connect failures and closes of several causes.
#[test]
fn test_scrape_passes_promtool() {
    if Command::new("promtool").arg("--version").output().is_err() {
        // .ci/run installs promtool: in CI a missing linter is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI"
        );
        eprintln!("SKIPPED test_scrape_passes_promtool: promtool is missing (.ci/run installs it)");
        return;
    }
    let echo = Backend::echo();
    let dead = common::refused_addr();
    let file = common::ConfigFile::new(&format!(
        "[[route]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{}\"]\n\
         [[route]]\nname = \"dead\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{dead}\"]\n",
        echo.upstream_arg()
    ));
    let fwd = Forwarder::start(&["--config", file.path(), "--metrics", "127.0.0.1:0"]);
    let (web, dead_route) = (fwd.route_addr("web"), fwd.route_addr("dead"));
    echo_roundtrip(web, 200_000, 16 * 1024);
    let mut aborted = common::connect(web);
    aborted.write_all(b"ping").expect("write");
    common::reset(aborted);
    // Reset at once, the client may see it as its connect fails.
    if let Ok(mut refused) = common::try_connect(dead_route) {
        common::expect_closed_without_data(&mut refused, IO_TIMEOUT);
    }
    fwd.wait_for_close("client-reset", Duration::from_secs(10));
    let body = scrape(fwd.metrics_addr());
    for series in [
        "edgefwd_route_closes_total{route=\"web\",cause=\"client-fin\"}",
        "edgefwd_route_closes_total{route=\"web\",cause=\"client-reset\"}",
        "edgefwd_route_closes_total{route=\"dead\",cause=\"connect-refused\"}",
        "edgefwd_route_connect_failures_total{route=\"dead\"}",
        "edgefwd_upstream_connect_seconds_count{route=\"web\"}",
        "edgefwd_connection_duration_seconds_count{route=\"web\"}",
    ] {
        assert!(sample(&body, series) > 0, "{series} not counted:\n{body}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let output = promtool.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{body}"
    );
}
