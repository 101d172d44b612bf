//! Experiment `trace`: scripted exchanges under `--trace` and the log lines they print.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::{self};
use std::time::{Duration, Instant};

use crate::backends::{
    client, join_backend, one_shot, read_to_end, set_linger0, start_echo, Sink, SinkCfg,
};
use crate::cli::{Case, Options};
use crate::fwd::{strip_timestamp, Fwd};
use crate::load::bulk_send;
use crate::sample::Sample;
use crate::strace::{strace_available, Strace};
use crate::table::Table;
use crate::{Ctx, R};

pub(crate) fn trace(opts: &Options) -> R<()> {
    let traced = opts.strace && strace_available();
    if opts.strace && !traced {
        return Err("--strace needs strace (apt-get install strace)".into());
    }
    for case in &opts.cases {
        eprintln!("[trace] {} ...", case.name());
        match case {
            Case::Normal => trace_normal(opts)?,
            Case::Reset => trace_reset(opts)?,
            Case::Stale => trace_stale(opts)?,
            Case::Stall => trace_stall(opts, traced)?,
            Case::Emfile => trace_emfile(opts, traced)?,
        }
    }
    Ok(())
}

fn trace_args(opts: &Options, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--trace".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(opts.fwd_args.iter().cloned());
    args
}

/// The log lines after the start lines, timestamps stripped, metrics-scrape events left out.
fn case_lines(fwd: &Fwd) -> Vec<String> {
    fwd.lines()
        .iter()
        .filter(|l| !l.contains("listening on ") && !l.contains("metrics on http://"))
        .filter(|l| !l.contains("event Metrics") && !l.contains("event Scrape("))
        .map(|l| strip_timestamp(l))
        .collect()
}

fn print_lines(lines: &[String], limit: usize) {
    println!("```");
    for line in lines.iter().take(limit) {
        println!("{line}");
    }
    if lines.len() > limit {
        println!("... {} more lines", lines.len() - limit);
    }
    println!("```");
}

/// Waits until edgefwd has logged a line containing `needle` (bounded).
fn wait_for_line(fwd: &Fwd, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if fwd.lines().iter().any(|l| l.contains(needle)) {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A client sends a line and half-closes; the echo backend answers and passes the FIN back.
fn trace_normal(opts: &Options) -> R<()> {
    let echo = start_echo()?;
    let fwd = Fwd::start(echo.addr(), &trace_args(opts, &[]))?;
    let mut stream = client(fwd.listen, Duration::from_secs(5))?;
    stream.write_all(b"hello\n").ctx("write")?;
    stream.shutdown(Shutdown::Write).ctx("shutdown(Write)")?;
    let (got, end) = read_to_end(&mut stream);
    wait_for_line(&fwd, "closed conn=", Duration::from_secs(5));
    println!("### trace: normal connection with half-close\n");
    println!(
        "client: write \"hello\\n\", shutdown(Write), read {:?} then {end}\n",
        String::from_utf8_lossy(&got)
    );
    print_lines(&case_lines(&fwd), 60);
    println!();
    Ok(())
}

/// The backend reads the request and resets the connection.
fn trace_reset(opts: &Options) -> R<()> {
    let (addr, backend) = one_shot(|mut stream| {
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).ctx("backend read")?;
        if n == 0 {
            return Err("backend: no request".into());
        }
        set_linger0(&stream)?;
        drop(stream);
        Ok(())
    })?;
    let fwd = Fwd::start(addr, &trace_args(opts, &[]))?;
    let mut stream = client(fwd.listen, Duration::from_secs(5))?;
    stream.write_all(b"hello\n").ctx("write")?;
    let (got, end) = read_to_end(&mut stream);
    join_backend(backend)?;
    wait_for_line(&fwd, "closed conn=", Duration::from_secs(5));
    println!("### trace: upstream reset\n");
    println!(
        "backend: read the request, close with SO_LINGER 0 (RST); client: read {} bytes then {end}\n",
        got.len()
    );
    print_lines(&case_lines(&fwd), 60);
    println!();
    Ok(())
}

/// Two events for one pair in one epoll_wait batch, the first of which tears the pair down: edgefwd is
/// stopped (SIGSTOP) while the upstream resets and the client sends and half-closes, then resumed. A new
/// client also connects meanwhile; it gets the freed slot, with a new generation, after the batch.
fn trace_stale(opts: &Options) -> R<()> {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (addr, backend) = one_shot(move |mut stream| {
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).ctx("backend read")?;
        stream.write_all(&buf[..n]).ctx("backend write")?;
        go_rx
            .recv_timeout(Duration::from_secs(10))
            .ctx("backend waiting for the go")?;
        set_linger0(&stream)?;
        drop(stream);
        Ok(())
    })?;
    let fwd = Fwd::start(addr, &trace_args(opts, &[]))?;
    let mut first = client(fwd.listen, Duration::from_secs(5))?;
    first.write_all(b"hello\n").ctx("write")?;
    let mut buf = [0u8; 6];
    first.read_exact(&mut buf).ctx("first echo")?;
    thread::sleep(Duration::from_millis(100));
    let mark = fwd.lines().len();
    fwd.signal(libc::SIGSTOP);
    thread::sleep(Duration::from_millis(100));
    go_tx.send(()).ctx("signal the backend")?;
    join_backend(backend)?;
    thread::sleep(Duration::from_millis(50));
    first.write_all(b"bye\n").ctx("write")?;
    first.shutdown(Shutdown::Write).ctx("shutdown(Write)")?;
    // The second client's upstream is the same one-shot port, now closed: its connect is refused,
    // which is fine: the point is which slot and generation it gets.
    let second = client(fwd.listen, Duration::from_secs(5))?;
    thread::sleep(Duration::from_millis(100));
    fwd.signal(libc::SIGCONT);
    wait_for_line(&fwd, "closed conn=2", Duration::from_secs(5));
    let (got, end) = read_to_end(&mut first);
    drop(second);
    println!("### trace: two events for one pair in one batch (edgefwd stopped with SIGSTOP meanwhile)\n");
    println!(
        "while stopped: the upstream of conn=1 resets, the client of conn=1 sends \"bye\" and half-closes, a second client connects; \
client 1 then read {} bytes and {end}\n",
        got.len()
    );
    let lines: Vec<String> = fwd.lines()[mark..]
        .iter()
        .filter(|l| !l.contains("event Metrics") && !l.contains("event Scrape("))
        .map(|l| strip_timestamp(l))
        .collect();
    print_lines(&lines, 40);
    println!();
    Ok(())
}

