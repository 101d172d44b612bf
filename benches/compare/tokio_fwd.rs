//! The tokio baseline forwarder, run as its own process (`--role tokio-current|tokio-multi`)
//! so that its CPU time and memory are measured from /proc exactly like edgefwd's.
//!
//! It is the straightforward tokio forwarder a reader would write: accept, connect, set
//! TCP_NODELAY on both sides, `copy_bidirectional_with_sizes` with edgefwd's buffer size.
//! Like edgefwd it prints `listening on ADDR ` on stderr, so one parser serves both.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::sys::raise_nofile_limit;
use crate::util::{fail, parse_size, BenchResult, Context};

/// Which tokio runtime runs the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `current_thread`: one thread, like edgefwd's reactor.
    Current,
    /// `multi_thread` with 2 workers (work stealing).
    Multi,
}

impl Flavor {
    pub fn role_name(self) -> &'static str {
        match self {
            Flavor::Current => "tokio-current",
            Flavor::Multi => "tokio-multi",
        }
    }
}

/// Worker threads of the multi-thread flavour (the issue fixes it at 2).
const MULTI_WORKERS: usize = 2;

/// Same default as edgefwd's `--connect-timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The parsed `--role` command line.
struct RoleArgs {
    flavor: Flavor,
    listen: SocketAddr,
    upstream: SocketAddr,
    buffer_size: usize,
}

/// Entry point when the bench binary is re-executed with `--role ...`.
pub fn run_role(args: &[String]) -> BenchResult<()> {
    let role = parse_role_args(args)?;
    // The bench raised its own limit already and children inherit it; raising again keeps
    // the role usable when it is started by hand.
    raise_nofile_limit()?;
    let runtime = match role.flavor {
        Flavor::Current => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Flavor::Multi => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(MULTI_WORKERS)
            .enable_all()
            .build(),
    }
    .ctx("build tokio runtime")?;
    runtime.block_on(serve(role))
}

fn parse_role_args(args: &[String]) -> BenchResult<RoleArgs> {
    let mut flavor = None;
    let mut listen = None;
    let mut upstream = None;
    let mut buffer_size = 64 * 1024;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            return fail(format!("role: {flag} needs a value"));
        };
        match flag.as_str() {
            "--role" => {
                flavor = Some(match value.as_str() {
                    "tokio-current" => Flavor::Current,
                    "tokio-multi" => Flavor::Multi,
                    other => return fail(format!("role: unknown role {other:?}")),
                })
            }
            "--listen" => {
                listen = Some(
                    value
                        .parse()
                        .with_ctx(|| format!("role: --listen {value}"))?,
                )
            }
            "--upstream" => {
                upstream = Some(
                    value
                        .parse()
                        .with_ctx(|| format!("role: --upstream {value}"))?,
                )
            }
            "--buffer-size" => buffer_size = parse_size(value)?,
            other => return fail(format!("role: unknown flag {other:?}")),
        }
    }
    match (flavor, listen, upstream) {
        (Some(flavor), Some(listen), Some(upstream)) => Ok(RoleArgs {
            flavor,
            listen,
            upstream,
            buffer_size,
        }),
        _ => fail("role: need --role, --listen and --upstream"),
    }
}

/// Accept loop. An accept error (EMFILE in the idle test) backs off 100 ms instead of
/// spinning, as edgefwd does.
async fn serve(role: RoleArgs) -> BenchResult<()> {
    let listener = TcpListener::bind(role.listen)
        .await
        .with_ctx(|| format!("cannot listen on {}", role.listen))?;
    let bound = listener.local_addr().ctx("local_addr")?;
    eprintln!(
        "{}: listening on {bound} (upstream {})",
        role.flavor.role_name(),
        role.upstream
    );
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(forward(client, role.upstream, role.buffer_size));
            }
            Err(e) => {
                eprintln!("{}: accept: {e}", role.flavor.role_name());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection pair: connect upstream, then copy both ways until both are done
/// (EOF on one side shuts down writing on the other, like edgefwd's half-close).
async fn forward(mut client: TcpStream, upstream: SocketAddr, buffer_size: usize) {
    let _ = client.set_nodelay(true);
    let mut server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await
    {
        Ok(Ok(s)) => s,
        _ => return,
    };
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut server,
        buffer_size,
        buffer_size,
    )
    .await;
}
