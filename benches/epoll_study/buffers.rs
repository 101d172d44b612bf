//! Experiment `buffers`: one bulk stream per buffer size into a sink, syscalls and polls per MiB.

use std::sync::atomic::Ordering;
use std::thread::{self};
use std::time::Duration;

use crate::backends::{Sink, SinkCfg};
use crate::cli::{size_label, Options};
use crate::fwd::start_fwd;
use crate::load::bulk_send;
use crate::sample::{pct, scrape_overhead, Sample};
use crate::strace::{strace_available, Strace};
use crate::support::strace::parse_summary;
use crate::table::Table;
use crate::R;

/// One bulk run's figures.
struct BulkRun {
    label: String,
    pub(crate) mib: f64,
    pub(crate) d: Sample,
    pub(crate) elapsed: Duration,
    pub(crate) strace: Option<Vec<(String, u64)>>,
}

pub(crate) fn buffers(opts: &Options) -> R<()> {
    let traced = opts.strace && strace_available();
    if opts.strace && !traced {
        return Err("--strace needs strace (apt-get install strace)".into());
    }
    println!(
        "## buffers: one {} MiB stream client -> edgefwd -> sink, per --buffer-size\n",
        opts.mib
    );
    let mut runs = Vec::new();
    let mut overhead = None;
    for &size in &opts.sizes {
        for splice in [false, true] {
            if splice && !opts.splice {
                continue;
            }
            let label = format!(
                "{}{}",
                size_label(size),
                if splice { " splice" } else { "" }
            );
            eprintln!("[buffers] {label} ...");
            let sink = Sink::start(SinkCfg::fast())?;
            let mut args = vec!["--buffer-size".to_string(), size.to_string()];
            if splice {
                // Pipes as large as the ring, from the first byte, so the rows compare like with like.
                args.extend(["--splice".into(), "always".into()]);
                args.extend(["--pipe-size".into(), size.max(4096).to_string()]);
            }
            args.extend(opts.fwd_args.iter().cloned());
            let fwd = start_fwd(opts, sink.addr, &args)?;
            let (before, note) = scrape_overhead(&fwd)?;
            overhead.get_or_insert(note);
            let tracer = match traced {
                true => Some(Strace::attach(fwd.pid(), &["-c", "-f"])?),
                false => None,
            };
            let elapsed = bulk_send(fwd.listen, opts.mib << 20)?;
            let strace = match tracer {
                Some(tracer) => Some(parse_summary(&tracer.finish()?)),
                None => None,
            };
            let got = sink.received.load(Ordering::SeqCst);
            if got != opts.mib << 20 {
                return Err(format!(
                    "{label}: the sink received {got} bytes of {}",
                    opts.mib << 20
                ));
            }
            thread::sleep(Duration::from_millis(100));
            let d = fwd.scrape()?.since(&before);
            runs.push(BulkRun {
                label,
                mib: got as f64 / f64::from(1u32 << 20),
                d,
                elapsed,
                strace,
            });
        }
    }
    let per_mib = |n: u64, run: &BulkRun| {
        let v = n as f64 / run.mib;
        if v < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.1}")
        }
    };

    println!("### syscalls and wakeups per MiB (edgefwd's counters)\n");
    let mut table = Table::new(&[
        "buffer",
        "reads/MiB",
        "writes/MiB",
        "epoll_wait/MiB",
        "events/MiB",
        "bytes/read",
        "bytes/write",
        "read median",
        "budget yields/MiB",
        "spurious",
        "MiB/s",
    ]);
    for run in &runs {
        let d = &run.d;
        table.row(vec![
            run.label.clone(),
            per_mib(d.c("reads"), run),
            per_mib(d.c("writes"), run),
            per_mib(d.c("polls"), run),
            per_mib(d.c("events"), run),
            format!("{:.0}", d.mean("edgefwd_read_bytes")),
            format!("{:.0}", d.mean("edgefwd_write_bytes")),
            d.median_bucket("edgefwd_read_bytes"),
            per_mib(d.c("budget_yields"), run),
            d.c("spurious_wakeups").to_string(),
            format!("{:.0}", run.mib / run.elapsed.as_secs_f64()),
        ]);
    }
    table.print();

    println!("\n### how reads and writes ended\n");
    let mut table = Table::new(&[
        "buffer",
        "reads",
        "with data",
        "WouldBlock",
        "EOF",
        "ring-full stops",
        "writes",
        "short writes",
        "write WouldBlock",
        "polls with 0-1 events",
    ]);
    for run in &runs {
        let d = &run.d;
        let (reads, writes) = (d.c("reads"), d.c("writes"));
        let data = d.get("edgefwd_read_bytes_count");
        table.row(vec![
            run.label.clone(),
            reads.to_string(),
            format!("{data} ({})", pct(data, reads)),
            format!(
                "{} ({})",
                d.c("reads_would_block"),
                pct(d.c("reads_would_block"), reads)
            ),
            d.c("reads_eof").to_string(),
            d.c("reads_ring_full").to_string(),
            writes.to_string(),
            format!(
                "{} ({})",
                d.c("writes_short"),
                pct(d.c("writes_short"), writes)
            ),
            format!(
                "{} ({})",
                d.c("writes_would_block"),
                pct(d.c("writes_would_block"), writes)
            ),
            format!(
                "{} of {}",
                d.at_or_below("edgefwd_events_per_poll", "1"),
                d.c("polls")
            ),
        ]);
    }
    table.print();

    if runs.iter().any(|r| r.strace.is_some()) {
        println!("\n### strace -c -f -p PID during the same runs (calls per MiB)\n");
        // The per-byte calls get a column each; connection setup and teardown go into "other".
        const HOT: [&str; 9] = [
            "epoll_wait",
            "epoll_pwait",
            "read",
            "readv",
            "recvfrom",
            "write",
            "writev",
            "sendto",
            "splice",
        ];
        let names: Vec<&str> = HOT
            .into_iter()
            .filter(|name| {
                runs.iter()
                    .flat_map(|r| r.strace.iter().flatten())
                    .any(|(c, _)| c == name)
            })
            .collect();
        let mut header = vec!["buffer"];
        header.extend(names.iter().copied());
        header.extend(["other", "total"]);
        let mut table = Table::new(&header);
        for run in &runs {
            let calls = run.strace.clone().unwrap_or_default();
            let count = |name: &str| calls.iter().find(|(c, _)| c == name).map_or(0, |(_, n)| *n);
            let total: u64 = calls.iter().map(|(_, n)| n).sum();
            let hot: u64 = names.iter().map(|name| count(name)).sum();
            let mut row = vec![run.label.clone()];
            row.extend(names.iter().map(|name| per_mib(count(name), run)));
            row.push(per_mib(total - hot, run));
            row.push(per_mib(total, run));
            table.row(row);
        }
        table.print();
        println!("\n- strace slows edgefwd several-fold, so it finds more bytes per wakeup than at full speed: compare with the first table, not with other machines");
    }
    println!();
    if let Some(note) = overhead {
        println!("- {note}");
    }
    println!("- reads/writes count read/readv and write/writev calls (splice calls on the --splice rows); ring-full stops are reads *not* made because the ring was full; MiB/s is context only");
    Ok(())
}
