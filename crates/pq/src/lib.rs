//! A minimal binding of libpq (linked: Debian's libpq5, built against libpq-dev), for
//! apppassd's long-lived connections to PostgreSQL.
//!
//! libpq, not a protocol implementation of our own, so that what administrators know of
//! PostgreSQL clients holds: `service=` (pg_service.conf), the password file, several
//! hosts with `target_session_attrs`, `sslmode` and the `PG*` variables all behave as in
//! psql.
//!
//! The API is synchronous but never waits without a deadline: connecting uses
//! `PQconnectStartParams` + `PQconnectPoll`, and queries run in non-blocking mode
//! (`PQsendQueryParams`, `PQsendQueryPrepared`, `PQflush`, `PQconsumeInput`), all with
//! `poll(2)` on the connection's socket, so that a server that is down or hung costs at
//! most the caller's timeouts. No thread, no runtime, and libpq's notices never reach
//! stderr.

use std::cell::Cell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::time::{Duration, Instant};

#[repr(C)]
struct PgConn {
    _opaque: [u8; 0],
}

#[repr(C)]
struct PgResult {
    _opaque: [u8; 0],
}

type NoticeProcessor = unsafe extern "C" fn(*mut c_void, *const c_char);

/// `PQconninfoOption`, as libpq-fe.h lays it out.
#[repr(C)]
struct ConninfoOption {
    keyword: *mut c_char,
    envvar: *mut c_char,
    compiled: *mut c_char,
    val: *mut c_char,
    label: *mut c_char,
    dispchar: *mut c_char,
    dispsize: c_int,
}

const CONNECTION_BAD: c_int = 1;
const PGRES_POLLING_READING: c_int = 1;
const PGRES_POLLING_WRITING: c_int = 2;
const PGRES_POLLING_OK: c_int = 3;
const PGRES_EMPTY_QUERY: c_int = 0;
const PGRES_COMMAND_OK: c_int = 1;
const PGRES_TUPLES_OK: c_int = 2;
const PG_DIAG_SQLSTATE: c_int = b'C' as c_int;
const PG_DIAG_MESSAGE_PRIMARY: c_int = b'M' as c_int;

// Prototypes as libpq-fe.h (PostgreSQL 15) has them.
#[link(name = "pq")]
unsafe extern "C" {
    fn PQconnectStartParams(
        keywords: *const *const c_char,
        values: *const *const c_char,
        expand_dbname: c_int,
    ) -> *mut PgConn;
    fn PQconnectPoll(conn: *mut PgConn) -> c_int;
    fn PQstatus(conn: *const PgConn) -> c_int;
    fn PQerrorMessage(conn: *const PgConn) -> *const c_char;
    fn PQsocket(conn: *const PgConn) -> c_int;
    fn PQfinish(conn: *mut PgConn);
    fn PQsetNoticeProcessor(
        conn: *mut PgConn,
        proc_: Option<NoticeProcessor>,
        arg: *mut c_void,
    ) -> Option<NoticeProcessor>;
    fn PQconninfo(conn: *mut PgConn) -> *mut ConninfoOption;
    fn PQconninfoFree(options: *mut ConninfoOption);
    fn PQhost(conn: *const PgConn) -> *const c_char;
    fn PQsslInUse(conn: *mut PgConn) -> c_int;
    fn PQsetnonblocking(conn: *mut PgConn, arg: c_int) -> c_int;
    fn PQflush(conn: *mut PgConn) -> c_int;
    fn PQsendQuery(conn: *mut PgConn, query: *const c_char) -> c_int;
    fn PQsendQueryParams(
        conn: *mut PgConn,
        command: *const c_char,
        n_params: c_int,
        param_types: *const u32,
        param_values: *const *const c_char,
        param_lengths: *const c_int,
        param_formats: *const c_int,
        result_format: c_int,
    ) -> c_int;
    fn PQsendPrepare(
        conn: *mut PgConn,
        stmt_name: *const c_char,
        query: *const c_char,
        n_params: c_int,
        param_types: *const u32,
    ) -> c_int;
    fn PQsendQueryPrepared(
        conn: *mut PgConn,
        stmt_name: *const c_char,
        n_params: c_int,
        param_values: *const *const c_char,
        param_lengths: *const c_int,
        param_formats: *const c_int,
        result_format: c_int,
    ) -> c_int;
    fn PQconsumeInput(conn: *mut PgConn) -> c_int;
    fn PQisBusy(conn: *mut PgConn) -> c_int;
    fn PQgetResult(conn: *mut PgConn) -> *mut PgResult;
    fn PQresultStatus(res: *const PgResult) -> c_int;
    fn PQresultErrorField(res: *const PgResult, fieldcode: c_int) -> *const c_char;
    fn PQntuples(res: *const PgResult) -> c_int;
    fn PQnfields(res: *const PgResult) -> c_int;
    fn PQgetvalue(res: *const PgResult, row: c_int, column: c_int) -> *const c_char;
    fn PQgetisnull(res: *const PgResult, row: c_int, column: c_int) -> c_int;
    fn PQcmdTuples(res: *mut PgResult) -> *const c_char;
    fn PQclear(res: *mut PgResult);
}

