//! `apppass doctor` on the shipped PAM files, installed the way an administrator would
//! (in a private mount namespace, see tests/e2e/mod.rs), with the apppassd they ask
//! running as its own user, as root, stopped, or unable to use its store; and on broken
//! stacks.

mod common;
mod e2e;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use apppass_core::store::sqlite::SCHEMA_VERSION;
use common::{Daemon, Sandbox, apppass_bin};
use e2e::{TestUser, World};

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
    e2e::have(&["unshare", "useradd", "setpriv"])
}

/// apppassd started by `owner` itself (setpriv), on a store and socket in `dir`, which
/// is that user's; returns once the CLI, with the configuration `conf` (which names
/// that user), gets its status. (common::Daemon's own check trusts root and the test
/// only.)
fn start_as(owner: &TestUser, dir: &Path, conf: &Path) -> Daemon {
    let daemon = Daemon {
        child: Command::new("setpriv")
            .args(["--reuid", &owner.name, "--regid", &owner.name])
            .args(["--clear-groups", "--"])
            .arg(common::workspace_bin("apppassd"))
            .arg("--db")
            .arg(dir.join("db/apppass.db"))
            .arg("--socket")
            .arg(dir.join("apppassd.sock"))
            .arg("--config")
            .arg(conf)
            .arg("--stderr")
            .spawn()
            .unwrap(),
        socket: dir.join("apppassd.sock"),
        db: dir.join("db/apppass.db"),
        conf: conf.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = Command::new(apppass_bin())
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("--config")
            .arg(conf)
            .arg("status")
            .output()
            .unwrap();
        if status.status.success() {
            return daemon;
        }
        assert!(
            Instant::now() < deadline,
            "apppassd did not answer: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn chown(path: &Path, owner: &TestUser, recursive: bool) {
    let mut cmd = Command::new("chown");
    if recursive {
        cmd.arg("-R");
    }
    assert!(
        cmd.arg(format!("{}:", owner.name))
            .arg(path)
            .status()
            .unwrap()
            .success()
    );
}

/// Runs the world's apppassd as `owner`, as the packaged service runs (a socket made by
/// root, the daemon its own user), with the configurations naming that user. (The
/// socket was made and listened on by root, so that is who the kernel says answers.)
fn run_as(world: &mut World, owner: &TestUser) {
    let s = &mut world.sandbox;
    s.daemon.stop();
    let user_line = format!("user = {}\n", owner.name);
    std::fs::write(&s.conf, &user_line).unwrap();
    std::fs::write(
        world.security.join("apppass.conf"),
        format!("socket = {}\n{user_line}", s.socket.display()),
    )
    .unwrap();
    // Its store is its own; the directory above is only passed through.
    set_mode(s.dir.path(), 0o711);
    chown(s.db.parent().unwrap(), owner, true);
    s.daemon = Daemon::start_at(s.dir.path(), &s.db, &s.conf, &["--user", &owner.name]);
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
}

#[test]
fn shipped_files_as_installed() {
    if !needs_root() {
        return;
    }
    let owner = TestUser::create();
    let mut world = World::new();
    run_as(&mut world, &owner);
    for name in ["imap", "pop3", "submission"] {
        world.install_pam("dovecot-apppass-only", name);
    }
    world.install_pam("sshd", "sshd");
    let s = &world.sandbox;
    s.add("alice", "imap", &[]);
    s.add("alice", "*", &[]);
    let (uid, _) = owner.ids();

    let imap = doctor_in(&world, &["imap"]);
    imap.ready(&[
        "imap (/etc/pam.d/imap)",
        "ok       pam_apppass.so is in the auth stack: /etc/pam.d/imap:",
        "auth required ",
        "scope: imap (the PAM service name)",
        "mode: app passwords only: an app password logs in; the account password is refused",
        &format!(
            "info     apppassd's socket: {} (from the configuration /etc/security/apppass.conf)",
            s.socket.display()
        ),
        &format!(
            "ok       apppassd answers: version {}, pid {}, running as uid {uid}, socket owned by uid 0",
            env!("CARGO_PKG_VERSION"),
            s.daemon.child.id()
        ),
        &format!(
            "ok       store: {} (schema version {SCHEMA_VERSION})",
            s.db.display()
        ),
        "ok       2 active app password(s) for imap (or every service)",
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
    // installed module and apppassd.
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
    let out = s.apppass(&["revoke", "--user", "alice", "--all"]);
    assert!(out.status.success());
    doctor_in(&world, &["imap"]).ready(&[
        "WARNING  no active app password for imap yet: make one with apppass add --user USER --service imap",
        "ready (0 problem(s), 1 warning(s))",
    ]);
}

#[test]
fn daemon_problems() {
    if !needs_root() {
        return;
    }
    let owner = TestUser::create();
    let mut world = World::new();
    world.install_pam("dovecot-apppass-only", "imap");
    let socket = world.sandbox.socket.display().to_string();
    let conf = world.security.join("apppass.conf");

    // Running as root: it works, but should not.
    doctor_in(&world, &["imap"]).ready(&[
        "running as uid 0, socket owned by uid 0",
        "WARNING  apppassd runs as root: run it as its own user (_apppass; systemd's unit does)",
        "ready (0 problem(s), 2 warning(s))",
    ]);

    // Down: nobody logs in through this file.
    world.stop_daemon();
    doctor_in(&world, &["imap"]).problem(&[&format!(
        "PROBLEM  apppassd is not running ({socket}: No such file or directory (os error 2)): every login through pam_apppass fails with PAM_AUTHINFO_UNAVAIL"
    )]);

    // Up, but its store cannot be used (a directory others can write to).
    let store_dir = world.sandbox.db.parent().unwrap().to_path_buf();
    set_mode(&store_dir, 0o770);
    world.start_daemon();
    doctor_in(&world, &["imap"]).problem(&[
        &format!(
            "PROBLEM  apppassd cannot use its store {}: ",
            world.sandbox.db.display()
        ),
        &format!(
            "{} is writable by group or other (mode 0770)",
            store_dir.display()
        ),
        "(PAM_AUTHINFO_UNAVAIL) until that is fixed",
    ]);
    set_mode(&store_dir, 0o700);

    // Started by its user rather than by root (no systemd socket, no --user): the socket
    // and the process on it are that user's, and the module sends a password there only
    // if the configuration names that user.
    let own = world.dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    chown(&own, &owner, false);
    let own_conf = world.dir.path().join("own.conf");
    std::fs::write(&own_conf, format!("user = {}\n", owner.name)).unwrap();
    let own_daemon = start_as(&owner, &own, &own_conf);
    let own_socket = own_daemon.socket.clone();
    let (uid, _) = owner.ids();
    std::fs::write(&conf, format!("socket = {}\n", own_socket.display())).unwrap();
    doctor_in(&world, &["imap"]).problem(&[&format!(
        "PROBLEM  refusing to talk to {}: owned by uid {uid}, which is neither root nor apppassd's user",
        own_socket.display()
    )]);
    std::fs::write(
        &conf,
        format!("socket = {}\nuser = {}\n", own_socket.display(), owner.name),
    )
    .unwrap();
    doctor_in(&world, &["imap"]).ready(&[
        &format!("running as uid {uid}, socket owned by uid {uid}"),
        "ready (0 problem(s), 1 warning(s))",
    ]);

    // The configuration the module reads.
    set_mode(&conf, 0o666);
    doctor_in(&world, &["imap"]).problem(&["configuration /etc/security/apppass.conf: "]);
    set_mode(&conf, 0o644);
    std::fs::write(&conf, "socket = relative.sock\n").unwrap();
    doctor_in(&world, &["imap"]).problem(&["socket must be an absolute path"]);
    std::fs::write(&conf, "socket = /nonexistent/apppassd.sock\n").unwrap();
    doctor_in(&world, &["imap"]).problem(&["apppassd is not running (/nonexistent/apppassd.sock"]);
}

/// A copy of /etc/pam.d to break, and an apppassd (with app passwords made with the real
/// CLI).
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

    /// A service file with the built module as `{module}` and apppassd's socket as
    /// `{socket}`.
    fn write(&self, name: &str, text: &str) {
        let text = text
            .replace("{module}", &self.sandbox.module.display().to_string())
            .replace("{socket}", &self.sandbox.socket.display().to_string());
        std::fs::write(self.pam_d.join(name), text).unwrap();
    }
}

#[test]
fn broken_stacks() {
    // Reading PAM files needs no privilege, and the apppassd the lines name is the
    // test's own, so this runs as any user.
    let world = Broken::new();
    let dir = world.pam_d.display().to_string();
    let check = |service: &str| doctor(&["--pam-dir", &dir, service]);
    world.sandbox.add("alice", "imap", &[]);
    let broken = |name: &str, text: &str| world.write(name, text);

    broken("plain", "@include common-auth\n@include common-account\n");
    check("plain").problem(&["pam_apppass.so is not in the auth stack of plain"]);

    broken(
        "both",
        "auth required {module} socket={socket}\nauth required pam_unix.so\n",
    );
    check("both").problem(&["mode: a right app password is REFUSED"]);

    broken(
        "open",
        "auth sufficient {module} socket={socket}\nauth required pam_permit.so\n",
    );
    check("open").problem(&["mode: a WRONG password logs in"]);

    broken(
        "uninstalled",
        "auth required /nonexistent/security/pam_apppass.so socket={socket}\n",
    );
    check("uninstalled").problem(&[
        "/nonexistent/security/pam_apppass.so is not installed",
        "libpam cannot load it",
    ]);

    broken(
        "badarg",
        "auth required {module} socket={socket} service=*\n",
    );
    check("badarg").problem(&["bad argument: service=* would let every scope in"]);

    broken(
        "unknownarg",
        "auth required {module} socket={socket} nullok\n",
    );
    let d = check("unknownarg");
    assert_eq!(d.code, 0, "{}", d.stdout);
    d.says(&["unknown argument \"nullok\" is ignored"]);

    // The module of earlier versions opened the database named by db=; apppassd owns it
    // now, and the argument is ignored.
    broken(
        "obsolete",
        "auth required {module} socket={socket} db=/var/lib/apppass/apppass.db\n",
    );
    check("obsolete").problem(&[
        "/obsolete:1: db= is obsolete and ignored: apppassd owns the store",
        "remove the argument",
    ]);

    // socket= in the line names the apppassd to ask.
    broken("bysocket", "auth required {module} socket={socket}\n");
    check("bysocket").says(&[&format!(
        "apppassd's socket: {} (from its socket= argument)",
        world.sandbox.socket.display()
    )]);

    broken(
        "account",
        "@include common-auth\naccount required {module} socket={socket}\n",
    );
    check("account").problem(&[
        "pam_apppass.so in the Account group does nothing there",
        "is not in the auth stack of account",
    ]);

    broken(
        "missing-include",
        "auth required {module} socket={socket}\n@include no-such-file\n",
    );
    check("missing-include").problem(&["cannot read", "no-such-file"]);

    // Dovecot's default PAM service name: one password for every protocol.
    broken("dovecot", "auth required {module} socket={socket}\n");
    check("dovecot").says(&["WARNING  Dovecot uses the PAM service \"dovecot\" unless"]);

    // No file of its own: libpam uses "other".
    let d = check("no-such-service");
    d.problem(&[
        "/no-such-service does not exist: libpam uses",
        "pam_apppass.so is not in the auth stack of no-such-service",
    ]);

    // In common-auth, it reaches every service that includes it.
    broken("common-auth", "auth required {module} socket={socket}\n");
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

#[test]
fn module_reachable_from_sudo_su_or_common_auth() {
    let world = Broken::new();
    let dir = world.pam_d.display().to_string();
    let check = |service: &str| doctor(&["--pam-dir", &dir, service]);
    let module = world.sandbox.module.display().to_string();
    let socket = world.sandbox.socket.display().to_string();

    // In sudo's own file: an app password for sudo is a root password.
    world.write("sudo", "auth required {module} socket={socket}\n");
    let sudo = check("sudo");
    sudo.says(&[
        "WARNING  sudo reaches pam_apppass.so (",
        "/sudo:1): an app password scoped to sudo, or to *, opens sudo, which gives root, \
         for every user sudoers lets in",
        "only root and admin_group make app passwords that open sudo: services in \
         /etc/security/apppass.conf does not list it",
    ]);

    // Through common-auth: every service that includes it, su among them, named.
    world.write("common-auth", "auth required {module} socket={socket}\n");
    world.write(
        "su",
        "auth sufficient pam_rootok.so\n@include common-auth\n",
    );
    world.write("login", "@include common-auth\n");
    world.write("imap", "auth required {module} socket={socket}\n");
    let su = check("su");
    su.says(&[
        "WARNING  su reaches pam_apppass.so (",
        "/common-auth:1): an app password scoped to su, or to *, opens su, which gives the \
         account su switches to, root included",
        "(it comes from ",
        "common-auth, which su includes: every service that includes that file (",
        "An app password for one of them, or for *, opens it: ",
        "login: a console login",
        "su: the account su switches to, root included",
    ]);
    assert!(!su.stdout.contains("imap:"), "{}", su.stdout);
    // A service of its own file is not flagged.
    let imap = check("imap");
    assert!(!imap.stdout.contains("reaches"), "{}", imap.stdout);
    // Every service, when none is named: su and login say so.
    let all = doctor(&["--pam-dir", &dir]);
    all.says(&["WARNING  su reaches", "WARNING  login reaches"]);

    // An administrator who lists sudo lets every user make root passwords: said too.
    let conf = world.pam_d.with_file_name("listed.conf");
    std::fs::write(&conf, "services = mail sudo\n").unwrap();
    std::fs::write(
        world.pam_d.join("sudo"),
        format!(
            "auth required {module} socket={socket} conf={}\n",
            conf.display()
        ),
    )
    .unwrap();
    check("sudo").says(&[&format!(
        "WARNING  every user may make app passwords that open sudo (root, for every user \
         sudoers lets in): services in {} lists sudo",
        conf.display()
    )]);
    // And a group that holds a service counts as listing it.
    std::fs::write(&conf, "group phone = imap smtp\nservices = phone\n").unwrap();
    let conf_line = format!(
        "auth required {module} socket={socket} conf={}\n",
        conf.display()
    );
    std::fs::write(world.pam_d.join("imap"), &conf_line).unwrap();
    check("imap").says(&["people make their own app passwords for imap with --service phone"]);
}
