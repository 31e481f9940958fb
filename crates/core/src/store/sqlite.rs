//! The SQLite store: one file, WAL mode, schema from `sql/sqlite/` migrations.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use super::{
    Attempt, Credential, Event, KEPT_INACTIVE, Listing, Lookup, LookupQuery, NewRow, Outcome,
    Owner, Regenerated, Retention, Revoked, Store, StoreError,
};
use crate::policy::{self, Account, Dates, Throttle};
use crate::time::Timestamp;

/// `PRAGMA application_id` of an apppass database ("APPS").
const APPLICATION_ID: i64 = 0x4150_5053;

/// Numbered migrations; the number is the `PRAGMA user_version` a database has once the
/// file is applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../../../sql/sqlite/0001_app_password.sql"),
    ),
    (
        2,
        include_str!("../../../../sql/sqlite/0002_audit_throttle.sql"),
    ),
    (
        3,
        include_str!("../../../../sql/sqlite/0003_throttle_selector.sql"),
    ),
    (4, include_str!("../../../../sql/sqlite/0004_owner_uid.sql")),
    (5, include_str!("../../../../sql/sqlite/0005_networks.sql")),
    (
        6,
        include_str!("../../../../sql/sqlite/0006_revoke_on_password_change.sql"),
    ),
    (
        7,
        include_str!("../../../../sql/sqlite/0007_replaced_by.sql"),
    ),
];

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Reads (a lookup in WAL mode rarely waits) may wait this long for a lock.
const READ_BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// A login's record (usage, audit, throttle) gives up sooner: it is best effort, and the
/// user's next login waits for it (apppassd's `Recording`), so on a store another
/// process holds locked a longer wait would slow every login of that user.
const RECORD_BUSY_TIMEOUT: Duration = Duration::from_millis(500);
/// Opening (and creating or migrating) a store waits this long for a lock.
const OPEN_BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// CLI changes wait longer: an administrator would rather wait than retry.
const ADMIN_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub use super::Purpose;

/// An open apppass database.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    purpose: Purpose,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

impl SqliteStore {
    /// Creates the database (directory 0700, file 0600) if needed and brings its schema up
    /// to date. Safe to run again: it never drops or rewrites data.
    pub fn init(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::init_for(path, Purpose::Admin)
    }

    /// [`SqliteStore::init`], keeping the connection for `purpose`.
    pub fn init_for(path: &Path, purpose: Purpose) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError::Io(dir.to_path_buf(), e))?;
        }
        // Create the file ourselves so its mode is 0600 whatever the umask.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::Io(path.to_path_buf(), e)),
        }
        let conn = open_conn(path, purpose)?;
        // An empty database is ours to initialise; anything else must already be apppass's.
        let version = schema_version(&conn, path)?;
        let app_id: i64 = read_pragma(&conn, path, "application_id")?;
        let fresh = version == 0 && app_id == 0 && user_table_count(&conn, path)? == 0;
        if !fresh && app_id != APPLICATION_ID {
            return Err(StoreError::Foreign(path.to_path_buf()));
        }
        // Persistent: every later connection, the module's included, gets WAL.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        let store = SqliteStore { conn, purpose };
        store.migrate(path, version)?;
        settle(&store.conn, purpose)?;
        Ok(store)
    }

    /// Opens an existing, initialised database. With `require_root_only`, refuses a file
    /// that anyone but root could change (for a module running as root).
    pub fn open(
        path: &Path,
        purpose: Purpose,
        require_root_only: bool,
    ) -> Result<SqliteStore, StoreError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(path.to_path_buf()));
            }
            Err(e) => return Err(StoreError::Io(path.to_path_buf(), e)),
            Ok(_) => {}
        }
        if require_root_only {
            apppass_proto::trust::check_root_only(path).map_err(StoreError::Unsafe)?;
        }
        // Setting up the connection reads the file (PRAGMA synchronous needs the schema).
        let conn = match open_raw(path, purpose) {
            Ok(conn) => conn,
            // Logins and reports go on on a read-only mount or a full disk (see
            // open_immutable). The CLI's changes do not: they could not be made anyway,
            // and its admin needs to see why.
            Err(e)
                if purpose != Purpose::Admin
                    && wal_index_unavailable(&e)
                    && !wal_has_frames(path) =>
            {
                open_immutable(path, purpose)?
            }
            Err(e) => return Err(classify(path, e)),
        };
        // Two plain pragmas: one SELECT of the pragma_* functions compiles a virtual
        // table each, five times the instructions (68,000 against 12,500), every login.
        let version = schema_version(&conn, path)?;
        let app_id: i64 = read_pragma(&conn, path, "application_id")?;
        if version == 0 {
            return Err(StoreError::Uninitialised(path.to_path_buf()));
        }
        if app_id != APPLICATION_ID {
            return Err(StoreError::Foreign(path.to_path_buf()));
        }
        let store = SqliteStore { conn, purpose };
        store.migrate(path, version)?;
        settle(&store.conn, purpose)?;
        Ok(store)
    }

    /// Applies the migrations newer than `version`, each in its own transaction.
    fn migrate(&self, path: &Path, version: i64) -> Result<(), StoreError> {
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        for &(number, sql) in MIGRATIONS.iter().filter(|(n, _)| *n > version) {
            let tx = Transaction::immediate(&self.conn)?;
            // Someone else may have migrated between our read and our lock.
            if schema_version(tx.conn, path)? >= number {
                continue;
            }
            tx.conn.execute_batch(sql).map_err(db_err)?;
            tx.conn
                .pragma_update(None, "user_version", number)
                .map_err(db_err)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Folds the WAL into the database file and empties it: what the last connection's
    /// close does when it knows it is the last (apppassd's workers all close at once,
    /// and none may know). A copy of the file alone is then the whole store.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(db_err)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema_version(&self.conn, Path::new(""))
    }
}

