//! The messages: what a client may ask ([`Request`]) and what apppassd answers
//! ([`Response`]), each with its encoding. One request, one answer (a backup answers
//! with chunks, then [`Response::Done`]; a proof of presence or a sign-in answers with
//! [`Response::Conversation`] until the PAM stack is done, each answered by
//! [`Request::Answer`] on the same connection).

use std::fmt;

use zeroize::Zeroizing;

use crate::wire::{Decoder, Encoder, WireError};

/// Why a login did not succeed, as syslog's `reason=` field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The app password's stored hash cannot be checked (damaged, or beyond the
    /// configured argon2 caps): refused, whatever was typed.
    BadHash,
    /// The right password, but the user name now belongs to another account than the
    /// one it was made for, or to none (deleted, and perhaps given to someone else).
    OwnerChanged,
    /// The right password, from a remote host outside its source networks (or from no
    /// literal address at all): a stolen password, so it counts as a guess.
    Network,
    /// An app password offered to the stacks that prove a person (`apppass`,
    /// `apppass-portal`): never accepted there, whatever it is.
    Loopback,
}

impl Reason {
    const ALL: [Reason; 12] = [
        Reason::NotAppPassword,
        Reason::UnknownPassword,
        Reason::WrongPassword,
        Reason::Expired,
        Reason::Idle,
        Reason::Revoked,
        Reason::WrongService,
        Reason::Throttled,
        Reason::BadHash,
        Reason::OwnerChanged,
        Reason::Network,
        Reason::Loopback,
    ];

    /// Whether this failure could be someone guessing: only these count toward
    /// throttling. Input that is not an app password cannot succeed whatever it is, and
    /// expired, revoked, out-of-scope or orphaned passwords were right (a stale device,
    /// or the name's new account: not a guesser). A right password from outside its
    /// networks is someone else's use of it: a guess.
    pub fn is_guess(self) -> bool {
        matches!(
            self,
            Reason::WrongPassword | Reason::UnknownPassword | Reason::Network
        )
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
            Reason::BadHash => "bad_hash",
            Reason::OwnerChanged => "owner_changed",
            Reason::Network => "network",
            Reason::Loopback => "loopback",
        }
    }

    fn code(self) -> u8 {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0) as u8 + 1
    }

    fn from_code(code: u8) -> Result<Reason, WireError> {
        usize::from(code)
            .checked_sub(1)
            .and_then(|i| Reason::ALL.get(i).copied())
            .ok_or(WireError::Malformed("unknown reason"))
    }
}

/// The longest password a client sends: an app password is 28 characters (35 with its
/// dashes), so anything longer is refused whatever it holds, and a client sends only
/// this much of it plus one byte, so that apppassd still sees it is too long (and still
/// spends a verification on it, as on any wrong password).
pub const MAX_PASSWORD: usize = 1024;

/// A login to check: what the PAM module gathered from its host.
pub struct AuthRequest {
    /// PAM_USER, as the host gave it (not always UTF-8).
    pub user: Vec<u8>,
    /// The scope to check: the module's `service=`, else PAM_SERVICE.
    pub service: String,
    /// PAM_SERVICE itself, for the log line's `pam_apppass(SERVICE:auth)`.
    pub pam_service: String,
    /// PAM_RHOST, PAM_TTY, PAM_RUSER and the login name of the host's terminal: for
    /// the log line and the usage record only, never for a decision.
    pub rhost: Option<String>,
    pub tty: Option<String>,
    pub ruser: Option<String>,
    pub logname: Option<String>,
    /// The password typed. Wiped when dropped.
    pub password: Zeroizing<Vec<u8>>,
    /// How long the client waits for the answer: past that, apppassd drops the request
    /// instead of hashing for nobody.
    pub timeout_ms: u32,
}

impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("service", &self.service)
            .field("pam_service", &self.pam_service)
            .field("rhost", &self.rhost)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// A new app password to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest {
    /// Whose (`None`: the caller's own).
    pub user: Option<String>,
    pub service: String,
    pub label: String,
    /// As the person wrote it: a duration (`90d`) or an ISO 8601 date (`None`: the
    /// configured default). apppassd reads it, so that "now" is the daemon's.
    pub expires: Option<String>,
    /// Source networks as the person wrote them (`192.0.2.0/24,2001:db8::/48`; `None`:
    /// from anywhere). apppassd reads them, so that every client gets the same rules.
    pub from: Option<String>,
}

