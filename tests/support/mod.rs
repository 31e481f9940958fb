//! Helpers on top of tests/common: of the fault, abuse, concurrency and timing tests
//! (tests/faults.rs, tests/crash.rs, tests/concurrency.rs, tests/properties.rs,
//! tests/timing.rs, tests/leak_logins.rs), of the benchmark (benches/login), and the one
//! wrong-secret spelling every test that logs in with a mistyped password uses.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use apppass_core::policy::Account;
use apppass_core::secret::{HashParams, NewPassword};
use apppass_core::store::sqlite::{Purpose, SqliteStore};
use apppass_core::store::{NewRow, Store, StoreError};

use crate::common::{self, Daemon, Sandbox};

/// argon2id's cheapest parameters: for tests where the cost of a hash is not the point.
pub const CHEAP: HashParams = HashParams {
    m_kib: 8,
    t: 1,
    p: 1,
};

/// Puts an app password hashed at `params` into apppassd's SQLite store `db` directly,
/// through the store API (apppassd makes only hashes at the configured cost, never below
/// OWASP's minimum); returns its id and the password as shown. A running apppassd reads
/// it at its next lookup: the row is committed before this returns.
/// A store apppassd has not made yet is waited for, up to 10 s (see [`wait_for_store`]).
pub fn insert_row(db: &Path, user: &str, service: &str, params: HashParams) -> (i64, String) {
    insert_owned_row(db, user, service, params, Account::NoAccount)
}

/// [`insert_row`], for the account `owner`.
pub fn insert_owned_row(
    db: &Path,
    user: &str,
    service: &str,
    params: HashParams,
    owner: Account,
) -> (i64, String) {
    let pw = NewPassword::generate().unwrap();
    let hash = pw.hash(params).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match SqliteStore::open(db, Purpose::Admin, false) {
            Ok(s) => break s,
            Err(StoreError::Missing(_) | StoreError::Uninitialised(_))
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{}: {e}", db.display()),
        }
    };
    let id = store
        .create(&NewRow {
            user,
            service,
            label: "test row",
            selector: pw.selector(),
            hash: &hash,
            created: 0,
            expires: None,
            owner,
            networks: "",
        })
        .unwrap();
    (id, pw.display().to_string())
}

