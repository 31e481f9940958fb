//! `apppass`: create, list and revoke app passwords. See apppass(1).
//!
//! Installed setuid root (like passwd), it acts for whoever runs it: the user comes from
//! the real uid, paths are the built-in ones, the environment is emptied, and root's
//! powers are taken up only around the database work. Root and members of the
//! configured admin group manage everyone's app passwords.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use apppass_core::config::{self, Config};
use apppass_core::policy::{self, Status};
use apppass_core::secret::NewPassword;
use apppass_core::store::{
    self, Event, Listing, Location, NewRow, Owner, Purpose, Retention, Revoked, Store, StoreError,
};
use apppass_core::time::{self, Timestamp};
use clap::{Args, Parser, Subcommand};
use pam_apppass as ffi;
use pam_apppass::login::field;
use serde_json::json;

/// Exit codes, documented in apppass(1).
mod exit {
    pub const OK: u8 = 0;
    /// The database or the system failed.
    pub const FAILURE: u8 = 1;
    /// Bad command line or bad values (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// An id that does not exist (or is not yours).
    pub const NOT_FOUND: u8 = 3;
    /// Not allowed: another user's app passwords, a limit, a privileged-only option.
    pub const DENIED: u8 = 4;
}

/// How many times to draw a new password when its selector is already taken.
const SELECTOR_TRIES: usize = 8;

#[derive(Parser, Debug)]
#[command(
    name = "apppass",
    version,
    about = "Create, list and revoke app passwords: per-service passwords for mail clients, phones and tools",
    after_help = "Exit status: 0 success, 1 database or system failure, 2 bad usage, 3 no such app password,\n4 not allowed. See apppass(1)."
)]
struct Cli {
    /// Database: an SQLite file, or a PostgreSQL connection string without a password
    /// [default: from the configuration, else /var/lib/apppass/apppass.db]
    #[arg(long, global = true, value_name = "PATH|CONNINFO")]
    db: Option<String>,
    /// Configuration file [default: /etc/security/apppass.conf, if present]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the database (directory 0700, file 0600) or bring its schema up to date
    Init,
    /// Create an app password and show it, once
    Add(AddArgs),
    /// Show app passwords: service, label, dates, status and last use (never a secret)
    List(ListArgs),
    /// Revoke app passwords by id, or all of a user's
    Revoke(RevokeArgs),
    /// Show recent logins and failures
    Log(LogArgs),
    /// Lift throttling after too many wrong guesses
    Unlock(UnlockArgs),
    /// Check a service's PAM stack (is pam_apppass wired in, in which mode and scope) and its database
    Doctor(DoctorArgs),
}

