//! The servers behind the forwarder: a one-connection bulk sink (optionally also a source)
//! on blocking threads; everything else uses the single-threaded mio echo server of
//! `support::echo`, which the tests share.
//!
//! They run in the bench process on the load-generator cores. They are built to cost less
//! than a forwarder per byte or per request: blocking 256 KiB reads for bulk (no poll at
//! all), one shared read buffer and no copy for echo, and a single
//! `memcmp` against the pattern to verify.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::pattern::{Pattern, MAX_CHUNK};
pub use crate::support::echo::EchoServer;
use crate::sys::wait_readable;
use crate::util::{fail, BenchError, BenchResult, Context};

/// How long a blocking socket may make no progress before the run is declared stalled
/// (a dead or wedged forwarder must not hang the benchmark).
pub const STALL: Duration = Duration::from_secs(15);

/// Binds a loopback listener on an ephemeral port.
pub fn loopback_listener() -> BenchResult<TcpListener> {
    TcpListener::bind("127.0.0.1:0").ctx("bind backend listener on 127.0.0.1:0")
}

/// Gives a blocking socket the stall timeouts and TCP_NODELAY.
pub fn prepare_blocking(s: &TcpStream) -> BenchResult<()> {
    s.set_read_timeout(Some(STALL)).ctx("set read timeout")?;
    s.set_write_timeout(Some(STALL)).ctx("set write timeout")?;
    s.set_nodelay(true).ctx("set TCP_NODELAY")
}

/// What a failed byte check says; [`is_data_error`] looks for it.
const CORRUPTED: &str = "corrupted stream";
/// What a stream of the wrong length says (cut short, or longer than sent).
const WRONG_LENGTH: &str = "stream ended after";

/// Whether `msg` is the error of a byte check (a corrupted stream, one of the wrong length) or of a
/// panic: a run that failed that way failed for that reason, whatever the other side said after it.
pub fn is_data_error(msg: &str) -> bool {
    msg.contains(CORRUPTED) || msg.contains(WRONG_LENGTH) || msg.contains("panicked")
}

/// A blocking socket call that made no progress for [`STALL`] (its timeout) says so in words, not
/// as EAGAIN: the forwarder stalled, or the other side stopped.
fn io_failure(e: io::Error, what: String) -> BenchError {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return BenchError(format!("{what}: no progress for {STALL:?}"));
    }
    BenchError(format!("{what}: {e}"))
}

/// Writes `total` bytes of the pattern to `s` in large chunks, then half-closes it.
pub fn send_pattern(s: &mut TcpStream, pattern: &Pattern, total: u64) -> BenchResult<()> {
    let mut sent = 0u64;
    while sent < total {
        let len = (total - sent).min(MAX_CHUNK as u64) as usize;
        match s.write(pattern.at(sent, len)) {
            Ok(0) => return fail(format!("peer closed after {sent} of {total} bytes")),
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure(e, format!("send after {sent} of {total} bytes"))),
        }
    }
    s.shutdown(Shutdown::Write)
        .ctx("shutdown(Write) after sending")
}

/// What a sink saw: the byte count (all verified) and when the end of stream arrived.
#[derive(Debug, Clone, Copy)]
pub struct SinkReport {
    pub bytes: u64,
    pub eof_at: Instant,
}

/// Reads `s` to end of stream, checking every byte against the pattern.
pub fn sink_pattern(s: &mut TcpStream, pattern: &Pattern, expect: u64) -> BenchResult<SinkReport> {
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut got = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !pattern.matches(got, &buf[..n]) {
                    return fail(format!(
                        "{CORRUPTED}: bytes {got}..{} differ",
                        got + n as u64
                    ));
                }
                got += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(io_failure(
                    e,
                    format!("receive after {got} of {expect} bytes"),
                ))
            }
        }
    }
    if got != expect {
        return fail(format!("{WRONG_LENGTH} {got} of {expect} bytes"));
    }
    Ok(SinkReport {
        bytes: got,
        eof_at: Instant::now(),
    })
}

