//! The recorder alone: order, wrap-around, timestamps, and every happening in words.

use super::*;
use std::time::Duration;

fn at(started: Instant, micros: u64) -> Instant {
    started + Duration::from_micros(micros)
}

#[test]
fn test_entry_is_eight_bytes() {
    assert_eq!(std::mem::size_of::<Entry>(), 8);
    assert_eq!(std::mem::size_of::<Recorder>(), 8 * CAPACITY + 4);
}

#[test]
fn test_new_holds_the_accept_only() {
    let recorder = Recorder::new(Phase::Connecting);
    let events = recorder.events();
    assert_eq!(
        events,
        vec![EventView {
            at_ms: 0.0,
            event: "accepted (connecting)".into()
        }]
    );
}

#[test]
fn test_entries_come_oldest_first() {
    let started = Instant::now();
    let mut recorder = Recorder::new(Phase::Connecting);
    recorder.record(started, at(started, 1500), Happening::Attempt(1));
    recorder.record(started, at(started, 3000), Happening::Lookup);
    let happenings: Vec<_> = recorder.happenings().collect();
    assert_eq!(
        happenings,
        [
            Happening::Accepted(Phase::Connecting),
            Happening::Attempt(1),
            Happening::Lookup
        ]
    );
    let times: Vec<f64> = recorder.events().iter().map(|e| e.at_ms).collect();
    assert_eq!(times, [0.0, 1.5, 3.0]);
}

/// After 32 entries the oldest goes first: the accept, then each next one, and the newest is last.
#[test]
fn test_wraps_around_at_capacity() {
    let started = Instant::now();
    let mut recorder = Recorder::new(Phase::Connecting);
    let total = CAPACITY + 5;
    for n in 1..total {
        let what = Happening::Attempt(n as u8);
        recorder.record(started, at(started, n as u64 * 1000), what);
    }
    let happenings: Vec<_> = recorder.happenings().collect();
    assert_eq!(happenings.len(), CAPACITY);
    let expected: Vec<_> = (total - CAPACITY..total)
        .map(|n| Happening::Attempt(n as u8))
        .collect();
    assert_eq!(happenings, expected);
    let times: Vec<f64> = recorder.events().iter().map(|e| e.at_ms).collect();
    assert_eq!(times.first(), Some(&((total - CAPACITY) as f64)));
    assert_eq!(times.last(), Some(&((total - 1) as f64)));
}

/// A `now` older than the last entry's is recorded at the last entry's time; `record_after` takes
/// the last entry's time too; offsets past `u32::MAX` ms saturate.
#[test]
fn test_timestamps_are_monotonic() {
    let started = Instant::now();
    let mut recorder = Recorder::new(Phase::Connecting);
    recorder.record(started, at(started, 2_000_250), Happening::Attempt(1));
    recorder.record(started, at(started, 1_000), Happening::Attempt(2));
    recorder.record_after(Happening::Lookup);
    recorder.record(
        started,
        started - Duration::from_secs(1),
        Happening::Attempt(3),
    );
    let far = started + Duration::from_secs(60 * 86_400);
    recorder.record(started, far, Happening::Attempt(4));
    let times: Vec<f64> = recorder.events().iter().map(|e| e.at_ms).collect();
    assert_eq!(
        times,
        [0.0, 2000.25, 2000.25, 2000.25, 2000.25, u32::MAX as f64]
    );
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
}

/// Sub-millisecond offsets keep ~4 µs (1/256 ms), shown rounded to the microsecond.
#[test]
fn test_timestamps_keep_fractions_of_a_millisecond() {
    let started = Instant::now();
    let mut recorder = Recorder::new(Phase::Connecting);
    recorder.record(started, at(started, 12_345), Happening::Lookup);
    let last = recorder.events().pop().expect("an entry").at_ms;
    assert_eq!(last, 12.344, "12 ms and 88/256");
}

#[test]
fn test_every_happening_in_words() {
    let readable_fin = Event {
        readable: true,
        read_closed: true,
        ..Event::default()
    };
    let all = Event {
        readable: true,
        writable: true,
        read_closed: true,
        write_closed: true,
        error: true,
    };
    let both = Registration {
        reads: true,
        writes: true,
    };
    let writes = Registration {
        reads: false,
        writes: true,
    };
    let reads = Registration {
        reads: true,
        writes: false,
    };
    let cases = [
        (Happening::Accepted(Phase::Greeting), "accepted (greeting)"),
        (
            Happening::Edge(Side::Client, readable_fin.into()),
            "client readable+read-closed",
        ),
        (
            Happening::Edge(Side::Upstream, all.into()),
            "upstream readable+writable+read-closed+write-closed+error",
        ),
        (
            Happening::Edge(Side::Upstream, Event::default().into()),
            "upstream no flags",
        ),
        (
            Happening::Stage(Phase::Connecting, Phase::Established),
            "connecting => established",
        ),
        (
            Happening::Stage(Phase::Greeting, Phase::Refusing),
            "greeting => refusing",
        ),
        (Happening::Attempt(2), "connect attempt 2 started"),
        (
            Happening::Attempt(0),
            "connect started to the CONNECT destination",
        ),
        (Happening::Lookup, "looking up the CONNECT destination"),
        (
            Happening::Interest(Side::Upstream, Change::new(both, writes)),
            "upstream reads muted",
        ),
        (
            Happening::Interest(Side::Upstream, Change::new(writes, both)),
            "upstream reads unmuted",
        ),
        (
            Happening::Interest(Side::Client, Change::new(both, reads)),
            "client writes dropped",
        ),
        (
            Happening::Interest(Side::Client, Change::new(reads, writes)),
            "client reads muted, writes re-armed",
        ),
        (
            Happening::Interest(Side::Client, Change::new(both, both)),
            "client registration unchanged",
        ),
        (Happening::Fault(Side::Client), "client socket failed"),
        (
            Happening::Expired(Cause::IdleTimeout),
            "deadline passed: idle-timeout",
        ),
        (
            Happening::ConnectFailed(Cause::ConnectRefused),
            "connect failed: connect-refused",
        ),
        (Happening::Closing(Cause::ClientFin), "closing: client-fin"),
    ];
    for (what, words) in cases {
        assert_eq!(what.to_string(), words);
    }
}
