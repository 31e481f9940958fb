//! apppass installed setuid root, run by unprivileged users against a root-owned
//! database: they manage their own app passwords and nobody else's, whatever they pass.
//!
//! Each run happens in a private mount namespace where a temporary directory stands in
//! for /etc/security and /var/lib, so the setuid binary's built-in paths land in the
//! test's files, never the machine's.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Sandbox, apppass_bin, is_root, require, unique};
use pam_apppass::code::Code;

/// Throwaway users and a group, removed again even when a test fails.
struct Accounts {
    users: Vec<String>,
    group: String,
}

impl Accounts {
    fn create(prefix: &str, n: usize) -> Accounts {
        let group = unique(&format!("{prefix}g"));
        run_ok(Command::new("groupadd").arg(&group));
        let mut accounts = Accounts {
            users: Vec::new(),
            group,
        };
        for i in 0..n {
            let user = unique(&format!("{prefix}{i}"));
            run_ok(Command::new("useradd").args(["-M", "-s", "/usr/sbin/nologin", &user]));
            accounts.users.push(user);
        }
        accounts
    }

    fn uid(&self, i: usize) -> u32 {
        id(&["-u", &self.users[i]])
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

fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
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

/// The stand-ins for /etc/security and /var/lib, and the setuid copy of apppass.
struct System {
    root: tempfile::TempDir,
    setuid_bin: PathBuf,
}

impl System {
    fn new(config: &str) -> System {
        let root = tempfile::Builder::new()
            .prefix("apppass-setuid")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["bin", "etc-security", "var-lib"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        let bin = root.path().join("bin/apppass");
        std::fs::copy(apppass_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::write(root.path().join("etc-security/apppass.conf"), config).unwrap();
        let system = System {
            root,
            setuid_bin: bin,
        };
        // Root initialises the database, as the package's postinst does.
        let out = system.run_as(None, &["init"], &[]);
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        system
    }

    /// The real path of what the namespace shows as /var/lib/apppass/apppass.db.
    fn db(&self) -> PathBuf {
        self.root.path().join("var-lib/apppass/apppass.db")
    }

    /// Runs the setuid apppass as `user` (None: root), with `env` added to a normal
    /// environment, inside a mount namespace with the stand-ins bound in place.
    fn run_as(&self, user: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
        let r = self.root.path().display().to_string();
        let script = format!(
            "mount --bind {r}/etc-security /etc/security && mount --bind {r}/var-lib /var/lib && exec \"$@\""
        );
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
            "sh",
        ]);
        if let Some(u) = user {
            c.args([
                "setpriv",
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--init-groups",
            ]);
        }
        c.arg(&self.setuid_bin).args(args);
        c.env("HOME", "/nonexistent");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// The database as root sees it, through the plain binary.
    fn list_all(&self) -> Vec<serde_json::Value> {
        let out = run_ok(
            Command::new(apppass_bin())
                .arg("--db")
                .arg(self.db())
                .args(["list", "--all", "--json"]),
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

fn prerequisites() -> bool {
    require(
        is_root(),
        "root (to install a setuid binary and switch users)",
    ) && require(
        ["unshare", "setpriv", "useradd"].iter().all(|t| {
            Command::new("which")
                .arg(t)
                .output()
                .is_ok_and(|o| o.status.success())
        }),
        "unshare, setpriv and useradd (util-linux, passwd)",
    )
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn added(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn users_manage_their_own_app_passwords_only() {
    if !prerequisites() {
        return;
    }
    let who = Accounts::create("apu", 2);
    let sys = System::new("# defaults\n");
    let (alice, bob) = (who.users[0].as_str(), who.users[1].as_str());

    // Each adds their own; the user is the caller, whatever else they say.
    let a = added(&sys.run_as(Some(alice), &["add", "--service", "imap", "--json"], &[]));
    assert_eq!(a["user"], alice);
    let b = added(&sys.run_as(
        Some(bob),
        &["add", "--service", "imap", "--json", "--user", bob],
        &[],
    ));
    assert_eq!(b["user"], bob);
    let out = sys.run_as(
        Some(alice),
        &["add", "--service", "imap", "--user", bob],
        &[],
    );
    assert_eq!(code(&out), 4, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("apppass: error: only root or the admin group")
    );

    // Listing and logs: one's own only.
    let out = sys.run_as(Some(alice), &["list", "--json"], &[]);
    let mine: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 1);
    assert_eq!(mine[0]["user"], alice);
    for args in [
        &["list", "--all"][..],
        &["list", "--user", bob],
        &["log", "--all"],
        &["log", "--user", bob],
    ] {
        assert_eq!(code(&sys.run_as(Some(alice), args, &[])), 4, "{args:?}");
    }

    // Revoking someone else's id: as if it did not exist, and it stays active.
    let bob_id = b["id"].as_i64().unwrap().to_string();
    let out = sys.run_as(Some(alice), &["revoke", &bob_id], &[]);
    assert_eq!(code(&out), 3);
    assert_eq!(
        code(&sys.run_as(Some(alice), &["revoke", "--all", "--user", bob], &[])),
        4
    );
    assert_eq!(
        code(&sys.run_as(Some(alice), &["unlock", "--user", bob], &[])),
        4
    );
    assert_eq!(code(&sys.run_as(Some(alice), &["init"], &[])), 4);
    let rows = sys.list_all();
    assert!(rows.iter().all(|r| r["status"] == "active"), "{rows:?}");

    // Their own: revocable.
    let alice_id = a["id"].as_i64().unwrap().to_string();
    assert!(
        sys.run_as(Some(alice), &["revoke", &alice_id], &[])
            .status
            .success()
    );
    assert!(
        sys.list_all()
            .iter()
            .any(|r| r["user"] == alice && r["status"] == "revoked")
    );

    // The password works through the module, which reads the same root-owned database.
    let s = Sandbox::new();
    s.service(
        "imap",
        &format!("auth required {{module}} db={}\n", sys.db().display()),
    );
    assert_eq!(
        s.code("imap", bob, b["password"].as_str().unwrap()),
        Code::SUCCESS
    );
    assert_eq!(
        s.code("imap", alice, a["password"].as_str().unwrap()),
        Code::AUTH_ERR
    );
}

#[test]
fn privileged_runs_refuse_other_files_and_ignore_the_environment() {
    if !prerequisites() {
        return;
    }
    let who = Accounts::create("apv", 1);
    let sys = System::new("");
    let user = who.users[0].as_str();
    // A root-only file standing in for /etc/shadow (the real one changes whenever a test
    // adds a user), and the real one, which must be refused the same way.
    let decoy = sys.root.path().join("shadow");
    std::fs::write(&decoy, "root:$y$j9T$secret:20000::::::\n").unwrap();
    std::fs::set_permissions(&decoy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let decoy_before = std::fs::read(&decoy).unwrap();
    let decoy_arg = decoy.display().to_string();
    for args in [
        &["--db", "/etc/shadow", "list"][..],
        &["--db", &decoy_arg, "init"],
        &["--db", &decoy_arg, "add", "--service", "imap"],
        &["--config", &decoy_arg, "list"],
        &["--db", "/tmp/mine.db", "add", "--service", "imap"],
    ] {
        let out = sys.run_as(Some(user), args, &[]);
        assert_eq!(
            code(&out),
            4,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("--db and --config are for root"));
    }
    assert!(
        std::fs::read(&decoy).unwrap() == decoy_before,
        "the root-only file changed"
    );
    assert!(!Path::new("/tmp/mine.db").exists());

    // SQLite's temporary files, locale, home: none of it steers a privileged run.
    let scratch = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(scratch.path(), Some(who.uid(0)), None).unwrap();
    let dir = scratch.path().display().to_string();
    let env = [
        ("SQLITE_TMPDIR", dir.as_str()),
        ("TMPDIR", dir.as_str()),
        ("HOME", dir.as_str()),
        ("LANG", "xx_XX.UTF-8"),
        ("LC_ALL", "C"),
        ("APPPASS_DB", "/etc/shadow"),
    ];
    let a = added(&sys.run_as(Some(user), &["add", "--service", "imap", "--json"], &env));
    assert_eq!(a["user"], user);
    let out = sys.run_as(Some(user), &["list"], &env);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "files appeared in the caller's TMPDIR"
    );
    // The database stays root's and private.
    let meta = std::fs::metadata(sys.db()).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    let conn = rusqlite::Connection::open(sys.db()).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn the_admin_group_manages_everyone_and_limits_hold() {
    if !prerequisites() {
        return;
    }
    let who = Accounts::create("apw", 2);
    let sys = System::new(&format!(
        "admin_group = {}\nmax_passwords = 2\nservices = imap pop3\nmax_lifetime = 30d\n",
        who.group
    ));
    let (admin, user) = (who.users[0].as_str(), who.users[1].as_str());
    run_ok(Command::new("usermod").args(["-aG", &who.group, admin]));

    // The admin acts for others...
    let made = added(&sys.run_as(
        Some(admin),
        &["add", "--user", user, "--service", "pop3", "--json"],
        &[],
    ));
    assert_eq!(made["user"], user);
    assert!(
        sys.run_as(Some(admin), &["list", "--all"], &[])
            .status
            .success()
    );
    // ... within the same limits as everyone.
    let out = sys.run_as(
        Some(admin),
        &["add", "--user", user, "--service", "sshd"],
        &[],
    );
    assert_eq!(code(&out), 4);
    assert!(String::from_utf8_lossy(&out.stderr).contains("only for: imap, pop3"));
    let out = sys.run_as(
        Some(user),
        &["add", "--service", "imap", "--expires", "60d"],
        &[],
    );
    assert_eq!(code(&out), 4);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 30d"));
    // The default expiry is the longest allowed.
    let second = added(&sys.run_as(Some(user), &["add", "--service", "imap", "--json"], &[]));
    assert!(second["expires"].is_string());
    let out = sys.run_as(Some(user), &["add", "--service", "imap"], &[]);
    assert_eq!(code(&out), 4);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already has 2 active app passwords"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Revoking one makes room.
    let id = second["id"].as_i64().unwrap().to_string();
    assert!(
        sys.run_as(Some(user), &["revoke", &id], &[])
            .status
            .success()
    );
    added(&sys.run_as(Some(user), &["add", "--service", "imap", "--json"], &[]));
    // Not a member: no more than their own.
    assert_eq!(code(&sys.run_as(Some(user), &["list", "--all"], &[])), 4);
}

#[test]
fn an_unsafe_configuration_is_refused_by_the_setuid_binary() {
    if !prerequisites() {
        return;
    }
    let who = Accounts::create("apx", 1);
    let sys = System::new("");
    let conf = sys.root.path().join("etc-security/apppass.conf");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = sys.run_as(Some(&who.users[0]), &["list"], &[]);
    assert_eq!(code(&out), 4);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing a configuration others can change")
    );
}

#[test]
fn without_setuid_a_user_manages_a_database_they_own() {
    if !prerequisites() {
        return;
    }
    let who = Accounts::create("apy", 1);
    let user = who.users[0].as_str();
    let home = tempfile::Builder::new()
        .prefix("apppass-own")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(home.path(), Some(who.uid(0)), None).unwrap();
    let bin = home.path().join("apppass");
    std::fs::copy(apppass_bin(), &bin).unwrap();
    let db = home.path().join("db/apppass.db");
    let as_user = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
            ])
            .arg(&bin)
            .arg("--db")
            .arg(&db)
            .args(args)
            .output()
            .unwrap()
    };
    // An explicit --config that does not exist is a usage error; without one, defaults.
    assert_eq!(
        code(&as_user(&["--config", "/nonexistent/apppass.conf", "list"])),
        2
    );
    assert!(as_user(&["init"]).status.success());
    let made = added(&as_user(&[
        "add",
        "--user",
        "someone-else",
        "--service",
        "imap",
        "--json",
    ]));
    assert_eq!(made["user"], "someone-else");
    assert!(as_user(&["list", "--all"]).status.success());
    assert_eq!(std::fs::metadata(&db).unwrap().uid(), who.uid(0));
}
