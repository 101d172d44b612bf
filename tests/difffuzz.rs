//! Differential fuzzing of the two greeting parsers against reference models written from the specs:
//! `proxy_protocol::parse` against tests/common/model_proxy.rs, `connect_request::parse` against
//! tests/common/model_connect.rs, on inputs from tests/common/wiregen.rs (valid headers of every kind,
//! then mutated, then followed by payload bytes). Stable Rust, in process, seeded.
//!
//! Properties, for every input: no panic; the parser answers exactly as the model does (incomplete,
//! accept or reject, and for CONNECT the status); an accepted header ends where the model says and
//! carries the fields the model reads (addresses; target host, port and credentials); the parser
//! answers "incomplete" only below its bound. For accepted inputs, every prefix of the header (all of
//! them for one case in eight (PROXY) or sixteen (CONNECT, whose heads are longer), three random ones
//! for the rest) is judged the same way, so no parser accepts early.
//!
//! Cases the rules leave open: none is allowed. The one the PROXY rules do leave open (rule 11: a v2
//! header that already breaks a rule before all its declared bytes are here may be refused at once or
//! when they are) is decided by the parser the way the model decides it, at once; the model marks
//! such a rejection `early`, which a failure message shows. docs/fuzzing.md lists where the rules were
//! silent and what the model (and so the parsers) chose.
//!
//! Every input in tests/corpus/{proxy,connect}/ (each one once found a discrepancy) is replayed first,
//! with all its prefixes. `EDGEFWD_FUZZ_SEED` replays a run and `EDGEFWD_FUZZ_CASES` makes it longer;
//! a failure prints the seed, the case number and the input in hex (`xxd -r -p` turns it into a
//! corpus file).

mod common;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::time::Instant;

use common::model_connect::{self, Host as ModelHost};
use common::model_proxy;
use common::wiregen::{self, hex, Gen, Wire};
use edgefwd::wire::connect_request::{self, Head, Host};
use edgefwd::wire::proxy_protocol::{self, Parsed};

/// Cases per parser in a plain `cargo test`.
const DEFAULT_CASES: usize = 200_000;

// ---------------------------------------------------------------------------------------------
// PROXY
// ---------------------------------------------------------------------------------------------

/// Parser against model on one input: `Err` describes the discrepancy.
fn proxy_check(input: &[u8]) -> Result<model_proxy::Verdict, String> {
    use model_proxy::Verdict;
    let model = model_proxy::judge(input);
    let parsed = panic::catch_unwind(|| proxy_protocol::parse(input))
        .map_err(|_| format!("parser panicked (model: {model:?})"))?;
    let agree = match (&model, &parsed) {
        (
            Verdict::Accept {
                header_len,
                source,
                destination,
            },
            Parsed::Done {
                header_len: len,
                source: src,
                destination: dst,
                ..
            },
        ) => header_len == len && source == src && destination == dst,
        (Verdict::Reject { .. }, Parsed::Invalid(..)) => true,
        (Verdict::Incomplete, Parsed::Incomplete) => true,
        _ => false,
    };
    if !agree {
        return Err(format!("model says {model:?}, parser says {parsed:?}"));
    }
    if parsed == Parsed::Incomplete && input.len() >= proxy_protocol::MAX_HEADER {
        return Err(format!(
            "incomplete at {} bytes, past the bound",
            input.len()
        ));
    }
    Ok(model)
}

/// The whole input, then prefixes of the header it holds if the model accepts it.
/// Whether the model accepted it.
fn proxy_case(input: &[u8], g: &mut Gen, all_prefixes: bool) -> Result<bool, String> {
    let model_proxy::Verdict::Accept { header_len, .. } = proxy_check(input)? else {
        return Ok(false);
    };
    for cut in cuts(g, header_len, all_prefixes) {
        proxy_check(&input[..cut]).map_err(|e| format!("prefix of {cut} bytes: {e}"))?;
    }
    Ok(true)
}

/// Every cut below `len`, or three random ones.
fn cuts(g: &mut Gen, len: usize, all: bool) -> Vec<usize> {
    if all {
        (0..len).collect()
    } else {
        (0..3).map(|_| g.below(len.max(1))).collect()
    }
}

