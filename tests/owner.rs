//! An app password belongs to the account it was made for, not to its user name: with
//! throwaway accounts (useradd, userdel; root), the real CLI adds a password, the real
//! libpam logs in with it, and once the name is deleted, or deleted and given to another
//! uid, the same password is refused (reason=owner_changed, in apppassd's log and in
//! the audit log), without counting as a guess. A store from before owners were
//! recorded (schema 2) gets its rows adopted by the accounts that have their names when
//! apppassd opens it, once.

mod common;
mod support;

use std::path::Path;
use std::process::Command;

use apppass_core::secret::NewPassword;
use common::people::Accounts;
use common::{Daemon, Sandbox, is_root, require, unique};
use pam_apppass::code::Code;
use support::{CHEAP, have};

/// A uid no account has, other than `not`.
fn free_uid(not: &[u32]) -> u32 {
    loop {
        let r = u32::from_str_radix(&common::random_hex(2), 16).unwrap();
        let uid = 20_000 + r % 30_000;
        let taken = Command::new("getent")
            .args(["passwd", &uid.to_string()])
            .output()
            .unwrap()
            .status
            .success();
        if !taken && !not.contains(&uid) {
            return uid;
        }
    }
}

fn prerequisites() -> bool {
    require(is_root(), "root (to create throwaway users)")
        && require(
            have("useradd") && have("userdel"),
            "useradd and userdel (passwd)",
        )
}

/// The status `apppass list` gives app password `id` of `user`.
fn status(s: &Sandbox, user: &str, id: i64) -> String {
    let rows = s.json(&["list", "--user", user, "--json"]);
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no id {id} in {rows}"));
    row["status"].as_str().unwrap().to_string()
}

/// The reasons of `user`'s newest `n` audit events, newest first.
fn audit_reasons(s: &Sandbox, user: &str, n: usize) -> Vec<String> {
    let events = s.json(&["log", "--user", user, "--json", "--limit", &n.to_string()]);
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[test]
fn a_name_given_to_another_account_does_not_inherit_its_app_passwords() {
    if !prerequisites() {
        return;
    }
    let mut accounts = Accounts::default();
    // Throttling at one guess: were a refusal counted as a guess, the second attempt
    // would be throttled.
    let s = Sandbox::with_config("throttle_failures = 1\nthrottle_lockout = 1h\n");
    s.simple_service("imap", "");
    let user = unique("apown");
    let first = free_uid(&[]);
    accounts.named(&user, Some(first));
    let pw = s.add(&user, "imap", &[]);
    assert_eq!(s.code("imap", &user, &pw.password), Code::SUCCESS);
    assert_eq!(status(&s, &user, pw.id), "active");

    // The name is deleted and given to someone else, with another uid.
    accounts.delete(&user);
    let second = free_uid(&[first]);
    accounts.named(&user, Some(second));
    for _ in 0..2 {
        assert_eq!(s.code("imap", &user, &pw.password), Code::AUTH_ERR);
    }
    assert_eq!(
        audit_reasons(&s, &user, 2),
        ["owner_changed", "owner_changed"]
    );
    let user_field = format!("user={user} ");
    let refused = s.daemon.log_lines(
        &[
            &user_field,
            "authentication failure",
            "reason=owner_changed",
        ],
        2,
    );
    assert_eq!(refused.len(), 2, "{}", s.daemon.log());
    assert!(
        s.daemon
            .log_lines(&[&user_field, "reason=throttled"], 0)
            .is_empty()
    );
    let why = s.daemon.log_lines(&[&format!(
            "id={} of {user} was made for uid {first}, and its user name now belongs to uid {second}",
            pw.id
        )],
        2,
    );
    assert_eq!(why.len(), 2, "{}", s.daemon.log());
    assert_eq!(status(&s, &user, pw.id), "orphaned");
    let all = s.json(&["list", "--all", "--json"]);
    assert_eq!(all[0]["status"], "orphaned", "{all}");
    let table = s.apppass(&["list", "--user", &user]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(" orphaned "), "{table}");

    // The new account's own app passwords work; the old one stays refused.
    let own = s.add(&user, "imap", &[]);
    assert_eq!(s.code("imap", &user, &own.password), Code::SUCCESS);
    assert_eq!(status(&s, &user, own.id), "active");
    assert_eq!(s.code("imap", &user, &pw.password), Code::AUTH_ERR);
}

#[test]
fn a_deleted_accounts_app_passwords_stop_working() {
    if !prerequisites() {
        return;
    }
    let mut accounts = Accounts::default();
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let user = unique("apdel");
    let uid = free_uid(&[]);
    accounts.named(&user, Some(uid));
    let pw = s.add(&user, "imap", &[]);
    assert_eq!(s.code("imap", &user, &pw.password), Code::SUCCESS);
    accounts.delete(&user);
    assert_eq!(s.code("imap", &user, &pw.password), Code::AUTH_ERR);
    assert_eq!(audit_reasons(&s, &user, 1), ["owner_changed"]);
    let why = s.daemon.log_lines(
        &[&format!(
            "id={} of {user} was made for uid {uid}, and its user name has no account now",
            pw.id
        )],
        1,
    );
    assert_eq!(why.len(), 1, "{}", s.daemon.log());
    assert_eq!(status(&s, &user, pw.id), "orphaned");
}

/// Writes a store of schema version 2 (before owners) at `db` from the shipped SQL, with
/// one app password (hashed cheaply) for each of `users`; returns the passwords.
fn schema_2_store(db: &Path, users: &[&str]) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = db.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(include_str!("../sql/sqlite/0001_app_password.sql"))
        .unwrap();
    conn.execute_batch(include_str!("../sql/sqlite/0002_audit_throttle.sql"))
        .unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    let mut passwords = Vec::new();
    for user in users {
        let pw = NewPassword::generate().unwrap();
        conn.execute(
            "INSERT INTO app_password (user, service, label, selector, hash, created)
             VALUES (?1, 'imap', 'old', ?2, ?3, 1)",
            (user, pw.selector(), pw.hash(CHEAP).unwrap()),
        )
        .unwrap();
        passwords.push(pw.display().to_string());
    }
    drop(conn);
    std::fs::set_permissions(db, std::fs::Permissions::from_mode(0o600)).unwrap();
    passwords
}

