//! Logins through the real libpam in one long-lived process, the way Dovecot's auth worker
//! runs them (libpam loads and unloads the module around each, and each asks a real
//! apppassd), under leak checkers:
//!
//! - 10,000 logins with the AddressSanitizer runtime (gcc's libasan) preloaded: its
//!   LeakSanitizer looks at exit for memory nothing points to any more. No leak, and not
//!   one descriptor more at the end than at the start.
//! - 100 logins under valgrind's memcheck (a hundred times slower per login, so fewer):
//!   no definite or indirect leak, no invalid read or write, no use of uninitialised
//!   memory, no descriptor left open.
//!
//! The checkers watch the process that logs in, the one the module lives in; apppassd
//! (where the hashing happens) is a process of its own and not theirs to judge.
//!
//! A checker that silently checks nothing would pass too, so each is first shown a worker
//! that leaks on purpose, and must catch it.
//!
//! Its own `main` (harness = false). Run by cargo, it prepares a sandbox (apppassd on a
//! store of its own), then runs itself again in the worker role (under the checker),
//! which logs in and counts its descriptors. The mix: right passwords from a cheap row
//! (argon2id at 8 KiB, one pass, written straight into apppassd's store, whose own
//! configuration refuses such parameters: what is measured is what the module leaves
//! behind, not argon2's cost), one in ten a wrong secret (from rotating remote hosts, so
//! throttling never starts), and a few unknown users and non-app-shaped passwords, which
//! apppassd verifies against the full-cost dummy hash (ten of each in the long run, one
//! under valgrind). A missing checker fails under CI=true and skips otherwise.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{Sandbox, require};
use pam_apppass::code::Code;
use support::{CHEAP, assert_clean_stop, have, insert_row, restart_with_log, wrong_secret};

const ROLE: &str = "APPPASS_LEAK_WORKER";
/// The exit status both checkers are told to use when they find something.
const FOUND: i32 = 99;

