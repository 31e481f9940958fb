//! Proofs of presence and portal sessions.
//!
//! A credential is made only for a person who has just proved their account password
//! (and whatever else the stack asks): `apppass add` runs the `apppass` PAM stack, the
//! portal signs people in through `apppass-portal`. apppassd cannot read /etc/shadow,
//! so the stack runs in the privileged helper (apppass-pam-helper), a child process
//! whose conversation is relayed to the client on the client's own connection. A proof
//! holds no worker: it runs on the connections' thread, at most [`MAX_PROOFS`] at once,
//! each within `prove_timeout`.
//!
//! Failed proofs are counted per (user, client address): a person guessing at their
//! own account password through apppassd, or a browser guessing at someone's through
//! the portal, is stopped after [`FAILURES`] within [`WINDOW`], while the owner
//! elsewhere is not.
//!
//! Sessions live in memory only (a restart signs everyone out), keyed by a hash of
//! their token, bounded in number.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apppass_proto::helper::{FromHelper, Verdict};
use apppass_proto::wire::WireError;
use apppass_proto::{ErrorKind, Request, Response, Secret, Session};
use blake2::{Blake2b, Digest, digest::consts::U32};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

use crate::log::field;
use crate::peer::Peer;
use crate::server::Context;

/// Proofs at a terminal under way at most at once, and the portal's (sign-ins and
/// re-proofs) apart: sign-ins from the network, each waiting up to `prove_timeout` for
/// a one-time code, can never take the slots of `apppass add` on the host.
pub const MAX_PROOFS: usize = 16;
pub const MAX_PORTAL_PROOFS: usize = 32;
/// Failed proofs per (user, client) within [`WINDOW`] before further ones are refused
/// unasked for [`WINDOW`].
pub const FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Entries at most in the table of failed proofs; beyond it the oldest is forgotten.
const MAX_TRACKED: usize = 10_000;
/// Sessions at most at once.
pub const MAX_SESSIONS: usize = 10_000;
/// Largest frame the helper may send.
const MAX_HELPER_FRAME: usize = 64 * 1024;

/// The PAM stack that proves a person at a terminal, and the portal's.
pub const STACK: &str = "apppass";
pub const PORTAL_STACK: &str = "apppass-portal";

type Key = [u8; 32];

/// A signed-in person, as apppassd holds them.
struct Held {
    user: String,
    /// The person's credentials, as their own processes would have them: the portal
    /// acts as this peer.
    peer: Arc<Peer>,
    client: Option<String>,
    csrf: String,
    signed_in: i64,
    proved: i64,
    last_used: i64,
}

#[derive(Default)]
struct Failures {
    count: u32,
    since: Option<Instant>,
}

/// Proofs under way, failed proofs, and sessions.
pub struct Presence {
    slots: Semaphore,
    portal_slots: Semaphore,
    failures: Mutex<HashMap<(String, String), Failures>>,
    sessions: Mutex<HashMap<Key, Held>>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            slots: Semaphore::new(MAX_PROOFS),
            portal_slots: Semaphore::new(MAX_PORTAL_PROOFS),
            failures: Mutex::default(),
            sessions: Mutex::default(),
        }
    }
}

/// A session bound to a connection: whose it is.
#[derive(Clone)]
pub struct Bound {
    key: Key,
    pub peer: Arc<Peer>,
    pub user: String,
}

