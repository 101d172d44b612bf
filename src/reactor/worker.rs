//! Blocking work kept off the event loop: resolving host names (`getaddrinfo` can take seconds) and, on
//! SIGHUP, reading and resolving the `--config` file.
//!
//! One worker thread takes [`Job`]s from a channel and sends [`Answer`]s back; after each answer it wakes
//! the loop through a `mio::Waker` (an eventfd on Linux), so the reactor sleeps in `epoll_wait` as usual
//! and drains the answers when the waker's token comes up. The reactor never waits for the worker: a
//! resolution that hangs only delays that route's next address update. When the reactor is dropped the job
//! channel closes and the thread ends.
//!
//! CONNECT destinations named by host ([`Lookup`]) go to [`LOOKUP_THREADS`] threads of their own (per
//! reactor), started with the first one: a client's name whose DNS server is slow then holds up no reload,
//! and no other client's name while fewer than that many are slow at once. Names are served first come,
//! first served from a bounded queue ([`LOOKUP_QUEUE`]); one whose client's deadline passed while it
//! waited is answered without a lookup, so a burst of slow names cannot leave the threads working for
//! clients long gone. Their answers share the channel and the waker.
//!
//! With `--threads`, reactor 0 hands each applied reload to the others through their [`Inbox`]es: straight
//! into the answer channel, with a wake, so a follower applies it on its next turn and not after whatever
//! `getaddrinfo` its worker is blocked in. An inbox holds no end of the job channel, so it does not keep
//! a follower's worker alive.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::warn;
use mio::net::TcpListener;
use mio::Waker;

use crate::config::dns::{self, destination_addresses};
use crate::config::file::{self, Defaults, FileError};
use crate::config::{upstream_addr, Config, UpstreamAddresses};
use crate::observe::admin::{Part, Request};

/// Threads resolving CONNECT destinations, so that one slow name does not hold up the others.
const LOOKUP_THREADS: usize = 4;

/// CONNECT destinations that may wait for a lookup thread; a client beyond them gets 502 at once.
const LOOKUP_QUEUE: usize = 1024;

/// How long after the lookup threads failed to start they are not tried again (and warned about).
const LOOKUP_RETRY: Duration = Duration::from_secs(10);

/// A CONNECT destination to resolve for the pair in slab slot `pair`, whose id is `id` (slots are
/// reused; the id tells a stale answer, as it tells a stale token).
#[derive(Debug)]
pub(crate) struct Lookup {
    pub(super) pair: usize,
    pub(super) id: u32,
    pub(super) host_port: String,
    /// The pair's connect deadline: past it the client has had its 504, and the name is not looked up.
    pub(super) until: Instant,
}

/// Why a [`Lookup`] was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotQueued {
    /// [`LOOKUP_QUEUE`] names are waiting already.
    Full,
    /// The lookup threads could not be started (or have gone).
    NoThreads,
}

impl NotQueued {
    pub(super) fn reason(self) -> &'static str {
        match self {
            NotQueued::Full => "the lookup queue is full",
            NotQueued::NoThreads => "no lookup thread",
        }
    }
}

/// Work for the thread.
#[derive(Debug)]
pub(super) enum Job {
    /// Re-resolve these upstreams (index, `HOST:PORT`) of the route in slab slot `route`, whose unique id
    /// is `uid` (slots are reused, ids are not).
    Resolve {
        route: usize,
        uid: u64,
        /// How many reloads the reactor had applied when it asked; see [`Answer::Resolved`].
        epoch: u64,
        names: Vec<(usize, String)>,
    },
    /// Read, validate and resolve the config file.
    Reload { path: PathBuf, defaults: Defaults },
}

/// What came back.
#[derive(Debug)]
pub(super) enum Answer {
    /// Carries the job's `epoch`: an answer to a question asked before a reload was applied may
    /// hold an address older than the reload's own, and is not used.
    Resolved {
        route: usize,
        uid: u64,
        epoch: u64,
        addrs: Vec<(usize, UpstreamAddresses)>,
    },
    Reloaded(Box<Result<Config, FileError>>),
    /// The answer to a [`Lookup`]: the destination's addresses, in the order to try them.
    Looked {
        pair: usize,
        id: u32,
        addrs: Result<Vec<SocketAddr>, String>,
    },
    /// `--threads`: the first reactor has applied `config`; this reactor follows it, accepting from
    /// the first reactor's listening sockets where it would bind (route by route, in listen order,
    /// new descriptors of the listeners of every route the first reactor built; `None` where one
    /// could not be made). Sent through an [`Inbox`], not by the worker.
    Follow(Box<(Config, Vec<Vec<Option<TcpListener>>>)>),
    /// `--admin` with `--threads`: an admin request reactor 0 puts to this reactor, whose part of the
    /// answer goes back through the ask's `reply` (`reactor::admin`).
    Ask(Box<Ask>),
    /// Another reactor's part of the answer to ask `ticket`.
    Part {
        ticket: u64,
        part: Box<Part>,
    },
}

