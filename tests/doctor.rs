//! `apppass doctor` on the shipped PAM files, installed the way an administrator would
//! (in a private mount namespace, see tests/e2e/mod.rs), and on broken ones.

mod common;
mod e2e;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use apppass_core::store::sqlite::SCHEMA_VERSION;
use common::{Sandbox, apppass_bin};
use e2e::World;

struct Doctor {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Doctor {
    fn of(out: Output) -> Doctor {
        Doctor {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts a clean bill of health that says `wanted`.
    fn ready(&self, wanted: &[&str]) {
        assert_eq!(self.code, 0, "{}{}", self.stdout, self.stderr);
        assert!(!self.stdout.contains("PROBLEM"), "{}", self.stdout);
        self.says(wanted);
    }

    /// Asserts exit status 1 and that the report says `wanted`.
    fn problem(&self, wanted: &[&str]) {
        assert_eq!(self.code, 1, "{}{}", self.stdout, self.stderr);
        assert!(self.stdout.contains("  PROBLEM  "), "{}", self.stdout);
        assert!(self.stderr.contains("problem(s) found"), "{}", self.stderr);
        self.says(wanted);
    }

    fn says(&self, wanted: &[&str]) {
        for w in wanted {
            assert!(self.stdout.contains(w), "no {w:?} in:\n{}", self.stdout);
        }
    }
}

/// `apppass doctor ARGS` where /etc/pam.d and /etc/security are the world's.
fn doctor_in(world: &World, args: &[&str]) -> Doctor {
    Doctor::of(
        world
            .command(&apppass_bin())
            .arg("doctor")
            .args(args)
            .output()
            .unwrap(),
    )
}

/// `apppass doctor ARGS` on the machine as it is.
fn doctor(args: &[&str]) -> Doctor {
    Doctor::of(
        Command::new(apppass_bin())
            .arg("doctor")
            .args(args)
            .output()
            .unwrap(),
    )
}

fn needs_root() -> bool {
    e2e::have(&["unshare"])
}

#[test]
fn shipped_files_as_installed() {
    if !needs_root() {
        return;
    }
    let world = World::new();
    for name in ["imap", "pop3", "submission"] {
        world.install_pam("dovecot-apppass-only", name);
    }
    world.install_pam("sshd", "sshd");
    let s = &world.sandbox;
    s.add("alice", "imap", &[]);
    s.add("alice", "*", &[]);
    let db = s.db.display().to_string();

    let imap = doctor_in(&world, &["imap"]);
    imap.ready(&[
        "imap (/etc/pam.d/imap)",
        "ok       pam_apppass.so is in the auth stack: /etc/pam.d/imap:",
        "auth required ",
        "scope: imap (the PAM service name)",
        "mode: app passwords only: an app password logs in; the account password is refused",
        &format!("database: {db} (from the configuration /etc/security/apppass.conf)"),
        "owned by root and writable by root only",
        "2 active app password(s) for imap",
        "=> imap: ready (0 problem(s), 0 warning(s))",
    ]);
    let sshd = doctor_in(&world, &["sshd"]);
    sshd.ready(&[
        "scope: sshd (the PAM service name)",
        "mode: migration: an app password or the account password logs in",
        "1 active app password(s) for sshd",
    ]);
    // Every service that uses the module, when none is named.
    // (Per service: the copy of the machine's /etc/pam.d may hold another test's files.)
    let all = doctor_in(&world, &[]);
    all.says(&[
        "imap (/etc/pam.d/imap)",
        "=> imap: ready (0 problem(s), 0 warning(s))",
        "pop3 (/etc/pam.d/pop3)",
        "=> pop3: ready",
        "submission (/etc/pam.d/submission)",
        "=> submission: ready",
        "sshd (/etc/pam.d/sshd)",
        "=> sshd: ready",
    ]);
    assert!(!all.stdout.contains("(/etc/pam.d/login)"), "{}", all.stdout);

    // The other two shipped files, checked before they are installed (--file), with the
    // installed module and database.
    world.install_pam("dovecot-migration", "mail-candidate");
    world.install_pam("sshd-apppass-only", "sshd-candidate");
    let candidate = |name: &str| format!("/etc/pam.d/{name}");
    doctor_in(&world, &["--file", &candidate("mail-candidate"), "pop3"]).ready(&[
        "pop3 (/etc/pam.d/mail-candidate)",
        "scope: pop3 (the PAM service name)",
        "mode: migration",
        // alice's '*' password opens pop3 too.
        "1 active app password(s) for pop3",
    ]);
    doctor_in(&world, &["--file", &candidate("sshd-candidate"), "sshd"])
        .ready(&["mode: app passwords only"]);

    // A service without app passwords yet is ready but warned about.
    s.apppass(&["revoke", "--user", "alice", "--all"]);
    doctor_in(&world, &["imap"]).ready(&[
        &format!("WARNING  database: schema version {SCHEMA_VERSION}, but no active app password for imap yet"),
        "ready (0 problem(s), 1 warning(s))",
    ]);
}

#[test]
fn database_problems() {
    if !needs_root() {
        return;
    }
    let world = World::new();
    world.install_pam("dovecot-apppass-only", "imap");
    let db = world.sandbox.db.clone();
    let set_mode = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };

    set_mode(&db, 0o666);
    doctor_in(&world, &["imap"]).problem(&[&format!(
        "PROBLEM  database: {} is writable by group or other (mode 0666): fix with chmod go-w {}",
        db.display(),
        db.display()
    )]);
    set_mode(&db, 0o644);
    doctor_in(&world, &["imap"]).ready(&["WARNING  database: ", "is readable by group or other"]);
    set_mode(&db, 0o600);
    let dir = db.parent().unwrap();
    set_mode(dir, 0o777);
    doctor_in(&world, &["imap"]).problem(&[&format!(
        "PROBLEM  database: {} is writable by group or other (mode 0777)",
        dir.display()
    )]);
    set_mode(dir, 0o755);
    doctor_in(&world, &["imap"]).ready(&[&format!(
        "WARNING  database directory: {} is open to group or other (mode 0755): chmod 700",
        dir.display()
    )]);
    set_mode(dir, 0o700);

    let conf = world.security.join("apppass.conf");
    set_mode(&conf, 0o666);
    doctor_in(&world, &["imap"]).problem(&["configuration /etc/security/apppass.conf: "]);
    set_mode(&conf, 0o644);

    std::fs::write(&conf, "db = /nonexistent/apppass.db\n").unwrap();
    doctor_in(&world, &["imap"]).problem(&[
        "database /nonexistent/apppass.db does not exist",
        "create it with apppass init",
    ]);
    std::fs::write(&conf, "db = relative.db\n").unwrap();
    doctor_in(&world, &["imap"]).problem(&["db must be an absolute path"]);
}

/// A copy of /etc/pam.d to break, and a database (made with the real CLI).
struct Broken {
    sandbox: Sandbox,
    pam_d: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broken {
    fn new() -> Broken {
        let dir = tempfile::tempdir().unwrap();
        let pam_d = dir.path().join("pam.d");
        let cp = Command::new("cp")
            .arg("-a")
            .arg("/etc/pam.d")
            .arg(&pam_d)
            .status()
            .unwrap();
        assert!(cp.success());
        Broken {
            sandbox: Sandbox::new(),
            pam_d,
            _dir: dir,
        }
    }

    /// A service file with the built module as `{module}` and the database as `{db}`.
    fn write(&self, name: &str, text: &str) {
        let text = text
            .replace("{module}", &self.sandbox.module.display().to_string())
            .replace("{db}", &self.sandbox.db.display().to_string());
        std::fs::write(self.pam_d.join(name), text).unwrap();
    }
}

#[test]
fn broken_stacks() {
    // Reading PAM files needs no privilege (the database checks are skipped then, with a
    // warning), so this runs as any user.
    let world = Broken::new();
    let dir = world.pam_d.display().to_string();
    let check = |service: &str| doctor(&["--pam-dir", &dir, service]);
    world.sandbox.add("alice", "imap", &[]);
    let broken = |name: &str, text: &str| world.write(name, text);

    broken("plain", "@include common-auth\n@include common-account\n");
    check("plain").problem(&["pam_apppass.so is not in the auth stack of plain"]);

    broken(
        "both",
        "auth required {module} db={db}\nauth required pam_unix.so\n",
    );
    check("both").problem(&["mode: a right app password is REFUSED"]);

    broken(
        "open",
        "auth sufficient {module} db={db}\nauth required pam_permit.so\n",
    );
    check("open").problem(&["mode: a WRONG password logs in"]);

    broken(
        "uninstalled",
        "auth required /nonexistent/security/pam_apppass.so db={db}\n",
    );
    check("uninstalled").problem(&[
        "/nonexistent/security/pam_apppass.so is not installed",
        "libpam cannot load it",
    ]);

    broken("badarg", "auth required {module} db={db} service=*\n");
    check("badarg").problem(&["bad argument: service=* would let every scope in"]);

    broken("unknownarg", "auth required {module} db={db} nullok\n");
    let d = check("unknownarg");
    assert_eq!(d.code, 0, "{}", d.stdout);
    d.says(&["unknown argument \"nullok\" is ignored"]);

    broken(
        "account",
        "@include common-auth\naccount required {module} db={db}\n",
    );
    check("account").problem(&[
        "pam_apppass.so in the Account group does nothing there",
        "is not in the auth stack of account",
    ]);

    broken(
        "missing-include",
        "auth required {module} db={db}\n@include no-such-file\n",
    );
    check("missing-include").problem(&["cannot read", "no-such-file"]);

    // Dovecot's default PAM service name: one password for every protocol.
    broken("dovecot", "auth required {module} db={db}\n");
    check("dovecot").says(&["WARNING  Dovecot uses the PAM service \"dovecot\" unless"]);

    // No file of its own: libpam uses "other".
    let d = check("no-such-service");
    d.problem(&[
        "/no-such-service does not exist: libpam uses",
        "pam_apppass.so is not in the auth stack of no-such-service",
    ]);

    // In common-auth, it reaches every service that includes it.
    broken("common-auth", "auth required {module} db={db}\n");
    let all = doctor(&["--pam-dir", &dir]);
    all.says(&[
        "login (",
        "WARNING  it comes from ",
        "common-auth, which login includes: every service that includes that file",
    ]);

    // Usage errors are not findings.
    let d = Doctor::of(
        Command::new(apppass_bin())
            .args(["--db", "/tmp/x.db", "doctor", "imap"])
            .output()
            .unwrap(),
    );
    assert_eq!(d.code, 2, "{}", d.stderr);
    let d = doctor(&["--file", "/nonexistent/pam-file"]);
    assert_eq!(d.code, 2, "{}", d.stderr);
    assert!(d.stderr.contains("cannot read /nonexistent/pam-file"));
}
