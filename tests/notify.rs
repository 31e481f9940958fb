//! Owner notices by mail, through a real mail system: apppassd runs Postfix's own
//! sendmail with a private configuration directory (`sendmail = /usr/sbin/sendmail -C
//! DIR`), a private Postfix instance on that directory (no network listener) delivers
//! with its virtual agent into one mailbox file, and the test reads the mails there. A
//! mail for an app password made, one regenerated, one revoked by an admin, and all of a
//! user's revoked by an admin or by a change of their account password; none for one
//! revoked by its owner; never a password. A mail system that refuses, or never
//! answers, costs requests and logins nothing, and a stopping apppassd leaves no sendmail
//! behind.

mod common;
mod e2e;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, as_user, require};
use e2e::TestUser;

const SENDMAIL: &str = "/usr/sbin/sendmail";
/// The private instance's domain: bare names are qualified with it and delivered here.
const DOMAIN: &str = "apppass-notify.invalid";

/// A private Postfix: pickup, cleanup, qmgr and the virtual agent, every recipient of
/// its domain into one mbox file. Stopped when dropped.
struct MailSystem {
    dir: tempfile::TempDir,
    config: PathBuf,
    master: Option<u32>,
    /// Its SMTP server, on 127.0.0.1.
    smtp_port: u16,
}

