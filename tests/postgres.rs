//! The built module and CLI on a PostgreSQL store (a private cluster, tests/pg): logins
//! through the real libpam with the module's least-privilege role, what that role may
//! not do, the server killed or hung mid-test (PAM_AUTHINFO_UNAVAIL within the timeout,
//! and a stack that falls back), two hosts sharing one database, refused settings, and
//! one Dovecot end-to-end login. Under CI a missing PostgreSQL fails.

mod common;
mod e2e;
mod pg;
mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, require};
use pam_apppass::code::Code;
use pg::{ADMIN, Cluster, LOGIN};
use support::wrong_secret;

/// The timeouts the tests configure (db_connect_timeout, db_query_timeout).
const TIMEOUT: Duration = Duration::from_secs(1);

fn cluster() -> Option<Cluster> {
    match Cluster::start() {
        Ok(c) => Some(c),
        Err(e) => {
            require(false, &e);
            None
        }
    }
}

/// One host: its own directory, configuration (the administrators' role for the CLI),
/// password file and PAM service directory, on database `db` of `cluster`.
fn host(cluster: &Cluster, db: &str, extra_conf: &str) -> Sandbox {
    let dir = tempfile::Builder::new()
        .prefix("apppass-pg-host")
        .tempdir()
        .unwrap();
    let module = dir.path().join("pam_apppass.so");
    std::os::unix::fs::symlink(common::built_module(), &module).unwrap();
    let confdir = dir.path().join("pam.d");
    std::fs::create_dir(&confdir).unwrap();
    let passfile = dir.path().join("apppass.pgpass");
    cluster.passfile(&passfile, &[ADMIN, LOGIN]);
    let admin = cluster.uri(ADMIN, db);
    let conf = dir.path().join("apppass.conf");
    std::fs::write(
        &conf,
        format!(
            "db = {admin}\ndb_passfile = {}\ndb_connect_timeout = {}s\ndb_query_timeout = {}s\n{extra_conf}",
            passfile.display(),
            TIMEOUT.as_secs(),
            TIMEOUT.as_secs()
        ),
    )
    .unwrap();
    Sandbox {
        db: PathBuf::from(admin),
        module,
        confdir,
        conf,
        dir,
    }
}

/// A database made with `apppass init` (as the administrators' role) and the module's
/// role granted by sql/postgres/roles.sql; the first host on it.
fn database(cluster: &Cluster, extra_conf: &str) -> (String, Sandbox) {
    let db = cluster.create_database();
    let s = host(cluster, &db, extra_conf);
    let out = s.apppass(&["init"]);
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "PostgreSQL user={ADMIN} host=127.0.0.1 port={} dbname={db}: ready (schema version ",
            cluster.port
        )),
        "{text}"
    );
    cluster.grant_login_role(&db);
    (db, s)
}

