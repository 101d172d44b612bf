//! The ClientHello reader (`edgefwd::wire::tls_hello`) against real hellos and against a reference
//! model (tests/common/model_tls.rs), in process, seeded, on stable Rust.
//!
//! - The corpus: every file in tests/corpus/tls/ (real hellos that `capture.py` there recorded from
//!   `openssl s_client` and `curl`, and any input that once showed a discrepancy) is judged whole and
//!   in every prefix by both, and the real ones give the name they were captured with.
//! - Differential: hellos generated from their structure (TLS 1.2 and 1.3 shapes, session ids,
//!   suites, compression lists, names valid and not, ALPN lists, ECH, `pre_shared_key`, unknown and
//!   repeated extensions, padding to the 16 KiB bound and past it), cut into records of random sizes,
//!   then (most of them) mutated: bit flips, byte changes, edits of the length fields, truncation,
//!   insertions, trailing bytes. Parser and model must give the same answer: incomplete, or the same
//!   hello (length, name, ALPN, ECH), or the same reason label. "Incomplete" only below the bound,
//!   and for one case in eight every prefix is compared too.
//!
//! `EDGEFWD_FUZZ_SEED` / `EDGEFWD_FUZZ_CASES` as in docs/fuzzing.md; a failure prints the input in hex
//! (`xxd -r -p` makes it a corpus file).

mod common;

use std::fs;
use std::path::Path;

use common::model_tls::{self, Verdict};
use common::wiregen::{self, cases_from_env, hex, seed_from_env, Gen};
use edgefwd::wire::tls_hello::{self, Parsed, MAX_HELLO};

/// Cases in a plain `cargo test` (which CI runs three times): a few seconds in a debug build.
const DEFAULT_CASES: usize = 20_000;

/// Parser against model on one input: `Err` describes the discrepancy.
fn check(input: &[u8]) -> Result<(), String> {
    let model = model_tls::judge(input);
    let parsed = tls_hello::parse(input);
    let agree = match (&model, &parsed) {
        (Verdict::Incomplete, Parsed::Incomplete) => true,
        (Verdict::Reject(rule), Parsed::Reject(reason)) => *rule == reason.label(),
        (
            Verdict::Accept {
                len,
                server_name,
                alpn,
                ech,
            },
            Parsed::Hello(hello),
        ) => {
            (*len, server_name, alpn, *ech)
                == (hello.len, &hello.server_name, &hello.alpn, hello.has_ech)
        }
        _ => false,
    };
    if !agree {
        return Err(format!("model says {model:?}, parser says {parsed:?}"));
    }
    if parsed == Parsed::Incomplete && input.len() >= MAX_HELLO {
        return Err(format!("incomplete at {} bytes", input.len()));
    }
    Ok(())
}

fn check_prefixes(input: &[u8]) -> Result<(), String> {
    (0..=input.len())
        .try_for_each(|cut| check(&input[..cut]).map_err(|e| format!("prefix {cut}: {e}")))
}

#[test]
fn test_corpus_agrees_with_the_model() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/tls");
    let mut files = 0;
    for entry in fs::read_dir(&dir).expect("tests/corpus/tls") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|ext| ext != "bin") {
            continue;
        }
        let input = fs::read(&path).expect("read");
        if let Err(e) = check_prefixes(&input) {
            panic!("{}: {e}\n{}", path.display(), hex(&input));
        }
        files += 1;
    }
    assert!(files >= 8, "only {files} corpus files");
}