fn hash(token: &[u8]) -> Key {
    Blake2b::<U32>::digest(token).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> Result<zeroize::Zeroizing<String>, Response> {
    let mut bytes = zeroize::Zeroizing::new(vec![0u8; n]);
    getrandom::fill(&mut bytes)
        .map_err(|e| Response::error(ErrorKind::Internal, format!("no randomness: {e}")))?;
    Ok(zeroize::Zeroizing::new(hex(&bytes)))
}

impl Presence {
    /// Whether (user, client) may try a proof now.
    fn may_try(&self, key: &(String, String)) -> bool {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some(f) => f.count < FAILURES || f.since.is_none_or(|s| s.elapsed() >= WINDOW),
            None => true,
        }
    }

    fn failed(&self, key: (String, String)) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED {
            map.retain(|_, f| f.since.is_some_and(|s| s.elapsed() < WINDOW));
            if map.len() >= MAX_TRACKED
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, f)| f.since)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let f = map.entry(key).or_default();
        if f.since.is_none_or(|s| s.elapsed() >= WINDOW) {
            *f = Failures {
                count: 0,
                since: Some(Instant::now()),
            };
        }
        f.count += 1;
    }

    fn succeeded(&self, key: &(String, String)) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// A new session for `user`, who has just signed in.
    pub fn open(
        &self,
        user: &str,
        peer: Peer,
        client: Option<String>,
        now: i64,
        config: &apppass_core::config::Config,
    ) -> Result<Session, Response> {
        let token = random_hex(32)?;
        let csrf = random_hex(16)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, h| live(h, now, config));
            if sessions.len() >= MAX_SESSIONS {
                return Err(Response::error(
                    ErrorKind::Busy,
                    "too many portal sessions at once: try again later",
                ));
            }
        }
        let held = Held {
            user: user.to_string(),
            peer: Arc::new(peer),
            client,
            csrf: csrf.to_string(),
            signed_in: now,
            proved: now,
            last_used: now,
        };
        let session = view(&held, Secret::new(token.as_bytes()), config);
        sessions.insert(hash(token.as_bytes()), held);
        Ok(session)
    }

    /// The session of `token`, if it is still alive (and then used now).
    pub fn resume(
        &self,
        token: &Secret,
        now: i64,
        config: &apppass_core::config::Config,
    ) -> Result<(Bound, Session), Response> {
        let key = hash(token.as_bytes());
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let ended = || Response::error(ErrorKind::Denied, "this session has ended: sign in again");
        let held = sessions.get_mut(&key).ok_or_else(ended)?;
        if !live(held, now, config) {
            sessions.remove(&key);
            return Err(ended());
        }
        held.last_used = now;
        let bound = Bound {
            key,
            peer: Arc::clone(&held.peer),
            user: held.user.clone(),
        };
        Ok((bound, view(held, token.clone(), config)))
    }

    /// When the bound session's person last proved who they are (`None`: it ended).
    pub fn proved(&self, bound: &Bound) -> Option<i64> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.get(&bound.key).map(|h| h.proved)
    }

    fn set_proved(&self, bound: &Bound, now: i64) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = sessions.get_mut(&bound.key) {
            h.proved = now;
        }
    }

    fn client(&self, bound: &Bound) -> Option<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.get(&bound.key).and_then(|h| h.client.clone())
    }

    /// Ends the bound session.
    pub fn close(&self, bound: &Bound) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&bound.key)
            .is_some()
    }
}

fn live(h: &Held, now: i64, config: &apppass_core::config::Config) -> bool {
    now < h.last_used.saturating_add(config.session_idle)
        && now < h.signed_in.saturating_add(config.session_lifetime)
}

fn view(h: &Held, token: Secret, config: &apppass_core::config::Config) -> Session {
    Session {
        token,
        csrf: h.csrf.clone(),
        user: h.user.clone(),
        uid: h.peer.uid,
        admin: h.peer.admin,
        signed_in: h.signed_in,
        proved: h.proved,
        idle_expires: h.last_used.saturating_add(config.session_idle),
        expires: h.signed_in.saturating_add(config.session_lifetime),
    }
}

/// Who is proving, through which stack, from where.
pub struct Proof<'a> {
    pub stack: &'static str,
    pub user: &'a str,
    /// The browser's address (the portal), `None` at a terminal.
    pub client: Option<&'a str>,
}