/// Bytes that must never be shown: an answer to a PAM prompt, a session's token.
/// Wiped when dropped; `Debug` shows only that something is there.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: &[u8]) -> Secret {
        Secret(Zeroizing::new(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How a PAM stack asks (PAM's message styles): a prompt to answer hidden or shown, or a
/// message to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptStyle {
    EchoOff,
    EchoOn,
    ErrorMsg,
    Info,
}

impl PromptStyle {
    /// Whether the stack waits for an answer to it.
    pub fn is_question(self) -> bool {
        matches!(self, PromptStyle::EchoOff | PromptStyle::EchoOn)
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            PromptStyle::EchoOff => 1,
            PromptStyle::EchoOn => 2,
            PromptStyle::ErrorMsg => 3,
            PromptStyle::Info => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Result<PromptStyle, WireError> {
        Ok(match code {
            1 => PromptStyle::EchoOff,
            2 => PromptStyle::EchoOn,
            3 => PromptStyle::ErrorMsg,
            4 => PromptStyle::Info,
            _ => return Err(WireError::Malformed("unknown prompt style")),
        })
    }
}

/// One message of a PAM conversation, as the stack wrote it (terminal escapes and all:
/// clients escape it before showing it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub style: PromptStyle,
    pub text: String,
}

/// The most messages one [`Response::Conversation`] carries (PAM_MAX_NUM_MSG).
pub const MAX_PROMPTS: usize = 32;

/// A portal session, as apppassd hands it to the portal (only to the portal's uid).
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// 256 random bits, as text: the cookie's value. apppassd keeps only its hash.
    pub token: Secret,
    /// The session's token against cross-site requests, for the portal's forms.
    pub csrf: String,
    pub user: String,
    pub uid: u32,
    /// May manage everyone's app passwords (decided by apppassd, from the account's
    /// groups).
    pub admin: bool,
    /// When the person signed in, and last proved their account password (Unix
    /// seconds): creating a credential needs a recent proof (`reauthenticate_after`).
    pub signed_in: i64,
    pub proved: i64,
    /// When the session ends if unused, and at the latest (Unix seconds).
    pub idle_expires: i64,
    pub expires: i64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("uid", &self.uid)
            .field("admin", &self.admin)
            .field("signed_in", &self.signed_in)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// What a client may ask.
#[derive(Debug)]
pub enum Request {
    /// Check a password (the PAM module).
    Authenticate(AuthRequest),
    /// The daemon's health and who it takes the caller to be.
    Status,
    Add(AddRequest),
    /// App passwords of `user` (`None`: the caller's), or of everyone with `all`.
    List {
        user: Option<String>,
        all: bool,
    },
    Revoke {
        ids: Vec<i64>,
    },
    /// Every active app password of `user` (`None`: the caller's), for `service` only if given.
    RevokeAll {
        user: Option<String>,
        service: Option<String>,
    },
    /// The newest `limit` audit events of `user` (`None`: the caller's), or everyone's.
    Log {
        user: Option<String>,
        all: bool,
        limit: u32,
    },
    /// Lift throttling of `user` (`None`: the caller), from `rhost` only if given.
    Unlock {
        user: Option<String>,
        rhost: Option<String>,
    },
    /// An online copy of the whole store (root only), in chunks.
    Backup,
    /// Change the source networks of app password `id` (`None`: from anywhere); the
    /// answer lists it as it is now.
    SetNetworks {
        id: i64,
        from: Option<String>,
    },
    /// `user`'s account password has just been changed (the module's password hook,
    /// after pam_unix set it): revoke every app password of theirs. Answered with
    /// [`Response::Count`], 0 when `revoke_on_password_change` is off.
    PasswordChanged {
        user: String,
    },
    /// Prove that the person is at the keyboard: apppassd runs its `apppass` PAM stack
    /// (`apppass-portal` for a portal session) for the caller's own account, relaying
    /// the stack's prompts; [`Response::Proved`] marks this connection as proved for
    /// the next request that creates a credential. Root is proved at once.
    Prove,
    /// The answers to the last [`Response::Conversation`], one per message (empty for
    /// messages that ask nothing).
    Answer {
        answers: Vec<Secret>,
    },
    /// The portal (only the uid `portal_user`) signs `user` in through the
    /// `apppass-portal` stack, for a browser at `client` (the address sign-ins are
    /// throttled by). Ends with [`Response::Session`].
    SignIn {
        user: String,
        client: Option<String>,
    },
    /// The portal acts, on this connection, for the person of the session `token`.
    /// Answered with [`Response::Session`], refreshed.
    Resume {
        token: Secret,
    },
    /// Ends this connection's session in apppassd.
    SignOut,
    /// A new secret for app password `id`, with its settings; the old one is revoked at
    /// once. Answered with [`Response::Added`].
    Regenerate {
        id: i64,
    },
}

mod kind {
    pub const AUTHENTICATE: u8 = 1;
    pub const STATUS: u8 = 2;
    pub const ADD: u8 = 3;
    pub const LIST: u8 = 4;
    pub const REVOKE: u8 = 5;
    pub const REVOKE_ALL: u8 = 6;
    pub const LOG: u8 = 7;
    pub const UNLOCK: u8 = 8;
    pub const BACKUP: u8 = 9;
    pub const SET_NETWORKS: u8 = 10;
    pub const PASSWORD_CHANGED: u8 = 11;
    pub const PROVE: u8 = 12;
    pub const ANSWER: u8 = 13;
    pub const SIGN_IN: u8 = 14;
    pub const RESUME: u8 = 15;
    pub const SIGN_OUT: u8 = 16;
    pub const REGENERATE: u8 = 17;

    pub const AUTH: u8 = 64;
    pub const ERROR: u8 = 65;
    pub const STATUS_INFO: u8 = 66;
    pub const ADDED: u8 = 67;
    pub const PASSWORDS: u8 = 68;
    pub const REVOKED: u8 = 69;
    pub const COUNT: u8 = 70;
    pub const EVENTS: u8 = 71;
    pub const CHUNK: u8 = 72;
    pub const DONE: u8 = 73;
    pub const CONVERSATION: u8 = 74;
    pub const PROVED: u8 = 75;
    pub const SESSION: u8 = 76;
}

impl Request {
    /// The request's name, for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Authenticate(_) => "authenticate",
            Request::Status => "status",
            Request::Add(_) => "add",
            Request::List { .. } => "list",
            Request::Revoke { .. } => "revoke",
            Request::RevokeAll { .. } => "revoke-all",
            Request::Log { .. } => "log",
            Request::Unlock { .. } => "unlock",
            Request::Backup => "backup",
            Request::SetNetworks { .. } => "networks",
            Request::PasswordChanged { .. } => "password-changed",
            Request::Prove => "prove",
            Request::Answer { .. } => "answer",
            Request::SignIn { .. } => "sign-in",
            Request::Resume { .. } => "resume",
            Request::SignOut => "sign-out",
            Request::Regenerate { .. } => "regenerate",
        }
    }

    /// Whether this request makes a new credential: apppassd answers it only on a
    /// connection that has just proved its person ([`Request::Prove`]), or for root.
    pub fn creates_credential(&self) -> bool {
        matches!(self, Request::Add(_) | Request::Regenerate { .. })
    }

    /// The body of this request's frame (wiped when dropped).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut e;
        match self {
            Request::Authenticate(a) => {
                e = Encoder::new(kind::AUTHENTICATE);
                e.bytes(&a.user)
                    .str(&a.service)
                    .str(&a.pam_service)
                    .opt_str(a.rhost.as_deref())
                    .opt_str(a.tty.as_deref())
                    .opt_str(a.ruser.as_deref())
                    .opt_str(a.logname.as_deref())
                    .bytes(&a.password)
                    .u32(a.timeout_ms);
            }
            Request::Status => e = Encoder::new(kind::STATUS),
            Request::Add(a) => {
                e = Encoder::new(kind::ADD);
                e.opt_str(a.user.as_deref())
                    .str(&a.service)
                    .str(&a.label)
                    .opt_str(a.expires.as_deref())
                    .opt_str(a.from.as_deref());
            }
            Request::List { user, all } => {
                e = Encoder::new(kind::LIST);
                e.opt_str(user.as_deref()).bool(*all);
            }
            Request::Revoke { ids } => {
                e = Encoder::new(kind::REVOKE);
                e.len(ids.len());
                for id in ids {
                    e.i64(*id);
                }
            }
            Request::RevokeAll { user, service } => {
                e = Encoder::new(kind::REVOKE_ALL);
                e.opt_str(user.as_deref()).opt_str(service.as_deref());
            }
            Request::Log { user, all, limit } => {
                e = Encoder::new(kind::LOG);
                e.opt_str(user.as_deref()).bool(*all).u32(*limit);
            }
            Request::Unlock { user, rhost } => {
                e = Encoder::new(kind::UNLOCK);
                e.opt_str(user.as_deref()).opt_str(rhost.as_deref());
            }
            Request::Backup => e = Encoder::new(kind::BACKUP),
            Request::SetNetworks { id, from } => {
                e = Encoder::new(kind::SET_NETWORKS);
                e.i64(*id).opt_str(from.as_deref());
            }
            Request::PasswordChanged { user } => {
                e = Encoder::new(kind::PASSWORD_CHANGED);
                e.str(user);
            }
            Request::Prove => e = Encoder::new(kind::PROVE),
            Request::Answer { answers } => {
                e = Encoder::new(kind::ANSWER);
                e.len(answers.len());
                for a in answers {
                    e.bytes(a.as_bytes());
                }
            }
            Request::SignIn { user, client } => {
                e = Encoder::new(kind::SIGN_IN);
                e.str(user).opt_str(client.as_deref());
            }
            Request::Resume { token } => {
                e = Encoder::new(kind::RESUME);
                e.bytes(token.as_bytes());
            }
            Request::SignOut => e = Encoder::new(kind::SIGN_OUT),
            Request::Regenerate { id } => {
                e = Encoder::new(kind::REGENERATE);
                e.i64(*id);
            }
        }
        e.finish()
    }

    /// Reads a request body. Whatever the bytes, the answer is a request or an error
    /// that says what was wrong; nothing panics (tests/properties.rs and the fuzz
    /// target in fuzz/ hold it to that).
    pub fn decode(body: &[u8]) -> Result<Request, WireError> {
        let (k, mut d) = Decoder::new(body)?;
        let request = match k {
            kind::AUTHENTICATE => Request::Authenticate(AuthRequest {
                user: d.bytes()?.to_vec(),
                service: d.string()?,
                pam_service: d.string()?,
                rhost: d.opt_string()?,
                tty: d.opt_string()?,
                ruser: d.opt_string()?,
                logname: d.opt_string()?,
                password: Zeroizing::new(d.bytes()?.to_vec()),
                timeout_ms: d.u32()?,
            }),
            kind::STATUS => Request::Status,
            kind::ADD => Request::Add(AddRequest {
                user: d.opt_string()?,
                service: d.string()?,
                label: d.string()?,
                expires: d.opt_string()?,
                from: d.opt_string()?,
            }),
            kind::LIST => Request::List {
                user: d.opt_string()?,
                all: d.bool()?,
            },
            kind::REVOKE => {
                let n = d.len(8)?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(d.i64()?);
                }
                Request::Revoke { ids }
            }
            kind::REVOKE_ALL => Request::RevokeAll {
                user: d.opt_string()?,
                service: d.opt_string()?,
            },
            kind::LOG => Request::Log {
                user: d.opt_string()?,
                all: d.bool()?,
                limit: d.u32()?,
            },
            kind::UNLOCK => Request::Unlock {
                user: d.opt_string()?,
                rhost: d.opt_string()?,
            },
            kind::BACKUP => Request::Backup,
            kind::SET_NETWORKS => Request::SetNetworks {
                id: d.i64()?,
                from: d.opt_string()?,
            },
            kind::PASSWORD_CHANGED => Request::PasswordChanged { user: d.string()? },
            kind::PROVE => Request::Prove,
            kind::ANSWER => {
                let n = d.len(4)?;
                if n > MAX_PROMPTS {
                    return Err(WireError::Malformed("too many answers"));
                }
                let mut answers = Vec::with_capacity(n);
                for _ in 0..n {
                    answers.push(Secret::new(d.bytes()?));
                }
                Request::Answer { answers }
            }
            kind::SIGN_IN => Request::SignIn {
                user: d.string()?,
                client: d.opt_string()?,
            },
            kind::RESUME => Request::Resume {
                token: Secret::new(d.bytes()?),
            },
            kind::SIGN_OUT => Request::SignOut,
            kind::REGENERATE => Request::Regenerate { id: d.i64()? },
            _ => return Err(WireError::Malformed("unknown request")),
        };
        d.finish()?;
        Ok(request)
    }
}