/// The captured hellos give the names capture.py asked for.
#[test]
fn test_real_clients_names() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/tls");
    let long = format!("{}.{}", vec!["a".repeat(63); 3].join("."), "b".repeat(61));
    for (file, name) in [
        ("openssl-sni.bin", Some("api.example.com")),
        ("openssl-sni-alpn.bin", Some("www.example.com")),
        ("openssl-no-sni.bin", None),
        ("openssl-tls12.bin", Some("a.example.com")),
        ("openssl-tls13-pq-groups.bin", Some("b.example.com")),
        ("openssl-long-name.bin", Some(long.as_str())),
        ("curl-resolve.bin", Some("api.example.com")),
        ("curl-http11.bin", Some("web.example.org")),
    ] {
        let input = fs::read(dir.join(file)).expect(file);
        match tls_hello::parse(&input) {
            Parsed::Hello(hello) => {
                assert_eq!(hello.server_name.as_deref(), name, "{file}");
                assert_eq!(hello.len, input.len(), "{file}");
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn test_differential_against_the_model() {
    let seed = seed_from_env(0x7157_0018);
    let cases = cases_from_env(DEFAULT_CASES);
    let mut g = Gen::new(seed);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..cases {
        // Half the cases break no rule on purpose, so that hellos are accepted often too.
        let clean = g.odds(1, 2);
        let message = message(&mut g, clean);
        let mut input = records(&mut g, &message, clean);
        if !clean && g.odds(2, 3) {
            mutate(&mut g, &mut input);
        }
        if g.odds(1, 4) {
            input.extend(g.bytes(8));
        }
        let result = if g.odds(1, 8) && input.len() <= 2048 {
            check_prefixes(&input)
        } else {
            check(&input)
        };
        if let Err(e) = result {
            panic!("seed {seed:#x} case {case}: {e}\ninput {}", hex(&input));
        }
        match tls_hello::parse(&input) {
            Parsed::Hello(_) => accepted += 1,
            Parsed::Reject(_) => rejected += 1,
            Parsed::Incomplete => {}
        }
    }
    eprintln!("tls_hello: {cases} cases, {accepted} hellos, {rejected} rejected, seed {seed:#x}");
    // The generator must exercise both sides, or the comparison proves little.
    assert!(accepted > cases / 10 && rejected > cases / 10);
}

fn u16_len(data: &[u8]) -> Vec<u8> {
    [&(data.len() as u16).to_be_bytes()[..], data].concat()
}

/// One of `choices`: any of them, or only the first `valid` ones in a clean case.
fn choose<T: Copy>(g: &mut Gen, clean: bool, valid: usize, choices: &[T]) -> T {
    choices[g.below(if clean { valid } else { choices.len() })]
}

/// A ClientHello handshake message, header included; every rule kept when `clean`.
fn message(g: &mut Gen, clean: bool) -> Vec<u8> {
    let version: &[u8] = choose(g, clean, 3, &[&[3, 3], &[3, 1], &[3, 2], &[3, 4], &[2, 0]]);
    let session = vec![0x5a; choose(g, clean, 3, &[0, 32, 16, 33])];
    let suites =
        choose(g, clean, 3, &[1usize, 2, 17, 0]) * 2 + usize::from(!clean && g.odds(1, 20));
    let compression: &[u8] = choose(g, clean, 2, &[&[0], &[1, 0], &[1], &[]]);
    let mut body = [
        version,
        &[0x11; 32],
        &[session.len() as u8],
        &session,
        &u16_len(&vec![0x13; suites]),
        &[compression.len() as u8],
        compression,
    ]
    .concat();
    if !g.odds(1, 16) {
        body.extend(u16_len(&extensions(g, clean)));
    }
    let len = (body.len() as u32).to_be_bytes();
    [&[1, len[1], len[2], len[3]][..], &body].concat()
}

fn extensions(g: &mut Gen, clean: bool) -> Vec<u8> {
    let mut list: Vec<(u16, Vec<u8>)> = Vec::new();
    if !g.odds(1, 8) {
        list.push((0, server_name(g, clean)));
    }
    if g.odds(1, 2) {
        let names: Vec<u8> = (0..choose(g, clean, 3, &[1, 2, 3, 0]))
            .flat_map(|_| {
                let name = choose(g, clean, 3, &[&b"h2"[..], b"http/1.1", b"acme-tls/1", b""]);
                [&[name.len() as u8][..], name].concat()
            })
            .collect();
        list.push((16, u16_len(&names)));
    }
    for _ in 0..g.below(6) {
        let kind = g.pick(&[10u16, 13, 43, 45, 51, 0xfe0d, 21, 0x1a1a, 0, 16]);
        if !clean || list.iter().all(|(seen, _)| *seen != kind) {
            list.push((kind, g.bytes(20)));
        }
    }
    if g.odds(1, 50) {
        list.push((21, vec![0; 15_000 + g.below(1_500)]));
    }
    if g.odds(1, 4) {
        list.push((41, g.bytes(40)));
    }
    if !clean && g.odds(1, 8) {
        let at = g.below(list.len() + 1);
        list.insert(at, (41, vec![0; 4]));
    }
    list.iter()
        .flat_map(|(kind, data)| [&kind.to_be_bytes()[..], &u16_len(data)].concat())
        .collect()
}

fn server_name(g: &mut Gen, clean: bool) -> Vec<u8> {
    let name: Vec<u8> = match g.below(10) {
        _ if clean => wiregen::dns_name(g)
            .trim_end_matches('.')
            .as_bytes()
            .to_vec(),
        0 => g
            .pick(&[
                &b"127.0.0.1"[..],
                b"::1",
                b"a_b.example",
                b"",
                b"-a.b",
                b"a..b",
                b"x.1",
            ])
            .to_vec(),
        1 => g.bytes(12),
        _ => wiregen::dns_name(g).into_bytes(),
    };
    let entry = [&[u8::from(!clean && g.odds(1, 30))][..], &u16_len(&name)].concat();
    let entries = if !clean && g.odds(1, 30) {
        [entry.clone(), entry].concat()
    } else {
        entry
    };
    u16_len(&entries)
}

/// `message` cut into handshake records of random sizes and versions.
fn records(g: &mut Gen, message: &[u8], clean: bool) -> Vec<u8> {
    let most = g.pick(&[16384usize, 16384, 512, 64, 5, 1]);
    let mut out = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(1 + g.below(most)));
        let minor = if !clean && g.odds(1, 40) {
            0
        } else {
            1 + g.below(3) as u8
        };
        out.extend([&[22, 3, minor][..], &u16_len(chunk)].concat());
        rest = tail;
    }
    out
}

fn mutate(g: &mut Gen, input: &mut Vec<u8>) {
    for _ in 0..1 + g.below(3) {
        if input.is_empty() {
            return;
        }
        let i = g.below(input.len());
        match g.below(6) {
            0 => input[i] ^= 1 << g.below(8),
            1 => input[i] = g.pick(&[0u8, 1, 2, 3, 22, 0x40, 0xff, 0x2e, 0x41]),
            2 => input.truncate(i),
            3 => {
                let extra = g.bytes(4);
                input.splice(i..i, extra);
            }
            4 => {
                input.remove(i);
            }
            _ => {
                // A length field off by a little: the checks at every level meet it.
                let delta = g.pick(&[1u8, 2, 255]);
                input[i] = input[i].wrapping_add(delta);
            }
        }
    }
}
