//! `apppass-web`: see apppass-web(8). The self-service portal: people sign in with their
//! account and create, see and revoke their app passwords. A thin client of apppassd:
//! it holds no store and reads no shadow file; apppassd runs the `apppass-portal` PAM
//! stack, issues the sessions and decides what each may do. Runs in the foreground.
#![forbid(unsafe_code)]

mod daemon;
mod form;
mod pages;
mod profile;
mod routes;
mod server;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use apppass_core::config::{Config, Listen};
use apppass_core::log::Log;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "apppass-web",
    version,
    about = "The app password portal: people create, see and revoke their app passwords in a browser, through apppassd",
    after_help = "Runs in the foreground, logs to syslog (authpriv). Exit status: 0 stopped by a signal, 1 could not start, 2 bad usage. See apppass-web(8)."
)]
struct Cli {
    /// Where to listen: ADDRESS:PORT or unix:PATH [default: web_listen, else 127.0.0.1:8443]
    #[arg(long, value_name = "ADDRESS:PORT|unix:PATH")]
    listen: Option<String>,
    /// apppassd's socket [default: socket, else /run/apppass/apppassd.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Configuration file [default: /etc/security/apppass.conf, if present]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log to stderr as well as to syslog
    #[arg(long)]
    stderr: bool,
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
    let log = Arc::new(Log::tagged("apppass-web", cli.stderr, false));
    match run(cli, Arc::clone(&log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apppass-web: {e}");
            log.err(&format!("cannot start: {e}"));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli, log: Arc<Log>) -> Result<(), String> {
    let explicit = cli.config.is_some();
    let path = cli
        .config
        .unwrap_or_else(|| PathBuf::from(apppass_core::config::DEFAULT_CONFIG));
    let loaded = Config::load(&path, explicit).map_err(|e| e.to_string())?;
    let mut config = loaded.config;
    if let Some(listen) = cli.listen {
        config.web.listen = Listen::parse(&listen).map_err(|e| format!("--listen: {e}"))?;
    }
    if let Some(socket) = cli.socket {
        config.socket = socket;
    }
    let tls = match (&config.web.tls_cert, &config.web.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls_config(cert, key)?),
        _ => None,
    };
    let state = routes::State::new(config, Arc::clone(&log), tls.is_some());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(server::serve(state, tls))
}
