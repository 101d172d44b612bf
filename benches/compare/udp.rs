//! `--udp`: UDP forwarding side by side (issue 18): edgefwd's `udp://` route, socat in UDP mode, a
//! tokio UDP forwarder, and `direct` (no forwarder), each in its own process, in front of one echo
//! backend in this process.
//!
//! Scenarios: 1 and 100 clients, 64 B and 1,400 B datagrams. Each client keeps [`WINDOW`] datagrams
//! in flight (a reply lets it send the next; a datagram unanswered for [`LOST_AFTER`] counts as lost),
//! so the load finds each forwarder's rate rather than imposing one. Reported: round trips per second
//! (each is two forwarded datagrams), the forwarder's CPU seconds (its process and its children,
//! from /proc) per million round trips, and the share of datagrams lost.
//!
//! The tokio forwarder is the one its docs lead to: a `UdpSocket` `recv_from` loop, a map from client
//! address to a connected upstream socket, and a task per session copying replies back with
//! `send_to`.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::util::{fail, sig3, BenchResult, Context};

/// Datagrams each client keeps in flight.
const WINDOW: usize = 8;
/// A datagram with no reply this long is lost.
const LOST_AFTER: Duration = Duration::from_millis(200);
/// Load before the measured window.
const WARMUP: Duration = Duration::from_millis(700);

/// One scenario: how many clients, how large their datagrams.
#[derive(Debug, Clone, Copy)]
struct Shape {
    clients: usize,
    size: usize,
}

const SHAPES: [Shape; 4] = [
    Shape {
        clients: 1,
        size: 64,
    },
    Shape {
        clients: 1,
        size: 1400,
    },
    Shape {
        clients: 100,
        size: 64,
    },
    Shape {
        clients: 100,
        size: 1400,
    },
];

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    round_trips_per_sec: f64,
    cpu_sec_per_million: f64,
    /// The kernel's part of `cpu_sec_per_million` (system time): the floor no user-space change
    /// lowers, which bounds how far ahead of a peer any forwarder built on the same syscalls can be.
    sys_sec_per_million: f64,
    loss: f64,
}

/// Runs every scenario against every peer and prints (and writes) the table.
pub fn run(opts: &Options) -> BenchResult<()> {
    let echo = Echo::start()?;
    let socat = Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !socat {
        eprintln!("udp: warning: socat is not installed; its rows are left out");
    }
    let peers: Vec<&str> = ["direct", "edgefwd", "socat", "tokio-udp"]
        .into_iter()
        .filter(|peer| socat || *peer != "socat")
        .collect();
    let window = opts.measure;
    let mut rows = Vec::new();
    for shape in SHAPES {
        for &peer in &peers {
            if opts
                .only
                .as_ref()
                .is_some_and(|only| !only.iter().any(|p| p == peer))
            {
                continue;
            }
            let figures = match Forwarder::start(peer, opts, echo.addr)? {
                None => measure(echo.addr, &[], shape, window)?,
                Some(fwd) => {
                    let result = measure(fwd.addr, &fwd.pids(), shape, window);
                    drop(fwd);
                    result?
                }
            };
            eprintln!(
                "udp {} clients x {} B, {peer}: {} rt/s, {} CPU s ({} sys) per 1M rt, loss {:.3}%",
                shape.clients,
                shape.size,
                sig3(figures.round_trips_per_sec),
                sig3(figures.cpu_sec_per_million),
                sig3(figures.sys_sec_per_million),
                figures.loss * 100.0
            );
            rows.push((shape, peer, figures));
        }
    }
    let table = render(&rows, window);
    print!("{table}");
    std::fs::create_dir_all(&opts.out_dir).ctx("create the results directory")?;
    let path = opts.out_dir.join("udp.md");
    std::fs::write(&path, &table).with_ctx(|| format!("write {}", path.display()))?;
    eprintln!("udp: table written to {}", path.display());
    echo.stop();
    Ok(())
}

