//! A minimal libpq binding, loaded on demand.
//!
//! libpq is not linked into the module: it would bring libpq, OpenSSL, GSSAPI and LDAP
//! into every sshd and Dovecot login, SQLite users' included. It is `dlopen`ed
//! (`libpq.so.5`, RTLD_NOW | RTLD_LOCAL) only when a PostgreSQL database is used, and
//! `dlclose`d when the [`Connection`] is dropped. libcrypto pins itself in memory the
//! first time it is initialised (OpenSSL 3 does so on purpose, for its atexit handler):
//! that is one mapping for the life of the process, not growth (tests/leaks.rs counts).
//!
//! The API is synchronous but never waits without a deadline: connecting uses
//! `PQconnectStartParams` + `PQconnectPoll` and queries `PQsendQueryParams` +
//! `PQconsumeInput`, both with `poll(2)` on the connection's socket, so that a server
//! that is down or hung costs at most the configured timeouts. No thread, no runtime,
//! and libpq's notices never reach the host's stderr.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::time::{Duration, Instant};

/// libpq's soname on Debian (package libpq5).
pub const LIBPQ: &CStr = c"libpq.so.5";

type PgConn = c_void;
type PgResult = c_void;
type NoticeProcessor = unsafe extern "C" fn(*mut c_void, *const c_char);

const CONNECTION_BAD: c_int = 1;
const PGRES_POLLING_FAILED: c_int = 0;
const PGRES_POLLING_READING: c_int = 1;
const PGRES_POLLING_WRITING: c_int = 2;
const PGRES_POLLING_OK: c_int = 3;
const PGRES_EMPTY_QUERY: c_int = 0;
const PGRES_COMMAND_OK: c_int = 1;
const PGRES_TUPLES_OK: c_int = 2;
const PG_DIAG_SQLSTATE: c_int = b'C' as c_int;
const PG_DIAG_MESSAGE_PRIMARY: c_int = b'M' as c_int;

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

/// Declares [`Api`], the libpq functions apppass uses (field, symbol, C prototype as
/// libpq-fe.h has it), and `resolve`, which finds them all in one `dlopen` handle.
macro_rules! api {
    ($($field:ident: $symbol:literal => $ty:ty,)*) => {
        struct Api {
            $($field: $ty,)*
        }

        /// The functions, or the name of the first one missing.
        fn resolve(handle: *mut c_void) -> Result<Api, &'static str> {
            Ok(Api {
                $($field: {
                    // SAFETY: a live handle and a NUL-terminated symbol name.
                    let p = unsafe { libc::dlsym(handle, concat!($symbol, "\0").as_ptr().cast()) };
                    if p.is_null() {
                        return Err($symbol);
                    }
                    // SAFETY: the symbol is libpq's function of that name, whose C
                    // prototype the type spells out.
                    unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
                },)*
            })
        }
    };
}

api! {
    connect_start_params: "PQconnectStartParams" =>
        unsafe extern "C" fn(*const *const c_char, *const *const c_char, c_int) -> *mut PgConn,
    connect_poll: "PQconnectPoll" => unsafe extern "C" fn(*mut PgConn) -> c_int,
    status: "PQstatus" => unsafe extern "C" fn(*const PgConn) -> c_int,
    error_message: "PQerrorMessage" => unsafe extern "C" fn(*const PgConn) -> *const c_char,
    socket: "PQsocket" => unsafe extern "C" fn(*const PgConn) -> c_int,
    finish: "PQfinish" => unsafe extern "C" fn(*mut PgConn),
    set_notice_processor: "PQsetNoticeProcessor" => unsafe extern "C" fn(
        *mut PgConn,
        Option<NoticeProcessor>,
        *mut c_void,
    ) -> Option<NoticeProcessor>,
    conninfo: "PQconninfo" => unsafe extern "C" fn(*mut PgConn) -> *mut ConninfoOption,
    conninfo_free: "PQconninfoFree" => unsafe extern "C" fn(*mut ConninfoOption),
    send_query: "PQsendQuery" => unsafe extern "C" fn(*mut PgConn, *const c_char) -> c_int,
    send_query_params: "PQsendQueryParams" => unsafe extern "C" fn(
        *mut PgConn,
        *const c_char,
        c_int,
        *const u32,
        *const *const c_char,
        *const c_int,
        *const c_int,
        c_int,
    ) -> c_int,
    consume_input: "PQconsumeInput" => unsafe extern "C" fn(*mut PgConn) -> c_int,
    is_busy: "PQisBusy" => unsafe extern "C" fn(*mut PgConn) -> c_int,
    get_result: "PQgetResult" => unsafe extern "C" fn(*mut PgConn) -> *mut PgResult,
    result_status: "PQresultStatus" => unsafe extern "C" fn(*const PgResult) -> c_int,
    result_error_field: "PQresultErrorField" =>
        unsafe extern "C" fn(*const PgResult, c_int) -> *const c_char,
    ntuples: "PQntuples" => unsafe extern "C" fn(*const PgResult) -> c_int,
    nfields: "PQnfields" => unsafe extern "C" fn(*const PgResult) -> c_int,
    getvalue: "PQgetvalue" => unsafe extern "C" fn(*const PgResult, c_int, c_int) -> *const c_char,
    getisnull: "PQgetisnull" => unsafe extern "C" fn(*const PgResult, c_int, c_int) -> c_int,
    cmd_tuples: "PQcmdTuples" => unsafe extern "C" fn(*mut PgResult) -> *const c_char,
    clear: "PQclear" => unsafe extern "C" fn(*mut PgResult),
}

