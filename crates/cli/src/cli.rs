//! `apppass`: create, list and revoke app passwords, through apppassd. See apppass(1).
//!
//! An ordinary program: apppassd decides what its caller may do from the kernel's
//! credentials of the process asking (its own app passwords for everyone; everyone's for
//! root and the admin group), so nothing here is privileged or trusted.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use apppass_core::time;
use apppass_proto::conf::{self, ClientSettings};
use apppass_proto::text::{for_terminal, lines_for_terminal};
use apppass_proto::{
    AddRequest, Added, Client, ClientError, ErrorKind, EventInfo, PasswordInfo, Request, Response,
    RevokeOutcome, Status,
};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

/// Exit codes, documented in apppass(1).
mod exit {
    pub const OK: u8 = 0;
    /// apppassd or the system failed (not running, store unavailable, ...).
    pub const FAILURE: u8 = 1;
    /// Bad command line or bad values (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// An id that does not exist (or is not yours).
    pub const NOT_FOUND: u8 = 3;
    /// Not allowed: another user's app passwords, a limit, a privileged-only request.
    pub const DENIED: u8 = 4;
}

/// How long the command waits for apppassd unless told otherwise: management requests
/// may queue behind logins.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(
    name = "apppass",
    version,
    about = "Create, list and revoke app passwords: per-service passwords for mail clients, phones and tools",
    after_help = "Exit status: 0 success, 1 apppassd or system failure, 2 bad usage, 3 no such app password,\n4 not allowed. See apppass(1)."
)]
struct Cli {
    /// apppassd's socket [default: from the configuration, else /run/apppass/apppassd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Configuration file, for the socket [default: /etc/security/apppass.conf, if present]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// How long to wait for apppassd (5s, 500ms) [default: 30s]
    #[arg(long, global = true, value_name = "DURATION", value_parser = conf::parse_timeout)]
    timeout: Option<Duration>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create an app password and show it, once
    Add(AddArgs),
    /// Show app passwords: service, label, dates, status and last use (never a secret)
    List(ListArgs),
    /// Revoke app passwords by id, or all of a user's
    Revoke(RevokeArgs),
    /// Replace an app password with a new one of the same settings; the old one stops working
    Regenerate(RegenerateArgs),
    /// Change the networks an app password may be used from
    Networks(NetworksArgs),
    /// Show recent logins and failures
    Log(LogArgs),
    /// Lift throttling after too many wrong guesses
    Unlock(UnlockArgs),
    /// Show active app passwords that expire soon (everyone's, for root and the admin group)
    Expiring(ExpiringArgs),
    /// Show apppassd's health: version, store, workers, queue, counts of outcomes
    Status(JsonArgs),
    /// Write a consistent copy of the whole store to a new file (root only)
    Backup(BackupArgs),
    /// Check a service's PAM stack (is pam_apppass wired in, in which mode and scope) and apppassd
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
    /// Only from these remote addresses: IPv4 and IPv6 networks or addresses, separated
    /// by commas (192.0.2.0/24,2001:db8::/48) [default: from anywhere]
    #[arg(long, value_name = "LIST")]
    from: Option<String>,
    /// Print one JSON object instead of text
    #[arg(long, conflicts_with = "qr")]
    json: bool,
    /// Also show the password as a QR code, for a phone's camera
    #[arg(long)]
    qr: bool,
    /// Read your account password (which proves it is you) from standard input instead
    /// of asking at the terminal; for a PAM stack that asks only for it
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Args, Debug)]
struct RegenerateArgs {
    /// The app password's id (from apppass list)
    #[arg(value_name = "ID")]
    id: i64,
    /// Print one JSON object instead of text
    #[arg(long, conflicts_with = "qr")]
    json: bool,
    /// Also show the password as a QR code, for a phone's camera
    #[arg(long)]
    qr: bool,
    /// Read your account password (which proves it is you) from standard input instead
    /// of asking at the terminal; for a PAM stack that asks only for it
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("where").required(true).args(["from", "any"]))]
struct NetworksArgs {
    /// The app password's id (from apppass list)
    #[arg(value_name = "ID")]
    id: i64,
    /// Only from these remote addresses: networks or addresses, separated by commas
    #[arg(long, value_name = "LIST")]
    from: Option<String>,
    /// From anywhere again
    #[arg(long)]
    any: bool,
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
struct ExpiringArgs {
    /// How soon: a duration (14d, 2w, 36h)
    #[arg(long, value_name = "DURATION", default_value = "14d")]
    within: String,
    /// Only this user's [default: everyone's for root and the admin group, else yours]
    #[arg(long, value_name = "USER")]
    user: Option<String>,
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
    limit: u32,
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
struct JsonArgs {
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// The new file (it must not exist; made with mode 0600)
    #[arg(value_name = "FILE")]
    file: PathBuf,
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
pub(crate) enum CliError {
    Usage(String),
    /// apppassd could not be reached or did not answer.
    Daemon(ClientError),
    /// apppassd answered with an error.
    Refused(ErrorKind, String),
    NotFound(String),
    Other(String),
}

impl CliError {
    /// The one place where errors become exit codes.
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::Refused(kind, _) => match kind {
                ErrorKind::Usage => exit::USAGE,
                ErrorKind::NotFound => exit::NOT_FOUND,
                ErrorKind::Denied | ErrorKind::Limit | ErrorKind::Reauthenticate => exit::DENIED,
                ErrorKind::BadRequest
                | ErrorKind::Unavailable
                | ErrorKind::Busy
                | ErrorKind::Timeout
                | ErrorKind::Internal => exit::FAILURE,
            },
            CliError::Daemon(_) | CliError::Other(_) => exit::FAILURE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::NotFound(m) | CliError::Other(m) => f.write_str(m),
            CliError::Refused(_, m) => f.write_str(m),
            CliError::Daemon(e) => e.fmt(f),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Daemon(e)
    }
}

/// A connection to apppassd, as the configuration and options say.
struct Session {
    client: Client,
}

impl Session {
    fn start(cli: &Cli) -> Result<Session, CliError> {
        let (path, explicit) = match &cli.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(conf::DEFAULT_CONFIG), false),
        };
        let settings =
            ClientSettings::load(&path, explicit).map_err(|e| CliError::Usage(e.to_string()))?;
        let socket = cli.socket.clone().unwrap_or(settings.socket);
        let timeout = cli.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let client = crate::daemon::connect(&socket, timeout, &settings.user)?;
        Ok(Session { client })
    }

