//! `apppass`: create, list and revoke app passwords. See apppass(1).

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pam_apppass::config::{self, Config};
use pam_apppass::ffi;
use pam_apppass::policy::{self, Status};
use pam_apppass::secret::NewPassword;
use pam_apppass::store::sqlite::{Purpose, SqliteStore};
use pam_apppass::store::{Listing, NewRow, Owner, Revoked, Store, StoreError};
use pam_apppass::time::{self, Timestamp};
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
}

/// How many times to draw a new password when its selector is already taken.
const SELECTOR_TRIES: usize = 8;

#[derive(Parser, Debug)]
#[command(
    name = "apppass",
    version,
    about = "Create, list and revoke app passwords: per-service passwords for mail clients, phones and tools",
    after_help = "Exit status: 0 success, 1 database or system failure, 2 bad usage, 3 no such app password.\nSee apppass(1)."
)]
struct Cli {
    /// Database file [default: from the configuration, else /var/lib/apppass/apppass.db]
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
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
    /// Revoke every active app password of --user
    #[arg(long, requires = "user")]
    all: bool,
    /// Whose app passwords (with --all)
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Only those for this service (with --all)
    #[arg(long, value_name = "NAME", requires = "all")]
    service: Option<String>,
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
    #[arg(long, value_name = "DIR", default_value = pam_apppass::doctor::PAM_DIR)]
    pam_dir: PathBuf,
}