/// Whether `program` is installed: an executable of that name in PATH (or in the sbin
/// directories, which a non-login root shell may lack).
pub fn have(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .any(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The environment variable that makes a test binary a helper process (see [`helper`]).
pub const HELPER: &str = "APPPASS_TEST_HELPER";

/// Starts this very test binary again as a helper: the libtest harness runs only the
/// test named `test` (which must call [`helper_role`] first), with `role` and `args`
/// handed over in the environment.
pub fn helper(test: &str, role: &str, args: &[(&str, &str)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(HELPER, role);
    for (k, v) in args {
        c.env(k, v);
    }
    c
}

/// The role this process was started in by [`helper`], if any.
pub fn helper_role() -> Option<String> {
    std::env::var(HELPER).ok()
}

pub fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} not set")))
}

/// Kills (SIGKILL) and reaps a child we started, if it is still running.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `password` with its last character changed to another of the alphabet: the selector
/// still names its row, the secret is wrong.
pub fn wrong_secret(password: &str) -> String {
    let mut w = password.to_string();
    let last = w.pop().unwrap();
    w.push(if last == '2' { '3' } else { '2' });
    w
}

// ---------------------------------------------------------------------------------------
// apppassd and its store, seen from outside

/// Starts apppassd like [`Daemon::start_at`] (socket `dir/apppassd.sock`), but with
/// what it writes to stderr (`--stderr`: every log line) kept in `dir/apppassd.log`, so
/// that a test can read what it said and check that it never reported a bug (a panic
/// is logged as "internal error"). The file is started afresh. Returns once apppassd
/// has tried its store ([`wait_for_store`]).
pub fn daemon_with_log(dir: &Path, db: &Path, conf: &Path, extra: &[&str]) -> (Daemon, PathBuf) {
    let (daemon, log) = start_with_log(dir, db, conf, extra);
    wait_for_store(&daemon);
    (daemon, log)
}

/// [`daemon_with_log`], returning as soon as apppassd answers, before its workers may
/// have opened the store.
pub fn start_with_log(dir: &Path, db: &Path, conf: &Path, extra: &[&str]) -> (Daemon, PathBuf) {
    let (mut daemon, log) = spawn_with_log(dir, db, conf, extra);
    daemon.wait_ready();
    (daemon, log)
}

/// apppassd started as [`daemon_with_log`] does, without waiting for anything: for a
/// test that measures how soon it answers.
pub fn spawn_with_log(dir: &Path, db: &Path, conf: &Path, extra: &[&str]) -> (Daemon, PathBuf) {
    let socket = dir.join("apppassd.sock");
    let log = dir.join("apppassd.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(common::workspace_bin("apppassd"))
        .arg("--db")
        .arg(db)
        .arg("--socket")
        .arg(&socket)
        .arg("--config")
        .arg(conf)
        .arg("--stderr")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let daemon = Daemon {
        child,
        socket,
        db: db.to_path_buf(),
        conf: conf.to_path_buf(),
    };
    (daemon, log)
}

/// Waits (up to 10 s) until apppassd has tried its store: its status shows a schema
/// version or a store error other than "still opening it".
pub fn wait_for_store(d: &Daemon) -> apppass_proto::Status {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = d.status().expect("apppassd does not answer status");
        let opening = status.store_error.as_deref() == Some(apppassd::state::OPENING);
        if !opening && (status.schema_version.is_some() || status.store_error.is_some()) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "apppassd did not open its store within 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Restarts a sandbox's apppassd (same store, socket and configuration) with its log
/// kept (see [`daemon_with_log`]); returns the log's path.
/// (An apppassd the test killed is not signalled again: its pid may be another's now.)
pub fn restart_with_log(s: &mut Sandbox) -> PathBuf {
    if s.daemon.child.try_wait().unwrap().is_none() {
        s.daemon.stop();
    }
    let (daemon, log) = daemon_with_log(s.dir.path(), &s.db, &s.conf, &[]);
    s.daemon = daemon;
    log
}

/// What apppassd has logged so far.
pub fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// apppassd is still running (it did not exit or crash) and answers a status request;
/// returns the status.
pub fn assert_alive(d: &mut Daemon) -> apppass_proto::Status {
    if let Some(status) = d.child.try_wait().unwrap() {
        panic!("apppassd exited: {status}");
    }
    d.status().expect("apppassd does not answer status")
}

/// Stops apppassd with SIGTERM and checks that it stopped the way it should (exit 0,
/// not a crash) and, if its log is given, that it never reported a bug.
pub fn assert_clean_stop(d: &mut Daemon, log: Option<&Path>) {
    let status = d.stop();
    assert!(status.success(), "apppassd stopped with {status}");
    if let Some(log) = log {
        let text = read_log(log);
        for bug in ["internal error", "panicked"] {
            assert!(!text.contains(bug), "apppassd logged {bug:?}:\n{text}");
        }
    }
}

/// `path` with `suffix` appended: SQLite's `-wal`, `-shm` and `-journal` beside a store.
pub fn side_file(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// SQLite's own verdict on a store file (`ok` when whole), read beside apppassd.
pub fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// The CLI failed the way it should when apppassd cannot do what it asks: exit status
/// 1, a message that says why (one of `why`), no panic.
pub fn assert_cli_failed(out: &Output, why: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        why.iter().any(|w| err.contains(w)),
        "expected one of {why:?} in: {err}"
    );
}

/// Everything the store holds that a client can see, as the CLI shows it: every app
/// password (`list --all --json`) and the audit log (`log --all --json`).
pub fn visible_store(s: &Sandbox) -> (String, String) {
    let get = |args: &[&str]| {
        let out = s.apppass(args);
        assert!(
            out.status.success(),
            "apppass {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    (
        get(&["list", "--all", "--json"]),
        get(&["log", "--all", "--json", "--limit", "100000"]),
    )
}

/// xorshift64*: reproducible randomness from a seed that is printed, and can be given
/// back through the environment variable `var` to replay a failure.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).unwrap();
                u64::from_le_bytes(b) | 1
            });
        println!("seed: {var}={seed}");
        Rng(seed)
    }

    /// From a fixed seed, for what must come out the same on every run.
    pub fn fixed(seed: u64) -> Rng {
        // xorshift's state must not be zero.
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}
