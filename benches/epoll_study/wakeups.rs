//! Experiment `wakeups`: ping-pong connections, epoll_wait calls, events per call, syscalls per request.

use std::thread::{self};
use std::time::{Duration, Instant};

use crate::backends::start_echo;
use crate::cli::Options;
use crate::fwd::start_fwd;
use crate::load::PingPong;
use crate::sample::{pct, ratio, scrape_overhead};
use crate::table::Table;
use crate::R;

pub(crate) fn wakeups(opts: &Options) -> R<()> {
    println!(
        "## wakeups: {}-byte echo ping-pong, {} s per run after {} s settling, {} idle pairs\n",
        opts.message, opts.seconds, opts.settle, opts.idle
    );
    let mut table = Table::new(&[
        "conns",
        "idle",
        "requests",
        "req/s",
        "polls",
        "events",
        "events/poll",
        "median",
        "spurious",
        "polls/req",
        "events/req",
        "reads/req",
        "writes/req",
        "read WB/req",
        "write WB/req",
    ]);
    let mut notes = Vec::new();
    let runs = opts
        .conns
        .iter()
        .flat_map(|&conns| std::iter::repeat_n(conns, opts.repeat));
    for conns in runs {
        eprintln!("[wakeups] {conns} connections ...");
        let echo = start_echo()?;
        let fwd = start_fwd(opts, echo.addr(), &opts.fwd_args)?;
        let mut engine = PingPong::open(fwd.listen, conns, opts.idle, opts.message)?;
        // A new pair's connect deadline stays armed after the connect succeeds and wakes the loop
        // once when it passes: keep those one-off wakeups out of the steady-state figures.
        thread::sleep(Duration::from_secs_f64(opts.settle));
        let (before, note) = scrape_overhead(&fwd)?;
        if notes.is_empty() {
            notes.push(note);
        }
        let start = Instant::now();
        let requests = engine.run(Duration::from_secs_f64(opts.seconds))?;
        let elapsed = start.elapsed();
        thread::sleep(Duration::from_millis(100));
        let d = fwd.scrape()?.since(&before);
        let per = |n: u64| format!("{:.2}", ratio(n, requests));
        table.row(vec![
            conns.to_string(),
            opts.idle.to_string(),
            requests.to_string(),
            format!("{:.0}", requests as f64 / elapsed.as_secs_f64()),
            d.c("polls").to_string(),
            d.c("events").to_string(),
            format!("{:.2}", ratio(d.c("events"), d.c("polls"))),
            d.median_bucket("edgefwd_events_per_poll"),
            format!(
                "{} ({})",
                d.c("spurious_wakeups"),
                pct(d.c("spurious_wakeups"), d.c("polls"))
            ),
            per(d.c("polls")),
            per(d.c("events")),
            per(d.c("reads")),
            per(d.c("writes")),
            per(d.c("reads_would_block")),
            per(d.c("writes_would_block")),
        ]);
        let empty = d.at_or_below("edgefwd_events_per_poll", "1");
        let expected = 2 * requests * opts.message as u64;
        notes.push(format!(
            "{conns} conns: polls returning 0 or 1 events {} of {}; budget yields {}; short writes {}; bytes forwarded {} ({})",
            empty,
            d.c("polls"),
            d.c("budget_yields"),
            d.c("writes_short"),
            d.bytes(),
            if d.bytes() == expected {
                "= 2 x requests x message".to_string()
            } else {
                format!("MISMATCH: 2 x requests x message = {expected}")
            }
        ));
        drop(engine);
        drop(fwd);
        drop(echo);
    }
    table.print();
    println!();
    for note in notes {
        println!("- {note}");
    }
    println!(
        "- polls = epoll_wait calls; events = readiness events they returned; median = the events_per_poll \
histogram bucket holding the median poll; spurious = polls whose events moved no byte and changed no state; \
WB = WouldBlock; req/s is context only (three busy threads share the CPUs)"
    );
    Ok(())
}