/// What can go wrong talking to PostgreSQL. Messages never hold a password: libpq's
/// are about hosts, ports, users and databases; for query errors only the primary
/// message is kept (a DETAIL may quote a row, and a row may hold a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PqError {
    /// A parameter holds a NUL byte.
    Nul(&'static str),
    /// The caller refused the connection's settings before anything was sent (why).
    Refused(String),
    /// Connecting failed.
    Connect(String),
    /// No answer before the deadline (`what` says which).
    Timeout(&'static str),
    /// The server refused a query: SQLSTATE and primary message.
    Query { sqlstate: String, message: String },
    /// The connection broke (or an earlier timeout left it unusable).
    Broken(String),
}

impl std::fmt::Display for PqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PqError::Nul(what) => write!(f, "{what} holds a NUL byte"),
            PqError::Refused(why) => f.write_str(why),
            PqError::Connect(m) => write!(f, "cannot connect: {m}"),
            PqError::Timeout(what) => write!(f, "no answer in time ({what})"),
            PqError::Query { sqlstate, message } => write!(f, "{message} (SQLSTATE {sqlstate})"),
            PqError::Broken(m) => write!(f, "connection lost: {m}"),
        }
    }
}

impl std::error::Error for PqError {}

/// libpq's notices (NOTICE, WARNING from the server) are dropped, never printed on
/// stderr, which is libpq's default.
unsafe extern "C" fn ignore_notice(_arg: *mut c_void, _message: *const c_char) {}

/// A query's rows, copied out of libpq: text values, `None` for NULL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    pub rows: Vec<Vec<Option<String>>>,
    /// `PQcmdTuples`: rows inserted, updated or deleted.
    pub affected: u64,
}

/// The settings a connection uses, as libpq resolved them (`PQconninfo`): what the
/// caller gave, then a service file, `PG*` variables and compiled-in defaults. Only
/// keywords with a non-empty value are kept.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Settings(Vec<(String, String)>);