/// Accepts one connection within `STALL`.
fn accept_one(listener: &TcpListener) -> BenchResult<TcpStream> {
    if !wait_readable(listener, STALL)? {
        return fail("backend: no connection arrived from the forwarder");
    }
    let (s, _) = listener.accept().ctx("backend accept")?;
    prepare_blocking(&s)?;
    Ok(s)
}

/// Starts the bulk backend: it accepts one connection, sinks `expect` bytes from it and,
/// when `source` is non-zero, at the same time sends `source` bytes back (duplex bulk).
pub fn start_bulk(
    pattern: Arc<Pattern>,
    expect: u64,
    source: u64,
) -> BenchResult<(SocketAddr, JoinHandle<BenchResult<SinkReport>>)> {
    let listener = loopback_listener()?;
    let addr = listener.local_addr().ctx("backend local_addr")?;
    let handle = std::thread::Builder::new()
        .name("bulk-backend".into())
        .spawn(move || {
            let mut conn = accept_one(&listener)?;
            let source_thread = if source > 0 {
                let mut tx = conn.try_clone().ctx("clone backend socket")?;
                let p = Arc::clone(&pattern);
                Some(std::thread::spawn(move || {
                    send_pattern(&mut tx, &p, source)
                }))
            } else {
                None
            };
            let report = sink_pattern(&mut conn, &pattern, expect);
            if let Some(t) = source_thread {
                match t.join() {
                    Ok(r) => r.ctx("backend source")?,
                    Err(_) => return fail("backend source thread panicked"),
                }
            }
            report.ctx("backend sink")
        })
        .ctx("spawn bulk backend thread")?;
    Ok((addr, handle))
}

/// The listen backlog of the echo server: the idle scenarios connect thousands in bursts.
const ECHO_BACKLOG: i32 = 8192;

/// Starts the echo server on one port of 127.0.0.1.
pub fn start_echo() -> BenchResult<EchoServer> {
    EchoServer::start(1, ECHO_BACKLOG).ctx("start the echo server")
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/compare.rs
mod tests {
    use super::*;

    /// Sends `bytes` over a real loopback connection and has the sink check them.
    fn sink(bytes: Vec<u8>, expect: u64) -> BenchResult<SinkReport> {
        let listener = loopback_listener()?;
        let addr = listener.local_addr().ctx("addr")?;
        let sender = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(&bytes).expect("write");
        });
        let (mut conn, _) = listener.accept().ctx("accept")?;
        prepare_blocking(&conn)?;
        let report = sink_pattern(&mut conn, &Pattern::new(), expect);
        sender.join().expect("sender");
        report
    }

    fn stream(len: usize) -> Vec<u8> {
        let p = Pattern::new();
        (0..len).map(|i| p.at(i as u64, 1)[0]).collect()
    }

    /// Every byte a sink reads is checked: a flipped bit anywhere, or a stream cut short, fails the
    /// run with the offending range.
    #[test]
    fn test_the_sink_checks_every_byte() {
        let len = 3 * MAX_CHUNK + 12_345;
        assert_eq!(
            sink(stream(len), len as u64).map(|r| r.bytes).ok(),
            Some(len as u64)
        );
        let mut bad = stream(len);
        bad[len - 2] ^= 0x10;
        let err = sink(bad, len as u64).expect_err("corruption passed").0;
        assert!(err.starts_with("corrupted stream: bytes"), "{err}");
        let err = sink(stream(len - 1), len as u64)
            .expect_err("short stream passed")
            .0;
        assert!(
            err.contains(&format!("stream ended after {} of {len} bytes", len - 1)),
            "{err}"
        );
        let err = sink(stream(len + 1), len as u64)
            .expect_err("long stream passed")
            .0;
        assert!(
            err.contains(&format!("stream ended after {} of {len} bytes", len + 1)),
            "{err}"
        );
        assert!(is_data_error(&err));
    }
}