/// A PAM service on `s` whose module line uses the module's role.
fn service(s: &Sandbox, cluster: &Cluster, db: &str, name: &str, control: &str, rest: &str) {
    s.service(
        name,
        &format!(
            "auth {control} {{module}} conf={{conf}} db={}\n{rest}",
            cluster.uri(LOGIN, db)
        ),
    );
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn logins_through_libpam_with_the_module_role() {
    let Some(cluster) = cluster() else { return };
    let (db, s) = database(
        &cluster,
        "throttle_failures = 3\nthrottle_interval = 10m\nthrottle_lockout = 1h\n",
    );
    service(&s, &cluster, &db, "imap", "required", "");
    service(&s, &cluster, &db, "pop3", "required", "");
    let pw = s.add("alice", "imap", &["--label", "Phone"]);
    let other = s.add("alice", "pop3", &[]);
    let to_revoke = s.add("alice", "imap", &[]);
    let expiring = s.add("alice", "imap", &["--expires", "1s"]);
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
    // Revoked, at once; expired.
    assert_eq!(s.code("imap", "alice", &to_revoke.password), Code::SUCCESS);
    assert!(
        s.apppass(&["revoke", &to_revoke.id.to_string()])
            .status
            .success()
    );
    assert_eq!(s.code("imap", "alice", &to_revoke.password), Code::AUTH_ERR);
    std::thread::sleep(expired_by.saturating_duration_since(Instant::now()));
    assert_eq!(s.code("imap", "alice", &expiring.password), Code::AUTH_ERR);

    // Last use, with the remote host and service.
    let out = s.login("imap", "alice", pw.password.as_bytes(), Some("203.0.113.9"));
    assert_eq!(out.code, Code::SUCCESS);
    let rows = s.list();
    let row = rows.iter().find(|r| r["id"] == pw.id).unwrap();
    assert_eq!(row["use_count"], 4);
    assert_eq!(row["last_rhost"], "203.0.113.9");
    assert_eq!(row["last_service"], "imap");
    assert_eq!(row["label"], "Phone");
    let statuses: Vec<_> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["active", "active", "revoked", "expired"]);

    // The audit log, newest first; bob (no app passwords) left no event.
    let log = json(&s.apppass(&["log", "--all", "--json"]));
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
    assert!(
        seen.contains(&("failure".into(), "wrong_password".into())),
        "{seen:?}"
    );
    assert!(seen.contains(&("failure".into(), "not_app_password".into())));
    assert!(seen.contains(&("failure".into(), "wrong_service".into())));
    assert!(seen.contains(&("failure".into(), "revoked".into())));
    assert!(seen.contains(&("failure".into(), "expired".into())));
    assert!(log.as_array().unwrap().iter().all(|e| e["user"] == "alice"));

    // Throttling per (user, host): three guesses from one host lock only that host.
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
    let log = json(&s.apppass(&["log", "--all", "--json", "--limit", "2"]));
    assert_eq!(log[1]["reason"], "throttled");
    assert!(
        s.apppass(&["unlock", "--user", "alice", "--rhost", "198.51.100.66"])
            .status
            .success()
    );
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
    assert_eq!(header(&s), header(&sqlite));
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v[0].as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&json(&s.apppass(&["list", "--all", "--json"]))),
        keys(&serde_json::Value::Array(sqlite.list()))
    );
}

