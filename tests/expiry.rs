//! Expiry that people notice: `apppass list` flags active app passwords that expire
//! within `expiry_warning` (14 days unless configured), and `apppass expiring` lists
//! them, everyone's for an administrator's reminder job.

mod common;

use common::Sandbox;

fn text(s: &Sandbox, args: &[&str]) -> String {
    let out = s.apppass(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ids(rows: &[serde_json::Value]) -> Vec<i64> {
    let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn soon_expiring_passwords_are_flagged_and_listed() {
    let mut s = Sandbox::new();
    let three_days = s
        .add("alice", "imap", &["--expires", "3d", "--label", "Phone"])
        .id;
    let a_month = s.add("alice", "imap", &["--expires", "30d"]).id;
    let never = s.add("alice", "pop3", &[]).id;
    let tomorrow = s.add("bob", "imap", &["--expires", "1d"]).id;
    let revoked = s.add("bob", "imap", &["--expires", "2d"]).id;
    assert!(
        s.apppass(&["revoke", &revoked.to_string()])
            .status
            .success()
    );

    // The flag, by apppassd's expiry_warning (14 days by default).
    let flagged: Vec<i64> = s
        .list()
        .iter()
        .filter(|r| r["expires_soon"] == true)
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    let mut want = vec![three_days, tomorrow];
    want.sort_unstable();
    assert_eq!(ids_of(flagged), want);
    let table = text(&s, &["list", "--user", "alice"]);
    let line = |id: i64| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row {id} in\n{table}"))
            .to_string()
    };
    assert!(
        line(three_days).contains("active, expires in 3d"),
        "{table}"
    );
    assert!(!line(a_month).contains("expires in"), "{table}");
    assert!(!line(never).contains("expires in"), "{table}");

    // The administrator's view: everyone's, active ones only, within the window asked.
    assert_eq!(ids(&s.json_array(&["expiring", "--json"])), want);
    let mut month = vec![three_days, a_month, tomorrow];
    month.sort_unstable();
    assert_eq!(
        ids(&s.json_array(&["expiring", "--within", "40d", "--json"])),
        month
    );
    let alices = s.json_array(&["expiring", "--user", "alice", "--json"]);
    assert_eq!(ids(&alices), vec![three_days]);
    assert_eq!(alices[0]["label"], "Phone");
    assert_eq!(alices[0]["user"], "alice");
    let left = alices[0]["expires_in_s"].as_i64().unwrap();
    assert!((3 * 86_400 - 120..=3 * 86_400).contains(&left), "{left}");
    let shown = text(&s, &["expiring"]);
    assert!(shown.starts_with("ID"), "{shown}");
    assert!(shown.contains("bob") && shown.contains("1d"), "{shown}");
    assert_eq!(
        text(&s, &["expiring", "--within", "1h"]).trim(),
        "No app passwords expire within 1h."
    );
    let bad = s.apppass(&["expiring", "--within", "soon"]);
    assert_eq!(bad.status.code(), Some(2));

    // expiry_warning = never: nothing is flagged; `expiring` still answers what it is asked.
    s.reconfigure("expiry_warning = never\n");
    assert!(s.list().iter().all(|r| r["expires_soon"] == false));
    assert_eq!(ids(&s.json_array(&["expiring", "--json"])), want);
}

fn ids_of(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v
}
