//! Fault tests: a real apppassd on stores that are locked by a long writer, read-only,
//! on a full filesystem, missing, not a file, unsafe, corrupt, or hold hashes it must not
//! compute, with the built module loaded by the real libpam asking it.
//!
//! What must hold: apppassd stays up (never exits, never hangs) and says why when it
//! cannot use its store (`status` shows `store_error`; every request is answered
//! "unavailable" with the reason, which the module turns into PAM_AUTHINFO_UNAVAIL and
//! the CLI into a message and exit status 1); wherever the data can be read, right
//! passwords log in and wrong ones do not; a change either completes and is there, or
//! fails saying why; nothing an attacker plants beside the store is ever read.
//!
//! Tests that mount filesystems, change attributes or files' owners need root (and
//! mount, chattr): under CI=true they fail without them, elsewhere they say what they
//! skipped. The long writer is this test binary again, in a helper role, holding
//! SQLite's locks from another process the way a backup tool or a stray sqlite3 shell
//! would.

mod common;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Added, Daemon, Sandbox, is_root, require};
use pam_apppass::code::Code;
use support::{
    CHEAP, assert_alive, assert_clean_stop, assert_cli_failed, daemon_with_log, have, helper,
    helper_role, insert_row, integrity, kill, read_log, restart_with_log, side_file, wrong_secret,
};

/// Longer than any login may take, whatever the store does (the module's timeout is
/// 5 s): not a speed claim, a hang detector.
const NO_HANG: Duration = Duration::from_secs(15);

/// The uid files are given to when they must be someone else's.
const NOBODY: u32 = 65534;

fn wal_len(db: &Path) -> u64 {
    std::fs::metadata(side_file(db, "-wal")).map_or(0, |m| m.len())
}

/// One login through libpam, which must come back within [`NO_HANG`].
fn login(s: &Sandbox, service: &str, user: &str, password: &str) -> Code {
    let started = Instant::now();
    let code = s.code(service, user, password);
    let took = started.elapsed();
    assert!(took < NO_HANG, "a login took {took:?}");
    code
}

fn use_count(s: &Sandbox, id: i64) -> i64 {
    s.list()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| r["use_count"].as_i64().unwrap())
        .unwrap()
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
}

/// A PAM service `name` that asks the apppassd listening on `socket`.
fn service_for(s: &Sandbox, name: &str, socket: &Path, args: &str) {
    s.service(
        name,
        &format!(
            "auth required {{module}} conf={{conf}} socket={} {args}\n",
            socket.display()
        ),
    );
}

/// The CLI against the apppassd listening on `socket`.
fn cli_at(s: &Sandbox, socket: &Path, args: &[&str]) -> Output {
    Command::new(common::apppass_bin())
        .arg("--socket")
        .arg(socket)
        .arg("--config")
        .arg(&s.conf)
        .args(args)
        .output()
        .unwrap()
}

