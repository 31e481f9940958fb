//! The module's logic, free of libpam so it can be tested alone: arguments, store
//! lookup, one verification, usage record, outcome. [`crate`] supplies the real
//! [`Host`]; every failure becomes a PAM return code in [`LoginError::code`], and nowhere
//! else.

use std::fmt;
use std::path::Path;

use crate::code::Code;
use zeroize::Zeroizing;

use apppass_core::args::{self, ModuleArgs};
use apppass_core::config::{self, Config};
use apppass_core::policy::{self, Status};
use apppass_core::secret::{self, Candidate};
use apppass_core::store::{
    self, Attempt, Credential, Lookup, LookupQuery, Outcome, Purpose, Retention, Store, StoreError,
};
use apppass_core::time::Timestamp;

/// Syslog priorities the module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

/// What the login logic needs from the application that loaded the module.
pub trait Host {
    /// PAM_USER (asking the application if it is not set yet).
    fn user(&mut self) -> Result<Vec<u8>, Code>;
    /// The password, via `pam_get_authtok` (which honours use_first_pass/try_first_pass).
    fn authtok(&mut self) -> Result<Zeroizing<Vec<u8>>, Code>;
    /// PAM_SERVICE.
    fn service(&self) -> Option<String>;
    /// PAM_RHOST.
    fn rhost(&self) -> Option<String>;
    /// PAM_TTY.
    fn tty(&self) -> Option<String>;
    /// PAM_RUSER.
    fn ruser(&self) -> Option<String>;
    /// The login name of the controlling terminal's user, as pam_unix logs it.
    fn logname(&self) -> Option<String>;
    /// Real and effective uid of the host process.
    fn uids(&self) -> (u32, u32);
    /// One line to syslog (authpriv), prefixed by libpam with `pam_apppass(service:auth)`.
    fn log(&self, level: Level, message: &str);
    /// The time now.
    fn now(&self) -> Timestamp;
}

/// Why a login did not succeed, as recorded in syslog's `reason=` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The input cannot be an app password (length, characters): often the account
    /// password typed where an app password belongs.
    NotAppPassword,
    /// Shaped like an app password, but no such password of this user.
    UnknownPassword,
    /// The password's selector is this user's, the rest is wrong.
    WrongPassword,
    Expired,
    /// Unused for longer than the configured `idle_expiry`.
    Idle,
    Revoked,
    /// Right password, but scoped to another service.
    WrongService,
    /// Too many guesses from this remote host for this user: refused without checking.
    Throttled,
}

impl Reason {
    /// Whether this failure could be someone guessing: only these count toward
    /// throttling. Input that is not an app password cannot succeed whatever it is, and
    /// expired, revoked or out-of-scope passwords were right (a stale device, not a
    /// guesser).
    pub fn is_guess(self) -> bool {
        matches!(self, Reason::WrongPassword | Reason::UnknownPassword)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotAppPassword => "not_app_password",
            Reason::UnknownPassword => "unknown_password",
            Reason::WrongPassword => "wrong_password",
            Reason::Expired => "expired",
            Reason::Idle => "idle",
            Reason::Revoked => "revoked",
            Reason::WrongService => "wrong_service",
            Reason::Throttled => "throttled",
        }
    }
}

/// Everything that can go wrong in a login, one variant per PAM answer family.
#[derive(Debug)]
pub enum LoginError {
    /// A known argument with an unusable value, or an unusable configuration file.
    BadArgs(String),
    /// The user has no app passwords at all: let the next module decide.
    NoAppPasswords,
    /// Wrong, expired, revoked or out of scope.
    Denied { reason: Reason, id: Option<i64> },
    /// The database cannot be used (missing, changeable by others, corrupt, unknown schema, ...).
    Unavailable(String),
    /// libpam or the application failed us (no user, conversation error, ...).
    Host(Code),
    /// A bug: a panic caught at the FFI boundary.
    Internal,
}