/// The answer to [`Request::Authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAnswer {
    /// An active app password of this user whose scope is this service (or `*`).
    Success { id: i64, label: String },
    /// Refused, and why; `id` when the password named one of the user's.
    Denied { reason: Reason, id: Option<i64> },
    /// The user has no app passwords at all: the next module decides.
    NoAppPasswords,
}

/// What kind of failure an [`Response::Error`] is: clients map it to their own
/// vocabulary (a PAM code, an exit status, an HTTP status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not a request this daemon understands (malformed, unknown, other version).
    BadRequest,
    /// A value that is not acceptable (a bad service name, an expiry in the past).
    Usage,
    /// The caller may not do this.
    Denied,
    /// No such app password (or not the caller's).
    NotFound,
    /// A limit of the policy (too many app passwords).
    Limit,
    /// The store cannot be used now (its reason in the message and the daemon's log).
    Unavailable,
    /// Too many requests waiting: try again later.
    Busy,
    /// The request waited past its deadline and was dropped unanswered.
    Timeout,
    /// A bug in the daemon.
    Internal,
    /// This makes a credential: prove who you are first ([`Request::Prove`]) on this
    /// connection, then ask again.
    Reauthenticate,
}

impl ErrorKind {
    const ALL: [ErrorKind; 10] = [
        ErrorKind::BadRequest,
        ErrorKind::Usage,
        ErrorKind::Denied,
        ErrorKind::NotFound,
        ErrorKind::Limit,
        ErrorKind::Unavailable,
        ErrorKind::Busy,
        ErrorKind::Timeout,
        ErrorKind::Internal,
        ErrorKind::Reauthenticate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Usage => "usage",
            ErrorKind::Denied => "denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Limit => "limit",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Busy => "busy",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
            ErrorKind::Reauthenticate => "reauthenticate",
        }
    }

    fn code(self) -> u8 {
        ErrorKind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u8 + 1
    }

    fn from_code(code: u8) -> Result<ErrorKind, WireError> {
        usize::from(code)
            .checked_sub(1)
            .and_then(|i| ErrorKind::ALL.get(i).copied())
            .ok_or(WireError::Malformed("unknown error kind"))
    }
}