#[derive(Args, Debug)]
struct AddArgs {
    /// Whose app password [default: you]
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// The one service it opens (imap, pop3, submission, sshd, ...), or '*' for all
    #[arg(long, value_name = "NAME")]
    service: String,
    /// What it is for, to recognise it later ("Thunderbird on the laptop")
    #[arg(long, value_name = "TEXT", default_value = "")]
    label: String,
    /// When it stops working: a duration (30s, 12h, 90d, 2w) or an ISO 8601 date
    /// [default: the configuration's default_lifetime, else never]
    #[arg(long, value_name = "DURATION|DATE")]
    expires: Option<String>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Only this user's [default: yours]
    #[arg(long, value_name = "USER", conflicts_with = "all")]
    user: Option<String>,
    /// Every user's
    #[arg(long)]
    all: bool,
    /// Print a JSON array instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["ids", "all"]))]
struct RevokeArgs {
    /// Ids to revoke (from apppass list)
    #[arg(value_name = "ID", conflicts_with_all = ["all", "user", "service"])]
    ids: Vec<i64>,
    /// Revoke every active app password of --user (default: yours)
    #[arg(long)]
    all: bool,
    /// Whose app passwords (with --all)
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Only those for this service (with --all)
    #[arg(long, value_name = "NAME", requires = "all")]
    service: Option<String>,
}

#[derive(Args, Debug)]
struct LogArgs {
    /// Only this user's [default: yours]
    #[arg(long, value_name = "USER", conflicts_with = "all")]
    user: Option<String>,
    /// Every user's
    #[arg(long)]
    all: bool,
    /// How many events, newest first
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,
    /// Print a JSON array instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct UnlockArgs {
    /// Whose logins [default: yours]
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Only from this remote host [default: every host]
    #[arg(long, value_name = "HOST")]
    rhost: Option<String>,
}

#[derive(Args, Debug)]
struct DoctorArgs {
    /// The PAM service (imap, pop3, submission, sshd, ...) [default: every service using pam_apppass]
    #[arg(value_name = "SERVICE")]
    service: Option<String>,
    /// Read this file as the service's PAM configuration (includes still come from --pam-dir)
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Directory of PAM service files
    #[arg(long, value_name = "DIR", default_value = crate::doctor::PAM_DIR)]
    pam_dir: PathBuf,
}

/// What can go wrong in the CLI; each renders as one line.
#[derive(Debug)]
enum CliError {
    Usage(String),
    Config(config::ConfigError),
    Store(StoreError),
    NotFound(String),
    Denied(String),
    Other(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => exit::USAGE,
            CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::Denied(_) => exit::DENIED,
            CliError::Store(_) | CliError::Other(_) => exit::FAILURE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m)
            | CliError::NotFound(m)
            | CliError::Denied(m)
            | CliError::Other(m) => f.write_str(m),
            CliError::Config(e) => e.fmt(f),
            CliError::Store(e) => e.fmt(f),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::Store(e)
    }
}

/// Who runs the command, with which powers, against which database.
struct Session {
    /// The invoking user (from the real uid, never from the environment or options).
    actor: String,
    ruid: u32,
    /// Running setuid root on the actor's behalf: root's powers only around the database.
    setuid: bool,
    /// May manage every user's app passwords.
    admin: bool,
    config: Config,
    db: Location,
}

