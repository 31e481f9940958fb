//! A change of the account password revokes the user's app passwords: the real libpam
//! runs `pam_chauthtok` on a stack of pam_unix and the built module (as Debian's
//! common-password with pam_apppass's profile added), for throwaway accounts (useradd,
//! chpasswd, userdel; root), with a real apppassd. A successful change revokes every app
//! password of the user and no one else's, with an audit event each (reason
//! password-change); a change pam_unix refuses, or one that stops after the preliminary
//! pass, revokes nothing; apppassd down gives PAM_AUTHTOK_ERR and a line in the host's
//! syslog; `revoke_on_password_change = no` keeps them; an unprivileged user may report
//! only their own change; a PostgreSQL front end with the login role revokes through
//! its SECURITY DEFINER function.

mod common;
mod pg;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::people::Accounts;
use common::{AuthLog, Daemon, Sandbox, is_root, random_hex, require};
use pam_apppass::client::{self, Change};
use pam_apppass::code::Code;
use support::have;

/// useradd, chpasswd, userdel and pam_unix each lock /etc/passwd and /etc/shadow, and
/// give up ("cannot lock") rather than wait: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn prerequisites() -> bool {
    require(is_root(), "root (to create throwaway users)")
        && require(
            have("useradd") && have("userdel") && have("chpasswd"),
            "useradd, userdel and chpasswd (passwd)",
        )
}

/// Debian's common-password, with the line pam_apppass's pam-auth-update profile adds
/// (pam-configs/apppass): pam_unix first; only once it has set the password does the
/// stack reach pam_apppass.
const STACK: &str = "\
password [success=1 default=ignore] pam_unix.so obscure yescrypt
password requisite pam_deny.so
password required pam_permit.so
password required {module} socket={socket} conf={conf}
";

/// The account's hash in /etc/shadow: whether pam_unix changed the password.
fn shadow_hash(user: &str) -> String {
    let out = Command::new("getent")
        .args(["shadow", user])
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    line.split(':').nth(1).unwrap_or_default().to_string()
}

fn change(s: &Sandbox, service: &str, user: &str, answers: &[&str]) -> Code {
    let answers: Vec<&[u8]> = answers.iter().map(|a| a.as_bytes()).collect();
    client::chauthtok(&Change {
        confdir: &s.confdir,
        service,
        user: user.as_bytes(),
        answers: &answers,
    })
    .unwrap()
    .code
}

