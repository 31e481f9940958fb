//! Timing: an unknown user, an unknown selector, a wrong secret and a revoked password
//! cost the same work through libpam, so the time of an answer tells an attacker nothing
//! about which of them it was.
//!
//! How: each kind of attempt, plus two controls, logs in once in a child process run
//! under valgrind's callgrind, which counts the instructions executed inside
//! `pam_authenticate` (the module's whole login: lookup, one argon2id verification,
//! record). Instruction counts are the same on every run of the same path (they vary by
//! about 0.01% here), whatever else a shared machine is doing, so the comparison is
//! exact where a timed one would be at the mercy of the machine's noise: the suite
//! asserts nothing about seconds. What they leave out, the kernel's share (the record's
//! few system calls), and the time itself are measured by the benchmark, which reports
//! every failure path beside the success path (README, "Benchmark").
//!
//! The tolerance: the four within 2% of each other (largest / smallest <= 1.02). Each is
//! one argon2id verification at the default cost (about 120 million instructions) plus a
//! few SQL statements and, for users who have app passwords, the audit record (about a
//! hundred thousand at most): the paths differ by well under 1% by construction (0.08%
//! here).
//!
//! That the comparison cannot pass by accident (a count that measures nothing, a
//! verification skipped on every path alike) is shown in the same run by two controls
//! that must come out different:
//! - a throttled attempt, refused before any hashing (must be below 1/1.02 of the
//!   smallest of the four; it is a hundredth of it);
//! - a wrong secret for a row hashed with three passes instead of two, a path that does
//!   half as much argon2 work again (must be above 1.02 x the largest of the four).
//!
//! Throttling would otherwise interfere: the four kinds run through a service whose
//! configuration turns it off (`throttle_failures = 0`); the throttled control goes
//! through a second service on the same database whose configuration turns it on at one
//! guess.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use apppass_core::secret::{HashParams, NewPassword};
use common::{Sandbox, require};
use pam_apppass::code::Code;
use support::{have, wrong_secret};

const TOLERANCE: f64 = 1.02;
/// Set (to the request) in the child that logs in once under callgrind.
const ROLE: &str = "APPPASS_WORK_LOGIN";

struct Kind {
    name: &'static str,
    service: &'static str,
    user: &'static str,
    password: String,
    rhost: &'static str,
    want: Code,
}

fn main() {
    if let Ok(request) = std::env::var(ROLE) {
        login_once(&request);
        return;
    }
    let name = "failures_do_the_same_work";
    if !common::asked_for(name) {
        return;
    }
    if !require(have("valgrind"), "valgrind (Debian package valgrind)") {
        println!("test {name} ... skipped (no valgrind)");
        return;
    }
    failures_do_the_same_work();
    println!("test {name} ... ok");
}

/// The child: one login, its PAM result on stdout.
fn login_once(request: &str) {
    let f: Vec<&str> = request.split('\x1f').collect();
    let [confdir, service, user, rhost, password] = f[..] else {
        panic!("bad request {request:?}");
    };
    let out = common::login_in(
        Path::new(confdir),
        service,
        user,
        password.as_bytes(),
        Some(rhost),
    );
    println!("{}", out.code.name());
}

/// Instructions executed inside `pam_authenticate` by one login of `k`, in a child
/// process under callgrind; checks the login's PAM result on the way.
fn instructions(s: &Sandbox, k: &Kind, run: usize) -> u64 {
    let out_file: PathBuf = s
        .dir
        .path()
        .join(format!("callgrind.{}.{run}", k.name.replace(' ', "_")));
    let request = [
        s.confdir.to_str().unwrap(),
        k.service,
        k.user,
        k.rhost,
        &k.password,
    ]
    .join("\x1f");
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--toggle-collect=pam_authenticate"])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(std::env::current_exe().unwrap())
        .env(ROLE, request)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        k.name,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        k.want.name(),
        "{}",
        k.name
    );
    let report = std::fs::read_to_string(&out_file).unwrap();
    report
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}: no summary in {}", k.name, out_file.display()))
}