/// Checks, before apppassd opens or creates its database at `db`, that nobody but `owner`
/// (apppassd's uid) could have changed it or could change it under apppassd:
///
/// - the directory that holds it is `owner`'s or root's and writable by nobody else (a
///   shared sticky directory such as /tmp itself is refused; a private one inside it is
///   fine), and every directory above it is root's or `owner`'s and writable by nobody
///   else unless sticky;
/// - the database and every file beside it that SQLite opens with it (`-wal`, `-shm`,
///   `-journal`) are `owner`'s, regular files, writable by nobody else and readable by
///   no other (they hold the hashes);
/// - every other file in the directory is `owner`'s or root's and writable by nobody
///   else.
///
/// Only `owner` (or root) could then have planted a `-wal` file that SQLite would replay
/// into the database.
pub fn check_directory(db: &Path, owner: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let untrusted = |why: String| StoreError::Untrusted(why);
    let io = |p: &Path, e: std::io::Error| StoreError::Io(p.to_path_buf(), e);
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => {
            return Err(untrusted(format!(
                "{} is not an absolute path",
                db.display()
            )));
        }
    };
    let whose = |uid: u32| {
        if uid == owner {
            "apppassd's".to_string()
        } else {
            format!("uid {uid}'s")
        }
    };
    // Directories above first: whoever can change one of them can swap what is below.
    let mut above = if dir.exists() {
        std::fs::canonicalize(dir).map_err(|e| io(dir, e))?
    } else {
        // init creates it (0700): what holds it must be safe already.
        dir.to_path_buf()
    };
    let mut first = true;
    loop {
        match std::fs::metadata(&above) {
            Ok(meta) => {
                let mode = meta.mode();
                let sticky = mode & 0o1000 != 0;
                if meta.uid() != 0 && meta.uid() != owner {
                    return Err(untrusted(format!(
                        "{} is {} (mode {:04o}), not apppassd's or root's: fix with chown",
                        above.display(),
                        whose(meta.uid()),
                        mode & 0o7777
                    )));
                }
                if mode & 0o022 != 0 && (first || !sticky) {
                    return Err(untrusted(format!(
                        "{} is writable by group or other (mode {:04o}){}: give the database a directory of its own (chmod go-w, or a new 0700 directory)",
                        above.display(),
                        mode & 0o7777,
                        if first && sticky {
                            ", a shared directory"
                        } else {
                            ""
                        }
                    )));
                }
                first = false;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && first => {}
            Err(e) => return Err(io(&above, e)),
        }
        if !above.pop() {
            break;
        }
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // Not there yet: init makes it.
    };
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for entry in entries {
        let entry = entry.map_err(|e| io(dir, e))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let ours = file == name
            || ["-wal", "-shm", "-journal"]
                .iter()
                .any(|side| file == format!("{name}{side}"));
        let mode = meta.mode() & 0o7777;
        if ours {
            if !meta.file_type().is_file() {
                return Err(untrusted(format!(
                    "{} is not a regular file",
                    path.display()
                )));
            }
            if meta.uid() != owner {
                return Err(untrusted(format!(
                    "{} is {}, not apppassd's: SQLite would read it with the database (fix with chown, or remove it if it is not yours)",
                    path.display(),
                    whose(meta.uid())
                )));
            }
            if mode & 0o027 != 0 {
                return Err(untrusted(format!(
                    "{} is open to group writes or to others (mode {mode:04o}): fix with chmod 600",
                    path.display()
                )));
            }
        } else if (meta.uid() != owner && meta.uid() != 0)
            || (mode & 0o022 != 0 && !meta.file_type().is_symlink())
        {
            return Err(untrusted(format!(
                "{} in the database's directory is {} (mode {mode:04o}): the directory must hold only apppassd's files",
                path.display(),
                whose(meta.uid())
            )));
        }
    }
    Ok(())
}

fn open_conn(path: &Path, purpose: Purpose) -> Result<Connection, StoreError> {
    open_raw(path, purpose).map_err(|e| classify(path, e))
}

fn open_raw(path: &Path, purpose: Purpose) -> rusqlite::Result<Connection> {
    // Never create here: a missing database is an error the admin must see, and
    // NO_MUTEX because a connection never leaves its thread.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_EXRESCODE;
    configure(Connection::open_with_flags(path, flags)?, purpose)
}

/// Whether SQLite failed to read because it could not set up the WAL index (the `-shm`
/// file beside the database) or the WAL: on a read-only mount, or a full disk, once the
/// last connection has removed them (the CLI's close does).
fn wal_index_unavailable(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi;
    e.sqlite_error().is_some_and(|e| {
        matches!(
            e.code,
            ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::DiskFull
        ) || [
            ffi::SQLITE_IOERR_SHMOPEN,
            ffi::SQLITE_IOERR_SHMSIZE,
            ffi::SQLITE_IOERR_SHMMAP,
        ]
        .contains(&e.extended_code)
    })
}

