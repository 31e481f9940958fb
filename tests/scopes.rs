//! Scopes a person may choose, through the real CLI run by throwaway unprivileged users
//! (setpriv), a real apppassd running as root, and logins through the real libpam
//! loading the built module: a password scoped to a group opens each of its services and
//! nothing else; people who are not admins choose only from `services` (the `mail` group
//! by default), never `*`, sshd or a service nobody listed, while root makes any scope
//! and admin_group any but `*`; new app passwords expire after 365 days and a user has at most 20 with
//! no configuration at all; a group configuration that would make a name both a group
//! and a service stops apppassd from starting, with the line and why.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use apppass_core::time;
use common::people::{Accounts, World};
use common::{Daemon, is_root, require};
use pam_apppass::code::Code;

/// Services whose PAM files ask the test's apppassd (each file's name is the scope).
const SERVICES: [&str; 7] = [
    "imap",
    "pop3",
    "submission",
    "smtp",
    "sieve",
    "sshd",
    "sudo",
];

/// `apppass add --service SCOPE --json [ARGS]` as `by`: the JSON object, or the exit
/// code and the error.
fn add(
    w: &World,
    by: Option<&str>,
    scope: &str,
    args: &[&str],
) -> Result<serde_json::Value, (i32, String)> {
    let mut all = vec!["add", "--service", scope, "--json"];
    all.extend_from_slice(args);
    let out = w.apppass(by, &all);
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// One login through the real libpam, as root (a mail or ssh server), to `service`.
fn login(w: &World, service: &str, user: &str, password: &str) -> Code {
    common::login_in(
        &w.confdir,
        service,
        user,
        password.as_bytes(),
        Some("192.0.2.80"),
    )
    .code
}

/// The services of [`SERVICES`] that `password` opens.
fn opens(w: &World, user: &str, password: &str) -> Vec<&'static str> {
    SERVICES
        .into_iter()
        .filter(|s| login(w, s, user, password) == Code::SUCCESS)
        .collect()
}

fn password(added: &serde_json::Value) -> String {
    added["password"].as_str().unwrap().to_string()
}

/// Asserts a refusal with exit status 4 whose message says `wanted`.
fn refused(result: Result<serde_json::Value, (i32, String)>, wanted: &str) {
    match result {
        Ok(v) => panic!("made, should have been refused: {v}"),
        Err((code, message)) => {
            assert_eq!(code, 4, "{message}");
            assert!(message.contains(wanted), "no {wanted:?} in {message:?}");
        }
    }
}

fn prerequisites() -> bool {
    require(is_root(), "root (throwaway users, apppassd as root)")
        && require(
            Command::new("setpriv").arg("--version").output().is_ok(),
            "setpriv (util-linux)",
        )
}