impl Session {
    fn start(cli: &Cli) -> Result<Session, CliError> {
        let (ruid, euid) = ffi::uids();
        let setuid = euid == 0 && ruid != 0;
        if setuid {
            ffi::clear_environment().map_err(|e| CliError::Other(e.to_string()))?;
            if cli.db.is_some() || cli.config.is_some() {
                return Err(CliError::Denied(
                    "--db and --config are for root: run by a user, apppass uses the system's database".into(),
                ));
            }
            // Until the database work: the caller's own powers.
            ffi::set_effective_uid(ruid)
                .map_err(|e| CliError::Other(format!("cannot drop privileges: {e}")))?;
        }
        let actor = ffi::user_name(ruid)
            .ok_or_else(|| CliError::Other(format!("uid {ruid} has no user name")))?;
        let (conf_path, explicit) = match &cli.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(config::DEFAULT_CONFIG), false),
        };
        let mut session = Session {
            actor,
            ruid,
            setuid,
            admin: false,
            config: Config::default(),
            db: Location::Sqlite(PathBuf::new()),
        };
        let loaded = session.privileged(|| {
            // A setuid program takes its database and admin group from this file: only
            // root may be able to change it.
            if setuid && conf_path.exists() {
                apppass_proto::trust::check_root_only(&conf_path).map_err(|e| {
                    CliError::Denied(format!("refusing a configuration others can change: {e}"))
                })?;
            }
            Config::load(&conf_path, explicit).map_err(CliError::Config)
        })?;
        for w in &loaded.warnings {
            eprintln!("apppass: warning: {w}");
        }
        session.config = loaded.config;
        session.db = match &cli.db {
            Some(db) => Location::parse(db).map_err(CliError::Usage)?,
            None => session.config.db.clone(),
        };
        // Without setuid, the database file's own permissions decide who may do what.
        session.admin = !setuid
            || session
                .config
                .admin_group
                .as_deref()
                .is_some_and(ffi::in_group);
        Ok(session)
    }

    /// Runs `f` with root's powers if this is a setuid run, the caller's otherwise.
    fn privileged<T>(&self, f: impl FnOnce() -> Result<T, CliError>) -> Result<T, CliError> {
        if !self.setuid {
            return f();
        }
        ffi::set_effective_uid(0)
            .map_err(|e| CliError::Other(format!("cannot regain privileges: {e}")))?;
        let result = f();
        ffi::set_effective_uid(self.ruid)
            .map_err(|e| CliError::Other(format!("cannot drop privileges: {e}")))?;
        result
    }

    /// Opens the database for `purpose` and runs `f` on it, with the powers the database
    /// needs.
    fn with_store<T>(
        &self,
        purpose: Purpose,
        f: impl FnOnce(&dyn Store) -> Result<T, CliError>,
    ) -> Result<T, CliError> {
        self.privileged(|| {
            let as_root = ffi::uids().1 == 0;
            let store = store::open(&self.db, &self.config.connect, purpose, as_root)?;
            f(&*store)
        })
    }

    /// The user a command is about: `requested`, or the actor. Only admins may name
    /// someone else.
    fn target<'a>(&'a self, requested: Option<&'a str>) -> Result<&'a str, CliError> {
        let user = requested.unwrap_or(&self.actor);
        if user != self.actor && !self.admin {
            return Err(CliError::Denied(format!(
                "only root or the admin group may manage {user}'s app passwords"
            )));
        }
        Ok(user)
    }

    /// Whose rows a command may touch.
    fn owner(&self) -> Owner<'_> {
        if self.admin {
            Owner::Anyone
        } else {
            Owner::User(&self.actor)
        }
    }

    fn audit(&self, message: &str) {
        ffi::cli_syslog(
            libc::LOG_INFO,
            &format!("{message} by={}", field(&self.actor)),
        );
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("apppass: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    // Before the CLI's own configuration is read: the doctor reports on the configuration
    // and database the PAM files name, a broken one included.
    if let Command::Doctor(a) = &cli.command {
        if cli.db.is_some() || cli.config.is_some() {
            return Err(CliError::Usage(
                "doctor checks the database and configuration the PAM files name; --db and --config do not apply".into(),
            ));
        }
        let (ruid, euid) = ffi::uids();
        if euid == 0 && ruid != 0 {
            // A user's doctor learns nothing root-only: run it with the user's powers.
            ffi::clear_environment().map_err(|e| CliError::Other(e.to_string()))?;
            ffi::set_effective_uid(ruid)
                .map_err(|e| CliError::Other(format!("cannot drop privileges: {e}")))?;
        }
        return match doctor(a, &mut io::stdout().lock()) {
            Err(CliError::Other(m)) if m == BROKEN_PIPE => Ok(()),
            other => other,
        };
    }
    let session = Session::start(&cli)?;
    let mut out = io::stdout().lock();
    let result = match cli.command {
        Command::Init => init(&session, &mut out),
        Command::Add(a) => add(&session, a, &mut out),
        Command::List(a) => list(&session, a, &mut out),
        Command::Revoke(a) => revoke(&session, a, &mut out),
        Command::Log(a) => log(&session, a, &mut out),
        Command::Unlock(a) => unlock(&session, a, &mut out),
        Command::Doctor(_) => unreachable!("handled above"),
    };
    match result {
        Err(CliError::Other(m)) if m == BROKEN_PIPE => Ok(()),
        other => other,
    }
}

const BROKEN_PIPE: &str = "broken pipe";

/// Output errors: a closed pipe (`apppass list | head`) is not a failure.
fn io_err(e: io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::Other(BROKEN_PIPE.into())
    } else {
        CliError::Other(format!("cannot write output: {e}"))
    }
}

fn init(s: &Session, out: &mut impl Write) -> Result<(), CliError> {
    if !s.admin {
        return Err(CliError::Denied(
            "only root or the admin group may initialise the database".into(),
        ));
    }
    let version = s.privileged(|| {
        let as_root = ffi::uids().1 == 0;
        let store = store::init(&s.db, &s.config.connect, as_root)?;
        // PostgreSQL's logins cannot trim the audit log: this does (for SQLite too).
        let keep = Retention {
            max_age: s.config.audit_max_age,
            max_rows: s.config.audit_max_rows,
        };
        store.prune(keep, time::now())?;
        Ok(store.schema_version()?)
    })?;
    writeln!(out, "{}: ready (schema version {version})", s.db).map_err(io_err)
}