impl LoginError {
    /// The one place where outcomes become PAM return codes.
    pub fn code(&self) -> Code {
        match self {
            LoginError::BadArgs(_) => Code::SERVICE_ERR,
            LoginError::NoAppPasswords => Code::USER_UNKNOWN,
            LoginError::Denied { .. } => Code::AUTH_ERR,
            LoginError::Unavailable(_) => Code::AUTHINFO_UNAVAIL,
            // Never PAM_ABORT: it tells the application to give up altogether.
            LoginError::Host(Code::ABORT) => Code::SYSTEM_ERR,
            LoginError::Host(code) => *code,
            LoginError::Internal => Code::SYSTEM_ERR,
        }
    }
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::BadArgs(why) => write!(f, "bad configuration: {why}"),
            LoginError::NoAppPasswords => f.write_str("user has no app passwords"),
            LoginError::Denied { reason, .. } => f.write_str(reason.as_str()),
            LoginError::Unavailable(why) => write!(f, "database unavailable: {why}"),
            LoginError::Host(code) => write!(f, "libpam said {code}"),
            LoginError::Internal => f.write_str("internal error"),
        }
    }
}

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success {
    pub id: i64,
    pub label: String,
}

/// What one login was about, for the log line.
#[derive(Debug, Default)]
struct Subject {
    user: Option<String>,
    service: Option<String>,
    rhost: Option<String>,
}

/// `pam_sm_authenticate`: runs one login and logs its one outcome line.
pub fn authenticate(host: &mut dyn Host, argv: &[&[u8]]) -> Code {
    let mut subject = Subject::default();
    let (result, debug) = match args::parse(argv) {
        Ok(args) => {
            for arg in &args.unknown {
                host.log(
                    Level::Warning,
                    &format!("unknown argument ignored: {}", field(arg)),
                );
            }
            (login(host, &args, &mut subject), args.debug)
        }
        Err(e) => (Err(LoginError::BadArgs(e.0)), false),
    };
    log_outcome(host, &subject, &result, debug);
    match result {
        Ok(_) => Code::SUCCESS,
        Err(e) => e.code(),
    }
}

/// PAM entry -> args -> store lookup -> verify -> record.
fn login(
    host: &mut dyn Host,
    args: &ModuleArgs,
    subject: &mut Subject,
) -> Result<Success, LoginError> {
    let (_, euid) = host.uids();
    let as_root = euid == 0;
    let config = load_config(host, args, as_root)?;
    let db = args.db.as_ref().unwrap_or(&config.db);

    let user_bytes = host.user().map_err(LoginError::Host)?;
    let user = String::from_utf8(user_bytes).ok();
    subject.user = user.clone();
    let service = match &args.service {
        Some(s) => s.clone(),
        None => host.service().ok_or(LoginError::Host(Code::SERVICE_ERR))?,
    };
    subject.service = Some(service.clone());
    subject.rhost = host.rhost();
    if args.debug {
        host.log(
            Level::Debug,
            &format!(
                "db={} scope={} as_root={as_root}",
                field(&db.to_string()),
                field(&service)
            ),
        );
    }

    let password = host.authtok().map_err(LoginError::Host)?;
    let candidate = Candidate::parse(&password);
    drop(password);

    let store = store::open(db, &config.connect, Purpose::Login, as_root)
        .map_err(|e| LoginError::Unavailable(e.to_string()))?;
    let unavailable = |e: StoreError| LoginError::Unavailable(e.to_string());
    let now = host.now();
    let rhost = subject.rhost.clone();
    let attempt = |password_id, outcome| Attempt {
        at: now,
        user: user.as_deref().unwrap_or(""),
        service: &service,
        rhost: rhost.as_deref(),
        password_id,
        outcome,
    };

    let found = match &user {
        Some(u) => store
            .lookup(&LookupQuery {
                user: u,
                selector: candidate.as_ref().map(Candidate::selector),
                rhost: rhost.as_deref().unwrap_or(""),
                now,
            })
            .map_err(unavailable)?,
        None => Lookup {
            credential: None,
            has_passwords: false,
            throttled: false,
        },
    };
    // A throttled (user, host) is refused before any hashing: the point is to stop paying
    // for guesses, and to stop them.
    if found.throttled && config.throttle.is_some() {
        record(host, &*store, &config, &attempt(None, Outcome::Throttled));
        return Err(LoginError::Denied {
            reason: Reason::Throttled,
            id: None,
        });
    }
    let (credential, has_passwords) = (found.credential, found.has_passwords);

    // Exactly one argon2id verification on every path, so that the time taken says
    // nothing about which of them was taken.
    let dummy;
    let hash = match &credential {
        Some(row) => row.hash.as_str(),
        None => {
            dummy =
                secret::dummy_hash(config.hash).map_err(|e| LoginError::BadArgs(e.to_string()))?;
            dummy.as_str()
        }
    };
    let matched = secret::verify(candidate.as_ref(), hash).map_err(|e| {
        LoginError::Unavailable(format!(
            "app password id={}: {e}",
            credential.as_ref().map_or(0, |c| c.id)
        ))
    })?;

    let verdict = judge(
        credential.as_ref(),
        has_passwords,
        candidate.is_some(),
        matched,
        &service,
        &config,
        now,
    );
    // Best effort, after the verdict: a locked, read-only or full database must not turn a
    // right password into a failed login. Users without app passwords leave no trace
    // here (syslog has them): anyone can send any name.
    let id = credential.as_ref().map(|c| c.id);
    match &verdict {
        Ok(_) => record(host, &*store, &config, &attempt(id, Outcome::Success)),
        Err(LoginError::Denied { reason, .. }) => record(
            host,
            &*store,
            &config,
            &attempt(
                id,
                Outcome::Failure {
                    reason: reason.as_str(),
                    guess: reason.is_guess(),
                },
            ),
        ),
        Err(_) => {}
    }
    verdict
}

