//! What the benchmark logs in against: apppassd's stores of 1,000 and 1,000,000 app
//! passwords (each in a directory of its own, as apppassd requires), a PostgreSQL
//! database, and the peers' files (pam_userdb, pam_pwdfile) with yescrypt hashes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use apppass_core::policy::Account;
use apppass_core::secret::{self, ALPHABET, HashParams, NewPassword, SELECTOR_LEN};
use apppass_core::store::sqlite::SqliteStore;
use apppass_core::store::{NewRow, Owner, Store};

/// A real app password: its id and the text a person would type.
#[derive(Debug, Clone)]
pub struct Known {
    pub id: i64,
    pub password: String,
}

/// The users every database holds, with real hashes at the default parameters.
#[derive(Debug, Clone)]
pub struct People {
    /// `solo`: one app password.
    pub solo: Known,
    /// `forty`: forty app passwords, all for imap; `forty[0]` is revoked.
    pub forty: Vec<Known>,
    /// `clibench`: forty more, for the CLI timings.
    pub cli_user: &'static str,
}

/// The real rows, hashed once and written into each database.
pub struct RealRows {
    rows: Vec<(String, String, String, String)>, // user, selector, hash, password
    params: HashParams,
}

impl RealRows {
    pub fn make(params: HashParams) -> RealRows {
        let mut rows = Vec::new();
        let mut add = |user: &str| {
            let pw = NewPassword::generate().unwrap();
            let hash = pw.hash(params).unwrap();
            rows.push((
                user.to_string(),
                pw.selector().to_string(),
                hash,
                pw.display().to_string(),
            ));
        };
        add("solo");
        for _ in 0..40 {
            add("forty");
        }
        for _ in 0..40 {
            add("clibench");
        }
        RealRows { rows, params }
    }

    fn selectors(&self) -> std::collections::HashSet<String> {
        self.rows.iter().map(|r| r.1.clone()).collect()
    }
}

/// Builds a database of `total` app passwords: the real rows, then filler rows written
/// directly in one transaction (users `filler{n}`, ten passwords each, sequential
/// selectors, all sharing one valid hash). This is how the 1M-row database is made in
/// seconds rather than the hours a million argon2id hashes would take; the filler rows
/// are never logged in with, they only make the table and its indexes the size given.
pub fn database(dir: &Path, name: &str, total: usize, real: &RealRows) -> (PathBuf, People) {
    // init makes the directory 0700 and the file 0600, as apppassd wants them.
    let path = dir.join(name).join("apppass.db");
    let store = SqliteStore::init(&path).unwrap();
    let people = real_rows(&store, real);
    drop(store);

    let filler_hash = secret::dummy_hash(real.params).unwrap();
    let taken = real.selectors();
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO app_password (user, service, label, selector, hash, created, owner_uid)
                 VALUES (?1, 'imap', 'filler', ?2, ?3, 1, NULL)",
            )
            .unwrap();
        let mut n = 0usize;
        let mut counter = 0u64;
        while n + real.rows.len() < total {
            let selector = base31(counter);
            counter += 1;
            if taken.contains(&selector) {
                continue;
            }
            insert
                .execute(rusqlite::params![
                    format!("filler{}", n / 10),
                    selector,
                    filler_hash
                ])
                .unwrap();
            n += 1;
        }
    }
    tx.commit().unwrap();
    // No ANALYZE: apppass never runs it, so a real database has no statistics for the
    // planner to read, and every login here must plan the way it plans there.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    (path, people)
}

/// Writes the real rows into `store` (`forty[0]` revoked).
fn real_rows(store: &dyn Store, real: &RealRows) -> People {
    let mut solo = None;
    let mut forty = Vec::new();
    for (user, selector, hash, password) in &real.rows {
        let id = store
            .create(&NewRow {
                user,
                service: "imap",
                label: "bench",
                selector,
                hash,
                created: 1,
                expires: None,
                owner: Account::NoAccount,
                networks: "",
            })
            .unwrap();
        let known = Known {
            id,
            password: password.clone(),
        };
        match user.as_str() {
            "solo" => solo = Some(known),
            "forty" => forty.push(known),
            _ => {}
        }
    }
    store.revoke(&[forty[0].id], Owner::Anyone, 2).unwrap();
    People {
        solo: solo.unwrap(),
        forty,
        cli_user: "clibench",
    }
}

/// The same real rows in a PostgreSQL database of `cluster` (its schema made as the
/// administrators' role, then roles.sql); returns a configuration file for apppassd
/// (`extra` appended) and the front ends' connection string (the login role).
pub fn postgres(
    cluster: &crate::pg::Cluster,
    dir: &Path,
    real: &RealRows,
    extra: &str,
) -> (PathBuf, String) {
    use apppass_core::store::{self, Connect, Location};
    let db = cluster.create_database();
    let passfile = dir.join("apppass.pgpass");
    cluster.passfile(&passfile, &[crate::pg::ADMIN, crate::pg::LOGIN]);
    let conf = dir.join("apppass-pg.conf");
    std::fs::write(
        &conf,
        format!("db_passfile = {}\n{extra}", passfile.display()),
    )
    .unwrap();
    let connect = Connect {
        passfile: Some(passfile),
        ..Connect::default()
    };
    let admin = Location::parse(&cluster.uri(crate::pg::ADMIN, &db)).unwrap();
    let store = store::init(&admin, &connect, false).unwrap();
    real_rows(&*store, real);
    drop(store);
    cluster.grant_login_role(&db);
    (conf, cluster.uri(crate::pg::LOGIN, &db))
}

/// The configuration lines for `params`: none for the defaults.
pub fn params_conf(params: HashParams) -> String {
    if params == HashParams::default() {
        return String::new();
    }
    format!(
        "argon2_memory = {}\nargon2_time = {}\nargon2_lanes = {}\n",
        params.m_kib, params.t, params.p
    )
}

/// `n` as a selector: six characters of the password alphabet.
fn base31(mut n: u64) -> String {
    let mut s = vec![ALPHABET[0]; SELECTOR_LEN];
    for c in s.iter_mut().rev() {
        *c = ALPHABET[(n % 31) as usize];
        n /= 31;
    }
    String::from_utf8(s).unwrap()
}

/// A yescrypt hash as Debian makes them (`mkpasswd -m yescrypt`).
pub fn yescrypt(password: &str) -> Option<String> {
    let out = Command::new("mkpasswd")
        .args(["-m", "yescrypt", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(password.as_bytes())
                .ok()?;
            c.wait_with_output().ok()
        })?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// pam_userdb's Berkeley DB (`db_load -T -t hash` from alternating user / hash lines).
pub fn userdb(dir: &Path, user: &str, hash: &str) -> Option<PathBuf> {
    let base = dir.join("userdb");
    let mut child = Command::new("db5.3_load")
        .args(["-T", "-t", "hash"])
        .arg(base.with_extension("db"))
        .stdin(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{user}\n{hash}\n").as_bytes())
        .ok()?;
    child.wait().ok()?.success().then_some(base)
}

/// pam_pwdfile's `user:hash` file.
pub fn pwdfile(dir: &Path, user: &str, hash: &str) -> PathBuf {
    let path = dir.join("pwdfile");
    std::fs::write(&path, format!("{user}:{hash}\n")).unwrap();
    path
}

/// Whether a PAM module is installed (peers are optional outside CI).
pub fn have_module(name: &str) -> bool {
    [
        "/usr/lib/x86_64-linux-gnu/security",
        "/lib/x86_64-linux-gnu/security",
        "/usr/lib/security",
    ]
    .iter()
    .any(|d| Path::new(d).join(name).exists())
}