fn render(rows: &[(Shape, &str, Figures)], window: Duration) -> String {
    let mut out = String::from(
        "| clients | datagram | peer | round trips/s | CPU s per 1M round trips | of which sys | loss |\n|---|---|---|---|---|---|---|\n",
    );
    for (shape, peer, f) in rows {
        out.push_str(&format!(
            "| {} | {} B | {peer} | {} | {} | {} | {:.3}% |\n",
            shape.clients,
            shape.size,
            sig3(f.round_trips_per_sec),
            if *peer == "direct" {
                "-".to_string()
            } else {
                sig3(f.cpu_sec_per_million)
            },
            if *peer == "direct" {
                "-".to_string()
            } else {
                sig3(f.sys_sec_per_million)
            },
            f.loss * 100.0
        ));
    }
    out.push_str(&format!(
        "\n{WINDOW} datagrams in flight per client, {}s measured after {}ms of warm-up; one echo backend thread.\n",
        window.as_secs_f64(),
        WARMUP.as_millis()
    ));
    out
}

/// Drives `shape` at `to` for the warm-up and `window`; CPU is that of `pids` and their children.
fn measure(to: SocketAddr, pids: &[u32], shape: Shape, window: Duration) -> BenchResult<Figures> {
    let mut clients: Vec<Client> = (0..shape.clients)
        .map(|_| Client::new())
        .collect::<io::Result<_>>()
        .ctx("client sockets")?;
    let payload = vec![0x5a_u8; shape.size];
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    let (mut cpu_start, mut counted_start) = (Cpu::default(), Counts::default());
    let mut measuring = false;
    let end = start + WARMUP + window;
    loop {
        let now = Instant::now();
        if !measuring && now >= start + WARMUP {
            measuring = true;
            cpu_start = tree_cpu_seconds(pids);
            counted_start = Counts::sum(&clients);
        }
        if now >= end {
            break;
        }
        for client in &mut clients {
            client.turn(to, &payload, &mut buf, now);
        }
    }
    let cpu = tree_cpu_seconds(pids).since(cpu_start);
    let counted = Counts::sum(&clients).since(&counted_start);
    let secs = window.as_secs_f64();
    let replies = counted.received as f64;
    Ok(Figures {
        round_trips_per_sec: replies / secs,
        cpu_sec_per_million: per_million(cpu.user + cpu.sys, replies),
        sys_sec_per_million: per_million(cpu.sys, replies),
        loss: if counted.sent > 0 {
            counted.lost as f64 / counted.sent as f64
        } else {
            0.0
        },
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    sent: u64,
    received: u64,
    lost: u64,
}

impl Counts {
    fn sum(clients: &[Client]) -> Counts {
        clients.iter().fold(Counts::default(), |acc, c| Counts {
            sent: acc.sent + c.counts.sent,
            received: acc.received + c.counts.received,
            lost: acc.lost + c.counts.lost,
        })
    }

    fn since(&self, before: &Counts) -> Counts {
        Counts {
            sent: self.sent - before.sent,
            received: self.received - before.received,
            lost: self.lost - before.lost,
        }
    }
}

/// One client socket with its window.
struct Client {
    socket: UdpSocket,
    in_flight: usize,
    last_progress: Instant,
    counts: Counts,
}

impl Client {
    fn new() -> io::Result<Client> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        Ok(Client {
            socket,
            in_flight: 0,
            last_progress: Instant::now(),
            counts: Counts::default(),
        })
    }

    /// Takes the replies that arrived, declares the window lost if it stalled, fills it again.
    fn turn(&mut self, to: SocketAddr, payload: &[u8], buf: &mut [u8], now: Instant) {
        while let Ok(len) = self.socket.recv(buf) {
            if len == payload.len() {
                self.counts.received += 1;
                self.in_flight = self.in_flight.saturating_sub(1);
                self.last_progress = now;
            }
        }
        if self.in_flight > 0 && now.duration_since(self.last_progress) > LOST_AFTER {
            self.counts.lost += self.in_flight as u64;
            self.in_flight = 0;
        }
        while self.in_flight < WINDOW {
            match self.socket.send_to(payload, to) {
                Ok(_) => {
                    self.counts.sent += 1;
                    if self.in_flight == 0 {
                        self.last_progress = now;
                    }
                    self.in_flight += 1;
                }
                Err(_) => break,
            }
        }
    }
}

/// The echo backend: one thread answering every datagram to its sender.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

impl Echo {
    fn start() -> BenchResult<Echo> {
        let socket = UdpSocket::bind("127.0.0.1:0").ctx("bind the echo backend")?;
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .ctx("echo timeout")?;
        let addr = socket.local_addr().ctx("echo address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..len], from);
                }
            }
        });
        Ok(Echo { addr, stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// A forwarder under test, as a child process.
struct Forwarder {
    child: Child,
    addr: SocketAddr,
}

impl Forwarder {
    /// Starts `peer` in front of `upstream`; `None` for `direct`.
    fn start(peer: &str, opts: &Options, upstream: SocketAddr) -> BenchResult<Option<Forwarder>> {
        let port = free_udp_port()?;
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = match peer {
            "direct" => return Ok(None),
            "edgefwd" => {
                let mut c = Command::new(&opts.edgefwd_bin);
                c.args(["--listen", &format!("udp://{listen}")])
                    .args(["--upstream", &format!("udp://{upstream}")])
                    .env("RUST_LOG", "warn");
                c
            }
            "socat" => {
                let mut c = Command::new("socat");
                c.arg(format!("UDP4-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
                    .arg(format!("UDP4:{upstream}"));
                c
            }
            "tokio-udp" => {
                let mut c = Command::new(std::env::current_exe().ctx("current_exe")?);
                c.args(["--role", "tokio-udp"])
                    .args(["--listen", &listen.to_string()])
                    .args(["--upstream", &upstream.to_string()]);
                c
            }
            other => return fail(format!("udp: unknown peer {other}")),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_ctx(|| format!("start {peer} (is it installed?)"))?;
        let fwd = Forwarder {
            child,
            addr: listen,
        };
        // Ready when a datagram comes back through it.
        let probe = UdpSocket::bind("127.0.0.1:0").ctx("probe socket")?;
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .ctx("probe timeout")?;
        let mut buf = [0u8; 16];
        for _ in 0..50 {
            let _ = probe.send_to(b"ready?", listen);
            if probe.recv(&mut buf).is_ok() {
                return Ok(Some(fwd));
            }
        }
        fail(format!("udp: {peer} never answered on {listen}"))
    }

    /// The forwarder's process id (its children are found from it).
    fn pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // socat's forked children outlive their parent: end them too.
        let children: Vec<String> = children_of(self.child.id())
            .iter()
            .map(u32::to_string)
            .collect();
        if !children.is_empty() {
            let _ = Command::new("kill").arg("-9").args(&children).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> BenchResult<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0").ctx("find a free port")?;
    Ok(socket.local_addr().ctx("free port")?.port())
}

/// Every process whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| stat_fields(*child).is_some_and(|f| f.0 == pid))
        .collect()
}

fn per_million(seconds: f64, replies: f64) -> f64 {
    if replies > 0.0 {
        seconds / replies * 1e6
    } else {
        0.0
    }
}

/// CPU seconds, user-space and kernel apart.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    user: f64,
    sys: f64,
}

impl Cpu {
    fn since(self, start: Cpu) -> Cpu {
        Cpu {
            user: self.user - start.user,
            sys: self.sys - start.sys,
        }
    }
}

/// (parent pid, (utime, stime) in ticks) of `pid`.
fn stat_fields(pid: u32) -> Option<(u32, (u64, u64))> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, (utime, stime)))
}

/// CPU seconds of `pids` and their children (socat forks one per client), user and system apart.
fn tree_cpu_seconds(pids: &[u32]) -> Cpu {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (mut user, mut sys) = (0, 0);
    for &pid in pids {
        let tree = stat_fields(pid)
            .into_iter()
            .chain(children_of(pid).into_iter().filter_map(stat_fields));
        for (_, (u, s)) in tree {
            user += u;
            sys += s;
        }
    }
    Cpu {
        user: user as f64 / hz,
        sys: sys as f64 / hz,
    }
}

/// `--role tokio-udp --listen ADDR --upstream ADDR`: the tokio UDP forwarder.
pub fn run_tokio_role(args: &[String]) -> BenchResult<()> {
    let value = |flag: &str| -> BenchResult<SocketAddr> {
        let at = args.iter().position(|a| a == flag);
        match at.and_then(|i| args.get(i + 1)) {
            Some(v) => v.parse().with_ctx(|| format!("tokio-udp: {flag} {v}")),
            None => fail(format!("tokio-udp: {flag} is required")),
        }
    };
    let (listen, upstream) = (value("--listen")?, value("--upstream")?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ctx("tokio runtime")?;
    runtime.block_on(tokio_forward(listen, upstream))
}

async fn tokio_forward(listen: SocketAddr, upstream: SocketAddr) -> BenchResult<()> {
    use tokio::net::UdpSocket;
    let socket = Arc::new(UdpSocket::bind(listen).await.ctx("tokio-udp: bind")?);
    eprintln!("tokio-udp: listening on {listen}");
    let mut sessions: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, client) = socket.recv_from(&mut buf).await.ctx("tokio-udp: recv")?;
        let session = match sessions.get(&client) {
            Some(session) => Arc::clone(session),
            None => {
                let session = Arc::new(UdpSocket::bind("127.0.0.1:0").await.ctx("bind")?);
                session.connect(upstream).await.ctx("connect")?;
                let (back, to) = (Arc::clone(&socket), Arc::clone(&session));
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(len) = to.recv(&mut buf).await {
                        let _ = back.send_to(&buf[..len], client).await;
                    }
                });
                sessions.insert(client, Arc::clone(&session));
                session
            }
        };
        let _ = session.send(&buf[..len]).await;
    }
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/compare.rs
mod tests {
    use super::*;