#[test]
fn with_no_configuration_people_choose_mail_and_admins_the_rest() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create("aps", 1, 0);
    let alice = acc.users[0].as_str();
    // An empty file: every setting has its built-in default.
    let w = World::new("", &SERVICES);

    // mail, chosen by alice herself: IMAP, POP3, submission, SMTP and sieve, not sshd
    // or sudo.
    let mail = add(&w, Some(alice), "mail", &["--label", "phone"]).unwrap();
    assert_eq!(mail["user"], alice);
    assert_eq!(mail["service"], "mail");
    assert_eq!(
        opens(&w, alice, &password(&mail)),
        ["imap", "pop3", "submission", "smtp", "sieve"]
    );
    assert_eq!(login(&w, "sshd", alice, &password(&mail)), Code::AUTH_ERR);

    // It expires in 365 days, though nobody asked for an expiry.
    let created = time::parse_iso8601(mail["created"].as_str().unwrap()).unwrap();
    let expires = mail["expires"].as_str().expect("an expiry by default");
    assert_eq!(time::parse_iso8601(expires).unwrap() - created, 365 * 86400);

    // What she may not choose: every service, sshd, sudo, one service of the group, a
    // service nobody listed. Nothing is made.
    refused(
        add(&w, Some(alice), "*", &[]),
        "* (every service) is not a scope you may choose; ask an admin",
    );
    refused(
        add(&w, Some(alice), "sshd", &[]),
        "sshd is not a service you may choose; ask an admin. You may choose: mail (= imap pop3 submission smtp sieve)",
    );
    refused(add(&w, Some(alice), "sudo", &[]), "sudo is not a service");
    refused(add(&w, Some(alice), "imap", &[]), "imap is not a service");
    refused(add(&w, Some(alice), "gitea", &[]), "gitea is not a service");
    let listed: serde_json::Value =
        serde_json::from_slice(&w.apppass(Some(alice), &["list", "--json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Root makes them for her, and each opens what its scope says.
    let all = add(&w, None, "*", &["--user", alice]).unwrap();
    assert_eq!(opens(&w, alice, &password(&all)), SERVICES);
    let ssh = add(&w, None, "sshd", &["--user", alice]).unwrap();
    assert_eq!(opens(&w, alice, &password(&ssh)), ["sshd"]);
    let imap = add(&w, None, "imap", &["--user", alice]).unwrap();
    assert_eq!(opens(&w, alice, &password(&imap)), ["imap"]);

    // At most 20 active app passwords per user, for root too; a revoked one makes room.
    for i in 4..20 {
        add(
            &w,
            Some(alice),
            "mail",
            &["--label", &format!("device {i}")],
        )
        .unwrap();
    }
    refused(
        add(&w, Some(alice), "mail", &[]),
        "already has 20 active app passwords, the most allowed (max_passwords",
    );
    refused(add(&w, None, "imap", &["--user", alice]), "max_passwords");
    let id = imap["id"].as_i64().unwrap().to_string();
    assert!(w.apppass(None, &["revoke", &id]).status.success());
    add(&w, Some(alice), "mail", &[]).unwrap();
}

#[test]
fn admins_list_what_people_may_choose_and_groups_follow_the_configuration() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create("aps", 2, 1);
    let (alice, admin) = (acc.users[0].as_str(), acc.users[1].as_str());
    acc.join(admin, &acc.groups[0]);
    let w = World::new(
        &format!(
            "group phone = imap, smtp\nservices = phone sshd\nadmin_group = {}\nmax_passwords = 0\ndefault_lifetime = never\n",
            acc.groups[0]
        ),
        &SERVICES,
    );

    // A group of the admins' own, and sshd because they listed it.
    let phone = add(&w, Some(alice), "phone", &[]).unwrap();
    assert_eq!(opens(&w, alice, &password(&phone)), ["imap", "smtp"]);
    let ssh = add(&w, Some(alice), "sshd", &[]).unwrap();
    assert_eq!(opens(&w, alice, &password(&ssh)), ["sshd"]);
    // The built-in mail group still exists, but nobody listed it.
    refused(
        add(&w, Some(alice), "mail", &[]),
        "mail is not a service you may choose; ask an admin. You may choose: phone (= imap smtp), sshd",
    );
    refused(
        add(&w, Some(alice), "*", &[]),
        "is not a scope you may choose",
    );
    // The administrators' own values: no expiry, no limit.
    assert!(phone["expires"].is_null(), "{phone}");

    // admin_group makes any scope but *, for itself and for others.
    refused(
        add(&w, Some(admin), "*", &[]),
        "* (every service) is root's to give",
    );
    let ssh = add(&w, Some(admin), "sshd", &[]).unwrap();
    assert_eq!(opens(&w, admin, &password(&ssh)), ["sshd"]);
    let pop3 = add(&w, Some(admin), "pop3", &["--user", alice]).unwrap();
    assert_eq!(opens(&w, alice, &password(&pop3)), ["pop3"]);
    let mail = add(&w, Some(admin), "mail", &["--user", alice]).unwrap();
    assert_eq!(
        opens(&w, alice, &password(&mail)),
        ["imap", "pop3", "submission", "smtp", "sieve"]
    );
}

#[test]
fn changing_a_group_changes_what_its_passwords_open() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create("aps", 1, 0);
    let alice = acc.users[0].as_str();
    let mut w = World::new("group mail = imap\n", &SERVICES);
    let mail = add(&w, Some(alice), "mail", &[]).unwrap();
    assert_eq!(opens(&w, alice, &password(&mail)), ["imap"]);
    let conf = w.daemon.conf.clone();
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("group mail = imap\n", "group mail = imap pop3 sshd\n"),
    )
    .unwrap();
    w.daemon.stop();
    w.daemon = Daemon::start_at(
        &w.dir.path().join("run"),
        &w.dir.path().join("store/apppass.db"),
        &conf,
        &[],
    );
    assert_eq!(opens(&w, alice, &password(&mail)), ["imap", "pop3", "sshd"]);
}

/// apppassd on `config`: its exit status and what it said, within 20 s.
fn start(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("apppass.conf");
    std::fs::write(&conf, config).unwrap();
    let mut child = Command::new(common::workspace_bin("apppassd"))
        .arg("--db")
        .arg(dir.path().join("db/apppass.db"))
        .arg("--socket")
        .arg(dir.path().join("apppassd.sock"))
        .arg("--config")
        .arg(&conf)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            common::signal(child.id(), "TERM");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_name_that_is_both_a_group_and_a_service_stops_apppassd_at_start() {
    // Runs as any user: apppassd refuses the file before it listens or opens a store.
    let cases = [
        (
            "group phone = imap smtp\ngroup tablet = phone pop3\n",
            "apppass.conf:2: group tablet holds phone, which is a group (defined on line 1): groups hold services only",
        ),
        (
            "# mail is built in\ngroup phone = mail sshd\n",
            "apppass.conf:2: group phone holds mail, which is a group (built in; redefine it with group mail = ...)",
        ),
        (
            "group mail = imap mail\n",
            "apppass.conf:1: group mail holds mail, which is a group",
        ),
        (
            "group all = imap *\n",
            "apppass.conf:1: group all cannot hold *",
        ),
        (
            "group * = imap\n",
            "apppass.conf:1: * cannot be a group's name",
        ),
        (
            "group phone = imap\n\ngroup phone = smtp\n",
            "apppass.conf:3: group phone is already defined on line 1",
        ),
        (
            "group phone =\n",
            "apppass.conf:1: group phone holds no service",
        ),
        (
            "services = mail *\n",
            "apppass.conf:1: services cannot hold *",
        ),
    ];
    for (config, wanted) in cases {
        let (code, stderr) = start(config);
        assert_eq!(code, Some(1), "{config:?}: {stderr}");
        assert!(
            stderr.starts_with("apppassd: ") && stderr.contains(wanted),
            "{config:?}: no {wanted:?} in {stderr:?}"
        );
    }
}