/// Whether the WAL may hold committed changes that are not in the database file yet (its
/// 32-byte header is all an empty one has). When in doubt, yes.
fn wal_has_frames(path: &Path) -> bool {
    // SQLite keeps the WAL beside the file a symlink points to, not beside the symlink.
    let Ok(real) = std::fs::canonicalize(path) else {
        return true;
    };
    let mut wal = real.into_os_string();
    wal.push("-wal");
    match std::fs::metadata(wal) {
        Ok(m) => m.len() > 32,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Opens the database read-only as an immutable file: no locks, no WAL, no WAL index.
///
/// Only for a database whose data can be read but whose WAL index cannot be created (a
/// read-only mount, a full disk; see [`wal_index_unavailable`]), and whose WAL holds
/// nothing ([`wal_has_frames`]): then the file alone is the whole, current database,
/// and refusing every login would turn a disk problem into an outage. Nobody can write it
/// meanwhile (nor could we; the login's record fails and is logged as usual); a writer
/// elsewhere would first have to commit to a WAL and then checkpoint it, and a read that
/// raced that would see a damaged or an earlier database, never a made-up row.
fn open_immutable(path: &Path, purpose: Purpose) -> Result<Connection, StoreError> {
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_EXRESCODE;
    Connection::open_with_flags(uri, flags)
        .and_then(|conn| configure(conn, purpose))
        .map_err(|e| classify(path, e))
}

/// Timeouts and durability for `purpose`.
fn configure(conn: Connection, purpose: Purpose) -> rusqlite::Result<Connection> {
    // Opening waits for a lock only briefly (the first statement reads the schema): a
    // store another process keeps locked is reported soon, and apppassd retries. Once
    // open, the connection waits as its purpose says (`settle`).
    conn.busy_timeout(OPEN_BUSY_TIMEOUT)?;
    match purpose {
        // Losing the last usage record on power loss is acceptable; a slow login is not.
        Purpose::Read => conn.execute_batch("PRAGMA synchronous = NORMAL")?,
        // A revoke reported done must survive a power cut.
        Purpose::Admin | Purpose::Daemon => conn.execute_batch("PRAGMA synchronous = FULL")?,
    }
    // PRAGMA trusted_schema = OFF without a statement to compile: every login pays for
    // each one.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    Ok(conn)
}

/// How long an open connection waits for a lock, by purpose.
fn settle(conn: &Connection, purpose: Purpose) -> Result<(), StoreError> {
    conn.busy_timeout(match purpose {
        Purpose::Read => READ_BUSY_TIMEOUT,
        Purpose::Admin | Purpose::Daemon => ADMIN_BUSY_TIMEOUT,
    })
    .map_err(db_err)
}

/// Turns SQLite's answer to "open this and read it" into the store's vocabulary.
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::Corrupt(path.to_path_buf(), e.to_string())
        }
        Some(ErrorCode::CannotOpen) if !path.exists() => StoreError::Missing(path.to_path_buf()),
        _ => StoreError::Db(format!("{}: {e}", path.display())),
    }
}

fn read_pragma<T: rusqlite::types::FromSql>(
    conn: &Connection,
    path: &Path,
    name: &str,
) -> Result<T, StoreError> {
    conn.pragma_query_value(None, name, |row| row.get(0))
        .map_err(|e| classify(path, e))
}

fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    read_pragma(conn, path, "user_version")
}

fn user_table_count(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(|e| classify(path, e))
}

fn listing(row: &rusqlite::Row<'_>) -> rusqlite::Result<Listing> {
    Ok(Listing {
        id: row.get(0)?,
        user: row.get(1)?,
        service: row.get(2)?,
        label: row.get(3)?,
        created: row.get(4)?,
        expires: row.get(5)?,
        revoked: row.get(6)?,
        last_used: row.get(7)?,
        last_service: row.get(8)?,
        last_rhost: row.get(9)?,
        use_count: row.get(10)?,
        owner: Account::from_column(row.get(11)?),
        networks: row.get(12)?,
        replaced_by: row.get(13)?,
    })
}

/// A credential from columns 0 to 8: id, user, service, label, hash, created, expires,
/// revoked, last_used; its owner_uid from column `owner` and its networks from the next.
fn credential(r: &rusqlite::Row<'_>, owner: usize) -> rusqlite::Result<Credential> {
    Ok(Credential {
        id: r.get(0)?,
        user: r.get(1)?,
        service: r.get(2)?,
        label: r.get(3)?,
        hash: r.get(4)?,
        dates: Dates {
            created: r.get(5)?,
            expires: r.get(6)?,
            revoked: r.get(7)?,
            last_used: r.get(8)?,
        },
        owner: Account::from_column(r.get(owner)?),
        networks: r.get(owner + 1)?,
    })
}

fn event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: row.get(0)?,
        time: row.get(1)?,
        user: row.get(2)?,
        service: row.get(3)?,
        password_id: row.get(4)?,
        rhost: row.get(5)?,
        outcome: row.get(6)?,
        reason: row.get(7)?,
    })
}

/// Prune the audit log once every this many events: bounded, and cheap on average. The
/// log may therefore hold up to this many events more than `audit_max_rows` between two
/// trims.
pub const PRUNE_EVERY: i64 = 256;

const LISTING_COLUMNS: &str = "id, user, service, label, created, expires, revoked, \
                               last_used, last_service, last_rhost, use_count, owner_uid, \
                               networks, replaced_by";