/// When a new app password expires, within the configured lifetimes.
fn expiry(
    config: &Config,
    requested: Option<&str>,
    now: Timestamp,
) -> Result<Option<Timestamp>, CliError> {
    let expires = match requested {
        Some(text) => {
            Some(time::parse_expiry(text, now).map_err(|e| CliError::Usage(e.to_string()))?)
        }
        None => config
            .default_lifetime
            .or(config.max_lifetime)
            .map(|d| now.saturating_add(d)),
    };
    if expires.is_some_and(|e| e <= now) {
        return Err(CliError::Usage("--expires is in the past".into()));
    }
    if let Some(max) = config.max_lifetime {
        if expires.is_none_or(|e| e > now.saturating_add(max)) {
            return Err(CliError::Denied(format!(
                "app passwords may live at most {} (max_lifetime in the configuration): give a shorter --expires",
                time::format_duration(max)
            )));
        }
    }
    Ok(expires)
}

fn add(s: &Session, a: AddArgs, out: &mut impl Write) -> Result<(), CliError> {
    let user = s.target(a.user.as_deref())?.to_string();
    policy::check_user(&user).map_err(CliError::Usage)?;
    policy::check_service(&a.service).map_err(CliError::Usage)?;
    policy::check_label(&a.label).map_err(CliError::Usage)?;
    if !s.config.services.is_empty() && !s.config.services.contains(&a.service) {
        return Err(CliError::Denied(format!(
            "app passwords may be made only for: {} (services in the configuration)",
            s.config.services.join(", ")
        )));
    }
    let now = time::now();
    let expires = expiry(&s.config, a.expires.as_deref(), now)?;
    let mut tries = 0;
    let (id, password) = loop {
        let password = NewPassword::generate().map_err(|e| CliError::Other(e.to_string()))?;
        let hash = password
            .hash(s.config.hash)
            .map_err(|e| CliError::Other(e.to_string()))?;
        let row = NewRow {
            user: &user,
            service: &a.service,
            label: &a.label,
            selector: password.selector(),
            hash: &hash,
            created: now,
            expires,
        };
        let created = s.with_store(Purpose::Admin, |store| {
            Ok(match s.config.max_passwords {
                Some(max) => store.create_limited(&row, usize::try_from(max).unwrap_or(usize::MAX)),
                None => store.create(&row),
            })
        })?;
        match created {
            Ok(id) => break (id, password),
            Err(StoreError::SelectorTaken) if tries + 1 < SELECTOR_TRIES => tries += 1,
            Err(StoreError::Limit(n)) => {
                return Err(CliError::Denied(format!(
                    "{user} already has {n} active app passwords, the most allowed (max_passwords in the configuration): revoke one first"
                )));
            }
            Err(e) => return Err(e.into()),
        }
    };
    s.audit(&format!(
        "app password added: id={id} user={} service={}",
        field(&user),
        field(&a.service)
    ));
    let shown = password.display();
    let expires_text = expires.map(time::format_iso8601);
    if a.json {
        let obj = json!({
            "id": id,
            "user": user,
            "service": a.service,
            "label": a.label,
            "created": time::format_iso8601(now),
            "expires": expires_text,
            "password": shown.as_str(),
        });
        let text = zeroize::Zeroizing::new(obj.to_string());
        return writeln!(out, "{}", text.as_str()).map_err(io_err);
    }
    let scope = if a.service == policy::ANY_SERVICE {
        "every service".to_string()
    } else {
        format!("service {}", a.service)
    };
    let label = if a.label.is_empty() {
        String::new()
    } else {
        format!(", \"{}\"", a.label)
    };
    writeln!(
        out,
        "New app password for {user}, {scope} (id {id}{label}):\n\n    {}\n\n\
         Enter it in the application instead of your account password, with user name {user}.\n\
         Spaces and dashes are optional, and capitals are fine.\n\
         It is shown only this once. Lost it? Revoke it (apppass revoke {id}) and add another.\n\
         Expires: {}",
        shown.as_str(),
        expires_text.as_deref().unwrap_or("never"),
    )
    .map_err(io_err)
}