    /// One request; an error answer becomes a [`CliError`].
    fn call(&mut self, request: &Request) -> Result<Response, CliError> {
        match self.client.call(request)? {
            Response::Error { kind, message } => Err(CliError::Refused(kind, message)),
            r => Ok(r),
        }
    }
}

fn unexpected(r: &Response) -> CliError {
    CliError::Other(format!("unexpected answer from apppassd: {r:?}"))
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
        Err(CliError::Other(m)) if m == BROKEN_PIPE => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("apppass: error: {}", for_terminal(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    if let Command::Doctor(a) = &cli.command {
        return doctor(a, &mut out);
    }
    let mut s = Session::start(&cli)?;
    match cli.command {
        Command::Add(a) => add(&mut s, a, &mut out),
        Command::List(a) => list(&mut s, a, &mut out),
        Command::Revoke(a) => revoke(&mut s, a, &mut out),
        Command::Regenerate(a) => regenerate(&mut s, a, &mut out),
        Command::Networks(a) => networks(&mut s, a, &mut out),
        Command::Log(a) => log(&mut s, a, &mut out),
        Command::Expiring(a) => expiring(&mut s, a, &mut out),
        Command::Unlock(a) => unlock(&mut s, a, &mut out),
        Command::Status(a) => status(&mut s, a, &mut out),
        Command::Backup(a) => backup(&mut s, a, &mut out),
        Command::Doctor(_) => unreachable!("handled above"),
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

/// A new credential needs the person, not just their session: apppassd asks for the
/// account password through its own PAM stack (root is let through at once).
fn prove(s: &mut Session, password_stdin: bool) -> Result<(), CliError> {
    let mut answers = if password_stdin {
        crate::prove::Answers::from_stdin()?
    } else if nix::unistd::geteuid().is_root() {
        // Root is let through unasked.
        crate::prove::Answers::Terminal
    } else {
        crate::prove::Answers::terminal()?
    };
    crate::prove::prove(&mut s.client, &mut answers)
}

fn add(s: &mut Session, a: AddArgs, out: &mut impl Write) -> Result<(), CliError> {
    prove(s, a.password_stdin)?;
    let r = s.call(&Request::Add(AddRequest {
        user: a.user,
        service: a.service,
        label: a.label,
        expires: a.expires,
        from: a.from,
    }))?;
    show_new(r, a.json, a.qr, None, out)
}

fn regenerate(s: &mut Session, a: RegenerateArgs, out: &mut impl Write) -> Result<(), CliError> {
    // A new secret is a new credential: the same proof as add.
    prove(s, a.password_stdin)?;
    let r = s.call(&Request::Regenerate { id: a.id })?;
    show_new(r, a.json, a.qr, Some(a.id), out)
}

/// Shows a new app password (`add`, or `regenerate` of `replaces`), once.
fn show_new(
    r: Response,
    json: bool,
    qr: bool,
    replaces: Option<i64>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let Response::Added(added) = r else {
        return Err(unexpected(&r));
    };
    let Added {
        id,
        user,
        service,
        label,
        created,
        expires,
        networks,
        password,
    } = *added;
    let expires_text = expires.map(time::format_iso8601);
    // The one text that carries the password is built in a buffer wiped on drop, sized
    // up front (growing would leave copies in freed memory), and written in one call that
    // ends with its newline, which stdout's line buffer passes straight through.
    let mut text = zeroize::Zeroizing::new(String::new());
    if json {
        // Everything else first, through serde_json; the password (of the app password
        // alphabet and dashes only: nothing to escape) is appended by hand, so that no
        // serde_json value or buffer ever holds it.
        let mut head = json!({
            "id": id,
            "user": user,
            "service": service,
            "label": label,
            "created": time::format_iso8601(created),
            "expires": expires_text,
            "networks": networks_json(&networks),
        });
        if let Some(old) = replaces {
            head["replaces"] = json!(old);
        }
        let head = head.to_string();
        let Some(head) = head.strip_suffix('}') else {
            return Err(CliError::Other("cannot encode the answer as JSON".into()));
        };
        if !password
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(CliError::Other(
                "apppassd sent a password of unexpected characters".into(),
            ));
        }
        text.reserve_exact(head.len() + password.len() + 20);
        text.push_str(head);
        text.push_str(",\"password\":\"");
        text.push_str(&password);
        text.push_str("\"}\n");
    } else {
        let scope = if service == apppass_proto::names::ANY_SERVICE {
            "every service".to_string()
        } else {
            format!("service {}", for_terminal(&service))
        };
        let label = if label.is_empty() {
            String::new()
        } else {
            format!(", \"{}\"", for_terminal(&label))
        };
        let user = for_terminal(&user);
        let replacing = replaces
            .map(|old| format!(", replacing {old}, which no longer works"))
            .unwrap_or_default();
        let before =
            format!("New app password for {user}, {scope} (id {id}{label}){replacing}:\n\n    ");
        let after = format!(
            "\n\nEnter it in the application instead of your account password, with user name {user}.\n\
             Spaces and dashes are optional, and capitals are fine.\n\
             It is shown only this once. Lost it? Make another in its place: apppass regenerate {id}\n\
             Expires: {}\n\
             From: {}\n",
            expires_text.as_deref().unwrap_or("never"),
            if networks.is_empty() {
                "anywhere".to_string()
            } else {
                for_terminal(&networks).into_owned()
            },
        );
        let qr = if qr {
            qr_code(&password)?
        } else {
            zeroize::Zeroizing::new(String::new())
        };
        text.reserve_exact(before.len() + password.len() + qr.len() + after.len());
        text.push_str(&before);
        text.push_str(&password);
        text.push_str(&qr);
        text.push_str(&after);
    }
    out.flush().map_err(io_err)?;
    out.write_all(text.as_bytes()).map_err(io_err)?;
    out.flush().map_err(io_err)
}

/// `password` as a QR code in Unicode half blocks (two modules a character), black on
/// white whatever the terminal's colours, with the quiet zone a scanner needs, after a
/// blank line. The rendered text goes into a buffer wiped on drop; what the encoder
/// keeps of the password in between (its bit stream and module grid) is freed unwiped.
fn qr_code(password: &str) -> Result<zeroize::Zeroizing<String>, CliError> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(password, qrcode::EcLevel::M)
        .map_err(|e| CliError::Other(format!("cannot make a QR code: {e}")))?;
    let picture = zeroize::Zeroizing::new(code.render::<Dense1x2>().quiet_zone(true).build());
    let mut out = zeroize::Zeroizing::new(String::with_capacity(picture.len() * 2));
    out.push('\n');
    for line in picture.lines() {
        // Black (30) on bright white (107), then back to the terminal's own colours.
        out.push_str("\n    \x1b[30;107m");
        out.push_str(line);
        out.push_str("\x1b[0m");
    }
    Ok(out)
}

fn list(s: &mut Session, a: ListArgs, out: &mut impl Write) -> Result<(), CliError> {
    let r = s.call(&Request::List {
        user: a.user.clone(),
        all: a.all,
    })?;
    let Response::Passwords(rows) = r else {
        return Err(unexpected(&r));
    };
    if a.json {
        let items: Vec<_> = rows.iter().map(listing_json).collect();
        return writeln!(out, "{}", serde_json::Value::Array(items)).map_err(io_err);
    }
    if rows.is_empty() {
        let whose = if a.all {
            "anyone".to_string()
        } else {
            a.user.unwrap_or_else(|| "you".into())
        };
        return writeln!(out, "No app passwords for {whose}.").map_err(io_err);
    }
    print_table(&rows, out).map_err(io_err)
}

fn networks(s: &mut Session, a: NetworksArgs, out: &mut impl Write) -> Result<(), CliError> {
    let r = s.call(&Request::SetNetworks {
        id: a.id,
        from: a.from,
    })?;
    let Response::Passwords(rows) = r else {
        return Err(unexpected(&r));
    };
    let Some(row) = rows.first() else {
        return Err(unexpected(&Response::Passwords(rows)));
    };
    let text = if row.networks.is_empty() {
        "from anywhere".to_string()
    } else {
        format!("only from {}", for_terminal(&row.networks))
    };
    writeln!(out, "App password {} may now be used {text}.", row.id).map_err(io_err)
}

/// Source networks as JSON: an array of canonical networks; empty: from anywhere.
fn networks_json(networks: &str) -> Vec<&str> {
    networks.split(',').filter(|n| !n.is_empty()).collect()
}

fn listing_json(r: &PasswordInfo) -> serde_json::Value {
    json!({
        "id": r.id,
        "user": r.user,
        "service": r.service,
        "label": r.label,
        "created": time::format_iso8601(r.created),
        "expires": r.expires.map(time::format_iso8601),
        "revoked": r.revoked.map(time::format_iso8601),
        "status": r.status,
        "last_used": r.last_used.map(time::format_iso8601),
        "last_rhost": r.last_rhost,
        "last_service": r.last_service,
        "use_count": r.use_count,
        "never_used": r.last_used.is_none(),
        "expires_soon": r.expires_soon,
        "networks": networks_json(&r.networks),
        "replaced_by": r.replaced_by,
    })
}

/// Roughly how long until `at`: what a person needs to know of an expiry ahead.
fn time_left(at: i64, now: i64) -> String {
    match at.saturating_sub(now).max(0) {
        s if s >= 86_400 - 1800 => format!("{}d", (s + 43_200) / 86_400),
        s if s >= 3600 - 1800 => format!("{}h", (s + 1800) / 3600),
        s => format!("{}m", (s + 59) / 60),
    }
}

/// Active app passwords that expire within `--within`: everyone's for an administrator
/// (apppassd decides), else the caller's.
fn expiring(s: &mut Session, a: ExpiringArgs, out: &mut impl Write) -> Result<(), CliError> {
    let within =
        time::parse_duration(&a.within).map_err(|e| CliError::Usage(format!("--within: {e}")))?;
    let everyone = a.user.is_none();
    let mut r = s.call(&Request::List {
        user: a.user.clone(),
        all: everyone,
    });
    if everyone && matches!(r, Err(CliError::Refused(ErrorKind::Denied, _))) {
        r = s.call(&Request::List {
            user: None,
            all: false,
        });
    }
    let r = r?;
    let Response::Passwords(rows) = r else {
        return Err(unexpected(&r));
    };
    let now = time::now();
    let soon: Vec<&PasswordInfo> = rows
        .iter()
        .filter(|r| r.status == "active" && r.expires.is_some_and(|e| e - now <= within))
        .collect();
    if a.json {
        let items: Vec<_> = soon
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "user": r.user,
                    "service": r.service,
                    "label": r.label,
                    "expires": r.expires.map(time::format_iso8601),
                    "expires_in_s": r.expires.map(|e| (e - now).max(0)),
                })
            })
            .collect();
        return writeln!(out, "{}", serde_json::Value::Array(items)).map_err(io_err);
    }
    if soon.is_empty() {
        return writeln!(out, "No app passwords expire within {}.", a.within).map_err(io_err);
    }
    let header = ["ID", "USER", "SERVICE", "LABEL", "EXPIRES", "IN"];
    let rows: Vec<[String; 6]> = soon
        .iter()
        .map(|r| {
            let e = r.expires.unwrap_or(now);
            [
                r.id.to_string(),
                r.user.clone(),
                r.service.clone(),
                dash(Some(r.label.as_str())),
                time::format_iso8601(e),
                time_left(e, now),
            ]
        })
        .collect();
    print_columns(header, &rows, out).map_err(io_err)
}