#[test]
fn test_proxy_parser_matches_the_model() {
    let replayed = replay_corpus("proxy", |input| {
        for cut in 0..=input.len() {
            proxy_check(&input[..cut]).map_err(|e| format!("prefix of {cut} bytes: {e}"))?;
        }
        Ok(())
    });
    let (ran, accepted) = fuzz("proxy", 0xED6E_F0D0_0001, |g, case| {
        let mut wire = wiregen::proxy_header(g);
        if g.odds(3, 5) {
            wiregen::mutate(g, &mut wire);
        }
        let input = with_payload(g, wire, 64);
        let result = proxy_case(&input, g, case % 8 == 0);
        (input, result)
    });
    eprintln!("difffuzz proxy: {replayed} corpus inputs, {ran} cases, {accepted} accepted");
}

// ---------------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------------

fn connect_check(input: &[u8]) -> Result<model_connect::Verdict, String> {
    use model_connect::Verdict;
    let model = model_connect::judge(input);
    let parsed = panic::catch_unwind(|| connect_request::parse(input))
        .map_err(|_| format!("parser panicked (model: {model:?})"))?;
    let agree = match (&model, &parsed) {
        (
            Verdict::Accept {
                len,
                host,
                port,
                authorization,
            },
            Head::Done { len: got, request },
        ) => {
            let same_host = match (host, &request.host) {
                (ModelHost::Ip(a), Host::Ip(b)) => a == b,
                (ModelHost::Name(a), Host::Name(b)) => a == b,
                _ => false,
            };
            len == got
                && same_host
                && *port == request.port
                && *authorization == request.authorization
        }
        (Verdict::Reject { status, .. }, Head::Refuse(got)) => *status == got.code(),
        (Verdict::Incomplete, Head::Incomplete) => true,
        _ => false,
    };
    if !agree {
        return Err(format!("model says {model:?}, parser says {parsed:?}"));
    }
    if parsed == Head::Incomplete && input.len() >= connect_request::MAX_HEAD {
        return Err(format!(
            "incomplete at {} bytes, past the bound",
            input.len()
        ));
    }
    Ok(model)
}

fn connect_case(input: &[u8], g: &mut Gen, all_prefixes: bool) -> Result<bool, String> {
    let model_connect::Verdict::Accept { len, .. } = connect_check(input)? else {
        return Ok(false);
    };
    for cut in cuts(g, len, all_prefixes && len < 512) {
        connect_check(&input[..cut]).map_err(|e| format!("prefix of {cut} bytes: {e}"))?;
    }
    Ok(true)
}

#[test]
fn test_connect_parser_matches_the_model() {
    let replayed = replay_corpus("connect", |input| {
        let step = if input.len() > 1024 { 61 } else { 1 };
        for cut in (0..=input.len()).step_by(step).chain([input.len()]) {
            connect_check(&input[..cut]).map_err(|e| format!("prefix of {cut} bytes: {e}"))?;
        }
        Ok(())
    });
    let (ran, accepted) = fuzz("connect", 0xED6E_F0D0_0002, |g, case| {
        let mut wire = wiregen::connect_head(g, None);
        if g.odds(3, 5) {
            wiregen::mutate(g, &mut wire);
        }
        let input = with_payload(g, wire, 64);
        let result = connect_case(&input, g, case % 16 == 0);
        (input, result)
    });
    eprintln!("difffuzz connect: {replayed} corpus inputs, {ran} cases, {accepted} accepted");
}

// ---------------------------------------------------------------------------------------------
// The models themselves: fixed points from the specs
// ---------------------------------------------------------------------------------------------