/// The verdict on one verified attempt.
fn judge(
    credential: Option<&Credential>,
    has_passwords: bool,
    app_shaped: bool,
    matched: bool,
    service: &str,
    config: &Config,
    now: Timestamp,
) -> Result<Success, LoginError> {
    let Some(row) = credential else {
        return Err(if !has_passwords {
            LoginError::NoAppPasswords
        } else if !app_shaped {
            LoginError::Denied {
                reason: Reason::NotAppPassword,
                id: None,
            }
        } else {
            LoginError::Denied {
                reason: Reason::UnknownPassword,
                id: None,
            }
        });
    };
    let denied = |reason| {
        Err(LoginError::Denied {
            reason,
            id: Some(row.id),
        })
    };
    if !matched {
        return denied(Reason::WrongPassword);
    }
    match Status::of(row.dates, config.idle_expiry, now) {
        Status::Revoked => return denied(Reason::Revoked),
        Status::Expired => return denied(Reason::Expired),
        Status::Idle => return denied(Reason::Idle),
        Status::Active => {}
    }
    if !policy::scope_allows(&row.service, service) {
        return denied(Reason::WrongService);
    }
    Ok(Success {
        id: row.id,
        label: row.label.clone(),
    })
}

/// Writes the attempt down (usage, audit, throttle); a failure to do so is logged, not
/// fatal.
fn record(host: &dyn Host, store: &dyn Store, config: &Config, attempt: &Attempt<'_>) {
    let keep = Retention {
        max_age: config.audit_max_age,
        max_rows: config.audit_max_rows,
    };
    if let Err(e) = store.record_attempt(attempt, config.throttle.as_ref(), keep) {
        host.log(
            Level::Warning,
            &format!("could not record the attempt: {e}"),
        );
    }
}

