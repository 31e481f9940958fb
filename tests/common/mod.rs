//! Shared by the integration tests: a real apppassd on a throwaway store and socket, the
//! real `apppass` binary talking to it, the built module loaded by the real libpam from a
//! service directory of the test's own, and the real syslog.
#![allow(dead_code)]

pub mod people;

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pam_apppass::client::{self, Attempt, Outcome};
use pam_apppass::code::Code;

/// For a test binary with its own main (harness = false), whether the test `name` was
/// asked for: cargo passes libtest's flags and filters, and a filter naming another test
/// means this one was not.
pub fn asked_for(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// Under CI a missing prerequisite is a failure; elsewhere the test says what it skipped.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing under CI: {what}");
    }
    eprintln!("SKIPPED (prerequisite missing: {what})");
    false
}

pub fn is_root() -> bool {
    pam_apppass::uids().1 == 0
}

/// A name no other test (or earlier run) uses, for PAM service names and markers.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(6))
}

/// `n` random bytes in hex: names and throwaway passwords.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A loopback TCP port nobody listens on now, for a server of the test's own.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory cargo builds the workspace's binaries and the module into: the one
/// above this test's own executable (`target/debug/deps/..`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap().to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// A binary of the workspace (`cargo build --workspace` builds them; scripts/test does).
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run cargo build --workspace first (scripts/test does)",
        path.display()
    );
    path
}

pub fn apppass_bin() -> PathBuf {
    workspace_bin("apppass")
}

/// The module cargo built next to the binaries (`cargo build`), or in `deps/` (where
/// `cargo test` alone leaves it).
pub fn built_module() -> PathBuf {
    let dir = target_dir();
    let candidates = [
        dir.join("libpam_apppass.so"),
        dir.join("deps/libpam_apppass.so"),
    ];
    let newest = candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p.clone());
    newest.unwrap_or_else(|| panic!("{} not built", candidates[0].display()))
}

/// An app password as `apppass add --json` printed it.
#[derive(Debug, Clone)]
pub struct Added {
    pub id: i64,
    pub password: String,
}

/// One test's world: a directory with apppassd's store and socket, the module (as
/// `pam_apppass.so`, so that libpam logs it under that name), PAM service files and a
/// configuration; and apppassd itself, running on them.
pub struct Sandbox {
    pub daemon: Daemon,
    pub db: PathBuf,
    pub socket: PathBuf,
    pub module: PathBuf,
    pub confdir: PathBuf,
    pub conf: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox::with_config("# empty: defaults\n")
    }

    /// A sandbox whose apppass.conf says `conf`.
    pub fn with_config(conf_text: &str) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("apppass-test")
            .tempdir()
            .unwrap();
        let module = dir.path().join("pam_apppass.so");
        std::os::unix::fs::symlink(built_module(), &module).unwrap();
        let confdir = dir.path().join("pam.d");
        std::fs::create_dir(&confdir).unwrap();
        let conf = dir.path().join("apppass.conf");
        std::fs::write(&conf, quiet(conf_text)).unwrap();
        let daemon = Daemon::start(dir.path(), &conf);
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

    /// Rewrites apppass.conf and restarts apppassd on it.
    pub fn reconfigure(&mut self, conf_text: &str) {
        std::fs::write(&self.conf, quiet(conf_text)).unwrap();
        self.daemon.stop();
        self.daemon = Daemon::start(self.dir.path(), &self.conf);
    }

    /// Runs the CLI against this sandbox's apppassd.
    pub fn apppass(&self, args: &[&str]) -> Output {
        Command::new(apppass_bin())
            .arg("--socket")
            .arg(&self.socket)
            .arg("--config")
            .arg(&self.conf)
            .args(args)
            .output()
            .unwrap()
    }

    /// `apppass add --json` for `user` and `service`.
    pub fn add(&self, user: &str, service: &str, extra: &[&str]) -> Added {
        let mut args = vec!["add", "--user", user, "--service", service, "--json"];
        args.extend_from_slice(extra);
        let out = self.apppass(&args);
        assert!(
            out.status.success(),
            "add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Added {
            id: v["id"].as_i64().unwrap(),
            password: v["password"].as_str().unwrap().to_string(),
        }
    }

    /// `apppass list --all --json`.
    pub fn list(&self) -> Vec<serde_json::Value> {
        self.json_array(&["list", "--all", "--json"])
    }

    /// `apppass ARGS`, which must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.apppass(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `apppass ARGS`, which must succeed and print a JSON array.
    pub fn json_array(&self, args: &[&str]) -> Vec<serde_json::Value> {
        self.json(args).as_array().unwrap().clone()
    }

    /// Writes a PAM service file; `{module}`, `{socket}` and `{conf}` are replaced.
    pub fn service(&self, name: &str, text: &str) {
        let text = text
            .replace("{module}", &self.module.display().to_string())
            .replace("{socket}", &self.socket.display().to_string())
            .replace("{conf}", &self.conf.display().to_string());
        std::fs::write(self.confdir.join(name), text).unwrap();
    }

    /// A service that only asks pam_apppass, with `args` after the usual ones.
    pub fn simple_service(&self, name: &str, args: &str) {
        self.service(
            name,
            &format!("auth required {{module}} socket={{socket}} conf={{conf}} {args}\n"),
        );
    }

    /// One login through libpam.
    pub fn login(
        &self,
        service: &str,
        user: &str,
        password: &[u8],
        rhost: Option<&str>,
    ) -> Outcome {
        login_in(&self.confdir, service, user, password, rhost)
    }

    pub fn code(&self, service: &str, user: &str, password: &str) -> Code {
        self.login(service, user, password.as_bytes(), Some("192.0.2.1"))
            .code
    }
}

