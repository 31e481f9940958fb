//! Where app passwords live. One narrow interface, [`Store`], so that the login path and
//! the CLI do not care which database is behind it; SQLite ([`sqlite::SqliteStore`]) is
//! the embedded default, PostgreSQL ([`postgres::PgStore`]) the store several hosts
//! share. [`open`] and [`init`] pick one by the [`Location`] the `db` setting names.

use std::fmt;
use std::path::PathBuf;

use crate::policy::{Account, Dates, Throttle};
use crate::time::Timestamp;
use apppass_proto::trust::Untrusted;

pub mod location;
pub mod postgres;
pub mod sqlite;

pub use location::{Connect, Conninfo, Location};

/// How a connection will be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Changes that must survive a crash once reported done (tools, tests, migrations).
    Admin,
    /// Reads, and a login's best-effort record: on a database that can be read but not
    /// written (a read-only mount, a full disk), opened read-only as it is, so that
    /// logins go on (apppassd falls back to it when it cannot open the store for
    /// changes).
    Read,
    /// apppassd's long-lived connection, one per worker: logins and changes alike.
    /// Changes are as durable as the CLI's; a login's record is written the way a
    /// login's is (best effort, without waiting for the disk).
    Daemon,
}

/// Opens an existing, initialised database. With `as_root` (a module or CLI running as
/// root), refuses files that anyone but root could change: an SQLite database, a
/// PostgreSQL password file.
pub fn open(
    location: &Location,
    connect: &Connect,
    purpose: Purpose,
    as_root: bool,
) -> Result<Box<dyn Store>, StoreError> {
    Ok(match location {
        Location::Sqlite(path) => Box::new(sqlite::SqliteStore::open(path, purpose, as_root)?),
        Location::Postgres(c) => Box::new(postgres::PgStore::open(c, connect, purpose, as_root)?),
    })
}

/// What [`open_daemon`] opened.
pub struct Opened {
    pub store: Box<dyn Store>,
    /// Why the store was opened read-only, if it was: logins go on, changes fail, and
    /// the caller should try a read-write open again later.
    pub read_only: Option<String>,
}

/// apppassd's connection to its store: an SQLite file, checked first
/// ([`sqlite::check_directory`]: it and its directory must be `owner`'s), then created
/// or migrated; or a PostgreSQL database, migrated if its role may.
pub fn open_daemon(
    location: &Location,
    connect: &Connect,
    owner: u32,
) -> Result<Opened, StoreError> {
    let writable = |store: Box<dyn Store>| Opened {
        store,
        read_only: None,
    };
    Ok(match location {
        Location::Sqlite(path) => {
            sqlite::check_directory(path, owner)?;
            match sqlite::SqliteStore::init_for(path, Purpose::Daemon) {
                Ok(s) => writable(Box::new(s)),
                // Readable but not writable (a read-only mount, a full disk): logins go
                // on, on the file as it is; changes say why not.
                Err(e @ (StoreError::Db(_) | StoreError::Io(..))) if path.exists() => {
                    match sqlite::SqliteStore::open(path, Purpose::Read, false) {
                        Ok(s) => Opened {
                            store: Box::new(s),
                            read_only: Some(e.to_string()),
                        },
                        Err(_) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Location::Postgres(c) => writable(Box::new(postgres::PgStore::open_daemon(
            c,
            connect,
            owner == 0,
        )?)),
    })
}

/// Creates the database (SQLite) or its schema (PostgreSQL) if needed and brings it up
/// to date (apppassd at start; tools and tests).
pub fn init(
    location: &Location,
    connect: &Connect,
    as_root: bool,
) -> Result<Box<dyn Store>, StoreError> {
    Ok(match location {
        Location::Sqlite(path) => Box::new(sqlite::SqliteStore::init(path)?),
        Location::Postgres(c) => Box::new(postgres::PgStore::init(c, connect, as_root)?),
    })
}

/// How many revoked or expired app passwords a user keeps (for `apppass list`): adding
/// one drops that user's older ones. Without a bound, anyone allowed to add app
/// passwords could grow the database without end by adding and revoking over and over.
pub const KEPT_INACTIVE: i64 = 100;

/// What the login path needs of one app password. Never printed whole: `hash` is secret
/// enough to be kept out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: i64,
    pub user: String,
    /// A service name, or [`crate::policy::ANY_SERVICE`].
    pub service: String,
    pub label: String,
    /// argon2id PHC string.
    pub hash: String,
    pub dates: Dates,
    /// The account it was made for.
    pub owner: Account,
    /// Its source networks, as stored ([`crate::networks::Networks`]'s text; `""`:
    /// anywhere).
    pub networks: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("service", &self.service)
            .field("label", &self.label)
            .field("dates", &self.dates)
            .field("owner", &self.owner)
            .field("networks", &self.networks)
            .finish_non_exhaustive()
    }
}

/// A row to create.
#[derive(Debug, Clone)]
pub struct NewRow<'a> {
    pub user: &'a str,
    pub service: &'a str,
    pub label: &'a str,
    pub selector: &'a str,
    pub hash: &'a str,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    /// The account that has `user`'s name now (apppassd asks NSS).
    pub owner: Account,
    /// Canonical source networks (`""`: anywhere).
    pub networks: &'a str,
}

/// The question a login asks the store before hashing.
#[derive(Debug, Clone, Copy)]
pub struct LookupQuery<'a> {
    pub user: &'a str,
    /// The public part of the password typed, if it is shaped like an app password.
    pub selector: Option<&'a str>,
    /// PAM_RHOST, `""` when unset.
    pub rhost: &'a str,
    pub now: Timestamp,
}

