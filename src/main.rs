//! The `edgefwd` binary: flags (or a `--config` file) -> [`Config`], logger, fd limit, then the reactor;
//! or, with `--check`, the same validation and a verdict. Around the reactors' start, the service steps
//! in their order: bind (the reactors), write the `--pid-file`, drop to `--user`, then run. Nothing else;
//! `edgefwd ctl ...` is the admin API's client instead (`src/main/ctl/`), which starts no reactor.

#[path = "main/ctl/mod.rs"]
mod ctl;
#[path = "main/flags.rs"]
mod flags;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use log::{info, warn};

use edgefwd::config::access_log::{self, AccessLog};
use edgefwd::config::admin::AdminAddr;
use edgefwd::config::clients::{Cidr, ClientPrefix, Rate};
use edgefwd::config::file::{self, Defaults, FileError};
use edgefwd::config::settings;
use edgefwd::config::unix;
use edgefwd::config::Algorithm;
use edgefwd::config::{self, Config, Mode, Protocol, RouteConfig, Splice};
use edgefwd::datapath::budget::{self, FdBudget};
use edgefwd::observe::access_log::writer::AccessLog as AccessLogHandle;
use edgefwd::observe::metrics::MetricsBoard;
use edgefwd::observe::routed::RouteBoard;
use edgefwd::reactor::fdlimit;
use edgefwd::reactor::{activated_listeners, Exit, Inherited, Reactor, Siblings};
use edgefwd::service::after_bind::AfterBind;
use edgefwd::service::upgrade::{self, Predecessor};
use edgefwd::service::{self, Handed};
use edgefwd::wire::allow::Rule;
use edgefwd::wire::proxy_protocol::{CarriedTlvs, Version};
use edgefwd::wire::tcp_check;

/// `--health-send` / `--health-expect` bytes: one value (clap would take a `Vec<u8>` as many).
type ProbeText = Vec<u8>;

/// A TCP port forwarder: every connection accepted on --listen is forwarded to one of the --upstream
/// addresses, byte for byte, by one edge-triggered event loop.
#[derive(Debug, Parser)]
#[command(name = "edgefwd", version, about)]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
struct Cli {
    /// `edgefwd ctl ...`: the admin API's client instead of the forwarder.
    #[command(subcommand)]
    command: Option<Command>,

    /// Routes from a TOML file (several listeners and upstream sets; SIGHUP reloads it). Excludes the
    /// per-route flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = settings::flag_ids())]
    config: Option<PathBuf>,

    /// Address to accept connections on: IP:PORT, [IPv6]:PORT or HOST:PORT, e.g. 0.0.0.0:8080, [::]:8080,
    /// localhost:8080 (a host name is resolved at start and every address bound; port 0 picks a free
    /// port); udp://ADDR forwards UDP datagrams instead (then every upstream is udp:// too); unix:/PATH
    /// or unix:@NAME (abstract, Linux) accepts on a Unix stream socket.
    #[arg(long, value_name = "ADDR", required_unless_present = "config")]
    listen: Option<String>,

    /// Where to forward connections: IP:PORT, HOST:PORT, or a Unix stream socket unix:/PATH or
    /// unix:@NAME, with an optional ",weight=N". Repeat for several upstreams.
    #[arg(long, value_name = "HOST:PORT[,weight=N]", required_unless_present_any = ["config", "mode"], value_parser = config::parse_upstream_spec)]
    upstream: Vec<(String, u32)>,

    /// How an upstream is picked for each connection: round-robin, least-conn, random-two, source-hash.
    #[arg(long, value_name = "ALGORITHM", default_value = settings::BALANCE.flag_default(), value_parser = str::parse::<Algorithm>)]
    balance: Algorithm,

    /// Ring buffer size per direction of each connection (e.g. 16k, 64k, 1m).
    #[arg(long, value_name = "SIZE", default_value = settings::BUFFER_SIZE.flag_default(), value_parser = config::parse_buffer_size)]
    buffer_size: usize,