/// Who apppassd takes the caller to be, from the caller's kernel credentials.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub uid: u32,
    /// The caller's user name, if the uid has one.
    pub user: Option<String>,
    /// May manage everyone's app passwords (root, `admin_group`).
    pub admin: bool,
    /// May check any user's password (root, `auth_trusted`); others only their own.
    pub authenticates_anyone: bool,
}

/// The daemon's health, for `apppass status` and `apppass doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    /// The uid apppassd runs as.
    pub daemon_uid: u32,
    pub uptime_s: u64,
    /// The store, as it may be shown (`SQLite /var/lib/apppass/apppass.db`).
    pub store: String,
    /// Why the store cannot be used; `None` when it can.
    pub store_error: Option<String>,
    /// What is wrong with a store that can be used all the same (read-only: logins work,
    /// changes are refused).
    pub store_warning: Option<String>,
    pub schema_version: Option<i64>,
    /// Verifications at most at once, and how many are running now.
    pub workers: u32,
    pub busy: u32,
    /// Requests waiting for a worker, and the most that may.
    pub queued: u32,
    pub queue_max: u32,
    /// Connections open now.
    pub clients: u32,
    /// Counters since start, by name (`login_success`, `login_failure`, `busy`, ...).
    pub counts: Vec<(String, u64)>,
    pub you: Identity,
}