/// The store's answer.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub credential: Option<Credential>,
    pub has_passwords: bool,
    pub throttled: bool,
}

/// What `list` shows of an app password: everything but the selector and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub id: i64,
    pub user: String,
    pub service: String,
    pub label: String,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
    pub last_used: Option<Timestamp>,
    pub last_service: Option<String>,
    pub last_rhost: Option<String>,
    pub use_count: i64,
    pub owner: Account,
    /// Canonical source networks (`""`: anywhere).
    pub networks: String,
    /// The app password that replaced this one (`apppass regenerate`), if any.
    pub replaced_by: Option<i64>,
}

impl Listing {
    pub fn dates(&self) -> Dates {
        Dates {
            created: self.created,
            expires: self.expires,
            revoked: self.revoked,
            last_used: self.last_used,
        }
    }
}

/// What became of a login attempt, for the audit log and the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    Success,
    /// `guess`: a failure that could be someone guessing (it counts toward throttling).
    Failure {
        reason: &'a str,
        guess: bool,
    },
    /// Refused without checking: guesses at this password (or at selectors that are not
    /// the user's) from this remote host are throttled.
    Throttled,
}

impl Outcome<'_> {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure { .. } => "failure",
            Outcome::Throttled => "throttled",
        }
    }
}

/// One login attempt of a user who has app passwords.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub at: Timestamp,
    pub user: &'a str,
    pub service: &'a str,
    pub rhost: Option<&'a str>,
    /// The app password the attempt named (its selector was this user's): the throttle
    /// counter it counts on (`None`: the one for selectors that are none of the user's).
    pub password_id: Option<i64>,
    pub outcome: Outcome<'a>,
}

/// How much of the audit log and of the throttle table to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: i64,
    pub max_rows: i64,
    /// Most rows in the throttle table.
    pub throttle_rows: i64,
}

/// An audit log entry, as `apppass log` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub time: Timestamp,
    pub user: String,
    pub service: String,
    pub password_id: Option<i64>,
    pub rhost: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
}

/// The audit event's reason for a revocation made because the account password changed.
pub const PASSWORD_CHANGE: &str = "password-change";

/// The audit event's reason for a revocation made because the password was regenerated.
pub const REGENERATED: &str = "regenerated";

/// What [`Store::regenerate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regenerated {
    /// The new row's id; the old one is revoked and names it.
    New(i64),
    /// No such id (or not the caller's, or not the user's the new row is for).
    NotFound,
    /// The old row was replaced already, by this one.
    Already(i64),
}

/// Whose rows an operation may see or change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// Every user's (administrators).
    Anyone,
    /// Only this user's: other users' rows behave as if they did not exist.
    User(&'a str),
}

/// What revoking one id did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Now,
    Already,
    /// No such id (or not the caller's).
    NotFound,
}

