//! `--splice`: the zero-copy path's own promises. (Every other end-to-end test also runs against it
//! with `EDGEFWD_TEST_SPLICE=1`, which `.ci/run` does.)

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{connect, echo_roundtrip, Backend, Forwarder, Options};

/// Spare pipes the reactor keeps (src/reactor.rs MAX_SPARE_PIPES), two fds each.
const MAX_SPARE_PIPE_FDS: usize = 2 * 32;

#[test]
fn test_splice_forwards_byte_exact_without_fallback() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--splice"]);
    echo_roundtrip(fwd.addr(), 8 << 20, 64 * 1024);
    let close = fwd.wait_for_close("client-fin", Duration::from_secs(10));
    assert_eq!(close.c2u, Some(8 << 20));
    assert_eq!(close.u2c, Some(8 << 20));
    assert_eq!(
        fwd.count_log("falls back to the ring"),
        0,
        "splice fell back on a plain TCP pair:\n{}",
        fwd.logs()
    );
}

#[test]
fn test_splice_idle_pairs_hold_no_pipes() {
    let echo = Backend::echo();
    let fwd = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--splice"]);
    let baseline = fwd.fd_count();
    let mut clients = Vec::new();
    for i in 0..100u32 {
        let mut client = connect(fwd.addr());
        let message = format!("hello {i}");
        client.write_all(message.as_bytes()).expect("write");
        let mut back = vec![0u8; message.len()];
        client.read_exact(&mut back).expect("echo");
        assert_eq!(back, message.as_bytes());
        clients.push(client);
    }
    // 100 idle pairs: two sockets each, plus at most the bounded pool of spare pipes. A pipe held per
    // direction would add 400 fds.
    let fds = fwd.fd_count();
    assert!(
        fds <= baseline + 2 * 100 + MAX_SPARE_PIPE_FDS,
        "{fds} fds for 100 idle pairs (baseline {baseline})"
    );
    drop(clients);
    assert!(
        common::wait_until(Duration::from_secs(10), || fwd.fd_count() <= baseline),
        "fds after every pair closed: {} (baseline {baseline}): spare pipes kept while idle",
        fwd.fd_count()
    );
}

#[test]
fn test_splice_falls_back_loudly_when_no_pipe_can_be_made() {
    let echo = Backend::echo();
    // Measure what the process needs with no pair, then allow exactly one pair's two sockets: pipe2
    // then fails with EMFILE and the pair must still forward, over the ring, saying so.
    let baseline = {
        let probe = Forwarder::start(&["--upstream", &echo.upstream_arg(), "--splice"]);
        probe.fd_count() as u64
    };
    let fwd = Forwarder::start_with(
        &[
            "--upstream",
            &echo.upstream_arg(),
            "--splice",
            "--max-connections",
            "1",
        ],
        &Options {
            nofile: Some(baseline + 2),
            ..Options::default()
        },
    );
    echo_roundtrip(fwd.addr(), 1 << 20, 16 * 1024);
    fwd.wait_for_close("client-fin", Duration::from_secs(10));
    fwd.expect_log("falls back to the ring", Duration::from_secs(5));
}
