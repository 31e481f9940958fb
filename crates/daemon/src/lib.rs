//! apppassd: the resident service that owns apppass's store. The PAM module, the CLI
//! and the portal are its clients, over a Unix socket; it decides what each may do from
//! the kernel's credentials of the process asking.
//!
//! A request flows one way: [`server`] (a connection: frame, decode, peer) -> [`queue`]
//! (bounded, a fair share per class and uid) -> [`worker`] (a thread with its own store
//! connection and argon2 memory) -> [`service`] (who may, then policy, store and
//! secret) -> the answer.
#![forbid(unsafe_code)]

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use apppass_core::config::{self, Config};
use apppass_core::store::Location;

/// The syslog writer, shared with apppass-web: apppass-core's.
pub use apppass_core::log;
pub mod notify;
pub mod peer;
pub mod presence;
pub mod queue;
pub mod server;
pub mod service;
pub mod state;
pub mod worker;

use crate::log::Log;
use crate::queue::{Limits, Queue};
use crate::state::{Health, Shared};

/// How apppassd was started: its command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--config`: the configuration file (else /etc/security/apppass.conf, if present).
    pub config: Option<PathBuf>,
    /// `--db`: the store, overriding the configuration.
    pub db: Option<String>,
    /// `--socket`: where to listen, overriding the configuration (unless systemd passes
    /// a socket).
    pub socket: Option<PathBuf>,
    /// `--user`: started as root, become this user once listening.
    pub user: Option<String>,
    /// `--stderr`: log to stderr as well.
    pub stderr: bool,
    /// `--debug`: log debug lines too.
    pub debug: bool,
}

/// Why apppassd could not start (a store it cannot use is not one: it starts and says
/// "unavailable").
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long stopping waits for requests in flight.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// The configuration with the command line's overrides.
pub fn configuration(opts: &Options) -> Result<(Config, Vec<String>), StartError> {
    let (path, explicit) = match &opts.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(config::DEFAULT_CONFIG), false),
    };
    let loaded = Config::load(&path, explicit).map_err(|e| StartError(e.to_string()))?;
    let mut config = loaded.config;
    if let Some(db) = &opts.db {
        config.db = Location::parse(db).map_err(|e| StartError(format!("--db: {e}")))?;
    }
    if let Some(socket) = &opts.socket {
        if !socket.is_absolute() {
            return Err(StartError(format!(
                "--socket must be an absolute path, got {}",
                socket.display()
            )));
        }
        config.socket = socket.clone();
    }
    Ok((config, loaded.warnings))
}

/// Runs apppassd until SIGTERM (or SIGINT): then it stops accepting, answers what it
/// has accepted, and returns.
pub fn run(opts: &Options) -> Result<(), StartError> {
    install_panic_hook();
    let (config, warnings) = configuration(opts)?;
    let log = Log::new(opts.stderr, opts.debug);
    for w in &warnings {
        log.warning(w);
    }
    let (listener, bound) = match apppass_sys::listen_fds() {
        Ok(Some(l)) => (l, None),
        Ok(None) => {
            let l = bind(&config.socket)?;
            (l, Some(config.socket.clone()))
        }
        Err(e) => return Err(StartError(format!("socket from systemd: {e}"))),
    };
    if let Some(user) = &opts.user {
        become_user(user)?;
    }
    let (uid, _) = peer::own_ids();
    if uid == 0 {
        log.warning(
            "running as root: start apppassd as its own user (systemd's User=, or --user _apppass)",
        );
    }
    let (access, unknown) = peer::Access::resolve(&config);
    for u in unknown {
        log.warning(&u);
    }
    let workers = config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
    });
    let store = config.db.to_string();
    let queue_limits = Limits::new(config.queue_max as usize, workers as usize);
    let socket_name = match &bound {
        Some(p) => p.display().to_string(),
        None => "the socket systemd passed".to_string(),
    };
    let shared = Arc::new(Shared {
        config,
        log,
        access,
        health: Health::default(),
        uid,
        last_prune: std::sync::atomic::AtomicI64::new(0),
        opening: std::sync::Mutex::new(()),
        recording: state::Recording::default(),
        hashers: apppass_argon2::Pool::new(),
        workers,
        notify: notify::Notifier::default(),
    });
    notify::start(&shared);
    // Each worker opens the store as it starts (the first creates or migrates it); until
    // one has, status says so. Nothing here waits for it: a locked store must not keep
    // apppassd from answering.
    let queue = Arc::new(Queue::new(queue_limits));
    let handles = worker::spawn(workers, &shared, &queue);
    shared.log.info(&format!(
        "listening on {socket_name}: version {}, {} worker(s), store {store}",
        env!("CARGO_PKG_VERSION"),
        handles.len()
    ));
    let result = accept_loop(listener, &shared, &queue, store);
    queue.close();
    for h in handles {
        let _ = h.join();
    }
    notify::stop(&shared);
    // The workers' connections all closed at once; none may have folded the WAL into the
    // store. One last connection does, so that a copy of the file taken after a clean
    // stop holds every change.
    // Only a store it used, and still trusts: never a -wal someone else put there.
    let usable = shared.health.store_error().is_none();
    if let (Location::Sqlite(path), true) = (&shared.config.db, usable) {
        use apppass_core::store::sqlite;
        if let Ok(store) = sqlite::check_directory(path, shared.uid).and_then(|()| {
            sqlite::SqliteStore::open(path, apppass_core::store::Purpose::Admin, false)
        }) {
            if let Err(e) = store.checkpoint() {
                shared
                    .log
                    .warning(&format!("could not fold the WAL into the store: {e}"));
            }
        }
    }
    if let Some(path) = bound {
        let _ = std::fs::remove_file(path);
    }
    shared.log.info("stopped");
    result
}