/// An app password as listings show it: never its hash or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordInfo {
    pub id: i64,
    pub user: String,
    pub service: String,
    pub label: String,
    pub created: i64,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
    /// `active`, `expired`, `idle` or `revoked`, by the daemon's clock and policy.
    pub status: String,
    pub last_used: Option<i64>,
    pub last_service: Option<String>,
    pub last_rhost: Option<String>,
    pub use_count: i64,
    /// Source networks, canonical (`192.0.2.0/24,2001:db8::/48`); `""`: from anywhere.
    pub networks: String,
    /// Active, and expires within the daemon's `expiry_warning`: its owner should
    /// replace it soon.
    pub expires_soon: bool,
    /// The app password that replaced this one (`apppass regenerate`), if any.
    pub replaced_by: Option<i64>,
}

/// An audit log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    pub time: i64,
    pub user: String,
    pub service: String,
    pub password_id: Option<i64>,
    pub rhost: Option<String>,
    /// `success`, `failure` or `throttled`.
    pub outcome: String,
    pub reason: Option<String>,
}

/// A new app password, shown this once.
#[derive(Clone, PartialEq, Eq)]
pub struct Added {
    pub id: i64,
    pub user: String,
    pub service: String,
    pub label: String,
    pub created: i64,
    pub expires: Option<i64>,
    /// Source networks as stored (canonical; `""`: from anywhere).
    pub networks: String,
    /// As people read it: `abcd-efgh-...`. Wiped when dropped.
    pub password: Zeroizing<String>,
}

impl fmt::Debug for Added {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Added")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("service", &self.service)
            .field("networks", &self.networks)
            .finish_non_exhaustive()
    }
}

/// What revoking one id did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    Now,
    Already,
    /// No such id, or not the caller's.
    NotFound,
}

/// apppassd's answers.
#[derive(Debug)]
pub enum Response {
    Auth(AuthAnswer),
    Error {
        kind: ErrorKind,
        message: String,
    },
    Status(Box<Status>),
    Added(Box<Added>),
    Passwords(Vec<PasswordInfo>),
    Revoked(Vec<(i64, RevokeOutcome)>),
    /// How many (app passwords revoked, throttled hosts cleared).
    Count(u64),
    Events(Vec<EventInfo>),
    /// Part of a backup; [`Response::Done`] ends it.
    Chunk(Vec<u8>),
    Done,
    /// The PAM stack asks (or tells) something: answer with [`Request::Answer`].
    Conversation(Vec<Prompt>),
    /// The person proved who they are: this connection may now create one credential.
    Proved,
    Session(Box<Session>),
}

