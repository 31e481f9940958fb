//! Timing: an unknown user, an unknown selector, a wrong secret, a revoked password, the
//! right password of a row whose user name now belongs to another account and the right
//! password from outside its source networks cost apppassd the same work, so the time of an answer tells an attacker nothing about
//! which of them it was.
//!
//! How: apppassd runs under valgrind's callgrind, which counts the instructions executed
//! inside `Service::handle` (a worker's whole handling of one request: lookup, one
//! argon2id verification, verdict, record, log line) and writes one profile after each
//! (`--dump-after`). The logins come through the real libpam, one at a time, and each
//! kind's count is read from the profile its login left. Instruction counts are the same
//! on every run of the same path (they vary by about 0.01% here), whatever else a shared
//! machine is doing, so the comparison is exact where a timed one would be at the mercy
//! of the machine's noise: the suite asserts nothing about seconds. What they leave out
//! (the kernel's share, the socket's round trip, which every path pays alike) and the
//! time itself are measured by the benchmark (README, "Benchmark").
//!
//! The tolerance: the six within 2% of each other (largest / smallest <= 1.02). Each is
//! one argon2id verification at the default cost (about 115 million instructions) plus a
//! few SQL statements and, for users who have app passwords, the audit record (about a
//! hundred thousand at most): the paths differ by well under 1% by construction.
//!
//! That the comparison cannot pass by accident (a count that measures nothing, a
//! verification skipped on every path alike) is shown in the same run by two controls
//! that must come out different:
//! - a throttled attempt, refused before any hashing (must be below 1/1.02 of the
//!   smallest of the six; it is a hundredth of it);
//! - a wrong secret for a row hashed with three passes instead of two, a path that does
//!   half as much argon2 work again (must be above 1.02 x the largest of the six).
//!
//! Throttling is on at one guess (`throttle_failures = 1`): each of the six comes from a
//! host of its own, so none of them is throttled, and the throttled control comes from a
//! host that has already guessed once. One worker, so that every login is handled by the
//! same store connection and argon2 memory, warmed up before anything is counted.
//!
//! Its own `main` (harness = false): nothing else runs while apppassd is measured.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apppass_core::policy::Account;
use apppass_core::secret::{HashParams, NewPassword};
use common::{Daemon, Sandbox, require};
use pam_apppass::code::Code;
use support::{have, wrong_secret};

const TOLERANCE: f64 = 1.02;
/// The function whose instructions are counted: a worker's handling of one request.
const HANDLE: &str = "apppassd::service::Service::handle";

struct Kind {
    name: &'static str,
    user: &'static str,
    password: String,
    rhost: &'static str,
    want: Code,
}

