//! Throttling through the real libpam, the built module and a real apppassd on SQLite:
//! guesses are counted per (user, remote host, app password named), so that an attacker
//! behind the owner's address (a NAT, a CGNAT) cannot lock the owner out; an IPv6
//! address counts by its /64; an empty remote host has a rule of its own; and the
//! throttle table and the audit log stay within their bounds under a flood of remote
//! hosts and user names. PostgreSQL's side is in tests/postgres.rs and tests/stores.rs.

mod common;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use apppass_core::secret::NewPassword;
use common::Sandbox;
use pam_apppass::code::Code;
use support::wrong_secret;

/// A password shaped like an app password whose selector is nobody's (a fresh one).
fn unknown() -> String {
    NewPassword::generate().unwrap().display().to_string()
}

/// The audit log of `user`, newest first (`apppass log` waits for the records of the
/// logins already answered).
fn events(s: &Sandbox, user: &str) -> Vec<serde_json::Value> {
    s.json_array(&["log", "--user", user, "--json", "--limit", "100000"])
}

/// The reason of `user`'s newest audit event (`None` on success).
fn last_reason(s: &Sandbox, user: &str) -> Option<String> {
    events(s, user)[0]["reason"].as_str().map(String::from)
}

/// Rows in a table of the store, read beside apppassd.
fn rows(db: &Path, table: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// The case: 1,000 guesses from one address, half at selectors that are not the
/// user's and half a wrong secret for one of the user's passwords (a stale device, or
/// someone who saw its selector); then the owner's other password from the same address
/// works at once, while the guesses from there stay throttled, and the audit log holds
/// one event per lockout, not one per refused attempt.
#[test]
fn a_thousand_guesses_from_the_owners_address_do_not_lock_the_owner_out() {
    let s = Sandbox::new(); // The shipped rule: 10 guesses in 15 minutes, 15 minutes.
    s.simple_service("imap", "");
    let phone = s.add("alice", "imap", &["--label", "phone"]);
    let laptop = s.add("alice", "imap", &["--label", "laptop"]);
    let shared = Some("203.0.113.7");
    let stale = wrong_secret(&laptop.password);
    for i in 0..1000 {
        let guess = if i % 2 == 0 { unknown() } else { stale.clone() };
        let out = s.login("imap", "alice", guess.as_bytes(), shared);
        assert_eq!(out.code, Code::AUTH_ERR, "guess {i}");
    }
    let throttled = "rhost=203.0.113.7 user=alice service=imap reason=throttled";
    // Ten of each kind were checked; the other 980 refused unhashed.
    assert_eq!(s.daemon.log_lines(&[throttled], 980).len(), 980);

    // The owner, from the same address, at once.
    let out = s.login("imap", "alice", phone.password.as_bytes(), shared);
    assert_eq!(out.code, Code::SUCCESS);
    // The laptop's password is the one guessed at: refused from that address only.
    let out = s.login("imap", "alice", laptop.password.as_bytes(), shared);
    assert_eq!(out.code, Code::AUTH_ERR);
    let out = s.login(
        "imap",
        "alice",
        laptop.password.as_bytes(),
        Some("198.51.100.20"),
    );
    assert_eq!(out.code, Code::SUCCESS);
    // The owner's success lifted nothing: the guesses from there are still refused.
    for guess in [unknown(), stale.clone()] {
        let out = s.login("imap", "alice", guess.as_bytes(), shared);
        assert_eq!(out.code, Code::AUTH_ERR);
    }
    assert_eq!(s.daemon.log_lines(&[throttled], 983).len(), 983);

    // The audit log: the twenty checked guesses, the two successes, and one event for
    // each of the two lockouts; the 981 other refusals are counted on the throttle rows.
    let log = events(&s, "alice");
    let count = |outcome: &str, reason: Option<&str>| {
        log.iter()
            .filter(|e| e["outcome"] == outcome && e["reason"].as_str() == reason)
            .count()
    };
    assert_eq!(count("failure", Some("unknown_password")), 10);
    assert_eq!(count("failure", Some("wrong_password")), 10);
    assert_eq!(count("throttled", Some("throttled")), 2);
    assert_eq!(count("success", None), 2);
    assert_eq!(log.len(), 24, "{log:?}");
    let conn =
        rusqlite::Connection::open_with_flags(&s.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let refused: i64 = conn
        .query_row(
            "SELECT sum(refused) FROM throttle WHERE rhost = '203.0.113.7'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refused, 983);
}

/// IPv6 addresses count by their /64, in any spelling: an attacker who takes a new
/// address in their prefix for every guess is throttled all the same; the /64 next door
/// is not, and IPv4 addresses count one by one. `unlock` takes any address of the /64.
#[test]
fn ipv6_addresses_in_one_64_are_one_host() {
    let s = Sandbox::with_config("throttle_failures = 3\n");
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    let guess = |rhost: &str| {
        let out = s.login("imap", "alice", unknown().as_bytes(), Some(rhost));
        assert_eq!(out.code, Code::AUTH_ERR);
        last_reason(&s, "alice").unwrap()
    };
    for rhost in [
        "2001:db8:5:6::1",
        "2001:db8:5:6:1234:5678:9abc:def0",
        "2001:DB8:5:6::3",
    ] {
        assert_eq!(guess(rhost), "unknown_password", "{rhost}");
    }
    assert_eq!(guess("2001:db8:5:6:ffff:ffff:ffff:ffff"), "throttled");
    assert_eq!(guess("2001:0db8:0005:0006::4"), "throttled");
    assert_eq!(guess("2001:db8:5:7::1"), "unknown_password");
    for rhost in ["192.0.2.1", "192.0.2.1", "192.0.2.1"] {
        assert_eq!(guess(rhost), "unknown_password");
    }
    assert_eq!(guess("192.0.2.1"), "throttled");
    assert_eq!(guess("192.0.2.2"), "unknown_password");
    // The owner in that /64 is not locked out.
    let out = s.login(
        "imap",
        "alice",
        pw.password.as_bytes(),
        Some("2001:db8:5:6::1"),
    );
    assert_eq!(out.code, Code::SUCCESS);
    let out = s.apppass(&["unlock", "--user", "alice", "--rhost", "2001:db8:5:6::abcd"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(1 host(s))"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(guess("2001:db8:5:6::9"), "unknown_password");
}

/// With no remote host (a service that gives none: su, a local program), every client
/// shares one host: it has a rule of its own, throttle_local_failures, looser than the
/// remote one; the remote rule is unchanged.
#[test]
fn no_remote_host_has_a_rule_of_its_own() {
    let mut s = Sandbox::with_config("throttle_failures = 3\nthrottle_local_failures = 6\n");
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    let guess = |rhost: Option<&str>| {
        let out = s.login("imap", "alice", unknown().as_bytes(), rhost);
        assert_eq!(out.code, Code::AUTH_ERR);
        last_reason(&s, "alice").unwrap()
    };
    for i in 0..6 {
        assert_eq!(guess(None), "unknown_password", "local guess {i}");
    }
    assert_eq!(guess(None), "throttled");
    for i in 0..3 {
        assert_eq!(guess(Some("198.51.100.3")), "unknown_password", "{i}");
    }
    assert_eq!(guess(Some("198.51.100.3")), "throttled");
    // The owner, with no remote host either.
    let out = s.login("imap", "alice", pw.password.as_bytes(), None);
    assert_eq!(out.code, Code::SUCCESS);
    // throttle_local_failures = 0: no throttling without a remote host, the remote rule
    // as before.
    s.reconfigure("throttle_failures = 3\nthrottle_local_failures = 0\n");
    assert!(s.apppass(&["unlock", "--user", "alice"]).status.success());
    let guess = |rhost: Option<&str>| {
        let out = s.login("imap", "alice", unknown().as_bytes(), rhost);
        assert_eq!(out.code, Code::AUTH_ERR);
        last_reason(&s, "alice").unwrap()
    };
    for i in 0..10 {
        assert_eq!(guess(None), "unknown_password", "local guess {i}");
    }
    for _ in 0..3 {
        guess(Some("198.51.100.4"));
    }
    assert_eq!(guess(Some("198.51.100.4")), "throttled");
}

/// A flood of remote hosts (a new IPv6 /64 for every guess) at two users who have app
/// passwords, and of user names that have none: the throttle table never holds more
/// than throttle_max_rows (the bound holds at every write), names without app passwords
/// leave no row anywhere, and after apppassd's maintenance (at its first request after
/// a start, then hourly) the audit log is within audit_max_rows.
#[test]
fn floods_of_hosts_and_user_names_stay_within_the_bounds() {
    let conf = "throttle_failures = 2\nthrottle_max_rows = 20\naudit_max_rows = 15\n";
    let mut s = Sandbox::with_config(conf);
    s.simple_service("imap", "");
    let alice = s.add("alice", "imap", &[]);
    s.add("bob", "imap", &[]);
    for i in 0..60 {
        let rhost = format!("2001:db8:{i:x}:{:x}::1", i * 7);
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        let out = s.login("imap", user, unknown().as_bytes(), Some(&rhost));
        assert_eq!(out.code, Code::AUTH_ERR);
        let nobody = format!("flood{i}");
        let out = s.login("imap", &nobody, unknown().as_bytes(), Some(&rhost));
        assert_eq!(out.code, Code::USER_UNKNOWN);
        if i % 10 == 9 {
            // (Records settled: the log waits for them.)
            events(&s, "bob");
            let n = rows(&s.db, "throttle");
            assert!(n <= 20, "{n} throttle rows after {} hosts", i + 1);
        }
    }
    assert_eq!(rows(&s.db, "throttle"), 20);
    // The newest rows are the ones kept: the last host's guess counts on.
    let last = format!("2001:db8:{:x}:{:x}::2", 58, 58 * 7);
    let out = s.login("imap", "alice", unknown().as_bytes(), Some(&last));
    assert_eq!(out.code, Code::AUTH_ERR);
    let out = s.login("imap", "alice", unknown().as_bytes(), Some(&last));
    assert_eq!(out.code, Code::AUTH_ERR);
    assert_eq!(last_reason(&s, "alice").as_deref(), Some("throttled"));
    // Names without app passwords: nothing stored.
    let conn =
        rusqlite::Connection::open_with_flags(&s.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let theirs: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM event WHERE user LIKE 'flood%')
                  + (SELECT count(*) FROM throttle WHERE user LIKE 'flood%')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(theirs, 0);
    drop(conn);
    assert!(rows(&s.db, "event") > 15);
    // Maintenance: at the first request after a start.
    s.reconfigure(conf);
    let out = s.login(
        "imap",
        "alice",
        alice.password.as_bytes(),
        Some("192.0.2.80"),
    );
    assert_eq!(out.code, Code::SUCCESS);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows(&s.db, "event") > 15 {
        assert!(Instant::now() < deadline, "the audit log was not trimmed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rows(&s.db, "throttle") <= 20);
}
