//! What in-kernel forwarding with a sockmap buys on this machine, before it is wired into the reactor:
//! one connection's request/response latency (rr1, 64-byte messages) and one-way bulk throughput, through
//! `direct` (no forwarder), a sockmap-redirected pair ([`edgefwd::datapath::sockmap`], the forwarder process doing
//! nothing), and the edgefwd binary on its epoll path (`--splice off`) and with `--splice always`.
//! Paths are interleaved round by round; medians and ratios to the epoll path are printed. Needs root for
//! the sockmap path (it is left out, with the reason, otherwise).
//!
//! `cargo bench --bench sockmap [-- ROUNDS]`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use edgefwd::datapath::sockmap::Offload;

const RR_TRIPS: usize = 20_000;
const RR_SIZE: usize = 64;
const BULK_BYTES: usize = 1 << 30;

type R<T> = Result<T, String>;

/// A backend on loopback, one thread per connection: echoes (rr), or discards and answers one byte once
/// `BULK_BYTES` have arrived (bulk: the time counts until the last byte reached the backend, not until
/// the client's last write returned, since the redirect path can queue far ahead of the reader).
fn backend(echo: bool) -> R<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("addr: {e}"))?;
    thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let _ = conn.set_nodelay(true);
            thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0;
                while let Ok(n) = conn.read(&mut buf) {
                    total += n;
                    if n == 0 || (echo && conn.write_all(&buf[..n]).is_err()) {
                        break;
                    }
                    if !echo && total >= BULK_BYTES && conn.write_all(b"k").is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// How a client reaches the backend.
enum Path {
    Direct,
    Sockmap(Offload),
    Edgefwd(&'static str),
}

impl Path {
    fn name(&self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Sockmap(_) => "sockmap",
            Path::Edgefwd("off") => "epoll",
            Path::Edgefwd(_) => "splice-always",
        }
    }

    /// A connected client socket to `backend` through this path, and what must live while it is used.
    fn connect(&self, backend: SocketAddr) -> R<(TcpStream, Keep)> {
        let client = match self {
            Path::Direct => return Ok((dial(backend)?, Keep::Nothing)),
            Path::Sockmap(offload) => {
                let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
                let client = dial(listener.local_addr().map_err(|e| e.to_string())?)?;
                let (front, _) = listener.accept().map_err(|e| e.to_string())?;
                let back = dial(backend)?;
                front.set_nodelay(true).map_err(|e| e.to_string())?;
                offload
                    .insert_pair(front.as_fd(), back.as_fd())
                    .map_err(|e| e.to_string())?;
                return Ok((
                    client,
                    Keep::Sockets {
                        _front: front,
                        _back: back,
                    },
                ));
            }
            Path::Edgefwd(splice) => {
                let port = TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(|e| e.to_string())?;
                let child = Command::new(env!("CARGO_BIN_EXE_edgefwd"))
                    .args([
                        "--listen",
                        &port.to_string(),
                        "--upstream",
                        &backend.to_string(),
                    ])
                    .args(["--splice", splice])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("start edgefwd: {e}"))?;
                let start = Instant::now();
                loop {
                    match dial(port) {
                        Ok(client) => break (client, Keep::Child(child)),
                        Err(_) if start.elapsed() < Duration::from_secs(10) => {
                            thread::sleep(Duration::from_millis(20))
                        }
                        Err(e) => return Err(format!("edgefwd did not listen: {e}")),
                    }
                }
            }
        };
        Ok(client)
    }
}

/// What keeps a path's forwarding alive: the redirected sockets, or the edgefwd process.
enum Keep {
    Nothing,
    Sockets { _front: TcpStream, _back: TcpStream },
    Child(Child),
}

impl Drop for Keep {
    fn drop(&mut self) {
        if let Keep::Child(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn dial(addr: SocketAddr) -> R<TcpStream> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// rr1: p50 and p99 of `RR_TRIPS` round trips, in microseconds.
fn rr1(path: &Path, backend: SocketAddr) -> R<(f64, f64)> {
    let (mut client, _keep) = path.connect(backend)?;
    let msg = [0x42u8; RR_SIZE];
    let mut back = [0u8; RR_SIZE];
    let mut times = Vec::with_capacity(RR_TRIPS);
    for _ in 0..RR_TRIPS {
        let t = Instant::now();
        client.write_all(&msg).map_err(|e| e.to_string())?;
        client.read_exact(&mut back).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[RR_TRIPS / 2], times[RR_TRIPS * 99 / 100]))
}

/// bulk: MB/s of `BULK_BYTES` sent one way to a discarding backend, timed until it has them all.
fn bulk(path: &Path, backend: SocketAddr) -> R<f64> {
    let (mut client, _keep) = path.connect(backend)?;
    let chunk = vec![0x17u8; 256 * 1024];
    let t = Instant::now();
    let mut sent = 0;
    while sent < BULK_BYTES {
        client.write_all(&chunk).map_err(|e| e.to_string())?;
        sent += chunk.len();
    }
    let mut done = [0u8; 1];
    client
        .read_exact(&mut done)
        .map_err(|e| format!("bulk answer: {e}"))?;
    Ok(sent as f64 / t.elapsed().as_secs_f64() / 1e6)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> R<()> {
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(5);
    let (echo, sink) = (backend(true)?, backend(false)?);
    let mut paths = vec![Path::Direct, Path::Edgefwd("off"), Path::Edgefwd("always")];
    match Offload::new(64) {
        Ok(offload) => paths.insert(1, Path::Sockmap(offload)),
        Err(e) => println!("sockmap left out: {e}"),
    }
    let mut results: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        paths.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        for (i, path) in paths.iter().enumerate() {
            let (p50, p99) = rr1(path, echo)?;
            let mbps = bulk(path, sink)?;
            println!(
                "round {round} {:>13}: rr1 p50 {p50:7.1} us p99 {p99:7.1} us  bulk {mbps:8.0} MB/s",
                path.name()
            );
            results[i].0.push(p50);
            results[i].1.push(p99);
            results[i].2.push(mbps);
        }
    }
    let at = |name: &str| paths.iter().position(|p| p.name() == name).unwrap_or(0);
    let (epoll, splice) = (at("epoll"), at("splice-always"));
    // Paired: each round's figure over the same round's epoll (splice for bulk) figure, then the median.
    let paired =
        |mine: &[f64], base: &[f64]| median(mine.iter().zip(base).map(|(m, b)| m / b).collect());
    println!("\nmedians over {rounds} interleaved rounds (median of the paired per-round ratios)");
    for (i, path) in paths.iter().enumerate() {
        let (p50, p99, mbps) = &results[i];
        println!(
            "{:>13}: rr1 p50 {:7.1} us ({:.2}x epoll)  p99 {:7.1} us ({:.2}x epoll)  bulk {:6.0} MB/s ({:.2}x epoll, {:.2}x splice)",
            path.name(),
            median(p50.clone()),
            paired(p50, &results[epoll].0),
            median(p99.clone()),
            paired(p99, &results[epoll].1),
            median(mbps.clone()),
            paired(mbps, &results[epoll].2),
            paired(mbps, &results[splice].2),
        );
    }
    Ok(())
}
