//! Fault tests: the built module, loaded by the real libpam, against databases that are
//! locked by a long writer, read-only, on a full filesystem, missing, corrupt or unsafe,
//! and a database that has served many logins. A right password still logs in wherever
//! the data can be read; where it cannot, the answer is PAM_AUTHINFO_UNAVAIL; nothing
//! crashes, hangs, or lets a wrong password in. The CLI, on the same databases, fails
//! with a message and exit status 1, never a panic, and never loses a completed change.
//!
//! Tests that mount filesystems or change attributes need root (and mount, chattr): under
//! CI=true they fail without them, elsewhere they say what they skipped. The long writer
//! is this test binary again, in a helper role, holding SQLite's locks from another
//! process the way a stuck `apppass` or a backup tool would.

mod common;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, is_root, require};
use pam_apppass::code::Code;
use support::{CHEAP, have, helper, helper_role, insert_row, kill, wrong_secret};

/// Longer than any login may take, whatever the database does: the read timeout is 2 s
/// and the record's 0.5 s. Not a speed claim; a hang detector.
const NO_HANG: Duration = Duration::from_secs(15);

fn side_file(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

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

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// The CLI failed the way it should on a database it cannot use: status 1, one line
/// that says why, no panic.
fn assert_cli_failed(out: &Output, why: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(why.iter().any(|w| err.contains(w)), "{err}");
}

// ---------------------------------------------------------------------------------------
// Many logins

/// Each login is a fresh connection that closes without checkpointing (cheap); the WAL it
/// leaves must still not grow without bound, or a busy server's disk fills up and every
/// login rereads the whole WAL. (Before the fix in SqliteStore::keep_wal_small: 6.6 MB
/// after these 400 logins, growing by 16 KiB a login.)
#[test]
fn wal_stays_small_over_many_logins() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let (id, pw) = insert_row(&s.db, "alice", "imap", CHEAP);
    const LOGINS: usize = 400;
    let mut largest = 0;
    for i in 0..LOGINS {
        assert_eq!(s.code("imap", "alice", &pw), Code::SUCCESS, "login {i}");
        largest = largest.max(wal_len(&s.db));
    }
    println!("largest WAL over {LOGINS} logins: {largest} bytes");
    assert!(
        largest < 1 << 20,
        "the WAL grew to {largest} bytes over {LOGINS} logins"
    );
    // Every login was recorded.
    assert_eq!(use_count(&s, id), LOGINS as i64);
}

// ---------------------------------------------------------------------------------------
// A long writer

/// What the helper process does to the database while the test logs in.
const WRITER_DB: &str = "APPPASS_WRITER_DB";

/// What the writer prints once it holds its locks (libtest may print the test's name
/// before it on the same line).
const HOLDING: &str = "writer-holds-its-locks";

/// The long writer: opens the database, takes its locks the way `mode` says, prints
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
        // A revoke committed to the WAL, not yet in the database file; then the process
        // is killed before any checkpoint (the WAL and its index stay behind).
        "revoke_in_wal" => conn.execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             UPDATE app_password SET revoked = 1 WHERE label = 'revoke-me';",
        ),
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

