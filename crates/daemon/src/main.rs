//! `apppassd`: see apppassd(8). Runs in the foreground until SIGTERM.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "apppassd",
    version,
    about = "The app password service: owns apppass's store and answers the PAM module, the apppass command and the portal over a Unix socket",
    after_help = "Runs in the foreground, logs to syslog (authpriv). Stops on SIGTERM after answering what it has accepted.\nExit status: 0 stopped by a signal, 1 could not start, 2 bad usage. See apppassd(8)."
)]
struct Cli {
    /// Configuration file [default: /etc/security/apppass.conf, if present]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The store: an SQLite file (created if missing), or a PostgreSQL connection string
    /// without a password [default: from the configuration, else /var/lib/apppass/apppass.db]
    #[arg(long, value_name = "PATH|CONNINFO")]
    db: Option<String>,
    /// Where to listen, unless systemd passes a socket [default: from the configuration,
    /// else /run/apppass/apppassd.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Started as root: once listening, become this user (its uid and group, no others)
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Log to stderr as well as to syslog
    #[arg(long)]
    stderr: bool,
    /// Log debug lines too
    #[arg(long)]
    debug: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let opts = apppassd::Options {
        config: cli.config,
        db: cli.db,
        socket: cli.socket,
        user: cli.user,
        stderr: cli.stderr,
        debug: cli.debug,
    };
    match apppassd::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apppassd: {e}");
            apppassd::log::Log::new(false, false).err(&format!("cannot start: {e}"));
            ExitCode::from(1)
        }
    }
}