/// A slow reader behind a 4 KiB ring: the ring fills, reading stops with `readable` still set, and each
/// upstream EPOLLOUT edge lets the pump write and then read the client again without a client edge.
fn trace_stall(opts: &Options, traced: bool) -> R<()> {
    const TOTAL: u64 = 8 << 20;
    let sink = Sink::start(SinkCfg {
        chunk: 8 << 10,
        delay: Duration::from_millis(1),
        initial_delay: Duration::from_millis(1000),
        rcvbuf: Some(16 << 10),
    })?;
    let fwd = Fwd::start(sink.addr, &trace_args(opts, &["--buffer-size", "4k"]))?;
    let before = fwd.scrape()?;
    let tracer = match traced {
        true => Some(Strace::attach(
            fwd.pid(),
            &[
                "-yy",
                "-s",
                "1",
                "-e",
                "trace=epoll_wait,epoll_pwait,read,readv,recvfrom,write,writev,sendto,shutdown",
                "-e",
                "signal=none",
            ],
        )?),
        false => None,
    };
    let elapsed = bulk_send(fwd.listen, TOTAL)?;
    let syscalls = match tracer {
        Some(tracer) => Some(tracer.finish()?),
        None => None,
    };
    thread::sleep(Duration::from_millis(100));
    let d = fwd.scrape()?.since(&before);
    let lines = case_lines(&fwd);
    let mut sides: BTreeMap<String, u64> = BTreeMap::new();
    for line in &lines {
        if let Some(at) = line.find("side=") {
            let side = line[at..].split_whitespace().next().unwrap_or("");
            let flags = line.rsplit(' ').next().unwrap_or("");
            *sides.entry(format!("{side} {flags}")).or_default() += 1;
        }
    }
    println!("### trace: ring-full stall and resume (--buffer-size 4k; the sink has SO_RCVBUF 16 KiB, waits 1 s, then reads 8 KiB per ms)\n");
    println!(
        "client sent {} KiB in {:.2} s (context); counters over the transfer:\n",
        TOTAL >> 10,
        elapsed.as_secs_f64()
    );
    let mut table = Table::new(&[
        "reads",
        "ring-full stops",
        "read WouldBlock",
        "writes",
        "short writes",
        "write WouldBlock",
        "polls",
        "events",
        "spurious",
    ]);
    table.row(vec![
        d.c("reads").to_string(),
        d.c("reads_ring_full").to_string(),
        d.c("reads_would_block").to_string(),
        d.c("writes").to_string(),
        d.c("writes_short").to_string(),
        d.c("writes_would_block").to_string(),
        d.c("polls").to_string(),
        d.c("events").to_string(),
        d.c("spurious_wakeups").to_string(),
    ]);
    table.print();
    println!("\nreadiness events by side and flags (from the --trace lines):\n");
    let mut table = Table::new(&["side and flags", "events"]);
    for (key, n) in &sides {
        table.row(vec![key.clone(), n.to_string()]);
    }
    table.print();
    println!("\nfirst trace lines:\n");
    print_lines(&lines, 24);
    if let Some(text) = syscalls {
        let log = stall_log(&text, fwd.listen.port());
        println!(
            "\nstrace: {} epoll_wait returns; {} held only upstream events and yet read the client socket (resume without a client edge); {} held pair events and were followed by no syscall at all (empty wakeups)\n",
            log.polls, log.resumes, log.empty
        );
        println!("the first resume:\n");
        print_lines(&log.resume_excerpt, 40);
        println!("\nthe first empty wakeup:\n");
        print_lines(&log.empty_excerpt, 40);
        println!("\nthe end of the transfer (the client's last data and FIN):\n");
        print_lines(&log.end_excerpt, 40);
    }
    println!();
    Ok(())
}