    #[arg(long, value_name = "N", help = budget::MAX_CONNECTIONS_HELP, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// How long each upstream connect attempt may take (e.g. 500ms, 5s).
    #[arg(long, value_name = "DURATION", default_value = settings::CONNECT_TIMEOUT.flag_default(), value_parser = config::parse_timeout)]
    connect_timeout: Duration,

    /// Most endpoints (upstream addresses) tried for one client when connects fail [default: 3, or
    /// fewer when the upstreams cannot have three addresses].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    connect_attempts: Option<u32>,

    /// Close connections with no traffic in either direction for this long [default: off].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    idle_timeout: Option<Duration>,

    /// Close half-closed connections with no traffic for this long.
    #[arg(long, value_name = "DURATION", default_value = settings::FIN_TIMEOUT.flag_default(), value_parser = config::parse_timeout)]
    fin_timeout: Duration,

    /// Close a connection this long after it was accepted, busy or not (e.g. 1h) [default: off].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    max_connection_duration: Option<Duration>,

    /// Probe every upstream with a TCP connect this often (e.g. 2s) [default: off, passive health only].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    health_interval: Option<Duration>,

    /// How long a health probe may take before it counts as a failure.
    #[arg(long, value_name = "DURATION", default_value = settings::HEALTH_TIMEOUT.flag_default(), value_parser = config::parse_timeout)]
    health_timeout: Duration,

    /// Consecutive failed connects or probes that mark an upstream down.
    #[arg(long, value_name = "N", default_value = settings::FALL.flag_default(), value_parser = clap::value_parser!(u32).range(1..))]
    fall: u32,

    /// Consecutive successful connects or probes that mark a down upstream up again.
    #[arg(long, value_name = "N", default_value = settings::RISE.flag_default(), value_parser = clap::value_parser!(u32).range(1..))]
    rise: u32,

    /// What each health probe writes once connected: text with \r \n \t \\ \xHH escapes (e.g. "PING\r\n").
    #[arg(long, value_name = "TEXT", value_parser = tcp_check::unescape)]
    health_send: Option<ProbeText>,

    /// The prefix each health probe's answer must start with, escaped as --health-send (e.g. "+PONG").
    #[arg(long, value_name = "TEXT", value_parser = tcp_check::unescape)]
    health_expect: Option<ProbeText>,

    /// Re-resolve host-name upstreams this often [default: 30s if any upstream is a host name].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    resolve_interval: Option<Duration>,

    /// On SIGTERM/SIGINT, how long open connections may finish before they are cut.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = config::parse_duration)]
    shutdown_timeout: Duration,

    /// Do not set TCP_NODELAY (it is on by default on both sides).
    #[arg(long)]
    no_nodelay: bool,

    /// Enable TCP keepalive with this idle time on both sides (e.g. 60s) [default: off].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_keepalive)]
    keepalive: Option<Duration>,

    /// Listen backlog.
    #[arg(long, value_name = "N", default_value = settings::BACKLOG.flag_default(), value_parser = clap::value_parser!(i32).range(1..))]
    backlog: i32,

    /// Permission bits (octal) of a unix:/PATH listener's socket file.
    #[arg(long, value_name = "OCTAL", default_value = settings::UNIX_MODE.flag_default(), value_parser = unix::parse_mode)]
    unix_mode: u32,

    /// forward (to the upstreams) or connect (an HTTP CONNECT proxy to the destinations --allow names).
    #[arg(long, value_name = "MODE", value_parser = str::parse::<Mode>)]
    mode: Option<Mode>,

    /// Connect mode: a destination CONNECT may reach, e.g. 10.0.0.0/8:443, [::1]:*, .example.com:443,
    /// *:443. Repeat for several; anything else gets 403.
    #[arg(long, value_name = "DEST:PORT", value_parser = str::parse::<Rule>)]
    allow: Vec<Rule>,

    /// Connect mode: require these Proxy-Authorization basic credentials (407 otherwise).
    #[arg(long, value_name = "USER:PASS", value_parser = config::parse_credentials)]
    proxy_auth: Option<String>,

