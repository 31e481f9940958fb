//! What clients and files put in front of people is shown, never obeyed: a remote host
//! that carries a terminal escape (PAM_RHOST is whatever the client of sshd or Dovecot
//! made it), a label with a right-to-left override, a PAM file line with an escape, all
//! come out of the CLI escaped, while `--json` keeps them exact.

mod common;

use common::Sandbox;

/// Clears the screen, sets the window title, and rings.
const HOSTILE_RHOST: &str = "198.51.100.7\x1b[2J\x1b]0;pwned\x07\r\u{9b}1m";
/// "invoice" + RIGHT-TO-LEFT OVERRIDE: reads as something else on a terminal.
const HOSTILE_LABEL: &str = "Phone \u{202e}txt.exe";

fn text(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// No byte of `shown` makes a terminal do anything but print.
fn assert_inert(what: &str, shown: &str) {
    let bad: Vec<char> = shown
        .chars()
        .filter(|&c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
        .collect();
    assert!(bad.is_empty(), "{what} printed {bad:?}:\n{shown}");
}

#[test]
fn remote_hosts_and_labels_are_escaped_in_every_human_output() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &["--label", HOSTILE_LABEL]);
    let outcome = s.login("imap", "alice", pw.password.as_bytes(), Some(HOSTILE_RHOST));
    assert_eq!(outcome.code, pam_apppass::code::Code::SUCCESS);
    let wrong = format!("{}x", &pw.password[..pw.password.len() - 1]);
    s.login("imap", "alice", wrong.as_bytes(), Some(HOSTILE_RHOST));

    // The tables.
    let list = text(&s.apppass(&["list", "--all"]));
    assert_inert("list", &list);
    assert!(
        list.contains("198.51.100.7\\x1b[2J\\x1b]0;pwned\\x07\\x0d\\u{009b}1m"),
        "{list}"
    );
    assert!(list.contains("Phone \\u{202e}txt.exe"), "{list}");
    let log = text(&s.apppass(&["log", "--all"]));
    assert_inert("log", &log);
    assert!(log.contains("198.51.100.7\\x1b[2J"), "{log}");

    // What `add` prints back.
    let out = s.apppass(&[
        "add",
        "--user",
        "alice",
        "--service",
        "imap",
        "--label",
        HOSTILE_LABEL,
    ]);
    let added = text(&out);
    assert_inert("add", &added);
    assert!(added.contains("\"Phone \\u{202e}txt.exe\""), "{added}");

    // JSON stays exact: a program gets the bytes the client sent.
    let rows = s.list();
    let row = rows.iter().find(|r| r["id"] == pw.id).unwrap();
    assert_eq!(row["last_rhost"], HOSTILE_RHOST);
    assert_eq!(row["label"], HOSTILE_LABEL);
    let events: serde_json::Value =
        serde_json::from_str(&text(&s.apppass(&["log", "--all", "--json"]))).unwrap();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["rhost"] == HOSTILE_RHOST),
        "{events}"
    );
}

#[test]
fn doctor_shows_a_hostile_pam_line_escaped() {
    let s = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("candidate");
    std::fs::write(
        &file,
        format!(
            "auth required {} socket={} x=\x1b[2J\u{202e}\n",
            s.module.display(),
            s.socket.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::apppass_bin())
        .args(["doctor", "--pam-dir"])
        .arg(dir.path())
        .arg("--file")
        .arg(&file)
        .arg("imap")
        .output()
        .unwrap();
    let shown = String::from_utf8(out.stdout).unwrap();
    assert_inert("doctor", &shown);
    assert!(shown.contains("x=\\x1b[2J\\u{202e}"), "{shown}");
}
