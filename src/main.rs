//! The `edgefwd` binary: flags -> [`Config`], logger, fd limit, then the reactor. Nothing else.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use log::info;

use edgefwd::config::{self, Config};
use edgefwd::fdlimit;
use edgefwd::metrics::MetricsBoard;
use edgefwd::reactor::{Exit, Reactor, Siblings};

/// A TCP port forwarder: every connection accepted on --listen is forwarded to --upstream, byte for byte,
/// by one edge-triggered event loop.
#[derive(Debug, Parser)]
#[command(name = "edgefwd", version, about)]
struct Cli {
    /// Address to accept connections on, e.g. 0.0.0.0:8080 or [::]:8080 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// Where to forward connections: IP:PORT or HOST:PORT (a host name is resolved once, at start).
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,

    /// Ring buffer size per direction of each connection (e.g. 16k, 64k, 1m).
    #[arg(long, value_name = "SIZE", default_value = "64k", value_parser = config::parse_buffer_size)]
    buffer_size: usize,

    /// Most connections open at once [default: from the fd limit, (RLIMIT_NOFILE - 32) / 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// How long an upstream connect may take (e.g. 500ms, 5s).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = config::parse_duration)]
    connect_timeout: Duration,

    /// Close connections with no traffic in either direction for this long [default: off].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    idle_timeout: Option<Duration>,

    /// Close half-closed connections with no traffic for this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = config::parse_duration)]
    fin_timeout: Duration,

    /// On SIGTERM/SIGINT, how long open connections may finish before they are cut.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = config::parse_duration)]
    shutdown_timeout: Duration,

    /// Do not set TCP_NODELAY (it is on by default on both sides).
    #[arg(long)]
    no_nodelay: bool,

    /// Enable TCP keepalive with this idle time on both sides (e.g. 60s) [default: off].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    keepalive: Option<Duration>,

    /// Listen backlog.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(i32).range(1..))]
    backlog: i32,

    /// Serve Prometheus metrics at http://ADDR/metrics, from the same event loop.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Log one line of counter deltas this often (e.g. 10s) [default: off].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    stats_interval: Option<Duration>,

    /// Log every readiness event and state transition (trace level; RUST_LOG is still honoured).
    #[arg(long)]
    trace: bool,

    /// Run N independent reactors, one thread each, sharing the listen address with SO_REUSEPORT
    /// (--max-connections is shared out evenly between them).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,

    /// Keep N freshly connected, never-used upstream connections ready (per reactor), so new clients
    /// skip the connect handshake. Each is handed to one client only.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    prewarm: u16,

    /// Zero-copy: move bytes socket -> pipe -> socket with splice(2) instead of through the rings
    /// (Linux; falls back to the rings, with a warning, where splice is unavailable).
    #[arg(long)]
    splice: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    logger.format_timestamp_millis();
    if cli.trace {
        logger.filter_module("edgefwd", log::LevelFilter::Trace);
    }
    logger.init();
    match run(cli) {
        Ok(Exit::Graceful) => ExitCode::SUCCESS,
        Ok(Exit::Forced) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("edgefwd: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<Exit, String> {
    let nofile = fdlimit::raise_nofile_limit()
        .map_err(|err| format!("cannot read the file descriptor limit: {err}"))?;
    let mut config = build_config(cli, nofile)?;
    let board = (config.threads > 1).then(|| Arc::new(MetricsBoard::new(config.threads)));
    let siblings = |index| Siblings {
        index,
        board: board.clone(),
    };
    let total_connections = config.max_connections;
    config.max_connections = total_connections.div_ceil(config.threads);
    let first = Reactor::new(config.clone(), siblings(0))?;
    log_start(&first, &config, total_connections, nofile);
    // With port 0 the kernel chose a port for the first listener: the others must share that one.
    config.listen = first.local_addr();
    let mut others = Vec::with_capacity(config.threads.saturating_sub(1));
    for index in 1..config.threads {
        let reactor = Reactor::new(config.clone(), siblings(index))?;
        let thread = std::thread::Builder::new()
            .name(format!("reactor-{index}"))
            .spawn(move || reactor.run())
            .map_err(|err| format!("cannot start reactor thread {index}: {err}"))?;
        others.push(thread);
    }
    let mut exit = first
        .run()
        .map_err(|err| format!("event loop failed: {err}"))?;
    for thread in others {
        match thread.join() {
            Ok(Ok(Exit::Graceful)) => {}
            Ok(Ok(Exit::Forced)) => exit = Exit::Forced,
            Ok(Err(err)) => return Err(format!("event loop failed: {err}")),
            Err(_) => return Err("a reactor thread panicked".to_string()),
        }
    }
    Ok(exit)
}

fn log_start(reactor: &Reactor, config: &Config, max_connections: usize, nofile: u64) {
    info!(
        "listening on {} upstream {} ({}) buffer-size={} max-connections={} connect-timeout={}ms idle-timeout={} fin-timeout={}ms threads={} splice={} nofile={nofile}",
        reactor.local_addr(),
        config.upstream_name,
        config.upstream,
        config.buffer_size,
        max_connections,
        config.connect_timeout.as_millis(),
        config
            .idle_timeout
            .map_or_else(|| "off".to_string(), |d| format!("{}ms", d.as_millis())),
        config.fin_timeout.as_millis(),
        config.threads,
        config.splice,
    );
    if let Some(addr) = reactor.metrics_addr() {
        info!("metrics on http://{addr}/metrics");
    }
}

fn build_config(cli: Cli, nofile: u64) -> Result<Config, String> {
    let upstream = resolve(&cli.upstream)?;
    Ok(Config {
        listen: cli.listen,
        upstream_name: cli.upstream,
        upstream,
        buffer_size: cli.buffer_size,
        max_connections: cli
            .max_connections
            .map_or_else(|| config::default_max_connections(nofile), |n| n as usize),
        connect_timeout: cli.connect_timeout,
        idle_timeout: cli.idle_timeout.filter(|d| !d.is_zero()),
        fin_timeout: cli.fin_timeout,
        shutdown_timeout: cli.shutdown_timeout,
        nodelay: !cli.no_nodelay,
        keepalive: cli.keepalive,
        backlog: cli.backlog,
        metrics: cli.metrics,
        stats_interval: cli.stats_interval.filter(|d| !d.is_zero()),
        splice: cli.splice,
        threads: usize::from(cli.threads),
        prewarm: usize::from(cli.prewarm),
    })
}

/// Resolves the upstream once, at start; the first address the resolver gives is used.
fn resolve(upstream: &str) -> Result<SocketAddr, String> {
    upstream
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve upstream '{upstream}': {err}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve upstream '{upstream}': no address"))
}