/// Prints rows under a header, each column as wide as its widest cell.
fn print_columns<const N: usize>(
    header: [&str; N],
    rows: &[[String; N]],
    out: &mut impl Write,
) -> io::Result<()> {
    // Cells hold what clients sent (remote hosts, labels, names): shown, never obeyed.
    let rows: Vec<[String; N]> = rows
        .iter()
        .map(|row| row.each_ref().map(|c| for_terminal(c).into_owned()))
        .collect();
    let rows = rows.as_slice();
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

/// A table cell: `-` for nothing or an empty string.
fn dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

fn print_table(rows: &[PasswordInfo], out: &mut impl Write) -> io::Result<()> {
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
        "NETWORKS",
    ];
    let table: Vec<[String; 12]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.user.clone(),
                r.service.clone(),
                dash(Some(r.label.as_str())),
                time::format_iso8601(r.created),
                r.expires
                    .map_or_else(|| "never".into(), time::format_iso8601),
                match (r.expires, r.replaced_by) {
                    (_, Some(new)) => format!("{}, replaced by {new}", r.status),
                    (Some(e), _) if r.expires_soon => {
                        format!("{}, expires in {}", r.status, time_left(e, time::now()))
                    }
                    _ => r.status.clone(),
                },
                r.last_used
                    .map_or_else(|| "never used".into(), time::format_iso8601),
                dash(r.last_rhost.as_deref()),
                dash(r.last_service.as_deref()),
                r.use_count.to_string(),
                if r.networks.is_empty() {
                    "any".into()
                } else {
                    r.networks.clone()
                },
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
        as_root: nix::unistd::Uid::effective().is_root(),
    };
    let reports = doctor::run(&options).map_err(|e| CliError::Usage(e.to_string()))?;
    write!(out, "{}", lines_for_terminal(&doctor::render(&reports))).map_err(io_err)?;
    let problems: usize = reports.iter().map(|r| r.count(Level::Problem)).sum();
    if problems == 0 {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "{problems} problem(s) found (see above)"
        )))
    }
}

