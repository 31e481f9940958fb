//! Scopes a person may choose, through the real CLI run by throwaway unprivileged users
//! (setpriv), a real apppassd running as root, and logins through the real libpam
//! loading the built module: a password scoped to a group opens each of its services and
//! nothing else; people who are not admins choose only from `services` (the `mail` group
//! by default), never `*`, sshd or a service nobody listed, while root and admin_group
//! make any scope; new app passwords expire after 365 days and a user has at most 20 with
//! no configuration at all; a group configuration that would make a name both a group
//! and a service stops apppassd from starting, with the line and why.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use apppass_core::time;
use common::{Daemon, as_user, is_root, require, unique};
use pam_apppass::code::Code;

/// Throwaway users (and one group, for admin_group), removed again even when a test
/// fails.
struct Accounts {
    users: Vec<String>,
    group: String,
}

impl Accounts {
    fn create(n: usize) -> Accounts {
        let group = unique("apsadm");
        run_ok(Command::new("groupadd").arg(&group));
        let mut accounts = Accounts {
            users: Vec::new(),
            group,
        };
        for i in 0..n {
            let user = unique(&format!("aps{i}"));
            run_ok(Command::new("useradd").args(["-M", "-s", "/usr/sbin/nologin", &user]));
            accounts.users.push(user);
        }
        accounts
    }

    /// Makes user `i` a member of the admin group.
    fn make_admin(&self, i: usize) {
        run_ok(Command::new("usermod").args(["-aG", &self.group, &self.users[i]]));
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).output();
        }
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

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

/// apppassd as root on `config`, and a copy of the CLI any user can run (the build tree
/// may be in a private home).
struct World {
    dir: tempfile::TempDir,
    daemon: Daemon,
    apppass: PathBuf,
    confdir: PathBuf,
}

impl World {
    fn new(config: &str) -> World {
        let dir = tempfile::Builder::new()
            .prefix("apppass-scopes")
            .tempdir()
            .unwrap();
        set_mode(dir.path(), 0o755);
        let apppass = dir.path().join("apppass");
        std::fs::copy(common::apppass_bin(), &apppass).unwrap();
        set_mode(&apppass, 0o755);
        let conf = dir.path().join("apppass.conf");
        std::fs::write(&conf, config).unwrap();
        set_mode(&conf, 0o644);
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        set_mode(&run, 0o755);
        let daemon = Daemon::start_at(&run, &dir.path().join("store/apppass.db"), &conf, &[]);
        let confdir = dir.path().join("pam.d");
        std::fs::create_dir(&confdir).unwrap();
        for service in SERVICES {
            std::fs::write(
                confdir.join(service),
                format!(
                    "auth required {} socket={} conf={}\n",
                    common::built_module().display(),
                    daemon.socket.display(),
                    conf.display()
                ),
            )
            .unwrap();
        }
        World {
            dir,
            daemon,
            apppass,
            confdir,
        }
    }

    /// The CLI as `user` (None: root).
    fn apppass(&self, user: Option<&str>, args: &[&str]) -> Output {
        let mut c = as_user(user);
        c.arg(&self.apppass)
            .arg("--socket")
            .arg(&self.daemon.socket)
            .args(args);
        c.output().unwrap()
    }

    /// `apppass add --service SCOPE --json [ARGS]` as `by`: the JSON object, or the exit
    /// code and the error.
    fn add(
        &self,
        by: Option<&str>,
        scope: &str,
        args: &[&str],
    ) -> Result<serde_json::Value, (i32, String)> {
        let mut all = vec!["add", "--service", scope, "--json"];
        all.extend_from_slice(args);
        let out = self.apppass(by, &all);
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
    fn login(&self, service: &str, user: &str, password: &str) -> Code {
        common::login_in(
            &self.confdir,
            service,
            user,
            password.as_bytes(),
            Some("192.0.2.80"),
        )
        .code
    }

    /// The services of [`SERVICES`] that `password` opens.
    fn opens(&self, user: &str, password: &str) -> Vec<&'static str> {
        SERVICES
            .into_iter()
            .filter(|s| self.login(s, user, password) == Code::SUCCESS)
            .collect()
    }
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
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
    let acc = Accounts::create(1);
    let alice = acc.users[0].as_str();
    // An empty file: every setting has its built-in default.
    let w = World::new("");

    // mail, chosen by alice herself: IMAP, POP3, submission, SMTP and sieve, not sshd
    // or sudo.
    let mail = w.add(Some(alice), "mail", &["--label", "phone"]).unwrap();
    assert_eq!(mail["user"], alice);
    assert_eq!(mail["service"], "mail");
    assert_eq!(
        w.opens(alice, &password(&mail)),
        ["imap", "pop3", "submission", "smtp", "sieve"]
    );
    assert_eq!(w.login("sshd", alice, &password(&mail)), Code::AUTH_ERR);

