//! apppassd on a PostgreSQL store (a private cluster with TLS, tests/pg), set up as
//! README "Running on several hosts" says: an administrators' host whose apppassd
//! connects as the database's owner (it creates and migrates the schema, and takes
//! additions and revocations), and front ends whose apppassd connects as the login role
//! of sql/postgres/roles.sql, with its password in db_passfile. Logins go through the
//! real libpam and the built module to a front end's apppassd: right, wrong, other
//! service, revoked, expired, throttled, the audit log and last use; what the login role
//! is refused; the server killed, hung or holding a lock (PAM_AUTHINFO_UNAVAIL within the
//! timeouts, and apppassd recovers); two front ends on one database; refused settings.
//! Dovecot on top of apppassd is tests/dovecot.rs's: the store behind apppassd changes
//! nothing it sees. Under CI a missing PostgreSQL fails.

mod common;
mod pg;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Sandbox, require};
use pam_apppass::code::Code;
use pg::{ADMIN, Cluster, LOGIN};
use support::wrong_secret;

/// db_connect_timeout and db_query_timeout in the tests' configurations.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How long apppassd may take to use its store again once the server is back: it
/// leaves a store it could not open alone for 5 s.
const RECOVERY: Duration = Duration::from_secs(15);

fn cluster() -> Option<Cluster> {
    match Cluster::start() {
        Ok(c) => Some(c),
        Err(e) => {
            require(false, &e);
            None
        }
    }
}

/// A host's directory: the module, a PAM service directory, a password file with both
/// roles' passwords, and apppass.conf with the timeouts and `extra`.
fn host_dir(cluster: &Cluster, extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("apppass-pg-host")
        .tempdir()
        .unwrap();
    std::os::unix::fs::symlink(common::built_module(), dir.path().join("pam_apppass.so")).unwrap();
    std::fs::create_dir(dir.path().join("pam.d")).unwrap();
    let passfile = dir.path().join("apppass.pgpass");
    cluster.passfile(&passfile, &[ADMIN, LOGIN]);
    let conf = dir.path().join("apppass.conf");
    std::fs::write(
        &conf,
        format!(
            "db_passfile = {}\ndb_connect_timeout = {t}s\ndb_query_timeout = {t}s\n\
             timeout = 4s\nworkers = 2\n{extra}",
            passfile.display(),
            t = TIMEOUT.as_secs(),
        ),
    )
    .unwrap();
    (dir, conf)
}

/// One host: an apppassd on `conninfo` (`--db`), in a directory of its own.
fn host(cluster: &Cluster, conninfo: &str, extra: &str) -> Sandbox {
    let (dir, conf) = host_dir(cluster, extra);
    let daemon = Daemon::start_at(dir.path(), Path::new(conninfo), &conf, &[]);
    sandbox(dir, conf, daemon)
}

fn sandbox(dir: tempfile::TempDir, conf: std::path::PathBuf, daemon: Daemon) -> Sandbox {
    Sandbox {
        db: daemon.db.clone(),
        socket: daemon.socket.clone(),
        daemon,
        module: dir.path().join("pam_apppass.so"),
        confdir: dir.path().join("pam.d"),
        conf,
        dir,
    }
}

/// apppassd as [`Daemon::start_at`] starts it, with environment variables of its own.
fn start_with_env(dir: &Path, db: &str, conf: &Path, env: &[(&str, &Path)]) -> Daemon {
    let socket = dir.join("apppassd.sock");
    let mut c = Command::new(common::workspace_bin("apppassd"));
    c.args(["--db", db, "--socket"])
        .arg(&socket)
        .arg("--config")
        .arg(conf)
        .arg("--stderr");
    for (k, v) in env {
        c.env(k, v);
    }
    let mut d = Daemon {
        child: c.spawn().unwrap(),
        socket,
        db: db.into(),
        conf: conf.to_path_buf(),
    };
    d.wait_ready();
    d
}

/// Stops `s`'s apppassd and starts it again on the same store and configuration.
fn restart(s: &mut Sandbox) {
    s.daemon.stop();
    s.daemon = Daemon::start_at(s.dir.path(), &s.db, &s.conf, &[]);
}

