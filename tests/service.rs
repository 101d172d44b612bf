//! Running edgefwd as a service (docs/operations.md): `--check` validates without binding and answers
//! with one line and 0 or 2, `--pid-file` is written once bound and removed on exit (a live one refused,
//! a stale one replaced), and `--user`/`--group` drop root for every thread while the forwarder still
//! forwards and reloads. The privilege tests need root (CI runs as root) and say so when they skip.

mod common;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const UP: &str = "127.0.0.1:9";

/// A directory of its own under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("edgefwd-service-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no argument and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A two-route file whose routes forward to `upstream`.
fn two_routes(upstream: &str) -> String {
    format!(
        "[[route]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{upstream}\"]\n\
         [[route]]\nname = \"b\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{upstream}\"]\nconnect_timeout = 2\n"
    )
}

/// `--check` (and `-t`) print one verdict line and exit 0 for a good configuration, flags or file,
/// without binding: the address checked is held by this test, and a real start on it fails.
#[test]
fn test_check_accepts_a_good_configuration_without_binding() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    let flags = ["--listen", addr.as_str(), "--upstream", UP];
    for check in ["--check", "-t"] {
        let mut args = flags.to_vec();
        args.push(check);
        let (code, stdout, stderr) = run_edgefwd_to_exit(&args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(stdout, "configuration OK (1 route)\n", "{args:?}: {stderr}");
    }
    let (code, stderr) = run_edgefwd_expect_fail(&flags);
    assert_eq!(code, Some(1), "a real start on a held port fails: {stderr}");
    let file = ConfigFile::new(&two_routes(UP));
    let (code, stdout, stderr) = run_edgefwd_to_exit(&["--check", "--config", file.path()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "configuration OK (2 routes)\n");
}

/// A name that does not resolve is a warning (the upstream would start down), not a failure.
#[test]
fn test_check_warns_about_an_unresolved_upstream() {
    let up = "no-such-host.invalid:80";
    let (code, stdout, stderr) =
        run_edgefwd_to_exit(&["-t", "--listen", "127.0.0.1:0", "--upstream", up]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "configuration OK (1 route)\n");
    assert!(stderr.contains("WARN") && stderr.contains(up), "{stderr}");
}

/// Every bad input is one `edgefwd: error:` line naming it and exit 2, with nothing on stdout.
#[test]
fn test_check_refuses_bad_input_with_2() {
    let bad_file = ConfigFile::new("[[route]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:9\"]\nbalance = \"round-robbin\"\n");
    let base = ["-t", "--listen", "127.0.0.1:0", "--upstream", UP];
    let with = |extra: &[&'static str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-t", "--config", bad_file.path()], "route[0].balance"),
        (
            vec!["-t", "--config", "/nonexistent/edgefwd.toml"],
            "/nonexistent/edgefwd.toml",
        ),
        (vec!["-t", "--listen", "nope", "--upstream", UP], "'nope'"),
        (
            with(&["--user", "no-such-user-edgefwd"]),
            "no-such-user-edgefwd",
        ),
        (
            with(&["--user", "root", "--group", "no-such-group-edgefwd"]),
            "no-such-group-edgefwd",
        ),
        (
            with(&["--pid-file", "/nonexistent/dir/edgefwd.pid"]),
            "/nonexistent/dir",
        ),
        (with(&["--connect-timeout", "0"]), "'0'"),
    ];
    for (args, needle) in cases {
        let (code, stdout, stderr) = run_edgefwd_to_exit(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(
            stderr.contains("error") && stderr.contains(needle),
            "{args:?}: stderr does not name {needle:?}:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// The pid file holds the pid once the start line is out, a second forwarder naming it is refused
/// (exit 1, naming the file and the pid) and leaves it alone, and a graceful stop removes it.
#[test]
fn test_pid_file_written_refused_while_live_removed_on_exit() {
    let dir = TempDir::new("pidfile");
    let path = dir.join("edgefwd.pid");
    let mut fwd = Forwarder::start(&["--upstream", UP, "--pid-file", text(&path)]);
    let pid = fwd.pid();
    assert_eq!(
        fs::read_to_string(&path).expect("pid file"),
        format!("{pid}\n")
    );
    let leftovers: Vec<_> = fs::read_dir(&dir.0).expect("read dir").collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only the pid file, no staging file: {leftovers:?}"
    );

    let (code, stderr) = run_edgefwd_expect_fail(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        UP,
        "--pid-file",
        text(&path),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(text(&path)) && stderr.contains(&pid.to_string()),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&path).expect("kept"), format!("{pid}\n"));

    fwd.signal(libc::SIGTERM);
    let status = fwd
        .wait_exit(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!path.exists(), "pid file removed on exit");
}

/// A pid file left by a process that is gone (a crash) is replaced.
#[test]
fn test_stale_pid_file_is_replaced() {
    let dir = TempDir::new("stale");
    let path = dir.join("edgefwd.pid");
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let gone_pid = gone.id();
    gone.wait().expect("wait");
    fs::write(&path, format!("{gone_pid}\n")).expect("write stale");
    let fwd = Forwarder::start(&["--upstream", UP, "--pid-file", text(&path)]);
    assert_eq!(
        fs::read_to_string(&path).expect("pid file"),
        format!("{}\n", fwd.pid())
    );
}

/// uid and gid of `nobody` and `nogroup`, from the system's own tools.
fn nobody_ids() -> (String, String) {
    let id = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect("run id/getent");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let uid = id(&["id", "-u", "nobody"]);
    let group = id(&["getent", "group", "nogroup"]);
    let gid = group.split(':').nth(2).expect("gid field").to_string();
    (uid, gid)
}

/// The `Uid:`/`Gid:`/`Groups:` lines of every thread of `pid`.
fn thread_ids(pid: u32) -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let status = fs::read_to_string(task.expect("task").path().join("status")).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|rest| rest.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        all.push((field("Uid:"), field("Gid:"), field("Groups:")));
    }
    all
}

/// As root: `--user nobody --group nogroup` with two reactors and a config file. Every thread's real,
/// effective, saved and fs ids are nobody's (so root cannot be regained), supplementary groups are
/// nogroup alone; it forwards, and a SIGHUP reload re-reads the file as nobody: a new route starts
/// when the file is readable by nobody, and a file only root can read is rejected (which a process
/// still root would have read). The pid file, in a directory nobody owns, is removed on exit.
#[test]
fn test_drop_to_nobody_forwards_and_reloads() {
    if !is_root() {
        eprintln!(
            "skipped: needs root to drop privileges (CI runs as root); run as root to test --user"
        );
        return;
    }
    let (uid, gid) = nobody_ids();
    let echo = Backend::echo();
    let up = echo.upstream_arg();
    let dir = TempDir::new("drop");
    std::os::unix::fs::chown(&dir.0, Some(uid.parse().expect("uid")), None).expect("chown dir");
    let pid_path = dir.join("edgefwd.pid");
    let file = ConfigFile::new(&format!(
        "[[route]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{up}\"]\n"
    ));
    let mut fwd = Forwarder::start(&[
        "--config",
        file.path(),
        "--user",
        "nobody",
        "--group",
        "nogroup",
        "--threads",
        "2",
        "--pid-file",
        text(&pid_path),
    ]);
    let want_uid = [uid.as_str(); 4].join(" ");
    let want_gid = [gid.as_str(); 4].join(" ");
    let threads = thread_ids(fwd.pid());
    assert!(
        threads.len() >= 3,
        "main, reactor-1 and the reload worker: {threads:?}"
    );
    for (uids, gids, groups) in &threads {
        assert_eq!(uids, &want_uid, "every thread's uids: {threads:?}");
        assert_eq!(gids, &want_gid, "every thread's gids: {threads:?}");
        assert_eq!(groups, &gid, "supplementary groups: {threads:?}");
    }
    fwd.expect_log("running as user nobody", Duration::from_secs(1));
    for _ in 0..4 {
        echo_roundtrip(fwd.route_addr("a"), 64 * 1024, 8192);
    }

    file.write(&format!(
        "[[route]]\nname = \"a\"\nlisten = \"{}\"\nupstreams = [\"{up}\"]\n\
         [[route]]\nname = \"b\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{up}\"]\n",
        fwd.route_addr("a")
    ));
    fwd.signal(libc::SIGHUP);
    let b = fwd.route_addr("b");
    echo_roundtrip(b, 64 * 1024, 8192);
    echo_roundtrip(fwd.route_addr("a"), 64 * 1024, 8192);

    fs::set_permissions(file.path(), fs::Permissions::from_mode(0o600)).expect("chmod 600");
    fwd.signal(libc::SIGHUP);
    fwd.expect_log("reload rejected", Duration::from_secs(10));
    assert!(fwd.logs().contains("Permission denied"), "{}", fwd.logs());
    echo_roundtrip(b, 64 * 1024, 8192);

    assert!(pid_path.exists(), "pid file written");
    fwd.signal(libc::SIGTERM);
    let status = fwd
        .wait_exit(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        !pid_path.exists(),
        "nobody removed its pid file from its own directory"
    );
}

/// Not root: becoming root cannot work, and the start says so and stops (exit 1) rather than run on
/// as itself. As root every drop works, so this runs only where the tests do not run as root (check it
/// there with `setpriv --reuid=65534 --regid=65534 --clear-groups TESTBINARY failed_drop`).
#[test]
fn test_failed_drop_stops_the_start() {
    if is_root() {
        eprintln!("skipped: as root every drop succeeds (the drop is tested above); this needs a non-root run");
        return;
    }
    let (code, stderr) = run_edgefwd_expect_fail(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        UP,
        "--user",
        "root",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot drop privileges to user root"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}
