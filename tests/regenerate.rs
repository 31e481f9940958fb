//! `apppass regenerate ID`, through the real CLI, a real apppassd on SQLite and the built
//! module under the real libpam: the new secret works with the old one's settings, the
//! old one is refused at once with reason=revoked and keeps its history, and a device
//! that keeps trying the old one is neither throttled nor banned by the shipped fail2ban
//! filter. Who may regenerate whose is in tests/authz.rs; both stores' side in
//! tests/stores.rs.

mod common;
mod e2e;

use common::Sandbox;
use pam_apppass::code::Code;

const DAY: i64 = 86_400;

fn login(s: &Sandbox, password: &str, rhost: &str) -> Code {
    s.login("imap", "alice", password.as_bytes(), Some(rhost))
        .code
}

/// `apppass regenerate ID --json`, which must succeed.
fn regenerate(s: &Sandbox, id: i64) -> serde_json::Value {
    let out = s.apppass(&["regenerate", &id.to_string(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn listed(s: &Sandbox, id: i64) -> serde_json::Value {
    s.list()
        .into_iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no id {id} listed"))
}

/// Seconds since the epoch of an ISO 8601 time as the CLI prints it.
fn seconds(v: &serde_json::Value) -> i64 {
    apppass_core::time::parse_iso8601(v.as_str().unwrap()).unwrap()
}

/// How long an app password lives, as `list --json` shows it (`None`: for ever).
fn lifetime(row: &serde_json::Value) -> Option<i64> {
    (!row["expires"].is_null()).then(|| seconds(&row["expires"]) - seconds(&row["created"]))
}

#[test]
fn a_new_secret_with_the_old_settings_and_the_old_one_refused() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let old = s.add(
        "alice",
        "imap",
        &[
            "--label",
            "Phone",
            "--from",
            "192.0.2.0/24",
            "--expires",
            "30d",
        ],
    );
    assert_eq!(login(&s, &old.password, "192.0.2.1"), Code::SUCCESS);

    let new = regenerate(&s, old.id);
    let new_id = new["id"].as_i64().unwrap();
    let password = new["password"].as_str().unwrap();
    assert_ne!(new_id, old.id);
    assert_eq!(new["replaces"], old.id);
    assert_eq!(
        (&new["user"], &new["service"], &new["label"]),
        (&"alice".into(), &"imap".into(), &"Phone".into())
    );
    assert_eq!(new["networks"], serde_json::json!(["192.0.2.0/24"]));

    // The old one is refused at once, as revoked; the new one works, from its networks.
    assert_eq!(login(&s, &old.password, "192.0.2.1"), Code::AUTH_ERR);
    assert_eq!(login(&s, password, "192.0.2.1"), Code::SUCCESS);
    assert_eq!(login(&s, password, "198.51.100.1"), Code::AUTH_ERR);
    let revoked = s.daemon.log_lines(
        &[
            "authentication failure",
            "reason=revoked",
            &format!("id={}", old.id),
        ],
        1,
    );
    assert_eq!(revoked.len(), 1, "{}", s.daemon.log());
    let made = s.daemon.log_lines(
        &[&format!(
            "app password regenerated: id={new_id} replaces={}",
            old.id
        )],
        1,
    );
    assert_eq!(made.len(), 1, "{}", s.daemon.log());

    // The old row stays, with its history, and names its successor.
    let was = listed(&s, old.id);
    let is = listed(&s, new_id);
    assert_eq!(was["status"], "revoked");
    assert_eq!(was["replaced_by"], new_id);
    assert_eq!(
        (&was["use_count"], &was["last_rhost"]),
        (&1.into(), &"192.0.2.1".into())
    );
    assert_eq!(is["status"], "active");
    assert!(is["replaced_by"].is_null(), "{is}");
    for key in ["user", "service", "label", "networks"] {
        assert_eq!(was[key], is[key], "{key}");
    }
    // As long a life as the old one had, from now.
    assert_eq!(lifetime(&is), Some(30 * DAY));
    assert!(seconds(&is["created"]) >= seconds(&was["created"]));

    // The audit log has both: the old one's use, its revocation and the refused retry,
    // and the new one's use and its refusal from outside its networks.
    let events = s.json_array(&["log", "--user", "alice", "--json"]);
    let of = |id: i64| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = events
            .iter()
            .filter(|e| e["password_id"] == id)
            .map(|e| {
                (
                    e["outcome"].as_str().unwrap().to_string(),
                    e["reason"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect();
        v.reverse();
        v
    };
    let pair = |o: &str, r: &str| (o.to_string(), r.to_string());
    assert_eq!(
        of(old.id),
        [
            pair("success", "-"),
            pair("revoked", "regenerated"),
            pair("failure", "revoked")
        ]
    );
    assert_eq!(
        of(new_id),
        [pair("success", "-"), pair("failure", "network")]
    );

    // Once only: the replaced one says which took its place.
    let again = s.apppass(&["regenerate", &old.id.to_string()]);
    assert_eq!(again.status.code(), Some(2));
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains(&format!("by {new_id}")), "{why}");
    let none = s.apppass(&["regenerate", "999"]);
    assert_eq!(none.status.code(), Some(3));

    // In text: the password, what it replaces, and the table's link.
    let out = s.apppass(&["regenerate", &new_id.to_string()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("replacing {new_id}, which no longer works")),
        "{text}"
    );
    let table =
        String::from_utf8_lossy(&s.apppass(&["list", "--user", "alice"]).stdout).into_owned();
    assert!(
        table.contains(&format!("revoked, replaced by {new_id}")),
        "{table}"
    );
}

/// The daemon's log lines as rsyslog writes them to auth.log (the header is the only
/// part apppassd does not write itself), for fail2ban-regex.
fn as_syslog(s: &Sandbox, parts: &[&str], n: usize) -> Vec<String> {
    let pid = s.daemon.child.id();
    s.daemon
        .log_lines(parts, n)
        .iter()
        .map(|l| {
            let message = l.splitn(3, ": ").nth(2).unwrap_or(l);
            format!("2026-12-04T10:00:00.000000+00:00 host apppassd[{pid}]: {message}")
        })
        .collect()
}

#[test]
fn retries_of_the_old_password_neither_throttle_nor_get_banned() {
    let present = e2e::find_program("fail2ban-regex").is_some()
        && std::path::Path::new("/etc/fail2ban/filter.d/common.conf").exists();
    if !common::require(present, "fail2ban (fail2ban-regex, /etc/fail2ban)") {
        return;
    }
    let s = Sandbox::with_config("throttle_failures = 2\n");
    s.simple_service("imap", "");
    let old = s.add("alice", "imap", &[]);
    let new = regenerate(&s, old.id);
    let password = new["password"].as_str().unwrap();

    // The phone left behind tries again and again from the owner's address.
    let home = "198.51.100.7";
    for _ in 0..6 {
        assert_eq!(login(&s, &old.password, home), Code::AUTH_ERR);
    }
    assert_eq!(login(&s, password, home), Code::SUCCESS);
    // A guess from elsewhere still counts, as before.
    let guesser = "203.0.113.9";
    let wrong = support_wrong(password);
    for _ in 0..3 {
        assert_eq!(login(&s, &wrong, guesser), Code::AUTH_ERR);
    }
    assert_eq!(login(&s, password, guesser), Code::AUTH_ERR, "throttled");
    let reasons: Vec<String> = s
        .json_array(&["log", "--user", "alice", "--json"])
        .iter()
        .rev()
        .map(|e| e["reason"].as_str().unwrap_or("-").to_string())
        .collect();
    let mut want = vec!["regenerated"];
    want.extend(["revoked"; 6]);
    // One event for a lockout, however many attempts it refuses.
    want.extend(["-", "wrong_password", "wrong_password", "throttled"]);
    assert_eq!(reasons, want);

    let lines = as_syslog(&s, &["authentication failure"], 10);
    assert_eq!(lines.len(), 10, "{lines:#?}");
    for mode in ["strict", "migration"] {
        let banned = e2e::fail2ban_ips(&lines, &format!("apppass[mode={mode}]"));
        assert!(!banned.is_empty(), "{mode}: {lines:#?}");
        assert!(banned.iter().all(|ip| ip == guesser), "{mode}: {banned:?}");
    }
}

/// `password` with one character changed: shaped like an app password, but wrong.
fn support_wrong(password: &str) -> String {
    let mut chars: Vec<char> = password.chars().collect();
    let last = chars.len() - 1;
    chars[last] = if chars[last] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

#[test]
fn limits_and_lifetimes_as_for_add() {
    let mut s = Sandbox::with_config("max_passwords = 1\ndefault_lifetime = never\n");
    s.simple_service("imap", "");
    let forever = s.add("alice", "imap", &[]);
    // At the limit: add is refused, regenerate is not (the old one goes as it comes).
    let refused = s.apppass(&["add", "--user", "alice", "--service", "imap"]);
    assert_eq!(refused.status.code(), Some(4));
    let forever2 = regenerate(&s, forever.id);
    assert!(forever2["expires"].is_null(), "{forever2}");
    assert_eq!(s.list().len(), 2);

    // A lifetime longer than the policy allows now is cut to it; none becomes the most.
    s.reconfigure("max_passwords = 2\ndefault_lifetime = never\n");
    let long = s.add("alice", "imap", &["--expires", "90d"]);
    s.reconfigure("max_passwords = 2\ndefault_lifetime = never\nmax_lifetime = 10d\n");
    let long2 = regenerate(&s, long.id);
    let forever3 = regenerate(&s, forever2["id"].as_i64().unwrap());
    for v in [&long2, &forever3] {
        assert_eq!(
            lifetime(&listed(&s, v["id"].as_i64().unwrap())),
            Some(10 * DAY)
        );
    }
    assert_eq!(
        login(&s, long2["password"].as_str().unwrap(), "192.0.2.1"),
        Code::SUCCESS
    );
}