/// What a `strace -yy` log of the stall case shows.
struct StallLog {
    /// epoll_wait calls.
    pub(crate) polls: usize,
    /// Wakeups whose events were all on upstream sockets, yet read a client socket with data.
    resumes: usize,
    /// The first such wakeup, with the tail of the one before.
    resume_excerpt: Vec<String>,
    /// Wakeups with pair events after which not one read or write was made (once data flows).
    pub(crate) empty: usize,
    /// The first such wakeup, with the tail of the one before.
    empty_excerpt: Vec<String>,
    /// The end of the transfer: from the last wakeup with a client event on.
    end_excerpt: Vec<String>,
}

/// Reads a `strace -yy` log; `listen_port` identifies client sockets (their local port). Tokens are
/// annotated with their decoded (conn, slot, side).
fn stall_log(text: &str, listen_port: u16) -> StallLog {
    // The log lines edgefwd writes to stderr (fd 2) are not part of the story.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("write(2<"))
        .collect();
    let polls: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("epoll_wait(") || l.starts_with("epoll_pwait("))
        .map(|(i, _)| i)
        .collect();
    let client_fd = format!(":{listen_port}->");
    let mut log = StallLog {
        polls: polls.len(),
        resumes: 0,
        resume_excerpt: Vec::new(),
        empty: 0,
        empty_excerpt: Vec::new(),
        end_excerpt: Vec::new(),
    };
    if let Some(&last) = polls.iter().rev().find(|&&at| {
        tokens_in(lines[at])
            .iter()
            .any(|t| t & 1 == 0 && *t < 1 << 63)
    }) {
        let from = last.saturating_sub(4);
        log.end_excerpt = lines[from..(last + 12).min(lines.len())]
            .iter()
            .map(|l| annotate_tokens(l))
            .collect();
    }
    // Empty wakeups count from the first data read on (before it, the pair is still connecting).
    let flowing = lines
        .iter()
        .position(|l| l.starts_with("readv(") || l.starts_with("recvfrom("))
        .unwrap_or(lines.len());
    for (k, &at) in polls.iter().enumerate() {
        let tokens = tokens_in(lines[at]);
        let pairs_only = !tokens.is_empty() && tokens.iter().all(|t| *t < 1 << 63);
        let end = polls.get(k + 1).copied().unwrap_or(lines.len());
        if pairs_only && at > flowing && end == at + 1 && k + 1 < polls.len() {
            log.empty += 1;
            if log.empty_excerpt.is_empty() {
                log.empty_excerpt = wakeup_excerpt(&lines, at, end);
            }
        }
        if !pairs_only || tokens.iter().any(|t| t & 1 == 0) {
            continue;
        }
        let reads_client = lines[at + 1..end].iter().any(|l| {
            (l.starts_with("read(") || l.starts_with("readv(") || l.starts_with("recvfrom("))
                && l.contains(&client_fd)
                && !l.contains("= -1")
        });
        if reads_client {
            log.resumes += 1;
            if log.resume_excerpt.is_empty() {
                log.resume_excerpt = wakeup_excerpt(&lines, at, end);
            }
        }
    }
    log
}

