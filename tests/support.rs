//! Tests of the helpers that tests and benches share (`tests/support/`). Every test crate and bench
//! compiles that module into itself, so its tests live here, to run once.

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{
    args, clock::Utc, cpu, echo::EchoServer, logs, nofile, pattern::Repeating, procfs, strace,
};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn test_utc_from_unix_gives_the_calendar_date() {
    let epoch = Utc::from_unix(0);
    assert_eq!((epoch.year, epoch.month, epoch.day), (1970, 1, 1));
    // A leap day, a second before midnight.
    let leap = Utc::from_unix(951_868_798);
    assert_eq!(
        (
            leap.year,
            leap.month,
            leap.day,
            leap.hour,
            leap.minute,
            leap.second
        ),
        (2000, 2, 29, 23, 59, 58)
    );
    let first = Utc::from_unix(20_423 * 86_400);
    assert_eq!((first.year, first.month, first.day), (2025, 12, 1));
    let later = Utc::from_unix(1_796_590_267);
    assert_eq!(
        (later.year, later.month, later.day, later.hour, later.minute),
        (2026, 12, 6, 20, 51)
    );
}

#[test]
fn test_strace_summary_gives_calls_per_syscall_without_the_total() {
    let table = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 61.20    0.001224           2       512           epoll_wait
 30.00    0.000600           1       600        88 read
  8.80    0.000176           1       176           writev
------ ----------- ----------- --------- --------- ----------------
100.00    0.002000                  1288        88 total
";
    assert_eq!(
        strace::parse_summary(table),
        vec![
            ("epoll_wait".to_string(), 512),
            ("read".to_string(), 600),
            ("writev".to_string(), 176),
        ]
    );
}

#[test]
fn test_split_flag_takes_an_inline_value_only_after_a_long_flag() {
    assert_eq!(
        args::split_flag("--conns=1,100"),
        ("--conns", Some("1,100".into()))
    );
    assert_eq!(args::split_flag("--conns"), ("--conns", None));
    assert_eq!(args::split_flag("-x=1"), ("-x=1", None));
    assert_eq!(args::split_flag("wakeups"), ("wakeups", None));
    let rest = [String::from("5"), String::from("--x")];
    let mut it = rest.iter();
    assert_eq!(
        args::value_of("--a", &Some("1".into()), &mut it),
        Ok("1".into())
    );
    assert_eq!(args::value_of("--b", &None, &mut it), Ok("5".into()));
    it.next();
    assert_eq!(
        args::value_of("--c", &None, &mut it),
        Err("--c needs a value".into())
    );
}

#[test]
fn test_flags_walk_a_command_line_passing_over_cargos_bench() {
    let line = [
        "--bench",
        "--quick",
        "--conns=1,100",
        "--idle",
        "5",
        "wakeups",
        "--out",
    ]
    .map(String::from);
    let mut flags = args::Flags::new(&line);
    assert_eq!(flags.next_flag(), Some("--quick"));
    assert_eq!(flags.next_flag(), Some("--conns"));
    assert_eq!(flags.value(), Ok("1,100".into()));
    assert_eq!(flags.next_flag(), Some("--idle"));
    assert_eq!(flags.value(), Ok("5".into()));
    assert_eq!(flags.next_flag(), Some("wakeups"));
    assert_eq!(flags.next_flag(), Some("--out"));
    assert_eq!(flags.value(), Err("--out needs a value".into()));
    assert_eq!(flags.next_flag(), None);
}

#[test]
fn test_procfs_sees_this_process_listening_and_its_descriptors() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let pid = std::process::id();
    let rows = procfs::tcp_sockets_of(pid).expect("tcp sockets");
    assert!(
        rows.iter()
            .any(|r| r.local_port == port && r.state == procfs::TCP_LISTEN),
        "no LISTEN row for port {port} in {rows:?}"
    );
    assert!(procfs::port_is_listening(port));
    let fds = procfs::fd_numbers(pid).expect("fd numbers");
    assert!(fds.windows(2).all(|w| w[0] < w[1]), "sorted: {fds:?}");
    assert_eq!(procfs::fd_count(pid).expect("fd count"), fds.len());
    drop(listener);
    assert!(!procfs::port_is_listening(port));
    assert!(procfs::rss_kib(pid).expect("rss") > 0);
    assert_eq!(
        procfs::status_field("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS:"),
        Some(1234)
    );
}

#[test]
fn test_nofile_raises_ours_and_sets_a_childs() {
    let soft = nofile::raise_to_hard().expect("raise to hard");
    assert_eq!(nofile::raise_towards(soft), (soft, None));
    let mut child = Command::new("sleep")
        .arg("10")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let set = nofile::set_for(child.id(), 77);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    set.expect("prlimit");
    let line = limits
        .expect("read limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .expect("Max open files line");
    assert_eq!(line, "Max open files 77 77 files");
}

#[test]
fn test_pin_to_the_allowed_cpus_keeps_them() {
    let cpus = cpu::allowed_cpus().expect("sched_getaffinity");
    assert!(!cpus.is_empty());
    cpu::pin(0, &cpus).expect("sched_setaffinity");
    assert_eq!(cpu::allowed_cpus().expect("sched_getaffinity"), cpus);
}

#[test]
fn test_echo_server_echoes_on_every_port_and_returns_the_fin() {
    let echo = EchoServer::start(2, 16).expect("start echo");
    assert_eq!(echo.addrs().len(), 2);
    assert_eq!(echo.addr(), echo.addrs()[0]);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for &addr in echo.addrs() {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut writer = stream.try_clone().expect("clone");
        let data = payload.clone();
        let sender = std::thread::spawn(move || {
            writer.write_all(&data).expect("write");
            writer.shutdown(Shutdown::Write).expect("shutdown");
        });
        let mut back = Vec::new();
        stream
            .read_to_end(&mut back)
            .expect("read to the echoed FIN");
        sender.join().expect("sender");
        assert!(
            back == payload,
            "echoed {} of {} bytes, or not the same",
            back.len(),
            payload.len()
        );
    }
}

#[test]
fn test_repeating_pattern_windows_wrap_around_the_period() {
    let pattern = Repeating::new(7, 10, |i| i as u8 * 3);
    assert_eq!(pattern.period(), 7);
    assert_eq!(pattern.at(5, 4), &[15, 18, 0, 3]);
    assert_eq!(pattern.at(7 * 1000 + 2, 3), &[6, 9, 12]);
    assert_eq!(
        pattern.at(6, 100),
        &[18, 0, 3, 6, 9, 12, 15, 18, 0, 3],
        "at most max_chunk bytes"
    );
}

#[test]
fn test_start_lines_give_the_listen_and_metrics_addresses() {
    let log = "[2026-12-06T21:00:00Z INFO  edgefwd] listening on 127.0.0.1:4567 route=default upstreams=1\n\
               [2026-12-06T21:00:00Z INFO  edgefwd] metrics on http://[::1]:9100/metrics\n";
    assert_eq!(
        logs::listen_addr(log),
        Some("127.0.0.1:4567".parse().unwrap())
    );
    assert_eq!(logs::metrics_addr(log), Some("[::1]:9100".parse().unwrap()));
    assert_eq!(logs::listen_addr("listening on nowhere"), None);
    assert_eq!(logs::metrics_addr("no metrics"), None);
}