    /// This process's own /proc entry reads back: its parent, and CPU that only grows.
    #[test]
    fn test_stat_fields_of_this_process() {
        let me = std::process::id();
        let (ppid, (user, sys)) = stat_fields(me).expect("own stat");
        let ticks = user + sys;
        assert_eq!(ppid, std::os::unix::process::parent_id());
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {}
        let (_, (user, sys)) = stat_fields(me).expect("own stat");
        assert!(user + sys >= ticks);
    }

    /// The CPU of a process tree: this test process has used some, and it only grows.
    #[test]
    fn test_tree_cpu_seconds_reads_this_process() {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(100) {}
        let first = tree_cpu_seconds(&[std::process::id()]);
        assert!(first.user > 0.0, "a spinning loop is user time");
        let then = tree_cpu_seconds(&[std::process::id()]);
        assert!(then.user >= first.user && then.sys >= first.sys);
    }

    /// A client counts what it sent, what came back, and what it gave up on.
    #[test]
    fn test_client_window_and_loss() {
        let echo = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = echo.local_addr().expect("addr");
        let mut client = Client::new().expect("client");
        let payload = [1u8; 64];
        let mut buf = vec![0u8; 65_536];
        let start = Instant::now();
        client.turn(to, &payload, &mut buf, start);
        assert_eq!(
            (client.counts.sent, client.in_flight),
            (WINDOW as u64, WINDOW)
        );
        // Nobody answers: after LOST_AFTER the window is lost and sent again.
        client.turn(to, &payload, &mut buf, start + LOST_AFTER * 2);
        assert_eq!(client.counts.lost, WINDOW as u64);
        assert_eq!(client.counts.sent, 2 * WINDOW as u64);
        let before = Counts::sum(std::slice::from_ref(&client));
        assert_eq!(before.since(&before).sent, 0);
    }
}
