//! Thousands of logins in one process, the way a long-lived auth worker runs them: libpam
//! loads and unloads the module around each. Nothing may be left behind: descriptors,
//! threads, mappings or memory.
//!
//! Its own process with its own `main` (harness = false), so nothing else runs while the
//! process's descriptors and mappings are counted.

mod common;

use common::Sandbox;
use pam_apppass::code::Code;
use pam_apppass::secret::{HashParams, NewPassword};
use pam_apppass::store::sqlite::{Purpose, SqliteStore};
use pam_apppass::store::{NewRow, Store};

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

fn main() {
    const LOGINS: usize = 1000;
    let s = Sandbox::new();
    s.simple_service("imap", "");
    // A cheap hash for the row, so a thousand right logins take seconds: what is counted
    // here is what the module leaves behind, not argon2's cost.
    let pw = NewPassword::generate().unwrap();
    let store = SqliteStore::open(&s.db, Purpose::Admin, false).unwrap();
    let hash = pw
        .hash(HashParams {
            m_kib: 256,
            t: 1,
            p: 1,
        })
        .unwrap();
    store
        .create(&NewRow {
            user: "alice",
            service: "imap",
            label: "leak test",
            selector: pw.selector(),
            hash: &hash,
            created: 0,
            expires: None,
        })
        .unwrap();
    drop(store);
    let password = pw.display().to_string();

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
    run(LOGINS);
    let after = snapshot();
    println!(
        "{LOGINS} logins (+{} failures): before {before:?}, after {after:?}",
        LOGINS / 10
    );
    assert_eq!(after.fds, before.fds, "descriptors leaked");
    assert_eq!(after.threads, 1, "the module started a thread");
    assert_eq!(after.maps, before.maps, "mappings left behind");
    assert!(
        !after.module_mapped,
        "the module stayed mapped after pam_end"
    );
    // glibc keeps some freed memory; a leak of even 1 KiB per login would show as 1 MiB.
    assert!(
        after.rss_kib - before.rss_kib < 1024,
        "memory grew by {} KiB",
        after.rss_kib - before.rss_kib
    );
    println!("test leaks ... ok");
}
