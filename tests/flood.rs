//! Floods: hundreds of clients at once against one apppassd, and a local user sending as
//! many requests as it can. The daemon's memory stays at most workers x m (each worker's
//! argon2 memory) plus a fixed amount, whatever the number of clients; every client gets
//! an answer within the module's timeout (a verdict, or PAM_AUTHINFO_UNAVAIL when the
//! daemon is too busy), nothing hangs, and the daemon answers normally afterwards; and a
//! local user's flood does not starve root's logins (queue.rs: a share per class and
//! uid, and three turns in four for the system class).
//!
//! The fixed amount ([`FIXED_KIB`], 24 MiB): what apppassd holds besides its workers'
//! arenas (which each worker maps and populates at start). Measured here on the debug
//! build, idle after start, 49.9 MiB: 2 x 19 MiB arenas, 10 MiB of code resident (the
//! binary, and libpq with the TLS, Kerberos and LDAP libraries it links), under 2 MiB
//! of heap and stacks (the tokio runtime, each worker's SQLite connection and cache);
//! 200 clients at once added 0.7 MiB (a connection costs a task and at most one request
//! frame, 16 KiB by the protocol). 24 MiB leaves about twice that for another machine's
//! libraries and allocator, and 11 MiB of room is less than one more arena: a daemon
//! that gave each connection or queued request argon2 memory (or a thread) of its own
//! would be far above it. What the clients add is also bounded on its own
//! ([`PER_CLIENT_KIB`] each).

mod common;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use apppass_proto::{AuthRequest, Client, ClientError, ErrorKind, Request, Response};
use common::{Sandbox, is_root, require};
use pam_apppass::code::Code;
use support::{assert_clean_stop, have, restart_with_log, wrong_secret};

/// How many clients log in at once.
const CLIENTS: usize = 200;
/// Logins each of them makes, one after another.
const ROUNDS: usize = 2;
const WORKERS: u64 = 2;
/// argon2_memory: the default, OWASP's minimum (KiB).
const M_KIB: u64 = 19456;
/// What apppassd may hold besides its workers' arenas (see the top of the file).
const FIXED_KIB: u64 = 24 * 1024;
/// What one connected client may add to apppassd's memory: its task, its request
/// frame (16 KiB at most) and the allocator's slack.
const PER_CLIENT_KIB: u64 = 40;
/// The module's timeout (apppass.conf's `timeout`, also apppassd's longest wait): twice
/// the default, so that on a slow machine most of the 200 still get a verdict (the last
/// of a round waited 2 to 6 s here, with other work on the machine), not the
/// PAM_AUTHINFO_UNAVAIL a timeout gives.
const TIMEOUT: Duration = Duration::from_secs(10);
/// What a login may take beyond the timeout: libpam, loading the module.
const SLACK: Duration = Duration::from_millis(500);
const CONF: &str = "workers = 2\ntimeout = 10s\n# Every guess is hashed: the load is the point.\nthrottle_failures = 0\n";

/// The uid of the flooding user (Debian's nobody), and its name.
const FLOODER: (u32, &str) = (65534, "nobody");
/// Set in the flooding helper process: the socket to flood, and the file whose
/// appearance ends the flood (at the latest after [`FLOOD_MAX`]).
const ROLE_SOCKET: &str = "APPPASS_FLOOD_SOCKET";
const ROLE_STOP: &str = "APPPASS_FLOOD_STOP";
const FLOOD_MAX: Duration = Duration::from_secs(60);
/// The flooder's concurrent connections: more than apppassd lets one uid of the user
/// class have open (32) or queued (8).
const FLOOD_THREADS: usize = 48;

