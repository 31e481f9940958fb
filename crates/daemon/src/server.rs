//! The connections: one async task each on a single thread (tokio), so that hundreds of
//! clients cost a few kilobytes each, never a thread or an argon2 arena. A task reads a
//! frame within its timeouts, decodes it strictly, answers `status` itself and hands
//! everything else to the queue, then writes the worker's answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apppass_proto::wire::{self, Decoder, WireError};
use apppass_proto::{ErrorKind, Request, Response, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

use crate::peer::{Class, Peer};
use crate::presence::{self, Proof};
use crate::queue::{Full, Queue};
use crate::service::Reply;
use crate::state::{Shared, count};
use crate::worker::Job;

/// A client must send its first request this soon after connecting.
const FIRST_REQUEST: Duration = Duration::from_secs(5);
/// An idle connection (the CLI between requests) is closed after this.
const IDLE: Duration = Duration::from_secs(60);
/// Once a frame has begun, all of it must arrive within this.
const FRAME: Duration = Duration::from_secs(5);
/// Writing an answer may take this long (a client that stops reading is dropped).
const WRITE: Duration = Duration::from_secs(5);
/// How long a management request (add, list, a backup) may wait for a worker.
const MANAGEMENT_DEADLINE: Duration = Duration::from_secs(60);
/// Connections at most of one uid of the user class.
const USER_CONNECTIONS: u32 = 32;
/// A backup is streamed in chunks of this size.
const CHUNK: usize = 256 * 1024;

/// Open connections, in all and per uid.
#[derive(Default)]
pub struct Connections {
    per_uid: Mutex<HashMap<u32, u32>>,
}

/// One connection counted; uncounted when dropped.
struct Counted<'a> {
    connections: &'a Connections,
    shared: &'a Shared,
    uid: u32,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let mut map = self
            .connections
            .per_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.uid);
            }
        }
        self.shared
            .health
            .clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Connections {
    /// Counts a connection of `peer`, unless there are too many.
    fn admit<'a>(&'a self, shared: &'a Shared, peer: &Peer) -> Option<Counted<'a>> {
        use std::sync::atomic::Ordering;
        let mut map = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        let total = shared.health.clients.load(Ordering::Relaxed);
        let mine = map.get(&peer.uid).copied().unwrap_or(0);
        if total >= shared.config.max_clients
            || (peer.class == Class::User && mine >= USER_CONNECTIONS)
        {
            return None;
        }
        *map.entry(peer.uid).or_default() += 1;
        shared.health.clients.fetch_add(1, Ordering::Relaxed);
        Some(Counted {
            connections: self,
            shared,
            uid: peer.uid,
        })
    }
}

/// Everything a connection task needs.
#[derive(Clone)]
pub struct Context {
    pub shared: Arc<Shared>,
    pub queue: Arc<Queue<Job>>,
    pub connections: Arc<Connections>,
    pub stop: watch::Receiver<bool>,
    /// The store's path, for `status`.
    pub store: String,
    /// Proofs under way, failed proofs, portal sessions.
    pub presence: Arc<crate::presence::Presence>,
}

/// What one connection has established: a proof of presence, a portal session.
#[derive(Default)]
struct Standing {
    /// When this connection's person last proved who they are (Unix seconds); taken
    /// by the credential it lets be made.
    proved: Option<i64>,
    /// The portal's connection acts for this session's person.
    bound: Option<presence::Bound>,
}