impl Settings {
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Debug for Settings {
    /// Keywords only: values may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

/// Reads a `PQconninfo` array, then frees it.
///
/// # Safety
/// `conn` is a live PGconn.
unsafe fn settings_of(conn: *mut PgConn) -> Settings {
    // SAFETY: a live PGconn (the caller's contract).
    let options = unsafe { PQconninfo(conn) };
    let mut out = Vec::new();
    if options.is_null() {
        return Settings(out);
    }
    let mut p = options;
    loop {
        // SAFETY: `p` points into the array, before or at its terminating entry.
        let o = unsafe { &*p };
        if o.keyword.is_null() {
            break;
        }
        if !o.val.is_null() {
            // SAFETY: keyword and val are NUL-terminated strings of the array.
            let (k, v) = unsafe { (CStr::from_ptr(o.keyword), CStr::from_ptr(o.val)) };
            if !v.is_empty() {
                out.push((
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                ));
            }
        }
        // SAFETY: not the terminating entry, so the next one exists.
        p = unsafe { p.add(1) };
    }
    // SAFETY: the array PQconninfo returned, freed once.
    unsafe { PQconninfoFree(options) };
    Settings(out)
}

/// One connection to PostgreSQL, closed (`PQfinish`) when dropped.
pub struct Connection {
    conn: *mut PgConn,
    /// A timeout or a broken conversation left it in no state to be used again.
    broken: Cell<bool>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: our own PGconn, finished once. In non-blocking mode its goodbye
        // message is sent only if the socket takes it at once: a hung server cannot
        // hold up the drop.
        unsafe { PQfinish(self.conn) };
    }
}

/// A libpq message on one line: no trailing newline, DETAIL/HINT lines left out.
fn tidy(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("DETAIL:") && !l.starts_with("HINT:"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn cstring(value: &str, what: &'static str) -> Result<CString, PqError> {
    CString::new(value).map_err(|_| PqError::Nul(what))
}

/// Waits until `fd` is ready for `events` (POLLIN, POLLOUT), or the deadline passes;
/// returns what it is ready for.
fn wait(
    fd: c_int,
    events: libc::c_short,
    deadline: Instant,
    what: &'static str,
) -> Result<libc::c_short, PqError> {
    if fd < 0 {
        return Err(PqError::Broken("no socket".into()));
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(PqError::Timeout(what));
        }
        // Round up, so that a wait never ends just short of the deadline.
        let ms = c_int::try_from(left.as_millis() + 1).unwrap_or(c_int::MAX);
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one pollfd of ours, for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        match n {
            n if n > 0 => return Ok(pfd.revents),
            0 => continue,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(PqError::Broken(e.to_string()));
                }
            }
        }
    }
}

/// NULL-terminated keyword and value arrays for libpq, and the strings they point to.
struct Params {
    _owned: Vec<CString>,
    keys: Vec<*const c_char>,
    values: Vec<*const c_char>,
}

impl Params {
    fn new(params: &[(&str, &str)]) -> Result<Params, PqError> {
        let mut owned = Vec::with_capacity(2 * params.len());
        let mut keys = Vec::with_capacity(params.len() + 1);
        let mut values = Vec::with_capacity(params.len() + 1);
        for (k, v) in params {
            let k = cstring(k, "a connection keyword")?;
            let v = cstring(v, "a connection parameter")?;
            // A CString's buffer does not move when the CString does.
            keys.push(k.as_ptr());
            values.push(v.as_ptr());
            owned.push(k);
            owned.push(v);
        }
        keys.push(std::ptr::null());
        values.push(std::ptr::null());
        Ok(Params {
            _owned: owned,
            keys,
            values,
        })
    }
}

/// Starts a connection (nothing sent yet but, on a Unix socket, the startup packet: no
/// password); its notices are dropped from the start.
fn start(params: &[(&str, &str)]) -> Result<Connection, PqError> {
    let p = Params::new(params)?;
    // SAFETY: NULL-terminated arrays of NUL-terminated strings that outlive the call;
    // expand_dbname = 1.
    let conn = unsafe { PQconnectStartParams(p.keys.as_ptr(), p.values.as_ptr(), 1) };
    if conn.is_null() {
        return Err(PqError::Connect("out of memory".into()));
    }
    let c = Connection {
        conn,
        broken: Cell::new(false),
    };
    // SAFETY: a live PGconn; the processor is a function of this crate, which is linked
    // into the program for as long as the connection exists.
    unsafe { PQsetNoticeProcessor(c.conn, Some(ignore_notice), std::ptr::null_mut()) };
    // SAFETY: a live PGconn.
    if unsafe { PQstatus(c.conn) } == CONNECTION_BAD {
        return Err(PqError::Connect(c.error_message()));
    }
    Ok(c)
}

/// Drives a started connection to its end, or the deadline.
fn finish(c: Connection, deadline: Instant) -> Result<Connection, PqError> {
    // libpq's protocol: before the first PQconnectPoll, behave as if it said WRITING.
    let mut events = libc::POLLOUT;
    loop {
        wait(c.socket(), events, deadline, "db_connect_timeout")?;
        // SAFETY: a live PGconn.
        match unsafe { PQconnectPoll(c.conn) } {
            PGRES_POLLING_OK => break,
            PGRES_POLLING_READING => events = libc::POLLIN,
            PGRES_POLLING_WRITING => events = libc::POLLOUT,
            _ => return Err(PqError::Connect(c.error_message())),
        }
    }
    // SAFETY: a live PGconn. Non-blocking from now on: libpq never waits on its own.
    if unsafe { PQsetnonblocking(c.conn, 1) } != 0 {
        return Err(PqError::Connect(c.error_message()));
    }
    Ok(c)
}

