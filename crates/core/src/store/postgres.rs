//! The PostgreSQL store: a database shared by several hosts, schema from
//! `sql/postgres/` migrations, reached through libpq ([`apppass_pq`]). The same
//! semantics as [`super::sqlite`]: one lookup by selector, the "has any password" check
//! only when no row matched, a login's record in one transaction, changes in
//! transactions.
//!
//! apppassd keeps one connection per worker. Each prepares the login path's statements
//! once ([`LOGIN_STATEMENTS`]), so that a login is one round trip for the lookup and one
//! for its record, with nothing parsed or planned again. A lookup that finds the
//! connection closed (the server restarted) connects again and asks once more; any
//! other error is [`StoreError::Db`], after which apppassd drops the store and opens it
//! anew.
//!
//! Over TCP the connection must verify the server (`sslmode=verify-full`), checked on
//! the settings libpq resolved (service file and `PG*` variables included) before any
//! password is sent. A Unix socket needs none.
//!
//! Every statement is sent with parameters (text, cast in SQL), never built from values.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::location::{tcp_hosts, unverified_tls};
use super::{
    Attempt, Connect, Conninfo, Credential, Event, KEPT_INACTIVE, Listing, Lookup, LookupQuery,
    NewRow, Outcome, Owner, Purpose, Regenerated, Retention, Revoked, Store, StoreError,
};
use crate::policy::{self, Account, Dates, Throttle};
use crate::time::Timestamp;
use apppass_pq::{self as pq, PqError, Rows};

/// Numbered migrations, as in SQLite; the number is `apppass_schema.version` once the
/// file is applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../../../sql/postgres/0001_app_password.sql"),
    ),
    (
        2,
        include_str!("../../../../sql/postgres/0002_audit_throttle.sql"),
    ),
    (
        3,
        include_str!("../../../../sql/postgres/0003_throttle_selector.sql"),
    ),
    (
        4,
        include_str!("../../../../sql/postgres/0004_owner_uid.sql"),
    ),
    (
        5,
        include_str!("../../../../sql/postgres/0005_networks.sql"),
    ),
    (
        6,
        include_str!("../../../../sql/postgres/0006_revoke_on_password_change.sql"),
    ),
    (
        7,
        include_str!("../../../../sql/postgres/0007_replaced_by.sql"),
    ),
];

/// The schema version this build reads and writes (the same as SQLite's).
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// `apppass_schema.application` of an apppass database.
const APPLICATION: &str = "apppass";

/// The advisory lock held while migrating ("APPS", as SQLite's application_id): two
/// hosts (or two workers) migrating at once take turns.
const MIGRATION_LOCK: i64 = 0x4150_5053;

/// Additions for one user take turns under this advisory lock class (with the user's
/// hash as the second key).
const USER_LOCK_CLASS: i64 = 0x4150_5054;

/// Tools and migrations wait at least this long for a query: an administrator would
/// rather wait than retry (SQLite's CLI busy timeout is the same), and a migration
/// waits for another host's.
const ADMIN_MIN_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows (audit events, throttle rows) deleted per statement when pruning, and statements
/// per prune: each stays well within the query timeout, and a log far behind is caught
/// up over several prunes rather than holding a worker for long.
const PRUNE_BATCH: u64 = 10_000;
const PRUNE_BATCHES: usize = 10;

/// Where no password file was configured: a path that cannot exist (not even root can
/// make a file below /dev/null), so libpq reads no password file at all, silently. (It
/// would otherwise read ~/.pgpass, and warn on stderr about a bad one.)
const NO_PASSFILE: &str = "/dev/null/apppass-no-passfile";

/// A `SELECT` list in the order of [`listing`].
const LISTING_COLUMNS: &str = r#"id, "user", service, label, created, expires, revoked, last_used, last_service, last_rhost, use_count, owner_uid, networks, replaced_by"#;

/// An audit event: $1 time, $2 user, $3 service, $4 rhost, $5 password id, $6 outcome,
/// $7 reason.
macro_rules! event_insert {
    () => {
        r#"INSERT INTO event (time, "user", service, password_id, rhost, outcome, reason)
           VALUES ($1::bigint, $2::text, $3::text, $5::bigint, $4::text, $6::text, $7::text)"#
    };
}

/// The throttle counter an attempt counts on: $2 user, $8 remote host as counted, $5 the
/// password named (NULL: the one counter for selectors that are none of the user's).
macro_rules! throttle_key {
    () => {
        r#""user" = $2::text AND rhost = $8::text AND password_id = coalesce($5::bigint, 0)"#
    };
}