/// The tail of the wakeup before line `at` (where reading stopped), the epoll_wait at `at`, the head of
/// its wakeup (up to `end`), and the next epoll_wait.
fn wakeup_excerpt(lines: &[&str], at: usize, end: usize) -> Vec<String> {
    const TAIL: usize = 6;
    const HEAD: usize = 8;
    let mut out: Vec<String> = Vec::new();
    let from = at.saturating_sub(TAIL);
    if from > 0 {
        out.push(format!("... ({from} earlier lines)"));
    }
    out.extend(lines[from..at].iter().map(|l| annotate_tokens(l)));
    out.push(annotate_tokens(lines[at]));
    let batch = &lines[at + 1..end];
    out.extend(batch.iter().take(HEAD).map(|l| annotate_tokens(l)));
    if batch.len() > HEAD {
        out.push(format!(
            "... ({} more syscalls in this wakeup)",
            batch.len() - HEAD
        ));
    }
    if let Some(next) = lines.get(end) {
        out.push(annotate_tokens(next));
    }
    out
}

/// The `u64=` values of an epoll_wait line.
fn tokens_in(line: &str) -> Vec<u64> {
    line.split("u64=")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Appends the decoded pair token after every `u64=N` (64-bit layout of src/token.rs: generation in
/// the high 32 bits, then slot, then the side bit).
fn annotate_tokens(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("u64=") {
        let (head, tail) = rest.split_at(at + 4);
        out.push_str(head);
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        out.push_str(&digits);
        rest = &tail[digits.len()..];
        if let Ok(token) = digits.parse::<u64>() {
            if token < 1 << 63 {
                let side = if token & 1 == 0 { "Client" } else { "Upstream" };
                out.push_str(&format!(
                    " /* conn={} slot={} {side} */",
                    token >> 32,
                    (token & 0xffff_ffff) >> 1
                ));
            }
        }
    }
    out.push_str(rest);
    out
}

/// EMFILE: edgefwd's RLIMIT_NOFILE is lowered (prlimit) to the descriptors it holds plus room for
/// [`EMFILE_PAIRS`] pairs, with --max-connections far above, so descriptors run out first. With an even
/// number of spares the next accept fails: clients wait in the backlog while accepting pauses 100 ms at
/// a time, and are accepted without any new edge once pairs close. With one spare more, the accept
/// succeeds and the upstream socket cannot be made.
fn trace_emfile(opts: &Options, traced: bool) -> R<()> {
    println!("### trace: EMFILE and the silent listener\n");
    emfile_phase(opts, traced, 0)?;
    emfile_phase(opts, false, 1)
}

/// Pairs that fit under the lowered descriptor limit.
const EMFILE_PAIRS: usize = 3;
/// Clients that connect: the pairs that fit, and as many again that do not.
const EMFILE_CLIENTS: usize = 2 * EMFILE_PAIRS;

/// Connects, sends one line and waits 300 ms for the echo: `served`, `waiting`, or how it failed (a
/// client that edgefwd accepts and resets at once can see the reset before connect() even returns).
fn emfile_client(addr: SocketAddr, i: usize) -> (Option<TcpStream>, String) {
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(stream) => stream,
        Err(err) => return (None, format!("{:?} at connect", err.kind())),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    if let Err(err) = stream.write_all(format!("ping {i}\n").as_bytes()) {
        return (Some(stream), format!("{:?} at write", err.kind()));
    }
    let mut buf = [0u8; 16];
    let outcome = match stream.read(&mut buf) {
        Ok(0) => "EOF".to_string(),
        Ok(_) => "served".to_string(),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => "waiting".to_string(),
        Err(err) => format!("{:?}", err.kind()),
    };
    (Some(stream), outcome)
}

fn emfile_phase(opts: &Options, traced: bool, odd: u64) -> R<()> {
    const STALL: Duration = Duration::from_millis(1500);
    let echo = start_echo()?;
    let fwd = Fwd::start(
        echo.addr(),
        &trace_args(opts, &["--max-connections", "1000"]),
    )?;
    let before = fwd.scrape()?;
    thread::sleep(Duration::from_millis(100));
    // RLIMIT_NOFILE bounds descriptor *numbers*: a new fd gets the lowest free number, and EMFILE means
    // none is left below the limit. So the limit is where exactly `spare` numbers below it are free
    // (descriptors inherited from the environment, at any number, are accounted for).
    let fds = fwd.fds()?;
    let spare = (2 * EMFILE_PAIRS) as u64 + odd;
    let free_below = |limit: u64| limit - fds.iter().filter(|fd| **fd < limit).count() as u64;
    let limit = (0..1 << 16)
        .find(|limit| free_below(*limit) == spare)
        .ok_or("no descriptor limit leaves the wanted spares")?;
    let held = fds.iter().filter(|fd| **fd < limit).count();
    fwd.set_nofile(limit)?;
    let mark = fwd.lines().len();
    let mut clients = Vec::new();
    let mut first = Vec::new();
    for i in 0..EMFILE_CLIENTS {
        let (stream, outcome) = emfile_client(fwd.listen, i);
        clients.push(stream);
        first.push(outcome);
    }
    let stalled_at = Instant::now();
    let tracer = match traced {
        true => Some(Strace::attach(
            fwd.pid(),
            &["-r", "-e", "trace=epoll_wait,epoll_pwait,accept4,accept"],
        )?),
        false => None,
    };
    let scrape = match Sample::scrape_within(fwd.metrics, Duration::from_millis(500)) {
        Ok(_) => "answered".to_string(),
        Err(err) => format!("failed: {err}"),
    };
    thread::sleep(STALL.saturating_sub(stalled_at.elapsed()));
    let accept_log = match tracer {
        Some(tracer) => Some(tracer.finish()?),
        None => None,
    };
    let stalled_for = stalled_at.elapsed();
    // Free descriptors: the served clients half-close, the echo backend answers with its FIN, and their
    // pairs close. The waiting clients should then be accepted with no new edge on the listener.
    let freed_at = Instant::now();
    for (stream, outcome) in clients.iter().zip(&first) {
        if let (Some(stream), "served") = (stream, outcome.as_str()) {
            let _ = stream.shutdown(Shutdown::Write);
        }
    }
    let mut later = Vec::new();
    for (stream, outcome) in clients.iter_mut().zip(&first) {
        let Some(stream) = stream.as_mut().filter(|_| outcome == "waiting") else {
            later.push("-".to_string());
            continue;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .ctx("read timeout")?;
        let mut buf = [0u8; 16];
        later.push(match stream.read(&mut buf) {
            Ok(0) => "EOF".to_string(),
            Ok(_) => format!(
                "served {} ms after the frees",
                freed_at.elapsed().as_millis()
            ),
            Err(err) => format!("{:?}", err.kind()),
        });
    }
    drop(clients);
    thread::sleep(Duration::from_millis(300));
    let d = fwd.scrape()?.since(&before);
    println!(
        "#### RLIMIT_NOFILE {limit}: {held} descriptors held below it, {spare} free ({}), --max-connections 1000; {EMFILE_CLIENTS} clients each send one line\n",
        if odd == 0 { "the next accept fails" } else { "one spare fd: the next accept succeeds, the upstream socket fails" }
    );
    let mut table = Table::new(&["client", "first 300 ms", "after the served clients close"]);
    for (i, (a, b)) in first.iter().zip(&later).enumerate() {
        table.row(vec![i.to_string(), a.clone(), b.clone()]);
    }
    table.print();
    println!(
        "\na metrics scrape while out of fds: {scrape}\n\ncounters over the phase ({:.2} s out of fds):\n",
        stalled_for.as_secs_f64()
    );
    let mut table = Table::new(&[
        "accepts",
        "accept pauses (EMFILE)",
        "polls",
        "spurious",
        "closes client-fin",
        "closes connect-error",
    ]);
    table.row(vec![
        d.c("accepts").to_string(),
        d.c("accept_pauses_exhausted").to_string(),
        d.c("polls").to_string(),
        d.c("spurious_wakeups").to_string(),
        d.close("client-fin").to_string(),
        d.close("connect-error").to_string(),
    ]);
    table.print();
    println!("\nlog lines (WARN, listener events, closes; per-pair events left out):\n");
    let lines: Vec<String> = fwd.lines()[mark..]
        .iter()
        .filter(|l| {
            l.contains("WARN") || l.contains("event Listener") || l.contains("closed conn=")
        })
        .map(|l| strip_timestamp(l))
        .collect();
    print_lines(&lines, 30);
    if let Some(text) = accept_log {
        let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
        println!(
            "\nstrace -r -e trace=epoll_wait,accept4 while out of fds: {} accept4 calls ({} EMFILE), {} epoll_wait calls:\n",
            count("accept"),
            count("EMFILE"),
            count("epoll_")
        );
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        print_lines(&lines, 12);
    }
    println!();
    Ok(())
}
