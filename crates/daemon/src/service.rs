//! What apppassd does for each request, once the peer is known and a worker has taken
//! it: authorisation by the peer's credentials, then policy, store and secret, then the
//! answer. Each worker has its own [`Service`]: its own connection to the store and its
//! own argon2 memory, kept from one request to the next.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apppass_argon2::Hasher;
use apppass_core::config::Config;
use apppass_core::networks::Networks;
use apppass_core::policy::{self, Account, Status};
use apppass_core::secret::{self, Candidate, NewPassword};
use apppass_core::store::{
    self, Attempt, Credential, Listing, Location, Lookup, LookupQuery, NewRow, Outcome, Owner,
    PASSWORD_CHANGE, Regenerated, Retention, Revoked, Store, StoreError,
};
use apppass_core::time::{self, Timestamp};
use apppass_proto::{
    AddRequest, Added, AuthAnswer, AuthRequest, ErrorKind, EventInfo, PasswordInfo, Reason,
    Request, Response, RevokeOutcome,
};

use crate::log::{Level, field, quoted};
use crate::notify::{About, Notice, What};
use crate::peer::{self, Class, Peer};
use crate::state::{Shared, count};

/// How long a store that could not be opened is left alone before the next try.
const RETRY: Duration = Duration::from_secs(5);
/// How often the audit log and the throttle table are trimmed to their bounds: expired
/// throttle rows are deleted here only (by an index; the row bound holds at every write
/// already); SQLite also trims the audit log as logins go, PostgreSQL only here.
const PRUNE_EVERY: i64 = 3600;
/// How many times to draw a new password when its selector is already taken.
const SELECTOR_TRIES: usize = 8;
/// Users whose app passwords are adopted per round (see [`adopt_owners`]), and user
/// names the log line of those without an account names at most.
const ADOPT_BATCH: usize = 1000;
const NAMES_SHOWN: usize = 20;

/// What a worker hands back for a request.
pub enum Reply {
    Answer(Response),
    /// The worker wrote the answer to the client itself (a login's: one wake-up fewer
    /// between the verification and the client).
    Written,
    /// The worker wrote the start of the answer; these bytes are left.
    Rest(Vec<u8>),
    /// A backup, written to this file: the connection streams it, then removes it.
    Backup(BackupFile),
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Answer(r)
    }
}

/// What is left of a request once its answer is sent (a login's record and log line).
#[derive(Default)]
pub struct After {
    record: Option<Record>,
    log: Option<(Level, String)>,
}

impl After {
    /// The user whose record this writes, if it writes one: their gate must be closed
    /// before the answer goes (see [`crate::state::Recording`]).
    pub fn records_for(&self) -> Option<&str> {
        self.record.as_ref().map(|r| r.user.as_str())
    }
}

/// A login attempt to write down.
struct Record {
    at: Timestamp,
    user: String,
    service: String,
    rhost: Option<String>,
    password_id: Option<i64>,
    outcome: Recorded,
}

enum Recorded {
    Success,
    Failure(Reason),
    Throttled,
}

/// A backup copy in apppassd's own directory, removed when dropped.
pub struct BackupFile(pub PathBuf);

impl Drop for BackupFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens the store (creating or migrating it), records in the health report whether it
/// can be used, read-only or not at all, and says each change of that in the log, once
/// across the workers. `None` when it cannot be used.
fn open(shared: &Shared) -> Option<store::Opened> {
    let _one_at_a_time = shared.opening.lock().unwrap_or_else(|p| p.into_inner());
    let c = &shared.config;
    let h = &shared.health;
    match store::open_daemon(&c.db, &c.connect, shared.uid) {
        Ok(opened) => {
            // Before the store is declared ready: no login finds a row not adopted yet.
            if opened.read_only.is_none() {
                adopt_owners(shared, &*opened.store);
            }
            if let Ok(v) = opened.store.schema_version() {
                h.set_schema_version(v);
            }
            let warning = opened
                .read_only
                .as_ref()
                .map(|why| format!("read-only: logins go on, changes are refused ({why})"));
            let became_usable = h.set_store_error(None);
            if h.set_store_warning(warning.clone()) || became_usable {
                match &warning {
                    None => shared.log.info(&format!(
                        "store ready: {} (schema version {})",
                        c.db,
                        h.schema_version().unwrap_or(0)
                    )),
                    Some(w) => shared.log.warning(&format!("store {}: {w}", c.db)),
                }
            }
            Some(opened)
        }
        Err(e) => {
            let why = e.to_string();
            h.set_store_warning(None);
            if h.set_store_error(Some(why.clone())) {
                shared.log.err(&format!(
                    "store unavailable, answering every request \"unavailable\" until it can be used: {why}"
                ));
            }
            None
        }
    }
}