impl SqliteStore {
    /// The record itself: usage, audit event, throttle, in one transaction.
    fn record(
        &self,
        a: &Attempt<'_>,
        throttle: Option<&Throttle>,
        keep: Retention,
    ) -> Result<(), StoreError> {
        let tx = Transaction::immediate(&self.conn)?;
        let c = tx.conn;
        let rhost = a.rhost.unwrap_or("");
        if let (Outcome::Success, Some(id)) = (a.outcome, a.password_id) {
            c.execute(
                "UPDATE app_password
                    SET last_used = ?2, last_service = ?3, last_rhost = ?4,
                        use_count = use_count + 1
                  WHERE id = ?1",
                params![id, a.at, a.service, a.rhost],
            )
            .map_err(db_err)?;
        }
        let host = policy::throttle_host(rhost);
        let password = a.password_id.unwrap_or(0);
        if a.outcome == Outcome::Throttled {
            // One audit event per lockout, the first refusal; the rest are counted on
            // the throttle row (and each is in syslog).
            let refused: Option<i64> = c
                .query_row(
                    "UPDATE throttle SET refused = refused + 1
                      WHERE user = ?1 AND rhost = ?2 AND password_id = ?3
                     RETURNING refused",
                    params![a.user, host, password],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if refused.is_some_and(|n| n > 1) {
                return tx.commit();
            }
        }
        let reason = match a.outcome {
            Outcome::Failure { reason, .. } => Some(reason),
            Outcome::Throttled => Some("throttled"),
            Outcome::Success => None,
        };
        c.execute(
            "INSERT INTO event (time, user, service, password_id, rhost, outcome, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                a.at,
                a.user,
                a.service,
                a.password_id,
                a.rhost,
                a.outcome.as_str(),
                reason
            ],
        )
        .map_err(db_err)?;
        let event_id = c.last_insert_rowid();
        match (a.outcome, throttle) {
            // The password's own counter only: clearing the one for unknown selectors
            // would let whoever shares the owner's address guess again.
            (Outcome::Success, _) => {
                c.execute(
                    "DELETE FROM throttle WHERE user = ?1 AND rhost = ?2 AND password_id = ?3",
                    params![a.user, host, password],
                )
                .map_err(db_err)?;
            }
            (Outcome::Failure { guess: true, .. }, Some(t)) => {
                let window: Option<(i64, Timestamp)> = c
                    .query_row(
                        "SELECT failures, window_start FROM throttle
                          WHERE user = ?1 AND rhost = ?2 AND password_id = ?3",
                        params![a.user, host, password],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(db_err)?;
                // A new window once the old one is over: guesses must come close together.
                let (failures, start) = match window {
                    Some((n, start)) if a.at - start < t.interval => (n + 1, start),
                    _ => (1, a.at),
                };
                let locked_until = (failures >= i64::from(t.failures)).then_some(a.at + t.lockout);
                let expires = locked_until
                    .unwrap_or(0)
                    .max(start.saturating_add(t.interval));
                // Every write takes the next serial (max(id) is one step down the
                // primary key), so that the lowest are the least recently written.
                let serial: i64 = c
                    .query_row(
                        "SELECT coalesce((SELECT max(id) FROM throttle), 0) + 1",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                c.execute(
                    "INSERT OR REPLACE INTO throttle
                         (id, user, rhost, password_id, failures, window_start, locked_until,
                          refused, expires)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
                    params![
                        serial,
                        a.user,
                        host,
                        password,
                        failures,
                        start,
                        locked_until,
                        expires
                    ],
                )
                .map_err(db_err)?;
                // The bound, by the primary key: at most throttle_rows serials are above
                // this one's minus throttle_rows. Usually nothing, else the oldest row.
                c.execute(
                    "DELETE FROM throttle WHERE id <= ?1",
                    [serial.saturating_sub(keep.throttle_rows)],
                )
                .map_err(db_err)?;
            }
            _ => {}
        }
        if event_id % PRUNE_EVERY == 0 {
            c.execute(
                "DELETE FROM event WHERE time < ?1 OR id <= ?2",
                params![a.at.saturating_sub(keep.max_age), event_id - keep.max_rows],
            )
            .map_err(db_err)?;
        }
        tx.commit()
    }
}

impl Store for SqliteStore {
    /// One statement, so one read transaction and one look at the WAL index.
    fn lookup(&self, q: &LookupQuery<'_>) -> Result<Lookup, StoreError> {
        self.conn
            .query_row(
                "SELECT p.id, p.user, p.service, p.label, p.hash,
                        p.created, p.expires, p.revoked, p.last_used,
                        EXISTS (SELECT 1 FROM app_password WHERE user = ?1),
                        (SELECT locked_until FROM throttle
                          WHERE user = ?1 AND rhost = ?3 AND password_id = coalesce(p.id, 0)),
                        p.owner_uid, p.networks
                   FROM (SELECT 1)
                   LEFT JOIN app_password AS p ON p.selector = ?2 AND p.user = ?1",
                params![q.user, q.selector, policy::throttle_host(q.rhost)],
                |r| {
                    // The LEFT JOIN's columns are NULL when no row matched.
                    let credential = match r.get::<_, Option<i64>>(0)? {
                        None => None,
                        Some(_) => Some(credential(r, 11)?),
                    };
                    let locked_until: Option<Timestamp> = r.get(10)?;
                    Ok(Lookup {
                        credential,
                        has_passwords: r.get(9)?,
                        throttled: locked_until.is_some_and(|t| t > q.now),
                    })
                },
            )
            .map_err(db_err)
    }

    fn find_by_selector(&self, selector: &str) -> Result<Option<Credential>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, user, service, label, hash, created, expires, revoked, last_used,
                        owner_uid, networks
                   FROM app_password WHERE selector = ?1",
                [selector],
                |r| credential(r, 9),
            )
            .optional()
            .map_err(db_err)
    }