/// apppassd `d` is up but cannot use its store: `status` says why (and the reason
/// contains `why`), a login with a right password is PAM_AUTHINFO_UNAVAIL at once, the
/// CLI fails with the reason and exit status 1, and apppassd is still there afterwards.
fn unavailable(s: &Sandbox, d: &mut Daemon, service: &str, pw: &str, why: &str, what: &str) {
    let reason = assert_alive(d)
        .store_error
        .unwrap_or_else(|| panic!("{what}: apppassd uses the store"));
    assert!(reason.contains(why), "{what}: {reason}");
    let started = Instant::now();
    assert_eq!(
        login(s, service, "alice", pw),
        Code::AUTHINFO_UNAVAIL,
        "{what}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{what}: PAM_AUTHINFO_UNAVAIL took {:?}",
        started.elapsed()
    );
    for args in [
        &["list", "--all"][..],
        &["add", "--user", "alice", "--service", "imap"],
    ] {
        let out = cli_at(s, &d.socket, args);
        assert_cli_failed(&out, &["store unavailable"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{what}: apppass {args:?}: {err}");
    }
    assert_alive(d);
}

// ---------------------------------------------------------------------------------------
// Many logins

/// apppassd keeps its connections open and writes a record at every login; the WAL they
/// write to must still stay bounded (SQLite's checkpoints must not be starved by the
/// workers' connections), or a busy server's disk fills up and every lookup rereads a
/// long WAL. 1000 pages (SQLite's autocheckpoint) of 4 KiB are 4 MiB.
#[test]
fn wal_stays_bounded_over_many_logins() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let (id, pw) = insert_row(&s.db, "alice", "imap", CHEAP);
    const LOGINS: usize = 1500;
    let mut largest = 0;
    let started = Instant::now();
    for i in 0..LOGINS {
        assert_eq!(s.code("imap", "alice", &pw), Code::SUCCESS, "login {i}");
        largest = largest.max(wal_len(&s.db));
    }
    println!(
        "largest WAL over {LOGINS} logins: {largest} bytes ({:.1} ms a login)",
        started.elapsed().as_secs_f64() * 1000.0 / LOGINS as f64
    );
    assert!(
        largest < 6 << 20,
        "the WAL grew to {largest} bytes over {LOGINS} logins"
    );
    // Every login was recorded.
    assert_eq!(use_count(&s, id), LOGINS as i64);
}

// ---------------------------------------------------------------------------------------
// A long writer

/// What the helper process does to the store while the test logs in.
const WRITER_DB: &str = "APPPASS_WRITER_DB";

/// What the writer prints once it holds its locks (libtest may print the test's name
/// before it on the same line).
const HOLDING: &str = "writer-holds-its-locks";

/// The long writer: opens the store, takes its locks the way `mode` says, prints
/// [`HOLDING`], and keeps them until its stdin closes (or it is killed).
#[test]
fn helper_long_writer() {
    let Some(mode) = helper_role() else { return };
    let db = support::env_path(WRITER_DB);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let change =
        "INSERT INTO event (time, user, service, outcome) VALUES (1, 'writer', 'imap', 'success');
                  UPDATE app_password SET label = 'being changed';";
    match mode.as_str() {
        // A write transaction left open: the write lock, and uncommitted pages in memory.
        "immediate" => conn.execute_batch(&format!("BEGIN IMMEDIATE; {change}")),
        // In WAL mode EXCLUSIVE is IMMEDIATE by another name: readers still read.
        "exclusive" => conn.execute_batch(&format!("BEGIN EXCLUSIVE; {change}")),
        // locking_mode=EXCLUSIVE: after its first write the connection keeps an exclusive
        // lock on the file and no other process can even read.
        "exclusive_mode" => conn.execute_batch(&format!(
            "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; {change} COMMIT; BEGIN EXCLUSIVE; {change}"
        )),
        other => panic!("unknown writer mode {other}"),
    }
    .unwrap();
    println!("{HOLDING}");
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

/// Starts the long writer and waits until it holds its locks.
fn start_writer(db: &Path, mode: &str) -> Child {
    let mut child = helper(
        "helper_long_writer",
        mode,
        &[(WRITER_DB, &db.to_string_lossy())],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let held = lines.any(|l| l.is_ok_and(|l| l.ends_with(HOLDING)));
    assert!(held, "the writer ({mode}) never took its locks");
    child
}

/// The CLI against the sandbox's apppassd, in the background.
fn spawn_cli(s: &Sandbox, args: &[&str]) -> Child {
    Command::new(common::apppass_bin())
        .arg("--socket")
        .arg(&s.socket)
        .arg("--config")
        .arg(&s.conf)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Another process holds SQLite's write lock: logins go on (their record is best effort
/// and gives up), the CLI reads; a change waits for the lock and is made once it is
/// released.
#[test]
fn locked_store_logins_go_on_and_changes_wait() {
    let mut s = Sandbox::with_config("workers = 2\n");
    let log = restart_with_log(&mut s);
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &["--label", "phone"]);
    let old = s.add("alice", "imap", &[]);
    for mode in ["immediate", "exclusive"] {
        let mut writer = start_writer(&s.db, mode);
        let started = Instant::now();
        assert_eq!(
            login(&s, "imap", "alice", &pw.password),
            Code::SUCCESS,
            "{mode}"
        );
        // The record waits at most half a second for the lock, then gives up.
        assert!(started.elapsed() < Duration::from_secs(3), "{mode}");
        assert_eq!(
            login(&s, "imap", "alice", &wrong_secret(&pw.password)),
            Code::AUTH_ERR,
            "{mode}"
        );
        assert_eq!(login(&s, "imap", "bob", &pw.password), Code::USER_UNKNOWN);
        let out = s.apppass(&["list", "--all", "--json"]);
        assert!(out.status.success(), "{mode}: {out:?}");
        kill(&mut writer);
        // The logins' records gave up (and said so), and the writer's uncommitted
        // change is gone.
        let row = s.list().into_iter().find(|r| r["id"] == pw.id).unwrap();
        assert_eq!(
            (row["use_count"].as_i64(), row["label"].as_str()),
            (Some(0), Some("phone")),
            "{mode}"
        );
        assert_eq!(integrity(&s.db), "ok");
    }
    assert!(read_log(&log).contains("could not record the attempt"));
    assert_eq!(login(&s, "imap", "alice", &pw.password), Code::SUCCESS);
    assert_eq!(use_count(&s, pw.id), 1);

    // Changes that meet the writer wait for it, and are made once it is gone; nobody is
    // told "database is locked".
    let mut writer = start_writer(&s.db, "immediate");
    let add = spawn_cli(
        &s,
        &["add", "--user", "alice", "--service", "imap", "--json"],
    );
    let revoke = spawn_cli(&s, &["revoke", &old.id.to_string()]);
    std::thread::sleep(Duration::from_millis(1500));
    kill(&mut writer);
    for (what, child) in [("add", add), ("revoke", revoke)] {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("locked"),
            "{what}: {err}"
        );
    }
    assert_eq!(s.list().len(), 3);
    assert_eq!(login(&s, "imap", "alice", &old.password), Code::AUTH_ERR);
    assert_clean_stop(&mut s.daemon, Some(&log));
}

/// A writer that never lets go: changes give up after their wait (10 s) with a message
/// that says why and exit status 1, nothing is half made; meanwhile, logins go on, on
/// the workers the waiting changes leave free.
#[test]
fn locked_store_changes_fail_clearly_and_logins_go_on() {
    let mut s = Sandbox::with_config("workers = 2\n");
    let log = restart_with_log(&mut s);
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    let before = support::visible_store(&s).0;
    let mut writer = start_writer(&s.db, "immediate");
    let started = Instant::now();
    let add = spawn_cli(&s, &["add", "--user", "alice", "--service", "imap"]);
    // Logins while the change waits.
    let mut logins = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        let code = login(&s, "imap", "alice", &pw.password);
        logins.push((code, t.elapsed()));
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = add.wait_with_output().unwrap();
    let waited = started.elapsed();
    kill(&mut writer);
    println!("the add gave up after {waited:?}; logins meanwhile: {logins:?}");
    assert_cli_failed(&out, &["database is locked"]);
    assert!(waited >= Duration::from_secs(8), "{waited:?}");
    assert!(
        logins
            .iter()
            .all(|(c, t)| *c == Code::SUCCESS && *t < Duration::from_secs(3)),
        "logins while a change waited: {logins:?}"
    );
    assert_eq!(support::visible_store(&s).0, before);
    assert_eq!(integrity(&s.db), "ok");
    assert_clean_stop(&mut s.daemon, Some(&log));
}

/// As many changes waiting for the lock as apppassd has workers (two here): logins must
/// still be answered, within their timeout, while the changes wait; a change waiting
/// for a lock must not hold every worker that could verify a password.
#[test]
fn locked_store_changes_on_every_worker_do_not_starve_logins() {
    let mut s = Sandbox::with_config("workers = 2\n");
    let log = restart_with_log(&mut s);
    s.simple_service("imap", "timeout=3s");
    let pw = s.add("alice", "imap", &[]);
    let mut writer = start_writer(&s.db, "immediate");
    let started = Instant::now();
    let changes: Vec<Child> = (0..2)
        .map(|_| spawn_cli(&s, &["add", "--user", "alice", "--service", "imap"]))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut logins = Vec::new();
    while started.elapsed() < Duration::from_secs(6) {
        let t = Instant::now();
        logins.push((login(&s, "imap", "alice", &pw.password), t.elapsed()));
    }
    for c in changes {
        assert_cli_failed(&c.wait_with_output().unwrap(), &["database is locked"]);
    }
    kill(&mut writer);
    println!("logins while every worker waited for the lock: {logins:?}");
    assert!(
        logins.iter().all(|(c, _)| *c == Code::SUCCESS),
        "logins starved by changes waiting for a lock: {logins:?}"
    );
    assert_clean_stop(&mut s.daemon, Some(&log));
}

/// A writer in exclusive locking mode keeps everyone out, readers included. It cannot
/// take that lock while apppassd's connections are open, but it can hold it when
/// apppassd starts (a backup tool, a stray sqlite3 shell): then apppassd must still
/// answer at once (`status` says why the store is unusable), a login is
/// PAM_AUTHINFO_UNAVAIL within the module's timeout, and once the writer is gone apppassd
/// takes the store without being restarted.
#[test]
fn store_locked_against_readers_at_start() {
    let mut s = Sandbox::new();
    s.simple_service("imap", "timeout=2s");
    let pw = s.add("alice", "imap", &[]);
    s.daemon.stop();
    let mut writer = start_writer(&s.db, "exclusive_mode");
    let started = Instant::now();
    let (daemon, log) = support::spawn_with_log(s.dir.path(), &s.db, &s.conf, &[]);
    s.daemon = daemon;
    // Listening (its socket bound) is the moment a client can reach it.
    while !s.socket.exists() {
        assert!(started.elapsed() < NO_HANG, "apppassd never listened");
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    let code = login(&s, "imap", "alice", &pw.password);
    let login_took = t.elapsed();
    // How soon apppassd answers status, polled (the login above may have taken the
    // whole of its timeout).
    // Answered at once ("opening its store"), and soon with the reason.
    let status = loop {
        if let Some(st) = s
            .daemon
            .status()
            .filter(|st| st.store_error.as_deref() != Some(apppassd::state::OPENING))
        {
            break st;
        }
        assert!(
            s.daemon.child.try_wait().unwrap().is_none(),
            "apppassd exited:\n{}",
            read_log(&log)
        );
        assert!(started.elapsed() < NO_HANG, "apppassd never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    let answered = started.elapsed();
    println!(
        "store locked at start: login {} after {login_took:?}; status after {answered:?}: {:?}",
        code.name(),
        status.store_error
    );
    assert_eq!(code, Code::AUTHINFO_UNAVAIL);
    assert!(login_took < Duration::from_secs(4), "{login_took:?}");
    kill(&mut writer);
    let deadline = Instant::now() + Duration::from_secs(30);
    while login(&s, "imap", "alice", &pw.password) != Code::SUCCESS {
        assert!(Instant::now() < deadline, "logins did not come back");
        std::thread::sleep(Duration::from_millis(250));
    }
    println!("logins back {:?} after the start", started.elapsed());
    assert_eq!(assert_alive(&mut s.daemon).store_error, None);
    assert_eq!(integrity(&s.db), "ok");
    assert_clean_stop(&mut s.daemon, Some(&log));
    // Deaf for the store's lock timeout would leave `apppass status`, doctor and every
    // client waiting for nothing: it must answer at once and say why.
    assert!(
        answered < Duration::from_secs(3),
        "apppassd answered nothing for {answered:?} while its store was locked at start"
    );
    assert!(
        status.store_error.is_some_and(|e| e.contains("locked")),
        "status did not say the store is locked"
    );
}

// ---------------------------------------------------------------------------------------
// Read-only

/// Undoes `chattr +i` and mounts when dropped, also when the test fails.
#[derive(Default)]
struct Undo {
    immutable: Vec<PathBuf>,
    mounts: Vec<PathBuf>,
}

impl Undo {
    fn chattr_immutable(&mut self, path: &Path) {
        support::run_ok(Command::new("chattr").arg("+i").arg(path));
        self.immutable.push(path.to_path_buf());
    }

    fn mount(&mut self, args: &[&str], target: &Path) {
        support::run_ok(Command::new("mount").args(args).arg(target));
        if !self.mounts.iter().any(|m| m == target) {
            self.mounts.push(target.to_path_buf());
        }
    }

    fn umount_all(&mut self) {
        for m in self.mounts.drain(..).rev() {
            // The bind mount of a remount sits on top of the first: unmount until gone
            // (lazily, if a failed test left apppassd holding files there).
            for _ in 0..2 {
                let ok = Command::new("umount")
                    .arg(&m)
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !ok {
                    let _ = Command::new("umount").arg("-l").arg(&m).output();
                }
            }
        }
    }

    fn clear_immutable(&mut self) {
        for p in self.immutable.drain(..) {
            let _ = Command::new("chattr").arg("-i").arg(&p).output();
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        self.clear_immutable();
        self.umount_all();
    }
}

fn need_root_and(tools: &[&str]) -> bool {
    require(is_root(), "root (mounts, chattr, chown)") && tools.iter().all(|t| require(have(t), t))
}

/// Everything that should work on a store apppassd can read but not write: logins
/// (their record fails, and is logged), listings; changes fail saying why.
fn read_but_not_write(s: &mut Sandbox, pw: &Added, what: &str) {
    assert_eq!(assert_alive(&mut s.daemon).store_error, None, "{what}");
    assert_eq!(
        login(s, "imap", "alice", &pw.password),
        Code::SUCCESS,
        "{what}"
    );
    assert_eq!(
        login(s, "imap", "alice", &wrong_secret(&pw.password)),
        Code::AUTH_ERR,
        "{what}"
    );
    assert_eq!(
        login(s, "imap", "bob", &pw.password),
        Code::USER_UNKNOWN,
        "{what}"
    );
    let readonly = ["readonly", "read-only", "read only"];
    let out = s.apppass(&["add", "--user", "alice", "--service", "imap"]);
    assert_cli_failed(&out, &readonly);
    let out = s.apppass(&["revoke", "--user", "alice", "--all"]);
    assert_cli_failed(&out, &readonly);
    let out = s.apppass(&["list", "--all"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("alice") && !listed.contains("revoked"),
        "{what}: apppass list: {out:?}"
    );
    let out = s.apppass(&["log", "--user", "alice"]);
    assert!(out.status.success(), "{what}: apppass log: {out:?}");
    assert_alive(&mut s.daemon);
}

/// apppassd started on a store it can read but not write (an immutable file, a
/// read-only mount): store::open_daemon falls back to a read-only connection.
#[test]
fn read_only_store() {
    if !need_root_and(&["chattr", "mount", "umount"]) {
        return;
    }
    let mut s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    let dir = s.db.parent().unwrap().to_path_buf();
    let mut undo = Undo::default();

    // 1. The file immutable (root's file modes do not stop root).
    let uses = use_count(&s, pw.id);
    s.daemon.stop();
    undo.chattr_immutable(&s.db);
    let log = restart_with_log(&mut s);
    read_but_not_write(&mut s, &pw, "chattr +i");
    assert_clean_stop(&mut s.daemon, Some(&log));
    undo.clear_immutable();
    restart_with_log(&mut s);
    // Nothing could be recorded, and nothing else changed.
    assert_eq!((s.list().len(), use_count(&s, pw.id)), (1, uses));

    // 2. The directory mounted read-only over a store whose WAL holds nothing (as a
    //    clean stop should leave it; see crash.rs, clean_stop_folds_the_wal_into_the_store
    //    for why it is folded here by hand).
    s.daemon.stop();
    fold_wal(&s.db);
    let d = dir.to_str().unwrap();
    undo.mount(&["--bind", d], &dir);
    undo.mount(&["-o", "remount,bind,ro"], &dir);
    let log = restart_with_log(&mut s);
    read_but_not_write(&mut s, &pw, "read-only mount");
    assert_clean_stop(&mut s.daemon, Some(&log));
    undo.umount_all();
    restart_with_log(&mut s);
    assert_eq!((s.list().len(), use_count(&s, pw.id)), (1, uses));
    assert_eq!(login(&s, "imap", "alice", &pw.password), Code::SUCCESS);
    assert_eq!(use_count(&s, pw.id), uses + 1);
    s.daemon.stop();
    assert_eq!(integrity(&s.db), "ok");
}

/// apppassd killed (SIGKILL) right after a revoke: the revoke is in the WAL only, not yet
/// in the store's file. Then the directory is mounted read-only, with the WAL index left
/// or gone, and apppassd started on it: SQLite cannot use the WAL without a writable
/// index, and the file alone is out of date. The revoked password must not log in.
#[test]
fn read_only_mount_with_a_wal_left_behind() {
    if !need_root_and(&["mount", "umount"]) {
        return;
    }
    let mut s = Sandbox::new();
    s.simple_service("imap", "");
    let dir = s.db.parent().unwrap().to_path_buf();
    for keep_index in [false, true] {
        let what = if keep_index {
            "WAL and index left"
        } else {
            "WAL left, index gone"
        };
        let revoked = s.add("alice", "imap", &["--label", "revoke-me"]);
        let kept = s.add("alice", "imap", &[]);
        // A fresh apppassd whose WAL holds nothing but the revoke.
        s.daemon.stop();
        restart_with_log(&mut s);
        assert!(
            s.apppass(&["revoke", &revoked.id.to_string()])
                .status
                .success()
        );
        kill(&mut s.daemon.child);
        assert!(wal_len(&s.db) > 32, "{what}: the revoke is not in the WAL");
        if !keep_index {
            std::fs::remove_file(side_file(&s.db, "-shm")).unwrap();
        }
        let mut undo = Undo::default();
        undo.mount(&["--bind", dir.to_str().unwrap()], &dir);
        undo.mount(&["-o", "remount,bind,ro"], &dir);
        let log = restart_with_log(&mut s);
        let status = assert_alive(&mut s.daemon);
        let code = login(&s, "imap", "alice", &revoked.password);
        assert!(
            [Code::AUTH_ERR, Code::AUTHINFO_UNAVAIL].contains(&code),
            "{what}: a password revoked in the WAL: {code:?}"
        );
        let kept_code = login(&s, "imap", "alice", &kept.password);
        if status.store_error.is_some() {
            assert_eq!(
                (code, kept_code),
                (Code::AUTHINFO_UNAVAIL, Code::AUTHINFO_UNAVAIL),
                "{what}"
            );
        } else {
            assert_eq!(kept_code, Code::SUCCESS, "{what}");
        }
        println!(
            "{what}: store error {:?}; revoked {}, kept {}",
            status.store_error,
            code.name(),
            kept_code.name()
        );
        assert_clean_stop(&mut s.daemon, Some(&log));
        drop(undo);
        // Writable again: SQLite recovers the WAL, and the revoke is there.
        restart_with_log(&mut s);
        assert_eq!(
            login(&s, "imap", "alice", &revoked.password),
            Code::AUTH_ERR,
            "{what}"
        );
        assert_eq!(
            login(&s, "imap", "alice", &kept.password),
            Code::SUCCESS,
            "{what}"
        );
    }
    s.daemon.stop();
    assert_eq!(integrity(&s.db), "ok");
}

/// Folds the WAL into the store's file and empties it, with nothing else open on it.
fn fold_wal(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    assert!(wal_len(db) <= 32, "the WAL still holds frames");
}

// ---------------------------------------------------------------------------------------
// Full filesystem

/// Fills the filesystem holding `dir` (a small tmpfs) to the last byte.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    set_mode(&filler, 0o600);
    let chunk = vec![0x55u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    // The last partial chunk.
    let mut byte = [0u8; 1];
    while f.write(&byte).is_ok_and(|n| n == 1) {
        byte[0] ^= 1;
    }
    let _ = f.sync_all();
    filler
}

#[test]
fn full_filesystem() {
    if !need_root_and(&["mount", "umount"]) {
        return;
    }
    let mut s = Sandbox::new();
    s.simple_service("imap", "");
    // The store on a tmpfs of its own, 2 MiB, root's and private.
    let dir = s.db.parent().unwrap().to_path_buf();
    s.daemon.stop();
    let mut undo = Undo::default();
    undo.mount(
        &["-t", "tmpfs", "-o", "size=2m,mode=0700", "apppass-full"],
        &dir,
    );
    let log = restart_with_log(&mut s);
    let pw = s.add("alice", "imap", &[]);

    for round in 0..2 {
        let uses = use_count(&s, pw.id);
        let rows = s.list().len();
        if round == 1 {
            // A WAL with room in it from before the disk filled.
            for _ in 0..20 {
                assert_eq!(login(&s, "imap", "alice", &pw.password), Code::SUCCESS);
            }
        }
        let filler = fill(&dir);
        assert_eq!(
            login(&s, "imap", "alice", &pw.password),
            Code::SUCCESS,
            "round {round}"
        );
        assert_eq!(
            login(&s, "imap", "alice", &wrong_secret(&pw.password)),
            Code::AUTH_ERR,
            "round {round}"
        );
        assert_eq!(
            login(&s, "imap", "bob", &pw.password),
            Code::USER_UNKNOWN,
            "round {round}"
        );
        let out = s.apppass(&["list", "--all"]);
        if !out.status.success() {
            assert_cli_failed(&out, &["disk", "full"]);
        }
        // A change fails plainly and leaves nothing half done; or, when it fits in space
        // SQLite already has, it is made, and is there.
        let out = s.apppass(&["add", "--user", "alice", "--service", "imap"]);
        let added = out.status.success();
        if !added {
            assert_cli_failed(&out, &["full", "disk"]);
        }
        println!(
            "round {round}: apppass add {}",
            if added { "succeeded" } else { "failed" }
        );
        std::fs::remove_file(&filler).unwrap();
        assert_alive(&mut s.daemon);
        assert_eq!(s.list().len(), rows + usize::from(added), "round {round}");
        assert_eq!(integrity(&s.db), "ok", "round {round}");
        // With room again, everything works and is recorded.
        assert!(use_count(&s, pw.id) >= uses);
        let uses = use_count(&s, pw.id);
        assert_eq!(login(&s, "imap", "alice", &pw.password), Code::SUCCESS);
        assert_eq!(use_count(&s, pw.id), uses + 1, "round {round}");
        s.add("alice", "imap", &[]);
    }
    assert_clean_stop(&mut s.daemon, Some(&log));

    // apppassd started while the disk is full: logins where the data can be read, and
    // changes once there is room again.
    let rows = {
        restart_with_log(&mut s);
        let n = s.list().len();
        s.daemon.stop();
        n
    };
    let filler = fill(&dir);
    let log = restart_with_log(&mut s);
    let status = assert_alive(&mut s.daemon);
    let right = login(&s, "imap", "alice", &pw.password);
    let wrong = login(&s, "imap", "alice", &wrong_secret(&pw.password));
    println!(
        "started on a full disk: store error {:?}, right password {}",
        status.store_error,
        right.name()
    );
    assert_ne!(wrong, Code::SUCCESS);
    match status.store_error {
        Some(_) => assert_eq!(right, Code::AUTHINFO_UNAVAIL),
        None => assert_eq!(right, Code::SUCCESS),
    }
    std::fs::remove_file(&filler).unwrap();
    // Room again: apppassd takes changes without being restarted (a store it could
    // only open read-only is opened again for writing).
    let deadline = Instant::now() + Duration::from_secs(8);
    let added = loop {
        let out = s.apppass(&["add", "--user", "alice", "--service", "imap"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        added.status.success(),
        "after the disk was freed, without a restart: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(s.list().len(), rows + 1);
    assert_clean_stop(&mut s.daemon, Some(&log));
    assert_eq!(integrity(&s.db), "ok");
}

// ---------------------------------------------------------------------------------------
// Missing, not a file

/// `--db` naming nothing, a directory, a dangling symlink, a device, a FIFO: apppassd
/// creates a store that is missing (that is its job), refuses the rest, says why, and
/// never blocks on a FIFO.
#[test]
fn missing_or_not_a_regular_file() {
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    let base = s.dir.path();
    for (i, name) in [
        "missing",
        "missing-dirs",
        "directory",
        "dangling-symlink",
        "devnull-symlink",
        "fifo",
        "devnull",
    ]
    .into_iter()
    .enumerate()
    {
        let case = base.join(format!("case{i}"));
        std::fs::create_dir_all(case.join("db")).unwrap();
        set_mode(&case.join("db"), 0o700);
        let mut db = case.join("db/apppass.db");
        match name {
            "missing" => {}
            "missing-dirs" => db = case.join("db/no/such/apppass.db"),
            "directory" => std::fs::create_dir(&db).unwrap(),
            "dangling-symlink" => std::os::unix::fs::symlink(case.join("nowhere"), &db).unwrap(),
            "devnull-symlink" => std::os::unix::fs::symlink("/dev/null", &db).unwrap(),
            "fifo" => drop(support::run_ok(
                Command::new("mkfifo").arg("-m").arg("600").arg(&db),
            )),
            "devnull" => db = PathBuf::from("/dev/null"),
            _ => unreachable!(),
        }
        let (mut d, log) = daemon_with_log(&case, &db, &s.conf, &[]);
        service_for(&s, name, &d.socket, "service=imap");
        let status = assert_alive(&mut d);
        println!("{name}: {:?}", status.store_error);
        match (name, &status.store_error) {
            // apppassd makes its store, and its directory (0700).
            ("missing", None) => {
                assert!(db.is_file());
                assert_eq!(login(&s, name, "alice", &pw.password), Code::USER_UNKNOWN);
            }
            ("missing-dirs", None) => {
                assert_eq!(login(&s, name, "alice", &pw.password), Code::USER_UNKNOWN);
            }
            (_, Some(why)) => {
                assert_ne!(name, "missing");
                let why = why.clone();
                unavailable(&s, &mut d, name, &pw.password, &why, name);
            }
            (_, None) => panic!("{name}: apppassd took it for a store"),
        }
        assert_clean_stop(&mut d, Some(&log));
        if name == "fifo" {
            let kind = std::fs::symlink_metadata(&db).unwrap().file_type();
            assert!(kind.is_fifo(), "the FIFO was replaced");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Unsafe

/// A store made by apppassd, with one app password of alice's, copied as a plain file
/// (apppassd stopped, so the WAL is folded into it).
fn store_file(s: &mut Sandbox) -> (Vec<u8>, Added) {
    let pw = s.add("alice", "imap", &[]);
    s.daemon.stop();
    let bytes = std::fs::read(&s.db).unwrap();
    restart_with_log(s);
    (bytes, pw)
}

/// A private directory `case/db` (0700) holding a copy of the store (0600).
fn private_copy(case: &Path, bytes: &[u8]) -> PathBuf {
    let dir = case.join("db");
    std::fs::create_dir_all(&dir).unwrap();
    set_mode(case, 0o755);
    set_mode(&dir, 0o700);
    let db = dir.join("apppass.db");
    std::fs::write(&db, bytes).unwrap();
    set_mode(&db, 0o600);
    db
}

/// Stores whose directory or files others could change, or that have files of others
/// beside them: apppassd refuses them (whoever could write there could have put a row of
/// their own in), says which file and why, and takes the store once it is fixed.
#[test]
fn unsafe_stores_are_refused() {
    if !require(is_root(), "root (files of other users)") {
        return;
    }
    let mut s = Sandbox::new();
    let (bytes, pw) = store_file(&mut s);
    let chown = |p: &Path| std::os::unix::fs::chown(p, Some(NOBODY), None).unwrap();
    for (i, name) in [
        "dir-0777",
        "dir-sticky-1777",
        "dir-group-0770",
        "dir-of-nobody",
        "parent-0777",
        "db-0644",
        "db-0660",
        "db-of-nobody",
        "db-symlink",
        "stranger-in-dir",
        "shm-of-nobody",
        "journal-of-nobody",
    ]
    .into_iter()
    .enumerate()
    {
        let case = s.dir.path().join(format!("unsafe{i}"));
        let db = private_copy(&case, &bytes);
        let dir = db.parent().unwrap();
        let why = match name {
            "dir-0777" => {
                set_mode(dir, 0o777);
                "writable by group or other"
            }
            "dir-sticky-1777" => {
                set_mode(dir, 0o1777);
                "writable by group or other"
            }
            "dir-group-0770" => {
                set_mode(dir, 0o770);
                "writable by group or other"
            }
            "dir-of-nobody" => {
                chown(dir);
                "not apppassd's or root's"
            }
            "parent-0777" => {
                set_mode(&case, 0o777);
                "writable by group or other"
            }
            "db-0644" => {
                set_mode(&db, 0o644);
                "fix with chmod 600"
            }
            "db-0660" => {
                set_mode(&db, 0o660);
                "fix with chmod 600"
            }
            "db-of-nobody" => {
                chown(&db);
                "not apppassd's"
            }
            "db-symlink" => {
                let real = case.join("real.db");
                std::fs::rename(&db, &real).unwrap();
                std::os::unix::fs::symlink(&real, &db).unwrap();
                "not a regular file"
            }
            "stranger-in-dir" => {
                let f = dir.join("notes");
                std::fs::write(&f, b"x").unwrap();
                chown(&f);
                "must hold only apppassd's files"
            }
            "shm-of-nobody" | "journal-of-nobody" => {
                let suffix = if name.starts_with("shm") {
                    "-shm"
                } else {
                    "-journal"
                };
                let f = side_file(&db, suffix);
                std::fs::write(&f, vec![0u8; 32768]).unwrap();
                set_mode(&f, 0o600);
                chown(&f);
                "not apppassd's"
            }
            _ => unreachable!(),
        };
        let before = std::fs::read(&db).ok();
        let (mut d, log) = daemon_with_log(&case, &db, &s.conf, &[]);
        service_for(&s, name, &d.socket, "service=imap");
        unavailable(&s, &mut d, name, &pw.password, why, name);
        assert_clean_stop(&mut d, Some(&log));
        // Refused before SQLite opened anything: the file is as it was.
        assert_eq!(std::fs::read(&db).ok(), before, "{name}");
    }

    // Once fixed, the same apppassd takes the store (it tries again every few seconds)
    // without being restarted.
    let case = s.dir.path().join("fixed");
    let db = private_copy(&case, &bytes);
    set_mode(db.parent().unwrap(), 0o777);
    let (mut d, log) = daemon_with_log(&case, &db, &s.conf, &[]);
    service_for(&s, "fixed", &d.socket, "service=imap");
    assert!(assert_alive(&mut d).store_error.is_some());
    set_mode(db.parent().unwrap(), 0o700);
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let code = login(&s, "fixed", "alice", &pw.password);
        if code == Code::SUCCESS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fixed store was not taken: {}\n{}",
            code.name(),
            read_log(&log)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(assert_alive(&mut d).store_error, None);
    assert!(read_log(&log).contains("store ready"));
    assert_clean_stop(&mut d, Some(&log));
}

/// The attack the review reproduced against the earlier design: the store in a sticky
/// directory that others may write to (as /tmp), and another user plants a `-wal` file
/// beside it; SQLite replays a WAL it finds beside a database without asking whose it
/// is, so the planted one adds a row for root with a password its author knows. Here it
/// is made for real (a WAL written by SQLite against a copy of this very store, planted
/// by uid nobody through setpriv), shown to work on SQLite alone, and then apppassd must
/// refuse the store, not replay the WAL, and not let root in.
#[test]
fn planted_wal_is_refused_and_never_replayed() {
    if !require(is_root(), "root (to plant a file as another user)")
        || !require(have("setpriv"), "setpriv (util-linux)")
    {
        return;
    }
    let mut s = Sandbox::new();
    // uid nobody must reach the directories it writes to, as it can reach /tmp.
    set_mode(s.dir.path(), 0o755);
    let (bytes, alice) = store_file(&mut s);

    // The payload: a WAL that adds root's app password, for every service.
    let scratch = s.dir.path().join("attacker");
    std::fs::create_dir(&scratch).unwrap();
    let copy = scratch.join("copy.db");
    std::fs::write(&copy, &bytes).unwrap();
    let root_pw = apppass_core::secret::NewPassword::generate().unwrap();
    let payload = {
        let conn = rusqlite::Connection::open(&copy).unwrap();
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
        conn.execute(
            "INSERT INTO app_password (user, service, label, selector, hash, created)
             VALUES ('root', '*', 'planted', ?1, ?2, 0)",
            (root_pw.selector(), root_pw.hash(CHEAP).unwrap()),
        )
        .unwrap();
        // Read while the connection is open: closing it would fold the WAL back in.
        std::fs::read(side_file(&copy, "-wal")).unwrap()
    };
    let root_password = root_pw.display().to_string();
    // The control: SQLite alone, given the untouched store and the planted WAL, reads
    // root's row. The payload is a working attack on this very file.
    let control = scratch.join("control/apppass.db");
    std::fs::create_dir(control.parent().unwrap()).unwrap();
    std::fs::write(&control, &bytes).unwrap();
    std::fs::write(side_file(&control, "-wal"), &payload).unwrap();
    let replayed: i64 = rusqlite::Connection::open(&control)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM app_password WHERE user = 'root' AND label = 'planted'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        replayed, 1,
        "the payload does not work: the test tests nothing"
    );
    let payload_file = scratch.join("payload");
    std::fs::write(&payload_file, &payload).unwrap();
    set_mode(&scratch, 0o755);
    set_mode(&payload_file, 0o644);

    for (i, (what, dir_mode)) in [
        ("a sticky directory anyone may write to", 0o1777),
        ("a private directory, the WAL of another user", 0o700),
    ]
    .into_iter()
    .enumerate()
    {
        let case = s.dir.path().join(format!("attack{i}"));
        let db = private_copy(&case, &bytes);
        let dir = db.parent().unwrap().to_path_buf();
        let wal = side_file(&db, "-wal");
        if dir_mode == 0o1777 {
            set_mode(&dir, 0o1777);
            // Planted by nobody, as nobody can there.
            support::run_ok(
                Command::new("setpriv")
                    .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cp"])
                    .arg(&payload_file)
                    .arg(&wal),
            );
        } else {
            std::fs::write(&wal, &payload).unwrap();
            set_mode(&wal, 0o600);
            std::os::unix::fs::chown(&wal, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&wal).unwrap()),
            NOBODY
        );
        let (mut d, log) = daemon_with_log(&case, &db, &s.conf, &[]);
        for svc in ["sshd", "imap"] {
            s.service(
                svc,
                &format!(
                    "auth required {{module}} conf={{conf}} socket={}\n",
                    d.socket.display()
                ),
            );
        }
        let why = assert_alive(&mut d)
            .store_error
            .unwrap_or_else(|| panic!("{what}: apppassd took the store"));
        println!("{what}: {why}");
        let code = login(&s, "sshd", "root", &root_password);
        assert_eq!(
            code,
            Code::AUTHINFO_UNAVAIL,
            "{what}: root's planted password"
        );
        assert_eq!(
            login(&s, "imap", "alice", &alice.password),
            Code::AUTHINFO_UNAVAIL,
            "{what}"
        );
        assert_clean_stop(&mut d, Some(&log));
        // Nothing was replayed: the store's file is as it was, the WAL still the payload.
        assert!(
            std::fs::read(&db).unwrap() == bytes,
            "{what}: the store changed"
        );
        assert!(
            std::fs::read(&wal).unwrap() == payload,
            "{what}: the WAL was read"
        );
        // The admin removes the planted file and makes the directory private again.
        std::fs::remove_file(&wal).unwrap();
        set_mode(&dir, 0o700);
        let (mut d, log) = daemon_with_log(&case, &db, &s.conf, &[]);
        assert_eq!(assert_alive(&mut d).store_error, None, "{what}");
        assert_eq!(
            login(&s, "sshd", "root", &root_password),
            Code::USER_UNKNOWN,
            "{what}: root has no app passwords"
        );
        assert_eq!(
            login(&s, "imap", "alice", &alice.password),
            Code::SUCCESS,
            "{what}"
        );
        assert_clean_stop(&mut d, Some(&log));
        assert_eq!(integrity(&db), "ok");
    }
}

// ---------------------------------------------------------------------------------------
// Corrupt

/// Damaged stores: bytes overwritten anywhere, a truncated file, a garbage WAL or WAL
/// index. apppassd started on each: it stays up and answers (no crash, no hang, no
/// internal error), a wrong password never logs in, the CLI fails with a message rather
/// than a panic, and SIGTERM still stops it cleanly.
#[test]
fn corrupt_stores() {
    let mut s = Sandbox::with_config("throttle_failures = 0\n");
    s.simple_service("imap", "");
    let (_, pw) = insert_row(&s.db, "alice", "imap", CHEAP);
    for i in 0..40 {
        insert_row(&s.db, &format!("user{i}"), "imap", CHEAP);
    }
    // Some audit history too, so that damage can land in every table and index.
    for _ in 0..20 {
        assert_eq!(s.code("imap", "alice", &pw), Code::SUCCESS);
    }
    s.daemon.stop(); // folds the WAL into the file
    let pristine = std::fs::read(&s.db).unwrap();
    let wrong = wrong_secret(&pw);
    let base = s.dir.path().join("damaged");
    std::fs::create_dir(&base).unwrap();
    let damaged = base.join("db/apppass.db");
    std::fs::create_dir(damaged.parent().unwrap()).unwrap();
    set_mode(damaged.parent().unwrap(), 0o700);
    service_for(&s, "damaged", &base.join("apppassd.sock"), "service=imap");
    let mut rng = support::Rng::seeded("APPPASS_FAULT_SEED");
    let mut rights = Vec::new();
    let started = Instant::now();
    let try_variant = |what: String, bytes: &[u8], wal: Option<&[u8]>, shm: Option<&[u8]>| {
        for suffix in ["-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(side_file(&damaged, suffix));
        }
        let write = |path: &Path, b: &[u8]| {
            std::fs::write(path, b).unwrap();
            set_mode(path, 0o600);
        };
        write(&damaged, bytes);
        if let Some(w) = wal {
            write(&side_file(&damaged, "-wal"), w);
        }
        if let Some(m) = shm {
            write(&side_file(&damaged, "-shm"), m);
        }
        let (mut d, log) = daemon_with_log(&base, &damaged, &s.conf, &[]);
        let right = login(&s, "damaged", "alice", &pw);
        let refused = login(&s, "damaged", "alice", &wrong);
        assert_ne!(refused, Code::SUCCESS, "a wrong password logged in: {what}");
        for code in [right, refused] {
            assert!(
                [
                    Code::SUCCESS,
                    Code::AUTH_ERR,
                    Code::USER_UNKNOWN,
                    Code::AUTHINFO_UNAVAIL
                ]
                .contains(&code),
                "{what}: {code:?}"
            );
        }
        let status = assert_alive(&mut d);
        if status.store_error.is_some() {
            assert_eq!(right, Code::AUTHINFO_UNAVAIL, "{what}");
        }
        let out = cli_at(&s, &d.socket, &["list", "--all"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0 | 1)) && !err.contains("panicked"),
            "apppass list on {what}: {:?} {err}",
            out.status
        );
        assert_clean_stop(&mut d, Some(&log));
        right
    };

    // The control: the undamaged copy works.
    assert_eq!(
        try_variant("undamaged".into(), &pristine, None, None),
        Code::SUCCESS,
        "the undamaged copy"
    );
    let page = 4096;
    for round in 0..120 {
        let mut bytes = pristine.clone();
        // A burst of damage in one page, or scattered bytes anywhere.
        if round % 2 == 0 {
            let start = rng.below(bytes.len() / page) * page + rng.below(page);
            let len = 1 + rng.below(64);
            for b in bytes.iter_mut().skip(start).take(len) {
                *b = rng.next() as u8;
            }
            rights.push(try_variant(
                format!("{len} bytes at {start}"),
                &bytes,
                None,
                None,
            ));
        } else {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
            rights.push(try_variant(format!("{n} bit flips"), &bytes, None, None));
        }
    }
    for cut in [0, 100, page, pristine.len() / 2, pristine.len() - 1] {
        rights.push(try_variant(
            format!("truncated to {cut}"),
            &pristine[..cut],
            None,
            None,
        ));
    }
    let garbage: Vec<u8> = (0..64 * 1024).map(|_| rng.next() as u8).collect();
    rights.push(try_variant(
        "garbage WAL".into(),
        &pristine,
        Some(&garbage),
        None,
    ));
    rights.push(try_variant(
        "garbage WAL index".into(),
        &pristine,
        None,
        Some(&garbage[..32768]),
    ));
    rights.push(try_variant(
        "empty WAL index".into(),
        &pristine,
        None,
        Some(&[]),
    ));
    let mut tally = std::collections::BTreeMap::<&str, usize>::new();
    for code in &rights {
        *tally.entry(code.name()).or_default() += 1;
    }
    println!(
        "right password on {} damaged stores: {tally:?}, in {:.1} s",
        rights.len(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// Stored hashes

/// A row whose stored hash apppassd cannot or must not compute: that row is refused
/// whatever is typed (PAM_AUTH_ERR, reason=bad_hash in the audit log, and a log line
/// that names the row and says why), every other row works as before, and a hash asking
/// for more than the caps (argon2_max_memory, ...), up to 4 TiB, is refused before
/// anything is allocated or computed for it: apppassd stays fast and small.
#[test]
fn unusable_stored_hashes() {
    let mut s = Sandbox::new();
    let log = restart_with_log(&mut s);
    s.simple_service("imap", "");
    let (bad, bad_pw) = insert_row(&s.db, "alice", "imap", CHEAP);
    let (_, good_pw) = insert_row(&s.db, "alice", "imap", CHEAP);
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    let salt = "c2FsdHNhbHRzYWx0c2FsdA";
    let out = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let beyond = "beyond argon2_max_memory, argon2_max_time or argon2_max_lanes: not computed";
    for (hash, logged) in [
        (String::new(), "not an argon2id PHC string"),
        ("plain text".into(), "not an argon2id PHC string"),
        (
            format!("$argon2i$v=19$m=64,t=1,p=1${salt}${out}"),
            "not an argon2id PHC string",
        ),
        (
            format!("$argon2id$v=16$m=64,t=1,p=1${salt}${out}"),
            "not an argon2id PHC string",
        ),
        (
            format!("$argon2id$v=19$m=1,t=1,p=1${salt}${out}"),
            "not an argon2id PHC string",
        ),
        (
            format!("$argon2id$v=19$m=64,t=0,p=1${salt}${out}"),
            "not an argon2id PHC string",
        ),
        (
            format!("$argon2id$v=19$m=64,t=1,p=1$${out}"),
            "not an argon2id PHC string",
        ),
        // Just past each default cap (256 MiB, 16 passes, 8 lanes).
        (
            format!("$argon2id$v=19$m=262145,t=1,p=1${salt}${out}"),
            beyond,
        ),
        (format!("$argon2id$v=19$m=64,t=17,p=1${salt}${out}"), beyond),
        (format!("$argon2id$v=19$m=128,t=1,p=9${salt}${out}"), beyond),
        // 4 TiB and a billion passes: more than any machine has, refused unhashed.
        (
            format!("$argon2id$v=19$m=4294967295,t=1,p=1${salt}${out}"),
            beyond,
        ),
        (
            format!("$argon2id$v=19$m=64,t=1000000000,p=1${salt}${out}"),
            beyond,
        ),
    ] {
        conn.execute(
            "UPDATE app_password SET hash = ?1 WHERE id = ?2",
            (&hash, bad),
        )
        .unwrap();
        let t = Instant::now();
        assert_eq!(
            login(&s, "imap", "alice", &bad_pw),
            Code::AUTH_ERR,
            "{hash:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{hash:?}: {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        assert_eq!(
            login(&s, "imap", "alice", &good_pw),
            Code::SUCCESS,
            "{hash:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{hash:?}: {:?}",
            t.elapsed()
        );
        let text = read_log(&log);
        let line = text
            .lines()
            .rfind(|l| l.contains(&format!("app password id={bad} of alice cannot be checked")))
            .unwrap_or_else(|| panic!("{hash:?}: nothing logged:\n{text}"));
        assert!(line.contains(logged), "{hash:?}: {line}");
        let events = s.apppass(&["log", "--user", "alice", "--json", "--limit", "2"]);
        let events: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
        assert_eq!(
            (&events[1]["reason"], &events[1]["password_id"]),
            (&serde_json::json!("bad_hash"), &serde_json::json!(bad)),
            "{hash:?}: {events}"
        );
    }
    // apppassd never took more memory than its workers' arenas.
    let rss = rss_kib(s.daemon.child.id());
    println!("apppassd's resident memory after them: {rss} KiB");
    assert!(rss < 256 * 1024, "{rss} KiB");
    assert_alive(&mut s.daemon);
    assert_clean_stop(&mut s.daemon, Some(&log));

    // The caps are the configuration's: a real hash at 64 MiB logs in under the default
    // caps, and is refused unhashed under argon2_max_memory = 32768.
    let mut s = Sandbox::new();
    s.simple_service("imap", "");
    let costly = apppass_core::secret::HashParams {
        m_kib: 65536,
        t: 1,
        p: 1,
    };
    let (id, pw) = insert_row(&s.db, "alice", "imap", costly);
    assert_eq!(login(&s, "imap", "alice", &pw), Code::SUCCESS);
    std::fs::write(&s.conf, "argon2_max_memory = 32768\n").unwrap();
    let log = restart_with_log(&mut s);
    assert_eq!(login(&s, "imap", "alice", &pw), Code::AUTH_ERR);
    let text = read_log(&log);
    assert!(
        text.contains(&format!(
            "app password id={id} of alice cannot be checked, refusing it: stored hash asks for m=65536 KiB, t=1, p=1, {beyond}"
        )),
        "{text}"
    );
    assert_clean_stop(&mut s.daemon, Some(&log));
}

/// A process's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