/// The login path's statements, prepared on every connection: name and SQL. The record
/// statements take the event's $1 to $7, then $8 the remote host as throttling counts it
/// ([`policy::throttle_host`]).
pub const LOGIN_STATEMENTS: &[(&str, &str)] = &[
    // $1 user, $2 selector, $3 remote host as counted: the row, whether the user has any,
    // the throttle of that row (or of selectors that are none of the user's), the row's
    // owner.
    (
        LOOKUP,
        r#"SELECT p.id, p."user", p.service, p.label, p.hash,
                  p.created, p.expires, p.revoked, p.last_used,
                  EXISTS (SELECT 1 FROM app_password WHERE "user" = $1::text),
                  (SELECT locked_until FROM throttle
                    WHERE "user" = $1::text AND rhost = $3::text
                      AND password_id = coalesce(p.id, 0)),
                  p.owner_uid, p.networks
             FROM (SELECT 1) AS one
             LEFT JOIN app_password AS p ON p.selector = $2::text AND p."user" = $1::text"#,
    ),
    // A success: usage, the password's own throttle counter cleared (not the one for
    // unknown selectors: whoever shares the owner's address would guess again), the
    // event.
    (
        RECORD_SUCCESS,
        concat!(
            r#"WITH used AS (
                 UPDATE app_password
                    SET last_used = $1::bigint, last_service = $3::text,
                        last_rhost = $4::text, use_count = use_count + 1
                  WHERE id = $5::bigint
               ), cleared AS (
                 DELETE FROM throttle WHERE "#,
            throttle_key!(),
            r#"
               )
               "#,
            event_insert!()
        ),
    ),
    // A guess: the event, and the throttle counted with INSERT ... ON CONFLICT (atomic
    // however many hosts count at once). $9 failures that lock, $10 interval, $11
    // lockout: SQLite's rules. Every write takes a new serial (id), and the rows
    // $12 (throttle_max_rows) serials below it or more are deleted, by the primary key:
    // the table stays bounded, the least recently written rows going first.
    (
        RECORD_GUESS,
        concat!(
            "WITH logged AS (",
            event_insert!(),
            r#"), written AS (
                 INSERT INTO throttle AS t
                        ("user", rhost, password_id, failures, window_start, locked_until,
                         refused, expires)
                 VALUES ($2::text, $8::text, coalesce($5::bigint, 0), 1, $1::bigint,
                         CASE WHEN 1 >= $9::bigint THEN $1::bigint + $11::bigint END, 0,
                         greatest($1::bigint + $10::bigint,
                                  CASE WHEN 1 >= $9::bigint THEN $1::bigint + $11::bigint END))
                 ON CONFLICT ("user", rhost, password_id) DO UPDATE SET
                   id = excluded.id,
                   failures = CASE WHEN $1::bigint - t.window_start < $10::bigint
                                   THEN t.failures + 1 ELSE 1 END,
                   window_start = CASE WHEN $1::bigint - t.window_start < $10::bigint
                                       THEN t.window_start ELSE $1::bigint END,
                   locked_until = CASE WHEN (CASE WHEN $1::bigint - t.window_start < $10::bigint
                                                  THEN t.failures + 1 ELSE 1 END) >= $9::bigint
                                       THEN $1::bigint + $11::bigint END,
                   refused = 0,
                   expires = greatest(
                     CASE WHEN $1::bigint - t.window_start < $10::bigint
                          THEN t.window_start ELSE $1::bigint END + $10::bigint,
                     CASE WHEN (CASE WHEN $1::bigint - t.window_start < $10::bigint
                                     THEN t.failures + 1 ELSE 1 END) >= $9::bigint
                          THEN $1::bigint + $11::bigint END)
                 RETURNING id
               )
               DELETE FROM throttle
                WHERE id <= (SELECT id FROM written) - $12::bigint
                  AND NOT ("#,
            throttle_key!(),
            ")"
        ),
    ),
    // A throttled attempt: counted on its throttle row; an audit event only if it is
    // the first refused since the lockout began (or the row is gone), so that a flood
    // of refused attempts cannot push real events out of the audit log.
    (
        RECORD_THROTTLED,
        concat!(
            "WITH counted AS (UPDATE throttle SET refused = refused + 1 WHERE ",
            throttle_key!(),
            r#" RETURNING refused)
               INSERT INTO event (time, "user", service, password_id, rhost, outcome, reason)
               SELECT $1::bigint, $2::text, $3::text, $5::bigint, $4::text, $6::text, $7::text
                WHERE NOT EXISTS (SELECT 1 FROM counted WHERE refused > 1)"#
        ),
    ),
    // Anything else: the event alone.
    (RECORD_EVENT, event_insert!()),
];

const LOOKUP: &str = "apppass_lookup";
const RECORD_SUCCESS: &str = "apppass_record_success";
const RECORD_GUESS: &str = "apppass_record_guess";
const RECORD_THROTTLED: &str = "apppass_record_throttled";
const RECORD_EVENT: &str = "apppass_record_event";

/// An open connection to an apppass database on PostgreSQL.
#[derive(Debug)]
pub struct PgStore {
    /// Replaced when a lookup finds it closed.
    conn: RefCell<pq::Connection>,
    link: Link,
    timeout: Duration,
    /// The location as it may be shown (no password can be in it).
    name: String,
    /// Whether this role may delete audit events (the administrators' may, the login
    /// role may not).
    may_prune: bool,
}

/// What it takes to connect (again).
#[derive(Debug)]
struct Link {
    /// Keywords and values for libpq, in order.
    params: Vec<(&'static str, String)>,
    connect_timeout: Duration,
}

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
enum P<'a> {
    Null,
    Text(&'a str),
    Int(i64),
}

impl<'a> From<&'a str> for P<'a> {
    fn from(s: &'a str) -> Self {
        P::Text(s)
    }
}

impl From<i64> for P<'_> {
    fn from(n: i64) -> Self {
        P::Int(n)
    }
}

impl<'a> From<Option<&'a str>> for P<'a> {
    fn from(s: Option<&'a str>) -> Self {
        s.map_or(P::Null, P::Text)
    }
}