/// A new database, its schema made by the administrators' host's apppassd when it
/// started, and the login role granted (roles.sql); that host.
fn database(cluster: &Cluster, extra: &str) -> (String, Sandbox) {
    let db = cluster.create_database();
    let admin = host(cluster, &cluster.uri(ADMIN, &db), extra);
    let status = admin.daemon.status().unwrap();
    assert_eq!(status.store_error, None);
    assert_eq!(
        status.store,
        format!(
            "PostgreSQL user={ADMIN} host=127.0.0.1 port={} dbname={db}",
            cluster.port
        )
    );
    assert_eq!(
        status.schema_version,
        Some(apppass_core::store::postgres::SCHEMA_VERSION)
    );
    cluster.grant_login_role(&db);
    (db, admin)
}

/// A front end: apppassd with the login role, and an `imap` and a `pop3` service.
fn front_end(cluster: &Cluster, db: &str, extra: &str) -> Sandbox {
    let s = host(cluster, &cluster.uri(LOGIN, db), extra);
    s.simple_service("imap", "");
    s.simple_service("pop3", "");
    s
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `f` and returns its result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let v = f();
    (v, start.elapsed())
}

/// Waits until `f` holds, for at most `limit`.
fn eventually(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn logins_on_a_front_end_with_the_login_role() {
    let Some(cluster) = cluster() else { return };
    let (db, admin) = database(&cluster, "");
    let s = front_end(
        &cluster,
        &db,
        "throttle_failures = 3\nthrottle_interval = 10m\nthrottle_lockout = 1h\n",
    );
    let pw = admin.add("alice", "imap", &["--label", "Phone"]);
    let other = admin.add("alice", "pop3", &[]);
    let to_revoke = admin.add("alice", "imap", &[]);
    let expiring = admin.add("alice", "imap", &["--expires", "1s"]);
    let expired_by = Instant::now() + Duration::from_millis(2100);

    // Right, in every spelling; wrong; other service; other user; no app passwords.
    for form in [
        pw.password.clone(),
        pw.password.replace('-', ""),
        pw.password.to_uppercase().replace('-', " "),
    ] {
        assert_eq!(s.code("imap", "alice", &form), Code::SUCCESS, "{form}");
    }
    assert_eq!(
        s.code("imap", "alice", &wrong_secret(&pw.password)),
        Code::AUTH_ERR
    );
    assert_eq!(s.code("imap", "alice", "account password"), Code::AUTH_ERR);
    assert_eq!(s.code("pop3", "alice", &pw.password), Code::AUTH_ERR);
    assert_eq!(s.code("pop3", "alice", &other.password), Code::SUCCESS);
    assert_eq!(s.code("imap", "bob", &pw.password), Code::USER_UNKNOWN);
    // Revoked on the administrators' host: refused on the front end at once; expired.
    assert_eq!(s.code("imap", "alice", &to_revoke.password), Code::SUCCESS);
    let out = admin.apppass(&["revoke", &to_revoke.id.to_string()]);
    assert!(out.status.success());
    assert_eq!(s.code("imap", "alice", &to_revoke.password), Code::AUTH_ERR);
    std::thread::sleep(expired_by.saturating_duration_since(Instant::now()));
    assert_eq!(s.code("imap", "alice", &expiring.password), Code::AUTH_ERR);

    // Last use, with the remote host and service, seen from both hosts.
    let out = s.login("imap", "alice", pw.password.as_bytes(), Some("203.0.113.9"));
    assert_eq!(out.code, Code::SUCCESS);
    for h in [&admin, &s] {
        let rows = h.list();
        let row = rows.iter().find(|r| r["id"] == pw.id).unwrap();
        assert_eq!(row["use_count"], 4);
        assert_eq!(row["last_rhost"], "203.0.113.9");
        assert_eq!(row["last_service"], "imap");
        assert_eq!(row["label"], "Phone");
        let statuses: Vec<_> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["active", "active", "revoked", "expired"]);
    }

    // The audit log, newest first; bob (no app passwords) left no event.
    let log = json(&admin.apppass(&["log", "--all", "--json"]));
    let seen: Vec<(String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(seen[0], ("success".to_string(), "-".to_string()));
    for reason in [
        "wrong_password",
        "not_app_password",
        "wrong_service",
        "revoked",
        "expired",
    ] {
        assert!(
            seen.contains(&("failure".into(), reason.into())),
            "{reason}: {seen:?}"
        );
    }
    assert!(log.as_array().unwrap().iter().all(|e| e["user"] == "alice"));

    // Throttling per (user, host, password): three wrong secrets for one password from
    // one host lock only that password from that host; unlocked from the
    // administrators' host.
    let guess = wrong_secret(&pw.password);
    for _ in 0..3 {
        let out = s.login("imap", "alice", guess.as_bytes(), Some("198.51.100.66"));
        assert_eq!(out.code, Code::AUTH_ERR);
    }
    let code = |rhost| {
        s.login("imap", "alice", pw.password.as_bytes(), Some(rhost))
            .code
    };
    assert_eq!(code("198.51.100.66"), Code::AUTH_ERR);
    assert_eq!(code("203.0.113.5"), Code::SUCCESS);
    let log = json(&admin.apppass(&["log", "--all", "--json", "--limit", "2"]));
    assert_eq!(log[1]["reason"], "throttled");
    let out = admin.apppass(&["unlock", "--user", "alice", "--rhost", "198.51.100.66"]);
    assert!(out.status.success());
    assert_eq!(code("198.51.100.66"), Code::SUCCESS);

    // The CLI's output has SQLite's shape.
    let sqlite = Sandbox::new();
    sqlite.add("alice", "imap", &[]);
    let header = |s: &Sandbox| {
        let out = s.apppass(&["list", "--user", "alice"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(header(&admin), header(&sqlite));
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v[0].as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&json(&admin.apppass(&["list", "--all", "--json"]))),
        keys(&serde_json::Value::Array(sqlite.list()))
    );
}

/// roles.sql's grants, tried directly, and through a front end's apppassd: changes
/// fail with the server's "permission denied" (the CLI exits 1), logins go on.
#[test]
fn the_login_role_cannot_change_what_it_must_not() {
    let Some(cluster) = cluster() else { return };
    let (db, admin) = database(&cluster, "");
    let pw = admin.add("alice", "imap", &[]);
    let s = front_end(&cluster, &db, "");
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    let as_login = |sql: &str| {
        let out = cluster
            .client(LOGIN, &db, Some(&cluster.login_password))
            .args(["-c", sql])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let id = pw.id;
    for sql in [
        format!("UPDATE app_password SET hash = 'x' WHERE id = {id}"),
        format!("UPDATE app_password SET revoked = NULL WHERE id = {id}"),
        format!("UPDATE app_password SET networks = '' WHERE id = {id}"),
        format!("UPDATE app_password SET expires = NULL, service = '*' WHERE id = {id}"),
        "INSERT INTO app_password (\"user\", service, selector, hash, created) VALUES ('m', '*', 'mmmmmm', 'x', 0)".to_string(),
        format!("DELETE FROM app_password WHERE id = {id}"),
        "DELETE FROM event".to_string(),
        "UPDATE event SET outcome = 'success'".to_string(),
        "SELECT * FROM event".to_string(),
        "UPDATE apppass_schema SET version = 1".to_string(),
        "CREATE TABLE x (y int)".to_string(),
    ] {
        let (ok, err) = as_login(&sql);
        assert!(!ok, "the login role may: {sql}");
        assert!(err.contains("permission denied"), "{sql}: {err}");
    }
    for sql in [
        "SELECT count(*) FROM app_password".to_string(),
        format!("UPDATE app_password SET use_count = use_count WHERE id = {id}"),
        "INSERT INTO throttle (\"user\", rhost, password_id, failures, window_start, expires) \
         VALUES ('u', 'h', 0, 1, 0, 0)"
            .to_string(),
        "DELETE FROM throttle".to_string(),
    ] {
        let (ok, err) = as_login(&sql);
        assert!(ok, "the login role may not: {sql}: {err}");
    }

    // Through the front end's apppassd (as root: an administrator there): reads work,
    // changes and the audit log are refused with the server's reason.
    assert_eq!(s.list().len(), 1);
    let id = id.to_string();
    for args in [
        &["revoke", &id][..],
        &["revoke", "--user", "alice", "--all"],
        &["add", "--user", "mallory", "--service", "imap"],
        &["log", "--all"],
    ] {
        let out = s.apppass(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("permission denied"), "{args:?}: {err}");
    }
    // Nothing changed, and logins go on.
    let rows = admin.list();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "active");
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
}

/// The administrators' apppassd migrates an older schema when it starts; a front end's
/// cannot, says why (in its status and log) and answers logins "unavailable", then
/// carries on once the schema is up to date. The audit log is trimmed by the
/// administrators' apppassd (after a request, now and then), never by the login role's.
#[test]
fn migration_and_pruning_belong_to_the_administrators_role() {
    let Some(cluster) = cluster() else { return };
    let (db, mut admin) = database(&cluster, "audit_max_rows = 3\n");
    admin.simple_service("imap", "");
    let pw = admin.add("alice", "imap", &[]);
    // Version 1: no audit log, no throttle table, no owners.
    admin.daemon.stop();
    cluster.psql(
        &db,
        "DROP TABLE event, throttle; ALTER TABLE app_password DROP COLUMN owner_uid, DROP COLUMN networks, \
         DROP COLUMN replaced_by; \
         UPDATE apppass_schema SET version = 1",
    );
    let s = front_end(&cluster, &db, "audit_max_rows = 3\n");
    let status = s.daemon.status().unwrap();
    let why = status.store_error.unwrap_or_default();
    assert!(
        why.contains("schema version 1 is older") && why.contains("administrators' role"),
        "{why}"
    );
    let (code, took) = timed(|| s.code("imap", "alice", &pw.password));
    assert_eq!(code, Code::AUTHINFO_UNAVAIL);
    assert!(took < 3 * TIMEOUT, "{took:?}");
    // The administrators' host starts: the schema is migrated; roles.sql grants the
    // login role the new tables; the front end carries on by itself.
    admin.daemon = Daemon::start_at(admin.dir.path(), &admin.db, &admin.conf, &[]);
    let status = admin.daemon.status().unwrap();
    assert_eq!(status.store_error, None);
    assert_eq!(
        status.schema_version,
        Some(apppass_core::store::postgres::SCHEMA_VERSION)
    );
    cluster.grant_login_role(&db);
    eventually(RECOVERY, "the front end logs in again", || {
        s.code("imap", "alice", &pw.password) == Code::SUCCESS
    });

    // Ten logins on the front end: all in the log (the login role may only add).
    for _ in 0..10 {
        assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    }
    // (Read straight from the server: a login's record follows its answer.)
    let count = || cluster.psql(&db, "SELECT count(*) FROM event");
    eventually(RECOVERY, "the ten logins are in the audit log", || {
        count().parse::<u32>().unwrap() >= 10
    });
    // A request to the administrators' host: trimmed to audit_max_rows.
    assert_eq!(admin.code("imap", "alice", &pw.password), Code::SUCCESS);
    eventually(RECOVERY, "the audit log is trimmed", || count() == "3");
}

#[test]
fn server_down_hung_or_locked_is_authinfo_unavail_within_the_timeout() {
    let Some(cluster) = cluster() else { return };
    let (db, admin) = database(&cluster, "");
    let pw = admin.add("alice", "imap", &[]);
    // One worker, one connection: which connection a login uses is then known.
    let s = front_end(&cluster, &db, "workers = 1\n");
    // The fallback stack of README "Running on several hosts": with the store
    // unavailable, the next module decides (pam_permit here, pam_unix there).
    s.service(
        "fallback",
        "auth [success=done authinfo_unavail=ignore default=die] {module} socket={socket} conf={conf}\n\
         auth required pam_permit.so\n",
    );
    let bound = 3 * TIMEOUT;
    let ok = || s.code("imap", "alice", &pw.password) == Code::SUCCESS;
    assert!(ok());
    assert_eq!(
        s.code("fallback", "alice", &wrong_secret(&pw.password)),
        Code::AUTH_ERR
    );

    // Restarted between two logins: the connection is made again, no login fails.
    cluster.stop_immediate();
    cluster.restart();
    for _ in 0..4 {
        assert!(ok());
    }

    // Killed: refused connections, at once.
    cluster.stop_immediate();
    let (code, took) = timed(|| s.code("imap", "alice", &pw.password));
    assert_eq!(code, Code::AUTHINFO_UNAVAIL);
    assert!(took < bound, "{took:?}");
    assert_eq!(s.code("fallback", "alice", "anything"), Code::SUCCESS);
    cluster.restart();
    eventually(RECOVERY, "logins after the restart", ok);

    // The postmaster alone hung: connections already open still serve logins.
    cluster.signal("STOP");
    let (good, took) = timed(ok);
    cluster.signal("CONT");
    assert!(good && took < bound, "{took:?}");

    // The whole server hung (stopped): the query is never answered, nor a new
    // connection.
    cluster.signal_all("STOP");
    for _ in 0..3 {
        let (code, took) = timed(|| s.code("imap", "alice", &pw.password));
        assert_eq!(code, Code::AUTHINFO_UNAVAIL);
        assert!(took < bound, "{took:?}");
    }
    cluster.signal_all("CONT");
    eventually(RECOVERY, "logins after the server woke up", ok);

    // A query that cannot finish (a lock held by someone else): the query timeout.
    let mut holder = cluster
        .client("postgres", &db, None)
        .args([
            "-c",
            "BEGIN; LOCK TABLE app_password IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(30);",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let locked = Instant::now() + Duration::from_secs(10);
    while cluster.psql(&db, "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'app_password'::regclass") != "1" {
        assert!(Instant::now() < locked, "the lock was never taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, took) = timed(|| s.code("imap", "alice", &pw.password));
    let _ = holder.kill();
    let _ = holder.wait();
    // Its server process would hold the lock until pg_sleep ends.
    cluster.psql(
        &db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()",
    );
    assert_eq!(code, Code::AUTHINFO_UNAVAIL);
    assert!(took >= TIMEOUT && took < bound, "{took:?}");
    // And back to normal at once.
    assert!(ok());
    assert!(s.daemon.status().is_some());
}

#[test]
fn two_front_ends_one_store() {
    let Some(cluster) = cluster() else { return };
    let (db, admin) = database(&cluster, "");
    let a = front_end(&cluster, &db, "");
    let b = front_end(&cluster, &db, "");
    let ip = Some("192.0.2.44");
    let on = |h: &Sandbox, pw: &str| h.login("imap", "alice", pw.as_bytes(), ip).code;
    // Added on the administrators' host: works on both at once; both see its use.
    let first = admin.add("alice", "imap", &[]);
    let second = admin.add("alice", "imap", &[]);
    assert_eq!(on(&a, &first.password), Code::SUCCESS);
    assert_eq!(on(&b, &second.password), Code::SUCCESS);
    assert_eq!(on(&a, &second.password), Code::SUCCESS);
    let uses = |h: &Sandbox, id: i64| {
        h.list().iter().find(|r| r["id"] == id).unwrap()["use_count"].clone()
    };
    for h in [&a, &b, &admin] {
        assert_eq!(uses(h, second.id), 2);
    }
    // Revoked: refused on both at once.
    assert!(
        admin
            .apppass(&["revoke", &first.id.to_string()])
            .status
            .success()
    );
    assert_eq!(on(&a, &first.password), Code::AUTH_ERR);
    assert_eq!(on(&b, &first.password), Code::AUTH_ERR);
    // Throttling is shared too: guesses on one front end count on the other.
    let guess = wrong_secret(&second.password);
    for h in [&a, &b, &a, &b, &a, &b, &a, &b, &a, &b] {
        assert_eq!(on(h, &guess), Code::AUTH_ERR);
    }
    assert_eq!(on(&b, &second.password), Code::AUTH_ERR);
    assert_eq!(on(&a, &second.password), Code::AUTH_ERR);
    // A front end may lift it (the login role keeps the throttle table).
    assert!(b.apppass(&["unlock", "--user", "alice"]).status.success());
    assert_eq!(on(&a, &second.password), Code::SUCCESS);
}

/// Throttling per (user, remote host, password) through a front end with the login
/// role, on a database apppassd upgraded from schema version 2: the upgrade drops the
/// old throttle rows and keeps the login role's grants (roles.sql need not run again).
/// Guesses at unknown selectors and a wrong secret for one password lock only those from
/// that address: the owner's other password works there. One audit event per lockout.
/// The throttle table stays within throttle_max_rows under a flood of /64s, and the
/// front end's own maintenance (the login role) deletes expired rows.
#[test]
fn throttling_per_password_and_bounded_after_an_upgrade_from_schema_2() {
    let Some(cluster) = cluster() else { return };
    let db = cluster.create_database();
    let sql = |name: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("sql/postgres")
                .join(name),
        )
        .unwrap()
    };
    // Schema version 2, as the administrators' role made it, with roles.sql applied
    // and an old throttle row (alice locked out from the address used below).
    cluster.psql(
        &db,
        &format!(
            "SET ROLE {ADMIN};\n{}\n{}\nUPDATE apppass_schema SET version = 2;\n\
             INSERT INTO throttle VALUES ('alice', '198.51.100.9', 99, 0, 9999999999);",
            sql("0001_app_password.sql"),
            sql("0002_audit_throttle.sql")
        ),
    );
    cluster.grant_login_role(&db);
    let admin = host(&cluster, &cluster.uri(ADMIN, &db), "");
    assert_eq!(
        admin.daemon.status().unwrap().schema_version,
        Some(apppass_core::store::postgres::SCHEMA_VERSION)
    );
    let count = || cluster.psql(&db, "SELECT count(*) FROM throttle");
    assert_eq!(count(), "0");
    let mut s = front_end(
        &cluster,
        &db,
        "throttle_failures = 3\nthrottle_interval = 8s\nthrottle_lockout = 1h\n\
         throttle_max_rows = 10\n",
    );
    assert_eq!(s.daemon.status().unwrap().store_error, None);
    let phone = admin.add("alice", "imap", &[]);
    let laptop = admin.add("alice", "imap", &[]);
    let unknown = || {
        apppass_core::secret::NewPassword::generate()
            .unwrap()
            .display()
            .to_string()
    };

    // A flood of /64s: never more than throttle_max_rows rows.
    for i in 0..30 {
        let rhost = format!("2001:db8:{i:x}::7");
        let out = s.login("imap", "alice", unknown().as_bytes(), Some(&rhost));
        assert_eq!(out.code, Code::AUTH_ERR);
        let n: u32 = count().parse().unwrap();
        assert!(n <= 10, "{n} rows after {} hosts", i + 1);
    }

    // From one address: three unknown selectors and three wrong secrets for the laptop's
    // password, then two more of each, refused.
    let shared = Some("198.51.100.9");
    let stale = wrong_secret(&laptop.password);
    let on = |s: &Sandbox, password: &str, rhost| {
        s.login("imap", "alice", password.as_bytes(), rhost).code
    };
    for i in 0..10 {
        let guess = if i % 2 == 0 { unknown() } else { stale.clone() };
        assert_eq!(on(&s, &guess, shared), Code::AUTH_ERR, "{i}");
    }
    assert_eq!(on(&s, &phone.password, shared), Code::SUCCESS);
    assert_eq!(on(&s, &laptop.password, shared), Code::AUTH_ERR);
    assert_eq!(
        on(&s, &laptop.password, Some("203.0.113.10")),
        Code::SUCCESS
    );
    assert_eq!(on(&s, &unknown(), shared), Code::AUTH_ERR);
    // The audit log from that address: six checked guesses, one success, and one event
    // for each of the two lockouts; the five other refusals are counted on the rows.
    let from_shared = || {
        let log = json(&admin.apppass(&["log", "--all", "--json"]));
        log.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["rhost"] == "198.51.100.9")
            .map(|e| e["reason"].as_str().unwrap_or("-").to_string())
            .collect::<Vec<_>>()
    };
    eventually(RECOVERY, "the attempts are in the audit log", || {
        cluster.psql(&db, "SELECT sum(refused) FROM throttle") == "6"
    });
    let mut reasons = from_shared();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "-",
            "throttled",
            "throttled",
            "unknown_password",
            "unknown_password",
            "unknown_password",
            "wrong_password",
            "wrong_password",
            "wrong_password"
        ]
    );
    assert!(count().parse::<u32>().unwrap() <= 10);

    // Maintenance by the front end's own apppassd (at its first request after a start):
    // the flood's rows, whose windows are over, go; the two lockouts stay.
    std::thread::sleep(Duration::from_secs(8));
    restart(&mut s);
    assert_eq!(on(&s, &phone.password, Some("192.0.2.5")), Code::SUCCESS);
    eventually(RECOVERY, "expired throttle rows are deleted", || {
        count() == "2"
    });
    assert_eq!(on(&s, &unknown(), shared), Code::AUTH_ERR);
    assert_eq!(on(&s, &phone.password, shared), Code::SUCCESS);
}

/// Passwords anywhere but db_passfile, TCP without TLS that verifies the server, and a
/// password file that cannot be used: refused, with a message that says why and never
/// repeats the password. `service=` works, with what the service file says checked.
#[test]
fn refused_settings() {
    let Some(cluster) = cluster() else { return };
    let (db, admin) = database(&cluster, "");
    let pw = admin.add("alice", "imap", &[]);
    let secret = "hunter2-in-the-setting";

    // In --db or in the configuration: apppassd does not start.
    let (dir, conf) = host_dir(&cluster, "");
    let with_password = cluster
        .uri(LOGIN, &db)
        .replace(LOGIN, &format!("{LOGIN}:{secret}"));
    let bad_conf = dir.path().join("bad.conf");
    std::fs::write(
        &bad_conf,
        format!("db = host=127.0.0.1 password={secret}\n"),
    )
    .unwrap();
    for (db_arg, conf) in [(Some(with_password.as_str()), &conf), (None, &bad_conf)] {
        let mut c = Command::new(common::workspace_bin("apppassd"));
        if let Some(d) = db_arg {
            c.args(["--db", d]);
        }
        let out = c
            .arg("--socket")
            .arg(dir.path().join("never.sock"))
            .arg("--config")
            .arg(conf)
            .arg("--stderr")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("db_passfile") && !err.contains(secret),
            "{err}"
        );
    }

    // Over TCP: verify-full or nothing, whether the string or a service file says it.
    let services = dir.path().join("pg_service.conf");
    std::fs::write(
        &services,
        format!(
            "[weak]\nhost=127.0.0.1\nport={port}\ndbname={db}\nuser={LOGIN}\nsslmode=require\n\
             [verified]\nhost=127.0.0.1\nport={port}\ndbname={db}\nuser={LOGIN}\n\
             sslmode=verify-full\nsslrootcert={ca}\n\
             [password]\nhost=127.0.0.1\nport={port}\ndbname={db}\nuser={LOGIN}\n\
             sslmode=verify-full\nsslrootcert={ca}\npassword={secret}\n",
            port = cluster.port,
            ca = cluster.ca_file().display(),
        ),
    )
    .unwrap();
    let store_error = |db: &str, env: &[(&str, &Path)]| {
        let mut d = start_with_env(dir.path(), db, &conf, env);
        let status = d.status().unwrap();
        d.stop();
        status.store_error
    };
    let env = [("PGSERVICEFILE", services.as_path())];
    for (what, db, env) in [
        ("no sslmode", cluster.plain_uri(LOGIN, &db), &[][..]),
        (
            "sslmode=require from the service file",
            "service=weak".into(),
            &env[..],
        ),
    ] {
        let why = store_error(&db, env).unwrap_or_default();
        assert!(
            why.contains("over TCP") && why.contains("add sslmode=verify-full"),
            "{what}: {why}"
        );
    }
    let why = store_error("service=password", &env).unwrap_or_default();
    assert!(
        why.contains("refusing a password") && !why.contains(secret),
        "{why}"
    );
    let why = store_error(
        &cluster.uri(LOGIN, &db).replace("127.0.0.1", "localhost"),
        &[],
    )
    .unwrap_or_default();
    assert!(why.contains("does not match host name"), "{why}");
    // service= with verify-full, and a Unix socket without TLS: logins work.
    for (db, env) in [
        ("service=verified".to_string(), &env[..]),
        (cluster.socket_conninfo(LOGIN, &db), &[][..]),
    ] {
        let daemon = start_with_env(dir.path(), &db, &conf, env);
        assert_eq!(daemon.status().unwrap().store_error, None, "{db}");
        let s = sandbox(tempfile::tempdir().unwrap(), conf.clone(), daemon);
        std::os::unix::fs::symlink(common::built_module(), &s.module).unwrap();
        std::fs::create_dir(&s.confdir).unwrap();
        s.simple_service("imap", "");
        assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS, "{db}");
    }

    // The password file: open to others, with a wrong password, or missing: the store
    // is unavailable (and logins PAM_AUTHINFO_UNAVAIL) until it is right again.
    let mut s = front_end(&cluster, &db, "");
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    let passfile = s.dir.path().join("apppass.pgpass");
    let set_mode = |mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let good = std::fs::read_to_string(&passfile).unwrap();
    let cases: [(&str, &dyn Fn()); 3] = [
        ("open to group or other", &|| set_mode(0o640)),
        ("password authentication failed", &|| {
            set_mode(0o600);
            std::fs::write(&passfile, good.replace(&cluster.login_password, "wrong")).unwrap();
        }),
        ("No such file", &|| std::fs::remove_file(&passfile).unwrap()),
    ];
    for (expected, break_it) in cases {
        break_it();
        restart(&mut s);
        let why = s.daemon.status().unwrap().store_error.unwrap_or_default();
        assert!(why.contains(expected), "{expected}: {why}");
        assert!(!why.contains(&cluster.login_password), "{why}");
        assert_eq!(
            s.code("imap", "alice", &pw.password),
            Code::AUTHINFO_UNAVAIL
        );
    }
    std::fs::write(&passfile, &good).unwrap();
    set_mode(0o600);
    eventually(RECOVERY, "logins with the password file back", || {
        s.code("imap", "alice", &pw.password) == Code::SUCCESS
    });
}