/// The CRC-32C check value, and a few verdicts the specs state outright: if the model drifted, the
/// differential tests could agree with a parser that drifted the same way.
#[test]
fn test_models_against_spec_examples() {
    use model_proxy::Verdict as P;
    assert_eq!(model_proxy::crc32c(b"123456789"), 0xE306_9283);
    let v1 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
    assert!(matches!(
        model_proxy::judge(v1),
        P::Accept { header_len: 47, .. }
    ));
    for bad in [
        &b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n"[..],
        b"PROXY TCP6 192.168.0.1 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY UNKNOWN\0\r\n",
        b"PROXY TCP6 1:2:3:4:5:6:7:8::  1 2\r\n",
    ] {
        assert!(
            matches!(model_proxy::judge(bad), P::Reject { .. }),
            "{bad:?}"
        );
    }
    assert_eq!(model_proxy::judge(b"PROXY TCP4 1.2"), P::Incomplete);
    let mut v2 = model_proxy::SIGNATURE.to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 16, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x04, 0, 2,
    ]);
    let overrun = model_proxy::judge(&v2);
    assert_eq!(
        overrun,
        P::Reject {
            rule: "tlv-overrun",
            early: true
        }
    );
    v2[30] = 1;
    assert_eq!(model_proxy::judge(&v2), P::Incomplete);
    v2.push(0);
    assert!(matches!(
        model_proxy::judge(&v2),
        P::Accept { header_len: 32, .. }
    ));
    use model_connect::Verdict as C;
    let head = b"CONNECT server.example.com:80 HTTP/1.1\r\nHost: server.example.com\r\n\r\n";
    assert!(matches!(
        model_connect::judge(head),
        C::Accept { port: 80, .. }
    ));
    let status = |input: &[u8]| match model_connect::judge(input) {
        C::Reject { status, .. } => status,
        other => panic!("{other:?}"),
    };
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 405);
    assert_eq!(status(b"CONNECT a:1 HTTP/1.1\r\nX : y\r\n\r\n"), 400);
    assert_eq!(status(b"CONNECT a:1 HTTP/1.1\r\n folded\r\n\r\n"), 400);
    assert_eq!(status(b"CONNECT 1.2.3:1 HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status(&vec![b'a'; model_connect::MAX_HEAD]), 431);
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

fn with_payload(g: &mut Gen, wire: Wire, max: usize) -> Vec<u8> {
    let mut input = wire.bytes;
    input.extend(wiregen::payload(g, max));
    input
}

/// Runs `case` for the configured number of cases from the configured seed; panics after the first
/// discrepancies with everything needed to replay them. Returns (cases run, cases whose input the
/// model accepted), and fails if too few were accepted: the properties on accepted headers would
/// then go untested.
fn fuzz(
    name: &str,
    default_seed: u64,
    mut case: impl FnMut(&mut Gen, usize) -> (Vec<u8>, Result<bool, String>),
) -> (usize, usize) {
    let seed = wiregen::seed_from_env(default_seed);
    let cases = wiregen::cases_from_env(DEFAULT_CASES);
    let started = Instant::now();
    let mut g = Gen::new(seed);
    let (mut errors, mut accepted) = (0, 0);
    for n in 0..cases {
        let mut case_gen = g.fork();
        match case(&mut case_gen, n) {
            (_, Ok(true)) => accepted += 1,
            (_, Ok(false)) => {}
            (input, Err(e)) => {
                errors += 1;
                eprintln!(
                    "difffuzz {name}: seed {seed:#x}, case {n}: {e}\n  input ({} bytes): {}",
                    input.len(),
                    hex(&input)
                );
                if errors >= 5 {
                    break;
                }
            }
        }
    }
    assert_eq!(errors, 0, "difffuzz {name}: discrepancies (seed {seed:#x})");
    eprintln!(
        "difffuzz {name}: seed {seed:#x}, {cases} cases in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        accepted * 6 >= cases,
        "difffuzz {name}: only {accepted} of {cases} inputs were valid headers"
    );
    (cases, accepted)
}

/// Replays every file in tests/corpus/`dir`/ through `check`; returns how many there were.
fn replay_corpus(dir: &str, check: impl Fn(&[u8]) -> Result<(), String>) -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<_> = fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", path.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    for file in &files {
        let input = fs::read(file).expect("corpus file");
        let result = panic::catch_unwind(AssertUnwindSafe(|| check(&input)))
            .unwrap_or_else(|_| Err("panicked".to_string()));
        if let Err(e) = result {
            panic!("corpus {}: {e}\n  input: {}", file.display(), hex(&input));
        }
    }
    files.len()
}