    /// Start every upstream stream with a PROXY protocol header (v1 or v2) carrying the client address.
    #[arg(long, value_name = "VERSION", value_parser = str::parse::<Version>)]
    send_proxy: Option<Version>,

    /// With --send-proxy v2 and --accept-proxy: repeat these TLVs of the client's v2 header in the
    /// upstream's, any of authority,alpn,unique_id (comma-separated).
    #[arg(long, value_name = "LIST", value_parser = CarriedTlvs::parse_list)]
    send_proxy_tlvs: Option<CarriedTlvs>,

    /// Clients start with a PROXY protocol header (v1 or v2, detected); its source address is the client's.
    #[arg(long)]
    accept_proxy: bool,

    /// How long a client may take to send its PROXY header or CONNECT head (408 in connect mode).
    #[arg(long, value_name = "DURATION", default_value = settings::HEADER_TIMEOUT.flag_default(), value_parser = config::parse_timeout)]
    header_timeout: Duration,

    /// UDP routes: close a session (a client address and its upstream socket) with no datagram either
    /// way for this long.
    #[arg(long, value_name = "DURATION", default_value = settings::UDP_IDLE_TIMEOUT.flag_default(), value_parser = config::parse_timeout)]
    udp_idle_timeout: Duration,

    /// UDP routes: most sessions at once (each holds a socket, counted in the fd budget); a new client
    /// past it evicts the least recently used [default: the whole fd budget].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    udp_max_sessions: Option<u32>,
    /// Most connections open at once from one client (see --per-client-prefix); more are reset at
    /// accept [default: no limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_conns_per_client: Option<u32>,

    /// Most new connections from one client per window, e.g. 20/10s; more are reset at accept
    /// [default: no limit].
    #[arg(long, value_name = "N/DURATION", value_parser = str::parse::<Rate>)]
    conn_rate_per_client: Option<Rate>,

    /// How much of an address is one client for the per-client limits: V4,V6 prefix lengths
    /// (32,128 = each address; 24,64 = each IPv4 /24 and IPv6 /64).
    #[arg(long, value_name = "V4,V6", default_value = settings::PER_CLIENT_PREFIX.flag_default(), value_parser = str::parse::<ClientPrefix>)]
    per_client_prefix: ClientPrefix,

    /// Clients from this network (CIDR) may connect; repeat for several. With any, the rest may not.
    #[arg(long, value_name = "CIDR", value_parser = str::parse::<Cidr>)]
    client_allow: Vec<Cidr>,

    /// Clients from this network (CIDR) are reset at once; repeat for several (the most specific
    /// rule of both lists wins, deny on a tie).
    #[arg(long, value_name = "CIDR", value_parser = str::parse::<Cidr>)]
    client_deny: Vec<Cidr>,

    /// At --max-connections this long with clients queued: they are accepted and reset instead of
    /// waiting on [default: off].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    queue_timeout: Option<Duration>,

    /// Serve Prometheus metrics at http://ADDR/metrics, from the same event loop (a config file's
    /// `metrics` wins).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Serve the admin API (see docs/admin.md) at ADDR: IP:PORT, [IPv6]:PORT, localhost:PORT,
    /// unix:/PATH (mode 0600) or unix:@NAME (abstract), from the same event loop [default: off] (a
    /// config file's `admin` wins). Loopback or Unix only, unless --admin-token is given.
    #[arg(long, value_name = "ADDR", value_parser = str::parse::<AdminAddr>)]
    admin: Option<AdminAddr>,

    /// Every admin request must carry `Authorization: Bearer TOKEN`, TOKEN being this file's content
    /// (surrounding whitespace dropped); allows a non-loopback --admin.
    #[arg(long, value_name = "FILE")]
    admin_token: Option<PathBuf>,

    /// Log one line of counter deltas this often (e.g. 10s) [default: off] (a config file's
    /// `stats_interval` wins).
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    stats_interval: Option<Duration>,

    /// Log every readiness event and state transition (trace level; RUST_LOG is still honoured).
    #[arg(long)]
    trace: bool,

    /// Run N independent reactors, one thread each, accepting from the same listening sockets
    /// (--max-connections is shared out evenly between them).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,