impl MailSystem {
    fn start() -> MailSystem {
        let dir = tempfile::Builder::new()
            .prefix("apppass-mail")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path();
        for sub in ["config", "queue", "data", "mail"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        // Postfix's data directory is its mail owner's; the virtual agent writes the
        // mailbox as nobody.
        run(Command::new("chown").arg("postfix:").arg(d.join("data")));
        run(Command::new("chown")
            .arg("nobody:nogroup")
            .arg(d.join("mail")));
        let config = d.join("config");
        std::fs::write(
            config.join("main.cf"),
            format!(
                "# A private Postfix for apppass's notice tests: nothing shared with a system
# instance, no network listener, every mail of its domain into one mailbox.
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = {DOMAIN}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = static:box
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
",
                d = d.display()
            ),
        )
        .unwrap();
        let smtp_port = common::free_port();
        std::fs::write(
            config.join("master.cf"),
            format!(
                "# service type private unpriv chroot wakeup maxproc command
127.0.0.1:{smtp_port} inet n - n - - smtpd
pickup    unix  n  -  n  60  1  pickup
cleanup   unix  n  -  n  -   0  cleanup
qmgr      unix  n  -  n  300 1  qmgr
rewrite   unix  -  -  n  -   -  trivial-rewrite
bounce    unix  -  -  n  -   0  bounce
defer     unix  -  -  n  -   0  bounce
trace     unix  -  -  n  -   0  bounce
error     unix  -  -  n  -   -  error
retry     unix  -  -  n  -   -  error
virtual   unix  -  n  n  -   -  virtual
postlog   unix-dgram n - n - 1  postlogd
"
            ),
        )
        .unwrap();
        run(Command::new(e2e::POSTFIX)
            .arg("-c")
            .arg(&config)
            .arg("start"));
        let mut mail = MailSystem {
            dir,
            config,
            master: None,
            smtp_port,
        };
        // Ready once the master runs and the maildrop sendmail posts into exists.
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid_file = mail.dir.path().join("queue/pid/master.pid");
        loop {
            mail.master = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            if mail.master.is_some() && mail.dir.path().join("queue/maildrop").is_dir() {
                return mail;
            }
            assert!(
                Instant::now() < deadline,
                "private Postfix did not start: {}",
                mail.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postfix.log")).unwrap_or_default()
    }

    /// The mails delivered so far, oldest first (the mbox split at its "From " lines).
    fn mails(&self) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string(self.dir.path().join("mail/box")) else {
            return Vec::new();
        };
        let mut mails: Vec<String> = Vec::new();
        for line in text.lines() {
            if line.starts_with("From ") || mails.is_empty() {
                mails.push(String::new());
            }
            let last = mails.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
        mails
    }

    /// Waits (up to 30 s) for `n` mails in all.
    fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mails = self.mails();
            if mails.len() >= n || Instant::now() > deadline {
                return mails;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MailSystem {
    fn drop(&mut self) {
        let _ = Command::new(e2e::POSTFIX)
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .output();
        if let Some(pid) = self.master {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn run(c: &mut Command) -> std::process::Output {
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn prerequisites() -> bool {
    require(common::is_root(), "root (a private Postfix, a test user)")
        && require(
            Path::new(e2e::POSTFIX).exists() && Path::new(SENDMAIL).exists(),
            "Postfix (postfix, its sendmail)",
        )
}

/// A header's value in `mail`.
fn header<'a>(mail: &'a str, name: &str) -> &'a str {
    let (head, _) = mail.split_once("\n\n").unwrap();
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {mail}"))
}

#[test]
fn owners_hear_of_passwords_made_regenerated_and_revoked_by_others() {
    if !prerequisites() {
        return;
    }
    let mail = MailSystem::start();
    let user = TestUser::create();
    let u = user.name.as_str();
    // notify is left to its default: on, as the sendmail program exists.
    let s = Sandbox::with_config(&format!(
        "sendmail = {SENDMAIL} -C {}\n",
        mail.config.display()
    ));
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = |v: &serde_json::Value| v["id"].as_i64().unwrap();
    let mut passwords = Vec::new();

    // Made for them (by root), regenerated, and one revoked by root.
    let phone = s.json(&[
        "add",
        "--user",
        u,
        "--service",
        "imap",
        "--label",
        "Phone",
        "--json",
    ]);
    let phone2 = s.json(&["regenerate", &id(&phone).to_string(), "--json"]);
    let laptop = s.json(&["add", "--user", u, "--service", "imap", "--json"]);
    assert!(
        s.apppass(&["revoke", &id(&laptop).to_string()])
            .status
            .success()
    );
    // One they revoke themselves: no mail for that.
    let own = s.json(&["add", "--user", u, "--service", "imap", "--json"]);
    let out = as_user(Some(u))
        .arg(common::apppass_bin())
        .arg("--socket")
        .arg(&s.socket)
        .arg("--config")
        .arg(&s.conf)
        .args(["revoke", &id(&own).to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The rest, by root: one mail for all of them.
    let out = s.apppass(&["revoke", "--all", "--user", u]);
    assert!(out.status.success());
    // Their account password changed (what the module's password hook reports): all
    // of theirs revoked, mailed even though it may have been them.
    let last = s.json(&["add", "--user", u, "--service", "imap", "--json"]);
    let changed = s
        .daemon
        .call(&apppass_proto::Request::PasswordChanged { user: u.into() })
        .unwrap();
    assert!(
        matches!(changed, apppass_proto::Response::Count(1)),
        "{changed:?}"
    );
    for v in [&phone, &phone2, &laptop, &own, &last] {
        passwords.push(v["password"].as_str().unwrap().to_string());
    }

    // Notices go one at a time, in order: once the last is logged, the owner's own
    // revocation would have been too.
    let sent = s.daemon.log_lines(&["owner notice sent:"], 8);
    let kinds: Vec<&str> = sent
        .iter()
        .map(|l| l.split("owner notice sent: ").nth(1).unwrap())
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let want = [
        "created",
        "regenerated",
        "created",
        "revoked",
        "created",
        "revoked-all",
        "created",
        "revoked-on-password-change",
    ];
    assert_eq!(kinds, want, "{}", s.daemon.log());
    let mails = mail.wait_for(8);
    assert_eq!(mails.len(), 8, "{}", mail.log());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        mail.mails().len(),
        8,
        "no mail for the owner's own revocation"
    );

    for m in &mails {
        assert_eq!(header(m, "X-Original-To"), u, "{m}");
        assert_eq!(header(m, "Delivered-To"), format!("{u}@{DOMAIN}"));
        assert_eq!(header(m, "Auto-Submitted"), "auto-generated");
        for p in &passwords {
            let secret: String = p.chars().filter(|c| *c != '-').collect();
            assert!(
                !m.contains(p.as_str()) && !m.contains(&secret[6..]),
                "a password in {m}"
            );
        }
    }
    // Postfix delivers them in no set order: each by its subject.
    let by_subject = |subject: String| -> &String {
        mails
            .iter()
            .find(|m| header(m, "Subject").starts_with(&subject))
            .unwrap_or_else(|| panic!("no mail {subject:?} in {mails:#?}"))
    };
    let made = by_subject(format!("apppass: new app password {} for {u}", id(&phone)));
    assert!(
        made.contains("\"Phone\"") && made.contains("By:           root (uid 0)"),
        "{made}"
    );
    assert!(
        made.contains(&format!("apppass revoke {}", id(&phone))),
        "{made}"
    );
    let regenerated = by_subject(format!(
        "apppass: app password {} replaced by {} for {u}",
        id(&phone),
        id(&phone2)
    ));
    assert!(
        regenerated.contains(&format!(
            "app password {}, which no longer works",
            id(&phone)
        )) && regenerated.contains(&format!("App password: {}", id(&phone2))),
        "{regenerated}"
    );
    let revoked = by_subject(format!(
        "apppass: app password {} of {u} revoked",
        id(&laptop)
    ));
    assert!(
        revoked.contains("revoked by\nsomeone else than you"),
        "{revoked}"
    );
    let revoked: Vec<&String> = mails
        .iter()
        .filter(|m| header(m, "Subject").starts_with(&format!("apppass: 1 app password(s) of {u}")))
        .collect();
    assert_eq!(revoked.len(), 2, "{mails:#?}");
    assert!(
        revoked
            .iter()
            .any(|m| m.contains("1 app password(s) of your account")),
        "{revoked:#?}"
    );
    assert!(
        revoked
            .iter()
            .any(|m| m.contains("was changed, so all 1 of\nits app passwords were revoked")),
        "{revoked:#?}"
    );
}

#[test]
fn a_mail_system_that_refuses_costs_the_request_nothing() {
    if !prerequisites() {
        return;
    }
    // Postfix's own sendmail, pointed at a configuration that does not exist: it fails.
    let s = Sandbox::with_config(&format!(
        "notify = yes\nsendmail = {SENDMAIL} -C /nonexistent/apppass-notify\n"
    ));
    s.simple_service("imap", "");
    let added = s.add("alice", "imap", &[]);
    assert_eq!(
        s.code("imap", "alice", &added.password),
        pam_apppass::code::Code::SUCCESS
    );
    let failed = s.daemon.log_lines(&["owner notice not sent: created"], 1);
    assert_eq!(failed.len(), 1, "{}", s.daemon.log());
    assert!(failed[0].contains("failed"), "{}", failed[0]);

    // Off: not even tried.
    let s = Sandbox::with_config(&format!("notify = no\nsendmail = {SENDMAIL}\n"));
    s.add("alice", "imap", &[]);
    assert_eq!(
        s.daemon
            .log_lines(&["owner notices by mail: off (notify = no)"], 1)
            .len(),
        1
    );
    let log = s.daemon.log();
    assert!(
        !log.contains("owner notice sent") && !log.contains("owner notice not sent"),
        "{log}"
    );
}

/// Where a set-id sendmail gains nothing (apppassd.service's NoNewPrivileges=), notices
/// go to the local mail server over SMTP: configured as `sendmail = smtp://HOST:PORT`,
/// and chosen by apppassd itself for the default sendmail when it runs with
/// no_new_privs.
#[test]
fn notices_go_over_smtp_where_set_id_programs_gain_nothing() {
    if !prerequisites()
        || !require(
            Command::new("setpriv").arg("--version").output().is_ok(),
            "setpriv (util-linux)",
        )
    {
        return;
    }
    let mail = MailSystem::start();
    let user = TestUser::create();
    let u = user.name.as_str();
    let s = Sandbox::with_config(&format!("sendmail = smtp://127.0.0.1:{}\n", mail.smtp_port));
    s.json(&[
        "add",
        "--user",
        u,
        "--service",
        "imap",
        "--label",
        "Over SMTP",
        "--json",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mails = loop {
        let mails = mail.mails();
        if !mails.is_empty() || Instant::now() > deadline {
            break mails;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(mails.len(), 1, "{}\n{}", s.daemon.log(), mail.log());
    assert!(mails[0].contains("Over SMTP"), "{}", mails[0]);
    assert!(
        !s.daemon
            .log_lines(&["owner notice sent: created"], 1)
            .is_empty()
    );

    // With no_new_privs and the default sendmail, apppassd says it goes over SMTP.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("apppass.conf");
    std::fs::write(&conf, "notify = yes\n").unwrap();
    let child = Command::new("setpriv")
        .arg("--no-new-privs")
        .arg(common::workspace_bin("apppassd"))
        .arg("--db")
        .arg(dir.path().join("db/apppass.db"))
        .arg("--socket")
        .arg(dir.path().join("apppassd.sock"))
        .arg("--config")
        .arg(&conf)
        .arg("--stderr")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.path().join("apppassd.sock").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    common::signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("owner notices by mail: on, through smtp://127.0.0.1:25"),
        "{said}"
    );
}

/// Processes whose command line or environment names `text` (Postfix's sendmail passes
/// its configuration directory to postdrop in MAIL_CONFIG).
fn processes_naming(text: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let names = ["cmdline", "environ"].iter().any(|f| {
            std::fs::read(entry.path().join(f))
                .is_ok_and(|b| String::from_utf8_lossy(&b).contains(text))
        });
        if names && pid != std::process::id() {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_mail_system_that_does_not_answer_holds_up_nothing() {
    if !prerequisites() {
        return;
    }
    // Postfix's sendmail on a queue directory without a maildrop: its postdrop waits and
    // tries again every 10 s, for ever.
    let stuck = tempfile::Builder::new()
        .prefix("apppass-stuck-mail")
        .tempdir()
        .unwrap();
    let queue = stuck.path().join("queue");
    std::fs::create_dir(&queue).unwrap();
    std::fs::write(
        stuck.path().join("main.cf"),
        format!(
            "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {q}\n",
            q = queue.display()
        ),
    )
    .unwrap();
    let config = stuck.path().display().to_string();
    let mut s = Sandbox::with_config(&format!(
        "notify = yes\nsendmail = {SENDMAIL} -C {config}\n"
    ));
    s.simple_service("imap", "");
    let started = Instant::now();
    for _ in 0..3 {
        let added = s.add("alice", "imap", &[]);
        assert_eq!(
            s.code("imap", "alice", &added.password),
            pam_apppass::code::Code::SUCCESS
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests waited for the mail system: {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_naming(&config).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !processes_naming(&config).is_empty(),
        "no sendmail under way"
    );

    // Stopping waits a little for it, then kills it, postdrop and all, and drops the rest.
    let stopping = Instant::now();
    assert!(s.daemon.stop().success());
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_naming(&config).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(processes_naming(&config), Vec::<u32>::new(), "left behind");
    let log = s.daemon.log();
    assert!(
        log.contains("owner notice not sent: created id=1 to=alice: /usr/sbin/sendmail killed: apppassd is stopping"),
        "{log}"
    );
    assert_eq!(
        log.matches("owner notice not sent: created to user=alice: apppassd is stopping")
            .count(),
        2,
        "{log}"
    );
}