    fn user_has_passwords(&self, user: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM app_password WHERE user = ?1)",
                [user],
                |r| r.get(0),
            )
            .map_err(db_err)
    }

    fn throttled_until(
        &self,
        user: &str,
        rhost: &str,
        password: Option<i64>,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let until: Option<Option<Timestamp>> = self
            .conn
            .query_row(
                "SELECT locked_until FROM throttle
                  WHERE user = ?1 AND rhost = ?2 AND password_id = ?3",
                params![user, policy::throttle_host(rhost), password.unwrap_or(0)],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        Ok(until.flatten().filter(|&t| t > now))
    }

    fn record_attempt(
        &self,
        a: &Attempt<'_>,
        throttle: Option<&Throttle>,
        keep: Retention,
    ) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(RECORD_BUSY_TIMEOUT)
            .map_err(db_err)?;
        if self.purpose == Purpose::Daemon {
            // A record is best effort: not worth waiting for the disk (see configure).
            self.conn
                .execute_batch("PRAGMA synchronous = NORMAL")
                .map_err(db_err)?;
        }
        let result = self.record(a, throttle, keep);
        if self.purpose == Purpose::Daemon {
            // The connection serves changes next, as durable and as patient as ever.
            self.conn
                .execute_batch("PRAGMA synchronous = FULL")
                .and_then(|()| self.conn.busy_timeout(ADMIN_BUSY_TIMEOUT))
                .map_err(db_err)?;
        }
        result
    }

    fn create(&self, row: &NewRow<'_>) -> Result<i64, StoreError> {
        let result = self.conn.execute(
            "INSERT INTO app_password
                    (user, service, label, selector, hash, created, expires, owner_uid,
                     networks)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                row.user,
                row.service,
                row.label,
                row.selector,
                row.hash,
                row.created,
                row.expires,
                row.owner.to_column(),
                row.networks
            ],
        );
        let id = match result {
            Ok(_) => self.conn.last_insert_rowid(),
            Err(e)
                if e.sqlite_extended_error_code()
                    == Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE) =>
            {
                return Err(StoreError::SelectorTaken);
            }
            Err(e) => return Err(db_err(e)),
        };
        self.conn
            .execute(
                "DELETE FROM app_password WHERE id IN (
                     SELECT id FROM app_password
                      WHERE user = ?1 AND (revoked IS NOT NULL OR expires <= ?2)
                      ORDER BY id DESC LIMIT -1 OFFSET ?3)",
                params![row.user, row.created, KEPT_INACTIVE],
            )
            .map_err(db_err)?;
        Ok(id)
    }

    fn create_limited(&self, row: &NewRow<'_>, max: usize) -> Result<i64, StoreError> {
        let tx = Transaction::immediate(&self.conn)?;
        let active = self.count_active(row.user, row.created)?;
        if active >= max {
            return Err(StoreError::Limit(active));
        }
        let id = self.create(row)?;
        tx.commit()?;
        Ok(id)
    }

    fn regenerate(
        &self,
        old: i64,
        owner: Owner<'_>,
        row: &NewRow<'_>,
        max: Option<usize>,
    ) -> Result<Regenerated, StoreError> {
        let tx = Transaction::immediate(&self.conn)?;
        let found: Option<(String, String, Option<i64>, bool)> = tx
            .conn
            .query_row(
                "SELECT user, service, replaced_by,
                        revoked IS NULL AND (expires IS NULL OR expires > ?2)
                   FROM app_password WHERE id = ?1",
                params![old, row.created],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(db_err)?;
        let Some((user, service, replaced_by, active)) = found else {
            return Ok(Regenerated::NotFound);
        };
        if user != row.user || matches!(owner, Owner::User(u) if u != user) {
            return Ok(Regenerated::NotFound);
        }
        if let Some(new) = replaced_by {
            return Ok(Regenerated::Already(new));
        }
        if let Some(max) = max {
            // The old one stops counting as the new one starts.
            let others = self
                .count_active(&user, row.created)?
                .saturating_sub(usize::from(active));
            if others >= max {
                return Err(StoreError::Limit(others));
            }
        }
        // Created first: the trim of old inactive rows that creating does must not take
        // the row being replaced.
        let id = self.create(row)?;
        tx.conn
            .execute(
                "UPDATE app_password SET revoked = coalesce(revoked, ?2), replaced_by = ?3
                  WHERE id = ?1",
                params![old, row.created, id],
            )
            .map_err(db_err)?;
        tx.conn
            .execute(
                "INSERT INTO event (time, user, service, password_id, rhost, outcome, reason)
                 VALUES (?1, ?2, ?3, ?4, NULL, 'revoked', ?5)",
                params![row.created, user, service, old, super::REGENERATED],
            )
            .map_err(db_err)?;
        tx.commit()?;
        Ok(Regenerated::New(id))
    }

    fn list(&self, owner: Owner<'_>) -> Result<Vec<Listing>, StoreError> {
        let (sql, user) = match owner {
            Owner::Anyone => (
                format!("SELECT {LISTING_COLUMNS} FROM app_password ORDER BY user, id"),
                None,
            ),
            Owner::User(u) => (
                format!("SELECT {LISTING_COLUMNS} FROM app_password WHERE user = ?1 ORDER BY id"),
                Some(u),
            ),
        };
        let mut stmt = self.conn.prepare(&sql).map_err(db_err)?;
        let rows = match user {
            Some(u) => stmt.query_map([u], listing),
            None => stmt.query_map([], listing),
        }
        .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
    }

    fn find(&self, id: i64, owner: Owner<'_>) -> Result<Option<Listing>, StoreError> {
        let user = match owner {
            Owner::Anyone => None,
            Owner::User(u) => Some(u),
        };
        self.conn
            .query_row(
                &format!(
                    "SELECT {LISTING_COLUMNS} FROM app_password
                      WHERE id = ?1 AND (?2 IS NULL OR user = ?2)"
                ),
                params![id, user],
                listing,
            )
            .optional()
            .map_err(db_err)
    }

    fn set_networks(&self, id: i64, owner: Owner<'_>, networks: &str) -> Result<bool, StoreError> {
        let user = match owner {
            Owner::Anyone => None,
            Owner::User(u) => Some(u),
        };
        let n = self
            .conn
            .execute(
                "UPDATE app_password SET networks = ?3 WHERE id = ?1 AND (?2 IS NULL OR user = ?2)",
                params![id, user, networks],
            )
            .map_err(db_err)?;
        Ok(n > 0)
    }

    fn count_active(&self, user: &str, now: Timestamp) -> Result<usize, StoreError> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM app_password
                  WHERE user = ?1 AND revoked IS NULL AND (expires IS NULL OR expires > ?2)",
                params![user, now],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn events(&self, owner: Owner<'_>, limit: usize) -> Result<Vec<Event>, StoreError> {
        let columns = "id, time, user, service, password_id, rhost, outcome, reason";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match owner {
            Owner::Anyone => {
                let mut stmt = self
                    .conn
                    .prepare(&format!(
                        "SELECT {columns} FROM event ORDER BY id DESC LIMIT ?1"
                    ))
                    .map_err(db_err)?;
                stmt.query_map([limit], event)
                    .map_err(db_err)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }
            Owner::User(u) => {
                let mut stmt = self
                    .conn
                    .prepare(&format!(
                        "SELECT {columns} FROM event WHERE user = ?1 ORDER BY id DESC LIMIT ?2"
                    ))
                    .map_err(db_err)?;
                stmt.query_map(params![u, limit], event)
                    .map_err(db_err)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }
        };
        rows.map_err(db_err)
    }

    fn unlock(&self, user: &str, rhost: Option<&str>) -> Result<usize, StoreError> {
        let host = rhost.map(policy::throttle_host);
        let mut stmt = self
            .conn
            .prepare(
                "DELETE FROM throttle WHERE user = ?1 AND (?2 IS NULL OR rhost = ?2)
                 RETURNING rhost",
            )
            .map_err(db_err)?;
        let hosts = stmt
            .query_map(params![user, host], |r| r.get::<_, String>(0))
            .map_err(db_err)?
            .collect::<rusqlite::Result<std::collections::BTreeSet<_>>>()
            .map_err(db_err)?;
        Ok(hosts.len())
    }

    fn revoke(
        &self,
        ids: &[i64],
        owner: Owner<'_>,
        at: Timestamp,
    ) -> Result<Vec<(i64, Revoked)>, StoreError> {
        let tx = Transaction::immediate(&self.conn)?;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let found: Option<(String, Option<Timestamp>)> = tx
                .conn
                .query_row(
                    "SELECT user, revoked FROM app_password WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db_err)?;
            let outcome = match found {
                Some((user, _)) if matches!(owner, Owner::User(u) if u != user) => {
                    Revoked::NotFound
                }
                None => Revoked::NotFound,
                Some((_, Some(_))) => Revoked::Already,
                Some((_, None)) => {
                    tx.conn
                        .execute(
                            "UPDATE app_password SET revoked = ?2 WHERE id = ?1",
                            params![id, at],
                        )
                        .map_err(db_err)?;
                    Revoked::Now
                }
            };
            out.push((id, outcome));
        }
        tx.commit()?;
        Ok(out)
    }

    fn revoke_all(
        &self,
        user: &str,
        service: Option<&str>,
        at: Timestamp,
    ) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE app_password SET revoked = ?2
                  WHERE user = ?1 AND revoked IS NULL AND (?3 IS NULL OR service = ?3)",
                params![user, at, service],
            )
            .map_err(db_err)
    }

    fn revoke_for_password_change(&self, user: &str, at: Timestamp) -> Result<usize, StoreError> {
        let tx = Transaction::immediate(&self.conn)?;
        // One statement's worth of rows: the events name exactly what was revoked.
        let revoked = tx
            .conn
            .prepare(
                "UPDATE app_password SET revoked = ?2
                  WHERE user = ?1 AND revoked IS NULL RETURNING id, service",
            )
            .map_err(db_err)?
            .query_map(params![user, at], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
        let mut stmt = tx
            .conn
            .prepare(
                "INSERT INTO event (time, user, service, password_id, rhost, outcome, reason)
                 VALUES (?1, ?2, ?3, ?4, NULL, 'revoked', ?5)",
            )
            .map_err(db_err)?;
        for (id, service) in &revoked {
            stmt.execute(params![at, user, service, id, super::PASSWORD_CHANGE])
                .map_err(db_err)?;
        }
        drop(stmt);
        tx.commit()?;
        Ok(revoked.len())
    }

    fn unadopted(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            // The literal, not a parameter: what lets SQLite use the partial index.
            .prepare("SELECT DISTINCT user FROM app_password WHERE owner_uid = -1 LIMIT ?1")
            .map_err(db_err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_map([limit], |r| r.get(0))
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)
    }

    fn adopt(&self, owners: &[(String, Account)]) -> Result<usize, StoreError> {
        let tx = Transaction::immediate(&self.conn)?;
        let mut stmt = tx
            .conn
            .prepare("UPDATE app_password SET owner_uid = ?2 WHERE user = ?1 AND owner_uid = -1")
            .map_err(db_err)?;
        let mut n = 0;
        for (user, owner) in owners {
            n += stmt
                .execute(params![user, owner.to_column()])
                .map_err(db_err)?;
        }
        drop(stmt);
        tx.commit()?;
        Ok(n)
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        SqliteStore::schema_version(self)
    }

    /// `VACUUM INTO`: a compact, consistent copy, made while logins go on.
    fn backup_to(&self, path: &Path) -> Result<(), StoreError> {
        let text = path
            .to_str()
            .ok_or_else(|| StoreError::Db(format!("{}: not UTF-8", path.display())))?;
        self.conn
            .execute("VACUUM INTO ?1", [text])
            .map(|_| ())
            .map_err(db_err)
    }

    fn prune(&self, keep: Retention, now: Timestamp) -> Result<(), StoreError> {
        let tx = Transaction::immediate(&self.conn)?;
        tx.conn
            .execute(
                "DELETE FROM event WHERE time < ?1 OR id <= (SELECT max(id) FROM event) - ?2",
                params![now.saturating_sub(keep.max_age), keep.max_rows],
            )
            .map_err(db_err)?;
        // Both by an index: expiry, then the serial.
        tx.conn
            .execute("DELETE FROM throttle WHERE expires <= ?1", [now])
            .map_err(db_err)?;
        tx.conn
            .execute(
                "DELETE FROM throttle WHERE id <= (SELECT max(id) FROM throttle) - ?1",
                [keep.throttle_rows],
            )
            .map_err(db_err)?;
        tx.commit()
    }
}

