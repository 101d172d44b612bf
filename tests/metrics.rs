//! What `--metrics` exposes, as a contract: every series with its name, help and type, pinned so that
//! a change to how metrics are declared cannot rename, drop or retype one unseen.

mod common;

use common::{scrape, Backend, Forwarder};

/// Every line of a scrape of a fresh forwarder with one upstream, values cut off, sorted. The upstream's
/// address is written `UPSTREAM`. Adding a metric adds its lines here.
const SERIES: &str = r#"
# HELP edgefwd_accept_pauses_exhausted_total accepting paused after EMFILE/ENFILE
# HELP edgefwd_accept_pauses_limit_total accepting stopped at --max-connections or the fd budget
# HELP edgefwd_accepts_total connections accepted
# HELP edgefwd_budget_yields_total pair runs re-queued after using their byte budget
# HELP edgefwd_bytes_total bytes forwarded
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
# TYPE edgefwd_budget_yields_total counter
# TYPE edgefwd_bytes_total counter
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
edgefwd_budget_yields_total
edgefwd_bytes_total{direction="c2u"}
edgefwd_bytes_total{direction="u2c"}
edgefwd_closes_total{cause="client-abort"}
edgefwd_closes_total{cause="client-fin"}
edgefwd_closes_total{cause="client-reset"}
edgefwd_closes_total{cause="connect-error"}
edgefwd_closes_total{cause="connect-refused"}
edgefwd_closes_total{cause="connect-timeout"}
edgefwd_closes_total{cause="fin-timeout"}
edgefwd_closes_total{cause="header-timeout"}
edgefwd_closes_total{cause="idle-timeout"}
edgefwd_closes_total{cause="max-duration"}
edgefwd_closes_total{cause="poller-error"}
edgefwd_closes_total{cause="rejected"}
edgefwd_closes_total{cause="shutdown"}
edgefwd_closes_total{cause="unresolved"}
edgefwd_closes_total{cause="upstream-fin"}
edgefwd_closes_total{cause="upstream-reset"}
edgefwd_connects_ok_total
edgefwd_events_per_poll_bucket{le="+Inf"}
edgefwd_events_per_poll_bucket{le="1"}
edgefwd_events_per_poll_bucket{le="1024"}
edgefwd_events_per_poll_bucket{le="1048576"}
edgefwd_events_per_poll_bucket{le="128"}
edgefwd_events_per_poll_bucket{le="131072"}
edgefwd_events_per_poll_bucket{le="16"}
edgefwd_events_per_poll_bucket{le="16384"}
edgefwd_events_per_poll_bucket{le="2"}
edgefwd_events_per_poll_bucket{le="2048"}
edgefwd_events_per_poll_bucket{le="256"}
edgefwd_events_per_poll_bucket{le="262144"}
edgefwd_events_per_poll_bucket{le="32"}
edgefwd_events_per_poll_bucket{le="32768"}
edgefwd_events_per_poll_bucket{le="4"}
edgefwd_events_per_poll_bucket{le="4096"}
edgefwd_events_per_poll_bucket{le="512"}
edgefwd_events_per_poll_bucket{le="524288"}
edgefwd_events_per_poll_bucket{le="64"}
edgefwd_events_per_poll_bucket{le="65536"}
edgefwd_events_per_poll_bucket{le="8"}
edgefwd_events_per_poll_bucket{le="8192"}
edgefwd_events_per_poll_count
edgefwd_events_per_poll_sum
edgefwd_events_total
edgefwd_failovers_total
edgefwd_lookups_total
edgefwd_loop_guard_trips_total
edgefwd_pairs_open
edgefwd_pairs_total
edgefwd_pipe_shortages_total
edgefwd_polls_total
edgefwd_proxy_header_rejected_total{reason="authority-too-long"}
edgefwd_proxy_header_rejected_total{reason="client-closed"}
edgefwd_proxy_header_rejected_total{reason="command"}
edgefwd_proxy_header_rejected_total{reason="crc32c"}
edgefwd_proxy_header_rejected_total{reason="crc32c-length"}
edgefwd_proxy_header_rejected_total{reason="crc32c-repeated"}
edgefwd_proxy_header_rejected_total{reason="family"}
edgefwd_proxy_header_rejected_total{reason="short-address"}
edgefwd_proxy_header_rejected_total{reason="signature"}
edgefwd_proxy_header_rejected_total{reason="ssl-short"}
edgefwd_proxy_header_rejected_total{reason="ssl-subtlv"}
edgefwd_proxy_header_rejected_total{reason="timeout"}
edgefwd_proxy_header_rejected_total{reason="tlv-overrun"}
edgefwd_proxy_header_rejected_total{reason="tlv-truncated"}
edgefwd_proxy_header_rejected_total{reason="too-long"}
edgefwd_proxy_header_rejected_total{reason="unique-id-too-long"}
edgefwd_proxy_header_rejected_total{reason="v1-address"}
edgefwd_proxy_header_rejected_total{reason="v1-bare-lf"}
edgefwd_proxy_header_rejected_total{reason="v1-fields"}
edgefwd_proxy_header_rejected_total{reason="v1-not-ascii"}
edgefwd_proxy_header_rejected_total{reason="v1-protocol"}
edgefwd_proxy_header_rejected_total{reason="v1-too-long"}
edgefwd_proxy_header_rejected_total{reason="version"}
edgefwd_read_bytes_bucket{le="+Inf"}
edgefwd_read_bytes_bucket{le="1"}
edgefwd_read_bytes_bucket{le="1024"}
edgefwd_read_bytes_bucket{le="1048576"}
edgefwd_read_bytes_bucket{le="128"}
edgefwd_read_bytes_bucket{le="131072"}
edgefwd_read_bytes_bucket{le="16"}
edgefwd_read_bytes_bucket{le="16384"}
edgefwd_read_bytes_bucket{le="2"}
edgefwd_read_bytes_bucket{le="2048"}
edgefwd_read_bytes_bucket{le="256"}
edgefwd_read_bytes_bucket{le="262144"}
edgefwd_read_bytes_bucket{le="32"}
edgefwd_read_bytes_bucket{le="32768"}
edgefwd_read_bytes_bucket{le="4"}
edgefwd_read_bytes_bucket{le="4096"}
edgefwd_read_bytes_bucket{le="512"}
edgefwd_read_bytes_bucket{le="524288"}
edgefwd_read_bytes_bucket{le="64"}
edgefwd_read_bytes_bucket{le="65536"}
edgefwd_read_bytes_bucket{le="8"}
edgefwd_read_bytes_bucket{le="8192"}
edgefwd_read_bytes_count
edgefwd_read_bytes_sum
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
edgefwd_upstream_active{route="default",upstream="UPSTREAM"}
edgefwd_upstream_connect_failures_total{route="default",upstream="UPSTREAM"}
edgefwd_upstream_up{route="default",upstream="UPSTREAM"}
edgefwd_warm_hits_total
edgefwd_warm_misses_total
edgefwd_write_bytes_bucket{le="+Inf"}
edgefwd_write_bytes_bucket{le="1"}
edgefwd_write_bytes_bucket{le="1024"}
edgefwd_write_bytes_bucket{le="1048576"}
edgefwd_write_bytes_bucket{le="128"}
edgefwd_write_bytes_bucket{le="131072"}
edgefwd_write_bytes_bucket{le="16"}
edgefwd_write_bytes_bucket{le="16384"}
edgefwd_write_bytes_bucket{le="2"}
edgefwd_write_bytes_bucket{le="2048"}
edgefwd_write_bytes_bucket{le="256"}
edgefwd_write_bytes_bucket{le="262144"}
edgefwd_write_bytes_bucket{le="32"}
edgefwd_write_bytes_bucket{le="32768"}
edgefwd_write_bytes_bucket{le="4"}
edgefwd_write_bytes_bucket{le="4096"}
edgefwd_write_bytes_bucket{le="512"}
edgefwd_write_bytes_bucket{le="524288"}
edgefwd_write_bytes_bucket{le="64"}
edgefwd_write_bytes_bucket{le="65536"}
edgefwd_write_bytes_bucket{le="8"}
edgefwd_write_bytes_bucket{le="8192"}
edgefwd_write_bytes_count
edgefwd_write_bytes_sum
edgefwd_write_drops_total
edgefwd_write_rearms_total
edgefwd_writes_short_total
edgefwd_writes_total
edgefwd_writes_would_block_total
"#;

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
        SERIES.trim(),
        "the /metrics series changed; if on purpose, update SERIES:\n{actual}"
    );
}