/// The settings of each host of a multi-host connection, to try one at a time; `None`
/// for one host, or lists this cannot split (libpq ignores an empty value given to
/// override one, so an empty entry in a list of several could not be passed on).
fn hosts(s: &Settings) -> Option<Vec<Vec<(&'static str, String)>>> {
    let split = |k| s.get(k).map(|v| v.split(',').collect::<Vec<_>>());
    let host = split("host").unwrap_or_default();
    let hostaddr = split("hostaddr").unwrap_or_default();
    let port = split("port").unwrap_or_default();
    let n = host.len().max(hostaddr.len());
    if n < 2 {
        return None;
    }
    let pick = |list: &[&str], i: usize| -> Option<Option<String>> {
        match list.len() {
            0 => Some(None),
            1 => Some(Some(list[0].to_string())),
            _ => {
                let v = list.get(i)?;
                (!v.is_empty()).then(|| Some((*v).to_string()))
            }
        }
    };
    (0..n)
        .map(|i| {
            let mut one = Vec::new();
            for (key, list) in [("host", &host), ("hostaddr", &hostaddr), ("port", &port)] {
                if let Some(v) = pick(list, i)? {
                    one.push((key, v));
                }
            }
            Some(one)
        })
        .collect()
}

/// Connects with `params` (keywords and values, in order: a later one overrides an
/// earlier one; a `dbname` that is a URI or `key=value` string is expanded in place).
///
/// `vet` sees the settings libpq resolved (the parameters, a service file, `PG*`
/// variables, defaults) before any password or query is sent, and may refuse them.
///
/// Each host gets `timeout`: with several hosts (`host=a,b`), they are tried one after
/// the other, so that a hung first one costs `timeout` and the next is still tried (libpq
/// itself would wait on the first for as long as the caller lets it). One host with
/// several addresses is one try. Host names are resolved by libpq before the first
/// wait, with the resolver's own timeouts: use addresses (or /etc/hosts) for a bound
/// that holds.
pub fn connect(
    params: &[(&str, &str)],
    timeout: Duration,
    vet: &dyn Fn(&Settings) -> Result<(), String>,
) -> Result<Connection, PqError> {
    let first = start(params)?;
    let settings = first.settings();
    vet(&settings).map_err(PqError::Refused)?;
    let Some(each) = hosts(&settings) else {
        return finish(first, Instant::now() + timeout);
    };
    drop(first);
    let mut errors = Vec::new();
    for one in &each {
        let mut p: Vec<(&str, &str)> = params.to_vec();
        p.extend(one.iter().map(|(k, v)| (*k, v.as_str())));
        let attempt = start(&p).and_then(|c| {
            vet(&c.settings()).map_err(PqError::Refused)?;
            finish(c, Instant::now() + timeout)
        });
        match attempt {
            Ok(c) => return Ok(c),
            Err(e @ (PqError::Refused(_) | PqError::Nul(_))) => return Err(e),
            Err(PqError::Connect(m)) => errors.push(m),
            Err(e) => {
                let at: Vec<&str> = one.iter().map(|(_, v)| v.as_str()).collect();
                errors.push(format!("{}: {e}", at.join(" ")));
            }
        }
    }
    Err(PqError::Connect(errors.join("; ")))
}

impl Connection {
    fn socket(&self) -> c_int {
        // SAFETY: a live PGconn.
        unsafe { PQsocket(self.conn) }
    }

    fn error_message(&self) -> String {
        // SAFETY: a live PGconn; the message is owned by it and copied at once.
        let p = unsafe { PQerrorMessage(self.conn) };
        if p.is_null() {
            return "unknown error".into();
        }
        // SAFETY: non-null, NUL-terminated.
        tidy(&unsafe { CStr::from_ptr(p) }.to_string_lossy())
    }