/// Errors of the store layer.
#[derive(Debug)]
pub enum StoreError {
    /// The database file does not exist.
    Missing(PathBuf),
    /// The database or a directory above it could be changed by someone other than root.
    Unsafe(Untrusted),
    /// apppassd's database, its directory or a file beside it is not apppassd's alone
    /// (the message says which and how to fix it).
    Untrusted(String),
    /// What this store cannot do (a backup of PostgreSQL is pg_dump's job).
    Unsupported(&'static str),
    /// Not an SQLite database, or damaged.
    Corrupt(PathBuf, String),
    /// An SQLite database, but not one of ours.
    Foreign(PathBuf),
    /// A PostgreSQL database with tables by apppass's names that are not apppass's.
    ForeignSchema(String),
    /// The PostgreSQL password file cannot be used (and why).
    Passfile(PathBuf, String),
    /// Never initialised (apppassd does it at start).
    Uninitialised(PathBuf),
    /// Made by a newer apppass than this one.
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// The randomly drawn selector is already in use (the caller draws again).
    SelectorTaken,
    /// The user already has this many active app passwords, the most allowed.
    Limit(usize),
    /// Anything else the database said.
    Db(String),
    /// Creating the database's file or directory failed.
    Io(PathBuf, std::io::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Missing(p) => {
                write!(
                    f,
                    "database {} does not exist (apppassd creates it at start)",
                    p.display()
                )
            }
            StoreError::Unsafe(why) => write!(f, "refusing a database others can change: {why}"),
            StoreError::Untrusted(why) => write!(f, "refusing an untrusted database: {why}"),
            StoreError::Unsupported(what) => f.write_str(what),
            StoreError::Corrupt(p, why) => {
                write!(
                    f,
                    "database {} is corrupt or not a database: {why}",
                    p.display()
                )
            }
            StoreError::Foreign(p) => {
                write!(
                    f,
                    "{} is an SQLite database, but not an apppass one",
                    p.display()
                )
            }
            StoreError::ForeignSchema(name) => write!(
                f,
                "{name} has tables named like apppass's, but no apppass schema: not an apppass database"
            ),
            StoreError::Passfile(p, why) => write!(f, "db_passfile {} {why}", p.display()),
            StoreError::Uninitialised(p) => {
                write!(
                    f,
                    "database {} is not initialised (apppassd initialises it at start)",
                    p.display()
                )
            }
            StoreError::SchemaTooNew { path, found, known } => write!(
                f,
                "database {} has schema version {found}, newer than this apppass knows ({known}): upgrade apppass",
                path.display()
            ),
            StoreError::SelectorTaken => f.write_str("selector already in use"),
            StoreError::Limit(n) => write!(f, "already {n} active app passwords, the most allowed"),
            StoreError::Db(why) => write!(f, "database error: {why}"),
            StoreError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for StoreError {}

/// The operations apppass needs of a database, and no more.
pub trait Store {
    /// Everything a login needs to know before it hashes, in one read: the row `selector`
    /// names if it is `user`'s (another user's row looks like none), whether `user` has
    /// any app password, and whether guesses at that row (or, when there is none, at
    /// selectors that are not `user`'s) are throttled from `rhost` at `now`. Stores
    /// override it to read all of it at once; this default asks the questions in turn.
    fn lookup(&self, q: &LookupQuery<'_>) -> Result<Lookup, StoreError> {
        let credential = match q.selector {
            Some(sel) => self.find_by_selector(sel)?.filter(|row| row.user == q.user),
            None => None,
        };
        let has_passwords = credential.is_some() || self.user_has_passwords(q.user)?;
        let password = credential.as_ref().map(|c| c.id);
        let throttled = self
            .throttled_until(q.user, q.rhost, password, q.now)?
            .is_some();
        Ok(Lookup {
            credential,
            has_passwords,
            throttled,
        })
    }
    /// The app password whose public selector this is, if any.
    fn find_by_selector(&self, selector: &str) -> Result<Option<Credential>, StoreError>;
    /// Whether `user` has any app password at all, whatever its state.
    fn user_has_passwords(&self, user: &str) -> Result<bool, StoreError>;
    /// Until when guesses at `user`'s app password `password` (`None`: at selectors that
    /// are none of `user`'s) are refused from `rhost` (counted as
    /// [`crate::policy::throttle_host`] says); `None`: not throttled now.
    fn throttled_until(
        &self,
        user: &str,
        rhost: &str,
        password: Option<i64>,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError>;
    /// Records a login attempt at once: the password's last use on success, the audit
    /// event, the throttle counter of (user, remote host, password) (cleared on success,
    /// counted on a guess, with `throttle`, the table kept to `keep.throttle_rows` by
    /// pushing out the least recently written rows), and on SQLite prunes the audit log to
    /// `keep`. A throttled attempt is an audit event only when it is the first refused
    /// during its lockout; the rest are counted on the throttle row. Callers on the
    /// login path treat failure as harmless.
    fn record_attempt(
        &self,
        attempt: &Attempt<'_>,
        throttle: Option<&Throttle>,
        keep: Retention,
    ) -> Result<(), StoreError>;
    /// Stores a new app password; returns its id. Drops the user's oldest revoked or
    /// expired app passwords beyond the newest [`KEPT_INACTIVE`].
    fn create(&self, row: &NewRow<'_>) -> Result<i64, StoreError>;
    /// Like `create`, unless the user already has `max` active app passwords (counted
    /// and created in one transaction, so two at once cannot both slip in).
    fn create_limited(&self, row: &NewRow<'_>, max: usize) -> Result<i64, StoreError>;
    /// Replaces app password `old` (of `owner`, and `row.user`'s) with `row`, in one
    /// transaction: creates `row` as [`Store::create`] does (unless, with `max`, the user
    /// would have more than `max` active app passwords once `old` is revoked), revokes
    /// `old` (if it is not revoked yet), links it to the new row and writes an audit event
    /// for it (outcome `revoked`, reason [`REGENERATED`]). The old row, its last use and
    /// its audit events stay.
    fn regenerate(
        &self,
        old: i64,
        owner: Owner<'_>,
        row: &NewRow<'_>,
        max: Option<usize>,
    ) -> Result<Regenerated, StoreError>;
    /// App passwords of `owner`, by user then id.
    fn list(&self, owner: Owner<'_>) -> Result<Vec<Listing>, StoreError>;
    /// The app password `id`, if `owner` may see it.
    fn find(&self, id: i64, owner: Owner<'_>) -> Result<Option<Listing>, StoreError>;
    /// Sets the source networks (canonical text, `""`: anywhere) of app password `id`
    /// of `owner`; `false`: no such password that `owner` may see.
    fn set_networks(&self, id: i64, owner: Owner<'_>, networks: &str) -> Result<bool, StoreError>;
    /// How many of `user`'s app passwords are neither revoked nor expired at `now`.
    fn count_active(&self, user: &str, now: Timestamp) -> Result<usize, StoreError>;
    /// The newest `limit` audit events of `owner`, newest first.
    fn events(&self, owner: Owner<'_>, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// Lifts throttling of `user` (from `rhost` only, if given, counted as
    /// [`crate::policy::throttle_host`] says); returns from how many remote hosts.
    fn unlock(&self, user: &str, rhost: Option<&str>) -> Result<usize, StoreError>;
    /// Revokes the given ids in one transaction; ids `owner` may not see are `NotFound`.
    fn revoke(
        &self,
        ids: &[i64],
        owner: Owner<'_>,
        at: Timestamp,
    ) -> Result<Vec<(i64, Revoked)>, StoreError>;
    /// Revokes every active app password of `user` (for `service` only, if given); returns
    /// how many.
    fn revoke_all(
        &self,
        user: &str,
        service: Option<&str>,
        at: Timestamp,
    ) -> Result<usize, StoreError>;
    /// Revokes every active app password of `user` because the account's password was
    /// changed, and writes one audit event per revocation (outcome `revoked`, reason
    /// [`PASSWORD_CHANGE`]), in one transaction; returns how many. On PostgreSQL it calls
    /// the SECURITY DEFINER function of sql/postgres/0006, which the login role may
    /// execute though it may revoke nothing else.
    fn revoke_for_password_change(&self, user: &str, at: Timestamp) -> Result<usize, StoreError>;
    /// Up to `limit` users who have app passwords not adopted yet
    /// ([`Account::Unadopted`]: made before apppass recorded owners).
    fn unadopted(&self, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Gives each user's app passwords not adopted yet the owner paired with it, in one
    /// transaction; returns how many rows.
    fn adopt(&self, owners: &[(String, Account)]) -> Result<usize, StoreError>;
    /// The schema version of the open database.
    fn schema_version(&self) -> Result<i64, StoreError>;
    /// Writes a consistent copy of the whole store to `path` (a new file), while it stays
    /// in use.
    fn backup_to(&self, path: &std::path::Path) -> Result<(), StoreError> {
        let _ = path;
        Err(StoreError::Unsupported(
            "this store has no online copy through apppassd: use the database's own tools (pg_dump)",
        ))
    }
    /// Trims the audit log to `keep` and deletes the throttle rows that have expired (by
    /// the index on their expiry) or are beyond `keep.throttle_rows`: apppassd's hourly
    /// maintenance. (SQLite's logins also trim the audit log as they go; PostgreSQL's
    /// login role may only add to it, so only the administrators' role trims it. Any
    /// role keeps the throttle table.)
    fn prune(&self, keep: Retention, now: Timestamp) -> Result<(), StoreError>;
}