    /// Listen on this Unix socket (mode 0600) for a successor to hand the listening sockets to: start the
    /// new binary with the same flags plus --upgrade-from PATH.
    #[arg(long, value_name = "PATH")]
    upgrade_socket: Option<PathBuf>,

    /// Take over the listening sockets of the edgefwd serving --upgrade-socket PATH, which then stops
    /// accepting and drains its connections (see docs/operations.md, "Binary upgrade").
    #[arg(long, value_name = "PATH")]
    upgrade_from: Option<PathBuf>,

    /// Keep N freshly connected, never-used upstream connections ready (per route, in each reactor), so
    /// new clients skip the connect handshake. Each is handed to one client only.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    prewarm: u16,

    /// Zero-copy: move bytes socket -> pipe -> socket with splice(2) instead of through the rings: off,
    /// auto (once a read fills a ring; the default on Linux), always (`--splice` alone). Falls back to the
    /// rings, with a warning, where splice is unavailable.
    #[arg(long, value_name = "MODE", num_args = 0..=1, default_value = config::DEFAULT_SPLICE, default_missing_value = "always", value_parser = str::parse::<Splice>)]
    splice: Splice,

    /// Capacity of each splice pipe (e.g. 64k, 1m): what one direction may hold on the splice path.
    #[arg(long, value_name = "SIZE", default_value_t = config::DEFAULT_PIPE_SIZE, value_parser = config::parse_pipe_size)]
    pipe_size: usize,

    /// Write one line per finished connection to this file (appended; SIGUSR1 reopens it), or to
    /// standard output with "-" [default: off] (a config file's `access_log` wins).
    #[arg(long, value_name = "-|PATH", value_parser = str::parse::<access_log::Destination>)]
    access_log: Option<access_log::Destination>,

    /// The access log's lines: text (logfmt, key=value) or json (one object per line) [default: text].
    /// Needs --access-log (or a config file's `access_log`).
    #[arg(long, value_name = "FORMAT", value_parser = str::parse::<access_log::Format>)]
    log_format: Option<access_log::Format>,

    /// Check the configuration (the flags or the --config file, --user, --group, the directories of
    /// --pid-file and --access-log) and exit: "configuration OK (N routes)" and 0, or the error and 2.
    /// Binds nothing, starts nothing; an upstream name that does not resolve is a warning.
    #[arg(short = 't', long)]
    check: bool,

    /// Write the process id to FILE once every listener is bound (atomically); removed on exit. A file
    /// naming a running process is an error, a stale one is replaced.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,

    /// Once every listener is bound and the pid file written, run as this user (started as root); the
    /// drop is verified, and a failed one stops the start.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,

    /// With --user: the group to run as [default: the user's primary group].
    #[arg(long, value_name = "NAME", requires = "user")]
    group: Option<String>,
}

/// What `edgefwd` runs besides the forwarder.
#[derive(Debug, clap::Subcommand)]
enum Command {
    Ctl(ctl::Ctl),
}

/// A validated configuration and what the process derived for it.
struct Prepared {
    config: Config,
    defaults: Defaults,
    budget: FdBudget,
    /// Ends every start line: the fd limit, reserve and budget.
    start: String,
}

/// A start failure and the exit code it earns: 2 for bad input (like a bad flag), 1 otherwise.
struct Failure {
    code: u8,
    message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { code: 1, message }
    }
}

/// Bad input: exit 2, like a bad flag.
fn usage(message: String) -> Failure {
    Failure { code: 2, message }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(Command::Ctl(command)) = cli.command.take() {
        return exit(ctl::run(command).map(|()| Exit::Graceful));
    }
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    logger.format_timestamp_millis();
    if cli.trace {
        logger.filter_module("edgefwd", log::LevelFilter::Trace);
    }
    logger.init();
    let outcome = if cli.check {
        check(cli).map(|()| Exit::Graceful)
    } else {
        run(cli)
    };
    exit(outcome)
}