/// `BEGIN IMMEDIATE`: take the write lock before reading, so a read-then-write cannot be
/// overtaken by another writer. Rolled back unless committed.
struct Transaction<'c> {
    conn: &'c Connection,
    done: bool,
}

impl<'c> Transaction<'c> {
    fn immediate(conn: &'c Connection) -> Result<Self, StoreError> {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
        Ok(Transaction { conn, done: false })
    }

    fn commit(mut self) -> Result<(), StoreError> {
        self.done = true;
        self.conn.execute_batch("COMMIT").map_err(db_err)
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    //! What only SQLite does: files and modes, what is not an apppass database, the
    //! audit log's pruning on the login path. The behaviour both stores share is tested
    //! once for both, in tests/stores.rs.
    use super::*;
    use std::path::PathBuf;

    fn temp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/apppass.db");
        (dir, path)
    }

    fn row<'a>(user: &'a str, service: &'a str, selector: &'a str) -> NewRow<'a> {
        NewRow {
            user,
            service,
            label: "phone",
            selector,
            hash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            created: 100,
            expires: None,
            owner: Account::NoAccount,
            networks: "",
        }
    }

    #[test]
    fn init_creates_private_files_and_is_idempotent() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, path) = temp();
        let s = SqliteStore::init(&path).unwrap();
        let id = s.create(&row("alice", "imap", "aaaaaa")).unwrap();
        drop(s);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let s = SqliteStore::init(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.list(Owner::Anyone).unwrap()[0].id, id);
        let mode: String = s
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn connections_distrust_the_schema_and_sync_for_their_purpose() {
        let (_d, path) = temp();
        drop(SqliteStore::init(&path).unwrap());
        for (purpose, synchronous) in [(Purpose::Read, 1), (Purpose::Admin, 2)] {
            let s = SqliteStore::open(&path, purpose, false).unwrap();
            let get = |name| read_pragma::<i64>(&s.conn, &path, name).unwrap();
            assert_eq!(get("trusted_schema"), 0, "{purpose:?}");
            assert_eq!(get("synchronous"), synchronous, "{purpose:?}");
        }
    }

    /// The built-in SQLite is built as .cargo/config.toml says: without extension
    /// loading and the parts apppass does not use.
    #[cfg(feature = "bundled-sqlite")]
    #[test]
    fn built_in_sqlite_lacks_what_apppass_does_not_use() {
        let conn = Connection::open_in_memory().unwrap();
        let mut st = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for absent in [
            "ENABLE_FTS3",
            "ENABLE_FTS5",
            "ENABLE_RTREE",
            "ENABLE_LOAD_EXTENSION",
        ] {
            assert!(
                !options.iter().any(|o| o.starts_with(absent)),
                "{absent}: {options:?}"
            );
        }
        for present in ["OMIT_LOAD_EXTENSION", "OMIT_JSON", "DQS=0", "THREADSAFE=1"] {
            assert!(
                options.iter().any(|o| o == present),
                "{present}: {options:?}"
            );
        }
    }

    #[test]
    fn open_refuses_what_is_not_ours() {
        let (d, path) = temp();
        assert!(matches!(
            SqliteStore::open(&path, Purpose::Read, false),
            Err(StoreError::Missing(_))
        ));
        let junk = d.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
        let e = SqliteStore::open(&junk, Purpose::Read, false).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(..)), "{e:?}");
        let empty = d.path().join("empty.db");
        Connection::open(&empty)
            .unwrap()
            .execute_batch("PRAGMA user_version = 0")
            .unwrap();
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            SqliteStore::open(&empty, Purpose::Read, false),
            Err(StoreError::Uninitialised(_))
        ));
        let other = d.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); PRAGMA user_version = 1;")
            .unwrap();
        assert!(matches!(
            SqliteStore::open(&other, Purpose::Read, false),
            Err(StoreError::Foreign(_))
        ));
        assert!(matches!(
            SqliteStore::init(&other),
            Err(StoreError::Foreign(_))
        ));
    }

    #[test]
    fn newer_schema_is_refused() {
        let (_d, path) = temp();
        SqliteStore::init(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = SqliteStore::open(&path, Purpose::Read, false).unwrap_err();
        assert!(
            matches!(e, StoreError::SchemaTooNew { found: 99, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("upgrade apppass"));
    }

    /// A store of schema 2 (before owners) with rows, opened by this build: the rows are
    /// marked not adopted, found through the partial index, and adopted once.
    #[test]
    fn rows_from_before_owners_are_adopted_once() {
        let (_d, path) = temp();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let old = Connection::open(&path).unwrap();
        for (_, sql) in &MIGRATIONS[..2] {
            old.execute_batch(sql).unwrap();
        }
        old.pragma_update(None, "user_version", 2).unwrap();
        for (user, selector) in [("alice", "aaaaaa"), ("alice", "bbbbbb"), ("gone", "cccccc")] {
            old.execute(
                "INSERT INTO app_password (user, service, selector, hash, created)
                 VALUES (?1, 'imap', ?2, 'x', 1)",
                params![user, selector],
            )
            .unwrap();
        }
        drop(old);
        let s = SqliteStore::open(&path, Purpose::Admin, false).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        let owner = |sel| s.find_by_selector(sel).unwrap().unwrap().owner;
        assert_eq!(owner("aaaaaa"), Account::Unadopted);
        let plan: String = s
            .conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT DISTINCT user FROM app_password WHERE owner_uid = -1",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("app_password_unadopted"), "{plan}");
        let mut users = s.unadopted(10).unwrap();
        users.sort();
        assert_eq!(users, ["alice", "gone"]);
        assert_eq!(s.unadopted(1).unwrap().len(), 1);
        let owners = [
            ("alice".to_string(), Account::Uid(1001)),
            ("gone".to_string(), Account::NoAccount),
        ];
        assert_eq!(s.adopt(&owners).unwrap(), 3);
        assert!(s.unadopted(10).unwrap().is_empty());
        // Once: an adopted row is not adopted again.
        assert_eq!(s.adopt(&[("alice".into(), Account::Uid(2002))]).unwrap(), 0);
        assert_eq!(owner("bbbbbb"), Account::Uid(1001));
        assert_eq!(owner("cccccc"), Account::NoAccount);
        // New rows carry the owner they are given, in lookups and listings alike.
        s.create(&NewRow {
            owner: Account::Uid(1001),
            ..row("alice", "imap", "dddddd")
        })
        .unwrap();
        let looked = s
            .lookup(&LookupQuery {
                user: "alice",
                selector: Some("dddddd"),
                rhost: "",
                now: 0,
            })
            .unwrap();
        assert_eq!(looked.credential.unwrap().owner, Account::Uid(1001));
        let listed = s.list(Owner::User("gone")).unwrap();
        assert_eq!(listed[0].owner, Account::NoAccount);
    }

    fn failure(
        at: Timestamp,
        user: &'static str,
        rhost: Option<&'static str>,
        guess: bool,
    ) -> Attempt<'static> {
        Attempt {
            at,
            user,
            service: "imap",
            rhost,
            password_id: None,
            outcome: Outcome::Failure {
                reason: "wrong_password",
                guess,
            },
        }
    }

    #[test]
    fn audit_log_is_bounded_and_per_user() {
        let (_d, path) = temp();
        let s = SqliteStore::init(&path).unwrap();
        let keep = Retention {
            max_age: 1_000_000,
            max_rows: 100,
            throttle_rows: 1000,
        };
        for at in 0..(2 * PRUNE_EVERY) {
            let user = if at % 2 == 0 { "alice" } else { "bob" };
            s.record_attempt(&failure(at, user, Some("192.0.2.1"), false), None, keep)
                .unwrap();
        }
        let all = s.events(Owner::Anyone, 10_000).unwrap();
        assert!(all.len() <= 100 + PRUNE_EVERY as usize, "{}", all.len());
        assert_eq!(all[0].time, 2 * PRUNE_EVERY - 1, "newest first");
        let alice = s.events(Owner::User("alice"), 5).unwrap();
        assert_eq!(alice.len(), 5);
        assert!(
            alice
                .iter()
                .all(|e| e.user == "alice" && e.outcome == "failure")
        );
        assert_eq!(alice[0].reason.as_deref(), Some("wrong_password"));
        // By age too.
        let keep = Retention {
            max_age: 10,
            max_rows: 1_000_000,
            throttle_rows: 1000,
        };
        for at in 0..PRUNE_EVERY {
            s.record_attempt(&failure(10_000 + at, "carol", None, false), None, keep)
                .unwrap();
        }
        // The last of these events is a pruning one (ids run on from 2 x PRUNE_EVERY):
        // only the last ten seconds' survive it.
        let left = s.events(Owner::Anyone, 10_000).unwrap();
        let newest = 10_000 + PRUNE_EVERY - 1;
        assert!(left.iter().all(|e| e.time >= newest - 10), "{left:?}");
        assert_eq!(left.len(), 11);
    }

    fn guess(at: Timestamp, rhost: &'static str, password_id: Option<i64>) -> Attempt<'static> {
        Attempt {
            password_id,
            ..failure(at, "alice", Some(rhost), true)
        }
    }

    fn throttle_rows(s: &SqliteStore) -> i64 {
        s.conn
            .query_row("SELECT count(*) FROM throttle", [], |r| r.get(0))
            .unwrap()
    }

    /// The table's bound holds at every write, by the primary key: a flood of hosts
    /// keeps the newest rows. Expired rows go by the index on their expiry.
    #[test]
    fn throttle_table_is_bounded_by_index() {
        let (_d, path) = temp();
        let s = SqliteStore::init(&path).unwrap();
        let t = Throttle {
            failures: 3,
            interval: 60,
            lockout: 600,
        };
        let keep = Retention {
            max_age: 1_000_000,
            max_rows: 1_000_000,
            throttle_rows: 10,
        };
        for i in 0..100 {
            let host = format!("2001:db8:{i:x}::1");
            let host: &'static str = Box::leak(host.into_boxed_str());
            s.record_attempt(&guess(i, host, None), Some(&t), keep)
                .unwrap();
            assert!(throttle_rows(&s) <= 10, "{i}");
        }
        // The newest are kept.
        let hosts: Vec<String> = s
            .conn
            .prepare("SELECT rhost FROM throttle ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(hosts.first().map(String::as_str), Some("2001:db8:5a::/64"));
        assert_eq!(hosts.last().map(String::as_str), Some("2001:db8:63::/64"));
        // A host guessing again is written again, and so kept.
        s.record_attempt(&guess(100, "2001:db8:5a::2", None), Some(&t), keep)
            .unwrap();
        s.record_attempt(&guess(101, "192.0.2.1", None), Some(&t), keep)
            .unwrap();
        assert_eq!(
            s.throttled_until("alice", "2001:db8:5a::3", None, 100)
                .unwrap(),
            None
        );
        let kept: i64 = s
            .conn
            .query_row(
                "SELECT failures FROM throttle WHERE rhost = '2001:db8:5a::/64'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, 2);
        // Windows over (60 s after their start) are deleted by maintenance; the bound
        // is applied there too.
        s.prune(keep, 157).unwrap();
        assert_eq!(throttle_rows(&s), 3);
        s.prune(
            Retention {
                throttle_rows: 1,
                ..keep
            },
            159,
        )
        .unwrap();
        assert_eq!(throttle_rows(&s), 1);
        // What maintenance and the bound run is an index search, never a scan.
        for sql in [
            "DELETE FROM throttle WHERE expires <= 1",
            "DELETE FROM throttle WHERE id <= 1",
            "DELETE FROM throttle WHERE id <= (SELECT max(id) FROM throttle) - 1",
            "SELECT coalesce((SELECT max(id) FROM throttle), 0) + 1",
            "UPDATE throttle SET refused = refused + 1
              WHERE user = 'a' AND rhost = 'h' AND password_id = 0",
        ] {
            let plan: Vec<String> = s
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(
                plan.iter()
                    .all(|step| !step.starts_with("SCAN") || step == "SCAN CONSTANT ROW"),
                "{sql}: {plan:?}"
            );
        }
    }

    /// A store of schema version 2 (throttling per user and host) is brought up to date
    /// when opened: its throttle rows are dropped, everything else kept.
    #[test]
    fn upgrade_from_schema_2() {
        let (_d, path) = temp();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let conn = Connection::open(&path).unwrap();
        for (number, sql) in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", number).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO app_password (user, service, selector, hash, created)
                 VALUES ('alice', 'imap', 'abcdef', 'x', 1);
             INSERT INTO event (time, user, service, outcome) VALUES (1, 'alice', 'imap', 'success');
             INSERT INTO throttle VALUES ('alice', '192.0.2.1', 10, 1, 99999);",
        )
        .unwrap();
        drop(conn);
        let s = SqliteStore::open(&path, Purpose::Admin, false).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(throttle_rows(&s), 0);
        assert_eq!(s.list(Owner::Anyone).unwrap().len(), 1);
        assert_eq!(s.events(Owner::Anyone, 10).unwrap().len(), 1);
        let t = Throttle {
            failures: 1,
            interval: 60,
            lockout: 600,
        };
        let keep = Retention {
            max_age: 1_000_000,
            max_rows: 1_000_000,
            throttle_rows: 10,
        };
        s.record_attempt(&guess(5, "192.0.2.1", Some(1)), Some(&t), keep)
            .unwrap();
        assert_eq!(
            s.throttled_until("alice", "192.0.2.1", Some(1), 6).unwrap(),
            Some(605)
        );
    }
}
