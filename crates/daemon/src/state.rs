//! What the daemon's threads share: the configuration, the log, who is trusted, and
//! its health (counters, the store's state), which `apppass status` reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use apppass_core::config::Config;

use crate::log::Log;
use crate::peer::Access;

/// Counters, by name, since start.
pub mod count {
    pub const LOGIN_SUCCESS: &str = "login_success";
    pub const LOGIN_FAILURE: &str = "login_failure";
    pub const LOGIN_NO_APP_PASSWORDS: &str = "login_no_app_passwords";
    pub const LOGIN_THROTTLED: &str = "login_throttled";
    /// A peer that may not check that user's password.
    pub const LOGIN_REFUSED_PEER: &str = "login_refused_peer";
    /// Requests answered "unavailable" (the store cannot be used).
    pub const UNAVAILABLE: &str = "unavailable";
    /// Requests refused because the queue (or the peer's share of it) was full.
    pub const BUSY: &str = "busy";
    /// Requests dropped unanswered: their deadline passed while they waited.
    pub const EXPIRED: &str = "expired";
    /// Malformed or unknown requests.
    pub const BAD_REQUEST: &str = "bad_request";
    /// Connections refused because too many were open.
    pub const CONNECTIONS_REFUSED: &str = "connections_refused";
    pub const REQUESTS: &str = "requests";

    pub const ALL: [&str; 11] = [
        REQUESTS,
        LOGIN_SUCCESS,
        LOGIN_FAILURE,
        LOGIN_NO_APP_PASSWORDS,
        LOGIN_THROTTLED,
        LOGIN_REFUSED_PEER,
        UNAVAILABLE,
        BUSY,
        EXPIRED,
        BAD_REQUEST,
        CONNECTIONS_REFUSED,
    ];
}

/// What status says of the store until a worker has opened it.
pub const OPENING: &str = "apppassd is opening its store";

/// The daemon's health.
pub struct Health {
    counters: BTreeMap<&'static str, AtomicU64>,
    /// Why the store cannot be used, as last found (`None`: it can).
    store_error: Mutex<Option<String>>,
    /// What is wrong with a store that can be used all the same (opened read-only).
    store_warning: Mutex<Option<String>>,
    schema_version: AtomicI64,
    pub busy: AtomicU32,
    pub clients: AtomicU32,
    pub started: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            counters: count::ALL.iter().map(|n| (*n, AtomicU64::new(0))).collect(),
            store_error: Mutex::new(Some(OPENING.to_string())),
            store_warning: Mutex::new(None),
            schema_version: AtomicI64::new(0),
            busy: AtomicU32::new(0),
            clients: AtomicU32::new(0),
            started: Instant::now(),
        }
    }
}

impl Health {
    pub fn count(&self, name: &'static str) {
        if let Some(c) = self.counters.get(name) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> Vec<(String, u64)> {
        self.counters
            .iter()
            .map(|(n, c)| ((*n).to_string(), c.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn store_error(&self) -> Option<String> {
        self.store_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the store's state; true when it changed (worth a log line).
    pub fn set_store_error(&self, error: Option<String>) -> bool {
        let mut current = self.store_error.lock().unwrap_or_else(|p| p.into_inner());
        let changed = *current != error;
        *current = error;
        changed
    }

    pub fn store_warning(&self) -> Option<String> {
        self.store_warning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records what is wrong with a usable store; true when it changed.
    pub fn set_store_warning(&self, warning: Option<String>) -> bool {
        let mut current = self.store_warning.lock().unwrap_or_else(|p| p.into_inner());
        let changed = *current != warning;
        *current = warning;
        changed
    }

    pub fn schema_version(&self) -> Option<i64> {
        Some(self.schema_version.load(Ordering::Relaxed)).filter(|v| *v > 0)
    }

    pub fn set_schema_version(&self, v: i64) {
        self.schema_version.store(v, Ordering::Relaxed);
    }
}

/// Logins whose records are still being written, per user. A login's answer goes out
/// before its record (usage, audit event, throttle counter) is written, so that a login
/// does not wait for the disk; whatever asks about that user next (the next login's
/// throttle check, a listing, the audit log) waits here until the record is in, at most
/// [`Recording::MAX_WAIT`].
#[derive(Default)]
pub struct Recording {
    pending: Mutex<HashMap<String, usize>>,
    done: Condvar,
}

impl Recording {
    /// A record is never waited for longer: a store that hangs must not hang logins.
    pub const MAX_WAIT: Duration = Duration::from_secs(2);

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A record of `user` is about to be written.
    pub fn enter(&self, user: &str) {
        *self.lock().entry(user.to_string()).or_default() += 1;
    }

    /// It is written (or failed: it is best effort).
    pub fn leave(&self, user: &str) {
        let mut pending = self.lock();
        if let Some(n) = pending.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                pending.remove(user);
            }
        }
        drop(pending);
        self.done.notify_all();
    }

    /// Waits until no record of `user` (`None`: of anyone) is being written.
    pub fn wait_for(&self, user: Option<&str>) {
        let deadline = Instant::now() + Self::MAX_WAIT;
        let mut pending = self.lock();
        loop {
            let busy = match user {
                Some(u) => pending.contains_key(u),
                None => !pending.is_empty(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if !busy || left.is_zero() {
                return;
            }
            pending = self
                .done
                .wait_timeout(pending, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Everything the threads share.
pub struct Shared {
    pub config: Config,
    pub log: Log,
    pub access: Access,
    pub health: Health,
    /// apppassd's own uid (the store must be its own).
    pub uid: u32,
    /// When the audit log was last trimmed (Unix seconds), by whichever worker.
    pub last_prune: AtomicI64,
    /// The argon2 memory: one hasher per worker, the warmest handed out first.
    pub hashers: apppass_argon2::Pool,
    /// Records still being written after their logins' answers.
    pub recording: Recording,
    /// Held while a worker opens the store: one creates or migrates it while the others
    /// wait, rather than all racing for SQLite's locks.
    pub opening: Mutex<()>,
    pub workers: u32,
    /// Owner notices by mail, off the workers ([`crate::notify`]).
    pub notify: crate::notify::Notifier,
}