impl Response {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error {
            kind,
            message: message.into(),
        }
    }

    /// The body of this answer's frame (wiped when dropped: it may carry a new password).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut e;
        match self {
            Response::Auth(a) => {
                e = Encoder::new(kind::AUTH);
                match a {
                    AuthAnswer::Success { id, label } => {
                        e.u8(0).i64(*id).str(label);
                    }
                    AuthAnswer::Denied { reason, id } => {
                        e.u8(reason.code()).opt_i64(*id);
                    }
                    AuthAnswer::NoAppPasswords => {
                        e.u8(255);
                    }
                }
            }
            Response::Error { kind: k, message } => {
                e = Encoder::new(kind::ERROR);
                e.u8(k.code()).str(message);
            }
            Response::Status(s) => {
                e = Encoder::new(kind::STATUS_INFO);
                e.str(&s.version)
                    .u32(s.pid)
                    .u32(s.daemon_uid)
                    .u64(s.uptime_s)
                    .str(&s.store)
                    .opt_str(s.store_error.as_deref())
                    .opt_str(s.store_warning.as_deref())
                    .opt_i64(s.schema_version)
                    .u32(s.workers)
                    .u32(s.busy)
                    .u32(s.queued)
                    .u32(s.queue_max)
                    .u32(s.clients)
                    .len(s.counts.len());
                for (name, n) in &s.counts {
                    e.str(name).u64(*n);
                }
                e.u32(s.you.uid)
                    .opt_str(s.you.user.as_deref())
                    .bool(s.you.admin)
                    .bool(s.you.authenticates_anyone);
            }
            Response::Added(a) => {
                e = Encoder::new(kind::ADDED);
                e.i64(a.id)
                    .str(&a.user)
                    .str(&a.service)
                    .str(&a.label)
                    .i64(a.created)
                    .opt_i64(a.expires)
                    .str(&a.networks)
                    .str(&a.password);
            }
            Response::Passwords(list) => {
                e = Encoder::new(kind::PASSWORDS);
                e.len(list.len());
                for p in list {
                    e.i64(p.id)
                        .str(&p.user)
                        .str(&p.service)
                        .str(&p.label)
                        .i64(p.created)
                        .opt_i64(p.expires)
                        .opt_i64(p.revoked)
                        .str(&p.status)
                        .opt_i64(p.last_used)
                        .opt_str(p.last_service.as_deref())
                        .opt_str(p.last_rhost.as_deref())
                        .i64(p.use_count)
                        .str(&p.networks)
                        .bool(p.expires_soon)
                        .opt_i64(p.replaced_by);
                }
            }
            Response::Revoked(list) => {
                e = Encoder::new(kind::REVOKED);
                e.len(list.len());
                for (id, outcome) in list {
                    e.i64(*id).u8(match outcome {
                        RevokeOutcome::Now => 0,
                        RevokeOutcome::Already => 1,
                        RevokeOutcome::NotFound => 2,
                    });
                }
            }
            Response::Count(n) => {
                e = Encoder::new(kind::COUNT);
                e.u64(*n);
            }
            Response::Events(list) => {
                e = Encoder::new(kind::EVENTS);
                e.len(list.len());
                for ev in list {
                    e.i64(ev.time)
                        .str(&ev.user)
                        .str(&ev.service)
                        .opt_i64(ev.password_id)
                        .opt_str(ev.rhost.as_deref())
                        .str(&ev.outcome)
                        .opt_str(ev.reason.as_deref());
                }
            }
            Response::Chunk(data) => {
                e = Encoder::new(kind::CHUNK);
                e.bytes(data);
            }
            Response::Done => e = Encoder::new(kind::DONE),
            Response::Conversation(prompts) => {
                e = Encoder::new(kind::CONVERSATION);
                e.len(prompts.len());
                for p in prompts {
                    e.u8(p.style.code()).str(&p.text);
                }
            }
            Response::Proved => e = Encoder::new(kind::PROVED),
            Response::Session(s) => {
                e = Encoder::new(kind::SESSION);
                e.bytes(s.token.as_bytes())
                    .str(&s.csrf)
                    .str(&s.user)
                    .u32(s.uid)
                    .bool(s.admin)
                    .i64(s.signed_in)
                    .i64(s.proved)
                    .i64(s.idle_expires)
                    .i64(s.expires);
            }
        }
        e.finish()
    }

    /// Reads an answer body.
    pub fn decode(body: &[u8]) -> Result<Response, WireError> {
        let (k, mut d) = Decoder::new(body)?;
        let response = match k {
            kind::AUTH => Response::Auth(match d.u8()? {
                0 => AuthAnswer::Success {
                    id: d.i64()?,
                    label: d.string()?,
                },
                255 => AuthAnswer::NoAppPasswords,
                code => AuthAnswer::Denied {
                    reason: Reason::from_code(code)?,
                    id: d.opt_i64()?,
                },
            }),
            kind::ERROR => Response::Error {
                kind: ErrorKind::from_code(d.u8()?)?,
                message: d.string()?,
            },
            kind::STATUS_INFO => {
                let mut s = Status {
                    version: d.string()?,
                    pid: d.u32()?,
                    daemon_uid: d.u32()?,
                    uptime_s: d.u64()?,
                    store: d.string()?,
                    store_error: d.opt_string()?,
                    store_warning: d.opt_string()?,
                    schema_version: d.opt_i64()?,
                    workers: d.u32()?,
                    busy: d.u32()?,
                    queued: d.u32()?,
                    queue_max: d.u32()?,
                    clients: d.u32()?,
                    ..Status::default()
                };
                let n = d.len(12)?;
                for _ in 0..n {
                    let name = d.string()?;
                    s.counts.push((name, d.u64()?));
                }
                s.you = Identity {
                    uid: d.u32()?,
                    user: d.opt_string()?,
                    admin: d.bool()?,
                    authenticates_anyone: d.bool()?,
                };
                Response::Status(Box::new(s))
            }
            kind::ADDED => Response::Added(Box::new(Added {
                id: d.i64()?,
                user: d.string()?,
                service: d.string()?,
                label: d.string()?,
                created: d.i64()?,
                expires: d.opt_i64()?,
                networks: d.string()?,
                password: Zeroizing::new(d.string()?),
            })),
            kind::PASSWORDS => {
                let n = d.len(48)?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    list.push(PasswordInfo {
                        id: d.i64()?,
                        user: d.string()?,
                        service: d.string()?,
                        label: d.string()?,
                        created: d.i64()?,
                        expires: d.opt_i64()?,
                        revoked: d.opt_i64()?,
                        status: d.string()?,
                        last_used: d.opt_i64()?,
                        last_service: d.opt_string()?,
                        last_rhost: d.opt_string()?,
                        use_count: d.i64()?,
                        networks: d.string()?,
                        expires_soon: d.bool()?,
                        replaced_by: d.opt_i64()?,
                    });
                }
                Response::Passwords(list)
            }
            kind::REVOKED => {
                let n = d.len(9)?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = d.i64()?;
                    let outcome = match d.u8()? {
                        0 => RevokeOutcome::Now,
                        1 => RevokeOutcome::Already,
                        2 => RevokeOutcome::NotFound,
                        _ => return Err(WireError::Malformed("unknown revoke outcome")),
                    };
                    list.push((id, outcome));
                }
                Response::Revoked(list)
            }
            kind::COUNT => Response::Count(d.u64()?),
            kind::EVENTS => {
                let n = d.len(24)?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    list.push(EventInfo {
                        time: d.i64()?,
                        user: d.string()?,
                        service: d.string()?,
                        password_id: d.opt_i64()?,
                        rhost: d.opt_string()?,
                        outcome: d.string()?,
                        reason: d.opt_string()?,
                    });
                }
                Response::Events(list)
            }
            kind::CHUNK => Response::Chunk(d.bytes()?.to_vec()),
            kind::DONE => Response::Done,
            kind::CONVERSATION => {
                let n = d.len(5)?;
                if n > MAX_PROMPTS {
                    return Err(WireError::Malformed("too many prompts"));
                }
                let mut prompts = Vec::with_capacity(n);
                for _ in 0..n {
                    prompts.push(Prompt {
                        style: PromptStyle::from_code(d.u8()?)?,
                        text: d.string()?,
                    });
                }
                Response::Conversation(prompts)
            }
            kind::PROVED => Response::Proved,
            kind::SESSION => Response::Session(Box::new(Session {
                token: Secret::new(d.bytes()?),
                csrf: d.string()?,
                user: d.string()?,
                uid: d.u32()?,
                admin: d.bool()?,
                signed_in: d.i64()?,
                proved: d.i64()?,
                idle_expires: d.i64()?,
                expires: d.i64()?,
            })),
            _ => return Err(WireError::Malformed("unknown answer")),
        };
        d.finish()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_request(r: &Request) -> Request {
        Request::decode(&r.encode()).unwrap()
    }

    #[test]
    fn requests_round_trip() {
        let auth = Request::Authenticate(AuthRequest {
            user: b"alice\xff".to_vec(),
            service: "imap".into(),
            pam_service: "imap".into(),
            rhost: Some("203.0.113.9".into()),
            tty: None,
            ruser: Some("alice".into()),
            logname: None,
            password: Zeroizing::new(b"k46p-wjpw".to_vec()),
            timeout_ms: 5000,
        });
        let Request::Authenticate(a) = round_trip_request(&auth) else {
            panic!()
        };
        assert_eq!(a.user, b"alice\xff");
        assert_eq!(
            (a.service.as_str(), a.rhost.as_deref()),
            ("imap", Some("203.0.113.9"))
        );
        assert_eq!((&a.password[..], a.timeout_ms), (&b"k46p-wjpw"[..], 5000));
        assert!(
            !format!("{a:?}").contains("k46p"),
            "Debug shows no password"
        );
        for r in [
            Request::Status,
            Request::Add(AddRequest {
                user: None,
                service: "*".into(),
                label: "Phone".into(),
                expires: Some("90d".into()),
                from: Some("192.0.2.0/24".into()),
            }),
            Request::SetNetworks { id: 4, from: None },
            Request::List {
                user: Some("bob".into()),
                all: false,
            },
            Request::Revoke {
                ids: vec![1, -2, 3],
            },
            Request::RevokeAll {
                user: None,
                service: Some("pop3".into()),
            },
            Request::Log {
                user: None,
                all: true,
                limit: 50,
            },
            Request::Unlock {
                user: Some("a".into()),
                rhost: None,
            },
            Request::Backup,
            Request::PasswordChanged {
                user: "alice".into(),
            },
            Request::Prove,
            Request::SignIn {
                user: "alice".into(),
                client: Some("192.0.2.1".into()),
            },
            Request::SignOut,
            Request::Regenerate { id: 7 },
        ] {
            assert_eq!(format!("{:?}", round_trip_request(&r)), format!("{r:?}"));
        }
        // Both requests that make a credential need a proof of presence.
        assert!(Request::Regenerate { id: 7 }.creates_credential());
        assert!(!Request::Revoke { ids: vec![7] }.creates_credential());
    }

    #[test]
    fn responses_round_trip() {
        let status = Status {
            version: "0.2.0".into(),
            store: "SQLite /x".into(),
            store_error: Some("gone".into()),
            counts: vec![("login_success".into(), 3)],
            you: Identity {
                uid: 1000,
                user: Some("alice".into()),
                admin: false,
                authenticates_anyone: false,
            },
            ..Status::default()
        };
        for r in [
            Response::Auth(AuthAnswer::Success {
                id: 3,
                label: "Phone".into(),
            }),
            Response::Auth(AuthAnswer::Denied {
                reason: Reason::Throttled,
                id: None,
            }),
            Response::Auth(AuthAnswer::Denied {
                reason: Reason::Expired,
                id: Some(4),
            }),
            Response::Auth(AuthAnswer::NoAppPasswords),
            Response::error(ErrorKind::Busy, "busy"),
            Response::Status(Box::new(status)),
            Response::Passwords(vec![PasswordInfo {
                id: 1,
                user: "alice".into(),
                service: "imap".into(),
                label: String::new(),
                created: 5,
                expires: None,
                revoked: Some(6),
                status: "revoked".into(),
                last_used: None,
                last_service: None,
                last_rhost: Some("::1".into()),
                use_count: 0,
                networks: "2001:db8::/48".into(),
                expires_soon: false,
                replaced_by: Some(2),
            }]),
            Response::Revoked(vec![(1, RevokeOutcome::Now), (2, RevokeOutcome::NotFound)]),
            Response::Count(7),
            Response::Events(vec![EventInfo {
                time: 1,
                user: "a".into(),
                service: "imap".into(),
                password_id: None,
                rhost: None,
                outcome: "failure".into(),
                reason: Some("wrong_password".into()),
            }]),
            Response::Chunk(vec![0, 1, 2]),
            Response::Done,
            Response::Conversation(vec![
                Prompt {
                    style: PromptStyle::EchoOff,
                    text: "Password: ".into(),
                },
                Prompt {
                    style: PromptStyle::Info,
                    text: "hi".into(),
                },
            ]),
            Response::Proved,
        ] {
            let back = Response::decode(&r.encode()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{r:?}"));
        }
        let added = Response::Added(Box::new(Added {
            id: 9,
            user: "a".into(),
            service: "imap".into(),
            label: "l".into(),
            created: 1,
            expires: Some(2),
            networks: "192.0.2.0/24".into(),
            password: Zeroizing::new("abcd-efgh".into()),
        }));
        let Response::Added(back) = Response::decode(&added.encode()).unwrap() else {
            panic!()
        };
        assert_eq!(back.password.as_str(), "abcd-efgh");
        assert_eq!(back.networks, "192.0.2.0/24");
        assert!(!format!("{back:?}").contains("abcd"));
    }

    #[test]
    fn answers_tokens_and_sessions_round_trip_and_never_show() {
        let answer = Request::Answer {
            answers: vec![Secret::new(b"hunter2"), Secret::default()],
        };
        let Request::Answer { answers } = round_trip_request(&answer) else {
            panic!()
        };
        assert_eq!(answers[0].as_bytes(), b"hunter2");
        assert!(answers[1].as_bytes().is_empty());
        assert!(!format!("{answer:?}").contains("hunter2"));
        let resume = Request::Resume {
            token: Secret::new(b"tok3n"),
        };
        assert!(!format!("{resume:?}").contains("tok3n"));
        let Request::Resume { token } = round_trip_request(&resume) else {
            panic!()
        };
        assert_eq!(token.as_bytes(), b"tok3n");
        let session = Response::Session(Box::new(Session {
            token: Secret::new(b"tok3n"),
            csrf: "c".into(),
            user: "alice".into(),
            uid: 1000,
            admin: false,
            signed_in: 1,
            proved: 2,
            idle_expires: 3,
            expires: 4,
        }));
        assert!(!format!("{session:?}").contains("tok3n"));
        let Response::Session(back) = Response::decode(&session.encode()).unwrap() else {
            panic!()
        };
        assert_eq!((back.token.as_bytes(), back.expires), (&b"tok3n"[..], 4));
        // More answers than PAM ever asks at once is not a request.
        let mut e = Encoder::new(kind::ANSWER);
        e.len(MAX_PROMPTS + 1);
        for _ in 0..=MAX_PROMPTS {
            e.bytes(b"");
        }
        assert!(Request::decode(&e.finish()).is_err());
    }

    #[test]
    fn every_reason_and_error_kind_round_trips() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()).unwrap(), r);
        }
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_code(k.code()).unwrap(), k);
        }
        assert!(Reason::from_code(0).is_err() && Reason::from_code(200).is_err());
    }

    #[test]
    fn trailing_bytes_and_unknown_kinds_are_refused() {
        let mut body = Request::Status.encode().to_vec();
        body.push(0);
        assert!(Request::decode(&body).is_err());
        assert!(Request::decode(&[crate::wire::VERSION, 200]).is_err());
        // A list count far beyond the message's size allocates nothing.
        let body = [crate::wire::VERSION, kind::REVOKE, 0xff, 0xff, 0xff, 0xff];
        assert!(Request::decode(&body).is_err());
    }
}
