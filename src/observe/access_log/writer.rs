//! The access log's writer: one thread per process, fed by every reactor through one bounded queue.
//!
//! A reactor never waits on the log. It offers each [`Record`] with `try_send`; when the queue is full
//! (the disk is slow, the file is a FIFO nobody reads, stdout is a stalled pipe) the line is dropped and
//! the reactor counts it (`edgefwd_access_log_dropped_total`). The queue holds [`QUEUE_LINES`] records,
//! enough for a reactor to close every pair of a large shutdown cut in one turn without dropping any.
//!
//! The thread renders lines into a buffer and writes it out whenever the queue runs dry, when it holds
//! [`BUFFER_BYTES`], or when lines have kept coming for [`FLUSH_EVERY`] without a pause. One thread
//! writing whole buffers means lines from several `--threads` reactors never interleave within a line.
//!
//! After each write it naps for [`GATHER`] before it looks at the queue again, and only then, if the
//! queue is empty, sleeps in `recv`. The nap is what keeps the log off the data path: a sender wakes
//! the receiver (a futex call in the reactor's `try_send`) only when the receiver is parked in `recv`,
//! so without it, at a few thousand closes a second, nearly every line cost the reactor a wake-up call
//! and the writer a wakeup and a `write(2)` of its own (docs/benchmarks.md, "Observability on and
//! off": 1.23x the forwarder's CPU per connection in churn). With it, a busy log is written about 40
//! times a second in batches and the reactors never wake the writer; an idle one still has no periodic
//! wakeup, and `tail -f` sees a line within about [`GATHER`] of its connection's end.
//!
//! SIGUSR1 (the reactor's signal handling calls [`AccessLog::reopen`]) makes the thread write out what
//! it holds to the file it has, then open the path again: after logrotate renamed the file (its
//! `create` mode), new lines go to a new file at the path while the old one keeps the earlier lines. A
//! reopen that fails keeps the old file and warns. The file is first opened by [`AccessLog::start`],
//! before `--user` drops root, so a log directory only root may write to works.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::warn;

use super::Record;
use crate::config::access_log::{self, Destination, Format};
use crate::service;
use crate::throttle::Throttle;

/// Records the queue holds before a reactor's next one is dropped.
pub const QUEUE_LINES: usize = 8192;
/// The buffer is written out once it holds this much.
const BUFFER_BYTES: usize = 64 * 1024;
/// Lines are written out at least this often while they keep coming.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The writer's nap after each write, gathering the next batch without being woken for each line.
const GATHER: Duration = Duration::from_millis(25);
/// Permission bits of a log file the writer creates (before the umask): client addresses are not for
/// every local user.
const FILE_MODE: u32 = 0o640;
/// At most one warning per this long about failed writes.
const WRITE_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What goes down the queue.
#[derive(Debug)]
enum Message {
    Line(Record),
    /// SIGUSR1 set the reopen flag: the lines before this one go to the old file.
    Reopen,
}

/// A reactor's end of the queue; each reactor holds a clone.
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: SyncSender<Message>,
    /// Set by SIGUSR1, taken by the writer: also when the queue is too full to carry [`Message::Reopen`].
    reopen: Arc<AtomicBool>,
}

/// The writer thread, for `main` to wait for at exit: it writes out the last lines once every
/// [`AccessLog`] is dropped.
#[derive(Debug)]
pub struct Writer {
    thread: JoinHandle<()>,
}

impl Writer {
    /// Waits until every line offered has been written (every `AccessLog` must be dropped first).
    pub fn finish(self) {
        if self.thread.join().is_err() {
            warn!("the access log writer panicked; its last lines are lost");
        }
    }
}

impl AccessLog {
    /// Opens the destination (now, while the process may still be root) and starts the writer thread;
    /// `None` when the access log is off.
    pub fn start(settings: &access_log::AccessLog) -> Result<Option<(AccessLog, Writer)>, String> {
        let Some(destination) = settings.destination.clone() else {
            return Ok(None);
        };
        let sink = Sink::open(destination)?;
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&reopen);
        let format = settings.format;
        let thread = std::thread::Builder::new()
            .name(String::from("access-log"))
            .spawn(move || write_lines(&lines, sink, format, &flag))
            .map_err(|err| format!("cannot start the access log writer: {err}"))?;
        Ok(Some((AccessLog { queue, reopen }, Writer { thread })))
    }

    /// `--check`: the file's directory exists (whether the file can be opened is known only when it is).
    pub fn check(settings: &access_log::AccessLog) -> Result<(), String> {
        let Some(Destination::File(path)) = &settings.destination else {
            return Ok(());
        };
        service::check_directory("access log", path)
    }

    /// Offers a line without waiting; false when it was dropped (the queue is full).
    pub(crate) fn offer(&self, record: Record) -> bool {
        match self.queue.try_send(Message::Line(record)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// SIGUSR1: the writer reopens its file before its next write.
    pub(crate) fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        // A full queue wakes the writer anyway, and it looks at the flag after every batch.
        let _ = self.queue.try_send(Message::Reopen);
    }
}