/// Runs `proof`'s stack in the helper and relays its conversation over `stream` until
/// it is done. `Ok` when the person proved who they are.
pub async fn prove(
    cx: &Context,
    stream: &mut UnixStream,
    peer: &Peer,
    proof: &Proof<'_>,
) -> Result<(), Response> {
    let presence = &cx.presence;
    let key = (
        proof.user.to_string(),
        proof.client.unwrap_or("").to_string(),
    );
    let log = &cx.shared.log;
    let line = |outcome: &str| {
        format!(
            "proof of presence through {}: {outcome}; user={} rhost={} uid={}",
            proof.stack,
            field(proof.user),
            field(proof.client.unwrap_or("")),
            peer.uid
        )
    };
    if !presence.may_try(&key) {
        log.warning(&line("refused, too many failures"));
        return Err(Response::error(
            ErrorKind::Limit,
            format!(
                "too many failed attempts to prove who you are: wait {} minutes",
                WINDOW.as_secs() / 60
            ),
        ));
    }
    let slots = if proof.stack == PORTAL_STACK {
        &presence.portal_slots
    } else {
        &presence.slots
    };
    let Ok(_slot) = slots.try_acquire() else {
        return Err(Response::error(
            ErrorKind::Busy,
            "apppassd is busy: too many proofs under way; try again shortly",
        ));
    };
    // Counted as a failure until it succeeds: proofs run side by side cannot add up to
    // more guesses than FAILURES.
    presence.failed(key.clone());
    let verdict = tokio::time::timeout(cx.shared.config.prove_timeout, relay(cx, stream, proof))
        .await
        .unwrap_or_else(|_| Err(Relayed::TimedOut));
    let verdict = match verdict {
        Ok(v) => v,
        Err(Relayed::TimedOut) => {
            log.info(&line("timed out"));
            return Err(Response::error(
                ErrorKind::Timeout,
                format!(
                    "no answer within {} s: try again",
                    cx.shared.config.prove_timeout.as_secs()
                ),
            ));
        }
        Err(Relayed::Client(response)) => {
            log.info(&line("abandoned by the client"));
            return Err(response);
        }
        Err(Relayed::Helper(why)) => {
            log.err(&line(&format!("the PAM helper failed: {why}")));
            return Err(Response::error(
                ErrorKind::Unavailable,
                "apppassd cannot check account passwords now (its log says why)",
            ));
        }
    };
    let refuse = |kind, message: String| Err(Response::error(kind, message));
    match verdict {
        Verdict::Proved => {
            presence.succeeded(&key);
            log.info(&line("success"));
            Ok(())
        }
        Verdict::Failed(why) => {
            log.warning(&line(&format!("failure ({})", field(&why))));
            refuse(
                ErrorKind::Denied,
                "that did not prove who you are: the account password (or code) was wrong"
                    .to_string(),
            )
        }
        Verdict::NoPassword => {
            log.warning(&line("refused, the account has no password"));
            refuse(
                ErrorKind::Denied,
                format!(
                    "{} has no account password to prove who you are with (keys or single \
                     sign-on only): ask an admin to make the app password for you",
                    proof.user
                ),
            )
        }
        Verdict::PasswordExpired => {
            log.warning(&line("refused, the account password has expired"));
            refuse(
                ErrorKind::Denied,
                "your account password has expired: change it first (passwd), then try again"
                    .to_string(),
            )
        }
        Verdict::AccountRefused(why) => {
            log.warning(&line(&format!(
                "refused by the account stack ({})",
                field(&why)
            )));
            refuse(
                ErrorKind::Denied,
                format!("your account may not do this now: {why}"),
            )
        }
        Verdict::Unavailable(why) => {
            log.err(&line(&format!("the stack cannot run ({})", field(&why))));
            refuse(
                ErrorKind::Unavailable,
                format!(
                    "apppassd cannot check account passwords now: the {} PAM stack cannot run",
                    proof.stack
                ),
            )
        }
    }
}

enum Relayed {
    TimedOut,
    /// The client hung up or sent something else than answers: this ends the proof.
    Client(Response),
    Helper(String),
}

/// The helper's two ends, and what to wait for when it is done.
struct Helper {
    to: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
    from: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    /// A helper apppassd started itself (not systemd's, through the socket).
    child: Option<(tokio::process::Child, tokio::process::ChildStderr)>,
}