fn failures_do_the_same_work() {
    let s = Sandbox::new();
    std::fs::write(&s.conf, "throttle_failures = 0\n").unwrap();
    let throttled_conf = s.dir.path().join("throttled.conf");
    std::fs::write(
        &throttled_conf,
        "throttle_failures = 1\nthrottle_lockout = 1h\n",
    )
    .unwrap();
    s.simple_service("timing", "service=imap");
    s.service(
        "timing-throttled",
        &format!(
            "auth required {{module}} db={{db}} conf={} service=imap\n",
            throttled_conf.display()
        ),
    );
    // Made by the CLI, at the default cost, as in production.
    let active = s.add("alice", "imap", &[]);
    let revoked = s.add("alice", "imap", &[]);
    assert!(
        s.apppass(&["revoke", &revoked.id.to_string()])
            .status
            .success()
    );
    let never_issued = NewPassword::generate().unwrap().display().to_string();
    let (_, heavy) = support::insert_row(
        &s.db,
        "alice",
        "imap",
        HashParams {
            t: 3,
            ..HashParams::default()
        },
    );
    // One guess locks alice out from this host on the throttled service.
    assert_eq!(
        s.login(
            "timing-throttled",
            "alice",
            wrong_secret(&active.password).as_bytes(),
            Some("203.0.113.99")
        )
        .code,
        Code::AUTH_ERR
    );

    let kind = |name, service, user, password: &str, rhost, want| Kind {
        name,
        service,
        user,
        password: password.to_string(),
        rhost,
        want,
    };
    let kinds = [
        kind(
            "unknown user",
            "timing",
            "mallory",
            &active.password,
            "192.0.2.1",
            Code::USER_UNKNOWN,
        ),
        kind(
            "unknown selector",
            "timing",
            "alice",
            &never_issued,
            "192.0.2.1",
            Code::AUTH_ERR,
        ),
        kind(
            "wrong secret",
            "timing",
            "alice",
            &wrong_secret(&active.password),
            "192.0.2.1",
            Code::AUTH_ERR,
        ),
        kind(
            "revoked",
            "timing",
            "alice",
            &revoked.password,
            "192.0.2.1",
            Code::AUTH_ERR,
        ),
        // The controls.
        kind(
            "throttled (control)",
            "timing-throttled",
            "alice",
            &wrong_secret(&active.password),
            "203.0.113.99",
            Code::AUTH_ERR,
        ),
        kind(
            "3-pass row (control)",
            "timing",
            "alice",
            &wrong_secret(&heavy),
            "192.0.2.1",
            Code::AUTH_ERR,
        ),
    ];

    // The first kind twice: the same path gives the same count.
    let again = instructions(&s, &kinds[0], 1);
    let counts: Vec<(&str, u64)> = kinds
        .iter()
        .map(|k| (k.name, instructions(&s, k, 0)))
        .collect();
    for (name, n) in &counts {
        println!("{name:>22}: {n:>12} instructions in pam_authenticate");
    }
    let first = counts[0].1 as f64;
    println!(
        "{:>22}: {again:>12} (run again: {:+.3}%)",
        counts[0].0,
        (again as f64 / first - 1.0) * 100.0
    );
    let four: Vec<f64> = counts[..4].iter().map(|(_, n)| *n as f64).collect();
    let fewest = four.iter().copied().fold(f64::INFINITY, f64::min);
    let most = four.iter().copied().fold(0.0, f64::max);
    println!(
        "largest / smallest of the four: {:.4} (tolerance {TOLERANCE})",
        most / fewest
    );
    let (throttled, heavy) = (counts[4].1 as f64, counts[5].1 as f64);
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
        "the four failures do not do the same work: {counts:?}"
    );
}
