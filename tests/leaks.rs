//! Thousands of logins in one process, the way a long-lived auth worker runs them: libpam
//! loads and unloads the module around each. Nothing may be left behind: descriptors,
//! threads, mappings or memory.
//!
//! Its own process with its own `main` (harness = false), so nothing else runs while the
//! process's descriptors and mappings are counted.

mod common;
mod pg;

use apppass_core::secret::{HashParams, NewPassword};
use apppass_core::store::sqlite::{Purpose, SqliteStore};
use apppass_core::store::{NewRow, Store};
use common::Sandbox;
use pam_apppass::code::Code;

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
    assert_eq!(after.threads, 1, "the module (or libpq) started a thread");
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
    assert_nothing_left(before, after);
    println!("test leaks ... ok");
    postgres_logins();
}

/// The same on a PostgreSQL store: every login loads libpq (and its TLS, GSSAPI and
/// LDAP libraries), connects and unloads it again. The one thing allowed to stay is
/// what pins itself for the life of the process on first use (libcrypto, and what it
/// loaded): the warm-up maps it, and from then on nothing may grow.
fn postgres_logins() {
    const LOGINS: usize = 300;
    let cluster = match pg::Cluster::start() {
        Ok(c) => c,
        Err(e) => {
            common::require(false, &e);
            println!("test leaks (postgresql) ... skipped");
            return;
        }
    };
    let s = Sandbox::new();
    let db = cluster.create_database();
    let passfile = s.dir.path().join("apppass.pgpass");
    cluster.passfile(&passfile, &[pg::ADMIN, pg::LOGIN]);
    std::fs::write(&s.conf, format!("db_passfile = {}\n", passfile.display())).unwrap();
    let admin = cluster.uri(pg::ADMIN, &db);
    let cli = |args: &[&str]| {
        std::process::Command::new(common::apppass_bin())
            .args(["--db", &admin, "--config"])
            .arg(&s.conf)
            .args(args)
            .output()
            .unwrap()
    };
    let init = cli(&["init"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    cluster.grant_login_role(&db);
    let add = cli(&["add", "--user", "alice", "--service", "imap", "--json"]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&add.stdout).unwrap();
    let password = v["password"].as_str().unwrap().to_string();
    s.service(
        "imap-pg",
        &format!(
            "auth required {{module}} conf={{conf}} service=imap db={}\n",
            cluster.uri(pg::LOGIN, &db)
        ),
    );
    let mapped = || -> Vec<String> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mut libs: Vec<String> = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| p.contains(".so"))
            .map(String::from)
            .collect();
        libs.sort();
        libs.dedup();
        libs
    };
    let libs_before = mapped();
    let run = |n: usize| {
        for i in 0..n {
            let out = s.login("imap-pg", "alice", password.as_bytes(), Some("192.0.2.1"));
            assert_eq!(out.code, Code::SUCCESS, "login {i}");
            if i % 10 == 0 {
                let out = s.login("imap-pg", "mallory", password.as_bytes(), Some("192.0.2.2"));
                assert_eq!(out.code, Code::USER_UNKNOWN, "failure {i}");
            }
        }
    };
    run(20);
    let pinned: Vec<String> = mapped()
        .into_iter()
        .filter(|l| !libs_before.contains(l))
        .collect();
    let before = snapshot();
    run(LOGINS);
    let after = snapshot();
    println!(
        "{LOGINS} PostgreSQL logins (+{} failures): before {before:?}, after {after:?}; \
         pinned by the first: {pinned:?}",
        LOGINS / 10
    );
    assert!(
        !pinned.iter().any(|l| l.contains("libpq")),
        "libpq stayed mapped: {pinned:?}"
    );
    assert_nothing_left(before, after);
    println!("test leaks (postgresql) ... ok");
}
