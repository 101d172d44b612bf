//! The command line: the experiments, their options and how they are parsed.

use crate::support::args::{command_line, Flags};
use crate::R;

pub(crate) const USAGE: &str = "\
The measurements behind docs/epoll.md, taken from edgefwd's own --metrics counters.

usage: cargo bench --bench epoll_study -- <EXPERIMENT> [OPTIONS]

experiments:
  wakeups    N connections doing echo ping-pong: polls, events per poll, syscalls per request
  buffers    one bulk stream per buffer size into a sink: syscalls and polls per MiB
  trace      scripted exchanges under --trace: half-close, reset, stale event, ring-full stall, EMFILE

options:
  --conns LIST        wakeups: concurrent ping-pong connections, one run each (default 1,100,5000)
  --idle N            wakeups: extra established, silent connections held open (default 0)
  --seconds S         wakeups: measured seconds per run (default 3)
  --settle S          wakeups: wait this long after the last connect before measuring, so each new
                      pair's one-off connect-deadline wakeup (--connect-timeout, 5 s) stays out of
                      the window (default 5.5)
  --repeat N          wakeups: runs per connection count (default 1)
  --message BYTES     wakeups: request and response size (default 64)
  --sizes LIST        buffers: --buffer-size values (default 4k,16k,64k,256k)
  --mib N             buffers: MiB sent per run (default 1024)
  --splice            buffers: add a --splice run for every size
  --strace            buffers: count syscalls with `strace -c -f -p PID` during each run (slower);
                      trace: print strace excerpts for the stall and EMFILE cases
  --cases LIST        trace: normal,reset,stale,stall,emfile (default all)
  --fwd-arg ARG       pass ARG to edgefwd as well (repeatable), e.g. --fwd-arg=--no-nodelay
  --pin               pin edgefwd to the first allowed CPU and the load generator and backends to
                      the others (sched_setaffinity), so the loop never waits for a CPU
  -h, --help          this text
";

/// Everything in this harness fails with a message that says what was being done.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Experiment {
    Wakeups,
    Buffers,
    Trace,
}

/// The scripted exchanges of the `trace` experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    Normal,
    Reset,
    Stale,
    Stall,
    Emfile,
}

impl Case {
    const ALL: [Case; 5] = [
        Case::Normal,
        Case::Reset,
        Case::Stale,
        Case::Stall,
        Case::Emfile,
    ];

    pub(crate) fn parse(name: &str) -> R<Case> {
        Case::ALL
            .into_iter()
            .find(|case| case.name() == name)
            .ok_or_else(|| {
                format!("unknown trace case {name:?} (normal, reset, stale, stall, emfile)")
            })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Case::Normal => "normal",
            Case::Reset => "reset",
            Case::Stale => "stale",
            Case::Stall => "stall",
            Case::Emfile => "emfile",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) experiment: Experiment,
    pub(crate) conns: Vec<usize>,
    pub(crate) idle: usize,
    pub(crate) seconds: f64,
    /// Seconds between opening the last connection and measuring.
    pub(crate) settle: f64,
    pub(crate) repeat: usize,
    pub(crate) message: usize,
    pub(crate) sizes: Vec<usize>,
    pub(crate) mib: u64,
    pub(crate) splice: bool,
    pub(crate) strace: bool,
    pub(crate) cases: Vec<Case>,
    pub(crate) fwd_args: Vec<String>,
    /// Pin edgefwd to the first CPU and this process (load, backends) to the others.
    pub(crate) pin: bool,
    /// With `--pin`, edgefwd's CPU (set once this process has moved off it).
    pub(crate) fwd_cpu: Option<usize>,
    /// The command line, echoed above the tables.
    pub(crate) command: String,
}

pub(crate) enum Parsed {
    Run(Box<Options>),
    Help,
}

pub(crate) fn parse_args(args: &[String]) -> R<Parsed> {
    let mut experiment = None;
    let mut opts = Options {
        experiment: Experiment::Wakeups,
        conns: vec![1, 100, 5000],
        idle: 0,
        seconds: 3.0,
        settle: 5.5,
        repeat: 1,
        message: 64,
        sizes: vec![4 << 10, 16 << 10, 64 << 10, 256 << 10],
        mib: 1024,
        splice: false,
        strace: false,
        cases: Case::ALL.to_vec(),
        fwd_args: Vec::new(),
        pin: false,
        fwd_cpu: None,
        command: String::new(),
    };
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        let mut value = || flags.value();
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--splice" => opts.splice = true,
            "--strace" => opts.strace = true,
            "--pin" => opts.pin = true,
            "--conns" => opts.conns = list(&value()?, |s| number(flag, s))?,
            "--idle" => opts.idle = number(flag, &value()?)?,
            "--seconds" => {
                opts.seconds = value()?
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0 && *s <= 600.0)
                    .ok_or_else(|| format!("{flag}: expected seconds in (0, 600]"))?;
            }
            "--message" => opts.message = number(flag, &value()?)?,
            "--settle" => {
                opts.settle = value()?
                    .parse::<f64>()
                    .ok()
                    .filter(|s| (0.0..=600.0).contains(s))
                    .ok_or_else(|| format!("{flag}: expected seconds in [0, 600]"))?;
            }
            "--repeat" => opts.repeat = number(flag, &value()?)?,
            "--sizes" => opts.sizes = list(&value()?, parse_size)?,
            "--mib" => opts.mib = number(flag, &value()?)?,
            "--cases" => opts.cases = list(&value()?, Case::parse)?,
            "--fwd-arg" => opts.fwd_args.push(value()?),
            "wakeups" => experiment = Some(Experiment::Wakeups),
            "buffers" => experiment = Some(Experiment::Buffers),
            "trace" => experiment = Some(Experiment::Trace),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    opts.experiment = experiment.ok_or("name an experiment: wakeups, buffers or trace")?;
    if opts.conns.contains(&0) || opts.message == 0 || opts.mib == 0 || opts.repeat == 0 {
        return Err("--conns, --message, --mib and --repeat must be positive".into());
    }
    opts.command = command_line("epoll_study", args);
    Ok(Parsed::Run(Box::new(opts)))
}

pub(crate) fn number<T: std::str::FromStr>(flag: &str, text: &str) -> R<T> {
    text.parse()
        .map_err(|_| format!("{flag}: {text:?} is not a number"))
}

fn list<T>(text: &str, parse: impl Fn(&str) -> R<T>) -> R<Vec<T>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse)
        .collect()
}

/// `4096`, `4k`, `16K`, `1m`: binary multiples, as edgefwd's `--buffer-size` reads them.
fn parse_size(text: &str) -> R<usize> {
    let lower = text.to_ascii_lowercase();
    let (digits, shift) = match lower.strip_suffix('k') {
        Some(d) => (d, 10),
        None => match lower.strip_suffix('m') {
            Some(d) => (d, 20),
            None => (lower.as_str(), 0),
        },
    };
    digits
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n << shift)
        .ok_or_else(|| format!("bad size {text:?} (e.g. 4k, 64k, 1m)"))
}

/// `4k`, `256k`, `1m` for printing.
pub(crate) fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size % (1 << 20) == 0 {
        format!("{}m", size >> 20)
    } else if size >= 1 << 10 && size % (1 << 10) == 0 {
        format!("{}k", size >> 10)
    } else {
        size.to_string()
    }
}