/// The helper for `proof`: through systemd's socket when there is one (where
/// NoNewPrivileges= keeps a setuid program from gaining anything), else the setuid
/// program, started here.
async fn helper(
    config: &apppass_core::config::Config,
    proof: &Proof<'_>,
) -> Result<Helper, Relayed> {
    if config.pam_helper_socket.exists() {
        // A socket left by a stopped unit refuses: the program is still there.
        if let Ok(socket) = UnixStream::connect(&config.pam_helper_socket).await {
            let (from, mut to) = socket.into_split();
            let begin = apppass_proto::helper::Begin {
                service: proof.stack.to_string(),
                user: proof.user.to_string(),
                rhost: proof.client.map(str::to_string),
            }
            .encode();
            write_frame(&mut to, &begin).await.map_err(|e| {
                Relayed::Helper(format!("{}: {e}", config.pam_helper_socket.display()))
            })?;
            return Ok(Helper {
                to: Box::new(to),
                from: Box::new(from),
                child: None,
            });
        }
    }
    let mut command = tokio::process::Command::new(&config.pam_helper);
    command
        .arg(proof.stack)
        .arg(proof.user)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(client) = proof.client {
        command.arg("--rhost").arg(client);
    }
    if config.pam_dir != std::path::Path::new(apppass_core::config::DEFAULT_PAM_DIR) {
        command.arg("--confdir").arg(&config.pam_dir);
    }
    let mut child = command
        .spawn()
        .map_err(|e| Relayed::Helper(format!("cannot run {}: {e}", config.pam_helper.display())))?;
    let (Some(to), Some(from), Some(errors)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Relayed::Helper("no pipes to the helper".into()));
    };
    Ok(Helper {
        to: Box::new(to),
        from: Box::new(from),
        child: Some((child, errors)),
    })
}

async fn write_frame(
    to: &mut (impl tokio::io::AsyncWrite + Unpin + ?Sized),
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(body.len() + 4));
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(body);
    to.write_all(&out).await?;
    to.flush().await
}

async fn relay(
    cx: &Context,
    stream: &mut UnixStream,
    proof: &Proof<'_>,
) -> Result<Verdict, Relayed> {
    let config = &cx.shared.config;
    let mut helper = helper(config, proof).await?;
    loop {
        let body = match read_frame(&mut helper.from).await {
            Ok(b) => b,
            Err(e) => {
                let mut why = e.to_string();
                if let Some((mut child, mut errors)) = helper.child.take() {
                    let mut text = Vec::new();
                    let _ = (&mut errors).take(1024).read_to_end(&mut text).await;
                    let status = child
                        .wait()
                        .await
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    why = format!(
                        "{why} ({status}): {}",
                        String::from_utf8_lossy(&text).trim()
                    );
                }
                return Err(Relayed::Helper(why));
            }
        };
        match FromHelper::decode(&body) {
            Ok(FromHelper::Done(verdict)) => {
                drop(helper.to);
                if let Some((mut child, _)) = helper.child.take() {
                    let _ = child.wait().await;
                }
                return Ok(verdict);
            }
            Ok(FromHelper::Conversation(prompts)) => {
                let asked = prompts.len();
                crate::server::write(stream, &Response::Conversation(prompts))
                    .await
                    .map_err(|_| Relayed::Client(Response::Done))?;
                let answer = crate::server::read(stream, config.prove_timeout)
                    .await
                    .map_err(|e| {
                        Relayed::Client(Response::error(ErrorKind::BadRequest, e.to_string()))
                    })?;
                let answers = match Request::decode(&answer) {
                    Ok(Request::Answer { answers }) if answers.len() == asked => answers,
                    _ => {
                        return Err(Relayed::Client(Response::error(
                            ErrorKind::BadRequest,
                            format!("expected the answers to {asked} prompts"),
                        )));
                    }
                };
                let frame = Request::Answer { answers }.encode();
                if write_frame(&mut helper.to, &frame).await.is_err() {
                    return Err(Relayed::Helper("the helper stopped reading".into()));
                }
            }
            Err(e) => return Err(Relayed::Helper(format!("bad message: {e}"))),
        }
    }
}

async fn read_frame(
    from: &mut (impl tokio::io::AsyncRead + Unpin + ?Sized),
) -> Result<Vec<u8>, WireError> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).await.map_err(WireError::Io)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_HELPER_FRAME {
        return Err(WireError::TooLarge {
            len: n,
            max: MAX_HELPER_FRAME,
        });
    }
    let mut body = vec![0u8; n];
    from.read_exact(&mut body).await.map_err(WireError::Io)?;
    Ok(body)
}

/// Runs a session's re-proof through the portal's stack, and notes it in the session.
pub async fn reprove(cx: &Context, stream: &mut UnixStream, bound: &Bound) -> Result<(), Response> {
    let client = cx.presence.client(bound);
    prove(
        cx,
        stream,
        &bound.peer,
        &Proof {
            stack: PORTAL_STACK,
            user: &bound.user,
            client: client.as_deref(),
        },
    )
    .await?;
    cx.presence.set_proved(bound, apppass_core::time::now());
    Ok(())
}