/// Serves one connection until the client closes it, errs, idles out, or apppassd
/// stops.
pub async fn serve(mut stream: UnixStream, mut cx: Context) {
    let shared = Arc::clone(&cx.shared);
    let peer = match Peer::of(&stream, &shared.access) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            shared
                .log
                .warning(&format!("cannot read a client's credentials: {e}"));
            return;
        }
    };
    let connections = Arc::clone(&cx.connections);
    let Some(_counted) = connections.admit(&shared, &peer) else {
        shared.health.count(count::CONNECTIONS_REFUSED);
        let _ = write(
            &mut stream,
            &Response::error(ErrorKind::Busy, "too many connections to apppassd"),
        )
        .await;
        return;
    };
    let mut first = true;
    let mut standing = Standing::default();
    loop {
        // The first request is always waited for, also while stopping: the client
        // connected before apppassd stopped accepting, and is owed an answer.
        let body = if first {
            read(&mut stream, FIRST_REQUEST).await
        } else {
            tokio::select! {
                r = read(&mut stream, IDLE) => r,
                _ = cx.stop.changed() => return,
            }
        };
        first = false;
        let body = match body {
            Ok(b) => b,
            Err(WireError::Closed) => return,
            Err(WireError::Io(_)) => return,
            Err(e) => {
                shared.health.count(count::BAD_REQUEST);
                let _ = write(
                    &mut stream,
                    &Response::error(ErrorKind::BadRequest, e.to_string()),
                )
                .await;
                return;
            }
        };
        shared.health.count(count::REQUESTS);
        let request = match Request::decode(&body) {
            Ok(r) => r,
            Err(e) => {
                shared.health.count(count::BAD_REQUEST);
                let _ = write(
                    &mut stream,
                    &Response::error(ErrorKind::BadRequest, e.to_string()),
                )
                .await;
                return;
            }
        };
        drop(body);
        let acting = match &standing.bound {
            Some(b) => Arc::clone(&b.peer),
            None => Arc::clone(&peer),
        };
        let answer = match request {
            Request::Status => status(&cx, &acting).await,
            Request::Prove | Request::SignIn { .. } | Request::Resume { .. } | Request::SignOut => {
                standing_request(&cx, &mut stream, &peer, &mut standing, request).await
            }
            Request::Answer { .. } => {
                shared.health.count(count::BAD_REQUEST);
                let _ = write(
                    &mut stream,
                    &Response::error(ErrorKind::BadRequest, "no conversation is under way"),
                )
                .await;
                return;
            }
            _ if peer.portal && standing.bound.is_none() => Response::error(
                ErrorKind::Denied,
                "the portal acts only for a signed-in person: resume a session first",
            ),
            request if request.creates_credential() && !may_create(&cx, &acting, &mut standing) => {
                Response::error(
                    ErrorKind::Reauthenticate,
                    "making a credential needs proof that it is you: prove it first (apppass asks for your account password)",
                )
            }
            request => match dispatch(&cx, &acting, request, &stream).await {
                Reply::Answer(r) => r,
                Reply::Written => continue,
                Reply::Rest(bytes) => {
                    let wrote = tokio::time::timeout(WRITE, stream.write_all(&bytes)).await;
                    if !matches!(wrote, Ok(Ok(()))) {
                        return;
                    }
                    continue;
                }
                Reply::Backup(file) => {
                    if stream_file(&mut stream, &file.0).await.is_err() {
                        return;
                    }
                    continue;
                }
            },
        };
        if write(&mut stream, &answer).await.is_err() {
            return;
        }
    }
}

/// Whether `acting` may make a credential on this connection now: root always; anyone
/// else within `reauthenticate_after` of proving who they are (once per proof at a
/// terminal).
fn may_create(cx: &Context, acting: &Peer, standing: &mut Standing) -> bool {
    if acting.uid == 0 {
        return true;
    }
    let now = apppass_core::time::now();
    let proved = match &standing.bound {
        Some(bound) => cx.presence.proved(bound),
        None => standing.proved.take(),
    };
    proved.is_some_and(|p| cx.shared.config.proof_is_fresh(p, now))
}