/// What can go wrong in the CLI; each renders as one line.
#[derive(Debug)]
enum CliError {
    Usage(String),
    Config(config::ConfigError),
    Store(StoreError),
    NotFound(String),
    Other(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => exit::USAGE,
            CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::Store(_) | CliError::Other(_) => exit::FAILURE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::NotFound(m) | CliError::Other(m) => f.write_str(m),
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

/// Who is running the command.
struct Actor {
    name: String,
}

impl Actor {
    fn current() -> Result<Actor, CliError> {
        let (uid, _) = ffi::uids();
        let name = ffi::user_name(uid)
            .ok_or_else(|| CliError::Other(format!("uid {uid} has no user name")))?;
        Ok(Actor { name })
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
        return match doctor(a, &mut io::stdout().lock()) {
            Err(CliError::Other(m)) if m == BROKEN_PIPE => Ok(()),
            other => other,
        };
    }
    let (conf_path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(config::DEFAULT_CONFIG), false),
    };
    let loaded = Config::load(&conf_path, explicit).map_err(CliError::Config)?;
    for w in &loaded.warnings {
        eprintln!("apppass: warning: {w}");
    }
    let config = loaded.config;
    let db = cli.db.clone().unwrap_or_else(|| config.db.clone());
    let mut out = io::stdout().lock();
    let result = match cli.command {
        Command::Init => init(&db, &mut out),
        Command::Add(a) => add(&db, &config, a, &mut out),
        Command::List(a) => list(&db, a, &mut out),
        Command::Revoke(a) => revoke(&db, a, &mut out),
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

fn open(db: &Path) -> Result<SqliteStore, CliError> {
    let (_, euid) = ffi::uids();
    Ok(SqliteStore::open(db, Purpose::Admin, euid == 0)?)
}

fn init(db: &Path, out: &mut impl Write) -> Result<(), CliError> {
    let store = SqliteStore::init(db)?;
    let version = store.schema_version()?;
    writeln!(out, "{}: ready (schema version {version})", db.display()).map_err(io_err)
}

fn add(db: &Path, config: &Config, a: AddArgs, out: &mut impl Write) -> Result<(), CliError> {
    let actor = Actor::current()?;
    let user = a.user.unwrap_or_else(|| actor.name.clone());
    policy::check_user(&user).map_err(CliError::Usage)?;
    policy::check_service(&a.service).map_err(CliError::Usage)?;
    policy::check_label(&a.label).map_err(CliError::Usage)?;
    let now = time::now();
    let expires = a
        .expires
        .as_deref()
        .map(|e| time::parse_expiry(e, now))
        .transpose()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if expires.is_some_and(|e| e <= now) {
        return Err(CliError::Usage("--expires is in the past".into()));
    }
    let store = open(db)?;
    let mut tries = 0;
    let (id, password) = loop {
        let password = NewPassword::generate().map_err(|e| CliError::Other(e.to_string()))?;
        let hash = password
            .hash(config.hash)
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
        match store.create(&row) {
            Ok(id) => break (id, password),
            Err(StoreError::SelectorTaken) if tries + 1 < SELECTOR_TRIES => tries += 1,
            Err(e) => return Err(e.into()),
        }
    };
    ffi::cli_syslog(
        libc::LOG_INFO,
        &format!(
            "app password added: id={id} user={} service={} by={}",
            pam_apppass::pam::field(&user),
            pam_apppass::pam::field(&a.service),
            pam_apppass::pam::field(&actor.name)
        ),
    );
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

fn list(db: &Path, a: ListArgs, out: &mut impl Write) -> Result<(), CliError> {
    let actor = Actor::current()?;
    let user = a.user.unwrap_or_else(|| actor.name.clone());
    let owner = if a.all {
        Owner::Anyone
    } else {
        Owner::User(&user)
    };
    let store = open(db)?;
    let rows = store.list(owner)?;
    let now = time::now();
    if a.json {
        let items: Vec<_> = rows.iter().map(|r| listing_json(r, now)).collect();
        return writeln!(out, "{}", serde_json::Value::Array(items)).map_err(io_err);
    }
    if rows.is_empty() {
        let whose = if a.all { "anyone".to_string() } else { user };
        let hint = if a.all {
            ""
        } else {
            " (--all lists everyone's)"
        };
        return writeln!(out, "No app passwords for {whose}{hint}.").map_err(io_err);
    }
    print_table(&rows, now, out).map_err(io_err)
}

fn listing_json(r: &Listing, now: Timestamp) -> serde_json::Value {
    json!({
        "id": r.id,
        "user": r.user,
        "service": r.service,
        "label": r.label,
        "created": time::format_iso8601(r.created),
        "expires": r.expires.map(time::format_iso8601),
        "revoked": r.revoked.map(time::format_iso8601),
        "status": Status::at(r.expires, r.revoked, now).as_str(),
        "last_used": r.last_used.map(time::format_iso8601),
        "last_rhost": r.last_rhost,
        "last_service": r.last_service,
        "use_count": r.use_count,
    })
}

fn print_table(rows: &[Listing], now: Timestamp, out: &mut impl Write) -> io::Result<()> {
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
    let date = |t: Option<Timestamp>| t.map_or_else(|| "-".to_string(), time::format_iso8601);
    let dash = |s: &Option<String>| {
        s.clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".into())
    };
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
                Status::at(r.expires, r.revoked, now).as_str().into(),
                date(r.last_used),
                dash(&r.last_rhost),
                dash(&r.last_service),
                r.use_count.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String], out: &mut dyn Write| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&header.map(String::from), out)?;
    for row in &table {
        line(row, out)?;
    }
    Ok(())
}

fn doctor(a: &DoctorArgs, out: &mut impl Write) -> Result<(), CliError> {
    use pam_apppass::doctor::{self, Level};
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

fn revoke(db: &Path, a: RevokeArgs, out: &mut impl Write) -> Result<(), CliError> {
    let actor = Actor::current()?;
    let store = open(db)?;
    let now = time::now();
    if a.all {
        let user = a.user.unwrap_or_default();
        if let Some(s) = &a.service {
            policy::check_service(s).map_err(CliError::Usage)?;
        }
        let n = store.revoke_all(&user, a.service.as_deref(), now)?;
        ffi::cli_syslog(
            libc::LOG_INFO,
            &format!(
                "app passwords revoked: count={n} user={} service={} by={}",
                pam_apppass::pam::field(&user),
                pam_apppass::pam::field(a.service.as_deref().unwrap_or("*")),
                pam_apppass::pam::field(&actor.name)
            ),
        );
        let scope = a.service.map(|s| format!(" for {s}")).unwrap_or_default();
        return writeln!(out, "Revoked {n} app password(s) of {user}{scope}.").map_err(io_err);
    }
    let results = store.revoke(&a.ids, Owner::Anyone, now)?;
    let mut missing = Vec::new();
    for (id, outcome) in results {
        match outcome {
            Revoked::Now => {
                ffi::cli_syslog(
                    libc::LOG_INFO,
                    &format!(
                        "app password revoked: id={id} by={}",
                        pam_apppass::pam::field(&actor.name)
                    ),
                );
                writeln!(out, "Revoked {id}.").map_err(io_err)?;
            }
            Revoked::Already => writeln!(out, "{id} was already revoked.").map_err(io_err)?,
            Revoked::NotFound => missing.push(id.to_string()),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::NotFound(format!(
            "no app password with id {}",
            missing.join(", ")
        )))
    }
}
