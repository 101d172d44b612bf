//! One case per sentence: a view as a pair in that state would give it, and the words expected.

use super::*;
use crate::session::interest::Registration;
use crate::session::pair::view::Path;

const LIMITS: Limits = Limits {
    deadlines: Deadlines {
        connect: Duration::from_secs(5),
        header: Duration::from_secs(5),
        idle: Some(Duration::from_secs(60)),
        fin: Duration::from_secs(60),
        lifetime: None,
    },
    connect_attempts: 3,
};

const BOTH: Watch = Watch(Some(Registration {
    reads: true,
    writes: true,
}));
const MUTED: Watch = Watch(Some(Registration {
    reads: false,
    writes: true,
}));

/// An established pair that has moved nothing for 40 s and holds nothing.
fn quiet() -> PairView {
    PairView {
        conn: 1,
        route: 0,
        client: ([127, 0, 0, 1], 50312).into(),
        upstream: Some("127.0.0.1:8080".to_string()),
        sni: None,
        phase: Step::Established,
        age_ms: 45_000,
        idle_ms: 40_000,
        c2u_bytes: 1024,
        u2c_bytes: 65536,
        c2u_held: 0,
        u2c_held: 0,
        c2u_path: Path::Ring,
        u2c_path: Path::Ring,
        client_interest: BOTH,
        upstream_interest: BOTH,
        client_read_closed: false,
        client_write_closed: false,
        upstream_read_closed: false,
        upstream_write_closed: false,
        stuck: false,
        c2u_still_ms: 40_000,
        u2c_still_ms: 40_000,
    }
}

fn case(name: &str, view: PairView, limits: Limits, expected: &str) {
    assert_eq!(diagnose(&view, &limits), expected, "case {name}");
}

#[test]
fn test_greeting_reports_bytes_of_bound_and_header_timeout() {
    let view = PairView {
        phase: Step::Greeting {
            what: "PROXY header",
            read: 12,
            bound: 107,
        },
        upstream: None,
        age_ms: 1200,
        ..quiet()
    };
    case(
        "greeting",
        view,
        LIMITS,
        "greeting: 12 of up to 107 bytes of a PROXY header read, 1.2 s of 5 s header timeout",
    );
}

#[test]
fn test_connecting_reports_attempt_of_attempts_and_connect_timeout() {
    let cases = [
        (
            Step::Connecting {
                attempt: 2,
                for_ms: 1800,
            },
            "waiting for upstream connect, attempt 2 of 3, 1.8 s of 5 s",
        ),
        (
            Step::Connecting {
                attempt: 0,
                for_ms: 300,
            },
            "waiting for the CONNECT destination's connect, 0.3 s of 5 s",
        ),
        (
            Step::Lookup { for_ms: 4200 },
            "looking up the CONNECT destination, 4.2 s of 5 s",
        ),
        (
            Step::Refusing,
            "refusing the client: writing its error status, then closing",
        ),
    ];
    for (phase, expected) in cases {
        case(expected, PairView { phase, ..quiet() }, LIMITS, expected);
    }
}

#[test]
fn test_established_holding_names_the_receiver_not_reading() {
    let cases = [
        (
            PairView {
                c2u_held: 65536,
                c2u_still_ms: 12_400,
                client_interest: MUTED,
                ..quiet()
            },
            "upstream has not read for 12.4 s; 64 KiB held in upstream-bound ring; client reads muted (backpressure)",
        ),
        (
            PairView {
                u2c_held: 1536,
                u2c_still_ms: 7_000,
                u2c_path: Path::Splice,
                ..quiet()
            },
            "client has not read for 7.0 s; 1.5 KiB held in client-bound pipe",
        ),
        (
            PairView {
                c2u_held: 1,
                c2u_still_ms: 500,
                u2c_held: 3 * 1024 * 1024,
                u2c_still_ms: 9_000,
                upstream_interest: MUTED,
                ..quiet()
            },
            "upstream has not read for 0.5 s; 1 byte held in upstream-bound ring; \
             client has not read for 9.0 s; 3 MiB held in client-bound ring; upstream reads muted (backpressure)",
        ),
    ];
    for (view, expected) in cases {
        case(expected, view, LIMITS, expected);
    }
}

#[test]
fn test_established_half_closed_says_who_and_whether_the_other_still_sends() {
    let cases = [
        (
            PairView {
                client_read_closed: true,
                upstream_write_closed: true,
                c2u_still_ms: 3_100,
                u2c_still_ms: 200,
                idle_ms: 200,
                ..quiet()
            },
            "client half-closed 3.1 s ago; upstream still sending; idle 0.2 s of 60 s fin timeout",
        ),
        (
            PairView {
                upstream_read_closed: true,
                u2c_still_ms: 8_000,
                c2u_still_ms: 9_000,
                idle_ms: 8_000,
                ..quiet()
            },
            "upstream half-closed 8.0 s ago; client silent since; idle 8.0 s of 60 s fin timeout",
        ),
        (
            PairView {
                client_read_closed: true,
                upstream_read_closed: true,
                u2c_held: 700,
                u2c_still_ms: 6_000,
                ..quiet()
            },
            "client has not read for 6.0 s; 700 bytes held in client-bound ring; both sides half-closed; flushing",
        ),
    ];
    for (view, expected) in cases {
        case(expected, view, LIMITS, expected);
    }
}

#[test]
fn test_established_idle_against_the_idle_timeout() {
    case(
        "idle",
        quiet(),
        LIMITS,
        "idle for 40.0 s of 60 s idle timeout; nothing held",
    );
    let no_idle = Limits {
        deadlines: Deadlines {
            idle: None,
            ..LIMITS.deadlines
        },
        ..LIMITS
    };
    case(
        "no idle timeout",
        quiet(),
        no_idle,
        "idle for 40.0 s (no idle timeout); nothing held",
    );
    let sub_second = Limits {
        deadlines: Deadlines {
            idle: Some(Duration::from_millis(2500)),
            connect: Duration::from_millis(500),
            ..LIMITS.deadlines
        },
        ..LIMITS
    };
    case(
        "fractional timeout",
        quiet(),
        sub_second,
        "idle for 40.0 s of 2.5 s idle timeout; nothing held",
    );
    let connecting = PairView {
        phase: Step::Connecting {
            attempt: 1,
            for_ms: 100,
        },
        ..quiet()
    };
    case(
        "milliseconds",
        connecting,
        sub_second,
        "waiting for upstream connect, attempt 1 of 3, 0.1 s of 500 ms",
    );
}
