//! Who may ask apppassd what, decided from the peer's kernel credentials alone: run by
//! throwaway unprivileged users (setpriv), the real CLI and the real libpam manage and
//! check their own app passwords and nobody else's, whatever they send; the admin group
//! manages everyone's but cannot back up the store; a user of auth_trusted checks any
//! user's password, as root does.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::people::{Accounts, World, password_of, run_ok};
use common::{as_user, is_root, require};

/// `apppass add --service imap --json` as `user`; the id and password, or the exit code.
fn add(w: &World, user: Option<&str>, args: &[&str]) -> Result<(i64, String), i32> {
    let mut all = vec!["add", "--service", "imap", "--json"];
    all.extend_from_slice(args);
    let out = w.apppass(user, &all);
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok((
        v["id"].as_i64().unwrap(),
        v["password"].as_str().unwrap().to_string(),
    ))
}

/// One login to imap through the real libpam, in a process of `user`.
fn login(w: &World, user: Option<&str>, login_user: &str, password: &str) -> String {
    w.login(user, "imap", login_user, password)
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn ids(out: &Output) -> Vec<(i64, String)> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["user"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn prerequisites() -> bool {
    require(is_root(), "root (to create throwaway users)")
        && require(support_program("setpriv"), "setpriv (util-linux)")
        && require(
            common::target_dir().join("examples/pamlogin").exists(),
            "target/*/examples/pamlogin (cargo build --workspace --all-targets)",
        )
}

fn support_program(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok()
}

#[test]
fn people_manage_their_own_app_passwords_and_nobody_elses() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create("apz", 4, 2);
    let (alice, bob, admin) = (&acc.users[0], &acc.users[1], &acc.users[2]);
    acc.join(&acc.users[2], &acc.groups[0]);
    // imap listed: people may make their own app passwords for it (the default list
    // holds only the mail group).
    let w = World::new(
        &format!("admin_group = {}\nservices = imap\n", acc.groups[0]),
        &["imap"],
    );
    let a = Some(alice.as_str());

    // Their own: add, list, log, revoke.
    let (alice_id, _) = add(&w, a, &["--label", "mine"]).unwrap();
    let (bob_id, bob_pw) = add(&w, None, &["--user", bob]).unwrap();
    let mine = w.apppass(a, &["list", "--json"]);
    assert_eq!(ids(&mine), [(alice_id, alice.clone())]);
    assert!(w.apppass(a, &["log", "--json"]).status.success());
    let any = |user, id: i64| w.apppass(user, &["networks", &id.to_string(), "--any"]);
    assert!(any(a, alice_id).status.success());

    // Anyone else's: refused (4) or, for an id, as if it did not exist (3).
    assert_eq!(add(&w, a, &["--user", bob]), Err(4));
    assert_eq!(code(&w.apppass(a, &["list", "--all"])), 4);
    assert_eq!(code(&w.apppass(a, &["list", "--user", bob])), 4);
    assert_eq!(code(&w.apppass(a, &["log", "--all"])), 4);
    assert_eq!(code(&w.apppass(a, &["unlock", "--user", bob])), 4);
    assert_eq!(code(&w.apppass(a, &["revoke", "--all", "--user", bob])), 4);
    assert_eq!(code(&w.apppass(a, &["revoke", &bob_id.to_string()])), 3);
    assert_eq!(code(&any(a, bob_id)), 3);
    assert_eq!(code(&w.apppass(a, &["backup", "/tmp/never"])), 4);
    // bob's password is untouched.
    let all = ids(&w.apppass(None, &["list", "--all", "--json"]));
    assert!(all.contains(&(bob_id, bob.clone())), "{all:?}");

    // The admin group: everyone's, but no backup (it holds every hash).
    let ad = Some(admin.as_str());
    assert_eq!(ids(&w.apppass(ad, &["list", "--all", "--json"])).len(), 2);
    assert!(add(&w, ad, &["--user", alice]).is_ok());
    assert!(any(ad, bob_id).status.success());
    let backup = w.dir.path().join("admin-backup.db");
    assert_eq!(
        code(&w.apppass(ad, &["backup", backup.to_str().unwrap()])),
        4
    );
    assert!(
        w.apppass(ad, &["revoke", &bob_id.to_string()])
            .status
            .success()
    );
    assert_eq!(login(&w, None, bob, &bob_pw), "PAM_AUTH_ERR");

    // regenerate: as revoke, the owner's or an admin's (each proving who they are).
    let regenerate = |user: &str, id: i64| {
        w.apppass_with(
            Some(user),
            &["regenerate", &id.to_string(), "--json", "--password-stdin"],
            &format!("{}\n", password_of(user)),
        )
    };
    let (bob_id, bob_pw) = add(&w, None, &["--user", bob]).unwrap();
    assert_eq!(code(&regenerate(alice, bob_id)), 3);
    assert_eq!(login(&w, None, bob, &bob_pw), "PAM_SUCCESS");
    assert!(regenerate(alice, alice_id).status.success());
    let out = regenerate(admin, bob_id);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["user"], bob.as_str());
    assert_eq!(login(&w, None, bob, &bob_pw), "PAM_AUTH_ERR");
    assert_eq!(
        login(&w, None, bob, v["password"].as_str().unwrap()),
        "PAM_SUCCESS"
    );

    // status says who apppassd takes each caller to be.
    let status = |user: Option<&str>| -> serde_json::Value {
        serde_json::from_slice(&w.apppass(user, &["status", "--json"]).stdout).unwrap()
    };
    assert_eq!(status(a)["you"]["user"], alice.as_str());
    assert_eq!(status(a)["you"]["admin"], false);
    assert_eq!(status(ad)["you"]["admin"], true);
    assert_eq!(status(None)["you"]["authenticates_anyone"], true);
    assert_eq!(status(a)["you"]["authenticates_anyone"], false);
}