/// Gives each app password made before apppass recorded owners (schema 4) the account
/// that has its user's name now, or none, once: the next open finds nothing left (one
/// look at an index). Logs how many, and which users have no account any more. Done
/// under the opening lock, before the worker that opened the store serves anything;
/// a store whose role may not (a front end's login role on PostgreSQL) leaves it to the
/// administrators' apppassd, and its logins refuse such rows until then.
fn adopt_owners(shared: &Shared, store: &dyn Store) {
    let (mut rows, mut users) = (0, 0);
    let mut without_account = Vec::new();
    loop {
        let batch = match store.unadopted(ADOPT_BATCH) {
            Ok(b) => b,
            Err(e) => {
                shared
                    .log
                    .warning(&format!("could not look for app passwords to adopt: {e}"));
                return;
            }
        };
        if batch.is_empty() {
            break;
        }
        let owners: Vec<(String, Account)> = batch
            .into_iter()
            .map(|user| {
                let owner = Account::of(peer::user_uid(&user));
                (user, owner)
            })
            .collect();
        let adopted = match store.adopt(&owners) {
            Ok(n) => n,
            Err(e) => {
                shared.log.warning(&format!(
                    "could not adopt the app passwords made before owners were recorded (they are refused until they are): {e}"
                ));
                return;
            }
        };
        rows += adopted;
        users += owners.len();
        without_account.extend(
            owners
                .iter()
                .filter(|(_, owner)| *owner == Account::NoAccount)
                .map(|(user, _)| user.clone()),
        );
        // Nothing more, or nothing that moved (someone else adopting meanwhile).
        if owners.len() < ADOPT_BATCH || adopted == 0 {
            break;
        }
    }
    if users == 0 {
        return;
    }
    shared.log.line(Level::Notice, &format!(
        "adopted {rows} app password(s) of {users} user(s), made before owners were recorded: each now belongs to the account that has its user's name"
    ));
    if !without_account.is_empty() {
        let shown: Vec<String> = without_account
            .iter()
            .take(NAMES_SHOWN)
            .map(|u| field(u))
            .collect();
        let more = without_account.len().saturating_sub(NAMES_SHOWN);
        shared.log.warning(&format!(
            "{} user(s) with app passwords have no account: {}{}; their app passwords work only while no account has the name (revoke them if the accounts were deleted)",
            without_account.len(),
            shown.join(" "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
}

/// One worker's means: the store, and argon2 memory.
pub struct Service {
    shared: Arc<Shared>,
    store: Option<Box<dyn Store>>,
    /// The store was opened read-only (a read-only mount, a full disk): a read-write open
    /// is tried again from time to time.
    read_only: bool,
    next_try: Instant,
}

impl Service {
    /// A worker's service: its argon2 memory is mapped now (so that the first login does
    /// not pay for it) and its store opened.
    pub fn new(shared: Arc<Shared>) -> Service {
        // This worker's share of the hashers, mapped now (best effort: without it, the
        // first verification maps its own) and pooled with the others'.
        let mut hasher = Hasher::new();
        let _ = secret::reserve(&mut hasher, shared.config.hash);
        shared.hashers.checkin(hasher);
        let mut service = Service {
            shared,
            store: None,
            read_only: false,
            next_try: Instant::now(),
        };
        let _ = service.store();
        service
    }

    /// `f` with the warmest free hasher (see [`apppass_argon2::Pool`]).
    fn with_hasher<T>(&self, f: impl FnOnce(&mut Hasher) -> T) -> T {
        let mut hasher = self.shared.hashers.checkout();
        let result = f(&mut hasher);
        self.shared.hashers.checkin(hasher);
        result
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The store, opened (or opened again) if need be. Its state goes into the health
    /// report, and each change into the log, once.
    fn store(&mut self) -> Result<&dyn Store, String> {
        // A read-only store is used as it is; every RETRY a read-write open is tried
        // again (the disk may have been freed, the mount made writable).
        let stale = self.read_only && Instant::now() >= self.next_try;
        if self.store.is_none() || stale {
            // Until its next try a worker answers with the store's last error, unless
            // another worker has opened the store since (no error now): then at once,
            // or this worker would refuse logins the others accept.
            if self.store.is_none() && Instant::now() < self.next_try {
                if let Some(e) = self.shared.health.store_error() {
                    return Err(e);
                }
            }
            match open(&self.shared) {
                Some(opened) => {
                    self.read_only = opened.read_only.is_some();
                    if self.read_only {
                        self.next_try = Instant::now() + RETRY;
                    }
                    self.store = Some(opened.store);
                }
                None => {
                    self.next_try = Instant::now() + RETRY;
                    self.store = None;
                    self.read_only = false;
                    return Err(self
                        .shared
                        .health
                        .store_error()
                        .unwrap_or_else(|| "the store is not open".into()));
                }
            }
        }
        self.store
            .as_deref()
            .ok_or_else(|| "the store is not open".into())
    }

    /// After a store error: a PostgreSQL connection is dropped and made again for the
    /// next request (the server may have restarted); an SQLite one stays.
    fn failed(&mut self, e: &StoreError) {
        if matches!(e, StoreError::Db(_)) && matches!(self.config().db, Location::Postgres(_)) {
            self.store = None;
        }
    }

    /// Handles one request. What is left of it once the answer is sent is for
    /// [`Service::finish`].
    pub fn handle(&mut self, peer: &Peer, request: Request) -> (Reply, Option<After>) {
        self.answer(peer, request, time::now())
    }

    /// What is left of a request once its answer is on its way: a login's record (usage,
    /// audit event, throttle counter) and log line; then, if it is this worker's turn,
    /// trimming the audit log.
    pub fn finish(&mut self, after: Option<After>) {
        if let Some(after) = after {
            self.write_down(after);
        }
        self.maintain(time::now());
    }

    fn write_down(&mut self, after: After) {
        if let Some(r) = &after.record {
            let outcome = match &r.outcome {
                Recorded::Success => Outcome::Success,
                Recorded::Failure(reason) => Outcome::Failure {
                    reason: reason.as_str(),
                    guess: reason.is_guess(),
                },
                Recorded::Throttled => Outcome::Throttled,
            };
            let attempt = Attempt {
                at: r.at,
                user: &r.user,
                service: &r.service,
                rhost: r.rhost.as_deref(),
                password_id: r.password_id,
                outcome,
            };
            let config = self.shared.config.clone();
            self.record(&config, &attempt);
        }
        if let Some((level, line)) = &after.log {
            self.shared.log.line(*level, line);
        }
    }

    /// Trims the audit log and deletes expired throttle rows, once per PRUNE_EVERY across
    /// all workers, and at the first request after a start. (On PostgreSQL a role that
    /// may not delete audit events trims only the throttle table: the administrators'
    /// apppassd trims the audit log.)
    fn maintain(&mut self, now: Timestamp) {
        let last = self.shared.last_prune.load(Ordering::Relaxed);
        if now - last < PRUNE_EVERY
            || self
                .shared
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let keep = retention(&self.shared.config);
        let result = match self.store() {
            Ok(store) => store.prune(keep, now),
            Err(_) => return,
        };
        if let Err(e) = result {
            self.failed(&e);
            self.shared
                .log
                .warning(&format!("could not trim the audit log: {e}"));
        }
    }

    fn answer(&mut self, peer: &Peer, request: Request, now: Timestamp) -> (Reply, Option<After>) {
        let result = match request {
            Request::Authenticate(a) => {
                let (response, after) = self.authenticate(peer, a, now);
                return (response.into(), Some(after));
            }
            Request::Status => Err(Response::error(
                ErrorKind::Internal,
                "status is answered by the connection",
            )),
            Request::Add(a) => self.add(peer, a, now),
            Request::List { user, all } => self.list(peer, user.as_deref(), all, now),
            Request::Revoke { ids } => self.revoke(peer, &ids, now),
            Request::RevokeAll { user, service } => {
                self.revoke_all(peer, user.as_deref(), service.as_deref(), now)
            }
            Request::Log { user, all, limit } => self.events(peer, user.as_deref(), all, limit),
            Request::Unlock { user, rhost } => self.unlock(peer, user.as_deref(), rhost.as_deref()),
            Request::Backup => return (self.backup(peer), None),
            Request::SetNetworks { id, from } => self.set_networks(peer, id, from.as_deref(), now),
            Request::PasswordChanged { user } => self.password_changed(peer, &user, now),
            Request::Prove
            | Request::Answer { .. }
            | Request::SignIn { .. }
            | Request::Resume { .. }
            | Request::SignOut => Err(Response::error(
                ErrorKind::Internal,
                "proofs and sessions are answered by the connection",
            )),
            Request::Regenerate { id } => self.regenerate(peer, id, now),
        };
        match result {
            Ok(r) | Err(r) => (r.into(), None),
        }
    }

    // ---- Logins ----

    fn authenticate(&mut self, peer: &Peer, a: AuthRequest, now: Timestamp) -> (Response, After) {
        let user = String::from_utf8(a.user.clone()).ok();
        let line = LogContext::new(peer, &a, user.as_deref());
        // Who may ask: root and auth_trusted for anyone; everyone else for themselves.
        if peer.class != Class::System && user.as_deref().and_then(peer::user_uid) != Some(peer.uid)
        {
            self.shared.health.count(count::LOGIN_REFUSED_PEER);
            self.shared.log.line(
                Level::Notice,
                &format!(
                    "{}refusing to check another user's password for pid {} (uid {}): only root and auth_trusted may; {}",
                    line.prefix, peer.pid, peer.uid, line.context
                ),
            );
            return (
                Response::error(
                    ErrorKind::Denied,
                    "only root and the users in auth_trusted may check another user's password",
                ),
                After::default(),
            );
        }
        // The stacks that prove a person must never take an app password: that would let
        // one app password make the next. Refused unchecked, whatever was typed.
        if apppass_proto::helper::SERVICES.contains(&a.pam_service.as_str()) {
            self.shared.log.line(
                Level::Warning,
                &format!(
                    "{}refusing an app password in the {} stack, which proves a person's account password: remove pam_apppass from it; reason=loopback {}",
                    line.prefix, a.pam_service, line.context
                ),
            );
            return (
                Response::Auth(AuthAnswer::Denied {
                    reason: Reason::Loopback,
                    id: None,
                }),
                After::default(),
            );
        }
        let candidate = Candidate::parse(&a.password);
        drop(a.password);
        let result = self.login(
            user.as_deref(),
            candidate.as_ref(),
            &a.service,
            a.rhost.as_deref(),
            now,
        );
        let shared = &self.shared;
        match result {
            Ok((answer, record)) => {
                let (level, text, counter) = match &answer {
                    AuthAnswer::Success { id, label } => (
                        Level::Info,
                        format!(
                            "authentication success; {} id={id} label={}",
                            line.context,
                            quoted(label)
                        ),
                        count::LOGIN_SUCCESS,
                    ),
                    AuthAnswer::Denied { reason, id } => (
                        Level::Notice,
                        format!(
                            "authentication failure; {} reason={}{}",
                            line.context,
                            reason.as_str(),
                            id.map(|i| format!(" id={i}")).unwrap_or_default()
                        ),
                        if *reason == Reason::Throttled {
                            count::LOGIN_THROTTLED
                        } else {
                            count::LOGIN_FAILURE
                        },
                    ),
                    AuthAnswer::NoAppPasswords => (
                        Level::Notice,
                        format!(
                            "authentication failure; {} reason=no_app_passwords",
                            line.context
                        ),
                        count::LOGIN_NO_APP_PASSWORDS,
                    ),
                };
                shared.health.count(counter);
                let after = After {
                    record,
                    log: Some((level, format!("{}{text}", line.prefix))),
                };
                (Response::Auth(answer), after)
            }
            Err(why) => {
                shared.health.count(count::UNAVAILABLE);
                shared.log.err(&format!(
                    "{}store unavailable: {why}; {}",
                    line.prefix, line.context
                ));
                (
                    Response::error(ErrorKind::Unavailable, why),
                    After::default(),
                )
            }
        }
    }

    /// Lookup, one verification, verdict, and the record to write once the answer is sent.
    /// `Err`: the store could not be used.
    fn login(
        &mut self,
        user: Option<&str>,
        candidate: Option<&Candidate>,
        service: &str,
        rhost: Option<&str>,
        now: Timestamp,
    ) -> Result<(AuthAnswer, Option<Record>), String> {
        // A record of this user still being written (the previous answer went out first)
        // is waited for: the lookup must see its throttle counter.
        if let Some(u) = user {
            self.shared.recording.wait_for(Some(u));
        }
        let found = match user {
            Some(u) => {
                let query = LookupQuery {
                    user: u,
                    selector: candidate.map(Candidate::selector),
                    rhost: rhost.unwrap_or(""),
                    now,
                };
                let looked = self.store()?.lookup(&query);
                looked.map_err(|e| {
                    self.failed(&e);
                    e.to_string()
                })?
            }
            None => Lookup {
                credential: None,
                has_passwords: false,
                throttled: false,
            },
        };
        let config = self.shared.config.clone();
        let record = |password_id, outcome| Record {
            at: now,
            user: user.unwrap_or("").to_string(),
            service: service.to_string(),
            rhost: rhost.map(str::to_string),
            password_id,
            outcome,
        };
        // Guesses are counted per (user, remote host, password named): those at
        // selectors that are not the user's all on one counter, so they never slow down
        // a real password, and a stale device locks out only its own. A throttled one is
        // refused before any hashing: the point is to stop paying for guesses, and to
        // stop them.
        if found.throttled && config.throttle_for(rhost.unwrap_or("")).is_some() {
            let id = found.credential.as_ref().map(|c| c.id);
            return Ok((
                AuthAnswer::Denied {
                    reason: Reason::Throttled,
                    id: None,
                },
                Some(record(id, Recorded::Throttled)),
            ));
        }
        // The account that has the name now, asked on every path that hashes (the same
        // work whichever verdict follows): a row is only its owner's.
        let holder = user.and_then(peer::user_uid);
        let owned = found
            .credential
            .as_ref()
            .is_some_and(|c| c.owner.holds(holder));
        // Exactly one argon2id verification on every path, so that the time taken says
        // nothing about which of them was taken.
        let dummy;
        let hash = match &found.credential {
            Some(row) => row.hash.as_str(),
            None => {
                dummy = secret::dummy_hash(config.hash).map_err(|e| e.to_string())?;
                dummy.as_str()
            }
        };
        let (matched, checkable) = match self
            .with_hasher(|h| secret::verify_in(h, candidate, hash, Some(config.hash_cap)))
        {
            Ok(m) => (m, true),
            Err(e) => {
                // A row that cannot be checked (damaged, or asking for more than the
                // caps) is refused, never computed; the answer still costs what a
                // check costs.
                self.shared.log.err(&format!(
                    "app password id={} of {} cannot be checked, refusing it: {e}",
                    found.credential.as_ref().map_or(0, |c| c.id),
                    field(user.unwrap_or(""))
                ));
                let dummy = secret::dummy_hash(config.hash).map_err(|e| e.to_string())?;
                let _ = self.with_hasher(|h| secret::verify_in(h, candidate, &dummy, None));
                (false, false)
            }
        };
        let answer = match (&found.credential, checkable) {
            (Some(row), false) => AuthAnswer::Denied {
                reason: Reason::BadHash,
                id: Some(row.id),
            },
            _ => judge(
                found.credential.as_ref(),
                found.has_passwords,
                candidate.is_some(),
                matched,
                owned,
                service,
                rhost,
                &config,
                now,
            ),
        };
        if let (AuthAnswer::Denied { reason, .. }, Some(row)) = (&answer, &found.credential) {
            if *reason == Reason::OwnerChanged {
                self.shared.log.warning(&owner_changed(row, holder));
            }
            if *reason == Reason::Network && Networks::from_column(&row.networks).is_err() {
                self.shared.log.err(&format!(
                    "app password id={} of {} has networks that cannot be read, refusing it: {}",
                    row.id,
                    field(&row.user),
                    field(&row.networks)
                ));
            }
        }
        // Best effort, after the verdict: a locked, read-only or full database must not
        // turn a right password into a failed login. Users without app passwords leave
        // no trace here (syslog has them): anyone can send any name.
        let id = found.credential.as_ref().map(|c| c.id);
        let recorded = match &answer {
            AuthAnswer::Success { .. } => Some(record(id, Recorded::Success)),
            AuthAnswer::Denied { reason, .. } => Some(record(id, Recorded::Failure(*reason))),
            AuthAnswer::NoAppPasswords => None,
        };
        Ok((answer, recorded))
    }

    /// Writes the attempt down (usage, audit, throttle); a failure to do so is logged,
    /// not fatal.
    fn record(&mut self, config: &Config, attempt: &Attempt<'_>) {
        let keep = retention(config);
        let rule = config.throttle_for(attempt.rhost.unwrap_or(""));
        let result = match self.store() {
            Ok(store) => store.record_attempt(attempt, rule.as_ref(), keep),
            Err(_) => return,
        };
        if let Err(e) = result {
            self.failed(&e);
            self.shared
                .log
                .warning(&format!("could not record the attempt: {e}"));
        }
    }

    // ---- Management ----

    /// The caller's user name, and the user a request is about: `requested`, or the
    /// caller. Only admins may name someone else.
    fn target(&self, peer: &Peer, requested: Option<&str>) -> Result<(String, String), Response> {
        let me = peer::user_name(peer.uid).ok_or_else(|| {
            Response::error(
                ErrorKind::Denied,
                format!("uid {} has no user name", peer.uid),
            )
        })?;
        let user = requested.unwrap_or(&me).to_string();
        if user != me && !peer.admin {
            return Err(Response::error(
                ErrorKind::Denied,
                format!("only root or the admin group may manage {user}'s app passwords"),
            ));
        }
        Ok((me, user))
    }

    /// The store, or the answer to give when it cannot be used.
    fn usable_store(&mut self) -> Result<&dyn Store, Response> {
        match self.store() {
            Ok(_) => {}
            Err(why) => {
                self.shared.health.count(count::UNAVAILABLE);
                return Err(Response::error(
                    ErrorKind::Unavailable,
                    format!("store unavailable: {why}"),
                ));
            }
        }
        self.store
            .as_deref()
            .ok_or_else(|| Response::error(ErrorKind::Unavailable, "store unavailable"))
    }

    /// The answer for a store error of a management request, the one place where store
    /// errors become protocol errors.
    fn store_failure(&mut self, e: StoreError) -> Response {
        self.failed(&e);
        let kind = match &e {
            StoreError::Limit(_) => ErrorKind::Limit,
            StoreError::Unsupported(_) => ErrorKind::Usage,
            _ => {
                self.shared.health.count(count::UNAVAILABLE);
                ErrorKind::Unavailable
            }
        };
        Response::error(kind, e.to_string())
    }

    fn audit(&self, peer: &Peer, me: &str, message: &str) {
        self.shared
            .log
            .info(&format!("{message} by={} uid={}", field(me), peer.uid));
    }

    /// Tells `user` by mail, off this worker (see [`crate::notify`]).
    fn notify(&self, peer: &Peer, by: &str, user: &str, what: What, password: Option<About>) {
        let notice = Notice {
            what,
            user: user.to_string(),
            password,
            by: by.to_string(),
            by_uid: peer.uid,
            at: time::now(),
        };
        self.shared.notify.send(&self.shared, notice);
    }

    /// Draws a new password, hashes it and has `insert` store it with its selector and
    /// hash, drawing again while the selector is taken. A store error becomes the answer
    /// to give (a limit of `user`'s, in words).
    fn make_password<T>(
        &mut self,
        user: &str,
        mut insert: impl FnMut(&dyn Store, &str, &str) -> Result<T, StoreError>,
    ) -> Result<(T, NewPassword), Response> {
        let config = self.shared.config.clone();
        self.usable_store()?;
        let mut tries = 0;
        loop {
            let password = NewPassword::generate()
                .map_err(|e| Response::error(ErrorKind::Internal, e.to_string()))?;
            let hash = self
                .with_hasher(|h| password.hash_in(h, config.hash))
                .map_err(|e| Response::error(ErrorKind::Internal, e.to_string()))?;
            let store = self.usable_store()?;
            match insert(store, password.selector(), &hash) {
                Ok(done) => return Ok((done, password)),
                Err(StoreError::SelectorTaken) if tries + 1 < SELECTOR_TRIES => tries += 1,
                Err(StoreError::Limit(n)) => {
                    return Err(Response::error(
                        ErrorKind::Limit,
                        format!(
                            "{user} already has {n} active app passwords, the most allowed (max_passwords in the configuration): revoke one first"
                        ),
                    ));
                }
                Err(e) => return Err(self.store_failure(e)),
            }
        }
    }

    fn add(&mut self, peer: &Peer, a: AddRequest, now: Timestamp) -> Result<Response, Response> {
        let (me, user) = self.target(peer, a.user.as_deref())?;
        let usage = |m: String| Response::error(ErrorKind::Usage, m);
        policy::check_user(&user).map_err(usage)?;
        policy::check_service(&a.service).map_err(usage)?;
        policy::check_label(&a.label).map_err(usage)?;
        let config = self.shared.config.clone();
        if !peer.admin {
            may_choose(&config, &a.service)?;
        } else if peer.uid != 0 {
            self.admin_may_make(&me, &user, &a.service)?;
        }
        let expires = expiry(&config, a.expires.as_deref(), now)?;
        let networks = networks(&config, &a.service, a.from.as_deref())?.to_string();
        // The password is the account's that has the name now, not the name's: logins
        // check that the name still belongs to it.
        let owner = Account::of(peer::user_uid(&user));
        let max = max_passwords(&config);
        let (id, password) = self.make_password(&user, |store, selector, hash| {
            let row = NewRow {
                user: &user,
                service: &a.service,
                label: &a.label,
                selector,
                hash,
                created: now,
                expires,
                owner,
                networks: &networks,
            };
            match max {
                Some(max) => store.create_limited(&row, max),
                None => store.create(&row),
            }
        })?;
        self.audit(
            peer,
            &me,
            &format!(
                "app password added: id={id} user={} service={} owner_uid={} from={}",
                field(&user),
                field(&a.service),
                match owner {
                    Account::Uid(uid) => uid.to_string(),
                    _ => "none".to_string(),
                },
                field(if networks.is_empty() { "*" } else { &networks })
            ),
        );
        let about = About {
            id,
            label: a.label.clone(),
            service: a.service.clone(),
            networks: networks.clone(),
            expires,
        };
        self.notify(peer, &me, &user, What::Created, Some(about));
        Ok(Response::Added(Box::new(Added {
            id,
            user,
            service: a.service,
            label: a.label,
            created: now,
            expires,
            networks,
            password: password.display(),
        })))
    }

    /// An admin who is not root makes no `*` password, and none for root or another
    /// admin: malware running as an admin must not turn that into root.
    fn admin_may_make(&self, me: &str, user: &str, scope: &str) -> Result<(), Response> {
        let denied = |m: String| Err(Response::error(ErrorKind::Denied, m));
        if scope == policy::ANY_SERVICE {
            return denied(
                "* (every service) is root's to give: name the services (or a group)".into(),
            );
        }
        if user != me {
            let uid = peer::user_uid(user);
            if uid == Some(0) {
                return denied(format!("only root makes app passwords for {user}"));
            }
            if uid.is_some_and(|uid| self.shared.access.is_admin_account(user, uid)) {
                return denied(format!(
                    "{user} is an admin too: only root makes app passwords for admins"
                ));
            }
        }
        Ok(())
    }

    fn list(
        &mut self,
        peer: &Peer,
        user: Option<&str>,
        all: bool,
        now: Timestamp,
    ) -> Result<Response, Response> {
        let (_, user) = self.target(peer, user)?;
        if all && !peer.admin {
            return Err(Response::error(
                ErrorKind::Denied,
                "only root or the admin group may list everyone's app passwords",
            ));
        }
        let owner = if all {
            Owner::Anyone
        } else {
            Owner::User(&user)
        };
        self.settle_records(&owner);
        let rows = self.usable_store()?.list(owner);
        let rows = rows.map_err(|e| self.store_failure(e))?;
        // Whose each name is now, asked once per user.
        let mut holders = std::collections::HashMap::new();
        Ok(Response::Passwords(
            rows.iter()
                .map(|r| {
                    let holder = *holders
                        .entry(r.user.as_str())
                        .or_insert_with(|| peer::user_uid(&r.user));
                    password_info(r, &self.shared.config, now, r.owner.holds(holder))
                })
                .collect(),
        ))
    }

    /// A listing shows the logins already answered: their records are waited for.
    fn settle_records(&self, owner: &Owner<'_>) {
        self.shared.recording.wait_for(match owner {
            Owner::User(u) => Some(u),
            Owner::Anyone => None,
        });
    }

    fn revoke(&mut self, peer: &Peer, ids: &[i64], now: Timestamp) -> Result<Response, Response> {
        let (me, _) = self.target(peer, None)?;
        let owner = reachable(peer, &me);
        let done = self.usable_store()?.revoke(ids, owner, now);
        let done = done.map_err(|e| self.store_failure(e))?;
        let mut out = Vec::with_capacity(done.len());
        for (id, outcome) in done {
            if outcome == Revoked::Now {
                self.audit(peer, &me, &format!("app password revoked: id={id}"));
                self.notify_revoked(peer, &me, id);
            }
            out.push((
                id,
                match outcome {
                    Revoked::Now => RevokeOutcome::Now,
                    Revoked::Already => RevokeOutcome::Already,
                    Revoked::NotFound => RevokeOutcome::NotFound,
                },
            ));
        }
        Ok(Response::Revoked(out))
    }

    /// Tells the owner of app password `id`, just revoked by `me`, unless it is theirs.
    fn notify_revoked(&mut self, peer: &Peer, me: &str, id: i64) {
        if !peer.admin {
            return;
        }
        let Ok(Ok(Some(row))) = self.usable_store().map(|s| s.find(id, Owner::Anyone)) else {
            return;
        };
        if row.user != me {
            let about = About {
                id,
                label: row.label,
                service: row.service,
                networks: row.networks,
                expires: row.expires,
            };
            self.notify(peer, me, &row.user, What::Revoked, Some(about));
        }
    }

    /// Changes an app password's source networks: its owner, or an admin.
    fn set_networks(
        &mut self,
        peer: &Peer,
        id: i64,
        from: Option<&str>,
        now: Timestamp,
    ) -> Result<Response, Response> {
        let (me, _) = self.target(peer, None)?;
        let owner = reachable(peer, &me);
        let not_found = || {
            Response::error(
                ErrorKind::NotFound,
                format!("no app password with id {id} that you may change"),
            )
        };
        let found = self.usable_store()?.find(id, owner);
        let row = found
            .map_err(|e| self.store_failure(e))?
            .ok_or_else(not_found)?;
        let config = self.shared.config.clone();
        let networks = networks(&config, &row.service, from)?.to_string();
        let changed = self.usable_store()?.set_networks(id, owner, &networks);
        if !changed.map_err(|e| self.store_failure(e))? {
            return Err(not_found());
        }
        self.audit(
            peer,
            &me,
            &format!(
                "app password networks changed: id={id} user={} from={}",
                field(&row.user),
                field(if networks.is_empty() { "*" } else { &networks })
            ),
        );
        let holder = peer::user_uid(&row.user);
        let row = Listing { networks, ..row };
        Ok(Response::Passwords(vec![password_info(
            &row,
            &config,
            now,
            row.owner.holds(holder),
        )]))
    }

    /// A new secret for app password `id`, with its user, label, scope, networks and
    /// owner, and as long a life as it had (from now, within max_lifetime); the old one
    /// is revoked and linked to it in the same transaction. Its owner, or an admin; a
    /// person who is not an admin only within what `add` would let them make.
    fn regenerate(&mut self, peer: &Peer, id: i64, now: Timestamp) -> Result<Response, Response> {
        let (me, _) = self.target(peer, None)?;
        let owner = reachable(peer, &me);
        let not_found = || {
            Response::error(
                ErrorKind::NotFound,
                format!("no app password with id {id} that you may regenerate"),
            )
        };
        let already = |new: i64| {
            Response::error(
                ErrorKind::Usage,
                format!("app password {id} was replaced already, by {new}: regenerate {new}"),
            )
        };
        let found = self.usable_store()?.find(id, owner);
        let old = found
            .map_err(|e| self.store_failure(e))?
            .ok_or_else(not_found)?;
        if let Some(new) = old.replaced_by {
            return Err(already(new));
        }
        // The row is the account's it was made for: a name given to another account
        // does not inherit it, not even by regenerating.
        let holder = peer::user_uid(&old.user);
        if !old.owner.holds(holder) {
            return Err(Response::error(
                ErrorKind::Denied,
                format!(
                    "app password {id} was made for an account that no longer has the name {}: it cannot be regenerated; revoke it",
                    old.user
                ),
            ));
        }
        let config = self.shared.config.clone();
        if !peer.admin {
            may_choose(&config, &old.service)?;
        } else if peer.uid != 0 {
            self.admin_may_make(&me, &old.user, &old.service)?;
        }
        let from = (!old.networks.is_empty()).then_some(old.networks.as_str());
        let networks = networks(&config, &old.service, from)?.to_string();
        let expires = regenerated_expiry(&config, &old, now);
        let max = max_passwords(&config);
        let (done, password) = self.make_password(&old.user, |store, selector, hash| {
            let row = NewRow {
                user: &old.user,
                service: &old.service,
                label: &old.label,
                selector,
                hash,
                created: now,
                expires,
                owner: old.owner,
                networks: &networks,
            };
            store.regenerate(id, owner, &row, max)
        })?;
        let new = match done {
            Regenerated::New(new) => new,
            Regenerated::NotFound => return Err(not_found()),
            Regenerated::Already(new) => return Err(already(new)),
        };
        self.audit(
            peer,
            &me,
            &format!(
                "app password regenerated: id={new} replaces={id} user={} service={} from={}",
                field(&old.user),
                field(&old.service),
                field(if networks.is_empty() { "*" } else { &networks })
            ),
        );
        let about = About {
            id: new,
            label: old.label.clone(),
            service: old.service.clone(),
            networks: networks.clone(),
            expires,
        };
        self.notify(
            peer,
            &me,
            &old.user,
            What::Regenerated { replaces: id },
            Some(about),
        );
        Ok(Response::Added(Box::new(Added {
            id: new,
            user: old.user,
            service: old.service,
            label: old.label,
            created: now,
            expires,
            networks,
            password: password.display(),
        })))
    }

    fn revoke_all(
        &mut self,
        peer: &Peer,
        user: Option<&str>,
        service: Option<&str>,
        now: Timestamp,
    ) -> Result<Response, Response> {
        let (me, user) = self.target(peer, user)?;
        if let Some(s) = service {
            policy::check_service(s).map_err(|m| Response::error(ErrorKind::Usage, m))?;
        }
        let n = self.usable_store()?.revoke_all(&user, service, now);
        let n = n.map_err(|e| self.store_failure(e))?;
        self.audit(
            peer,
            &me,
            &format!(
                "app passwords revoked: count={n} user={} service={}",
                field(&user),
                field(service.unwrap_or("*"))
            ),
        );
        if n > 0 && user != me {
            let what = What::RevokedAll {
                count: n,
                service: service.map(str::to_string),
            };
            self.notify(peer, &me, &user, what, None);
        }
        Ok(Response::Count(n as u64))
    }

    /// The module's password hook: `user`'s account password has just been changed.
    /// Root and auth_trusted may say so of anyone (passwd is setuid root), others only of
    /// themselves, as with logins: nobody else can have anyone's app passwords revoked.
    fn password_changed(
        &mut self,
        peer: &Peer,
        user: &str,
        now: Timestamp,
    ) -> Result<Response, Response> {
        if peer.class != Class::System && peer::user_uid(user) != Some(peer.uid) {
            self.shared.log.line(
                Level::Notice,
                &format!(
                    "refusing to revoke another user's app passwords on a password change for pid {} (uid {}): only root and auth_trusted may; user={}",
                    peer.pid,
                    peer.uid,
                    field(user)
                ),
            );
            return Err(Response::error(
                ErrorKind::Denied,
                "only root and the users in auth_trusted may report another user's password change",
            ));
        }
        if !self.config().revoke_on_password_change {
            self.shared.log.info(&format!(
                "password changed; app passwords kept (revoke_on_password_change = no) user={} uid={}",
                field(user),
                peer.uid
            ));
            return Ok(Response::Count(0));
        }
        let n = self.usable_store()?.revoke_for_password_change(user, now);
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                let answer = self.store_failure(e);
                if let Response::Error { message, .. } = &answer {
                    self.shared.log.err(&format!(
                        "password changed but app passwords NOT revoked: {message}; user={} (run apppass revoke --all --user NAME)",
                        field(user)
                    ));
                }
                return Err(answer);
            }
        };
        self.shared.log.line(
            Level::Notice,
            &format!(
                "app passwords revoked: reason={PASSWORD_CHANGE} count={n} user={} uid={}",
                field(user),
                peer.uid
            ),
        );
        if n > 0 {
            let by = peer::user_name(peer.uid).unwrap_or_else(|| format!("uid {}", peer.uid));
            self.notify(peer, &by, user, What::PasswordChanged { count: n }, None);
        }
        Ok(Response::Count(n as u64))
    }

    fn events(
        &mut self,
        peer: &Peer,
        user: Option<&str>,
        all: bool,
        limit: u32,
    ) -> Result<Response, Response> {
        let (_, user) = self.target(peer, user)?;
        if all && !peer.admin {
            return Err(Response::error(
                ErrorKind::Denied,
                "only root or the admin group may read everyone's log",
            ));
        }
        let owner = if all {
            Owner::Anyone
        } else {
            Owner::User(&user)
        };
        self.settle_records(&owner);
        let events = self.usable_store()?.events(owner, limit as usize);
        let events = events.map_err(|e| self.store_failure(e))?;
        Ok(Response::Events(
            events
                .into_iter()
                .map(|e| EventInfo {
                    time: e.time,
                    user: e.user,
                    service: e.service,
                    password_id: e.password_id,
                    rhost: e.rhost,
                    outcome: e.outcome,
                    reason: e.reason,
                })
                .collect(),
        ))
    }

    fn unlock(
        &mut self,
        peer: &Peer,
        user: Option<&str>,
        rhost: Option<&str>,
    ) -> Result<Response, Response> {
        let (me, user) = self.target(peer, user)?;
        self.shared.recording.wait_for(Some(&user));
        let n = self.usable_store()?.unlock(&user, rhost);
        let n = n.map_err(|e| self.store_failure(e))?;
        self.audit(
            peer,
            &me,
            &format!(
                "throttling lifted: user={} rhost={}",
                field(&user),
                field(rhost.unwrap_or("*"))
            ),
        );
        Ok(Response::Count(n as u64))
    }

    /// A copy of the store in apppassd's directory, for the connection to stream (root
    /// only: it holds every hash).
    fn backup(&mut self, peer: &Peer) -> Reply {
        if peer.uid != 0 {
            return Response::error(
                ErrorKind::Denied,
                "only root may back up the store: it holds every app password's hash",
            )
            .into();
        }
        let Location::Sqlite(db) = &self.shared.config.db else {
            return Response::error(
                ErrorKind::Usage,
                "apppassd makes online copies of SQLite stores only: back PostgreSQL up with pg_dump",
            )
            .into();
        };
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let dir = db.parent().map(PathBuf::from).unwrap_or_default();
        let file = BackupFile(dir.join(format!(
            ".apppass-backup-{}-{}.db",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        )));
        let _ = std::fs::remove_file(&file.0);
        let result = match self.usable_store() {
            Ok(store) => store.backup_to(&file.0),
            Err(r) => return r.into(),
        };
        match result {
            Ok(()) => {
                self.shared.log.info(&format!(
                    "backup made for uid {} (pid {})",
                    peer.uid, peer.pid
                ));
                Reply::Backup(file)
            }
            Err(e) => self.store_failure(e).into(),
        }
    }
}

/// How much of the audit log and the throttle table to keep.
fn retention(config: &Config) -> Retention {
    Retention {
        max_age: config.audit_max_age,
        max_rows: config.audit_max_rows,
        throttle_rows: config.throttle_max_rows,
    }
}

/// The log line's parts for one login: libpam's prefix and pam_unix's fields.
struct LogContext {
    /// `pam_apppass(SERVICE:auth): `, as libpam prefixed the module's own lines.
    prefix: String,
    context: String,
}

impl LogContext {
    fn new(peer: &Peer, a: &AuthRequest, user: Option<&str>) -> LogContext {
        let opt = |v: Option<&str>| v.map(field).unwrap_or_default();
        let user = match user {
            Some(u) => field(u),
            None => field(&String::from_utf8_lossy(&a.user)),
        };
        LogContext {
            prefix: format!("pam_apppass({}:auth): ", field(&a.pam_service)),
            context: format!(
                "logname={} uid={uid} euid={uid} tty={} ruser={} rhost={} user={user} service={}",
                opt(a.logname.as_deref()),
                opt(a.tty.as_deref()),
                opt(a.ruser.as_deref()),
                opt(a.rhost.as_deref()),
                field(&a.service),
                uid = peer.uid,
            ),
        }
    }
}

/// Why a right password of this row was refused to the account that has its name now.
fn owner_changed(row: &Credential, holder: Option<u32>) -> String {
    let now = match holder {
        Some(uid) => format!("its user name now belongs to uid {uid}"),
        None => "its user name has no account now".to_string(),
    };
    let head = format!("app password id={} of {}", row.id, field(&row.user));
    match row.owner {
        Account::Uid(uid) => format!(
            "{head} was made for uid {uid}, and {now}: refusing it (a name given to another account does not inherit app passwords); revoke it: apppass revoke {}",
            row.id
        ),
        Account::NoAccount => format!(
            "{head} was made when no account had that name, and {now}: refusing it; revoke it: apppass revoke {}",
            row.id
        ),
        Account::Unadopted => format!(
            "{head} was made before owners were recorded and is not adopted yet: refusing it until the apppassd that may change the store adopts it when it starts"
        ),
    }
}

/// Whose app passwords `peer` (the user `me`) may act on by id: everyone's for an
/// admin, else their own.
fn reachable<'a>(peer: &Peer, me: &'a str) -> Owner<'a> {
    if peer.admin {
        Owner::Anyone
    } else {
        Owner::User(me)
    }
}

/// The verdict on one verified attempt. `owned`: the account that has the user's name
/// now is the one the row was made for.
#[allow(clippy::too_many_arguments)]
fn judge(
    credential: Option<&Credential>,
    has_passwords: bool,
    app_shaped: bool,
    matched: bool,
    owned: bool,
    service: &str,
    rhost: Option<&str>,
    config: &Config,
    now: Timestamp,
) -> AuthAnswer {
    let Some(row) = credential else {
        return if !has_passwords {
            AuthAnswer::NoAppPasswords
        } else if !app_shaped {
            AuthAnswer::Denied {
                reason: Reason::NotAppPassword,
                id: None,
            }
        } else {
            AuthAnswer::Denied {
                reason: Reason::UnknownPassword,
                id: None,
            }
        };
    };
    let denied = |reason| AuthAnswer::Denied {
        reason,
        id: Some(row.id),
    };
    if !matched {
        return denied(Reason::WrongPassword);
    }
    match Status::of(row.dates, config.idle_expiry, now).owned(owned) {
        Status::Revoked => return denied(Reason::Revoked),
        Status::Orphaned => return denied(Reason::OwnerChanged),
        Status::Expired => return denied(Reason::Expired),
        Status::Idle => return denied(Reason::Idle),
        Status::Active => {}
    }
    if !policy::scope_allows(&row.service, service, &config.groups) {
        return denied(Reason::WrongService);
    }
    // Networks that cannot be read (a damaged row) allow nothing.
    if !Networks::from_column(&row.networks).is_ok_and(|n| n.allows(rhost)) {
        return denied(Reason::Network);
    }
    AuthAnswer::Success {
        id: row.id,
        label: row.label.clone(),
    }
}

/// Whether someone who is not an admin may make an app password for `scope`: only for
/// what `services` lists. `*`, and every service not listed (sshd, sudo, su, login, ...),
/// are the admins' to give.
fn may_choose(config: &Config, scope: &str) -> Result<(), Response> {
    if policy::may_choose(scope, &config.services) {
        return Ok(());
    }
    let what = if scope == policy::ANY_SERVICE {
        "* (every service) is not a scope you may choose".to_string()
    } else {
        format!("{scope} is not a service you may choose")
    };
    let message = if config.services.is_empty() {
        format!("{what}: only an admin makes app passwords here; ask one")
    } else {
        let listed: Vec<String> = config
            .services
            .iter()
            .map(|s| match config.groups.get(s) {
                Some(members) => format!("{s} (= {})", members.join(" ")),
                None => s.clone(),
            })
            .collect();
        format!(
            "{what}; ask an admin. You may choose: {}",
            listed.join(", ")
        )
    };
    Err(Response::error(ErrorKind::Denied, message))
}

/// The source networks an app password of `service` gets from `from` (`None`: anywhere),
/// within the policy: `require_from` names the services that must have some (a password
/// for a group holding one, or for every service, must too).
fn networks(config: &Config, service: &str, from: Option<&str>) -> Result<Networks, Response> {
    let networks = match from {
        Some(text) => {
            Networks::parse(text).map_err(|e| Response::error(ErrorKind::Usage, e.to_string()))?
        }
        None => Networks::default(),
    };
    // A scope that opens any listed service (a group holding it, `*`) must name networks.
    let required = !config.require_from.is_empty()
        && (service == policy::ANY_SERVICE
            || config.require_from.iter().any(|s| {
                s == policy::ANY_SERVICE || policy::scope_allows(service, s, &config.groups)
            }));
    if required && networks.is_any() {
        return Err(Response::error(
            ErrorKind::Denied,
            format!(
                "app passwords for {} must name the networks they may be used from (require_from in the configuration: {}): give --from ADDRESS/PREFIX,...",
                if service == policy::ANY_SERVICE {
                    "every service"
                } else {
                    service
                },
                config.require_from.join(" ")
            ),
        ));
    }
    Ok(networks)
}

/// The configured max_passwords, as a count.
fn max_passwords(config: &Config) -> Option<usize> {
    config
        .max_passwords
        .map(|max| usize::try_from(max).unwrap_or(usize::MAX))
}

/// When a regenerated app password expires: as long after `now` as `old` lived (never,
/// if it never expired), and no later than max_lifetime allows.
fn regenerated_expiry(config: &Config, old: &Listing, now: Timestamp) -> Option<Timestamp> {
    let lifetime = old.expires.map(|e| e.saturating_sub(old.created).max(1));
    let expires = lifetime.map(|l| now.saturating_add(l));
    match config.max_lifetime {
        Some(max) => {
            Some(expires.map_or(now.saturating_add(max), |e| e.min(now.saturating_add(max))))
        }
        None => expires,
    }
}

/// When a new app password expires, within the configured lifetimes.
fn expiry(
    config: &Config,
    requested: Option<&str>,
    now: Timestamp,
) -> Result<Option<Timestamp>, Response> {
    let expires = match requested {
        Some(text) => Some(
            time::parse_expiry(text, now)
                .map_err(|e| Response::error(ErrorKind::Usage, e.to_string()))?,
        ),
        None => config
            .default_lifetime
            .or(config.max_lifetime)
            .map(|d| now.saturating_add(d)),
    };
    if expires.is_some_and(|e| e <= now) {
        return Err(Response::error(
            ErrorKind::Usage,
            "--expires is in the past",
        ));
    }
    if let Some(max) = config.max_lifetime {
        if expires.is_none_or(|e| e > now.saturating_add(max)) {
            return Err(Response::error(
                ErrorKind::Denied,
                format!(
                    "app passwords may live at most {} (max_lifetime in the configuration): give a shorter --expires",
                    time::format_duration(max)
                ),
            ));
        }
    }
    Ok(expires)
}

fn password_info(r: &Listing, config: &Config, now: Timestamp, owned: bool) -> PasswordInfo {
    let status = Status::of(r.dates(), config.idle_expiry, now).owned(owned);
    PasswordInfo {
        id: r.id,
        user: r.user.clone(),
        service: r.service.clone(),
        label: r.label.clone(),
        created: r.created,
        expires: r.expires,
        revoked: r.revoked,
        status: status.as_str().to_string(),
        last_used: r.last_used,
        last_service: r.last_service.clone(),
        last_rhost: r.last_rhost.clone(),
        use_count: r.use_count,
        networks: r.networks.clone(),
        replaced_by: r.replaced_by,
        expires_soon: status == Status::Active
            && r.expires
                .zip(config.expiry_warning)
                .is_some_and(|(e, w)| e - now <= w),
    }
}