/// Proofs, sign-ins and sessions: answered on the connection, never by a worker.
async fn standing_request(
    cx: &Context,
    stream: &mut UnixStream,
    peer: &Arc<Peer>,
    standing: &mut Standing,
    request: Request,
) -> Response {
    let config = &cx.shared.config;
    let now = apppass_core::time::now;
    match request {
        Request::Prove => {
            if let Some(bound) = standing.bound.clone() {
                return match presence::reprove(cx, stream, &bound).await {
                    Ok(()) => Response::Proved,
                    Err(r) => r,
                };
            }
            if peer.portal {
                return Response::error(
                    ErrorKind::Denied,
                    "the portal proves people through their sessions",
                );
            }
            if peer.uid == 0 {
                standing.proved = Some(now());
                return Response::Proved;
            }
            let uid = peer.uid;
            let Ok(Some(user)) =
                tokio::task::spawn_blocking(move || crate::peer::user_name(uid)).await
            else {
                return Response::error(
                    ErrorKind::Denied,
                    format!("uid {uid} has no user name to prove"),
                );
            };
            let proof = Proof {
                stack: presence::STACK,
                user: &user,
                client: None,
            };
            match presence::prove(cx, stream, peer, &proof).await {
                Ok(()) => {
                    standing.proved = Some(now());
                    Response::Proved
                }
                Err(r) => r,
            }
        }
        Request::SignIn { user, client } => {
            if !peer.portal || standing.bound.is_some() {
                return Response::error(
                    ErrorKind::Denied,
                    "only the portal (portal_user) signs people in",
                );
            }
            if let Err(e) = apppass_proto::names::check_user(&user) {
                return Response::error(ErrorKind::Usage, e);
            }
            if let Some(c) = &client
                && c.parse::<std::net::IpAddr>().is_err()
            {
                return Response::error(ErrorKind::Usage, "the client must be an IP address");
            }
            // The person's credentials, as their own processes would have them: what
            // the portal may then do for them is what they may do.
            let access = cx.shared.access.clone();
            let name = user.clone();
            let person = tokio::task::spawn_blocking(move || crate::peer::person(&access, &name))
                .await
                .ok()
                .flatten();
            let proof = Proof {
                stack: presence::PORTAL_STACK,
                user: &user,
                client: client.as_deref(),
            };
            // An unknown user or root is refused after the stack has run, as any wrong
            // password is: the portal's answer must not tell which names exist.
            let proved = presence::prove(cx, stream, peer, &proof).await;
            match (proved, person) {
                (Ok(()), Some(person)) if person.uid != 0 => {
                    match cx.presence.open(&user, person, client, now(), config) {
                        Ok(session) => {
                            cx.shared.log.info(&format!(
                                "portal session opened: user={}",
                                crate::log::field(&user)
                            ));
                            Response::Session(Box::new(session))
                        }
                        Err(r) => r,
                    }
                }
                (Ok(()), _) => Response::error(
                    ErrorKind::Denied,
                    "that did not prove who you are: the account password (or code) was wrong",
                ),
                (Err(r), _) => r,
            }
        }
        Request::Resume { token } => {
            if !peer.portal {
                return Response::error(ErrorKind::Denied, "only the portal resumes sessions");
            }
            match cx.presence.resume(&token, now(), config) {
                Ok((bound, session)) => {
                    standing.bound = Some(bound);
                    Response::Session(Box::new(session))
                }
                Err(r) => {
                    standing.bound = None;
                    r
                }
            }
        }
        Request::SignOut => match standing.bound.take() {
            Some(bound) => {
                cx.presence.close(&bound);
                cx.shared.log.info(&format!(
                    "portal session closed: user={}",
                    crate::log::field(&bound.user)
                ));
                Response::Done
            }
            None => Response::error(ErrorKind::Usage, "no session to sign out of"),
        },
        _ => Response::error(ErrorKind::Internal, "not a standing request"),
    }
}

