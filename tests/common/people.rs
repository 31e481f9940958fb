//! Real people for the tests that need them (root only): throwaway accounts with
//! account passwords, groups, and a [`World`] where they act: apppassd as root, whose
//! `apppass` stack (the shipped file) runs in the built apppass-pam-helper, and copies
//! of the CLI and the PAM client that any user can run (the build tree may be in a
//! private home).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use super::{Daemon, as_user, unique};

/// useradd, chpasswd, userdel and friends lock /etc/passwd and /etc/shadow and give up
/// ("cannot lock") rather than wait: one change at a time in a test binary.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The account password the tests give `user`.
pub fn password_of(user: &str) -> String {
    format!("Acct-{user}-pw9")
}

/// Throwaway users and groups, removed again even when a test fails.
#[derive(Default)]
pub struct Accounts {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

impl Accounts {
    /// `users` accounts named from `prefix`, each with its [`password_of`], and
    /// `groups` groups.
    pub fn create(prefix: &str, users: usize, groups: usize) -> Accounts {
        let mut a = Accounts::default();
        for i in 0..groups {
            a.group(&format!("{prefix}g{i}"));
        }
        for i in 0..users {
            a.user(&format!("{prefix}{i}"));
        }
        a
    }

    /// A new account (no home, no login shell) with its
    /// [`password_of`].
    pub fn user(&mut self, prefix: &str) -> String {
        let name = unique(prefix);
        self.named(&name, None);
        name
    }

    /// The account `name`, with `uid` if given, and its [`password_of`].
    pub fn named(&mut self, name: &str, uid: Option<u32>) {
        let uid = uid.map(|u| u.to_string());
        let mut c = Command::new("useradd");
        c.args(["-M", "-s", "/usr/sbin/nologin"]);
        if let Some(uid) = &uid {
            c.args(["-u", uid]);
        }
        {
            let _one = serial();
            run_ok(c.arg(name));
        }
        if !self.users.iter().any(|n| n == name) {
            self.users.push(name.to_string());
        }
        set_password(name, &password_of(name));
    }

    pub fn group(&mut self, prefix: &str) -> String {
        let name = unique(prefix);
        let _one = serial();
        run_ok(Command::new("groupadd").arg(&name));
        self.groups.push(name.clone());
        name
    }

    /// Adds `user` to `group`.
    pub fn join(&self, user: &str, group: &str) {
        let _one = serial();
        run_ok(Command::new("usermod").args(["-aG", group, user]));
    }

    /// Deletes the account `name` now (it may be made again).
    pub fn delete(&self, name: &str) {
        let _one = serial();
        run_ok(Command::new("userdel").arg(name));
    }
}

/// Sets `user`'s account password (chpasswd, through PAM as passwd would).
pub fn set_password(user: &str, password: &str) {
    let _one = serial();
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(chpasswd.stdin.take().unwrap(), "{user}:{password}").unwrap();
    assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
}

impl Drop for Accounts {
    fn drop(&mut self) {
        let _one = serial();
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).output();
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).output();
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The shipped `apppass` stack (debian/pam.d/apppass).
pub fn shipped_stack() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/pam.d/apppass"))
        .unwrap()
}

/// apppassd as root on a configuration, its `apppass` stack, and copies of the CLI, the
/// PAM client and the module that any user can run.
pub struct World {
    pub dir: tempfile::TempDir,
    pub daemon: Daemon,
    pub apppass: PathBuf,
    pub pamlogin: PathBuf,
    pub module: PathBuf,
    /// The PAM services' directory: the `apppass` stack, and one file per service of
    /// `World::new` that asks this apppassd.
    pub confdir: PathBuf,
    pub conf: PathBuf,
}

impl World {
    /// `config`, plus where the helper and the stacks are; a PAM file for each of
    /// `services` (named as the scope it checks).
    pub fn new(config: &str, services: &[&str]) -> World {
        let dir = tempfile::Builder::new()
            .prefix("apppass-people")
            .tempdir()
            .unwrap();
        set_mode(dir.path(), 0o755);
        let copy = |from: &Path, name: &str| {
            let to = dir.path().join(name);
            std::fs::copy(from, &to).unwrap();
            set_mode(&to, 0o755);
            to
        };
        let apppass = copy(&super::apppass_bin(), "apppass");
        let pamlogin = copy(&super::workspace_bin("examples/pamlogin"), "pamlogin");
        let module = copy(&super::built_module(), "pam_apppass.so");
        let confdir = dir.path().join("pam.d");
        std::fs::create_dir(&confdir).unwrap();
        set_mode(&confdir, 0o755);
        std::fs::write(confdir.join("apppass"), shipped_stack()).unwrap();
        let conf = dir.path().join("apppass.conf");
        std::fs::write(
            &conf,
            format!(
                "pam_helper = {}\npam_helper_socket = {}\npam_dir = {}\n{}",
                super::workspace_bin("apppass-pam-helper").display(),
                dir.path().join("no-helper.sock").display(),
                confdir.display(),
                super::quiet(config)
            ),
        )
        .unwrap();
        set_mode(&conf, 0o644);
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        set_mode(&run, 0o755);
        let daemon = Daemon::start_at(&run, &dir.path().join("store/apppass.db"), &conf, &[]);
        let w = World {
            dir,
            daemon,
            apppass,
            pamlogin,
            module,
            confdir,
            conf,
        };
        for service in services {
            w.service(service, "");
        }
        w
    }

    /// Writes the PAM file `name`: pam_apppass (with `args`) asking this apppassd.
    pub fn service(&self, name: &str, args: &str) {
        std::fs::write(
            self.confdir.join(name),
            format!(
                "auth required {} socket={} conf={} {args}\n",
                self.module.display(),
                self.daemon.socket.display(),
                self.conf.display()
            ),
        )
        .unwrap();
    }

    /// The CLI as `user` (`None`: root) with `stdin` as its standard input.
    pub fn apppass_with(&self, user: Option<&str>, args: &[&str], stdin: &str) -> Output {
        let mut c = self.apppass_command(user, args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        // The CLI may not read it all (root is not asked): a closed pipe is fine.
        let _ = std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes());
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// `apppass ARGS` against this world's apppassd, as `user` (`None`: root).
    pub fn apppass_command(&self, user: Option<&str>, args: &[&str]) -> Command {
        let mut c = as_user(user);
        c.arg(&self.apppass)
            .arg("--socket")
            .arg(&self.daemon.socket)
            .args(args);
        c
    }

    /// The CLI as `user` (`None`: root). `apppass add` of a user proves them with their
    /// account password on standard input (`--password-stdin`).
    pub fn apppass(&self, user: Option<&str>, args: &[&str]) -> Output {
        match (user, args.first()) {
            (Some(u), Some(&"add")) => {
                let mut all = vec!["add", "--password-stdin"];
                all.extend_from_slice(&args[1..]);
                self.apppass_with(user, &all, &format!("{}\n", password_of(u)))
            }
            _ => self.apppass_with(user, args, ""),
        }
    }

    /// One login to `service` through the real libpam, in a process of `user` (`None`:
    /// root), for `login_user`: the PAM code's name.
    pub fn login(
        &self,
        user: Option<&str>,
        service: &str,
        login_user: &str,
        password: &str,
    ) -> String {
        let mut c = as_user(user);
        c.arg(&self.pamlogin)
            .arg(&self.confdir)
            .args([service, login_user, "192.0.2.44"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            format!("{password}\n").as_bytes(),
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