/// One test at a time: each measures (memory, latency) what the other would disturb.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A value from /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn two_hundred_clients_bounded_memory_every_one_answered() {
    if std::env::var_os(ROLE_SOCKET).is_some() {
        return;
    }
    let _one = serial();
    let mut s = Sandbox::with_config(CONF);
    // Its log (every login) into a file, not over the test's output.
    let log = restart_with_log(&mut s);
    s.simple_service("imap", "");
    // Through apppassd's worker: its store is made, and one arena has worked.
    let pw = s.add("alice", "imap", &[]);
    let wrong = wrong_secret(&pw.password);
    let pid = s.daemon.child.id();
    let idle = status_kib(pid, "VmRSS:");
    let idle_code = status_kib(pid, "RssFile:");

    let barrier = Arc::new(Barrier::new(CLIENTS));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let confdir = s.confdir.clone();
            let (right, wrong) = (pw.password.clone(), wrong.clone());
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                (0..ROUNDS)
                    .map(|r| {
                        let is_right = (i + r) % 2 == 0;
                        let password = if is_right { &right } else { &wrong };
                        let t = Instant::now();
                        let code = common::login_in(
                            &confdir,
                            "imap",
                            "alice",
                            password.as_bytes(),
                            Some("192.0.2.1"),
                        )
                        .code;
                        (is_right, code, t.elapsed())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // How many apppassd holds at once (its own count of connections and of requests
    // waiting), while they run.
    let (mut most_connected, mut most_queued) = (0, 0);
    while !clients.iter().all(|c| c.is_finished()) {
        if let Some(st) = s.daemon.status() {
            most_connected = most_connected.max(st.clients);
            most_queued = most_queued.max(st.queued);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let results: Vec<(bool, Code, Duration)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let took = started.elapsed();
    let peak = status_kib(pid, "VmHWM:");

    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (is_right, code, _) in &results {
        let what = if *is_right { "right" } else { "wrong" };
        *tally
            .entry(format!("{what} -> {}", code.name()))
            .or_default() += 1;
    }
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.2).collect();
    latencies.sort();
    let verdicts = results
        .iter()
        .filter(|(is_right, code, _)| {
            *code
                == if *is_right {
                    Code::SUCCESS
                } else {
                    Code::AUTH_ERR
                }
        })
        .count();
    let bound = WORKERS * M_KIB + FIXED_KIB;
    println!(
        "{CLIENTS} clients x {ROUNDS} logins in {:.1} s: {tally:?}; verdicts {verdicts}/{} ({:.0}%)",
        took.as_secs_f64(),
        results.len(),
        100.0 * verdicts as f64 / results.len() as f64
    );
    println!("apppassd held at most {most_connected} connections, {most_queued} requests waiting");
    println!(
        "latency: median {:?}, 95th {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies[latencies.len() - 1]
    );
    println!(
        "apppassd memory: idle {:.1} MiB ({:.1} MiB of it code and libraries), peak (VmHWM) \
         {:.1} MiB; bound workers x m + fixed = {WORKERS} x {:.1} + {:.1} = {:.1} MiB",
        mib(idle),
        mib(idle_code),
        mib(peak),
        mib(M_KIB),
        mib(FIXED_KIB),
        mib(bound)
    );

    for (is_right, code, took) in &results {
        let verdict = if *is_right {
            Code::SUCCESS
        } else {
            Code::AUTH_ERR
        };
        assert!(
            *code == verdict || *code == Code::AUTHINFO_UNAVAIL,
            "a {} password gave {code}",
            if *is_right { "right" } else { "wrong" }
        );
        assert!(
            *took <= TIMEOUT + SLACK,
            "a login took {took:?}, more than the module's timeout"
        );
    }
    // Hundreds at once, or the test proves less than it says.
    assert!(
        most_connected >= 100,
        "apppassd never held more than {most_connected} connections at once"
    );
    // A daemon that answered "busy" to everyone would pass the above: most must be
    // verified (all of them are, here: 2 workers verify 600 logins in about 6 s).
    assert!(
        verdicts * 2 >= results.len(),
        "only {verdicts} of {} logins got a verdict",
        results.len()
    );
    assert!(
        peak <= bound,
        "apppassd's peak memory {peak} KiB is above workers x m + fixed = {bound} KiB"
    );
    assert!(
        peak.saturating_sub(idle) <= CLIENTS as u64 * PER_CLIENT_KIB,
        "{CLIENTS} clients added {} KiB to apppassd's memory",
        peak.saturating_sub(idle)
    );

    // Afterwards: the daemon answers as before, and holds no client any more.
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    assert_eq!(s.code("imap", "alice", &wrong), Code::AUTH_ERR);
    // A login's answer goes out before its worker has written the attempt down: the
    // worker is free a moment after the client has its verdict.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = s.daemon.status().unwrap();
        if (status.busy, status.queued) == (0, 0) || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!((status.busy, status.queued), (0, 0), "{status:?}");
    assert_clean_stop(&mut s.daemon, Some(&log));
}

/// The flooding helper, killed (SIGKILL) and reaped if the test fails before it ends.
struct Helper(Option<Child>);

impl Helper {
    fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Waits for it to end; what it printed.
    fn output(mut self) -> std::process::Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_local_users_flood_does_not_starve_roots_logins() {
    if std::env::var_os(ROLE_SOCKET).is_some() {
        flood();
        return;
    }
    if !require(is_root(), "root (the flood runs as another uid)")
        || !require(have("setpriv"), "setpriv (Debian package util-linux)")
    {
        return;
    }
    let _one = serial();
    let mut s = Sandbox::with_config(CONF);
    let log = restart_with_log(&mut s);
    // The flooder reaches the socket (0666) and its own copy of this program through it.
    std::fs::set_permissions(
        s.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    let root_login = || {
        let t = Instant::now();
        let code = s
            .login("imap", "alice", pw.password.as_bytes(), Some("192.0.2.1"))
            .code;
        (code, t.elapsed())
    };
    let quiet: Vec<Duration> = (0..10).map(|_| root_login().1).collect();

    // This test program, copied where the flooder can run it (the build directory may
    // be in root's home), run again as uid 65534 in the flooding role.
    let exe = s.dir.path().join("flood-helper");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let stop = s.dir.path().join("stop-flooding");
    let helper = Command::new("setpriv")
        .arg(format!("--reuid={}", FLOODER.0))
        .arg(format!("--regid={}", FLOODER.0))
        .args(["--clear-groups", "--"])
        .arg(&exe)
        .args([
            "a_local_users_flood_does_not_starve_roots_logins",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_SOCKET, &s.socket)
        .env(ROLE_STOP, &stop)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut helper = Helper(Some(helper));
    // The flood is on when both workers are busy and the flooder's requests wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = s.daemon.status().unwrap();
        if u64::from(st.busy) == WORKERS && st.queued > 0 {
            break;
        }
        assert!(helper.running(), "the flooding helper exited early");
        assert!(
            Instant::now() < deadline,
            "the flood did not fill apppassd's workers: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let flood_started = Instant::now();
    let during: Vec<(Code, Duration)> = (0..30).map(|_| root_login()).collect();
    let flood_lasted = flood_started.elapsed();
    let status = s.daemon.status().unwrap();
    let still_flooding = helper.running();
    std::fs::write(&stop, "").unwrap();
    let out = helper.output();
    let report = String::from_utf8_lossy(&out.stdout);
    // After libtest's "test NAME ... " on the same line.
    let tally = report
        .lines()
        .find_map(|l| l.split_once("flood: "))
        .map(|(_, t)| format!("flood: {t}"))
        .unwrap_or_else(|| panic!("no tally from the flooding helper:\n{report}"));

    let mut quiet = quiet;
    quiet.sort();
    let mut latencies: Vec<Duration> = during.iter().map(|d| d.1).collect();
    latencies.sort();
    println!("{tally}");
    println!("apppassd during the flood: {:?}", status.counts);
    println!(
        "root's logins: quiet median {:?}; during the flood (uid {} at {FLOOD_THREADS} \
         connections) median {:?}, max {:?}, over {:.1} s",
        percentile(&quiet, 0.5),
        FLOODER.0,
        percentile(&latencies, 0.5),
        latencies[latencies.len() - 1],
        flood_lasted.as_secs_f64()
    );
    assert!(
        still_flooding,
        "the flood ended before root's logins did: they were not tested against it"
    );
    for (i, (code, took)) in during.iter().enumerate() {
        assert_eq!(*code, Code::SUCCESS, "root's login {i} during the flood");
        assert!(
            *took <= TIMEOUT,
            "root's login {i} took {took:?} during the flood"
        );
    }
    let count = |name: &str| -> u64 {
        tally
            .split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // The flood was one: the flooder's share ran over, and the rest of it was verified.
    assert!(
        count("busy") > 0,
        "the flooder was never told busy: {tally}"
    );
    assert!(count("verdict") > 0, "the flooder got no verdict: {tally}");
    assert_clean_stop(&mut s.daemon, Some(&log));
}

/// The flooding helper: as many connections as [`FLOOD_THREADS`], each sending login
/// requests for its own user (which apppassd must verify at full cost) back to back,
/// until told to stop; prints what came back.
fn flood() {
    let socket = PathBuf::from(std::env::var_os(ROLE_SOCKET).unwrap());
    let stop = PathBuf::from(std::env::var_os(ROLE_STOP).unwrap());
    let until = Instant::now() + FLOOD_MAX;
    assert_eq!(
        pam_apppass::uids().1,
        FLOODER.0,
        "the flood runs as uid 65534"
    );
    let threads: Vec<_> = (0..FLOOD_THREADS)
        .map(|_| {
            let (socket, stop) = (socket.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut tally: BTreeMap<&'static str, u64> = BTreeMap::new();
                while Instant::now() < until && !stop.exists() {
                    *tally.entry(one_request(&socket)).or_default() += 1;
                }
                tally
            })
        })
        .collect();
    let mut all: BTreeMap<&'static str, u64> = BTreeMap::new();
    for t in threads {
        for (k, v) in t.join().unwrap() {
            *all.entry(k).or_default() += v;
        }
    }
    let fields: Vec<String> = all.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("flood: {}", fields.join(" "));
}

fn one_request(socket: &Path) -> &'static str {
    let mut client = match Client::connect(socket, TIMEOUT, &[0, FLOODER.0]) {
        Ok(c) => c,
        Err(ClientError::Timeout(_)) => return "connect_timeout",
        Err(_) => return "connect_error",
    };
    let timeout_ms = u32::try_from(client.time_left().as_millis()).unwrap_or(u32::MAX);
    let request = Request::Authenticate(AuthRequest {
        user: FLOODER.1.as_bytes().to_vec(),
        service: "imap".into(),
        pam_service: "imap".into(),
        rhost: None,
        tty: None,
        ruser: None,
        logname: None,
        password: zeroize::Zeroizing::new(b"not my password".to_vec()),
        timeout_ms: timeout_ms.max(1),
    });
    match client.call(&request) {
        Ok(Response::Auth(_)) => "verdict",
        Ok(Response::Error {
            kind: ErrorKind::Busy,
            ..
        }) => "busy",
        Ok(Response::Error {
            kind: ErrorKind::Timeout,
            ..
        }) => "timeout",
        Ok(Response::Error { .. }) => "other_error",
        Ok(_) => "other_answer",
        Err(ClientError::Timeout(_)) => "no_answer_in_time",
        Err(_) => "lost",
    }
}