fn load_config(host: &dyn Host, args: &ModuleArgs, as_root: bool) -> Result<Config, LoginError> {
    let (path, explicit) = match &args.conf {
        Some(p) => (p.as_path(), true),
        None => (Path::new(config::DEFAULT_CONFIG), false),
    };
    // A configuration names the database: as root, only root may be able to change it.
    if as_root && (explicit || path.exists()) {
        apppass_proto::trust::check_root_only(path).map_err(|e| {
            LoginError::BadArgs(format!("refusing a configuration others can change: {e}"))
        })?;
    }
    let loaded = Config::load(path, explicit).map_err(|e| LoginError::BadArgs(e.to_string()))?;
    for w in &loaded.warnings {
        host.log(Level::Warning, w);
    }
    Ok(loaded.config)
}

/// The one syslog line of a login, in the shape of pam_unix's:
/// `authentication failure; logname= uid=0 euid=0 tty= ruser= rhost=... user=...`.
fn log_outcome(host: &dyn Host, s: &Subject, result: &Result<Success, LoginError>, debug: bool) {
    let (uid, euid) = host.uids();
    let opt = |v: &Option<String>| v.as_deref().map(field).unwrap_or_default();
    let context = format!(
        "logname={} uid={uid} euid={euid} tty={} ruser={} rhost={} user={} service={}",
        opt(&host.logname()),
        opt(&host.tty()),
        opt(&host.ruser()),
        opt(&s.rhost),
        opt(&s.user),
        opt(&s.service),
    );
    match result {
        Ok(ok) => host.log(
            Level::Info,
            &format!(
                "authentication success; {context} id={} label={}",
                ok.id,
                quoted(&ok.label)
            ),
        ),
        Err(LoginError::Denied { reason, id }) => {
            let id = id.map(|i| format!(" id={i}")).unwrap_or_default();
            host.log(
                Level::Notice,
                &format!(
                    "authentication failure; {context} reason={}{id}",
                    reason.as_str()
                ),
            );
        }
        Err(LoginError::NoAppPasswords) => host.log(
            Level::Notice,
            &format!("authentication failure; {context} reason=no_app_passwords"),
        ),
        Err(e @ (LoginError::Unavailable(_) | LoginError::BadArgs(_) | LoginError::Internal)) => {
            host.log(Level::Err, &format!("{e}; {context}"));
        }
        Err(e @ LoginError::Host(_)) => {
            // Conversation failures (a client that hung up) are routine.
            let level = if debug { Level::Debug } else { Level::Info };
            host.log(level, &format!("no password obtained ({e}); {context}"));
        }
    }
}