fn main() {
    let name = "failures_do_the_same_work";
    if !common::asked_for(name) {
        return;
    }
    if !require(have("valgrind"), "valgrind (Debian package valgrind)") {
        println!("test {name} ... skipped (no valgrind)");
        return;
    }
    let started = Instant::now();
    failures_do_the_same_work();
    println!(
        "test {name} ... ok ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
}

/// apppassd under callgrind, collecting only inside [`HANDLE`] and dumping a profile
/// (`out.N`) after each call, in place of the sandbox's own apppassd.
fn measured_daemon(s: &mut Sandbox, out: &Path) -> Daemon {
    s.daemon.stop();
    let log = std::fs::File::create(s.dir.path().join("apppassd.log")).unwrap();
    let child = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--toggle-collect={HANDLE}"))
        .arg(format!("--dump-after={HANDLE}"))
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(common::workspace_bin("apppassd"))
        .arg("--db")
        .arg(&s.db)
        .arg("--socket")
        .arg(&s.socket)
        .arg("--config")
        .arg(&s.conf)
        .arg("--stderr")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Daemon {
        child,
        socket: s.socket.clone(),
        db: s.db.clone(),
        conf: s.conf.clone(),
    };
    // Slower to start under valgrind than Daemon::wait_ready allows.
    let deadline = Instant::now() + Duration::from_secs(120);
    while daemon.status().is_none() {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!(
                "apppassd under callgrind exited at start ({status}):\n{}",
                std::fs::read_to_string(s.dir.path().join("apppassd.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "apppassd under callgrind did not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon
}

/// The profiles callgrind has written so far (`out.1`, `out.2`, ...).
fn dumps(out: &Path) -> usize {
    let prefix = format!("{}.", out.file_name().unwrap().to_str().unwrap());
    std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|k| k.parse::<u32>().is_ok())
        })
        .count()
}

/// The instruction count of profile `out.N`.
fn count_of(out: &Path, n: usize) -> u64 {
    let file = PathBuf::from(format!("{}.{n}", out.display()));
    let report = std::fs::read_to_string(&file).unwrap();
    report
        .lines()
        .find_map(|l| l.strip_prefix("totals: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no totals in {}", file.display()))
}

/// One login of `k` through libpam; the instructions apppassd's worker spent on it.
fn instructions(s: &Sandbox, out: &Path, k: &Kind) -> u64 {
    let before = dumps(out);
    let code = s
        .login("timing", k.user, k.password.as_bytes(), Some(k.rhost))
        .code;
    assert_eq!(code, k.want, "{}", k.name);
    // Written before the worker answers; the one after the last is this login's.
    let after = dumps(out);
    assert_eq!(
        after,
        before + 1,
        "{}: expected exactly one profile for one request",
        k.name
    );
    count_of(out, after)
}

fn failures_do_the_same_work() {
    let mut s = Sandbox::with_config(
        "throttle_failures = 1\nthrottle_lockout = 1h\nworkers = 1\n\
         # Under callgrind a verification takes a second or two.\ntimeout = 60s\n",
    );
    s.simple_service("timing", "service=imap");
    let out = s.dir.path().join("callgrind.out");
    s.daemon = measured_daemon(&mut s, &out);
    // Made by the CLI, at the default cost, as in production.
    let active = s.add("alice", "imap", &[]);
    let fenced = s.add("alice", "imap", &["--from", "10.0.0.0/8"]);
    let revoked = s.add("alice", "imap", &[]);
    assert!(
        s.apppass(&["revoke", &revoked.id.to_string()])
            .status
            .success()
    );
    let never_issued = NewPassword::generate().unwrap().display().to_string();
    // Made for an account (uid 4242) that alice's name does not belong to.
    let (_, orphaned) = support::insert_owned_row(
        &s.db,
        "alice",
        "imap",
        HashParams::default(),
        Account::Uid(4242),
    );
    let (_, heavy) = support::insert_row(
        &s.db,
        "alice",
        "imap",
        HashParams {
            t: 3,
            ..HashParams::default()
        },
    );

    let kind = |name, user, password: &str, rhost, want| Kind {
        name,
        user,
        password: password.to_string(),
        rhost,
        want,
    };
    // Warm-up, not compared: the first lookup, verification and record of the worker
    // (statements prepared, memory touched for the first time).
    for k in [
        kind(
            "warm-up",
            "alice",
            &wrong_secret(&active.password),
            "198.51.100.1",
            Code::AUTH_ERR,
        ),
        kind(
            "warm-up",
            "mallory",
            &active.password,
            "198.51.100.2",
            Code::USER_UNKNOWN,
        ),
        kind(
            "warm-up",
            "alice",
            &active.password,
            "198.51.100.3",
            Code::SUCCESS,
        ),
    ] {
        instructions(&s, &out, &k);
    }
    // One guess locks alice out from this host.
    let guess = kind(
        "first guess",
        "alice",
        &wrong_secret(&active.password),
        "203.0.113.99",
        Code::AUTH_ERR,
    );
    instructions(&s, &out, &guess);

    let kinds = [
        kind(
            "unknown user",
            "mallory",
            &active.password,
            "192.0.2.1",
            Code::USER_UNKNOWN,
        ),
        kind(
            "unknown selector",
            "alice",
            &never_issued,
            "192.0.2.2",
            Code::AUTH_ERR,
        ),
        kind(
            "wrong secret",
            "alice",
            &wrong_secret(&active.password),
            "192.0.2.3",
            Code::AUTH_ERR,
        ),
        kind(
            "revoked",
            "alice",
            &revoked.password,
            "192.0.2.4",
            Code::AUTH_ERR,
        ),
        kind(
            "owner changed",
            "alice",
            &orphaned,
            "192.0.2.7",
            Code::AUTH_ERR,
        ),
        kind(
            "wrong network",
            "alice",
            &fenced.password,
            "192.0.2.8",
            Code::AUTH_ERR,
        ),
        // The controls.
        kind(
            "throttled (control)",
            "alice",
            &wrong_secret(&active.password),
            "203.0.113.99",
            Code::AUTH_ERR,
        ),
        kind(
            "3-pass row (control)",
            "alice",
            &wrong_secret(&heavy),
            "192.0.2.5",
            Code::AUTH_ERR,
        ),
    ];
    let counts: Vec<(&str, u64)> = kinds
        .iter()
        .map(|k| (k.name, instructions(&s, &out, k)))
        .collect();
    // The first kind again: the same path gives the same count.
    let again = instructions(
        &s,
        &out,
        &kind(
            "unknown user",
            "mallory",
            &active.password,
            "192.0.2.6",
            Code::USER_UNKNOWN,
        ),
    );
    let exit = s.daemon.stop();
    assert!(
        exit.success(),
        "apppassd under callgrind stopped with {exit}"
    );
    for (name, n) in &counts {
        println!("{name:>22}: {n:>12} instructions in {HANDLE}");
    }
    let first = counts[0].1 as f64;
    println!(
        "{:>22}: {again:>12} (run again: {:+.3}%)",
        counts[0].0,
        (again as f64 / first - 1.0) * 100.0
    );
    let six: Vec<f64> = counts[..6].iter().map(|(_, n)| *n as f64).collect();
    let fewest = six.iter().copied().fold(f64::INFINITY, f64::min);
    let most = six.iter().copied().fold(0.0, f64::max);
    println!(
        "largest / smallest of the six: {:.4} (tolerance {TOLERANCE})",
        most / fewest
    );
    assert!(
        fewest > 1e6,
        "callgrind counted (almost) nothing inside {HANDLE}: was it renamed? {counts:?}"
    );
    let (throttled, heavy) = (counts[6].1 as f64, counts[7].1 as f64);
    assert!(
        throttled * TOLERANCE < fewest,
        "the control that skips hashing was not told apart: {counts:?}"
    );
    assert!(
        heavy > most * TOLERANCE,
        "the control that hashes 1.5 times as long was not told apart: {counts:?}"
    );
    assert!(
        most <= fewest * TOLERANCE,
        "the six failures do not do the same work: {counts:?}"
    );
    assert!(
        (again as f64 - first).abs() <= first * (TOLERANCE - 1.0),
        "the same path twice gave different counts: {first} and {again}"
    );
}
