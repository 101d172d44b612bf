//! A health probe's conversation, HAProxy's `tcp-check` in its simplest form: send `health_send`,
//! expect the answer to start with `health_expect`. Pure: the bytes as written in the configuration
//! ([`unescape`]) and the verdict on what the upstream answered ([`Expect`]); the probe's socket is
//! `reactor::probes`'.
//!
//! Both are at most [`MAX_BYTES`] long, so a probe writes and reads at most that much: the answer is
//! read only as far as the expected prefix goes, and the first byte that differs decides, without
//! waiting for the rest or for the timeout.

use std::fmt;

/// Most bytes a probe sends, and most it expects (and so reads).
pub const MAX_BYTES: usize = 1024;

/// The bytes `text` stands for: itself, with the escapes `\r`, `\n`, `\t`, `\\` and `\xHH` (two hex
/// digits, any byte). Empty, longer than [`MAX_BYTES`], or with any other `\`: an error naming the text.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let bad = |why: &str| format!("invalid probe text \"{text}\": {why}");
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        rest = tail;
        if first != b'\\' {
            bytes.push(first);
            continue;
        }
        let (&code, tail) = rest
            .split_first()
            .ok_or_else(|| bad("a lone \\ at the end"))?;
        rest = tail;
        let byte = match code {
            b'r' => b'\r',
            b'n' => b'\n',
            b't' => b'\t',
            b'\\' => b'\\',
            b'x' => {
                let hex = rest
                    .get(..2)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| bad("\\x takes two hex digits"))?;
                rest = &rest[2..];
                hex
            }
            other => {
                return Err(bad(&format!(
                    "unknown escape \\{} (use \\r \\n \\t \\\\ \\xHH)",
                    char::from(other)
                )))
            }
        };
        bytes.push(byte);
    }
    if bytes.is_empty() {
        return Err(bad("empty"));
    }
    if bytes.len() > MAX_BYTES {
        return Err(bad(&format!("longer than {MAX_BYTES} bytes")));
    }
    Ok(bytes)
}

/// What the answer so far says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The expected prefix came.
    Matched,
    /// A byte differs from it.
    Mismatch,
    /// Everything so far matches; more is needed.
    More,
}

/// The answer expected from the upstream, and what of it came so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    want: Vec<u8>,
    seen: Vec<u8>,
}

impl Expect {
    /// Expects an answer starting with `want` (from [`unescape`]: not empty, at most [`MAX_BYTES`]).
    pub fn new(want: Vec<u8>) -> Expect {
        Expect {
            seen: Vec::with_capacity(want.len()),
            want,
        }
    }

    /// How many more bytes it needs: a read asks for no more.
    pub fn wanted(&self) -> usize {
        self.want.len() - self.seen.len()
    }

    /// Takes the next bytes of the answer (those past the expected prefix are ignored).
    pub fn feed(&mut self, bytes: &[u8]) -> Verdict {
        let take = bytes.len().min(self.wanted());
        self.seen.extend_from_slice(&bytes[..take]);
        if !self.want.starts_with(&self.seen) {
            Verdict::Mismatch
        } else if self.seen.len() == self.want.len() {
            Verdict::Matched
        } else {
            Verdict::More
        }
    }
}

/// "expected "+PONG", got "-ERR""; bytes escaped as in the configuration.
impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected \"{}\", got \"{}\"",
            self.want.escape_ascii(),
            self.seen.escape_ascii()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_unescape_the_five_escapes() {
        assert_eq!(unescape("PING\\r\\n"), Ok(b"PING\r\n".to_vec()));
        assert_eq!(unescape("a\\tb\\\\c"), Ok(b"a\tb\\c".to_vec()));
        assert_eq!(unescape("\\x00\\xfF+"), Ok(vec![0, 0xff, b'+']));
        assert_eq!(unescape("+PONG"), Ok(b"+PONG".to_vec()));
    }

    #[test]
    fn test_unescape_refuses_naming_the_text() {
        for (text, why) in [
            ("", "empty"),
            ("PING\\", "lone \\"),
            ("\\q", "unknown escape \\q"),
            ("\\x4", "two hex digits"),
            ("\\xZZ", "two hex digits"),
        ] {
            let err = unescape(text).expect_err(text);
            assert!(err.contains(&format!("\"{text}\"")), "{err}");
            assert!(err.contains(why), "{err}");
        }
        assert!(unescape(&"x".repeat(MAX_BYTES)).is_ok());
        let err = unescape(&"x".repeat(MAX_BYTES + 1)).expect_err("too long");
        assert!(err.contains("longer than 1024 bytes"), "{err}");
    }

    #[test]
    fn test_expect_matches_a_prefix_in_pieces() {
        let mut expect = Expect::new(b"+PONG".to_vec());
        assert_eq!(expect.wanted(), 5);
        assert_eq!(expect.feed(b"+PO"), Verdict::More);
        assert_eq!(expect.wanted(), 2);
        assert_eq!(expect.feed(b"NG\r\nmore"), Verdict::Matched);
        assert_eq!(expect.wanted(), 0);
    }

    #[test]
    fn test_expect_first_differing_byte_decides() {
        let mut expect = Expect::new(b"+PONG".to_vec());
        assert_eq!(expect.feed(b"-E"), Verdict::Mismatch);
        assert_eq!(expect.to_string(), "expected \"+PONG\", got \"-E\"");
        let mut expect = Expect::new(b"OK\r\n".to_vec());
        assert_eq!(expect.feed(b"OK\n"), Verdict::Mismatch);
        assert_eq!(expect.to_string(), "expected \"OK\\r\\n\", got \"OK\\n\"");
    }

    /// Mutated probe texts: `unescape` never panics, and what it accepts is 1..=1024 bytes that, each
    /// written back as `\xHH`, read the same; an answer fed in two pieces gets the verdict its prefix
    /// deserves.
    #[test]
    fn test_fuzz_unescape_and_expect() {
        fn check(input: &[u8]) {
            let Ok(text) = std::str::from_utf8(input) else {
                return;
            };
            let Ok(bytes) = unescape(text) else {
                return;
            };
            assert!((1..=MAX_BYTES).contains(&bytes.len()));
            let hex: String = bytes.iter().map(|b| format!("\\x{b:02x}")).collect();
            assert_eq!(unescape(&hex).as_ref(), Ok(&bytes));
            let mut expect = Expect::new(bytes.clone());
            let (head, tail) = input.split_at(input.len() / 2);
            let first = expect.feed(head);
            let verdict = if first == Verdict::More {
                expect.feed(tail)
            } else {
                first
            };
            let answer: Vec<u8> = input.iter().copied().take(bytes.len()).collect();
            let expected = if !bytes.starts_with(&answer) {
                Verdict::Mismatch
            } else if answer.len() == bytes.len() {
                Verdict::Matched
            } else {
                Verdict::More
            };
            assert_eq!(verdict, expected);
        }
        let seeds: Vec<Vec<u8>> = ["PING\\r\\n", "+PONG", "\\x00\\xff\\t\\\\", "220 "]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert!(crate::fuzz::fuzz_budget("tcp_check", &seeds, check) > 0);
    }
}
