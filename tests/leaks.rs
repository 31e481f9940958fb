//! Thousands of logins in one process, the way a long-lived auth worker runs them: libpam
//! loads and unloads the module around each, and each asks a real apppassd. Nothing may
//! be left behind: descriptors, threads, mappings or memory.
//!
//! The module is a thin client of apppassd now (one connection, one request, one
//! answer): it never loads libpq or opens a store, so the PostgreSQL part this test had
//! (libpq and its TLS libraries loaded and unloaded by each login) has nothing left to
//! check here: apppassd holds a store connection per worker for its whole life.
//!
//! Its own process with its own `main` (harness = false), so nothing else runs while the
//! process's descriptors and mappings are counted.

mod common;
mod support;

use std::time::Instant;

use common::Sandbox;
use pam_apppass::code::Code;
use support::{CHEAP, assert_clean_stop, insert_row, restart_with_log};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Snapshot {
    fds: usize,
    threads: usize,
    maps: usize,
    module_mapped: bool,
    rss_kib: i64,
}

fn snapshot() -> Snapshot {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> i64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    Snapshot {
        fds,
        threads: usize::try_from(field("Threads:")).unwrap(),
        maps: maps.lines().count(),
        module_mapped: maps.contains("libpam_apppass.so"),
        rss_kib: field("VmRSS:"),
    }
}

/// What a run of logins may not leave behind: a descriptor, a thread, a mapping, the
/// module itself, or memory (glibc keeps some freed memory; a leak of even 1 KiB per
/// login would show as 1 MiB).
fn assert_nothing_left(before: Snapshot, after: Snapshot) {
    assert_eq!(after.fds, before.fds, "descriptors leaked");
    assert_eq!(after.threads, 1, "the module started a thread");
    assert_eq!(after.maps, before.maps, "mappings left behind");
    assert!(
        !after.module_mapped,
        "the module stayed mapped after pam_end"
    );
    assert!(
        after.rss_kib - before.rss_kib < 1024,
        "memory grew by {} KiB",
        after.rss_kib - before.rss_kib
    );
}

fn main() {
    const LOGINS: usize = 3000;
    if !common::asked_for("leaks") {
        return;
    }
    let mut s = Sandbox::new();
    // apppassd logs every login: into a file, not over this test's output.
    let log = restart_with_log(&mut s);
    s.simple_service("imap", "");
    // A cheap hash for the row (written straight into apppassd's store: its own
    // configuration refuses parameters below OWASP's minimum), so a thousand right
    // logins take seconds: what is counted here is what the module leaves behind, not
    // argon2's cost.
    let (_, password) = insert_row(&s.db, "alice", "imap", CHEAP);

    let run = |n: usize| {
        for i in 0..n {
            let out = s.login("imap", "alice", password.as_bytes(), Some("192.0.2.1"));
            assert_eq!(out.code, Code::SUCCESS, "login {i}");
            // Every tenth: a failure path (unknown user, full-cost dummy verification).
            if i % 10 == 0 {
                let out = s.login("imap", "mallory", password.as_bytes(), Some("192.0.2.2"));
                assert_eq!(out.code, Code::USER_UNKNOWN, "failure {i}");
            }
        }
    };
    // Warm up: libpam's and glibc's own one-time allocations (NSS, locale, syslog socket).
    run(50);
    let before = snapshot();
    let started = Instant::now();
    run(LOGINS);
    let after = snapshot();
    println!(
        "{LOGINS} logins (+{} failures) in {:.1} s: before {before:?}, after {after:?}",
        LOGINS / 10,
        started.elapsed().as_secs_f64()
    );
    assert_nothing_left(before, after);
    assert_clean_stop(&mut s.daemon, Some(&log));
    println!("test leaks ... ok");
}