fn revoke(s: &mut Session, a: RevokeArgs, out: &mut impl Write) -> Result<(), CliError> {
    if a.all {
        let r = s.call(&Request::RevokeAll {
            user: a.user.clone(),
            service: a.service.clone(),
        })?;
        let Response::Count(n) = r else {
            return Err(unexpected(&r));
        };
        let whose = a.user.unwrap_or_else(|| "yours".into());
        let scope = a
            .service
            .map(|svc| format!(" for {svc}"))
            .unwrap_or_default();
        return writeln!(out, "Revoked {n} app password(s) of {whose}{scope}.").map_err(io_err);
    }
    let r = s.call(&Request::Revoke { ids: a.ids })?;
    let Response::Revoked(results) = r else {
        return Err(unexpected(&r));
    };
    let mut missing = Vec::new();
    for (id, outcome) in results {
        match outcome {
            RevokeOutcome::Now => writeln!(out, "Revoked {id}.").map_err(io_err)?,
            RevokeOutcome::Already => writeln!(out, "{id} was already revoked.").map_err(io_err)?,
            RevokeOutcome::NotFound => missing.push(id.to_string()),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::NotFound(format!(
            "no app password (of yours, unless you are an admin) with id {}",
            missing.join(", ")
        )))
    }
}

fn log(s: &mut Session, a: LogArgs, out: &mut impl Write) -> Result<(), CliError> {
    let r = s.call(&Request::Log {
        user: a.user.clone(),
        all: a.all,
        limit: a.limit,
    })?;
    let Response::Events(events) = r else {
        return Err(unexpected(&r));
    };
    if a.json {
        let items: Vec<_> = events.iter().map(event_json).collect();
        return writeln!(out, "{}", serde_json::Value::Array(items)).map_err(io_err);
    }
    if events.is_empty() {
        let whose = if a.all {
            "anyone".to_string()
        } else {
            a.user.unwrap_or_else(|| "you".into())
        };
        return writeln!(out, "No logins recorded for {whose}.").map_err(io_err);
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
                dash(e.reason.as_deref()),
                e.password_id
                    .map_or_else(|| "-".into(), |id| id.to_string()),
                dash(e.rhost.as_deref()),
            ]
        })
        .collect();
    print_columns(header, &rows, out).map_err(io_err)
}