#[test]
fn locked_by_a_long_writer() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &["--label", "phone"]);
    for mode in ["immediate", "exclusive"] {
        let mut writer = start_writer(&s.db, mode);
        // Reads go on beside the writer: the right password logs in, others fail as usual.
        assert_eq!(
            login(&s, "imap", "alice", &pw.password),
            Code::SUCCESS,
            "{mode}"
        );
        assert_eq!(
            login(&s, "imap", "alice", &wrong_secret(&pw.password)),
            Code::AUTH_ERR,
            "{mode}"
        );
        assert_eq!(login(&s, "imap", "bob", &pw.password), Code::USER_UNKNOWN);
        // The CLI reads too.
        let out = s.apppass(&["list", "--all", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        kill(&mut writer);
        // The logins' records gave up after their timeout (best effort), and the
        // writer's uncommitted change is gone.
        let row = &s.list()[0];
        assert_eq!(
            (row["use_count"].as_i64(), row["label"].as_str()),
            (Some(0), Some("phone"))
        );
        assert_eq!(integrity(&s.db), "ok");
    }
    assert_eq!(login(&s, "imap", "alice", &pw.password), Code::SUCCESS);
    assert_eq!(use_count(&s, pw.id), 1);

    // A writer in exclusive locking mode keeps everyone out, readers included: the data
    // cannot be read, so PAM_AUTHINFO_UNAVAIL, after the read timeout rather than never.
    let mut writer = start_writer(&s.db, "exclusive_mode");
    let started = Instant::now();
    assert_eq!(
        login(&s, "imap", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    println!(
        "locked out by an exclusive writer: PAM_AUTHINFO_UNAVAIL after {:?}",
        started.elapsed()
    );
    kill(&mut writer);
    assert_eq!(login(&s, "imap", "alice", &pw.password), Code::SUCCESS);
    assert_eq!(integrity(&s.db), "ok");
}

/// A CLI change that meets a writer waits for it instead of telling the user "database is
/// locked".
#[test]
fn cli_waits_for_a_writer() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let old = s.add("alice", "imap", &[]);
    let mut writer = start_writer(&s.db, "immediate");
    let cli = |args: &[&str]| {
        Command::new(common::apppass_bin())
            .arg("--db")
            .arg(&s.db)
            .arg("--config")
            .arg(&s.conf)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let add = cli(&["add", "--user", "alice", "--service", "imap", "--json"]);
    let revoke = cli(&["revoke", &old.id.to_string()]);
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
    let rows = s.list();
    assert_eq!(rows.len(), 2);
    assert_eq!(login(&s, "imap", "alice", &old.password), Code::AUTH_ERR);
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
            // The bind mount of a remount sits on top of the first: unmount until gone.
            for _ in 0..2 {
                let _ = Command::new("umount").arg(&m).output();
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
    require(is_root(), "root (mounts, chattr)") && tools.iter().all(|t| require(have(t), t))
}

/// Everything a login should do against a database it can read but not write; the CLI
/// reports what it holds, and refuses to change it, saying why.
fn read_but_not_write(s: &Sandbox, pw: &common::Added, what: &str) {
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
    let out = s.apppass(&["add", "--user", "alice", "--service", "imap"]);
    assert_cli_failed(&out, &["readonly", "unable to open"]);
    let out = s.apppass(&["revoke", "--user", "alice", "--all"]);
    assert_cli_failed(&out, &["readonly", "unable to open"]);
    let out = s.apppass(&["list", "--all"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("alice") && !listed.contains("revoked"),
        "{what}: apppass list: {out:?}"
    );
    let out = s.apppass(&["log", "--user", "alice"]);
    assert!(out.status.success(), "{what}: apppass log: {out:?}");
}

#[test]
fn read_only_database() {
    if !need_root_and(&["chattr", "mount", "umount"]) {
        return;
    }
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    let dir = s.db.parent().unwrap().to_path_buf();
    let mut undo = Undo::default();

    // 1. The file immutable (root's file modes do not stop root): SQLite opens it
    //    read-only and keeps its WAL index beside it.
    let uses = use_count(&s, pw.id);
    undo.chattr_immutable(&s.db);
    read_but_not_write(&s, &pw, "chattr +i, right after the CLI");
    undo.clear_immutable();
    // Nothing could be recorded, and nothing else changed.
    assert_eq!((s.list().len(), use_count(&s, pw.id)), (1, uses));

    // 2. The directory mounted read-only, with and without the WAL and its index that
    //    the last login left (the CLI's close removes them; a login's does not).
    for (what, prepare) in [
        ("read-only mount, last used by the CLI", false),
        ("read-only mount, last used by a login", true),
    ] {
        // The CLI's close removes the WAL and its index.
        let mut uses = use_count(&s, pw.id);
        if prepare {
            assert_eq!(login(&s, "imap", "alice", &pw.password), Code::SUCCESS);
            uses += 1;
            assert!(side_file(&s.db, "-shm").exists(), "{what}");
        } else {
            assert!(!side_file(&s.db, "-shm").exists(), "{what}");
        }
        let d = dir.to_str().unwrap();
        undo.mount(&["--bind", d], &dir);
        undo.mount(&["-o", "remount,bind,ro"], &dir);
        read_but_not_write(&s, &pw, what);
        undo.umount_all();
        assert_eq!((s.list().len(), use_count(&s, pw.id)), (1, uses), "{what}");
    }
    assert_eq!(login(&s, "imap", "alice", &pw.password), Code::SUCCESS);
    assert_eq!(integrity(&s.db), "ok");
}

/// A read-only mount over a database whose WAL still holds a committed revoke (its writer
/// was killed before any checkpoint) and whose WAL index is gone: SQLite cannot use the
/// WAL without its index, and the database file alone is out of date. The revoked
/// password must not log in, whether the module is given the path or a symlink to it
/// (SQLite keeps the WAL beside the file the symlink points to).
#[test]
fn read_only_mount_with_a_wal_left_behind() {
    if !need_root_and(&["mount", "umount"]) {
        return;
    }
    let s = Sandbox::new();
    let revoked = s.add("alice", "imap", &["--label", "revoke-me"]);
    let kept = s.add("alice", "imap", &[]);
    let link = s.dir.path().join("link.db");
    std::os::unix::fs::symlink(&s.db, &link).unwrap();
    s.simple_service("imap", "");
    s.service(
        "imap-link",
        &format!(
            "auth required {{module}} conf={{conf}} service=imap db={}\n",
            link.display()
        ),
    );
    let mut writer = start_writer(&s.db, "revoke_in_wal");
    kill(&mut writer);
    assert!(wal_len(&s.db) > 32, "the revoke is not in the WAL");
    std::fs::remove_file(side_file(&s.db, "-shm")).unwrap();
    let dir = s.db.parent().unwrap().to_path_buf();
    let mut undo = Undo::default();
    undo.mount(&["--bind", dir.to_str().unwrap()], &dir);
    undo.mount(&["-o", "remount,bind,ro"], &dir);
    for service in ["imap", "imap-link"] {
        let code = login(&s, service, "alice", &revoked.password);
        assert!(
            [Code::AUTH_ERR, Code::AUTHINFO_UNAVAIL].contains(&code),
            "{service}: a password revoked in the WAL: {code:?}"
        );
        let code = login(&s, service, "alice", &kept.password);
        assert!(
            [Code::SUCCESS, Code::AUTHINFO_UNAVAIL].contains(&code),
            "{service}: {code:?}"
        );
        println!("{service}: the kept password gets {}", code.name());
    }
    undo.umount_all();
    // Writable again: SQLite recovers the WAL, and the revoke is there.
    assert_eq!(
        login(&s, "imap", "alice", &revoked.password),
        Code::AUTH_ERR
    );
    assert_eq!(login(&s, "imap", "alice", &kept.password), Code::SUCCESS);
    assert_eq!(integrity(&s.db), "ok");
}

// ---------------------------------------------------------------------------------------
// Full filesystem

/// Fills the filesystem holding `dir` (a small tmpfs) to the last byte.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
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
    let s = Sandbox::new();
    s.simple_service("imap", "");
    // The database on a tmpfs of its own, 2 MiB, root's and private.
    let dir = s.db.parent().unwrap().to_path_buf();
    let mut undo = Undo::default();
    undo.mount(
        &["-t", "tmpfs", "-o", "size=2m,mode=0700", "apppass-full"],
        &dir,
    );
    let init = s.apppass(&["init"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let pw = s.add("alice", "imap", &[]);

    for (what, after_login) in [
        ("full, last used by the CLI", false),
        ("full, last used by a login", true),
    ] {
        // The CLI's close removes the WAL and its index; a login's leaves them.
        let uses = use_count(&s, pw.id) + i64::from(after_login);
        let rows = s.list().len();
        if after_login {
            assert_eq!(login(&s, "imap", "alice", &pw.password), Code::SUCCESS);
        }
        let filler = fill(&dir);
        assert_eq!(
            login(&s, "imap", "alice", &pw.password),
            Code::SUCCESS,
            "{what}"
        );
        assert_eq!(
            login(&s, "imap", "alice", &wrong_secret(&pw.password)),
            Code::AUTH_ERR,
            "{what}"
        );
        assert_eq!(
            login(&s, "imap", "bob", &pw.password),
            Code::USER_UNKNOWN,
            "{what}"
        );
        // The CLI may refuse to read while the disk is full (it says why).
        let out = s.apppass(&["list", "--all"]);
        if !out.status.success() {
            assert_cli_failed(&out, &["disk I/O error"]);
        }
        // A change fails plainly and leaves nothing half done; or, when it fits in space
        // SQLite already has (a WAL a login left), it is made, and is there.
        let out = s.apppass(&["add", "--user", "alice", "--service", "imap"]);
        let added = out.status.success();
        if !added {
            assert_cli_failed(&out, &["full", "disk"]);
        }
        println!(
            "{what}: apppass add {}",
            if added { "succeeded" } else { "failed" }
        );
        std::fs::remove_file(&filler).unwrap();
        assert_eq!(s.list().len(), rows + usize::from(added), "{what}");
        assert_eq!(integrity(&s.db), "ok", "{what}");
        // With room again, everything works and is recorded.
        assert!(use_count(&s, pw.id) >= uses);
        let uses = use_count(&s, pw.id);
        assert_eq!(login(&s, "imap", "alice", &pw.password), Code::SUCCESS);
        assert_eq!(use_count(&s, pw.id), uses + 1, "{what}");
        s.add("alice", "imap", &[]);
    }
}

// ---------------------------------------------------------------------------------------
// Missing, not a file, unsafe

#[test]
fn missing_or_not_a_database_file() {
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    let dir = s.dir.path();
    std::fs::create_dir(dir.join("a-directory")).unwrap();
    std::os::unix::fs::symlink(dir.join("nowhere.db"), dir.join("dangling.db")).unwrap();
    for (name, db) in [
        ("missing", dir.join("missing.db")),
        ("missing-dir", dir.join("no/such/dir/apppass.db")),
        ("directory", dir.join("a-directory")),
        ("dangling", dir.join("dangling.db")),
        ("devnull", PathBuf::from("/dev/null")),
    ] {
        s.service(
            name,
            &format!(
                "auth required {{module}} conf={{conf}} db={}\n",
                db.display()
            ),
        );
        assert_eq!(
            login(&s, name, "alice", &pw.password),
            Code::AUTHINFO_UNAVAIL,
            "{name}"
        );
    }
    assert!(
        !dir.join("missing.db").exists(),
        "the module created a database"
    );
}

/// A FIFO where the database should be: opening it must not block the login forever.
#[test]
fn fifo_instead_of_database() {
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    let fifo = s.dir.path().join("fifo.db");
    support::run_ok(Command::new("mkfifo").arg(&fifo));
    s.service(
        "fifo",
        &format!(
            "auth required {{module}} conf={{conf}} db={}\n",
            fifo.display()
        ),
    );
    assert_eq!(
        login(&s, "fifo", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
}

/// The same without root's ownership checks (a module in a service that does not run as
/// root): refused at once, not read forever.
#[test]
fn fifo_instead_of_database_without_root_checks() {
    use apppass_core::store::sqlite::{Purpose, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.db");
    support::run_ok(Command::new("mkfifo").arg(&fifo));
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let opened = SqliteStore::open(&path, Purpose::Login, false).map(|_| ());
        let _ = tx.send(opened.map_err(|e| e.to_string()));
    });
    let answer = rx
        .recv_timeout(NO_HANG)
        .expect("opening a FIFO as the database blocked");
    // SQLite's reads of a FIFO fail (ESPIPE): a disk I/O error, which the module answers
    // with PAM_AUTHINFO_UNAVAIL.
    answer.expect_err("a FIFO was opened as a database");
}

#[test]
fn unsafe_paths_are_refused_as_root() {
    if !require(
        is_root(),
        "root (the ownership checks apply to a module running as root)",
    ) {
        return;
    }
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    let set_mode = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // A symlink to the (safe) database from a directory anyone may write to: whoever can
    // write there can point the module elsewhere.
    let open = s.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    set_mode(&open, 0o777);
    std::os::unix::fs::symlink(&s.db, open.join("apppass.db")).unwrap();
    // A database in a group-writable directory.
    let group = s.dir.path().join("group");
    std::fs::create_dir(&group).unwrap();
    std::fs::copy(&s.db, group.join("apppass.db")).unwrap();
    set_mode(&group, 0o770);
    // The control: the same, from a directory only root may write to.
    let safe = s.dir.path().join("safe");
    std::fs::create_dir(&safe).unwrap();
    std::os::unix::fs::symlink(&s.db, safe.join("apppass.db")).unwrap();
    for (name, db, want) in [
        ("safe-symlink", safe.join("apppass.db"), Code::SUCCESS),
        (
            "via-open-symlink",
            open.join("apppass.db"),
            Code::AUTHINFO_UNAVAIL,
        ),
        (
            "group-dir",
            group.join("apppass.db"),
            Code::AUTHINFO_UNAVAIL,
        ),
    ] {
        s.service(
            name,
            &format!(
                "auth required {{module}} conf={{conf}} service=imap db={}\n",
                db.display()
            ),
        );
        assert_eq!(login(&s, name, "alice", &pw.password), want, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// Corrupt

/// Damaged databases: bytes overwritten anywhere, a truncated file, a garbage WAL or WAL
/// index. Whatever the damage, the module answers (no crash, no hang), a wrong password
/// never logs in, and the CLI fails with a message rather than a panic.
#[test]
fn corrupt_databases() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let (_, pw) = insert_row(&s.db, "alice", "imap", CHEAP);
    for i in 0..40 {
        insert_row(&s.db, &format!("user{i}"), "imap", CHEAP);
    }
    // Some audit history too, so that damage can land in every table and index.
    for _ in 0..20 {
        assert_eq!(s.code("imap", "alice", &pw), Code::SUCCESS);
    }
    let _ = s.list(); // the CLI's close folds the WAL into the file
    let pristine = std::fs::read(&s.db).unwrap();
    let wrong = wrong_secret(&pw);
    let damaged = s.dir.path().join("damaged/apppass.db");
    std::fs::create_dir(damaged.parent().unwrap()).unwrap();
    s.service(
        "damaged",
        &format!(
            "auth required {{module}} conf={{conf}} service=imap db={}\n",
            damaged.display()
        ),
    );
    let mut rng = support::Rng::seeded("APPPASS_FAULT_SEED");
    let mut rights = Vec::new();
    let try_variant = |what: String, bytes: &[u8], wal: Option<&[u8]>, shm: Option<&[u8]>| {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(side_file(&damaged, suffix));
        }
        std::fs::write(&damaged, bytes).unwrap();
        if let Some(w) = wal {
            std::fs::write(side_file(&damaged, "-wal"), w).unwrap();
        }
        if let Some(m) = shm {
            std::fs::write(side_file(&damaged, "-shm"), m).unwrap();
        }
        let right = login(&s, "damaged", "alice", &pw);
        let wrong = login(&s, "damaged", "alice", &wrong);
        assert_ne!(wrong, Code::SUCCESS, "a wrong password logged in: {what}");
        for code in [right, wrong] {
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
        let out = Command::new(common::apppass_bin())
            .arg("--db")
            .arg(&damaged)
            .arg("--config")
            .arg(&s.conf)
            .args(["list", "--all"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0 | 1)) && !err.contains("panicked"),
            "apppass list on {what}: {:?} {err}",
            out.status
        );
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
    for cut in [100, page, pristine.len() / 2, pristine.len() - 1] {
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
    for code in rights {
        *tally.entry(code.name()).or_default() += 1;
    }
    println!("right password on damaged databases: {tally:?}");
}

/// A row whose stored hash is not one the module can check: that row is unusable
/// (PAM_AUTHINFO_UNAVAIL, logged for the admin), every other row works as before.
#[test]
fn unusable_stored_hashes() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let (bad, bad_pw) = insert_row(&s.db, "alice", "imap", CHEAP);
    let (_, good_pw) = insert_row(&s.db, "alice", "imap", CHEAP);
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    let salt = "c2FsdHNhbHRzYWx0c2FsdA";
    let out = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for hash in [
        String::new(),
        "plain text".into(),
        format!("$argon2i$v=19$m=64,t=1,p=1${salt}${out}"),
        format!("$argon2id$v=16$m=64,t=1,p=1${salt}${out}"),
        format!("$argon2id$v=19$m=1,t=1,p=1${salt}${out}"),
        format!("$argon2id$v=19$m=64,t=0,p=1${salt}${out}"),
        format!("$argon2id$v=19$m=64,t=1,p=1$${out}"),
        // 4 TiB: more memory than the machine has. Refused, not a crash.
        format!("$argon2id$v=19$m=4294967295,t=1,p=1${salt}${out}"),
    ] {
        conn.execute(
            "UPDATE app_password SET hash = ?1 WHERE id = ?2",
            (&hash, bad),
        )
        .unwrap();
        assert_eq!(
            login(&s, "imap", "alice", &bad_pw),
            Code::AUTHINFO_UNAVAIL,
            "{hash:?}"
        );
        assert_eq!(
            login(&s, "imap", "alice", &good_pw),
            Code::SUCCESS,
            "{hash:?}"
        );
    }
}