/// The exit code of an outcome, with the failure's line on stderr.
fn exit(outcome: Result<Exit, Failure>) -> ExitCode {
    match outcome {
        Ok(Exit::Graceful) => ExitCode::SUCCESS,
        Ok(Exit::Forced) => ExitCode::FAILURE,
        Err(failure) => {
            eprintln!("edgefwd: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: Cli) -> Result<Exit, Failure> {
    // First, while this is the only thread: it changes the environment and takes descriptors 3...
    let handed = service::from_env()?;
    let after_bind = after_bind(&cli)?;
    if cli.upgrade_from.is_none() {
        after_bind.check_free()?;
    }
    let upgrades = Upgrades {
        socket: cli.upgrade_socket.clone(),
        from: cli.upgrade_from.clone(),
    };
    run_reactors(configure(cli)?, handed, &after_bind, upgrades)
}

/// `--pid-file`, `--user` and `--group`, looked up (an unknown name is bad input).
fn after_bind(cli: &Cli) -> Result<AfterBind, Failure> {
    AfterBind::new(
        cli.pid_file.clone(),
        cli.user.as_deref(),
        cli.group.as_deref(),
    )
    .map_err(usage)
}

/// `--check`: everything `run` validates before binding (and the `--access-log` file's directory),
/// then one verdict line; every failure is a usage error (exit 2), as `nginx -t`'s.
fn check(cli: Cli) -> Result<(), Failure> {
    after_bind(&cli)?.check_paths().map_err(usage)?;
    let prepared = configure(cli).map_err(|failure| usage(failure.message))?;
    AccessLogHandle::check(&prepared.config.access_log).map_err(usage)?;
    for route in &prepared.config.routes {
        for upstream in &route.upstreams {
            if let Err(why) = &upstream.addrs {
                warn!(
                    "route {}: upstream {}: {why} (it would start down, and be asked again every resolve_interval)",
                    route.name, upstream.name
                );
            }
        }
    }
    let routes = prepared.config.routes.len();
    let plural = if routes == 1 { "" } else { "s" };
    println!("configuration OK ({routes} route{plural})");
    Ok(())
}

/// The flags or the file, validated, with the fd budget they run under.
fn configure(cli: Cli) -> Result<Prepared, Failure> {
    let nofile = fdlimit::raise_nofile_limit()
        .map_err(|err| format!("cannot read the file descriptor limit: {err}"))?;
    let reserve = budget::reserve(u64::from(cli.threads), u64::from(cli.prewarm));
    let budget = FdBudget::new(budget::pairs_for(nofile, reserve));
    // A route with no limit of its own may take the whole budget in whichever reactor its clients land
    // (a route's limit is shared out between the reactors: `run_reactors`).
    let defaults = Defaults {
        max_connections: budget.slots() * usize::from(cli.threads),
        shutdown_timeout: cli.shutdown_timeout,
    };
    let access_log = AccessLog {
        destination: cli.access_log.clone(),
        format: cli.log_format.unwrap_or_default(),
    };
    let log_format_given = cli.log_format.is_some();
    let admin_token = cli.admin_token.as_deref().map(read_token).transpose()?;
    let has_token = admin_token.is_some();
    let (splice, pipe_size, threads, prewarm) = (
        cli.splice,
        cli.pipe_size,
        usize::from(cli.threads),
        usize::from(cli.prewarm),
    );
    let mut config = match cli.config.clone() {
        Some(path) => from_file(&path, &cli, defaults, has_token)?,
        None => flags::from_flags(cli, defaults)?,
    };
    config.splice = splice;
    config.pipe_size = pipe_size;
    config.threads = threads;
    config.prewarm = prewarm;
    // The file's `access_log` (with its `log_format`) wins over the flags.
    if config.access_log.destination.is_none() {
        // A format for no log at all is a mistake, not a no-op: the user expects lines somewhere.
        if log_format_given && access_log.destination.is_none() {
            return Err(usage("--log-format needs --access-log".to_string()));
        }
        config.access_log = access_log;
    }
    config.admin_token = admin_token;
    // A file's `admin` that reaches here passed (`from_file` refuses it naming the file): a refusal
    // here is `--admin`'s.
    if let Some(admin) = &config.admin {
        (admin.check(has_token)).map_err(|why| usage(format!("--admin {admin}: {why}")))?;
    }
    let start = format!(
        "nofile={nofile} fd-reserve={reserve} fd-budget={}",
        budget.slots()
    );
    Ok(Prepared {
        config,
        defaults,
        budget,
        start,
    })
}

/// `--admin-token FILE`: the token is the file's content without surrounding whitespace; a file that
/// cannot be read, or holds no token, is a bad flag.
fn read_token(path: &std::path::Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| usage(format!("--admin-token {}: {err}", path.display())))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(usage(format!(
            "--admin-token {}: expected one token with no spaces in the file",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// `--upgrade-socket` and `--upgrade-from`.
struct Upgrades {
    socket: Option<PathBuf>,
    from: Option<PathBuf>,
}

/// Starts `config.threads` reactors (the first on this thread), sharing `budget`, and waits for all of
/// them. `handed` is what systemd passed (socket-activated listeners, which the first reactor takes
/// instead of binding, and the notify socket, which it speaks to). Once all are bound, and before any
/// runs, `after_bind` writes the pid file and drops privileges. With `--upgrade-from`, the old process's
/// sockets are taken like socket-activated ones, and it is told to stop once every reactor has them.
fn run_reactors(
    prepared: Prepared,
    handed: Handed,
    after_bind: &AfterBind,
    upgrades: Upgrades,
) -> Result<Exit, Failure> {
    let Prepared {
        mut config,
        defaults,
        budget,
        start,
    } = prepared;
    let threads = config.threads;
    let board = (threads > 1).then(|| Arc::new(MetricsBoard::new(threads)));
    // Opened here, before `after_bind` drops root: a log directory only root may write to works.
    let (access_log, writer) = AccessLogHandle::start(&config.access_log)?.unzip();
    // One set of everything shared (followers' inboxes, per-client tables, the per-route figures, the
    // access log's queue), cloned into each reactor.
    let shared = Siblings {
        board,
        budget,
        routes: Arc::new(RouteBoard::new(threads)),
        access_log,
        ..Siblings::default()
    };
    let siblings = |index| Siblings {
        index,
        ..shared.clone()
    };
    // Each reactor gets an even share of every route's connection limit.
    for route in &mut config.routes {
        route.max_connections = route.max_connections.div_ceil(threads);
    }
    let mut passed = handed.passed;
    let mut handed_unix = Vec::new();
    let predecessor = match upgrades.from.as_deref() {
        Some(path) => {
            let (predecessor, sockets, unix) = Predecessor::connect(path)?;
            passed.extend(sockets);
            handed_unix = unix;
            Some(predecessor)
        }
        None => None,
    };
    // The metrics listener a predecessor handed over serves this process's `--metrics` if that is the
    // same address; otherwise it closes here, and the address is bound (the predecessor keeps its own
    // copy until it takes over).
    let metrics = upgrade::take_metrics(&mut passed, config.metrics);
    // So is the TCP admin listener (a Unix one is found by its path, like a route's).
    let admin_tcp = match config.admin {
        Some(AdminAddr::Tcp(addr)) => Some(addr),
        _ => None,
    };
    let admin = upgrade::take_admin(&mut passed, admin_tcp);
    let activated = match passed {
        passed if passed.is_empty() => Vec::new(),
        // UDP routes bind their own sockets (socket activation hands TCP listeners only).
        passed => {
            let tcp: Vec<RouteConfig> = config
                .routes
                .iter()
                .filter(|route| route.protocol == Protocol::Tcp)
                .cloned()
                .collect();
            activated_listeners(passed, &tcp)?
        }
    };
    let inherited = Inherited {
        tcp: activated,
        unix: handed_unix,
        admin,
    };
    let mut first = match metrics {
        Some(handed) => {
            let unbound = Config {
                metrics: None,
                ..config.clone()
            };
            let mut first = Reactor::new(unbound, defaults, siblings(0), inherited)?;
            first.adopt_metrics(handed)?;
            first
        }
        None => Reactor::new(config.clone(), defaults, siblings(0), inherited)?,
    };
    if let Some(notifier) = handed.notifier {
        first.notify_to(notifier);
    }
    // The first reactor bound the sockets (or took systemd's); the others accept from the same ones.
    let mut reactors = Vec::with_capacity(threads.saturating_sub(1));
    for index in 1..threads {
        let shared = Inherited {
            tcp: first.share_listeners()?,
            ..Inherited::default()
        };
        reactors.push(Reactor::new(
            config.clone(),
            defaults,
            siblings(index),
            shared,
        )?);
    }
    let _pid_file = after_bind.run(predecessor.as_ref().and_then(Predecessor::pid))?;
    // Logged once the pid file is written and privileges dropped: a start line means ready.
    let splice = match config.splice {
        Splice::Off => String::from("off"),
        mode => format!("{mode} pipe-size={}", config.pipe_size),
    };
    for line in first.start_lines() {
        info!("{line} splice={splice} threads={threads} {start}");
    }
    if let Some(addr) = first.metrics_addr() {
        info!("metrics on http://{addr}/metrics");
    }
    match (first.admin_addr(), &config.admin) {
        (Some(addr), _) => info!("admin API on http://{addr}/"),
        (None, Some(addr)) => info!("admin API on {addr}"),
        (None, None) => {}
    }
    let mut others = Vec::with_capacity(reactors.len());
    for (index, reactor) in (1..).zip(reactors) {
        let thread = std::thread::Builder::new()
            .name(format!("reactor-{index}"))
            .spawn(move || reactor.run())
            .map_err(|err| format!("cannot start reactor thread {index}: {err}"))?;
        others.push(thread);
    }
    // Every reactor has the sockets registered (clients queue in the kernel meanwhile): the old process
    // may stop accepting, then the upgrade socket is ours.
    let took_over = predecessor.is_some();
    if let Some(predecessor) = predecessor {
        predecessor.take_over()?;
        first.own_socket_files();
        info!("upgrade: took over the listening sockets; the old process is draining");
    }
    if let Some(path) = upgrades.socket.as_deref() {
        match first.serve_upgrades(path) {
            // The old process has stopped accepting: exiting now would refuse every client.
            Err(message) if took_over => warn!("{message}; serving without an upgrade socket"),
            result => result?,
        }
    }
    let mut exit = first
        .run()
        .map_err(|err| format!("event loop failed: {err}"))?;
    for thread in others {
        match thread.join() {
            Ok(Ok(Exit::Graceful)) => {}
            Ok(Ok(Exit::Forced)) => exit = Exit::Forced,
            Ok(Err(err)) => return Err(format!("event loop failed: {err}").into()),
            Err(_) => return Err(String::from("a reactor thread panicked").into()),
        }
    }
    // Every reactor has dropped its end of the queue: the writer writes out the last lines and stops.
    drop(shared);
    if let Some(writer) = writer {
        writer.finish();
    }
    Ok(exit)
}

/// `--config FILE`; the global flags fill in what the file leaves out. `has_token`: `--admin-token`
/// is given, which the file's `admin` may need.
fn from_file(
    path: &std::path::Path,
    cli: &Cli,
    defaults: Defaults,
    has_token: bool,
) -> Result<Config, Failure> {
    let mut config = file::load(path, defaults).map_err(|err| match err {
        // A file that cannot be read is a bad `--config` as much as one that says something wrong.
        FileError::Invalid(message) | FileError::Unavailable(message) => usage(message),
    })?;
    config.metrics = config.metrics.or(cli.metrics);
    if let Some(admin) = &config.admin {
        let file = path.display();
        (admin.check(has_token))
            .map_err(|why| usage(format!("{file}: admin = \"{admin}\": {why}")))?;
    }
    config.admin = config.admin.take().or_else(|| cli.admin.clone());
    config.stats_interval = config
        .stats_interval
        .or(cli.stats_interval.filter(|d| !d.is_zero()));
    Ok(config)
}