#[test]
fn the_module_role_cannot_change_what_it_must_not() {
    let Some(cluster) = cluster() else { return };
    let (db, s) = database(&cluster, "");
    let pw = s.add("alice", "imap", &[]);
    service(&s, &cluster, &db, "imap", "required", "");
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
        assert!(!ok, "the module's role may: {sql}");
        assert!(err.contains("permission denied"), "{sql}: {err}");
    }
    for sql in [
        "SELECT count(*) FROM app_password".to_string(),
        format!("UPDATE app_password SET use_count = use_count WHERE id = {id}"),
        "INSERT INTO throttle VALUES ('u', 'h', 1, 0, NULL)".to_string(),
        "DELETE FROM throttle".to_string(),
    ] {
        let (ok, err) = as_login(&sql);
        assert!(ok, "the module's role may not: {sql}: {err}");
    }
    // The CLI with the module's role: reads work, changes are refused (exit 1).
    let login_conf = s.dir.path().join("login.conf");
    let conf = std::fs::read_to_string(&s.conf).unwrap();
    std::fs::write(&login_conf, conf.replace(ADMIN, LOGIN)).unwrap();
    let cli = |args: &[&str]| {
        Command::new(common::apppass_bin())
            .arg("--config")
            .arg(&login_conf)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(cli(&["list", "--all"]).status.success());
    let out = cli(&["revoke", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    assert_eq!(
        cli(&["add", "--user", "m", "--service", "imap"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
}

/// Runs `f` and returns its result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let v = f();
    (v, start.elapsed())
}

#[test]
fn server_down_or_hung_is_authinfo_unavail_within_the_timeout() {
    let Some(cluster) = cluster() else { return };
    let (db, s) = database(&cluster, "");
    let pw = s.add("alice", "imap", &[]);
    service(&s, &cluster, &db, "imap", "required", "");
    // The fallback stack of README "Running on several hosts": with the database
    // unreachable, the next module decides (pam_permit here, pam_unix there).
    service(
        &s,
        &cluster,
        &db,
        "fallback",
        "[success=done authinfo_unavail=ignore default=die]",
        "auth required pam_permit.so\n",
    );
    let bound = 3 * TIMEOUT;
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    assert_eq!(
        s.code("fallback", "alice", &wrong_secret(&pw.password)),
        Code::AUTH_ERR
    );

    // Killed: refused connections, at once.
    cluster.stop_immediate();
    let (code, took) = timed(|| s.code("imap", "alice", &pw.password));
    assert_eq!(code, Code::AUTHINFO_UNAVAIL);
    assert!(took < bound, "{took:?}");
    assert_eq!(s.code("fallback", "alice", "anything"), Code::SUCCESS);
    cluster.restart();
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);

    // Hung (stopped): the connection is accepted by the kernel and never answered.
    cluster.signal("STOP");
    let (code, took) = timed(|| s.code("imap", "alice", &pw.password));
    cluster.signal("CONT");
    assert_eq!(code, Code::AUTHINFO_UNAVAIL);
    assert!(took >= TIMEOUT && took < bound, "{took:?}");

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
    // And back to normal.
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
}

#[test]
fn two_hosts_one_store() {
    let Some(cluster) = cluster() else { return };
    let (db, a) = database(&cluster, "");
    let b = host(&cluster, &db, "");
    for h in [&a, &b] {
        service(h, &cluster, &db, "imap", "required", "");
    }
    let ip = Some("192.0.2.44");
    let on = |h: &Sandbox, pw: &str| h.login("imap", "alice", pw.as_bytes(), ip).code;
    // Added on one, works on the other at once; both see its use.
    let from_a = a.add("alice", "imap", &[]);
    assert_eq!(on(&b, &from_a.password), Code::SUCCESS);
    let from_b = b.add("alice", "imap", &[]);
    assert_eq!(on(&a, &from_b.password), Code::SUCCESS);
    assert_eq!(on(&b, &from_b.password), Code::SUCCESS);
    let uses = |h: &Sandbox, id: i64| {
        h.list().iter().find(|r| r["id"] == id).unwrap()["use_count"].clone()
    };
    assert_eq!(uses(&a, from_b.id), 2);
    assert_eq!(uses(&b, from_b.id), 2);
    // Revoked on one, refused on the other at once.
    assert!(
        a.apppass(&["revoke", &from_a.id.to_string()])
            .status
            .success()
    );
    assert_eq!(on(&b, &from_a.password), Code::AUTH_ERR);
    assert!(
        b.apppass(&["revoke", &from_b.id.to_string()])
            .status
            .success()
    );
    assert_eq!(on(&a, &from_b.password), Code::AUTH_ERR);
    // Throttling is shared too: guesses on one host count on the other.
    let fresh = a.add("alice", "imap", &[]);
    let guess = wrong_secret(&fresh.password);
    for h in [&a, &b, &a, &b, &a, &b, &a, &b, &a, &b] {
        assert_eq!(on(h, &guess), Code::AUTH_ERR);
    }
    assert_eq!(on(&b, &fresh.password), Code::AUTH_ERR);
    assert_eq!(on(&a, &fresh.password), Code::AUTH_ERR);
    assert!(b.apppass(&["unlock", "--user", "alice"]).status.success());
    assert_eq!(on(&a, &fresh.password), Code::SUCCESS);
}

#[test]
fn refused_settings() {
    let Some(cluster) = cluster() else { return };
    let (db, s) = database(&cluster, "");
    let pw = s.add("alice", "imap", &[]);
    let login = cluster.uri(LOGIN, &db);
    let secret = "hunter2-in-the-uri";
    // A password on the PAM line or in the configuration: PAM_SERVICE_ERR.
    s.service(
        "inline",
        &format!(
            "auth required {{module}} conf={{conf}} db={}\n",
            login.replace(LOGIN, &format!("{LOGIN}:{secret}"))
        ),
    );
    assert_eq!(s.code("inline", "alice", &pw.password), Code::SERVICE_ERR);
    let bad_conf = s.dir.path().join("bad.conf");
    std::fs::write(
        &bad_conf,
        format!("db = host=127.0.0.1 password={secret}\n"),
    )
    .unwrap();
    s.service(
        "inconf",
        &format!("auth required {{module}} conf={}\n", bad_conf.display()),
    );
    assert_eq!(s.code("inconf", "alice", &pw.password), Code::SERVICE_ERR);
    // ... and from the CLI: a usage error that does not repeat it.
    let out = Command::new(common::apppass_bin())
        .args([
            "--db",
            &format!("postgresql://u:{secret}@127.0.0.1/x"),
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("db_passfile") && !err.contains(secret),
        "{err}"
    );
    // A password from a service file (or PGPASSWORD) is refused too.
    let services = s.dir.path().join("pg_service.conf");
    std::fs::write(
        &services,
        format!(
            "[apppass]\nhost=127.0.0.1\nport={}\ndbname={db}\nuser={ADMIN}\npassword={}\n",
            cluster.port, cluster.admin_password
        ),
    )
    .unwrap();
    let out = Command::new(common::apppass_bin())
        .env("PGSERVICEFILE", &services)
        .args(["--db", "service=apppass", "--config"])
        .arg(&s.conf)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing a password") && !err.contains(&cluster.admin_password),
        "{err}"
    );

    // The password file: missing, open to others, or with a wrong password.
    service(&s, &cluster, &db, "imap", "required", "");
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    let passfile = s.dir.path().join("apppass.pgpass");
    let set_mode = |mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set_mode(0o640);
    assert_eq!(
        s.code("imap", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    set_mode(0o600);
    let good = std::fs::read_to_string(&passfile).unwrap();
    std::fs::write(&passfile, good.replace(&cluster.login_password, "wrong")).unwrap();
    assert_eq!(
        s.code("imap", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    std::fs::remove_file(&passfile).unwrap();
    assert_eq!(
        s.code("imap", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    std::fs::write(&passfile, &good).unwrap();
    set_mode(0o600);
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    // Not initialised: PAM_AUTHINFO_UNAVAIL.
    let empty = cluster.create_database();
    service(&s, &cluster, &empty, "empty", "required", "");
    assert_eq!(
        s.code("empty", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
}

/// One Dovecot login through the shipped PAM file, with apppass.conf naming the
/// PostgreSQL database and the module's role.
#[test]
fn dovecot_login_on_postgresql() {
    if !e2e::have(&[e2e::DOVECOT, "curl", "unshare", "useradd"]) {
        return;
    }
    let Some(cluster) = cluster() else { return };
    let (db, s) = database(&cluster, "");
    let user = e2e::TestUser::create();
    let u = user.name.as_str();
    let pw = s.add(u, "imap", &["--label", "Thunderbird"]);
    let passfile = s.dir.path().join("apppass.pgpass");
    let conf = format!(
        "db = {}\ndb_passfile = {}\ndb_connect_timeout = 2s\ndb_query_timeout = 2s\n",
        cluster.uri(LOGIN, &db),
        passfile.display()
    );
    let world = e2e::World::with(s, &conf);
    world.install_pam("dovecot-apppass-only", "imap");
    let d = e2e::Dovecot::start(&world, &e2e::DovecotSetup::default());
    let ip = e2e::fresh_ip();
    e2e::mail_login(&d, e2e::Mail::Imap, u, &pw.password, &ip).assert_in(e2e::Mail::Imap);
    let wrong = e2e::fresh_ip();
    e2e::mail_login(&d, e2e::Mail::Imap, u, &wrong_secret(&pw.password), &wrong)
        .assert_refused(e2e::Mail::Imap);
    e2e::assert_last_use(&world, pw.id, &ip, "imap", 1);
    // Revoked on the database: refused at the next login.
    assert!(
        world
            .sandbox
            .apppass(&["revoke", &pw.id.to_string()])
            .status
            .success()
    );
    e2e::mail_login(&d, e2e::Mail::Imap, u, &pw.password, &e2e::fresh_ip())
        .assert_refused(e2e::Mail::Imap);
}
