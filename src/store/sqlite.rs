//! The SQLite store: one file, WAL mode, schema from `sql/sqlite/` migrations.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use super::{Credential, Listing, NewRow, Owner, Revoked, Store, StoreError};
use crate::time::Timestamp;

/// `PRAGMA application_id` of an apppass database ("APPS").
const APPLICATION_ID: i64 = 0x4150_5053;

/// Numbered migrations; the number is the `PRAGMA user_version` a database has once the
/// file is applied.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../sql/sqlite/0001_app_password.sql"))];

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Reads (a lookup in WAL mode rarely waits) may wait this long for a lock.
const READ_BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// A login's usage record gives up sooner: it is best effort.
const RECORD_BUSY_TIMEOUT: Duration = Duration::from_millis(500);
/// CLI changes wait longer: an administrator would rather wait than retry.
const ADMIN_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connection will be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A login: one lookup and a best-effort usage update, then closed.
    Login,
    /// The CLI: changes that must survive a crash once reported done.
    Admin,
}

/// An open apppass database.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

impl SqliteStore {
    /// Creates the database (directory 0700, file 0600) if needed and brings its schema up
    /// to date. Safe to run again: it never drops or rewrites data.
    pub fn init(path: &Path) -> Result<SqliteStore, StoreError> {
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
        let conn = open_conn(path, Purpose::Admin)?;
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
        let store = SqliteStore { conn };
        store.migrate(path, version)?;
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
            crate::trust::check_root_only(path).map_err(StoreError::Unsafe)?;
        }
        let conn = open_conn(path, purpose)?;
        let version = schema_version(&conn, path)?;
        if version == 0 {
            return Err(StoreError::Uninitialised(path.to_path_buf()));
        }
        if read_pragma::<i64>(&conn, path, "application_id")? != APPLICATION_ID {
            return Err(StoreError::Foreign(path.to_path_buf()));
        }
        let store = SqliteStore { conn };
        store.migrate(path, version)?;
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

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema_version(&self.conn, Path::new(""))
    }
}

fn open_conn(path: &Path, purpose: Purpose) -> Result<Connection, StoreError> {
    // Never create here: a missing database is an error the admin must see, and
    // NO_MUTEX because a connection never leaves its thread.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_EXRESCODE;
    let err = |e| classify(path, e);
    let conn = Connection::open_with_flags(path, flags).map_err(err)?;
    match purpose {
        Purpose::Login => {
            conn.busy_timeout(READ_BUSY_TIMEOUT).map_err(err)?;
            // A login closes its connection at once; checkpointing on every close would
            // cost more than the lookup.
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
                .map_err(err)?;
            // Losing the last usage record on power loss is acceptable; a slow login is not.
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(err)?;
        }
        Purpose::Admin => {
            conn.busy_timeout(ADMIN_BUSY_TIMEOUT).map_err(err)?;
            // A revoke reported done must survive a power cut.
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(err)?;
        }
    }
    conn.pragma_update(None, "trusted_schema", "OFF")
        .map_err(err)?;
    Ok(conn)
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
    })
}

const LISTING_COLUMNS: &str = "id, user, service, label, created, expires, revoked, \
                               last_used, last_service, last_rhost, use_count";

impl Store for SqliteStore {
    fn find_by_selector(&self, selector: &str) -> Result<Option<Credential>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, user, service, label, hash, expires, revoked
                   FROM app_password WHERE selector = ?1",
                [selector],
                |r| {
                    Ok(Credential {
                        id: r.get(0)?,
                        user: r.get(1)?,
                        service: r.get(2)?,
                        label: r.get(3)?,
                        hash: r.get(4)?,
                        expires: r.get(5)?,
                        revoked: r.get(6)?,
                    })
                },
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

    fn record_use(
        &self,
        id: i64,
        at: Timestamp,
        service: &str,
        rhost: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(RECORD_BUSY_TIMEOUT)
            .map_err(db_err)?;
        self.conn
            .execute(
                "UPDATE app_password
                    SET last_used = ?2, last_service = ?3, last_rhost = ?4,
                        use_count = use_count + 1
                  WHERE id = ?1",
                params![id, at, service, rhost],
            )
            .map(|_| ())
            .map_err(db_err)
    }