/// An admin request put to another reactor.
#[derive(Debug)]
pub(super) struct Ask {
    pub(super) ticket: u64,
    pub(super) request: Arc<Request>,
    /// The asking reactor's inbox.
    pub(super) reply: Inbox,
}

/// The worker's channel ends (the resolver thread's jobs, the lookup threads' queue, the answers), as the
/// reactor holds them, and what an [`Inbox`] is made of.
#[derive(Debug)]
pub(super) struct Worker {
    jobs: Sender<Job>,
    /// The lookup threads' queue, once the first [`Lookup`] started them.
    lookups: Option<SyncSender<Lookup>>,
    /// When starting the lookup threads last failed.
    lookups_failed: Option<Instant>,
    answers: Receiver<Answer>,
    answer_tx: Sender<Answer>,
    waker: Arc<Waker>,
}

/// Another thread's way to hand this reactor an [`Answer::Follow`] directly, or an admin [`Ask`] or
/// [`Part`].
#[derive(Debug, Clone)]
pub struct Inbox {
    answers: Sender<Answer>,
    waker: Arc<Waker>,
}

impl Inbox {
    /// Delivers an applied configuration and wakes the reactor; `false` if the reactor is gone.
    pub(super) fn follow(&self, config: Config, listeners: Vec<Vec<Option<TcpListener>>>) -> bool {
        self.deliver(Answer::Follow(Box::new((config, listeners))))
    }

    /// Delivers an admin request; `false` if the reactor is gone.
    pub(super) fn ask(&self, ask: Ask) -> bool {
        self.deliver(Answer::Ask(Box::new(ask)))
    }

    /// Delivers a reactor's part of an admin answer; `false` if the asking reactor is gone.
    pub(super) fn answer(&self, ticket: u64, part: Part) -> bool {
        self.deliver(Answer::Part {
            ticket,
            part: Box::new(part),
        })
    }

    fn deliver(&self, answer: Answer) -> bool {
        if self.answers.send(answer).is_err() {
            return false;
        }
        if let Err(err) = self.waker.wake() {
            warn!("cannot wake a sibling reactor: {err}");
        }
        true
    }
}