/// Queues a request for the workers and waits for the answer, at most until its
/// deadline (and a little, for a verification already under way).
async fn dispatch(cx: &Context, peer: &Arc<Peer>, request: Request, stream: &UnixStream) -> Reply {
    let now = Instant::now();
    let deadline = match &request {
        Request::Authenticate(a) => {
            now + Duration::from_millis(u64::from(a.timeout_ms.max(1)))
                .min(cx.shared.config.timeout)
        }
        _ => now + MANAGEMENT_DEADLINE,
    };
    let (tx, rx) = oneshot::channel();
    // A verification that started just before the deadline runs to its end.
    let connection_waits = deadline + Duration::from_secs(2);
    // A login's worker writes the answer itself (see worker::write_direct).
    let direct = match &request {
        Request::Authenticate(_) => rustix::io::dup(std::os::fd::AsFd::as_fd(stream)).ok(),
        _ => None,
    };
    let job = Job {
        peer: Arc::clone(peer),
        request,
        deadline,
        connection_waits,
        reply: tx,
        direct,
    };
    if let Err((_, why)) = cx.queue.push(job) {
        cx.shared.health.count(count::BUSY);
        let message = match why {
            Full::Closed => "apppassd is stopping",
            Full::Queue => "apppassd is busy: its queue is full",
            Full::Users => "apppassd is busy: the share of the queue for users is full",
            Full::Share => "apppassd is busy: you already have as many requests waiting as you may",
        };
        return Reply::Answer(Response::error(ErrorKind::Busy, message));
    }
    match tokio::time::timeout_at(connection_waits.into(), rx).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => Reply::Answer(Response::error(
            ErrorKind::Internal,
            "apppassd's worker stopped without answering",
        )),
        Err(_) => {
            cx.shared.health.count(count::EXPIRED);
            Reply::Answer(Response::error(
                ErrorKind::Timeout,
                "no answer within the request's deadline",
            ))
        }
    }
}

/// The daemon's health, and who it takes the caller to be.
async fn status(cx: &Context, peer: &Arc<Peer>) -> Response {
    use std::sync::atomic::Ordering;
    let p = Arc::clone(peer);
    // NSS may block: not on the connections' thread.
    let you = tokio::task::spawn_blocking(move || p.identity())
        .await
        .unwrap_or_default();
    let h = &cx.shared.health;
    Response::Status(Box::new(Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        daemon_uid: cx.shared.uid,
        uptime_s: h.started.elapsed().as_secs(),
        store: cx.store.clone(),
        store_error: h.store_error(),
        store_warning: h.store_warning(),
        schema_version: h.schema_version(),
        workers: cx.shared.workers,
        busy: h.busy.load(Ordering::Relaxed),
        queued: u32::try_from(cx.queue.len()).unwrap_or(u32::MAX),
        queue_max: u32::try_from(cx.queue.limits().total).unwrap_or(u32::MAX),
        clients: h.clients.load(Ordering::Relaxed),
        counts: h.counts(),
        you,
    }))
}

/// Reads one request frame: its start within `wait`, all of it within [`FRAME`] after.
pub(crate) async fn read(
    stream: &mut UnixStream,
    wait: Duration,
) -> Result<zeroize::Zeroizing<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    let first = tokio::time::timeout(wait, stream.read(&mut len))
        .await
        .map_err(|_| WireError::Io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(WireError::Io)?;
    if first == 0 {
        return Err(WireError::Closed);
    }
    let rest = async {
        stream.read_exact(&mut len[first..]).await?;
        let n = u32::from_be_bytes(len) as usize;
        if n > wire::MAX_REQUEST {
            return Ok(Err(WireError::TooLarge {
                len: n,
                max: wire::MAX_REQUEST,
            }));
        }
        let mut body = zeroize::Zeroizing::new(vec![0u8; n]);
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(Ok(body))
    };
    match tokio::time::timeout(FRAME, rest).await {
        Err(_) => Err(WireError::Malformed("frame not complete within 5 s")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(WireError::Malformed("frame cut short"))
        }
        Ok(Err(e)) => Err(WireError::Io(e)),
        Ok(Ok(r)) => r,
    }
}

/// Writes one answer frame within [`WRITE`].
pub(crate) async fn write(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let body = response.encode();
    // Checked so that a bug can never send what a client would refuse to read.
    debug_assert!(Decoder::new(&body).is_ok());
    let mut frame = zeroize::Zeroizing::new(Vec::with_capacity(4 + body.len()));
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&body);
    tokio::time::timeout(WRITE, stream.write_all(&frame))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Streams a backup file as chunks, then [`Response::Done`].
async fn stream_file(stream: &mut UnixStream, path: &PathBuf) -> std::io::Result<()> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        write(stream, &Response::Chunk(buf[..n].to_vec())).await?;
    }
    write(stream, &Response::Done).await
}