fn list(s: &Session, a: ListArgs, out: &mut impl Write) -> Result<(), CliError> {
    let user = s.target(a.user.as_deref())?;
    if a.all && !s.admin {
        return Err(CliError::Denied(
            "only root or the admin group may list everyone's app passwords".into(),
        ));
    }
    let owner = if a.all {
        Owner::Anyone
    } else {
        Owner::User(user)
    };
    let rows = s.with_store(Purpose::Read, |store| Ok(store.list(owner)?))?;
    let now = time::now();
    let idle = s.config.idle_expiry;
    if a.json {
        let items: Vec<_> = rows.iter().map(|r| listing_json(r, idle, now)).collect();
        return writeln!(out, "{}", serde_json::Value::Array(items)).map_err(io_err);
    }
    if rows.is_empty() {
        let whose = if a.all { "anyone" } else { user };
        let hint = if a.all || !s.admin {
            ""
        } else {
            " (--all lists everyone's)"
        };
        return writeln!(out, "No app passwords for {whose}{hint}.").map_err(io_err);
    }
    print_table(&rows, idle, now, out).map_err(io_err)
}

fn listing_json(r: &Listing, idle: Option<i64>, now: Timestamp) -> serde_json::Value {
    json!({
        "id": r.id,
        "user": r.user,
        "service": r.service,
        "label": r.label,
        "created": time::format_iso8601(r.created),
        "expires": r.expires.map(time::format_iso8601),
        "revoked": r.revoked.map(time::format_iso8601),
        "status": Status::of(r.dates(), idle, now).as_str(),
        "last_used": r.last_used.map(time::format_iso8601),
        "last_rhost": r.last_rhost,
        "last_service": r.last_service,
        "use_count": r.use_count,
        "never_used": r.last_used.is_none(),
    })
}

/// Prints rows under a header, each column as wide as its widest cell.
fn print_columns<const N: usize>(
    header: [&str; N],
    rows: &[[String; N]],
    out: &mut impl Write,
) -> io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[String]| -> io::Result<()> {
        let mut text = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            text.push_str(&format!("{cell:<w$}  "));
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&header.map(String::from))?;
    for row in rows {
        line(row)?;
    }
    Ok(())
}

fn dash(s: &Option<String>) -> String {
    s.clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

fn print_table(
    rows: &[Listing],
    idle: Option<i64>,
    now: Timestamp,
    out: &mut impl Write,
) -> io::Result<()> {
    let header = [
        "ID",
        "USER",
        "SERVICE",
        "LABEL",
        "CREATED",
        "EXPIRES",
        "STATUS",
        "LAST USED",
        "FROM",
        "VIA",
        "USES",
    ];
    let table: Vec<[String; 11]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.user.clone(),
                r.service.clone(),
                if r.label.is_empty() {
                    "-".into()
                } else {
                    r.label.clone()
                },
                time::format_iso8601(r.created),
                r.expires
                    .map_or_else(|| "never".into(), time::format_iso8601),
                Status::of(r.dates(), idle, now).as_str().into(),
                r.last_used
                    .map_or_else(|| "never used".into(), time::format_iso8601),
                dash(&r.last_rhost),
                dash(&r.last_service),
                r.use_count.to_string(),
            ]
        })
        .collect();
    print_columns(header, &table, out)
}

fn doctor(a: &DoctorArgs, out: &mut impl Write) -> Result<(), CliError> {
    use crate::doctor::{self, Level};
    let options = doctor::Options {
        pam_dir: a.pam_dir.clone(),
        service: a.service.clone(),
        file: a.file.clone(),
        module_dirs: doctor::default_module_dirs(),
        as_root: ffi::uids().1 == 0,
    };
    let reports = doctor::run(&options).map_err(|e| CliError::Usage(e.to_string()))?;
    write!(out, "{}", doctor::render(&reports)).map_err(io_err)?;
    let problems: usize = reports.iter().map(|r| r.count(Level::Problem)).sum();
    if problems == 0 {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "{problems} problem(s) found (see above)"
        )))
    }
}