impl From<Option<i64>> for P<'_> {
    fn from(n: Option<i64>) -> Self {
        n.map_or(P::Null, P::Int)
    }
}

/// Builds a parameter list from values of mixed types.
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$(P::from($v)),*] };
}

/// Parameters as libpq takes them: text, or NULL.
fn texts(params: &[P<'_>]) -> Vec<Option<String>> {
    params
        .iter()
        .map(|p| match p {
            P::Null => None,
            P::Text(s) => Some((*s).to_string()),
            P::Int(n) => Some(n.to_string()),
        })
        .collect()
}

/// A credential from columns 0 to 8: id, user, service, label, hash, created, expires,
/// revoked, last_used; its owner_uid from column `owner` and its networks from the next.
fn credential(r: &[Option<String>], owner: usize) -> Result<Credential, StoreError> {
    Ok(Credential {
        id: int(&r[0])?,
        user: text(&r[1])?,
        service: text(&r[2])?,
        label: text(&r[3])?,
        hash: text(&r[4])?,
        dates: Dates {
            created: int(&r[5])?,
            expires: opt_int(&r[6])?,
            revoked: opt_int(&r[7])?,
            last_used: opt_int(&r[8])?,
        },
        owner: Account::from_column(opt_int(&r[owner])?),
        networks: text(&r[owner + 1])?,
    })
}

fn unreadable(what: &str) -> StoreError {
    StoreError::Db(format!("unexpected {what} from PostgreSQL"))
}

fn int(v: &Option<String>) -> Result<i64, StoreError> {
    v.as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| unreadable("number"))
}

fn opt_int(v: &Option<String>) -> Result<Option<i64>, StoreError> {
    v.as_deref()
        .map(|s| s.parse().map_err(|_| unreadable("number")))
        .transpose()
}

fn text(v: &Option<String>) -> Result<String, StoreError> {
    v.clone().ok_or_else(|| unreadable("NULL"))
}

fn listing(r: &[Option<String>]) -> Result<Listing, StoreError> {
    Ok(Listing {
        id: int(&r[0])?,
        user: text(&r[1])?,
        service: text(&r[2])?,
        label: text(&r[3])?,
        created: int(&r[4])?,
        expires: opt_int(&r[5])?,
        revoked: opt_int(&r[6])?,
        last_used: opt_int(&r[7])?,
        last_service: r[8].clone(),
        last_rhost: r[9].clone(),
        use_count: int(&r[10])?,
        owner: Account::from_column(opt_int(&r[11])?),
        networks: text(&r[12])?,
        replaced_by: opt_int(&r[13])?,
    })
}

fn event(r: &[Option<String>]) -> Result<Event, StoreError> {
    Ok(Event {
        id: int(&r[0])?,
        time: int(&r[1])?,
        user: text(&r[2])?,
        service: text(&r[3])?,
        password_id: opt_int(&r[4])?,
        rhost: r[5].clone(),
        outcome: text(&r[6])?,
        reason: r[7].clone(),
    })
}

/// SQLSTATEs apppass tells apart.
const UNIQUE_VIOLATION: &str = "23505";
const UNDEFINED_TABLE: &str = "42P01";