/// libpq, loaded; unloaded when dropped.
struct Library {
    handle: *mut c_void,
    api: Api,
}

fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl* call.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (see above); copied at once.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

impl Library {
    fn load() -> Result<Library, PqError> {
        // SAFETY: a constant NUL-terminated name; libpq's constructors are libpq's own.
        let handle = unsafe { libc::dlopen(LIBPQ.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(PqError::Load(format!(
                "{} (install libpq5 to use a PostgreSQL database)",
                dl_error()
            )));
        }
        let api = resolve(handle).map_err(|missing| {
            // SAFETY: the handle from dlopen above, closed once.
            unsafe { libc::dlclose(handle) };
            PqError::Load(format!("libpq.so.5 has no {missing}"))
        })?;
        Ok(Library { handle, api })
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: the handle from dlopen, closed once; nothing of libpq is used after
        // (Connection finishes its PGconn before its Library is dropped).
        unsafe { libc::dlclose(self.handle) };
    }
}

/// What can go wrong talking to PostgreSQL. Messages never hold a password: libpq's
/// are about hosts, ports, users and databases; for query errors only the primary
/// message is kept (a DETAIL may quote a row, and a row may hold a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PqError {
    /// libpq could not be loaded.
    Load(String),
    /// A parameter holds a NUL byte.
    Nul(&'static str),
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
            PqError::Load(m) => write!(f, "cannot load libpq: {m}"),
            PqError::Nul(what) => write!(f, "{what} holds a NUL byte"),
            PqError::Connect(m) => write!(f, "cannot connect: {m}"),
            PqError::Timeout(what) => write!(f, "no answer in time ({what})"),
            PqError::Query { sqlstate, message } => write!(f, "{message} (SQLSTATE {sqlstate})"),
            PqError::Broken(m) => write!(f, "connection lost: {m}"),
        }
    }
}

impl std::error::Error for PqError {}

/// libpq's notices (NOTICE, WARNING from the server) are dropped, never printed on the
/// host's stderr, which is libpq's default.
unsafe extern "C" fn ignore_notice(_arg: *mut c_void, _message: *const c_char) {}

/// A query's rows, copied out of libpq: text values, `None` for NULL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    pub rows: Vec<Vec<Option<String>>>,
    /// `PQcmdTuples`: rows inserted, updated or deleted.
    pub affected: u64,
}