/// A value for a `key=value` log field: client-supplied text (user names, host names)
/// must not be able to add fields or lines, so anything but printable ASCII is escaped.
pub fn field(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_graphic() && b != b'\\' && b != b'"' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A free-text value (a label) in double quotes, escaped like [`field`] but keeping spaces.
fn quoted(value: &str) -> String {
    format!("\"{}\"", field(value).replace("\\x20", " "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apppass_core::secret::{HashParams, NewPassword};

    /// Cheap parameters: these tests check logic, not cost.
    const FAST: HashParams = HashParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    use apppass_core::store::NewRow;
    use apppass_core::store::sqlite::SqliteStore;
    use std::cell::RefCell;

    /// A scripted application: what libpam would hand the module.
    struct TestHost {
        user: Vec<u8>,
        password: Vec<u8>,
        service: String,
        rhost: Option<String>,
        now: Timestamp,
        lines: RefCell<Vec<(Level, String)>>,
    }

    impl TestHost {
        fn new(
            user: &[u8],
            password: &[u8],
            service: &str,
            rhost: Option<&str>,
            now: Timestamp,
        ) -> TestHost {
            TestHost {
                user: user.to_vec(),
                password: password.to_vec(),
                service: service.to_string(),
                rhost: rhost.map(str::to_string),
                now,
                lines: RefCell::new(Vec::new()),
            }
        }
    }

    impl Host for TestHost {
        fn user(&mut self) -> Result<Vec<u8>, Code> {
            Ok(self.user.clone())
        }
        fn authtok(&mut self) -> Result<Zeroizing<Vec<u8>>, Code> {
            Ok(Zeroizing::new(self.password.clone()))
        }
        fn service(&self) -> Option<String> {
            Some(self.service.clone())
        }
        fn rhost(&self) -> Option<String> {
            self.rhost.clone()
        }
        fn tty(&self) -> Option<String> {
            None
        }
        fn ruser(&self) -> Option<String> {
            None
        }
        fn logname(&self) -> Option<String> {
            None
        }
        fn uids(&self) -> (u32, u32) {
            (1000, 1000)
        }
        fn log(&self, level: Level, message: &str) {
            self.lines.borrow_mut().push((level, message.to_string()));
        }
        fn now(&self) -> Timestamp {
            self.now
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        db: String,
        conf: String,
        password: String,
        id: i64,
    }

    /// A database with one app password of alice (cheap hash: logic is under test here).
    fn fixture(service: &str, expires: Option<Timestamp>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let store = SqliteStore::init(&db).unwrap();
        let pw = NewPassword::generate().unwrap();
        let hash = pw.hash(FAST).unwrap();
        let id = store
            .create(&NewRow {
                user: "alice",
                service,
                label: "mail app",
                selector: pw.selector(),
                hash: &hash,
                created: 1,
                expires,
            })
            .unwrap();
        let conf = dir.path().join("apppass.conf");
        std::fs::write(&conf, "").unwrap();
        Fixture {
            db: db.display().to_string(),
            conf: conf.display().to_string(),
            password: pw.display().to_string(),
            id,
            _dir: dir,
        }
    }

    fn run(
        f: &Fixture,
        user: &str,
        password: &[u8],
        service: &str,
    ) -> (Code, Vec<(Level, String)>) {
        run_from(f, user, password, service, "203.0.113.9", 1000)
    }

    fn run_from(
        f: &Fixture,
        user: &str,
        password: &[u8],
        service: &str,
        rhost: &str,
        now: Timestamp,
    ) -> (Code, Vec<(Level, String)>) {
        let mut host = TestHost::new(user.as_bytes(), password, service, Some(rhost), now);
        let db = format!("db={}", f.db);
        let conf = format!("conf={}", f.conf);
        let code = authenticate(&mut host, &[db.as_bytes(), conf.as_bytes()]);
        (code, host.lines.into_inner())
    }

    #[test]
    fn right_password_in_any_spelling() {
        let f = fixture("imap", None);
        for form in [
            f.password.clone(),
            f.password.to_uppercase().replace('-', " "),
            f.password.replace('-', ""),
        ] {
            let (code, lines) = run(&f, "alice", form.as_bytes(), "imap");
            assert_eq!(code, Code::SUCCESS, "{lines:?}");
            let last = &lines.last().unwrap().1;
            assert!(last.starts_with("authentication success; logname= uid=1000 euid=1000 tty= ruser= rhost=203.0.113.9 user=alice service=imap id="), "{last}");
            assert!(
                last.ends_with(&format!("id={} label=\"mail app\"", f.id)),
                "{last}"
            );
        }
        let store = SqliteStore::open(Path::new(&f.db), Purpose::Admin, false).unwrap();
        let l = &store.list(apppass_core::store::Owner::Anyone).unwrap()[0];
        assert_eq!(
            (
                l.use_count,
                l.last_used,
                l.last_rhost.as_deref(),
                l.last_service.as_deref()
            ),
            (3, Some(1000), Some("203.0.113.9"), Some("imap"))
        );
    }

    fn expect_denied(f: &Fixture, user: &str, pw: &[u8], service: &str, code: Code, reason: &str) {
        let (got, lines) = run(f, user, pw, service);
        assert_eq!(got, code, "{lines:?}");
        let last = &lines.last().unwrap().1;
        assert!(last.starts_with("authentication failure; "), "{last}");
        assert!(last.contains(&format!(" reason={reason}")), "{last}");
        let secret_part = &f.password.replace('-', "")[secret::SELECTOR_LEN..];
        for (_, line) in &lines {
            assert!(
                !line.contains(secret_part) && !line.contains(&f.password),
                "secret logged: {line}"
            );
        }
    }

    #[test]
    fn failures_say_why() {
        let f = fixture("imap", None);
        let other = NewPassword::generate().unwrap().display().to_string();
        let mut wrong_secret = f.password.clone();
        let last = wrong_secret.pop().unwrap();
        wrong_secret.push(if last == 'z' { 'y' } else { 'z' });
        let auth = Code::AUTH_ERR;
        expect_denied(
            &f,
            "alice",
            wrong_secret.as_bytes(),
            "imap",
            auth,
            "wrong_password",
        );
        expect_denied(
            &f,
            "alice",
            other.as_bytes(),
            "imap",
            auth,
            "unknown_password",
        );
        expect_denied(&f, "alice", b"hunter2", "imap", auth, "not_app_password");
        expect_denied(&f, "alice", b"", "imap", auth, "not_app_password");
        expect_denied(
            &f,
            "alice",
            &vec![b'a'; 1 << 20],
            "imap",
            auth,
            "not_app_password",
        );
        expect_denied(&f, "alice", b"\xff\xfe", "imap", auth, "not_app_password");
        expect_denied(
            &f,
            "alice",
            f.password.as_bytes(),
            "pop3",
            auth,
            "wrong_service",
        );
        // Another user presenting alice's password: as if it did not exist.
        let unknown = Code::USER_UNKNOWN;
        expect_denied(
            &f,
            "bob",
            f.password.as_bytes(),
            "imap",
            unknown,
            "no_app_passwords",
        );
        expect_denied(
            &f,
            "bob\u{fffd}",
            f.password.as_bytes(),
            "imap",
            unknown,
            "no_app_passwords",
        );
    }

    #[test]
    fn expired_and_revoked() {
        let f = fixture("imap", Some(999));
        expect_denied(
            &f,
            "alice",
            f.password.as_bytes(),
            "imap",
            Code::AUTH_ERR,
            "expired",
        );
        let f = fixture("imap", None);
        let store = SqliteStore::open(Path::new(&f.db), Purpose::Admin, false).unwrap();
        store
            .revoke(&[f.id], apppass_core::store::Owner::Anyone, 5)
            .unwrap();
        expect_denied(
            &f,
            "alice",
            f.password.as_bytes(),
            "imap",
            Code::AUTH_ERR,
            "revoked",
        );
    }

    #[test]
    fn wildcard_scope_opens_every_service() {
        let f = fixture("*", None);
        for service in ["imap", "pop3", "sshd"] {
            assert_eq!(
                run(&f, "alice", f.password.as_bytes(), service).0,
                Code::SUCCESS
            );
        }
    }

    #[test]
    fn bad_arguments_and_databases() {
        let f = fixture("imap", None);
        let mut host = TestHost::new(b"alice", f.password.as_bytes(), "imap", None, 1000);
        assert_eq!(
            authenticate(&mut host, &[b"db=relative"]),
            Code::SERVICE_ERR
        );
        assert_eq!(
            authenticate(&mut host, &[b"conf=/nonexistent/apppass.conf"]),
            Code::SERVICE_ERR
        );
        assert_eq!(
            authenticate(&mut host, &[b"db=/nonexistent/a.db"]),
            Code::AUTHINFO_UNAVAIL
        );
        let lines = host.lines.borrow();
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == Level::Err && m.contains("does not exist")),
            "{lines:?}"
        );
    }

    #[test]
    fn unknown_arguments_are_logged_not_fatal() {
        let f = fixture("imap", None);
        let mut host = TestHost::new(b"alice", f.password.as_bytes(), "imap", None, 1000);
        let db = format!("db={}", f.db);
        assert_eq!(
            authenticate(&mut host, &[db.as_bytes(), b"frobnicate"]),
            Code::SUCCESS
        );
        assert!(
            host.lines
                .borrow()
                .iter()
                .any(|(l, m)| *l == Level::Warning && m == "unknown argument ignored: frobnicate")
        );
    }

    #[test]
    fn log_fields_cannot_be_forged() {
        assert_eq!(field("alice"), "alice");
        assert_eq!(field("a rhost=1.2.3.4"), "a\\x20rhost=1.2.3.4");
        assert_eq!(field("x\ny"), "x\\x0ay");
        assert_eq!(field("é"), "\\xc3\\xa9");
        assert_eq!(quoted("my \"phone\""), "\"my \\x22phone\\x22\"");
    }

    /// alice's right password, from `rhost` at `now`.
    fn right(f: &Fixture, rhost: &str, now: Timestamp) -> (Code, Vec<(Level, String)>) {
        run_from(f, "alice", f.password.as_bytes(), "imap", rhost, now)
    }

    #[test]
    fn guesses_throttle_one_host_only() {
        let f = fixture("imap", None);
        std::fs::write(
            &f.conf,
            "throttle_failures = 3\nthrottle_interval = 10m\nthrottle_lockout = 1h\n",
        )
        .unwrap();
        let guess = NewPassword::generate().unwrap().display().to_string();
        for _ in 0..3 {
            let (code, _) = run_from(&f, "alice", guess.as_bytes(), "imap", "198.51.100.66", 1000);
            assert_eq!(code, Code::AUTH_ERR);
        }
        // The right password from the guessing host: refused, without hashing.
        let (code, lines) = right(&f, "198.51.100.66", 1001);
        assert_eq!(code, Code::AUTH_ERR);
        assert!(
            lines.last().unwrap().1.contains("reason=throttled"),
            "{lines:?}"
        );
        // Her other devices keep working, and the lock ends by itself.
        assert_eq!(right(&f, "203.0.113.5", 1001).0, Code::SUCCESS);
        assert_eq!(right(&f, "198.51.100.66", 1000 + 3601).0, Code::SUCCESS);
        // Typing the account password (not app-shaped) is not guessing.
        for _ in 0..5 {
            let (code, _) = run_from(&f, "alice", b"account password", "imap", "192.0.2.8", 9000);
            assert_eq!(code, Code::AUTH_ERR);
        }
        assert_eq!(right(&f, "192.0.2.8", 9001).0, Code::SUCCESS);
    }

    #[test]
    fn idle_passwords_stop_working() {
        let f = fixture("imap", None);
        std::fs::write(&f.conf, "idle_expiry = 1h\n").unwrap();
        // Created at 1: used at 1000, still within the hour; then unused for an hour.
        assert_eq!(right(&f, "192.0.2.1", 1000).0, Code::SUCCESS);
        assert_eq!(right(&f, "192.0.2.1", 4599).0, Code::SUCCESS);
        let (code, lines) = right(&f, "192.0.2.1", 4599 + 3600);
        assert_eq!(code, Code::AUTH_ERR);
        assert!(lines.last().unwrap().1.contains("reason=idle"), "{lines:?}");
    }

    #[test]
    fn attempts_reach_the_audit_log() {
        let f = fixture("imap", None);
        run(&f, "alice", f.password.as_bytes(), "imap");
        run(&f, "alice", f.password.as_bytes(), "pop3");
        run(&f, "mallory", f.password.as_bytes(), "imap");
        let store = SqliteStore::open(Path::new(&f.db), Purpose::Admin, false).unwrap();
        let events = store
            .events(apppass_core::store::Owner::Anyone, 10)
            .unwrap();
        let seen: Vec<(&str, &str, Option<&str>, Option<i64>)> = events
            .iter()
            .map(|e| {
                (
                    e.user.as_str(),
                    e.outcome.as_str(),
                    e.reason.as_deref(),
                    e.password_id,
                )
            })
            .collect();
        // Newest first; mallory (no app passwords) leaves no event.
        assert_eq!(
            seen,
            [
                ("alice", "failure", Some("wrong_service"), Some(f.id)),
                ("alice", "success", None, Some(f.id))
            ]
        );
        assert_eq!(events[1].rhost.as_deref(), Some("203.0.113.9"));
    }
}