#[test]
fn a_process_checks_only_its_own_users_password_unless_trusted() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create("apz", 4, 2);
    let (alice, bob, trusted, in_group) =
        (&acc.users[0], &acc.users[1], &acc.users[2], &acc.users[3]);
    acc.join(&acc.users[3], &acc.groups[1]);
    let w = World::new(
        &format!("auth_trusted = {trusted} %{}\n", acc.groups[1]),
        &["imap"],
    );
    let (_, alice_pw) = add(&w, None, &["--user", alice]).unwrap();
    let (_, bob_pw) = add(&w, None, &["--user", bob]).unwrap();
    // Root checks anyone.
    assert_eq!(login(&w, None, alice, &alice_pw), "PAM_SUCCESS");
    // A screen locker of alice checks alice, and nobody else, whatever the password.
    assert_eq!(login(&w, Some(alice), alice, &alice_pw), "PAM_SUCCESS");
    assert_eq!(login(&w, Some(alice), bob, &bob_pw), "PAM_AUTH_ERR");
    assert_eq!(login(&w, Some(bob), alice, &alice_pw), "PAM_AUTH_ERR");
    // A trusted service account, by name or by group, checks anyone.
    assert_eq!(login(&w, Some(trusted), bob, &bob_pw), "PAM_SUCCESS");
    assert_eq!(login(&w, Some(in_group), alice, &alice_pw), "PAM_SUCCESS");
    // Refusals are counted, and a refused check is no login attempt: bob's last use is
    // the trusted login's only.
    let s = w.daemon.status().unwrap();
    let refused = s
        .counts
        .iter()
        .find(|(k, _)| k == "login_refused_peer")
        .unwrap()
        .1;
    assert_eq!(refused, 2);
    let list: serde_json::Value =
        serde_json::from_slice(&w.apppass(None, &["list", "--user", bob, "--json"]).stdout)
            .unwrap();
    assert_eq!(list[0]["use_count"], 1);
}

/// One request from a process of `user` straight over the socket, with no proof before
/// it (python3 speaks the frame: a 4-byte length, then the body); apppassd's answer.
fn raw_call_as(
    user: &str,
    socket: &Path,
    request: &apppass_proto::Request,
) -> apppass_proto::Response {
    let hex: String = request
        .encode()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let script = "import socket, struct, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1])\n\
                  body = bytes.fromhex(sys.argv[2])\n\
                  s.sendall(struct.pack('>I', len(body)) + body)\n\
                  def read(n):\n    b = b''\n    while len(b) < n:\n        c = s.recv(n - len(b))\n        if not c: raise SystemExit('closed')\n        b += c\n    return b\n\
                  n, = struct.unpack('>I', read(4))\n\
                  print(read(n).hex())\n";
    let out = run_ok(
        as_user(Some(user))
            .args(["/usr/bin/python3", "-c", script])
            .arg(socket)
            .arg(hex),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let text = text.trim();
    let body: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect();
    apppass_proto::Response::decode(&body).unwrap()
}

#[test]
fn regenerate_needs_the_proof_add_needs() {
    if !prerequisites() || !require(Path::new("/usr/bin/python3").exists(), "/usr/bin/python3") {
        return;
    }
    let acc = Accounts::create("apq", 1, 0);
    let alice = acc.users[0].as_str();
    let w = World::new("services = imap\n", &["imap"]);
    let (id, old) = add(&w, None, &["--user", alice]).unwrap();
    let proving = |password: &str| {
        w.apppass_with(
            Some(alice),
            &["regenerate", &id.to_string(), "--json", "--password-stdin"],
            &format!("{password}\n"),
        )
    };

    // Without a proof: refused by apppassd itself, and nothing changed.
    let answer = raw_call_as(
        alice,
        &w.daemon.socket,
        &apppass_proto::Request::Regenerate { id },
    );
    assert!(
        matches!(
            answer,
            apppass_proto::Response::Error {
                kind: apppass_proto::ErrorKind::Reauthenticate,
                ..
            }
        ),
        "{answer:?}"
    );
    // A wrong account password proves nothing either.
    let out = proving("not-the-password");
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(login(&w, None, alice, &old), "PAM_SUCCESS");

    // The right one: a new password in place of the old.
    let out = proving(&password_of(alice));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["replaces"], id);
    assert_eq!(
        login(&w, None, alice, v["password"].as_str().unwrap()),
        "PAM_SUCCESS"
    );
    assert_eq!(login(&w, None, alice, &old), "PAM_AUTH_ERR");
}