#[test]
fn app_passwords_from_before_owners_are_adopted_once() {
    if !prerequisites() {
        return;
    }
    let mut accounts = Accounts::default();
    let mut s = Sandbox::new();
    s.simple_service("imap", "");
    let (user, gone) = (unique("apold"), unique("apgone"));
    let uid = free_uid(&[]);
    accounts.named(&user, Some(uid));

    // The sandbox's store replaced by one of schema 2, as an older apppass left it.
    s.daemon.stop();
    std::fs::remove_dir_all(s.db.parent().unwrap()).unwrap();
    let passwords = schema_2_store(&s.db, &[&user, &user, &gone]);
    s.daemon = Daemon::start_at(s.dir.path(), &s.db, &s.conf, &[]);
    let adopted = s
        .daemon
        .log_lines(&["adopted 3 app password(s) of 2 user(s)"], 1);
    assert_eq!(adopted.len(), 1, "{}", s.daemon.log());
    let homeless = s
        .daemon
        .log_lines(&["1 user(s) with app passwords have no account: "], 1);
    assert_eq!(homeless.len(), 1, "{}", s.daemon.log());
    assert!(homeless[0].contains(&gone), "{}", homeless[0]);
    let owners: Vec<(String, Option<i64>)> = {
        let conn = rusqlite::Connection::open(&s.db).unwrap();
        let mut st = conn
            .prepare("SELECT user, owner_uid FROM app_password ORDER BY id")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let stored = Some(i64::from(uid));
    assert_eq!(
        owners,
        [
            (user.clone(), stored),
            (user.clone(), stored),
            (gone.clone(), None)
        ]
    );
    // Logins work as before the upgrade.
    assert_eq!(s.code("imap", &user, &passwords[0]), Code::SUCCESS);
    assert_eq!(s.code("imap", &user, &passwords[1]), Code::SUCCESS);
    assert_eq!(s.code("imap", &gone, &passwords[2]), Code::SUCCESS);

    // Once: a restart adopts nothing again.
    s.daemon.stop();
    s.daemon = Daemon::start_at(s.dir.path(), &s.db, &s.conf, &[]);
    assert_eq!(s.code("imap", &user, &passwords[0]), Code::SUCCESS);
    assert!(
        !s.daemon.log().contains("adopted"),
        "adopted again:\n{}",
        s.daemon.log()
    );

    // What was adopted holds: the name given to another uid, or a name that had no
    // account given one, no longer logs in.
    accounts.delete(&user);
    accounts.named(&user, Some(free_uid(&[uid])));
    accounts.named(&gone, Some(free_uid(&[uid])));
    assert_eq!(s.code("imap", &user, &passwords[0]), Code::AUTH_ERR);
    assert_eq!(s.code("imap", &gone, &passwords[2]), Code::AUTH_ERR);
    assert_eq!(audit_reasons(&s, &user, 1), ["owner_changed"]);
    assert_eq!(audit_reasons(&s, &gone, 1), ["owner_changed"]);
}