    /// The settings in use (see [`Settings`]).
    pub fn settings(&self) -> Settings {
        // SAFETY: a live PGconn.
        unsafe { settings_of(self.conn) }
    }

    /// The host connected to: a name, an address, or a Unix socket's directory.
    pub fn host(&self) -> String {
        // SAFETY: a live PGconn; the string is owned by it and copied at once.
        let p = unsafe { PQhost(self.conn) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Whether the connection is encrypted with TLS.
    pub fn ssl_in_use(&self) -> bool {
        // SAFETY: a live PGconn.
        unsafe { PQsslInUse(self.conn) == 1 }
    }

    /// Whether the server has gone (libpq saw the connection close), as opposed to a
    /// query that failed or took too long.
    pub fn is_lost(&self) -> bool {
        // SAFETY: a live PGconn.
        unsafe { PQstatus(self.conn) == CONNECTION_BAD }
    }

    /// One statement with `$1`, `$2`, ... parameters, sent as text (`None`: NULL).
    pub fn query(
        &self,
        sql: &str,
        params: &[Option<&str>],
        timeout: Duration,
    ) -> Result<Rows, PqError> {
        let sql = cstring(sql, "a query")?;
        let values = Values::new(params)?;
        self.run(timeout, || {
            // SAFETY: a live PGconn; `n` text parameters whose pointers (or nulls)
            // outlive the call; no types, lengths or formats (all text); text results.
            unsafe {
                PQsendQueryParams(
                    self.conn,
                    sql.as_ptr(),
                    values.n,
                    std::ptr::null(),
                    values.ptrs.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                )
            }
        })
    }

    /// Prepares `sql` as the statement `name` of this connection (parameter types from
    /// the casts in `sql`).
    pub fn prepare(&self, name: &str, sql: &str, timeout: Duration) -> Result<(), PqError> {
        let name = cstring(name, "a statement name")?;
        let sql = cstring(sql, "a query")?;
        self.run(timeout, || {
            // SAFETY: a live PGconn and NUL-terminated strings that outlive the call;
            // no parameter types (the statement casts its own).
            unsafe { PQsendPrepare(self.conn, name.as_ptr(), sql.as_ptr(), 0, std::ptr::null()) }
        })
        .map(|_| ())
    }

    /// Runs the prepared statement `name` with text parameters (`None`: NULL).
    pub fn execute(
        &self,
        name: &str,
        params: &[Option<&str>],
        timeout: Duration,
    ) -> Result<Rows, PqError> {
        let name = cstring(name, "a statement name")?;
        let values = Values::new(params)?;
        self.run(timeout, || {
            // SAFETY: as in `query`, for a statement prepared on this connection.
            unsafe {
                PQsendQueryPrepared(
                    self.conn,
                    name.as_ptr(),
                    values.n,
                    values.ptrs.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                )
            }
        })
    }

    /// Statements without parameters, several at once (a migration file).
    pub fn batch(&self, sql: &str, timeout: Duration) -> Result<(), PqError> {
        let sql = cstring(sql, "a query")?;
        // SAFETY: a live PGconn and a NUL-terminated query.
        self.run(timeout, || unsafe { PQsendQuery(self.conn, sql.as_ptr()) })
            .map(|_| ())
    }

    /// Sends with `send` (a `PQsend*` call), then waits for every result.
    fn run(&self, timeout: Duration, send: impl FnOnce() -> c_int) -> Result<Rows, PqError> {
        if self.broken.get() {
            return Err(PqError::Broken(
                "an earlier query failed to complete".into(),
            ));
        }
        let deadline = Instant::now() + timeout;
        if send() == 0 {
            return Err(self.lost());
        }
        self.flush(deadline)
            .and_then(|()| self.results(deadline))
            .inspect_err(|e| {
                // Half a conversation (a timeout, a socket error) cannot be resumed; a
                // statement the server refused leaves the connection as it was.
                if !matches!(e, PqError::Query { .. }) {
                    self.broken.set(true);
                }
            })
    }

    fn lost(&self) -> PqError {
        self.broken.set(true);
        PqError::Broken(self.error_message())
    }

    /// Sends what libpq has queued (non-blocking mode leaves it to us).
    fn flush(&self, deadline: Instant) -> Result<(), PqError> {
        loop {
            // SAFETY: a live PGconn.
            match unsafe { PQflush(self.conn) } {
                0 => return Ok(()),
                1 => {
                    // The server may be waiting for us to read before it reads more.
                    let ready = wait(
                        self.socket(),
                        libc::POLLIN | libc::POLLOUT,
                        deadline,
                        "db_query_timeout",
                    )?;
                    // SAFETY: a live PGconn.
                    if ready & libc::POLLIN != 0 && unsafe { PQconsumeInput(self.conn) } == 0 {
                        return Err(self.lost());
                    }
                }
                _ => return Err(self.lost()),
            }
        }
    }

    /// Reads every result of what was sent: the first error, or the last rows.
    fn results(&self, deadline: Instant) -> Result<Rows, PqError> {
        let mut rows = Rows::default();
        let mut error = None;
        loop {
            // SAFETY (this loop's calls): a live PGconn.
            while unsafe { PQisBusy(self.conn) } != 0 {
                wait(self.socket(), libc::POLLIN, deadline, "db_query_timeout")?;
                // SAFETY: a live PGconn.
                if unsafe { PQconsumeInput(self.conn) } == 0 {
                    return Err(self.lost());
                }
            }
            // SAFETY: a live PGconn; not busy, so this does not block.
            let res = unsafe { PQgetResult(self.conn) };
            if res.is_null() {
                break;
            }
            let outcome = self.copy_out(res);
            // SAFETY: the result PQgetResult returned, cleared once, after copy_out.
            unsafe { PQclear(res) };
            match outcome {
                Ok(r) => rows = r,
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// A result's rows as owned strings, or its error.
    fn copy_out(&self, res: *mut PgResult) -> Result<Rows, PqError> {
        let text = |p: *const c_char| -> Option<String> {
            // SAFETY: libpq returns null or a NUL-terminated string owned by the result,
            // which is alive here; copied at once.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        };
        // SAFETY: a live result (this function's contract).
        let status = unsafe { PQresultStatus(res) };
        match status {
            PGRES_TUPLES_OK | PGRES_COMMAND_OK | PGRES_EMPTY_QUERY => {}
            _ => {
                // SAFETY: a live result.
                let sqlstate = text(unsafe { PQresultErrorField(res, PG_DIAG_SQLSTATE) });
                // SAFETY: a live result.
                let message = text(unsafe { PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) })
                    .map(|m| tidy(&m));
                return Err(match (sqlstate, message) {
                    (Some(sqlstate), Some(message)) => PqError::Query { sqlstate, message },
                    // libpq's own errors (the server closed the connection) have none.
                    _ => self.lost(),
                });
            }
        }
        // SAFETY: a live result.
        let (n, m) = unsafe { (PQntuples(res), PQnfields(res)) };
        let mut rows = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        for i in 0..n {
            let mut row = Vec::with_capacity(usize::try_from(m).unwrap_or(0));
            for j in 0..m {
                // SAFETY: i < ntuples and j < nfields of a live result.
                let null = unsafe { PQgetisnull(res, i, j) } != 0;
                // SAFETY: as above.
                row.push(if null {
                    None
                } else {
                    text(unsafe { PQgetvalue(res, i, j) })
                });
            }
            rows.push(row);
        }
        // SAFETY: a live result; an empty string when no rows were affected.
        let affected = text(unsafe { PQcmdTuples(res) })
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        Ok(Rows { rows, affected })
    }
}

/// Text parameters for libpq: the strings, and pointers to them (null for NULL).
struct Values {
    _owned: Vec<Option<CString>>,
    ptrs: Vec<*const c_char>,
    n: c_int,
}

impl Values {
    fn new(params: &[Option<&str>]) -> Result<Values, PqError> {
        let owned: Vec<Option<CString>> = params
            .iter()
            .map(|p| p.map(|v| cstring(v, "a query parameter")).transpose())
            .collect::<Result<_, _>>()?;
        let ptrs: Vec<*const c_char> = owned
            .iter()
            .map(|p| p.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
            .collect();
        let n = c_int::try_from(ptrs.len()).map_err(|_| PqError::Nul("too many parameters"))?;
        Ok(Values {
            _owned: owned,
            ptrs,
            n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn messages_are_one_line_without_details() {
        assert_eq!(
            tidy(
                "connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs the server running on that host?\n"
            ),
            "connection to server at \"127.0.0.1\", port 1 failed: Connection refused; Is the server running on that host?"
        );
        assert_eq!(
            tidy("ERROR:  x\nDETAIL:  Failing row contains (secret).\n"),
            "ERROR:  x"
        );
    }

    #[test]
    fn several_hosts_are_split_into_tries() {
        assert_eq!(hosts(&settings(&[("host", "a"), ("port", "5432")])), None);
        assert_eq!(hosts(&settings(&[])), None);
        let each = hosts(&settings(&[("host", "a,b"), ("port", "5432")])).unwrap();
        assert_eq!(
            each,
            vec![
                vec![("host", "a".to_string()), ("port", "5432".to_string())],
                vec![("host", "b".to_string()), ("port", "5432".to_string())],
            ]
        );
        let each = hosts(&settings(&[
            ("host", "a,b"),
            ("hostaddr", "10.0.0.1,10.0.0.2"),
            ("port", "1,2"),
        ]))
        .unwrap();
        assert_eq!(each[1][1], ("hostaddr", "10.0.0.2".to_string()));
        assert_eq!(each[1][2], ("port", "2".to_string()));
        // An empty entry cannot be passed on as an override: left to libpq whole.
        assert_eq!(hosts(&settings(&[("host", "a,b"), ("port", "1,")])), None);
        assert_eq!(hosts(&settings(&[("host", "a,,b")])), None);
    }

    #[test]
    fn settings_never_show_values() {
        let s = settings(&[("user", "u"), ("password", "s3cret")]);
        assert_eq!(s.get("password"), Some("s3cret"));
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn a_refused_connection_fails_fast() {
        // A port nothing listens on: refused at once, well inside the timeout.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let start = Instant::now();
        let e = connect(
            &[("host", "127.0.0.1"), ("port", &port), ("dbname", "x")],
            Duration::from_secs(5),
            &|_| Ok(()),
        )
        .unwrap_err();
        assert!(matches!(e, PqError::Connect(_)), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_silent_server_costs_the_timeout_per_host() {
        // Accepted by the kernel, never answered: a hung server.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let hung_port = hung.local_addr().unwrap().port().to_string();
        let refused = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let timeout = Duration::from_millis(300);
        let start = Instant::now();
        let e = connect(
            &[
                ("host", "127.0.0.1,127.0.0.1"),
                ("port", &format!("{hung_port},{refused}")),
                ("dbname", "x"),
                ("sslmode", "disable"),
                ("gssencmode", "disable"),
            ],
            timeout,
            &|_| Ok(()),
        )
        .unwrap_err();
        let took = start.elapsed();
        // The second host was tried after the first timed out.
        assert!(took >= timeout && took < 3 * timeout, "{took:?}");
        let text = e.to_string();
        assert!(
            text.contains("db_connect_timeout") && text.contains("refused"),
            "{text}"
        );
    }

    #[test]
    fn vet_sees_resolved_settings_before_anything_is_sent() {
        let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = hung.local_addr().unwrap().port().to_string();
        let seen = std::cell::RefCell::new(None);
        let e = connect(
            &[
                ("host", "127.0.0.1"),
                ("port", &port),
                ("dbname", "postgresql:///x?sslmode=prefer&user=u"),
            ],
            Duration::from_secs(5),
            &|s| {
                *seen.borrow_mut() = Some((
                    s.get("sslmode").map(String::from),
                    s.get("user").map(String::from),
                ));
                Err("no".into())
            },
        )
        .unwrap_err();
        assert_eq!(e, PqError::Refused("no".into()));
        assert_eq!(
            *seen.borrow(),
            Some((Some("prefer".into()), Some("u".into())))
        );
    }
}