fn revoke(s: &Session, a: RevokeArgs, out: &mut impl Write) -> Result<(), CliError> {
    let now = time::now();
    if a.all {
        let user = s.target(a.user.as_deref())?;
        if let Some(svc) = &a.service {
            policy::check_service(svc).map_err(CliError::Usage)?;
        }
        let n = s.with_store(Purpose::Admin, |store| {
            Ok(store.revoke_all(user, a.service.as_deref(), now)?)
        })?;
        s.audit(&format!(
            "app passwords revoked: count={n} user={} service={}",
            field(user),
            field(a.service.as_deref().unwrap_or("*"))
        ));
        let scope = a
            .service
            .map(|svc| format!(" for {svc}"))
            .unwrap_or_default();
        return writeln!(out, "Revoked {n} app password(s) of {user}{scope}.").map_err(io_err);
    }
    let results = s.with_store(Purpose::Admin, |store| {
        Ok(store.revoke(&a.ids, s.owner(), now)?)
    })?;
    let mut missing = Vec::new();
    for (id, outcome) in results {
        match outcome {
            Revoked::Now => {
                s.audit(&format!("app password revoked: id={id}"));
                writeln!(out, "Revoked {id}.").map_err(io_err)?;
            }
            Revoked::Already => writeln!(out, "{id} was already revoked.").map_err(io_err)?,
            Revoked::NotFound => missing.push(id.to_string()),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        let whose = if s.admin { "" } else { " of yours" };
        Err(CliError::NotFound(format!(
            "no app password{whose} with id {}",
            missing.join(", ")
        )))
    }
}

fn log(s: &Session, a: LogArgs, out: &mut impl Write) -> Result<(), CliError> {
    let user = s.target(a.user.as_deref())?;
    if a.all && !s.admin {
        return Err(CliError::Denied(
            "only root or the admin group may read everyone's log".into(),
        ));
    }
    let owner = if a.all {
        Owner::Anyone
    } else {
        Owner::User(user)
    };
    let events = s.with_store(Purpose::Read, |store| Ok(store.events(owner, a.limit)?))?;
    if a.json {
        let items: Vec<_> = events.iter().map(event_json).collect();
        return writeln!(out, "{}", serde_json::Value::Array(items)).map_err(io_err);
    }
    if events.is_empty() {
        return writeln!(
            out,
            "No logins recorded for {}.",
            if a.all { "anyone" } else { user }
        )
        .map_err(io_err);
    }
    let header = [
        "TIME", "USER", "SERVICE", "OUTCOME", "REASON", "PASSWORD", "FROM",
    ];
    let rows: Vec<[String; 7]> = events
        .iter()
        .map(|e| {
            [
                time::format_iso8601(e.time),
                e.user.clone(),
                e.service.clone(),
                e.outcome.clone(),
                dash(&e.reason),
                e.password_id
                    .map_or_else(|| "-".into(), |id| id.to_string()),
                dash(&e.rhost),
            ]
        })
        .collect();
    print_columns(header, &rows, out).map_err(io_err)
}

fn event_json(e: &Event) -> serde_json::Value {
    json!({
        "time": time::format_iso8601(e.time),
        "user": e.user,
        "service": e.service,
        "outcome": e.outcome,
        "reason": e.reason,
        "password_id": e.password_id,
        "rhost": e.rhost,
    })
}

fn unlock(s: &Session, a: UnlockArgs, out: &mut impl Write) -> Result<(), CliError> {
    let user = s.target(a.user.as_deref())?;
    let n = s.with_store(Purpose::Admin, |store| {
        Ok(store.unlock(user, a.rhost.as_deref())?)
    })?;
    s.audit(&format!(
        "throttling lifted: user={} rhost={}",
        field(user),
        field(a.rhost.as_deref().unwrap_or("*"))
    ));
    let from = a.rhost.map(|h| format!(" from {h}")).unwrap_or_default();
    writeln!(out, "Lifted throttling of {user}{from} ({n} host(s)).").map_err(io_err)
}