/// (id, status) of each of `user`'s app passwords.
fn statuses(s: &Sandbox, user: &str) -> Vec<(i64, String)> {
    s.list()
        .iter()
        .filter(|p| p["user"] == user)
        .map(|p| {
            (
                p["id"].as_i64().unwrap(),
                p["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The ids in `user`'s audit events of a revocation for a password change.
fn password_change_events(s: &Sandbox, user: &str) -> Vec<i64> {
    let out = s.apppass(&["log", "--user", user, "--json"]);
    assert!(
        out.status.success(),
        "log: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<i64> = events
        .iter()
        .filter(|e| e["outcome"] == "revoked" && e["reason"] == "password-change")
        .map(|e| e["password_id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// A sandbox with `alice` (two app passwords) and `bob` (one), both real accounts.
fn world(conf: &str, accounts: &mut Accounts) -> (Sandbox, String, Vec<i64>, String, i64) {
    let s = Sandbox::with_config(conf);
    s.service("passwd", STACK);
    let alice = accounts.user("apw");
    let bob = accounts.user("apw");
    let mut ids = vec![
        s.add(&alice, "imap", &[]).id,
        s.add(&alice, "*", &["--label", "Phone"]).id,
    ];
    ids.sort_unstable();
    let bobs = s.add(&bob, "imap", &[]).id;
    (s, alice, ids, bob, bobs)
}

fn all_active(s: &Sandbox, user: &str) -> bool {
    statuses(s, user).iter().all(|(_, st)| st == "active")
}

#[test]
fn a_password_change_revokes_every_app_password_of_the_user() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let mut accounts = Accounts::default();
    let (s, alice, ids, bob, bobs) = world("", &mut accounts);
    let before = shadow_hash(&alice);
    let new = format!("New-{}", random_hex(8));
    assert_eq!(change(&s, "passwd", &alice, &[&new, &new]), Code::SUCCESS);
    assert_ne!(shadow_hash(&alice), before, "pam_unix set the new password");
    let st = statuses(&s, &alice);
    assert_eq!(st.len(), 2);
    assert!(st.iter().all(|(_, s)| s == "revoked"), "{st:?}");
    assert_eq!(statuses(&s, &bob), [(bobs, "active".to_string())]);
    assert_eq!(password_change_events(&s, &alice), ids);
    assert!(password_change_events(&s, &bob).is_empty());
    let lines = s.daemon.log_lines(
        &[
            "reason=password-change",
            "count=2",
            &format!("user={alice}"),
        ],
        1,
    );
    assert_eq!(lines.len(), 1, "{}", s.daemon.log());
    // A second change finds nothing left to revoke, and is no failure.
    let newer = format!("Newer-{}", random_hex(8));
    assert_eq!(
        change(&s, "passwd", &alice, &[&newer, &newer]),
        Code::SUCCESS
    );
    assert_eq!(password_change_events(&s, &alice), ids);
}

#[test]
fn a_change_pam_unix_refuses_revokes_nothing() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let mut accounts = Accounts::default();
    let (s, alice, ids, _, _) = world("", &mut accounts);
    let before = shadow_hash(&alice);
    // The retyped password differs: pam_unix refuses in the update pass, and the stack
    // stops at pam_deny before pam_apppass.
    let new = format!("New-{}", random_hex(8));
    let code = change(&s, "passwd", &alice, &[&new, "something else"]);
    assert_eq!(code, Code::AUTHTOK_ERR);
    assert_eq!(shadow_hash(&alice), before, "the password is unchanged");
    assert!(all_active(&s, &alice), "{:?}", statuses(&s, &alice));
    assert!(password_change_events(&s, &alice).is_empty());
    // No password at all: refused too.
    assert_ne!(change(&s, "passwd", &alice, &[""]), Code::SUCCESS);
    assert!(all_active(&s, &alice), "{:?}", statuses(&s, &alice));
    // The same stack with a change that works does revoke.
    assert_eq!(change(&s, "passwd", &alice, &[&new, &new]), Code::SUCCESS);
    assert_eq!(password_change_events(&s, &alice), ids);
}

#[test]
fn the_preliminary_pass_revokes_nothing() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let mut accounts = Accounts::default();
    let (s, alice, ids, _, _) = world("", &mut accounts);
    // pam_apppass first, then a module that fails the preliminary pass: libpam calls
    // pam_apppass with PAM_PRELIM_CHECK only, and never starts the update pass.
    s.service(
        "prelim-only",
        "password required {module} socket={socket} conf={conf}\npassword requisite pam_deny.so\n",
    );
    let new = format!("New-{}", random_hex(8));
    assert_ne!(
        change(&s, "prelim-only", &alice, &[&new, &new]),
        Code::SUCCESS
    );
    assert!(all_active(&s, &alice), "{:?}", statuses(&s, &alice));
    assert!(password_change_events(&s, &alice).is_empty());
    // The update pass, through the same module, does revoke.
    assert_eq!(change(&s, "passwd", &alice, &[&new, &new]), Code::SUCCESS);
    assert_eq!(password_change_events(&s, &alice), ids);
}

#[test]
fn apppassd_down_is_authtok_err_and_logged() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let Some(auth_log) = AuthLog::open() else {
        return;
    };
    let mut accounts = Accounts::default();
    let (mut s, alice, ids, _, _) = world("", &mut accounts);
    s.daemon.stop();
    let before = shadow_hash(&alice);
    let new = format!("New-{}", random_hex(8));
    let start = Instant::now();
    assert_eq!(
        change(&s, "passwd", &alice, &[&new, &new]),
        Code::AUTHTOK_ERR
    );
    assert!(start.elapsed() < Duration::from_secs(5), "no hang");
    // pam_unix did change it: the error tells the person (and the log the admin) that
    // the app passwords were not revoked.
    assert_ne!(shadow_hash(&alice), before);
    let lines = auth_log.wait_for(&format!("app passwords of {alice} NOT revoked"), 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("pam_apppass(passwd:chauthtok)")
            && lines[0].contains("apppassd is not running")
            && lines[0].contains(&format!("apppass revoke --all --user {alice}")),
        "{}",
        lines[0]
    );
    s.daemon = Daemon::start(s.dir.path(), &s.conf);
    assert!(all_active(&s, &alice), "{:?}", statuses(&s, &alice));
    // With apppassd back, the next change revokes.
    assert_eq!(change(&s, "passwd", &alice, &[&new, &new]), Code::SUCCESS);
    assert_eq!(password_change_events(&s, &alice), ids);
}

#[test]
fn revoke_on_password_change_no_keeps_them() {
    if !prerequisites() {
        return;
    }
    let _serial = serial();
    let mut accounts = Accounts::default();
    let (mut s, alice, ids, _, _) = world("revoke_on_password_change = no\n", &mut accounts);
    let new = format!("New-{}", random_hex(8));
    assert_eq!(change(&s, "passwd", &alice, &[&new, &new]), Code::SUCCESS);
    assert!(all_active(&s, &alice), "{:?}", statuses(&s, &alice));
    assert!(password_change_events(&s, &alice).is_empty());
    let lines = s.daemon.log_lines(
        &[
            "app passwords kept (revoke_on_password_change = no)",
            &format!("user={alice}"),
        ],
        1,
    );
    assert_eq!(lines.len(), 1, "{}", s.daemon.log());
    // The default is yes.
    s.reconfigure("");
    assert_eq!(change(&s, "passwd", &alice, &[&new, &new]), Code::SUCCESS);
    assert_eq!(password_change_events(&s, &alice), ids);
}

/// On PostgreSQL a front end's apppassd holds only the login role, which may not revoke
/// app passwords: it revokes them through apppass_revoke_on_password_change() (schema
/// 6, granted by roles.sql), and nothing else of the kind.
#[test]
fn a_front_end_on_postgresql_revokes_through_the_function() {
    if !prerequisites() {
        return;
    }
    let cluster = match pg::Cluster::start() {
        Ok(c) => c,
        Err(e) => {
            require(false, &e);
            return;
        }
    };
    let _serial = serial();
    let mut accounts = Accounts::default();
    let db = cluster.create_database();
    let admin = pg_host(&cluster, &cluster.uri(pg::ADMIN, &db));
    cluster.grant_login_role(&db);
    let front = pg_host(&cluster, &cluster.uri(pg::LOGIN, &db));
    front.service("passwd", STACK);
    let alice = accounts.user("apw");
    let bob = accounts.user("apw");
    let mut ids = vec![
        admin.add(&alice, "imap", &[]).id,
        admin.add(&alice, "*", &[]).id,
    ];
    ids.sort_unstable();
    let bobs = admin.add(&bob, "imap", &[]).id;
    // The login role may not revoke otherwise.
    let out = front.apppass(&["revoke", "--all", "--user", &alice]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all_active(&admin, &alice));
    let new = format!("New-{}", random_hex(8));
    assert_eq!(
        change(&front, "passwd", &alice, &[&new, &new]),
        Code::SUCCESS
    );
    let st = statuses(&admin, &alice);
    assert!(st.iter().all(|(_, s)| s == "revoked"), "{st:?}");
    assert_eq!(statuses(&admin, &bob), [(bobs, "active".to_string())]);
    assert_eq!(password_change_events(&admin, &alice), ids);
    let lines = front.daemon.log_lines(
        &[
            "reason=password-change",
            "count=2",
            &format!("user={alice}"),
        ],
        1,
    );
    assert_eq!(lines.len(), 1, "{}", front.daemon.log());
}

/// One host on the cluster: an apppassd connecting as `conninfo`'s role, with the
/// module and a PAM service directory beside it.
fn pg_host(cluster: &pg::Cluster, conninfo: &str) -> Sandbox {
    let dir = tempfile::Builder::new()
        .prefix("apppass-pg-host")
        .tempdir()
        .unwrap();
    let module = dir.path().join("pam_apppass.so");
    std::os::unix::fs::symlink(common::built_module(), &module).unwrap();
    let confdir = dir.path().join("pam.d");
    std::fs::create_dir(&confdir).unwrap();
    let passfile = dir.path().join("apppass.pgpass");
    cluster.passfile(&passfile, &[pg::ADMIN, pg::LOGIN]);
    let conf = dir.path().join("apppass.conf");
    std::fs::write(
        &conf,
        format!(
            "db_passfile = {}\ndb_connect_timeout = 2s\ndb_query_timeout = 2s\n",
            passfile.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start_at(dir.path(), std::path::Path::new(conninfo), &conf, &[]);
    Sandbox {
        db: daemon.db.clone(),
        socket: daemon.socket.clone(),
        daemon,
        module,
        confdir,
        conf,
        dir,
    }
}

/// Only root, auth_trusted and the user themself may report a user's password change:
/// run as a throwaway unprivileged user (setpriv), the real libpam's pam_chauthtok for
/// another user is refused (PAM_PERM_DENIED, nothing revoked), for themself it revokes.
#[test]
fn a_user_may_report_only_their_own_password_change() {
    if let Some(role) = support::helper_role() {
        assert_eq!(role, "chauthtok");
        let user = std::env::var("APPPASS_TEST_USER").unwrap();
        let confdir = support::env_path("APPPASS_TEST_CONFDIR");
        let code = client::chauthtok(&Change {
            confdir: &confdir,
            service: "apppass-only",
            user: user.as_bytes(),
            answers: &[b"unused"],
        })
        .unwrap()
        .code;
        // libtest's own "test ... " may start the line.
        println!("\nCODE={}", code.0);
        return;
    }
    if !prerequisites() || !require(have("setpriv"), "setpriv (util-linux)") {
        return;
    }
    let _serial = serial();
    let mut accounts = Accounts::default();
    let (s, alice, _, bob, bobs) = world("", &mut accounts);
    // What an unprivileged process needs to reach: this test binary, the module, the
    // configuration and the service file, in a directory anyone can read.
    use std::os::unix::fs::PermissionsExt;
    let open = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    open(s.dir.path(), 0o755);
    open(&s.confdir, 0o755);
    open(&s.conf, 0o644);
    let module = s.dir.path().join("pam_apppass-copy.so");
    std::fs::copy(common::built_module(), &module).unwrap();
    open(&module, 0o755);
    let exe = s.dir.path().join("pwchange-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    open(&exe, 0o755);
    s.service(
        "apppass-only",
        &format!(
            "password required {} socket={{socket}} conf={{conf}}\n",
            module.display()
        ),
    );
    open(&s.confdir.join("apppass-only"), 0o644);
    let as_bob = |target: &str| -> i32 {
        let uid = Command::new("id").args(["-u", &bob]).output().unwrap();
        let uid = String::from_utf8(uid.stdout).unwrap().trim().to_string();
        let out = Command::new("setpriv")
            .args([&format!("--reuid={uid}"), "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .args([
                "a_user_may_report_only_their_own_password_change",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(support::HELPER, "chauthtok")
            .env("APPPASS_TEST_USER", target)
            .env("APPPASS_TEST_CONFDIR", &s.confdir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let code = text
            .lines()
            .find_map(|l| l.split("CODE=").nth(1))
            .unwrap_or_else(|| panic!("helper: {text}{}", String::from_utf8_lossy(&out.stderr)));
        code.parse().unwrap()
    };
    assert_eq!(Code(as_bob(&alice)), Code::PERM_DENIED);
    assert!(all_active(&s, &alice), "{:?}", statuses(&s, &alice));
    assert!(password_change_events(&s, &alice).is_empty());
    let refused = s.daemon.log_lines(
        &[
            "refusing to revoke another user's app passwords",
            &format!("user={alice}"),
        ],
        1,
    );
    assert_eq!(refused.len(), 1, "{}", s.daemon.log());
    assert_eq!(Code(as_bob(&bob)), Code::SUCCESS);
    assert_eq!(statuses(&s, &bob), [(bobs, "revoked".to_string())]);
    assert_eq!(password_change_events(&s, &bob), [bobs]);
}