/// Checks the password file the way libpq would only warn about (on stderr): it must
/// be a regular file nobody but its owner can read; as root, also root's and safe from
/// everyone else like the database is.
fn check_passfile(path: &Path, as_root: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| StoreError::Io(path.to_path_buf(), e))?;
    if as_root {
        apppass_proto::trust::check_root_only(path).map_err(StoreError::Unsafe)?;
    }
    if !meta.is_file() {
        return Err(StoreError::Passfile(
            path.to_path_buf(),
            "is not a regular file".into(),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Passfile(
            path.to_path_buf(),
            format!(
                "is open to group or other (mode {mode:04o}): fix with chmod 600 {}",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// What apppass requires of the settings libpq resolved, before anything is sent: no
/// password but the password file's, and TLS that verifies the server over TCP.
fn vet(settings: &pq::Settings) -> Result<(), String> {
    if settings.get("password").is_some() {
        return Err(
            "refusing a password from the connection's parameters (a service file \
             or PGPASSWORD): put it in the file db_passfile names"
                .into(),
        );
    }
    let tcp = tcp_hosts(settings.get("host"), settings.get("hostaddr"));
    let mode = settings.get("sslmode").unwrap_or("prefer");
    if !tcp.is_empty() && mode != "verify-full" {
        return Err(unverified_tls(&tcp, mode));
    }
    Ok(())
}

impl Link {
    fn new(conninfo: &Conninfo, connect: &Connect, purpose: Purpose, timeout: Duration) -> Link {
        // The server gives up on a statement when the client would.
        let options = format!(
            "{} -c statement_timeout={}",
            conninfo.options().unwrap_or(""),
            timeout.as_millis()
        );
        let passfile = connect
            .passfile
            .as_deref()
            .map_or(NO_PASSFILE.into(), |p| p.display().to_string());
        let application = match purpose {
            Purpose::Daemon => "apppassd",
            Purpose::Admin | Purpose::Read => "apppass",
        };
        // In order: defaults the connection string may override, the string itself
        // (expanded), then what apppass decides.
        let params = vec![
            // No Kerberos probe unless the string asks for it.
            ("gssencmode", "disable".to_string()),
            ("fallback_application_name", application.to_string()),
            // A long-lived connection: keep NAT and firewall state alive, and notice a
            // server that vanished without a word within a minute and a half.
            ("keepalives_idle", "60".to_string()),
            ("keepalives_interval", "10".to_string()),
            ("keepalives_count", "3".to_string()),
            ("dbname", conninfo.text().to_string()),
            ("passfile", passfile),
            ("client_encoding", "UTF8".to_string()),
            ("options", options.trim_start().to_string()),
        ];
        Link {
            params,
            connect_timeout: connect.connect_timeout,
        }
    }

    fn dial(&self, name: &str) -> Result<pq::Connection, StoreError> {
        let params: Vec<(&str, &str)> = self.params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let conn = pq::connect(&params, self.connect_timeout, &vet).map_err(|e| {
            StoreError::Db(match e {
                PqError::Timeout(_) => format!(
                    "{name}: no connection within {} s (db_connect_timeout)",
                    self.connect_timeout.as_secs_f32()
                ),
                PqError::Refused(why) => format!("{name}: {why}"),
                e => format!("{name}: {e}"),
            })
        })?;
        // What libpq promised for verify-full, checked on what it did.
        let host = conn.host();
        if !host.starts_with('/') && !host.starts_with('@') && !conn.ssl_in_use() {
            return Err(StoreError::Db(format!(
                "{name}: connected to {host} over TCP without TLS: refusing it"
            )));
        }
        Ok(conn)
    }
}

impl PgStore {
    /// Connects and checks the schema: apppass's, and not newer than this build; an
    /// older one is brought up to date (which needs the administrators' role).
    pub fn open(
        conninfo: &Conninfo,
        connect: &Connect,
        purpose: Purpose,
        as_root: bool,
    ) -> Result<PgStore, StoreError> {
        let store = Self::connect(conninfo, connect, purpose, as_root)?;
        let version = match store.version() {
            Ok(v) => v,
            Err(StoreError::Uninitialised(_)) if store.has_our_tables()? => {
                return Err(StoreError::ForeignSchema(store.name.clone()));
            }
            Err(e) => return Err(e),
        };
        if version != SCHEMA_VERSION {
            store.migrate()?;
        }
        store.ready()
    }

    /// apppassd's connection: the schema created on an empty database or brought up to
    /// date, if this role may (the administrators' role: the database's owner); with a
    /// role that may not (the login role of a front end), a schema that is missing or
    /// older is an error that says who does it.
    pub fn open_daemon(
        conninfo: &Conninfo,
        connect: &Connect,
        as_root: bool,
    ) -> Result<PgStore, StoreError> {
        let store = Self::connect(conninfo, connect, Purpose::Daemon, as_root)?;
        let from = match store.version() {
            Ok(v) if v == SCHEMA_VERSION => None,
            Ok(v) => Some(format!(
                "schema version {v} is older than this apppassd's ({SCHEMA_VERSION})"
            )),
            Err(StoreError::Uninitialised(_)) => Some("it has no apppass schema yet".to_string()),
            Err(e) => return Err(e),
        };
        if let Some(state) = from {
            store.migrate().map_err(|e| match e {
                StoreError::Db(why) => StoreError::Db(format!(
                    "{why}; {state}, and this connection's role could not bring it up to \
                     date: the apppassd that connects as the administrators' role (the \
                     database's owner) does that when it starts"
                )),
                e => e,
            })?;
        }
        store.ready()
    }

    /// Creates the schema if the database has none, or brings it up to date. Safe to run
    /// again, and from two hosts at once.
    pub fn init(
        conninfo: &Conninfo,
        connect: &Connect,
        as_root: bool,
    ) -> Result<PgStore, StoreError> {
        let store = Self::connect(conninfo, connect, Purpose::Admin, as_root)?;
        store.migrate()?;
        store.ready()
    }

    fn connect(
        conninfo: &Conninfo,
        connect: &Connect,
        purpose: Purpose,
        as_root: bool,
    ) -> Result<PgStore, StoreError> {
        let name = conninfo.to_string();
        if let Some(p) = &connect.passfile {
            check_passfile(p, as_root)?;
        }
        let timeout = match purpose {
            // apppassd's connections serve logins, which must not wait longer.
            Purpose::Daemon => connect.query_timeout,
            Purpose::Admin | Purpose::Read => connect.query_timeout.max(ADMIN_MIN_QUERY_TIMEOUT),
        };
        let link = Link::new(conninfo, connect, purpose, timeout);
        let conn = link.dial(&name)?;
        Ok(PgStore {
            conn: RefCell::new(conn),
            link,
            timeout,
            name,
            may_prune: false,
        })
    }

    /// Once the schema is right: the login path's statements prepared, and whether this
    /// role may prune.
    fn ready(mut self) -> Result<PgStore, StoreError> {
        self.prepare()?;
        let row = self.one_row("SELECT has_table_privilege('event', 'DELETE')", &[])?;
        self.may_prune = row.is_some_and(|r| r[0].as_deref() == Some("t"));
        Ok(self)
    }

    fn prepare(&self) -> Result<(), StoreError> {
        let conn = self.conn.borrow();
        for (name, sql) in LOGIN_STATEMENTS {
            conn.prepare(name, sql, self.timeout)
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// A new connection in place of one the server closed, its statements prepared.
    fn reconnect(&self) -> Result<(), StoreError> {
        let conn = self.link.dial(&self.name)?;
        *self.conn.borrow_mut() = conn;
        self.prepare()
    }

    fn err(&self, e: PqError) -> StoreError {
        match e {
            PqError::Timeout(_) => StoreError::Db(format!(
                "{}: no answer within {} s (db_query_timeout)",
                self.name,
                self.timeout.as_secs_f32()
            )),
            e => StoreError::Db(format!("{}: {e}", self.name)),
        }
    }

    fn query(&self, sql: &str, params: &[P<'_>]) -> Result<Rows, StoreError> {
        self.query_raw(sql, params).map_err(|e| self.err(e))
    }

    fn query_raw(&self, sql: &str, params: &[P<'_>]) -> Result<Rows, PqError> {
        let owned = texts(params);
        let refs: Vec<Option<&str>> = owned.iter().map(Option::as_deref).collect();
        self.conn.borrow().query(sql, &refs, self.timeout)
    }

    /// Runs one of [`LOGIN_STATEMENTS`].
    fn execute(&self, name: &str, params: &[P<'_>]) -> Result<Rows, PqError> {
        let owned = texts(params);
        let refs: Vec<Option<&str>> = owned.iter().map(Option::as_deref).collect();
        self.conn.borrow().execute(name, &refs, self.timeout)
    }

    fn one_row(
        &self,
        sql: &str,
        params: &[P<'_>],
    ) -> Result<Option<Vec<Option<String>>>, StoreError> {
        Ok(self.query(sql, params)?.rows.into_iter().next())
    }

    fn uninitialised(&self) -> StoreError {
        StoreError::Uninitialised(PathBuf::from(&self.name))
    }

    /// The schema version, after checking the schema is apppass's.
    fn version(&self) -> Result<i64, StoreError> {
        let rows = match self.query_raw("SELECT application, version FROM apppass_schema", &[]) {
            Err(PqError::Query { sqlstate, .. }) if sqlstate == UNDEFINED_TABLE => {
                return Err(self.uninitialised());
            }
            other => other.map_err(|e| self.err(e))?,
        };
        let [row] = rows.rows.as_slice() else {
            return Err(StoreError::ForeignSchema(self.name.clone()));
        };
        if row[0].as_deref() != Some(APPLICATION) {
            return Err(StoreError::ForeignSchema(self.name.clone()));
        }
        let version = int(&row[1])?;
        if version == 0 {
            return Err(self.uninitialised());
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: PathBuf::from(&self.name),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        Ok(version)
    }

    /// Whether tables by apppass's names are there (without apppass_schema: someone
    /// else's).
    fn has_our_tables(&self) -> Result<bool, StoreError> {
        let row = self.one_row(
            "SELECT to_regclass('app_password') IS NOT NULL OR to_regclass('event') IS NOT NULL
                 OR to_regclass('throttle') IS NOT NULL",
            &[],
        )?;
        Ok(row.is_some_and(|r| r[0].as_deref() == Some("t")))
    }

    /// Applies the migrations the database lacks, all in one transaction under the
    /// advisory lock (DDL is transactional in PostgreSQL: all or nothing), with an
    /// administrator's patience rather than a login's.
    fn migrate(&self) -> Result<(), StoreError> {
        let patience = self.timeout.max(ADMIN_MIN_QUERY_TIMEOUT);
        let run = |sql: &str, params: &[P<'_>]| {
            let owned = texts(params);
            let refs: Vec<Option<&str>> = owned.iter().map(Option::as_deref).collect();
            self.conn
                .borrow()
                .query(sql, &refs, patience)
                .map_err(|e| self.err(e))
        };
        let tx = Transaction::begin(self)?;
        run(
            &format!("SET LOCAL statement_timeout = {}", patience.as_millis()),
            &[],
        )?;
        run(
            "SELECT pg_advisory_xact_lock($1::bigint)",
            params![MIGRATION_LOCK],
        )?;
        // Under the lock: another host may have just done it. (Asked before reading it:
        // a failed statement would abort the transaction.)
        let exists = self
            .one_row("SELECT to_regclass('apppass_schema') IS NOT NULL", &[])?
            .is_some_and(|r| r[0].as_deref() == Some("t"));
        let version = if exists {
            match self.version() {
                Ok(v) => v,
                Err(StoreError::Uninitialised(_)) => 0,
                Err(e) => return Err(e),
            }
        } else if self.has_our_tables()? {
            return Err(StoreError::ForeignSchema(self.name.clone()));
        } else {
            0
        };
        for &(number, sql) in MIGRATIONS.iter().filter(|(n, _)| *n > version) {
            self.conn
                .borrow()
                .batch(sql, patience)
                .map_err(|e| self.err(e))?;
            run(
                "UPDATE apppass_schema SET version = $1::integer",
                params![number],
            )?;
        }
        tx.commit()
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.version()
    }

    /// Whether this connection's role may trim the audit log.
    pub fn may_prune(&self) -> bool {
        self.may_prune
    }

    /// One bounded step of [`Store::prune`] (each statement stays within the query
    /// timeout, however far behind the log is): the most rows one of its statements
    /// deleted. Throttle rows, by their indexes: expired ones, and those beyond the bound
    /// (fewer now than when they were written, if the bound was lowered); any role may.
    /// Audit events only if this role may delete them.
    fn prune_some(&self, keep: Retention, now: Timestamp) -> Result<u64, StoreError> {
        let expired = self.query(
            "DELETE FROM throttle WHERE id IN (
                 SELECT id FROM throttle WHERE expires <= $1::bigint
                  ORDER BY expires LIMIT $2::bigint)",
            params![now, PRUNE_BATCH as i64],
        )?;
        let beyond = self.query(
            "DELETE FROM throttle WHERE id IN (
                 SELECT id FROM throttle
                  WHERE id <= (SELECT max(id) FROM throttle) - $1::bigint
                  ORDER BY id LIMIT $2::bigint)",
            params![keep.throttle_rows, PRUNE_BATCH as i64],
        )?;
        let throttle = expired.affected.max(beyond.affected);
        if !self.may_prune {
            return Ok(throttle);
        }
        let events = self.query(
            "DELETE FROM event WHERE id IN (
                 SELECT id FROM event
                  WHERE time < $1::bigint OR id <= (SELECT max(id) FROM event) - $2::bigint
                  ORDER BY id LIMIT $3::bigint)",
            params![
                now.saturating_sub(keep.max_age),
                keep.max_rows,
                PRUNE_BATCH as i64
            ],
        )?;
        Ok(events.affected.max(throttle))
    }

    fn count_active_now(&self, user: &str, now: Timestamp) -> Result<usize, StoreError> {
        let row = self.one_row(
            r#"SELECT count(*) FROM app_password
                WHERE "user" = $1::text AND revoked IS NULL
                  AND (expires IS NULL OR expires > $2::bigint)"#,
            params![user, now],
        )?;
        let n = row.map_or(Ok(0), |r| int(&r[0]))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// `BEGIN`; rolled back unless committed.
struct Transaction<'s> {
    store: &'s PgStore,
    done: bool,
}

impl<'s> Transaction<'s> {
    fn begin(store: &'s PgStore) -> Result<Self, StoreError> {
        store.query("BEGIN", &[])?;
        Ok(Transaction { store, done: false })
    }

    fn commit(mut self) -> Result<(), StoreError> {
        self.done = true;
        self.store.query("COMMIT", &[]).map(|_| ())
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.store.query("ROLLBACK", &[]);
        }
    }
}

impl Store for PgStore {
    /// One prepared statement: one round trip before the hash, however the login turns
    /// out. A connection the server closed (a restart, a failover) is made again and the
    /// question asked once more: a read, so asking twice is harmless.
    fn lookup(&self, q: &LookupQuery<'_>) -> Result<Lookup, StoreError> {
        let host = policy::throttle_host(q.rhost);
        let params = params![q.user, q.selector, host.as_str()];
        let rows = match self.execute(LOOKUP, params) {
            Err(e) if !matches!(e, PqError::Timeout(_)) && self.conn.borrow().is_lost() => {
                self.reconnect()?;
                self.execute(LOOKUP, params)
            }
            other => other,
        };
        let row = rows
            .map_err(|e| self.err(e))?
            .rows
            .into_iter()
            .next()
            .ok_or_else(|| unreadable("empty lookup"))?;
        // The LEFT JOIN's columns are NULL when no row matched.
        let credential = match row[0] {
            None => None,
            Some(_) => Some(credential(&row, 11)?),
        };
        Ok(Lookup {
            credential,
            has_passwords: row[9].as_deref() == Some("t"),
            throttled: opt_int(&row[10])?.is_some_and(|t| t > q.now),
        })
    }

    fn find_by_selector(&self, selector: &str) -> Result<Option<Credential>, StoreError> {
        let row = self.one_row(
            r#"SELECT id, "user", service, label, hash, created, expires, revoked, last_used,
                      owner_uid, networks
                 FROM app_password WHERE selector = $1::text"#,
            params![selector],
        )?;
        row.map(|r| credential(&r, 9)).transpose()
    }

    fn user_has_passwords(&self, user: &str) -> Result<bool, StoreError> {
        let row = self.one_row(
            r#"SELECT EXISTS (SELECT 1 FROM app_password WHERE "user" = $1::text)"#,
            params![user],
        )?;
        Ok(row.is_some_and(|r| r[0].as_deref() == Some("t")))
    }

    fn throttled_until(
        &self,
        user: &str,
        rhost: &str,
        password: Option<i64>,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let host = policy::throttle_host(rhost);
        let row = self.one_row(
            r#"SELECT locked_until FROM throttle
                WHERE "user" = $1::text AND rhost = $2::text AND password_id = $3::bigint"#,
            params![user, host.as_str(), password.unwrap_or(0)],
        )?;
        let until = row.map(|r| opt_int(&r[0])).transpose()?.flatten();
        Ok(until.filter(|&t| t > now))
    }

    /// One prepared statement, so one transaction and one round trip: the usage update
    /// (on success), the audit event, and the throttle (cleared on success, counted on a
    /// guess and kept to `keep.throttle_rows`, counted on a throttled attempt). The audit
    /// log is not trimmed here (the login role may only add to it): apppassd calls
    /// [`Store::prune`] now and then, which the administrators' role does.
    fn record_attempt(
        &self,
        a: &Attempt<'_>,
        throttle: Option<&Throttle>,
        keep: Retention,
    ) -> Result<(), StoreError> {
        let reason = match a.outcome {
            Outcome::Failure { reason, .. } => Some(reason),
            Outcome::Throttled => Some("throttled"),
            Outcome::Success => None,
        };
        let base = params![
            a.at,
            a.user,
            a.service,
            a.rhost,
            a.password_id,
            a.outcome.as_str(),
            reason
        ];
        let host = policy::throttle_host(a.rhost.unwrap_or(""));
        let keyed = || {
            let mut p = base.to_vec();
            p.push(P::Text(&host));
            p
        };
        let done = match (a.outcome, throttle) {
            (Outcome::Success, _) => self.execute(RECORD_SUCCESS, &keyed()),
            (Outcome::Failure { guess: true, .. }, Some(t)) => {
                let mut p = keyed();
                p.extend([
                    P::Int(i64::from(t.failures)),
                    P::Int(t.interval),
                    P::Int(t.lockout),
                    P::Int(keep.throttle_rows),
                ]);
                self.execute(RECORD_GUESS, &p)
            }
            (Outcome::Throttled, _) => self.execute(RECORD_THROTTLED, &keyed()),
            _ => self.execute(RECORD_EVENT, base),
        };
        done.map(|_| ()).map_err(|e| self.err(e))
    }

    fn create(&self, row: &NewRow<'_>) -> Result<i64, StoreError> {
        let result = self.query_raw(
            r#"INSERT INTO app_password
                      ("user", service, label, selector, hash, created, expires, owner_uid,
                       networks)
               VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint, $7::bigint,
                       $8::bigint, $9::text)
               RETURNING id"#,
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
            Ok(rows) => rows
                .rows
                .first()
                .map_or(Err(unreadable("INSERT result")), |r| int(&r[0]))?,
            Err(PqError::Query { sqlstate, .. }) if sqlstate == UNIQUE_VIOLATION => {
                return Err(StoreError::SelectorTaken);
            }
            Err(e) => return Err(self.err(e)),
        };
        self.query(
            r#"DELETE FROM app_password WHERE id IN (
                   SELECT id FROM app_password
                    WHERE "user" = $1::text AND (revoked IS NOT NULL OR expires <= $2::bigint)
                    ORDER BY id DESC OFFSET $3::bigint)"#,
            params![row.user, row.created, KEPT_INACTIVE],
        )?;
        Ok(id)
    }

    fn create_limited(&self, row: &NewRow<'_>, max: usize) -> Result<i64, StoreError> {
        let tx = Transaction::begin(self)?;
        // One user's additions take turns, on every host: counted and created as one.
        self.query(
            "SELECT pg_advisory_xact_lock($1::integer, hashtext($2::text))",
            params![USER_LOCK_CLASS, row.user],
        )?;
        let active = self.count_active_now(row.user, row.created)?;
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
        let tx = Transaction::begin(self)?;
        // Counted and created as one, as create_limited does.
        self.query(
            "SELECT pg_advisory_xact_lock($1::integer, hashtext($2::text))",
            params![USER_LOCK_CLASS, row.user],
        )?;
        let found = self.one_row(
            r#"SELECT "user", service, replaced_by,
                      revoked IS NULL AND (expires IS NULL OR expires > $2::bigint)
                 FROM app_password WHERE id = $1::bigint FOR UPDATE"#,
            params![old, row.created],
        )?;
        let Some(found) = found else {
            return Ok(Regenerated::NotFound);
        };
        let user = text(&found[0])?;
        if user != row.user || matches!(owner, Owner::User(u) if u != user) {
            return Ok(Regenerated::NotFound);
        }
        if let Some(new) = opt_int(&found[2])? {
            return Ok(Regenerated::Already(new));
        }
        let active = found[3].as_deref() == Some("t");
        if let Some(max) = max {
            // The old one stops counting as the new one starts.
            let others = self
                .count_active_now(&user, row.created)?
                .saturating_sub(usize::from(active));
            if others >= max {
                return Err(StoreError::Limit(others));
            }
        }
        // Created first: the trim of old inactive rows that creating does must not take
        // the row being replaced.
        let id = self.create(row)?;
        self.query(
            r#"UPDATE app_password SET revoked = coalesce(revoked, $2::bigint),
                      replaced_by = $3::bigint
                WHERE id = $1::bigint"#,
            params![old, row.created, id],
        )?;
        self.query(
            r#"INSERT INTO event (time, "user", service, password_id, rhost, outcome, reason)
               VALUES ($1::bigint, $2::text, $3::text, $4::bigint, NULL, 'revoked', $5::text)"#,
            params![
                row.created,
                user.as_str(),
                text(&found[1])?.as_str(),
                old,
                super::REGENERATED
            ],
        )?;
        tx.commit()?;
        Ok(Regenerated::New(id))
    }

    fn list(&self, owner: Owner<'_>) -> Result<Vec<Listing>, StoreError> {
        let rows = match owner {
            Owner::Anyone => self.query(
                &format!(r#"SELECT {LISTING_COLUMNS} FROM app_password ORDER BY "user", id"#),
                &[],
            )?,
            Owner::User(u) => self.query(
                &format!(
                    r#"SELECT {LISTING_COLUMNS} FROM app_password WHERE "user" = $1::text ORDER BY id"#
                ),
                params![u],
            )?,
        };
        rows.rows.iter().map(Vec::as_slice).map(listing).collect()
    }

    fn find(&self, id: i64, owner: Owner<'_>) -> Result<Option<Listing>, StoreError> {
        let user = match owner {
            Owner::Anyone => None,
            Owner::User(u) => Some(u),
        };
        let row = self.one_row(
            &format!(
                r#"SELECT {LISTING_COLUMNS} FROM app_password
                    WHERE id = $1::bigint AND ($2::text IS NULL OR "user" = $2::text)"#
            ),
            params![id, user],
        )?;
        row.map(|r| listing(&r)).transpose()
    }

    fn set_networks(&self, id: i64, owner: Owner<'_>, networks: &str) -> Result<bool, StoreError> {
        let user = match owner {
            Owner::Anyone => None,
            Owner::User(u) => Some(u),
        };
        let rows = self.query(
            r#"UPDATE app_password SET networks = $3::text
                WHERE id = $1::bigint AND ($2::text IS NULL OR "user" = $2::text)"#,
            params![id, user, networks],
        )?;
        Ok(rows.affected > 0)
    }

    fn count_active(&self, user: &str, now: Timestamp) -> Result<usize, StoreError> {
        self.count_active_now(user, now)
    }

    fn events(&self, owner: Owner<'_>, limit: usize) -> Result<Vec<Event>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        const COLUMNS: &str = r#"id, time, "user", service, password_id, rhost, outcome, reason"#;
        let rows = match owner {
            Owner::Anyone => self.query(
                &format!("SELECT {COLUMNS} FROM event ORDER BY id DESC LIMIT $1::bigint"),
                params![limit],
            )?,
            Owner::User(u) => self.query(
                &format!(
                    r#"SELECT {COLUMNS} FROM event WHERE "user" = $1::text ORDER BY id DESC LIMIT $2::bigint"#
                ),
                params![u, limit],
            )?,
        };
        rows.rows.iter().map(Vec::as_slice).map(event).collect()
    }

    fn unlock(&self, user: &str, rhost: Option<&str>) -> Result<usize, StoreError> {
        let host = rhost.map(policy::throttle_host);
        let row = self.one_row(
            r#"WITH lifted AS (
                 DELETE FROM throttle
                  WHERE "user" = $1::text AND ($2::text IS NULL OR rhost = $2::text)
                 RETURNING rhost
               )
               SELECT count(DISTINCT rhost) FROM lifted"#,
            params![user, host.as_deref()],
        )?;
        let n = row.map_or(Ok(0), |r| int(&r[0]))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn revoke(
        &self,
        ids: &[i64],
        owner: Owner<'_>,
        at: Timestamp,
    ) -> Result<Vec<(i64, Revoked)>, StoreError> {
        let tx = Transaction::begin(self)?;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let found = self.one_row(
                r#"SELECT "user", revoked FROM app_password WHERE id = $1::bigint FOR UPDATE"#,
                params![id],
            )?;
            let outcome = match found {
                None => Revoked::NotFound,
                Some(r) if matches!(owner, Owner::User(u) if r[0].as_deref() != Some(u)) => {
                    Revoked::NotFound
                }
                Some(r) if r[1].is_some() => Revoked::Already,
                Some(_) => {
                    self.query(
                        "UPDATE app_password SET revoked = $2::bigint WHERE id = $1::bigint",
                        params![id, at],
                    )?;
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
        let rows = self.query(
            r#"UPDATE app_password SET revoked = $2::bigint
                WHERE "user" = $1::text AND revoked IS NULL
                  AND ($3::text IS NULL OR service = $3::text)"#,
            params![user, at, service],
        )?;
        Ok(usize::try_from(rows.affected).unwrap_or(usize::MAX))
    }

    /// Through the function, whatever the role: the administrators' role owns it, and
    /// the login role may do this and nothing else of the kind.
    fn revoke_for_password_change(&self, user: &str, at: Timestamp) -> Result<usize, StoreError> {
        let row = self.one_row(
            "SELECT apppass_revoke_on_password_change($1::text, $2::bigint)",
            params![user, at],
        )?;
        let n = row.map_or(Ok(0), |r| int(&r[0]))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn unadopted(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        // The literal, not a parameter: what lets the planner use the partial index.
        let rows = self.query(
            r#"SELECT DISTINCT "user" FROM app_password WHERE owner_uid = -1 LIMIT $1::bigint"#,
            params![i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        rows.rows.iter().map(|r| text(&r[0])).collect()
    }

    /// Only the administrators' role may (the login role's is "permission denied").
    fn adopt(&self, owners: &[(String, Account)]) -> Result<usize, StoreError> {
        let tx = Transaction::begin(self)?;
        let mut n = 0;
        for (user, owner) in owners {
            let rows = self.query(
                r#"UPDATE app_password SET owner_uid = $2::bigint
                    WHERE "user" = $1::text AND owner_uid = -1"#,
                params![user.as_str(), owner.to_column()],
            )?;
            n += usize::try_from(rows.affected).unwrap_or(usize::MAX);
        }
        tx.commit()?;
        Ok(n)
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        self.version()
    }

    /// The audit log only for a role that may delete audit events (not the login role of
    /// a front end: the administrators' apppassd trims it for every host); the throttle
    /// table for any. At most [`PRUNE_BATCHES`] of [`PRUNE_BATCH`] rows at a time.
    fn prune(&self, keep: Retention, now: Timestamp) -> Result<(), StoreError> {
        for _ in 0..PRUNE_BATCHES {
            if self.prune_some(keep, now)? < PRUNE_BATCH {
                break;
            }
        }
        Ok(())
    }
}