fn accept_loop(
    listener: UnixListener,
    shared: &Arc<Shared>,
    queue: &Arc<Queue<worker::Job>>,
    store: String,
) -> Result<(), StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        // status's NSS lookup; nothing else blocks.
        .max_blocking_threads(2)
        .build()
        .map_err(|e| StartError(format!("cannot start: {e}")))?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        listener
            .set_nonblocking(true)
            .map_err(|e| StartError(format!("socket: {e}")))?;
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| StartError(format!("socket: {e}")))?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| StartError(e.to_string()))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| StartError(e.to_string()))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let cx = server::Context {
            shared: Arc::clone(shared),
            queue: Arc::clone(queue),
            connections: Arc::default(),
            stop: stop_rx,
            store,
            presence: Arc::default(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tasks.spawn(server::serve(stream, cx.clone()));
                    }
                    Err(e) => {
                        // Out of descriptors, say: wait rather than spin.
                        shared.log.warning(&format!("accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        // Stop accepting: under socket activation, connections not accepted yet wait in
        // systemd's socket for the next apppassd.
        drop(listener);
        shared.log.info(&format!(
            "stopping: answering {} connection(s) in flight",
            tasks.len()
        ));
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        Ok(())
    })
}

/// Listens at `path`: its directory made if need be (0755), a stale socket replaced,
/// the socket open to every local user (0666; what each may do is decided per request).
fn bind(path: &Path) -> Result<UnixListener, StartError> {
    let fail =
        |what: &str, e: std::io::Error| StartError(format!("{}: {what}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| fail("cannot create its directory", e))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(StartError(format!(
                    "{}: another apppassd is listening there",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(|e| fail("cannot remove the stale socket", e))?;
        }
        Ok(_) => {
            return Err(StartError(format!(
                "{} exists and is not a socket: refusing to replace it",
                path.display()
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| fail("cannot listen", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| fail("cannot set its mode", e))?;
    Ok(listener)
}

use std::os::unix::fs::DirBuilderExt;

/// Becomes `name` (its uid, its primary group, no other groups), from root.
fn become_user(name: &str) -> Result<(), StartError> {
    use nix::unistd::{Gid, Uid, User, setgid, setgroups, setuid};
    let user = User::from_name(name)
        .map_err(|e| StartError(format!("--user {name}: {e}")))?
        .ok_or_else(|| StartError(format!("--user {name}: no such user")))?;
    if Uid::effective() == user.uid {
        return Ok(());
    }
    if !Uid::effective().is_root() {
        return Err(StartError(format!(
            "--user {name}: only root can become another user"
        )));
    }
    let gid: Gid = user.gid;
    setgroups(&[gid]).map_err(|e| StartError(format!("setgroups: {e}")))?;
    setgid(gid).map_err(|e| StartError(format!("setgid: {e}")))?;
    setuid(user.uid).map_err(|e| StartError(format!("setuid: {e}")))?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(StartError("could regain root after dropping it".into()));
    }
    Ok(())
}

/// A panic (a bug) is logged by where it happened, never by its message: a message may
/// quote its input, and the input may be a password. The worker that panicked answers
/// "internal error" and carries on with a fresh service.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        Log::new(true, false).line(
            log::Level::Err,
            &format!("internal error at {place}; please report it"),
        );
    }));
}