    // It expires in 365 days, though nobody asked for an expiry.
    let created = time::parse_iso8601(mail["created"].as_str().unwrap()).unwrap();
    let expires = mail["expires"].as_str().expect("an expiry by default");
    assert_eq!(time::parse_iso8601(expires).unwrap() - created, 365 * 86400);

    // What she may not choose: every service, sshd, sudo, one service of the group, a
    // service nobody listed. Nothing is made.
    refused(
        w.add(Some(alice), "*", &[]),
        "* (every service) is not a scope you may choose; ask an admin",
    );
    refused(
        w.add(Some(alice), "sshd", &[]),
        "sshd is not a service you may choose; ask an admin. You may choose: mail (= imap pop3 submission smtp sieve)",
    );
    refused(w.add(Some(alice), "sudo", &[]), "sudo is not a service");
    refused(w.add(Some(alice), "imap", &[]), "imap is not a service");
    refused(w.add(Some(alice), "gitea", &[]), "gitea is not a service");
    let listed: serde_json::Value =
        serde_json::from_slice(&w.apppass(Some(alice), &["list", "--json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Root makes them for her, and each opens what its scope says.
    let all = w.add(None, "*", &["--user", alice]).unwrap();
    assert_eq!(w.opens(alice, &password(&all)), SERVICES);
    let ssh = w.add(None, "sshd", &["--user", alice]).unwrap();
    assert_eq!(w.opens(alice, &password(&ssh)), ["sshd"]);
    let imap = w.add(None, "imap", &["--user", alice]).unwrap();
    assert_eq!(w.opens(alice, &password(&imap)), ["imap"]);

    // At most 20 active app passwords per user, for root too; a revoked one makes room.
    for i in 4..20 {
        w.add(Some(alice), "mail", &["--label", &format!("device {i}")])
            .unwrap();
    }
    refused(
        w.add(Some(alice), "mail", &[]),
        "already has 20 active app passwords, the most allowed (max_passwords",
    );
    refused(w.add(None, "imap", &["--user", alice]), "max_passwords");
    let id = imap["id"].as_i64().unwrap().to_string();
    assert!(w.apppass(None, &["revoke", &id]).status.success());
    w.add(Some(alice), "mail", &[]).unwrap();
}

#[test]
fn admins_list_what_people_may_choose_and_groups_follow_the_configuration() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create(2);
    let (alice, admin) = (acc.users[0].as_str(), acc.users[1].as_str());
    acc.make_admin(1);
    let w = World::new(&format!(
        "group phone = imap, smtp\nservices = phone sshd\nadmin_group = {}\nmax_passwords = 0\ndefault_lifetime = never\n",
        acc.group
    ));

    // A group of the admins' own, and sshd because they listed it.
    let phone = w.add(Some(alice), "phone", &[]).unwrap();
    assert_eq!(w.opens(alice, &password(&phone)), ["imap", "smtp"]);
    let ssh = w.add(Some(alice), "sshd", &[]).unwrap();
    assert_eq!(w.opens(alice, &password(&ssh)), ["sshd"]);
    // The built-in mail group still exists, but nobody listed it.
    refused(
        w.add(Some(alice), "mail", &[]),
        "mail is not a service you may choose; ask an admin. You may choose: phone (= imap smtp), sshd",
    );
    refused(
        w.add(Some(alice), "*", &[]),
        "is not a scope you may choose",
    );
    // The administrators' own values: no expiry, no limit.
    assert!(phone["expires"].is_null(), "{phone}");

    // admin_group makes any scope, for itself and for others.
    let all = w.add(Some(admin), "*", &[]).unwrap();
    assert_eq!(w.opens(admin, &password(&all)), SERVICES);
    let pop3 = w.add(Some(admin), "pop3", &["--user", alice]).unwrap();
    assert_eq!(w.opens(alice, &password(&pop3)), ["pop3"]);
    let mail = w.add(Some(admin), "mail", &["--user", alice]).unwrap();
    assert_eq!(
        w.opens(alice, &password(&mail)),
        ["imap", "pop3", "submission", "smtp", "sieve"]
    );
}

#[test]
fn changing_a_group_changes_what_its_passwords_open() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create(1);
    let alice = acc.users[0].as_str();
    let mut w = World::new("group mail = imap\n");
    let mail = w.add(Some(alice), "mail", &[]).unwrap();
    assert_eq!(w.opens(alice, &password(&mail)), ["imap"]);
    let conf = w.daemon.conf.clone();
    std::fs::write(&conf, "group mail = imap pop3 sshd\n").unwrap();
    w.daemon.stop();
    w.daemon = Daemon::start_at(
        &w.dir.path().join("run"),
        &w.dir.path().join("store/apppass.db"),
        &conf,
        &[],
    );
    assert_eq!(w.opens(alice, &password(&mail)), ["imap", "pop3", "sshd"]);
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