/// One login through libpam, with the service file from `confdir` (for child processes,
/// which have the directory but not the [`Sandbox`]).
pub fn login_in(
    confdir: &Path,
    service: &str,
    user: &str,
    password: &[u8],
    rhost: Option<&str>,
) -> Outcome {
    client::authenticate(&Attempt {
        confdir,
        service,
        user: user.as_bytes(),
        password,
        rhost,
    })
    .unwrap()
}

/// Lines the real syslog daemon wrote to /var/log/auth.log (Debian's rsyslog).
pub struct AuthLog {
    start: u64,
}

pub const AUTH_LOG: &str = "/var/log/auth.log";

impl AuthLog {
    /// Starts watching; `None` (or a failure under CI) when no syslog daemon listens.
    pub fn open() -> Option<AuthLog> {
        // A socket left by a daemon that has gone still exists: connect to know.
        let listening = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log"))
            .is_ok();
        let present = listening && Path::new(AUTH_LOG).exists();
        if !require(
            present,
            "a syslog daemon writing /var/log/auth.log (rsyslog)",
        ) {
            return None;
        }
        let start = std::fs::metadata(AUTH_LOG).unwrap().len();
        Some(AuthLog { start })
    }

    /// Waits (up to 10 s) until at least `n` new lines contain `marker`; returns them.
    pub fn wait_for(&self, marker: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.lines_with(marker);
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn lines_with(&self, marker: &str) -> Vec<String> {
        let mut f = std::fs::File::open(AUTH_LOG).unwrap();
        // A rotated log starts again from zero.
        let start = if f.metadata().unwrap().len() < self.start {
            0
        } else {
            self.start
        };
        f.seek(SeekFrom::Start(start)).unwrap();
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains(marker))
            .collect()
    }
}

/// A real apppassd, started by the test on a socket and store of its own (`apppassd
/// --db DB --socket SOCK --config CONF`, nothing else set up), stopped with SIGTERM when
/// dropped.
pub struct Daemon {
    pub child: std::process::Child,
    pub socket: PathBuf,
    pub db: PathBuf,
    pub conf: PathBuf,
}

impl Daemon {
    /// Starts apppassd in `dir` (socket `dir/apppassd.sock`, store `dir/db/apppass.db`,
    /// configuration `conf`) and waits until it answers.
    pub fn start(dir: &Path, conf: &Path) -> Daemon {
        Daemon::start_with(dir, conf, &[])
    }

    /// [`Daemon::start`] with more arguments for apppassd.
    pub fn start_with(dir: &Path, conf: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_at(dir, &dir.join("db/apppass.db"), conf, extra)
    }

    /// [`Daemon::start_with`] on the store `db`.
    pub fn start_at(dir: &Path, db: &Path, conf: &Path, extra: &[&str]) -> Daemon {
        let socket = dir.join("apppassd.sock");
        let db = db.to_path_buf();
        // Its log (every login is a line) goes to a file beside its socket, not into
        // the test's output: `Daemon::log` reads it.
        let log = std::fs::File::create(dir.join("apppassd.log")).unwrap();
        let child = Command::new(workspace_bin("apppassd"))
            .arg("--db")
            .arg(&db)
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(conf)
            .arg("--stderr")
            .args(extra)
            .stderr(log)
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child,
            socket,
            db,
            conf: conf.to_path_buf(),
        };
        daemon.wait_ready();
        daemon
    }

    /// Waits (up to 20 s) until the socket answers a status request and apppassd has
    /// tried its store (whether it could use it or not).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("apppassd exited at start: {status}\n{}", self.log());
            }
            if self
                .status()
                .is_some_and(|s| s.store_error.as_deref() != Some(apppassd::state::OPENING))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "apppassd did not answer within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// apppassd's status, or `None` if it does not answer.
    pub fn status(&self) -> Option<apppass_proto::Status> {
        match self.call(&apppass_proto::Request::Status).ok()? {
            apppass_proto::Response::Status(s) => Some(*s),
            _ => None,
        }
    }

    /// One request through the protocol's own client.
    pub fn call(
        &self,
        request: &apppass_proto::Request,
    ) -> Result<apppass_proto::Response, apppass_proto::ClientError> {
        let own = pam_apppass::uids().1;
        let mut client =
            apppass_proto::Client::connect(&self.socket, Duration::from_secs(10), &[0, own])?;
        client.call(request)
    }

    /// What it logged so far (a copy of its syslog lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.socket.with_file_name("apppassd.log")).unwrap_or_default()
    }

    /// Its log lines that contain every one of `parts`, once there are `n` (a login's
    /// line is written after its answer), waiting at most 10 s.
    pub fn log_lines(&self, parts: &[&str], n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<String> = self
                .log()
                .lines()
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .map(str::to_string)
                .collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it with SIGTERM and waits for it to exit; returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal(self.child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends signal `name` (TERM, KILL, STOP, CONT) to `pid`.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A test's configuration, with owner notices off unless it is about them (names
/// `notify` or `sendmail`): the machine's own sendmail (Postfix, installed for
/// tests/postfix.rs) must not get a mail per `add`.
pub fn quiet(conf_text: &str) -> String {
    let about_notices = conf_text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("notify") || l.starts_with("sendmail")
    });
    if about_notices {
        conf_text.to_string()
    } else {
        format!("notify = no\n{conf_text}")
    }
}

/// A command that runs as `user` (setpriv, with that user's groups; `None`: as this
/// process, through env), followed by the program and its arguments.
pub fn as_user(user: Option<&str>) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--init-groups",
                "--",
            ]);
            c.env("HOME", "/nonexistent");
            c
        }
        None => Command::new("env"),
    }
}