impl Worker {
    /// Starts the thread; `waker` is rung after every answer.
    pub(super) fn spawn(waker: Waker) -> io::Result<Worker> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (answer_tx, answers) = mpsc::channel();
        let waker = Arc::new(waker);
        let (thread_tx, thread_waker) = (answer_tx.clone(), Arc::clone(&waker));
        thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                for job in job_rx {
                    if thread_tx.send(run(job)).is_err() {
                        return;
                    }
                    if let Err(err) = thread_waker.wake() {
                        warn!("resolver cannot wake the event loop: {err}");
                    }
                }
            })?;
        Ok(Worker {
            jobs,
            lookups: None,
            lookups_failed: None,
            answers,
            answer_tx,
            waker,
        })
    }

    /// Queues a CONNECT destination, starting the lookup threads the first time (and, if that failed,
    /// again `LOOKUP_RETRY` later, not for every client).
    pub(super) fn lookup(&mut self, job: Lookup) -> Result<(), NotQueued> {
        if self.lookups.is_none() {
            let now = Instant::now();
            if self
                .lookups_failed
                .is_some_and(|failed| now < failed + LOOKUP_RETRY)
            {
                return Err(NotQueued::NoThreads);
            }
            match self.spawn_lookups() {
                Ok(queue) => self.lookups = Some(queue),
                Err(err) => {
                    warn!("cannot start the lookup threads (CONNECT to host names get 502): {err}");
                    self.lookups_failed = Some(now);
                    return Err(NotQueued::NoThreads);
                }
            }
        }
        let queue = self.lookups.as_ref().ok_or(NotQueued::NoThreads)?;
        match queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(NotQueued::Full),
            Err(TrySendError::Disconnected(_)) => {
                // Every lookup thread is gone (only a panic ends one early): start them afresh later.
                warn!("the lookup threads have stopped; starting them again in {LOOKUP_RETRY:?}");
                self.lookups = None;
                self.lookups_failed = Some(Instant::now());
                Err(NotQueued::NoThreads)
            }
        }
    }

    /// The lookup threads share one queue. Each holds the queue's lock only while it waits for a job, so
    /// the others can take the next ones while it is in `getaddrinfo`. They end when this handle drops
    /// the queue (or when the reactor has dropped the answer channel).
    fn spawn_lookups(&self) -> io::Result<SyncSender<Lookup>> {
        let (queue, jobs) = mpsc::sync_channel::<Lookup>(LOOKUP_QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..LOOKUP_THREADS {
            let (jobs, answers) = (Arc::clone(&jobs), self.answer_tx.clone());
            let waker = Arc::clone(&self.waker);
            thread::Builder::new()
                .name(format!("lookup-{n}"))
                .spawn(move || loop {
                    let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(job) = next else {
                        return;
                    };
                    if answers.send(look_up(job)).is_err() {
                        return;
                    }
                    if let Err(err) = waker.wake() {
                        warn!("a lookup thread cannot wake the event loop: {err}");
                    }
                })?;
        }
        Ok(queue)
    }

    /// Another thread's way to hand this reactor a reload (the first reactor's, to the others).
    pub(super) fn inbox(&self) -> Inbox {
        Inbox {
            answers: self.answer_tx.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Queues a job; `false` if the thread is gone (it only ends when the reactor drops this handle, or
    /// if it panicked).
    pub(super) fn submit(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }

    /// Answers that have arrived, without waiting.
    pub(super) fn answers(&self) -> impl Iterator<Item = Answer> + '_ {
        self.answers.try_iter()
    }
}

/// Resolves one CONNECT destination, unless its client's deadline passed while it waited in the queue.
fn look_up(job: Lookup) -> Answer {
    let addrs = if Instant::now() >= job.until {
        Err(format!(
            "{}: not looked up, the connect deadline passed while it waited for a lookup thread",
            job.host_port
        ))
    } else {
        destination_addresses(&job.host_port)
    };
    Answer::Looked {
        pair: job.pair,
        id: job.id,
        addrs,
    }
}

fn run(job: Job) -> Answer {
    match job {
        Job::Resolve {
            route,
            uid,
            epoch,
            names,
        } => Answer::Resolved {
            route,
            uid,
            epoch,
            addrs: names
                .into_iter()
                .map(|(index, name)| {
                    let addrs = upstream_addr::addresses_of(&name, &mut dns::upstream_addresses);
                    (index, addrs)
                })
                .collect(),
        },
        Job::Reload { path, defaults } => Answer::Reloaded(Box::new(file::load(&path, defaults))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    /// Two lookups, on two of the lookup threads: each answer names its pair and id, a name that does not
    /// resolve comes back as an error, and the waker rings for them.
    #[test]
    fn test_lookups_answer_their_pairs_with_a_wakeup() {
        let mut poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(7)).expect("waker");
        let mut worker = Worker::spawn(waker).expect("spawn");
        let until = std::time::Instant::now() + Duration::from_secs(60);
        for (pair, id, host_port) in [(5, 50, "localhost:80"), (6, 60, "no-such-host.invalid:80")] {
            let host_port = host_port.to_string();
            let job = Lookup {
                pair,
                id,
                host_port,
                until,
            };
            assert_eq!(worker.lookup(job), Ok(()));
        }
        let (mut answers, mut woken) = (Vec::new(), false);
        let mut events = Events::with_capacity(4);
        let deadline = std::time::Instant::now() + Duration::from_secs(70);
        while answers.len() < 2 && std::time::Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_secs(1)))
                .expect("poll");
            woken |= events.iter().any(|event| event.token() == Token(7));
            answers.extend(worker.answers());
        }
        assert!(woken, "no wakeup for the answers");
        answers.sort_by_key(|answer| match answer {
            Answer::Looked { pair, .. } => *pair,
            _ => usize::MAX,
        });
        match answers.as_slice() {
            [Answer::Looked {
                pair: 5,
                id: 50,
                addrs: Ok(found),
            }, Answer::Looked {
                pair: 6,
                id: 60,
                addrs: Err(err),
            }] => {
                assert!(
                    !found.is_empty() && found.len() <= dns::DESTINATION_ADDRESSES,
                    "{found:?}"
                );
                assert!(
                    found
                        .iter()
                        .all(|addr| addr.ip().is_loopback() && addr.port() == 80),
                    "{found:?}"
                );
                assert!(err.contains("no-such-host.invalid:80"), "{err}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A name whose client's deadline passed while it waited is answered at once, without a lookup.
    #[test]
    fn test_a_lookup_past_its_deadline_is_not_made() {
        let job = Lookup {
            pair: 1,
            id: 2,
            host_port: "localhost:80".into(),
            until: std::time::Instant::now(),
        };
        match look_up(job) {
            Answer::Looked {
                pair: 1,
                id: 2,
                addrs: Err(err),
            } => assert!(err.contains("not looked up"), "{err}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn test_answers_arrive_with_a_wakeup() {
        let mut poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), Token(7)).expect("waker");
        let worker = Worker::spawn(waker).expect("spawn");
        assert!(worker.submit(Job::Resolve {
            route: 3,
            uid: 9,
            epoch: 2,
            names: vec![
                (0, "127.0.0.1:80".into()),
                (1, "no-such-host.invalid:80".into())
            ],
        }));
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(30)))
            .expect("poll");
        assert!(events.iter().any(|event| event.token() == Token(7)));
        let answers: Vec<Answer> = worker.answers().collect();
        match answers.as_slice() {
            [Answer::Resolved {
                route: 3,
                uid: 9,
                epoch: 2,
                addrs,
            }] => {
                assert_eq!(addrs[0].1, Ok(vec!["127.0.0.1:80".parse().expect("addr")]));
                assert!(addrs[1].1.is_err());
            }
            other => panic!("{other:?}"),
        }
    }
}
