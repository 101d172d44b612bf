//! Blocking work kept off the event loop: resolving host names (`getaddrinfo` can take seconds) and, on
//! SIGHUP, reading and resolving the `--config` file.
//!
//! One worker thread takes [`Job`]s from a channel and sends [`Answer`]s back; after each answer it wakes
//! the loop through a `mio::Waker` (an eventfd on Linux), so the reactor sleeps in `epoll_wait` as usual
//! and drains the answers when the waker's token comes up. The reactor never waits for the worker: a
//! resolution that hangs only delays that route's next address update. When the reactor is dropped the job
//! channel closes and the thread ends.
//!
//! CONNECT destinations named by host ([`Lookup`]) go to [`LOOKUP_THREADS`] threads of their own, started
//! with the first one: a client's name whose DNS server is slow then holds up neither a reload nor the
//! other clients' names (up to that many slow names at once). Their answers share the channel and the
//! waker.
//!
//! With `--threads`, reactor 0 hands each applied reload to the others through their [`Inbox`]es: straight
//! into the answer channel, with a wake, so a follower applies it on its next turn and not after whatever
//! `getaddrinfo` its worker is blocked in. An inbox holds no end of the job channel, so it does not keep
//! a follower's worker alive.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use log::warn;
use mio::Waker;

use crate::config::Config;
use crate::file::{self, Defaults, FileError};

/// Resolves `HOST:PORT`; the first address the resolver gives is the one used.
pub fn first_address(host_port: &str) -> Result<SocketAddr, String> {
    host_port
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve upstream '{host_port}': {err}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve upstream '{host_port}': no address"))
}

/// Threads resolving CONNECT destinations, so that one slow name does not hold up the others.
pub const LOOKUP_THREADS: usize = 4;

/// Resolves a CONNECT destination `HOST:PORT`; the first address the resolver gives is the one used.
pub fn destination_address(host_port: &str) -> Result<SocketAddr, String> {
    host_port
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {host_port}: {err}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host_port}: no address"))
}

/// A CONNECT destination to resolve for the pair in slab slot `pair`, whose id is `id` (slots are
/// reused; the id tells a stale answer, as it tells a stale token).
#[derive(Debug)]
pub struct Lookup {
    pub pair: usize,
    pub id: u32,
    pub host_port: String,
}

/// Work for the thread.
#[derive(Debug)]
pub enum Job {
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
pub enum Answer {
    /// Carries the job's `epoch`: an answer to a question asked before a reload was applied may
    /// hold an address older than the reload's own, and is not used.
    Resolved {
        route: usize,
        uid: u64,
        epoch: u64,
        addrs: Vec<(usize, Result<SocketAddr, String>)>,
    },
    Reloaded(Box<Result<Config, FileError>>),
    /// The answer to a [`Lookup`].
    Looked {
        pair: usize,
        id: u32,
        addr: Result<SocketAddr, String>,
    },
    /// `--threads`: the first reactor has applied `config`; this reactor follows it, binding new
    /// listeners at `pins` (route by route, the addresses the first reactor got for them). Sent
    /// through an [`Inbox`], not by the worker.
    Follow(Box<(Config, Vec<Vec<SocketAddr>>)>),
}

/// The worker thread's two channel ends, as the reactor holds them, and what an [`Inbox`] is made of.
#[derive(Debug)]
pub struct Worker {
    jobs: Sender<Job>,
    /// The lookup threads' queue, once the first [`Lookup`] started them.
    lookups: Option<Sender<Lookup>>,
    answers: Receiver<Answer>,
    answer_tx: Sender<Answer>,
    waker: Arc<Waker>,
}

/// Another thread's way to hand this reactor an [`Answer::Follow`] directly.
#[derive(Debug)]
pub struct Inbox {
    answers: Sender<Answer>,
    waker: Arc<Waker>,
}

impl Inbox {
    /// Delivers an applied configuration and wakes the reactor; `false` if the reactor is gone.
    pub fn follow(&self, config: Config, pins: Vec<Vec<SocketAddr>>) -> bool {
        if self
            .answers
            .send(Answer::Follow(Box::new((config, pins))))
            .is_err()
        {
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
    pub fn spawn(waker: Waker) -> io::Result<Worker> {
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
            answers,
            answer_tx,
            waker,
        })
    }

    /// Queues a CONNECT destination, starting the lookup threads the first time; `false` if they cannot
    /// be started or are gone.
    pub fn lookup(&mut self, job: Lookup) -> bool {
        if self.lookups.is_none() {
            match self.spawn_lookups() {
                Ok(queue) => self.lookups = Some(queue),
                Err(err) => {
                    warn!("cannot start the lookup threads: {err}");
                    return false;
                }
            }
        }
        self.lookups
            .as_ref()
            .is_some_and(|queue| queue.send(job).is_ok())
    }

    /// The lookup threads share one queue. Each holds the queue's lock only while it waits for a job, so
    /// the others can take the next ones while it is in `getaddrinfo`. They end when this handle drops
    /// the queue.
    fn spawn_lookups(&self) -> io::Result<Sender<Lookup>> {
        let (queue, jobs) = mpsc::channel::<Lookup>();
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
                    let answer = Answer::Looked {
                        pair: job.pair,
                        id: job.id,
                        addr: destination_address(&job.host_port),
                    };
                    if answers.send(answer).is_err() {
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
    pub fn inbox(&self) -> Inbox {
        Inbox {
            answers: self.answer_tx.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Queues a job; `false` if the thread is gone (it only ends when the reactor drops this handle, or
    /// if it panicked).
    pub fn submit(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }

    /// Answers that have arrived, without waiting.
    pub fn answers(&self) -> impl Iterator<Item = Answer> + '_ {
        self.answers.try_iter()
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
                .map(|(index, name)| (index, first_address(&name)))
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
        for (pair, id, host_port) in [(5, 50, "localhost:80"), (6, 60, "no-such-host.invalid:80")] {
            let host_port = host_port.to_string();
            assert!(worker.lookup(Lookup {
                pair,
                id,
                host_port
            }));
        }
        let (mut answers, mut woken) = (Vec::new(), false);
        let mut events = Events::with_capacity(4);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
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
                addr: Ok(found),
            }, Answer::Looked {
                pair: 6,
                id: 60,
                addr: Err(err),
            }] => {
                assert!(found.ip().is_loopback() && found.port() == 80, "{found}");
                assert!(err.contains("no-such-host.invalid:80"), "{err}");
            }
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
                assert_eq!(addrs[0].1, Ok("127.0.0.1:80".parse().expect("addr")));
                assert!(addrs[1].1.is_err());
            }
            other => panic!("{other:?}"),
        }
    }
}