fn main() {
    if std::env::var_os(ROLE).is_some() {
        worker();
        return;
    }
    if !common::asked_for("leak_logins") {
        return;
    }
    let mut s = Sandbox::new();
    // apppassd logs every login: into a file, not over this test's output.
    let log = restart_with_log(&mut s);
    s.simple_service("imap", "");
    let (_, password) = insert_row(&s.db, "alice", "imap", CHEAP);
    let mut passed = 0;
    let mut skipped = 0;
    for (name, result) in [
        ("asan_10000_logins", asan(&s, &password)),
        ("valgrind_100_logins", valgrind(&s, &password)),
    ] {
        match result {
            Some(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            None => {
                println!("test {name} ... skipped");
                skipped += 1;
            }
        }
    }
    // Ten thousand logins later, apppassd stops the way it should, with no bug logged.
    assert_clean_stop(&mut s.daemon, Some(&log));
    println!("{passed} passed, 0 failed, {skipped} skipped");
}

/// How many logins a checker's run does, unless the environment says otherwise.
fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The worker, run by `checker` (a command line that ends where the program goes).
fn run_worker(
    checker: &mut Command,
    s: &Sandbox,
    password: &str,
    logins: usize,
    leak: bool,
) -> Output {
    // Ten of each full-cost failure in a long run, one in a short one.
    let full_cost = if logins >= 1000 { 10 } else { 1 };
    checker
        .arg(std::env::current_exe().unwrap())
        .env(ROLE, if leak { "leak" } else { "clean" })
        .env("APPPASS_CONFDIR", &s.confdir)
        .env("APPPASS_PASSWORD", password)
        .env("APPPASS_LOGINS", logins.to_string())
        .env("APPPASS_FULL_COST", full_cost.to_string())
        .output()
        .unwrap()
}

fn asan(s: &Sandbox, password: &str) -> Option<()> {
    // gcc's AddressSanitizer runtime, preloaded into a program that was not built with it:
    // it replaces malloc and free, and its LeakSanitizer runs at exit. (gcc's standalone
    // liblsan crashes a Rust program at start-up here; libasan does not.)
    let runtime = Command::new("gcc")
        .arg("-print-file-name=libasan.so")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_absolute() && p.exists());
    let runtime = require_some(
        runtime,
        "gcc's AddressSanitizer runtime (Debian packages gcc, libasan8)",
    )?;
    let asan = |logins, leak| {
        let mut c = Command::new("env");
        c.env("LD_PRELOAD", &runtime).env(
            "ASAN_OPTIONS",
            format!("detect_leaks=1:exitcode={FOUND}:abort_on_error=0"),
        );
        run_worker(&mut c, s, password, logins, leak)
    };
    // The control: a worker that leaks on purpose is caught.
    let control = asan(20, true);
    let report = String::from_utf8_lossy(&control.stderr);
    assert_eq!(
        control.status.code(),
        Some(FOUND),
        "AddressSanitizer missed a deliberate leak:\n{report}"
    );
    assert!(report.contains("detected memory leaks"), "{report}");

    let logins = count("APPPASS_ASAN_LOGINS", 10_000);
    let started = Instant::now();
    let out = asan(logins, false);
    println!(
        "AddressSanitizer: {}{:.0} s",
        String::from_utf8_lossy(&out.stdout),
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "{logins} logins under AddressSanitizer ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(())
}

fn valgrind(s: &Sandbox, password: &str) -> Option<()> {
    require_some(
        have("valgrind").then_some(()),
        "valgrind (Debian package valgrind)",
    )?;
    let log = s.dir.path().join("valgrind.log");
    let memcheck = |logins, leak| {
        let _ = std::fs::remove_file(&log);
        let mut c = Command::new("valgrind");
        c.args([
            "--tool=memcheck",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
            "--track-fds=yes",
        ])
        .arg(format!("--error-exitcode={FOUND}"))
        .arg(format!("--log-file={}", log.display()));
        let out = run_worker(&mut c, s, password, logins, leak);
        (out, std::fs::read_to_string(&log).unwrap_or_default())
    };
    let (control, report) = memcheck(3, true);
    assert_eq!(
        control.status.code(),
        Some(FOUND),
        "valgrind missed a deliberate leak:\n{report}"
    );
    assert!(report.contains("definitely lost"), "{report}");

    let logins = count("APPPASS_VALGRIND_LOGINS", 100);
    let started = Instant::now();
    let (out, report) = memcheck(logins, false);
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| {
            [
                "ERROR SUMMARY",
                "definitely lost",
                "indirectly lost",
                "FILE DESCRIPTORS",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .collect();
    println!(
        "valgrind: {}{}\n{:.0} s",
        String::from_utf8_lossy(&out.stdout),
        summary.join("\n"),
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success() && report.contains("ERROR SUMMARY: 0 errors"),
        "{logins} logins under valgrind ({}):\n{}\n{report}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(())
}

fn require_some<T>(value: Option<T>, what: &str) -> Option<T> {
    if value.is_none() {
        require(false, what);
    }
    value
}

/// Open descriptors of this process, by what they point to.
fn descriptors() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    v.sort();
    v
}

/// Loses `n` allocations for good: the checkers' control.
#[inline(never)]
fn leak_on_purpose(n: usize) {
    for i in 0..n {
        let b = Box::new([i as u8; 512]);
        std::mem::forget(std::hint::black_box(b));
    }
}

fn worker() {
    let confdir = PathBuf::from(std::env::var_os("APPPASS_CONFDIR").unwrap());
    let password = std::env::var("APPPASS_PASSWORD").unwrap();
    let logins: usize = std::env::var("APPPASS_LOGINS").unwrap().parse().unwrap();
    let wrong = wrong_secret(&password);
    let login = |user: &str, password: &str, rhost: &str| {
        common::login_in(
            Path::new(&confdir),
            "imap",
            user,
            password.as_bytes(),
            Some(rhost),
        )
        .code
    };
    // Warm-up: libpam's, glibc's and the checker's one-time allocations and descriptors
    // (NSS, locale, the syslog socket) are not the module's.
    for _ in 0..3 {
        assert_eq!(login("alice", &password, "192.0.2.1"), Code::SUCCESS);
    }
    assert_eq!(login("mallory", &password, "192.0.2.2"), Code::USER_UNKNOWN);
    if std::env::var(ROLE).is_ok_and(|r| r == "leak") {
        leak_on_purpose(64);
    }
    let before = descriptors();
    let started = Instant::now();
    // Full-cost paths: `APPPASS_FULL_COST` of each, however many logins.
    let full_cost: usize = std::env::var("APPPASS_FULL_COST").unwrap().parse().unwrap();
    let rare = (logins / full_cost.max(1)).max(1);
    for i in 0..logins {
        let (user, pw, rhost, want) = if i % rare == rare - 1 {
            (
                "mallory",
                password.as_str(),
                "192.0.2.2".to_string(),
                Code::USER_UNKNOWN,
            )
        } else if i % rare == rare / 2 {
            (
                "alice",
                "account password",
                "192.0.2.3".to_string(),
                Code::AUTH_ERR,
            )
        } else if i % 10 == 1 {
            // Each host guesses at most a few times: never throttled.
            (
                "alice",
                wrong.as_str(),
                format!("198.51.100.{}", (i / 10) % 250),
                Code::AUTH_ERR,
            )
        } else {
            (
                "alice",
                password.as_str(),
                "192.0.2.1".to_string(),
                Code::SUCCESS,
            )
        };
        assert_eq!(login(user, pw, &rhost), want, "login {i} ({user})");
    }
    let after = descriptors();
    println!(
        "{logins} logins in {:.1} s, descriptors before {} and after {}",
        started.elapsed().as_secs_f64(),
        before.len(),
        after.len()
    );
    assert_eq!(after, before, "descriptors left open");
}