fn event_json(e: &EventInfo) -> serde_json::Value {
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

fn unlock(s: &mut Session, a: UnlockArgs, out: &mut impl Write) -> Result<(), CliError> {
    let r = s.call(&Request::Unlock {
        user: a.user.clone(),
        rhost: a.rhost.clone(),
    })?;
    let Response::Count(n) = r else {
        return Err(unexpected(&r));
    };
    let whose = a.user.unwrap_or_else(|| "you".into());
    let from = a.rhost.map(|h| format!(" from {h}")).unwrap_or_default();
    writeln!(out, "Lifted throttling of {whose}{from} ({n} host(s)).").map_err(io_err)
}

fn status(s: &mut Session, a: JsonArgs, out: &mut impl Write) -> Result<(), CliError> {
    let r = s.call(&Request::Status)?;
    let Response::Status(st) = r else {
        return Err(unexpected(&r));
    };
    let Status {
        version,
        pid,
        daemon_uid,
        uptime_s,
        store,
        store_error,
        store_warning,
        schema_version,
        workers,
        busy,
        queued,
        queue_max,
        clients,
        counts,
        you,
    } = *st;
    if a.json {
        let counts: serde_json::Map<String, serde_json::Value> =
            counts.into_iter().map(|(k, v)| (k, json!(v))).collect();
        let obj = json!({
            "version": version,
            "pid": pid,
            "uid": daemon_uid,
            "uptime_s": uptime_s,
            "store": store,
            "store_ok": store_error.is_none(),
            "store_error": store_error,
            "store_warning": store_warning,
            "schema_version": schema_version,
            "workers": workers,
            "busy": busy,
            "queued": queued,
            "queue_max": queue_max,
            "clients": clients,
            "counts": counts,
            "you": {
                "uid": you.uid,
                "user": you.user,
                "admin": you.admin,
                "authenticates_anyone": you.authenticates_anyone,
            },
        });
        return writeln!(out, "{obj}").map_err(io_err);
    }
    let state = match (&store_error, &store_warning) {
        (None, None) => format!("ok (schema version {})", schema_version.unwrap_or(0)),
        (None, Some(w)) => format!("usable, {w}"),
        (Some(why), _) => format!("UNAVAILABLE: {why}"),
    };
    let mut text = format!(
        "apppassd {version}, pid {pid}, uid {daemon_uid}, up {}\n\
         store:    {store}: {state}\n\
         workers:  {busy} of {workers} busy\n\
         queue:    {queued} waiting (at most {queue_max})\n\
         clients:  {clients} connected\n",
        time::format_duration(i64::try_from(uptime_s.max(1)).unwrap_or(i64::MAX)),
    );
    text.push_str("counts:  ");
    for (k, v) in &counts {
        text.push_str(&format!(" {k}={v}"));
    }
    text.push('\n');
    let who = you.user.unwrap_or_else(|| format!("uid {}", you.uid));
    let rights = if you.admin {
        "manage everyone's app passwords"
    } else {
        "manage your own app passwords"
    };
    text.push_str(&format!("you:      {who}: you may {rights}\n"));
    write!(out, "{}", lines_for_terminal(&text)).map_err(io_err)?;
    if store_error.is_some() {
        return Err(CliError::Other(
            "apppassd cannot use its store: every login gets PAM_AUTHINFO_UNAVAIL".into(),
        ));
    }
    Ok(())
}

fn backup(s: &mut Session, a: BackupArgs, out: &mut impl Write) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail =
        |what: &str, e: io::Error| CliError::Other(format!("{}: {what}: {e}", a.file.display()));
    // Asked first: a refusal leaves nothing behind.
    let mut r = s.call(&Request::Backup)?;
    // The copy holds every hash: private from the start, and never over another file.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&a.file)
        .map_err(|e| fail("cannot create it", e))?;
    let mut written = 0u64;
    let result = (|| {
        loop {
            match r {
                Response::Chunk(data) => {
                    file.write_all(&data).map_err(|e| fail("cannot write", e))?;
                    written += data.len() as u64;
                }
                Response::Done => break,
                Response::Error { kind, message } => return Err(CliError::Refused(kind, message)),
                other => return Err(unexpected(&other)),
            }
            r = s.client.read_more()?;
        }
        file.sync_all().map_err(|e| fail("cannot sync", e))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&a.file);
        return Err(e);
    }
    writeln!(
        out,
        "Backed up the store to {} ({written} bytes).",
        a.file.display()
    )
    .map_err(io_err)
}
