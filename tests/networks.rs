//! Source networks per app password (`apppass add --from`, `apppass networks`), through
//! the real CLI, a real apppassd on SQLite and the built module under the real libpam:
//! a login from inside the networks works (IPv4, IPv6, IPv4-mapped IPv6); from outside,
//! with no remote host, or with a host name (sshd's UseDNS) the right password is
//! refused with reason=network in apppassd's log and the audit log, and counts as a
//! guess. PostgreSQL's side is in tests/stores.rs (the column) and tests/postgres.rs
//! (the login role may not change it).

mod common;

use std::time::Duration;

use common::Sandbox;
use pam_apppass::code::Code;

const FROM: &str = "192.0.2.0/24,2001:db8::/48";

fn login(s: &Sandbox, user: &str, password: &str, rhost: Option<&str>) -> Code {
    s.login("imap", user, password.as_bytes(), rhost).code
}

/// The audit log of `user`, newest first.
fn events(s: &Sandbox, user: &str) -> Vec<serde_json::Value> {
    s.json_array(&["log", "--user", user, "--json", "--limit", "1000"])
}

/// The reasons of `user`'s audit events, oldest first (`-` for a success).
fn reasons(s: &Sandbox, user: &str) -> Vec<String> {
    let mut r: Vec<String> = events(s, user)
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or("-").to_string())
        .collect();
    r.reverse();
    r
}