/// One connection to PostgreSQL. Dropping it closes the connection (`PQfinish`), then
/// unloads libpq.
pub struct Connection {
    conn: *mut PgConn,
    /// A timeout or a lost connection left it in no state to be used again.
    broken: std::cell::Cell<bool>,
    lib: Library,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: our own PGconn, finished once, before `lib` (a later field) unloads it.
        unsafe { (self.lib.api.finish)(self.conn) };
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

#[derive(Clone, Copy)]
enum Wait {
    Read,
    Write,
}

/// Waits until `fd` is ready, or the deadline passes.
fn wait(fd: c_int, how: Wait, deadline: Instant, what: &'static str) -> Result<(), PqError> {
    if fd < 0 {
        return Err(PqError::Broken("no socket".into()));
    }
    let events = match how {
        Wait::Read => libc::POLLIN,
        Wait::Write => libc::POLLOUT,
    };
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
            n if n > 0 => return Ok(()),
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

/// Connects with `params` (keywords and values, in order: a later one overrides an
/// earlier one; a `dbname` that is a URI or `key=value` string is expanded in place),
/// giving up after `timeout`.
///
/// Host names are resolved by libpq before the first wait, with the resolver's own
/// timeouts: use addresses (or /etc/hosts) for a bound that holds.
pub fn connect(params: &[(&str, &str)], timeout: Duration) -> Result<Connection, PqError> {
    let deadline = Instant::now() + timeout;
    let mut keys = Vec::with_capacity(params.len());
    let mut values = Vec::with_capacity(params.len());
    for (k, v) in params {
        keys.push(cstring(k, "a connection keyword")?);
        values.push(cstring(v, "a connection parameter")?);
    }
    let mut key_ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
    let mut value_ptrs: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
    key_ptrs.push(std::ptr::null());
    value_ptrs.push(std::ptr::null());
    let lib = Library::load()?;
    // SAFETY: NULL-terminated arrays of NUL-terminated strings that outlive the call;
    // expand_dbname = 1.
    let conn = unsafe { (lib.api.connect_start_params)(key_ptrs.as_ptr(), value_ptrs.as_ptr(), 1) };
    if conn.is_null() {
        return Err(PqError::Connect("out of memory".into()));
    }
    let c = Connection {
        conn,
        broken: std::cell::Cell::new(false),
        lib,
    };
    // SAFETY: a live PGconn; the processor is a function of this module, which stays
    // loaded while the connection exists (the connection never outlives a login).
    unsafe { (c.lib.api.set_notice_processor)(c.conn, Some(ignore_notice), std::ptr::null_mut()) };
    // SAFETY: a live PGconn.
    if unsafe { (c.lib.api.status)(c.conn) } == CONNECTION_BAD {
        return Err(PqError::Connect(c.error_message()));
    }
    // libpq's protocol: before the first PQconnectPoll, behave as if it said WRITING.
    let mut how = Wait::Write;
    loop {
        wait(c.socket(), how, deadline, "db_connect_timeout")?;
        // SAFETY: a live PGconn.
        match unsafe { (c.lib.api.connect_poll)(c.conn) } {
            PGRES_POLLING_OK => return Ok(c),
            PGRES_POLLING_READING => how = Wait::Read,
            PGRES_POLLING_WRITING => how = Wait::Write,
            PGRES_POLLING_FAILED => return Err(PqError::Connect(c.error_message())),
            _ => return Err(PqError::Connect(c.error_message())),
        }
    }
}

impl Connection {
    fn socket(&self) -> c_int {
        // SAFETY: a live PGconn.
        unsafe { (self.lib.api.socket)(self.conn) }
    }

    fn error_message(&self) -> String {
        // SAFETY: a live PGconn; the message is owned by it and copied at once.
        let p = unsafe { (self.lib.api.error_message)(self.conn) };
        if p.is_null() {
            return "unknown error".into();
        }
        // SAFETY: non-null, NUL-terminated.
        tidy(&unsafe { CStr::from_ptr(p) }.to_string_lossy())
    }

    /// Whether a password reached the connection through its parameters (a service
    /// file, PGPASSWORD), rather than through the password file.
    pub fn password_in_parameters(&self) -> bool {
        // SAFETY: a live PGconn; the array it returns ends with a null keyword and is
        // freed once below.
        let options = unsafe { (self.lib.api.conninfo)(self.conn) };
        if options.is_null() {
            return false;
        }
        let mut found = false;
        let mut p = options;
        loop {
            // SAFETY: `p` points into the array, before or at its terminating entry.
            let o = unsafe { &*p };
            if o.keyword.is_null() {
                break;
            }
            // SAFETY: keyword is a NUL-terminated string of the array.
            if unsafe { CStr::from_ptr(o.keyword) } == c"password" && !o.val.is_null() {
                // SAFETY: val is a NUL-terminated string of the array.
                found = !unsafe { CStr::from_ptr(o.val) }.is_empty();
            }
            // SAFETY: not the terminating entry, so the next one exists.
            p = unsafe { p.add(1) };
        }
        // SAFETY: the array PQconninfo returned, freed once.
        unsafe { (self.lib.api.conninfo_free)(options) };
        found
    }

    /// One statement with `$1`, `$2`, ... parameters, sent as text (`None`: NULL).
    pub fn query(
        &self,
        sql: &str,
        params: &[Option<&str>],
        timeout: Duration,
    ) -> Result<Rows, PqError> {
        self.usable()?;
        let deadline = Instant::now() + timeout;
        let sql = cstring(sql, "a query")?;
        let owned: Vec<Option<CString>> = params
            .iter()
            .map(|p| p.map(|v| cstring(v, "a query parameter")).transpose())
            .collect::<Result<_, _>>()?;
        let ptrs: Vec<*const c_char> = owned
            .iter()
            .map(|p| p.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
            .collect();
        let n = c_int::try_from(ptrs.len()).map_err(|_| PqError::Nul("too many parameters"))?;
        // SAFETY: a live PGconn; `n` text parameters whose pointers (or nulls) outlive the
        // call; no types, lengths or formats (all text); text results.
        let sent = unsafe {
            (self.lib.api.send_query_params)(
                self.conn,
                sql.as_ptr(),
                n,
                std::ptr::null(),
                ptrs.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                0,
            )
        };
        if sent == 0 {
            return Err(self.lost());
        }
        self.results(deadline)
    }

    /// Statements without parameters, several at once (a migration file).
    pub fn batch(&self, sql: &str, timeout: Duration) -> Result<(), PqError> {
        self.usable()?;
        let deadline = Instant::now() + timeout;
        let sql = cstring(sql, "a query")?;
        // SAFETY: a live PGconn and a NUL-terminated query.
        if unsafe { (self.lib.api.send_query)(self.conn, sql.as_ptr()) } == 0 {
            return Err(self.lost());
        }
        self.results(deadline).map(|_| ())
    }

    fn usable(&self) -> Result<(), PqError> {
        if self.broken.get() {
            return Err(PqError::Broken(
                "an earlier query failed to complete".into(),
            ));
        }
        Ok(())
    }

    fn lost(&self) -> PqError {
        self.broken.set(true);
        PqError::Broken(self.error_message())
    }

    /// Reads every result of what was sent: the first error, or the last rows.
    fn results(&self, deadline: Instant) -> Result<Rows, PqError> {
        let api = &self.lib.api;
        let mut rows = Rows::default();
        let mut error = None;
        loop {
            // SAFETY (this block and the loop's calls): a live PGconn.
            while unsafe { (api.is_busy)(self.conn) } != 0 {
                if let Err(e) = wait(self.socket(), Wait::Read, deadline, "db_query_timeout") {
                    self.broken.set(true);
                    return Err(e);
                }
                // SAFETY: a live PGconn.
                if unsafe { (api.consume_input)(self.conn) } == 0 {
                    return Err(self.lost());
                }
            }
            // SAFETY: a live PGconn; not busy, so this does not block.
            let res = unsafe { (api.get_result)(self.conn) };
            if res.is_null() {
                break;
            }
            let outcome = self.copy_out(res);
            // SAFETY: the result PQgetResult returned, cleared once, after copy_out.
            unsafe { (api.clear)(res) };
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
        let api = &self.lib.api;
        let text = |p: *const c_char| -> Option<String> {
            // SAFETY: libpq returns null or a NUL-terminated string owned by the result,
            // which is alive here; copied at once.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        };
        // SAFETY: a live result (this function's contract).
        let status = unsafe { (api.result_status)(res) };
        match status {
            PGRES_TUPLES_OK | PGRES_COMMAND_OK | PGRES_EMPTY_QUERY => {}
            _ => {
                // SAFETY: a live result.
                let sqlstate = text(unsafe { (api.result_error_field)(res, PG_DIAG_SQLSTATE) });
                // SAFETY: a live result.
                let message =
                    text(unsafe { (api.result_error_field)(res, PG_DIAG_MESSAGE_PRIMARY) })
                        .map(|m| tidy(&m));
                return Err(match (sqlstate, message) {
                    (Some(sqlstate), Some(message)) => PqError::Query { sqlstate, message },
                    _ => self.lost(),
                });
            }
        }
        // SAFETY: a live result.
        let (n, m) = unsafe { ((api.ntuples)(res), (api.nfields)(res)) };
        let mut rows = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        for i in 0..n {
            let mut row = Vec::with_capacity(usize::try_from(m).unwrap_or(0));
            for j in 0..m {
                // SAFETY: i < ntuples and j < nfields of a live result.
                let null = unsafe { (api.getisnull)(res, i, j) } != 0;
                // SAFETY: as above.
                row.push(if null {
                    None
                } else {
                    text(unsafe { (api.getvalue)(res, i, j) })
                });
            }
            rows.push(row);
        }
        // SAFETY: a live result; an empty string when no rows were affected.
        let affected = text(unsafe { (api.cmd_tuples)(res) })
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        Ok(Rows { rows, affected })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_refused_connection_fails_fast() {
        if Library::load().is_err() {
            eprintln!("SKIPPED (libpq5 not installed)");
            return;
        }
        // A port nothing listens on: refused at once, well inside the timeout.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let port = port.to_string();
        let start = Instant::now();
        let e = connect(
            &[("host", "127.0.0.1"), ("port", &port), ("dbname", "x")],
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(matches!(e, PqError::Connect(_)), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