    fn create(&self, row: &NewRow<'_>) -> Result<i64, StoreError> {
        let result = self.conn.execute(
            "INSERT INTO app_password (user, service, label, selector, hash, created, expires)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                row.user,
                row.service,
                row.label,
                row.selector,
                row.hash,
                row.created,
                row.expires
            ],
        );
        match result {
            Ok(_) => Ok(self.conn.last_insert_rowid()),
            Err(e)
                if e.sqlite_extended_error_code()
                    == Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE) =>
            {
                Err(StoreError::SelectorTaken)
            }
            Err(e) => Err(db_err(e)),
        }
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
    fn open_refuses_what_is_not_ours() {
        let (d, path) = temp();
        assert!(matches!(
            SqliteStore::open(&path, Purpose::Login, false),
            Err(StoreError::Missing(_))
        ));
        let junk = d.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
        let e = SqliteStore::open(&junk, Purpose::Login, false).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(..)), "{e:?}");
        let empty = d.path().join("empty.db");
        Connection::open(&empty)
            .unwrap()
            .execute_batch("PRAGMA user_version = 0")
            .unwrap();
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            SqliteStore::open(&empty, Purpose::Login, false),
            Err(StoreError::Uninitialised(_))
        ));
        let other = d.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); PRAGMA user_version = 1;")
            .unwrap();
        assert!(matches!(
            SqliteStore::open(&other, Purpose::Login, false),
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
        let e = SqliteStore::open(&path, Purpose::Login, false).unwrap_err();
        assert!(
            matches!(e, StoreError::SchemaTooNew { found: 99, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("upgrade apppass"));
    }

    #[test]
    fn lookups_and_usage() {
        let (_d, path) = temp();
        let s = SqliteStore::init(&path).unwrap();
        let id = s.create(&row("alice", "imap", "abcdef")).unwrap();
        assert!(matches!(
            s.create(&row("bob", "imap", "abcdef")),
            Err(StoreError::SelectorTaken)
        ));
        let s = SqliteStore::open(&path, Purpose::Login, false).unwrap();
        let c = s.find_by_selector("abcdef").unwrap().unwrap();
        assert_eq!(
            (c.id, c.user.as_str(), c.service.as_str()),
            (id, "alice", "imap")
        );
        assert!(s.find_by_selector("zzzzzz").unwrap().is_none());
        assert!(s.user_has_passwords("alice").unwrap());
        assert!(!s.user_has_passwords("bob").unwrap());
        s.record_use(id, 500, "imap", Some("192.0.2.7")).unwrap();
        s.record_use(id, 600, "imap", None).unwrap();
        let l = &s.list(Owner::User("alice")).unwrap()[0];
        assert_eq!(
            (l.last_used, l.use_count, l.last_rhost.as_deref()),
            (Some(600), 2, None)
        );
        assert!(!format!("{c:?}").contains("argon2"));
    }

    #[test]
    fn revoke_respects_the_owner() {
        let (_d, path) = temp();
        let s = SqliteStore::init(&path).unwrap();
        let a = s.create(&row("alice", "imap", "aaaaaa")).unwrap();
        let b = s.create(&row("bob", "imap", "bbbbbb")).unwrap();
        let out = s.revoke(&[a, b, 999], Owner::User("alice"), 7).unwrap();
        assert_eq!(
            out,
            vec![
                (a, Revoked::Now),
                (b, Revoked::NotFound),
                (999, Revoked::NotFound)
            ]
        );
        assert_eq!(
            s.revoke(&[a], Owner::Anyone, 8).unwrap(),
            vec![(a, Revoked::Already)]
        );
        assert_eq!(s.list(Owner::User("bob")).unwrap()[0].revoked, None);
        assert_eq!(s.list(Owner::User("alice")).unwrap()[0].revoked, Some(7));
        s.create(&row("bob", "pop3", "cccccc")).unwrap();
        s.create(&row("bob", "smtp", "dddddd")).unwrap();
        assert_eq!(s.revoke_all("bob", Some("pop3"), 9).unwrap(), 1);
        assert_eq!(s.revoke_all("bob", None, 9).unwrap(), 2);
        assert_eq!(s.revoke_all("bob", None, 9).unwrap(), 0);
    }
}