/// The writer thread: until every sender is gone, take what the queue holds, render it, write it out.
fn write_lines(lines: &Receiver<Message>, mut sink: Sink, format: Format, reopen: &AtomicBool) {
    let mut buffer = String::with_capacity(BUFFER_BYTES);
    let mut warning = Throttle::new(WRITE_WARNING_INTERVAL);
    // Blocks while nothing comes; `Err` once every reactor's sender is dropped.
    while let Ok(first) = lines.recv() {
        let ends = Instant::now() + FLUSH_EVERY;
        let mut next = Some(first);
        let mut open = true;
        while let Some(message) = next.take() {
            match message {
                Message::Line(record) => record.render(format, &mut buffer),
                // The lines queued before the signal go to the old file, those after it to the new.
                Message::Reopen => take_reopen(reopen, &mut sink, &mut buffer, &mut warning),
            }
            if buffer.len() >= BUFFER_BYTES || Instant::now() >= ends {
                break;
            }
            match lines.try_recv() {
                Ok(message) => next = Some(message),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        sink.write_out(&mut buffer, &mut warning);
        // A signal whose `Reopen` found the queue full, or is still on its way.
        take_reopen(reopen, &mut sink, &mut buffer, &mut warning);
        if !open {
            break;
        }
        std::thread::sleep(GATHER);
    }
    sink.write_out(&mut buffer, &mut warning);
}

/// If SIGUSR1 asked for it (and no earlier call took it): writes out what the buffer holds to the file
/// it was meant for, then opens the path again.
fn take_reopen(reopen: &AtomicBool, sink: &mut Sink, buffer: &mut String, warning: &mut Throttle) {
    if reopen.swap(false, Ordering::AcqRel) {
        sink.write_out(buffer, warning);
        sink.reopen();
    }
}

/// Where lines are written.
enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(destination: Destination) -> Result<Sink, String> {
        match destination {
            Destination::Stdout => Ok(Sink::Stdout),
            Destination::File(path) => {
                let file = open_file(&path)
                    .map_err(|err| format!("cannot open access log {}: {err}", path.display()))?;
                Ok(Sink::File { path, file })
            }
        }
    }

    /// Writes the buffer out and empties it; a failed write loses those lines, with a warning.
    fn write_out(&mut self, buffer: &mut String, warning: &mut Throttle) {
        if buffer.is_empty() {
            return;
        }
        let written = match self {
            Sink::Stdout => {
                let mut stdout = io::stdout().lock();
                stdout
                    .write_all(buffer.as_bytes())
                    .and_then(|()| stdout.flush())
            }
            Sink::File { file, .. } => file.write_all(buffer.as_bytes()),
        };
        if let Err(err) = written {
            if let Some(suppressed) = warning.allow(Instant::now()) {
                warn!("access log: write failed, lines lost: {err} ({suppressed} more since)");
            }
        }
        buffer.clear();
    }

    /// Opens the path again (SIGUSR1); standard output has nothing to reopen.
    fn reopen(&mut self) {
        let Sink::File { path, file } = self else {
            return;
        };
        match open_file(path) {
            Ok(reopened) => *file = reopened,
            Err(err) => warn!(
                "access log: cannot reopen {}: {err}; still writing to the file opened before",
                path.display()
            ),
        }
    }
}

/// Appends to the file at `path`, creating it (mode 0640) if it is missing.
fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn line(port: u16) -> Record {
        Record::turned_away("r", SocketAddr::from(([127, 0, 0, 1], port)), "rejected")
    }

    /// Lines queued before a reopen go to the renamed file, lines after it to the new one, when the
    /// writer takes them all in one batch (run here on this thread, so the batch is certain).
    #[test]
    fn test_reopen_splits_one_batch_at_the_signal() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("edgefwd-writer-{}.log", std::process::id()));
        let rotated = path.with_extension("log.1");
        let sink = Sink::open(Destination::File(path.clone())).expect("open");
        let (queue, lines) = mpsc::sync_channel(4);
        let flag = AtomicBool::new(false);
        queue.send(Message::Line(line(1))).expect("queued");
        std::fs::rename(&path, &rotated).expect("rename");
        // What `AccessLog::reopen` does.
        flag.store(true, Ordering::Release);
        queue.send(Message::Reopen).expect("queued");
        queue.send(Message::Line(line(2))).expect("queued");
        drop(queue);
        write_lines(&lines, sink, Format::Text, &flag);
        let old = std::fs::read_to_string(&rotated).expect("the renamed file");
        let new = std::fs::read_to_string(&path).expect("the new file");
        let _ = (std::fs::remove_file(&path), std::fs::remove_file(&rotated));
        assert!(
            old.contains("client=127.0.0.1:1 ") && old.lines().count() == 1,
            "{old}"
        );
        assert!(
            new.contains("client=127.0.0.1:2 ") && new.lines().count() == 1,
            "{new}"
        );
    }
}