/// libpq (and the OpenSSL, GSSAPI and LDAP it brings) is apppassd's alone: the module,
/// loaded into every sshd and Dovecot login, and the CLI do not load it.
#[test]
fn only_apppassd_links_libpq() {
    let have = Command::new("readelf").arg("--version").output().is_ok();
    if !require(have, "readelf (binutils)") {
        return;
    }
    let needed = |path: &Path| -> Vec<String> {
        let out = Command::new("readelf")
            .arg("-d")
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "readelf {}", path.display());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once("Shared library: [")?.1.strip_suffix(']'))
            .map(String::from)
            .collect()
    };
    let daemon = needed(&common::workspace_bin("apppassd"));
    assert!(daemon.iter().any(|l| l == "libpq.so.5"), "{daemon:?}");
    for path in [common::apppass_bin(), common::built_module()] {
        let libs = needed(&path);
        assert!(
            !libs.iter().any(|l| l.starts_with("libpq")),
            "{}: {libs:?}",
            path.display()
        );
    }
}

/// A front end compares each row's owner with the uid its own NSS gives the user's name
/// now: once the account is deleted, its app password is refused there as well
/// (reason=owner_changed), and listed as orphaned.
#[test]
fn a_front_end_refuses_an_app_password_whose_account_is_gone() {
    if !require(common::is_root(), "root (to create a throwaway user)") {
        return;
    }
    let Some(cluster) = cluster() else { return };
    /// The throwaway account, removed even when the test fails.
    struct Account(String);
    impl Drop for Account {
        fn drop(&mut self) {
            let _ = Command::new("userdel").arg(&self.0).output();
        }
    }
    let account = Account(common::unique("appgown"));
    let user = account.0.as_str();
    support::run_ok(Command::new("useradd").args(["-M", "-N", "-s", "/usr/sbin/nologin", user]));
    let (db, admin) = database(&cluster, "");
    let s = front_end(&cluster, &db, "");
    let pw = admin.add(user, "imap", &[]);
    assert_eq!(s.code("imap", user, &pw.password), Code::SUCCESS);
    support::run_ok(Command::new("userdel").arg(user));
    assert_eq!(s.code("imap", user, &pw.password), Code::AUTH_ERR);
    eventually(Duration::from_secs(10), "the refusal's log line", || {
        s.daemon
            .log()
            .lines()
            .any(|l| l.contains(&format!("user={user} ")) && l.contains("reason=owner_changed"))
    });
    let rows = admin.list();
    assert_eq!(rows[0]["status"], "orphaned", "{rows:?}");
}