/// The networks `apppass list --json` shows for app password `id`.
fn listed_networks(s: &Sandbox, id: i64) -> Vec<String> {
    let rows = s.list();
    let row = rows
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no id {id} in {rows:?}"));
    row["networks"]
        .as_array()
        .unwrap_or_else(|| panic!("no networks in {row}"))
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn only_addresses_inside_the_networks_may_use_the_password() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    // Host bits and spaces as people type them; stored as canonical networks.
    let pw = s.add("alice", "imap", &["--from", "192.0.2.77/24, 2001:db8::/48"]);
    assert_eq!(
        listed_networks(&s, pw.id),
        ["192.0.2.0/24", "2001:db8::/48"]
    );
    let table = String::from_utf8(s.apppass(&["list", "--user", "alice"]).stdout).unwrap();
    assert!(
        table.lines().next().unwrap().ends_with("NETWORKS") && table.contains(FROM),
        "{table}"
    );
    let other = s.add("alice", "imap", &[]);
    assert!(listed_networks(&s, other.id).is_empty());
    // add says what it stored, in text and in JSON.
    let out = s.apppass(&["add", "--user", "bob", "--service", "imap", "--from", "::1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\nFrom: ::1\n"));
    let out = s.apppass(&["add", "--user", "bob", "--service", "imap", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["networks"], serde_json::json!([]), "{v}");
    let out = s.apppass(&[
        "add",
        "--user",
        "bob",
        "--service",
        "imap",
        "--json",
        "--from",
        FROM,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["networks"],
        serde_json::json!(["192.0.2.0/24", "2001:db8::/48"])
    );

    for inside in ["192.0.2.9", "2001:db8:0:7::5", "::ffff:192.0.2.10"] {
        assert_eq!(
            login(&s, "alice", &pw.password, Some(inside)),
            Code::SUCCESS,
            "{inside}"
        );
    }
    let outside = [
        Some("198.51.100.1"),
        Some("2001:db9::1"),
        Some("::ffff:198.51.100.1"),
        Some("mail.example.org"),
        None,
    ];
    for rhost in outside {
        assert_eq!(
            login(&s, "alice", &pw.password, rhost),
            Code::AUTH_ERR,
            "{rhost:?}"
        );
    }
    // A password without networks works from anywhere, as before.
    assert_eq!(
        login(&s, "alice", &other.password, Some("198.51.100.1")),
        Code::SUCCESS
    );
    let refused = s
        .daemon
        .log_lines(&["authentication failure", "reason=network"], 5);
    assert_eq!(refused.len(), 5, "{refused:?}");
    let id = format!("id={}", pw.id);
    assert!(refused.iter().all(|l| l.contains(&id)), "{refused:?}");
    assert!(
        refused.iter().any(|l| l.contains("rhost=mail.example.org")),
        "{refused:?}"
    );
    assert_eq!(
        reasons(&s, "alice"),
        [
            "-", "-", "-", "network", "network", "network", "network", "network", "-"
        ]
    );
}

#[test]
fn a_right_password_from_the_wrong_place_counts_as_a_guess() {
    let s = Sandbox::with_config("throttle_failures = 2\n");
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &["--from", "192.0.2.0/24"]);
    let stranger = Some("198.51.100.7");
    for _ in 0..3 {
        assert_eq!(login(&s, "alice", &pw.password, stranger), Code::AUTH_ERR);
    }
    // The third try from there was not even checked; the owner's place is not locked.
    assert_eq!(
        reasons(&s, "alice"),
        ["network", "network", "throttled"],
        "{:?}",
        events(&s, "alice")
    );
    assert_eq!(
        login(&s, "alice", &pw.password, Some("192.0.2.1")),
        Code::SUCCESS
    );
    let throttled = s
        .daemon
        .log_lines(&["rhost=198.51.100.7", "reason=throttled"], 1);
    assert_eq!(throttled.len(), 1, "{}", s.daemon.log());
}

#[test]
fn networks_can_be_changed_later() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    let id = pw.id.to_string();
    let far = Some("198.51.100.7");
    assert_eq!(login(&s, "alice", &pw.password, far), Code::SUCCESS);

    let out = s.apppass(&["networks", &id, "--from", "192.0.2.0/24,2001:db8::1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("App password {id} may now be used only from 192.0.2.0/24,2001:db8::1.\n")
    );
    assert_eq!(listed_networks(&s, pw.id), ["192.0.2.0/24", "2001:db8::1"]);
    assert_eq!(login(&s, "alice", &pw.password, far), Code::AUTH_ERR);
    assert_eq!(
        login(&s, "alice", &pw.password, Some("2001:db8::1")),
        Code::SUCCESS
    );
    let changed = s.daemon.log_lines(
        &[&format!(
            "app password networks changed: id={id} user=alice"
        )],
        1,
    );
    assert_eq!(changed.len(), 1, "{}", s.daemon.log());
    assert!(changed[0].contains("from=192.0.2.0/24,2001:db8::1 by=root uid=0"));

    // A bad list changes nothing; an unknown id is not found; one of the two is needed.
    let bad = s.apppass(&["networks", &id, "--from", "192.0.2.0/24,mail.example.org"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"mail.example.org\""));
    assert_eq!(listed_networks(&s, pw.id), ["192.0.2.0/24", "2001:db8::1"]);
    let none = s.apppass(&["networks", "999999", "--any"]);
    assert_eq!(none.status.code(), Some(3));
    assert_eq!(s.apppass(&["networks", &id]).status.code(), Some(2));

    let out = s.apppass(&["networks", &id, "--any"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("from anywhere"));
    assert!(listed_networks(&s, pw.id).is_empty());
    assert_eq!(login(&s, "alice", &pw.password, far), Code::SUCCESS);
    assert_eq!(
        s.daemon.log_lines(&["networks changed", "from=*"], 1).len(),
        1
    );
}

#[test]
fn bad_from_values_are_refused_and_nothing_is_stored() {
    let s = Sandbox::new();
    let many: Vec<String> = (0..33).map(|i| format!("10.{i}.0.0/16")).collect();
    let many = many.join(",");
    for (from, says) in [
        ("mail.example.org", "is not an IPv4 or IPv6 address"),
        ("192.0.2.0/33", "bad prefix length"),
        ("2001:db8::/129", "bad prefix length"),
        ("192.0.2.0/x", "bad prefix length"),
        ("192.0.2.0/24,,10.0.0.1", "an empty entry"),
        ("", "an empty entry"),
        ("192.0.2.1:25", "is not an IPv4 or IPv6 address"),
        (many.as_str(), "more than 32 networks"),
    ] {
        let out = s.apppass(&[
            "add",
            "--user",
            "alice",
            "--service",
            "imap",
            "--from",
            from,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{from}: {err}");
        assert!(
            err.starts_with("apppass: error: --from: ") && err.contains(says),
            "{from}: {err}"
        );
        assert!(out.stdout.is_empty(), "{from}");
    }
    assert!(s.list().is_empty(), "{:?}", s.list());
}

#[test]
fn require_from_names_the_services_that_need_networks() {
    let s = Sandbox::with_config("require_from = smtp sshd\n");
    // smtp, and the mail group, which opens smtp too.
    for service in ["smtp", "sshd", "*", "mail"] {
        let out = s.apppass(&["add", "--user", "alice", "--service", service]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{service}: {err}");
        assert!(
            err.contains("require_from") && err.contains("--from"),
            "{service}: {err}"
        );
    }
    assert!(s.list().is_empty());
    s.add("alice", "imap", &[]);
    let smtp = s.add("alice", "smtp", &["--from", "192.0.2.0/24"]);
    // Nor may a required list be cleared afterwards.
    let out = s.apppass(&["networks", &smtp.id.to_string(), "--any"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("require_from"));
    assert_eq!(listed_networks(&s, smtp.id), ["192.0.2.0/24"]);
    assert_eq!(s.list().len(), 2);
}

/// Networks that cannot be read (a row damaged or written by hand) let nobody in, and
/// apppassd says which row.
#[test]
fn unreadable_networks_refuse_every_login() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &["--from", "192.0.2.0/24"]);
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "UPDATE app_password SET networks = 'the office' WHERE id = ?1",
        [pw.id],
    )
    .unwrap();
    drop(conn);
    for rhost in [Some("192.0.2.1"), Some("198.51.100.1"), None] {
        assert_eq!(
            login(&s, "alice", &pw.password, rhost),
            Code::AUTH_ERR,
            "{rhost:?}"
        );
    }
    let id = format!(
        "app password id={} of alice has networks that cannot be read",
        pw.id
    );
    assert_eq!(s.daemon.log_lines(&[&id], 3).len(), 3, "{}", s.daemon.log());
    assert_eq!(reasons(&s, "alice"), ["network", "network", "network"]);
}
