//! Distribution across several upstreams: each `--balance` algorithm, and weights, over real backends.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// One short echo exchange, then a clean close; waits until the forwarder has logged `closes_before + 1`
/// closes, so that the next connection is balanced with this one already gone.
fn short_exchange(fwd: &Forwarder, closes_before: usize) {
    echo_roundtrip(fwd.addr(), 16, 16);
    fwd.wait_for_n_closes(closes_before + 1, Duration::from_secs(10));
}

fn upstream_args<'a>(args: &mut Vec<&'a str>, upstreams: &'a [String]) {
    for upstream in upstreams {
        args.push("--upstream");
        args.push(upstream);
    }
}

/// An echo connection that stays open, proven established by one echoed byte.
fn held_connection(fwd: &Forwarder) -> TcpStream {
    let mut s = connect(fwd.addr());
    s.write_all(b"x").expect("write");
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte).expect("echo");
    s
}

#[test]
fn test_round_robin_spreads_evenly() {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::echo()).collect();
    let names: Vec<String> = backends.iter().map(Backend::upstream_arg).collect();
    let mut args = vec![];
    upstream_args(&mut args, &names);
    let fwd = Forwarder::start(&args);
    for i in 0..30 {
        short_exchange(&fwd, i);
    }
    let counts: Vec<usize> = backends.iter().map(Backend::accepted).collect();
    assert_eq!(counts, vec![10, 10, 10]);
}

#[test]
fn test_weights_shape_the_share() {
    let heavy = Backend::echo();
    let light = Backend::echo();
    let heavy_arg = format!("{},weight=3", heavy.upstream_arg());
    let fwd = Forwarder::start(&[
        "--upstream",
        &heavy_arg,
        "--upstream",
        &light.upstream_arg(),
    ]);
    for i in 0..40 {
        short_exchange(&fwd, i);
    }
    assert_eq!((heavy.accepted(), light.accepted()), (30, 10));
}

#[test]
fn test_least_conn_sends_new_clients_to_the_idle_backend() {
    let first = Backend::echo();
    let second = Backend::echo();
    let fwd = Forwarder::start(&[
        "--balance",
        "least-conn",
        "--upstream",
        &first.upstream_arg(),
        "--upstream",
        &second.upstream_arg(),
    ]);
    // Ties go round-robin, so the held connection lands on the first backend.
    let held = held_connection(&fwd);
    for i in 0..6 {
        short_exchange(&fwd, i);
    }
    assert_eq!(
        (first.accepted(), second.accepted()),
        (1, 6),
        "round-robin would have split the short ones 3/3"
    );
    drop(held);
}

#[test]
fn test_random_two_uses_every_backend() {
    let backends: Vec<Backend> = (0..2).map(|_| Backend::echo()).collect();
    let names: Vec<String> = backends.iter().map(Backend::upstream_arg).collect();
    let mut args = vec!["--balance", "random-two"];
    upstream_args(&mut args, &names);
    let fwd = Forwarder::start(&args);
    for i in 0..40 {
        short_exchange(&fwd, i);
    }
    let counts: Vec<usize> = backends.iter().map(Backend::accepted).collect();
    assert_eq!(counts.iter().sum::<usize>(), 40);
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
}

#[test]
fn test_source_hash_keeps_a_client_on_one_backend() {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::echo()).collect();
    let names: Vec<String> = backends.iter().map(Backend::upstream_arg).collect();
    let mut args = vec!["--balance", "source-hash"];
    upstream_args(&mut args, &names);
    let fwd = Forwarder::start(&args);
    for i in 0..12 {
        short_exchange(&fwd, i);
    }
    let counts: Vec<usize> = backends.iter().map(Backend::accepted).collect();
    assert!(
        counts.contains(&12),
        "one client address, one backend: {counts:?}"
    );
}

#[test]
fn test_bad_balance_and_weight_are_usage_errors() {
    let (code, stderr) = run_edgefwd_expect_fail(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
        "--balance",
        "round-robbin",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("round-robbin"), "{stderr}");
    let (code, stderr) = run_edgefwd_expect_fail(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9,weight=0",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("weight=0"), "{stderr}");
}
