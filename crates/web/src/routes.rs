//! The portal's pages and what each does through apppassd. Every page that acts for a
//! person first binds its apppassd connection to their session (`Resume`): the daemon,
//! not the portal, decides who they are, whether the session still holds, and what they
//! may do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apppass_core::config::Config;
use apppass_core::log::{Log, field};
use apppass_core::networks::Networks;
use apppass_proto::message::Secret;
use apppass_proto::{
    AddRequest, ErrorKind, Prompt, PromptStyle, Request, Response, RevokeOutcome, Session,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State as Extract};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use maud::Markup;
use zeroize::Zeroizing;

use crate::daemon::{Conn, Daemon, Failure};
use crate::form::Form;
use crate::pages::{self, Nav};
use crate::profile;
use crate::server::Peer;
use crate::text as t;

/// The session cookie: `__Host-` so that only this origin, over HTTPS, at `/`, sets it.
pub const COOKIE: &str = "__Host-apppass";
/// Largest request body: forms are small.
const MAX_BODY: usize = 16 * 1024;
/// A sign-in waiting for the person's next answer keeps its apppassd connection this
/// long at most...
const PENDING_FOR: Duration = Duration::from_secs(120);
/// ... and at most this many wait at once.
const MAX_PENDING: usize = 256;
/// A create form's one-time value is remembered this long, so that reloading the page
/// that showed a password makes no second one.
const NONCE_FOR: Duration = Duration::from_secs(3600);
const MAX_NONCES: usize = 8192;
/// Entries of the activity page.
const LOG_LIMIT: u32 = 200;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the portal keeps between requests: no secret of anyone but the open connections
/// of sign-ins that wait for a second answer.
pub struct Inner {
    pub config: Config,
    pub log: Arc<Log>,
    daemon: Daemon,
    tls: bool,
    pending: Mutex<HashMap<String, Pending>>,
    nonces: Mutex<HashMap<String, Instant>>,
}

#[derive(Clone)]
pub struct State(Arc<Inner>);

impl Deref for State {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl State {
    pub fn new(config: Config, log: Arc<Log>, tls: bool) -> State {
        let daemon = Daemon {
            socket: config.socket.clone(),
            timeout: config.timeout.max(Duration::from_secs(10)),
            user: config.user.clone(),
        };
        State(Arc::new(Inner {
            config,
            log,
            daemon,
            tls,
            pending: Mutex::new(HashMap::new()),
            nonces: Mutex::new(HashMap::new()),
        }))
    }
}

/// A conversation that waits for the person: its open connection to apppassd, and what
/// to do once the stack is satisfied.
struct Pending {
    conn: Conn,
    created: Instant,
    purpose: Purpose,
    prompts: Vec<Prompt>,
}

enum Purpose {
    /// Signing `user` in (their name is shown again if it fails).
    SignIn { user: String },
    /// Proof of presence before making a credential; `token` ties it to the session
    /// that asked.
    Make {
        token: Zeroizing<String>,
        making: Making,
    },
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/signin", get(sign_in_form).post(sign_in))
        .route("/signin/next", post(sign_in_next))
        .route("/signout", post(sign_out))
        .route("/new", get(create_form).post(create))
        .route("/new/next", post(create_next))
        .route("/regenerate/{id}", get(regenerate_confirm))
        .route("/regenerate", post(regenerate))
        .route("/regenerate/next", post(regenerate_next))
        .route("/revoke/{id}", get(revoke_confirm))
        .route("/revoke", post(revoke))
        .route("/revoke-all", get(revoke_all_confirm).post(revoke_all))
        .route("/networks/{id}", get(networks_form))
        .route("/networks", post(networks))
        .route("/log", get(log_page))
        .route(
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            get(autoconfig),
        )
        .route("/mail/config-v1.1.xml", get(autoconfig))
        .route("/static/copy.js", get(script))
        .route("/static/style.css", get(style))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

// ---- Headers and the same-origin rule, for every request ----

/// Refuses state-changing requests from other origins, and sets the security headers
/// on every answer.
async fn guard(
    Extract(state): Extract<State>,
    request: axum::extract::Request,
    next: Next,
) -> HttpResponse {
    let method = request.method().clone();
    let mut response = if method == Method::GET || method == Method::HEAD {
        next.run(request).await
    } else if method != Method::POST {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response()
    } else if !same_origin(request.headers()) {
        page(
            &state,
            StatusCode::FORBIDDEN,
            None,
            t::BAD_REQUEST,
            pages::error(Some(t::FORGED)),
        )
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if state.tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// Whether a POST comes from a page of this site: its Origin (or, without one, its
/// Referer) names the host the browser asked for. Browsers send Origin with every form
/// POST; a request with neither is refused.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(source) = source else {
        return false;
    };
    let Some(rest) = source
        .strip_prefix("https://")
        .or_else(|| source.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    !authority.is_empty() && authority.eq_ignore_ascii_case(host)
}

/// Equal, in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client's address for throttling: the connection's own, or, when that is a
/// trusted proxy (or the Unix socket, where only the local proxy connects), the
/// nearest address in X-Forwarded-For that is not itself a trusted proxy.
fn client_addr(peer: Peer, headers: &HeaderMap, trusted: Option<&Networks>) -> Option<String> {
    let is_trusted = |a: &IpAddr| trusted.is_some_and(|n| n.allows(Some(&a.to_string())));
    if let Some(direct) = peer.addr
        && !is_trusted(&direct)
    {
        return Some(direct.to_string());
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for entry in forwarded.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(a) if is_trusted(&a) => continue,
            Ok(a) => return Some(a.to_string()),
            // Garbage from further out cannot be believed: stop at the last good hop.
            Err(_) => break,
        }
    }
    peer.addr.map(|a| a.to_string())
}

// ---- Small helpers ----

fn page(
    state: &State,
    status: StatusCode,
    session: Option<&Session>,
    title: &str,
    body: Markup,
) -> HttpResponse {
    let nav = Nav {
        site: &state.config.web.site_name,
        user: session.map(|s| s.user.as_str()),
        csrf: session.map(|s| s.csrf.as_str()),
    };
    (
        status,
        axum::response::Html(pages::layout(&nav, title, body).into_string()),
    )
        .into_response()
}

fn redirect(to: &str) -> HttpResponse {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

fn set_cookie(mut response: HttpResponse, value: &str, clear: bool) -> HttpResponse {
    let cookie = if clear {
        format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
    } else {
        format!("{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict")
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// The session token from the cookie, if it has a token's shape.
fn token(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(';') {
            if let Some(v) = part
                .trim()
                .strip_prefix(COOKIE)
                .and_then(|r| r.strip_prefix('='))
            {
                let ok = !v.is_empty()
                    && v.len() <= 256
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b));
                if ok {
                    return Some(Zeroizing::new(v.to_string()));
                }
            }
        }
    }
    None
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the kernel's random numbers");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs the blocking daemon work of a request on tokio's blocking threads.
async fn blocking<F>(f: F) -> HttpResponse
where
    F: FnOnce() -> HttpResponse + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn form_of(headers: &HeaderMap, body: &[u8]) -> Option<Form> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    if !ct
        .split(';')
        .next()?
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        return None;
    }
    Form::parse(body)
}

fn bad_request(state: &State) -> HttpResponse {
    page(
        state,
        StatusCode::BAD_REQUEST,
        None,
        t::BAD_REQUEST,
        pages::error(Some(t::BAD_REQUEST)),
    )
}

fn unavailable(state: &State, why: &Failure) -> HttpResponse {
    state.log.err(&format!("apppassd: {why}"));
    page(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        t::SIGN_IN,
        pages::error(Some(t::UNAVAILABLE)),
    )
}

/// A person's request, bound to their session: the connection, and the session as
/// apppassd sees it now. `Err`: the answer to give instead (to sign in again, say).
fn resume(state: &State, headers: &HeaderMap) -> Result<(Conn, Session), Box<HttpResponse>> {
    let Some(token) = token(headers) else {
        return Err(Box::new(redirect("/signin")));
    };
    let mut conn = state
        .daemon
        .connect()
        .map_err(|e| Box::new(unavailable(state, &e)))?;
    match conn.resume(&token) {
        Ok(session) => Ok((conn, session)),
        Err(Failure::Refused(
            ErrorKind::Unavailable | ErrorKind::Busy | ErrorKind::Internal,
            m,
        )) => Err(Box::new(unavailable(
            state,
            &Failure::Refused(ErrorKind::Unavailable, m),
        ))),
        Err(Failure::Refused(..)) => Err(Box::new(set_cookie(
            redirect("/signin?m=expired"),
            "",
            true,
        ))),
        Err(e) => Err(Box::new(unavailable(state, &e))),
    }
}

/// [`resume`] for a form, whose anti-forgery value must be the session's.
fn resume_form(
    state: &State,
    headers: &HeaderMap,
    form: &Form,
) -> Result<(Conn, Session), Box<HttpResponse>> {
    let (conn, session) = resume(state, headers)?;
    if !same_secret(form.get("csrf"), &session.csrf) {
        return Err(Box::new(page(
            state,
            StatusCode::FORBIDDEN,
            Some(&session),
            t::BAD_REQUEST,
            pages::error(Some(t::FORGED)),
        )));
    }
    Ok((conn, session))
}

/// How a daemon refusal reads to the person.
fn refusal(f: &Failure) -> (StatusCode, String) {
    match f {
        Failure::Refused(ErrorKind::Denied, _) => (StatusCode::FORBIDDEN, t::DENIED.into()),
        Failure::Refused(ErrorKind::NotFound, _) => (StatusCode::NOT_FOUND, t::NOT_FOUND.into()),
        // apppassd's usage and limit messages are written for people (a bad network,
        // an expiry beyond policy, too many passwords).
        Failure::Refused(ErrorKind::Usage | ErrorKind::Limit, m) => {
            (StatusCode::BAD_REQUEST, m.clone())
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, t::UNAVAILABLE.into()),
    }
}

/// The page titled `title` that says why apppassd refused.
fn refused(state: &State, session: &Session, title: &str, f: &Failure) -> HttpResponse {
    let (status, m) = refusal(f);
    page(state, status, Some(session), title, pages::error(Some(&m)))
}

// ---- Conversations with the apppass-portal stack ----

enum Step {
    Done(Response),
    Ask(Vec<Prompt>),
}

fn is_input(p: &Prompt) -> bool {
    matches!(p.style, PromptStyle::EchoOff | PromptStyle::EchoOn)
}

/// Answers what the portal can answer itself: messages, and the first hidden prompt
/// with the password the person typed on the form. Anything else goes to the person.
fn converse(
    conn: &mut Conn,
    mut answer: Response,
    mut password: Option<Zeroizing<String>>,
) -> Result<Step, Failure> {
    loop {
        let Response::Conversation(prompts) = answer else {
            return Ok(Step::Done(answer));
        };
        let inputs: Vec<&Prompt> = prompts.iter().filter(|p| is_input(p)).collect();
        let answers = match (inputs.as_slice(), password.as_ref()) {
            ([], _) => prompts.iter().map(|_| Secret::default()).collect(),
            ([only], Some(_)) if only.style == PromptStyle::EchoOff => {
                let pw = password.take().unwrap_or_default();
                prompts
                    .iter()
                    .map(|p| {
                        if is_input(p) {
                            Secret::new(pw.as_bytes())
                        } else {
                            Secret::default()
                        }
                    })
                    .collect()
            }
            _ => return Ok(Step::Ask(prompts)),
        };
        answer = conn.call(&Request::Answer { answers })?;
    }
}

/// The person's answers to `prompts`, from the form's `a0`, `a1`, ... fields.
fn answers_of(form: &mut Form, prompts: &[Prompt]) -> Vec<Secret> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if is_input(p) {
                Secret::new(form.take(&format!("a{i}")).as_bytes())
            } else {
                Secret::default()
            }
        })
        .collect()
}

impl Inner {
    /// Keeps a conversation for the person's next answer; `None` when too many wait.
    fn park(&self, p: Pending) -> Option<String> {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, v| v.created.elapsed() < PENDING_FOR);
        if map.len() >= MAX_PENDING {
            return None;
        }
        let id = random_id();
        map.insert(id.clone(), p);
        Some(id)
    }

    fn unpark(&self, id: &str) -> Option<Pending> {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, v| v.created.elapsed() < PENDING_FOR);
        map.remove(id)
    }

    /// Marks a create form's one-time value as used; false if it already was.
    fn first_use(&self, nonce: &str) -> bool {
        let mut map = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, t| t.elapsed() < NONCE_FOR);
        if map.contains_key(nonce) {
            return false;
        }
        // Full: forget the oldest rather than refuse everyone's forms.
        if map.len() >= MAX_NONCES
            && let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(nonce.to_string(), Instant::now());
        true
    }

    fn forget_nonce(&self, nonce: &str) {
        let mut map = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(nonce);
    }
}

// ---- Signing in and out ----

#[derive(serde::Deserialize)]
struct Message {
    m: Option<String>,
}

async fn sign_in_form(Extract(state): Extract<State>, Query(q): Query<Message>) -> HttpResponse {
    let message = match q.m.as_deref() {
        Some("expired") => Some(t::EXPIRED),
        Some("out") => Some(t::SIGNED_OUT),
        Some("gone") => Some(t::PENDING_GONE),
        _ => None,
    };
    page(
        &state,
        StatusCode::OK,
        None,
        t::SIGN_IN,
        pages::sign_in(message, ""),
    )
}

async fn sign_in(
    Extract(state): Extract<State>,
    axum::Extension(peer): axum::Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let Some(mut form) = form_of(&headers, &body) else {
        return bad_request(&state);
    };
    let user = form.get("user").trim().to_string();
    let password = form.take("password");
    let client = client_addr(peer, &headers, state.config.web.trusted_proxies.as_ref());
    blocking(move || {
        if user.is_empty() || user.len() > 256 {
            return page(
                &state,
                StatusCode::UNAUTHORIZED,
                None,
                t::SIGN_IN,
                pages::sign_in(Some(t::WRONG), &user),
            );
        }
        let mut conn = match state.daemon.connect() {
            Ok(c) => c,
            Err(e) => return unavailable(&state, &e),
        };
        let step = conn
            .call(&Request::SignIn {
                user: user.clone(),
                client,
            })
            .and_then(|first| converse(&mut conn, first, Some(password)));
        finish_sign_in(&state, conn, step, &user)
    })
    .await
}

fn finish_sign_in(
    state: &State,
    conn: Conn,
    step: Result<Step, Failure>,
    user: &str,
) -> HttpResponse {
    match step {
        Ok(Step::Done(Response::Session(s))) => set_cookie(
            redirect("/"),
            std::str::from_utf8(s.token.as_bytes()).unwrap_or(""),
            false,
        ),
        Ok(Step::Done(_)) => unavailable(state, &Failure::Unexpected("sign-in")),
        Ok(Step::Ask(prompts)) => {
            let shown = prompts.clone();
            match state.park(Pending {
                conn,
                created: Instant::now(),
                purpose: Purpose::SignIn {
                    user: user.to_string(),
                },
                prompts,
            }) {
                Some(id) => page(
                    state,
                    StatusCode::OK,
                    None,
                    t::SIGN_IN,
                    pages::conversation("/signin/next", &id, None, &shown),
                ),
                None => page(
                    state,
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    t::SIGN_IN,
                    pages::sign_in(Some(t::BUSY), user),
                ),
            }
        }
        Err(Failure::Refused(ErrorKind::Limit, _)) => page(
            state,
            StatusCode::TOO_MANY_REQUESTS,
            None,
            t::SIGN_IN,
            pages::sign_in(Some(t::THROTTLED), user),
        ),
        Err(Failure::Refused(ErrorKind::Denied | ErrorKind::NotFound | ErrorKind::Usage, _)) => {
            page(
                state,
                StatusCode::UNAUTHORIZED,
                None,
                t::SIGN_IN,
                pages::sign_in(Some(t::WRONG), user),
            )
        }
        Err(e) => unavailable(state, &e),
    }
}

async fn sign_in_next(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let Some(mut form) = form_of(&headers, &body) else {
        return bad_request(&state);
    };
    blocking(move || {
        let id = form.get("pending").to_string();
        let Some(mut p) = state.unpark(&id) else {
            return redirect("/signin?m=gone");
        };
        let Purpose::SignIn { user } = std::mem::replace(
            &mut p.purpose,
            Purpose::SignIn {
                user: String::new(),
            },
        ) else {
            return redirect("/signin?m=gone");
        };
        let answers = answers_of(&mut form, &p.prompts);
        let step = p
            .conn
            .call(&Request::Answer { answers })
            .and_then(|r| converse(&mut p.conn, r, None));
        finish_sign_in(&state, p.conn, step, &user)
    })
    .await
}

async fn sign_out(Extract(state): Extract<State>, headers: HeaderMap, body: Bytes) -> HttpResponse {
    let Some(form) = form_of(&headers, &body) else {
        return bad_request(&state);
    };
    blocking(move || {
        let (mut conn, _) = match resume_form(&state, &headers, &form) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        match conn.call(&Request::SignOut) {
            Ok(_) => set_cookie(redirect("/signin?m=out"), "", true),
            Err(e) => unavailable(&state, &e),
        }
    })
    .await
}

// ---- The list, the log, revoking ----

#[derive(serde::Deserialize)]
struct Whose {
    user: Option<String>,
    done: Option<String>,
    n: Option<u64>,
}

/// The user an admin asked to look at (`None`: oneself).
fn of(session: &Session, user: Option<&str>) -> Option<String> {
    user.map(str::trim)
        .filter(|u| !u.is_empty() && *u != session.user)
        .map(str::to_string)
}

async fn home(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Query(q): Query<Whose>,
) -> HttpResponse {
    blocking(move || {
        let (mut conn, session) = match resume(&state, &headers) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let whose = of(&session, q.user.as_deref());
        let message = match (q.done.as_deref(), q.n) {
            (Some("revoked"), _) => Some(t::REVOKED_ONE.to_string()),
            (Some("all"), Some(n)) => Some(format!("{} {n}", t::REVOKED_N)),
            (Some("duplicate"), _) => Some(t::DUPLICATE.to_string()),
            (Some("networks"), _) => Some(t::NETWORKS_SAVED.to_string()),
            _ => None,
        };
        match conn.call(&Request::List {
            user: whose.clone(),
            all: false,
        }) {
            Ok(Response::Passwords(list)) => page(
                &state,
                StatusCode::OK,
                Some(&session),
                t::PASSWORDS,
                pages::list(&list, whose.as_deref(), session.admin, message.as_deref()),
            ),
            Ok(_) => unavailable(&state, &Failure::Unexpected("list")),
            Err(e) => refused(&state, &session, t::PASSWORDS, &e),
        }
    })
    .await
}

async fn log_page(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Query(q): Query<Whose>,
) -> HttpResponse {
    blocking(move || {
        let (mut conn, session) = match resume(&state, &headers) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let whose = of(&session, q.user.as_deref());
        match conn.call(&Request::Log {
            user: whose.clone(),
            all: false,
            limit: LOG_LIMIT,
        }) {
            Ok(Response::Events(events)) => page(
                &state,
                StatusCode::OK,
                Some(&session),
                t::LOG,
                pages::log(&events, whose.as_deref()),
            ),
            Ok(_) => unavailable(&state, &Failure::Unexpected("log")),
            Err(e) => refused(&state, &session, t::LOG, &e),
        }
    })
    .await
}

/// Where to go back to after acting on `whose`'s passwords.
fn back_to(whose: Option<&str>, done: &str) -> String {
    match whose {
        Some(u) => format!("/?user={}&{done}", pages::url_encode(u)),
        None => format!("/?{done}"),
    }
}

async fn revoke_confirm(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<Whose>,
) -> HttpResponse {
    blocking(move || {
        let (mut conn, session) = match resume(&state, &headers) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let whose = of(&session, q.user.as_deref());
        // Which password: the person confirms what they see, not an id.
        let which = match conn.call(&Request::List {
            user: whose.clone(),
            all: false,
        }) {
            Ok(Response::Passwords(list)) => list.into_iter().find(|p| p.id == id),
            _ => None,
        };
        let Some(which) = which else {
            return page(
                &state,
                StatusCode::NOT_FOUND,
                Some(&session),
                t::REVOKE,
                pages::error(Some(t::NOT_FOUND)),
            );
        };
        let what = if which.label.is_empty() {
            which.service.clone()
        } else {
            format!("{} · {}", which.service, which.label)
        };
        let mut hidden = vec![("id", id.to_string())];
        if let Some(u) = &whose {
            hidden.push(("user", u.clone()));
        }
        let body = pages::confirm(
            Some(&what),
            t::REVOKE_CONFIRM,
            "/revoke",
            &session.csrf,
            &hidden,
            &back_to(whose.as_deref(), ""),
        );
        page(&state, StatusCode::OK, Some(&session), t::REVOKE, body)
    })
    .await
}

async fn revoke(Extract(state): Extract<State>, headers: HeaderMap, body: Bytes) -> HttpResponse {
    let Some(form) = form_of(&headers, &body) else {
        return bad_request(&state);
    };
    blocking(move || {
        let (mut conn, session) = match resume_form(&state, &headers, &form) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let Ok(id) = form.get("id").parse::<i64>() else {
            return bad_request(&state);
        };
        let whose = of(&session, Some(form.get("user")));
        match conn.call(&Request::Revoke { ids: vec![id] }) {
            Ok(Response::Revoked(r))
                if matches!(
                    r.first(),
                    Some((_, RevokeOutcome::Now | RevokeOutcome::Already))
                ) =>
            {
                redirect(&back_to(whose.as_deref(), "done=revoked"))
            }
            Ok(Response::Revoked(_)) => page(
                &state,
                StatusCode::NOT_FOUND,
                Some(&session),
                t::REVOKE,
                pages::error(Some(t::NOT_FOUND)),
            ),
            Ok(_) => unavailable(&state, &Failure::Unexpected("revoke")),
            Err(e) => refused(&state, &session, t::REVOKE, &e),
        }
    })
    .await
}

async fn revoke_all_confirm(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Query(q): Query<Whose>,
) -> HttpResponse {
    blocking(move || {
        let (_, session) = match resume(&state, &headers) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let whose = of(&session, q.user.as_deref());
        let hidden: Vec<(&str, String)> = whose.iter().map(|u| ("user", u.clone())).collect();
        let body = pages::confirm(
            None,
            t::REVOKE_ALL_CONFIRM,
            "/revoke-all",
            &session.csrf,
            &hidden,
            &back_to(whose.as_deref(), ""),
        );
        page(&state, StatusCode::OK, Some(&session), t::REVOKE_ALL, body)
    })
    .await
}

async fn revoke_all(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let Some(form) = form_of(&headers, &body) else {
        return bad_request(&state);
    };
    blocking(move || {
        let (mut conn, session) = match resume_form(&state, &headers, &form) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let whose = of(&session, Some(form.get("user")));
        match conn.call(&Request::RevokeAll {
            user: whose.clone(),
            service: None,
        }) {
            Ok(Response::Count(n)) => {
                redirect(&back_to(whose.as_deref(), &format!("done=all&n={n}")))
            }
            Ok(_) => unavailable(&state, &Failure::Unexpected("revoke-all")),
            Err(e) => refused(&state, &session, t::REVOKE_ALL, &e),
        }
    })
    .await
}

async fn networks_form(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<Whose>,
) -> HttpResponse {
    blocking(move || {
        let (mut conn, session) = match resume(&state, &headers) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let whose = of(&session, q.user.as_deref());
        let back = back_to(whose.as_deref(), "");
        match conn.call(&Request::List {
            user: whose.clone(),
            all: false,
        }) {
            Ok(Response::Passwords(list)) => match list.iter().find(|p| p.id == id) {
                Some(p) => page(
                    &state,
                    StatusCode::OK,
                    Some(&session),
                    t::NETWORKS_EDIT,
                    pages::networks(p, &session.csrf, whose.as_deref(), &back),
                ),
                None => page(
                    &state,
                    StatusCode::NOT_FOUND,
                    Some(&session),
                    t::NETWORKS_EDIT,
                    pages::error(Some(t::NOT_FOUND)),
                ),
            },
            Ok(_) => unavailable(&state, &Failure::Unexpected("list")),
            Err(e) => refused(&state, &session, t::NETWORKS_EDIT, &e),
        }
    })
    .await
}

async fn networks(Extract(state): Extract<State>, headers: HeaderMap, body: Bytes) -> HttpResponse {
    let Some(form) = form_of(&headers, &body) else {
        return bad_request(&state);
    };
    blocking(move || {
        let (mut conn, session) = match resume_form(&state, &headers, &form) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let Ok(id) = form.get("id").parse::<i64>() else {
            return bad_request(&state);
        };
        let whose = of(&session, Some(form.get("user")));
        match conn.call(&Request::SetNetworks {
            id,
            from: opt(form.get("from")),
        }) {
            Ok(_) => redirect(&back_to(whose.as_deref(), "done=networks")),
            Err(e) => refused(&state, &session, t::NETWORKS_EDIT, &e),
        }
    })
    .await
}

// ---- Creating ----

/// Lifetimes the form offers, within the site's `max_lifetime`.
fn expiries(config: &Config) -> Vec<(&'static str, &'static str)> {
    const ALL: [(&str, &str, i64); 5] = [
        ("7d", t::DAYS_7, 7),
        ("30d", t::DAYS_30, 30),
        ("90d", t::DAYS_90, 90),
        ("180d", t::DAYS_180, 180),
        ("365d", t::YEAR_1, 365),
    ];
    ALL.iter()
        .filter(|(_, _, d)| config.max_lifetime.is_none_or(|m| d * 86_400 <= m))
        .map(|(v, n, _)| (*v, *n))
        .collect()
}

/// The services people may choose, the `mail` group first (one password for IMAP and
/// SMTP alike).
fn services(config: &Config) -> Vec<String> {
    let mut s = config.services.clone();
    s.sort_by_key(|n| n != apppass_core::policy::MAIL_GROUP);
    s
}

fn create_page(
    state: &State,
    session: &Session,
    status: StatusCode,
    message: Option<&str>,
    label: &str,
    ask: bool,
) -> HttpResponse {
    let services = services(&state.config);
    let expiries = expiries(&state.config);
    let nonce = random_id();
    // apppassd would ask for the account password again: the form shows its field now.
    let ask_password = ask || !proof_fresh(state, session);
    let body = pages::create(&pages::CreateForm {
        csrf: &session.csrf,
        nonce: &nonce,
        services: &services,
        expiries: &expiries,
        ask_password,
        message,
        label,
    });
    page(state, status, Some(session), t::CREATE, body)
}

async fn create_form(Extract(state): Extract<State>, headers: HeaderMap) -> HttpResponse {
    blocking(move || match resume(&state, &headers) {
        Ok((_, session)) => create_page(&state, &session, StatusCode::OK, None, "", false),
        Err(r) => *r,
    })
    .await
}

fn opt(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

async fn create(Extract(state): Extract<State>, headers: HeaderMap, body: Bytes) -> HttpResponse {
    let Some(form) = form_of(&headers, &body) else {
        return bad_request(&state);
    };
    blocking(move || {
        let (conn, session) = match resume_form(&state, &headers, &form) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let add = AddRequest {
            user: None,
            service: form.get("service").to_string(),
            label: form.get("label").trim().to_string(),
            expires: opt(form.get("expires")),
            from: opt(form.get("from")),
        };
        prove_and_make(&state, &headers, form, conn, session, Making::Create(add))
    })
    .await
}

async fn create_next(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    make_next(state, headers, body, "/new/next", "/new").await
}

/// A credential a form makes once the person has proved it is them: a new app
/// password, or a new secret for one.
#[derive(Clone)]
enum Making {
    Create(AddRequest),
    Regenerate(i64),
}

impl Making {
    /// Where the next step of its proof is posted.
    fn next(&self) -> &'static str {
        match self {
            Making::Create(_) => "/new/next",
            Making::Regenerate(_) => "/regenerate/next",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Making::Create(_) => t::CREATE,
            Making::Regenerate(_) => t::REGENERATE,
        }
    }

    /// Makes it on `conn`, and shows it this once.
    fn make(self, state: &State, conn: &mut Conn, session: &Session) -> HttpResponse {
        match self {
            Making::Create(add) => add_and_show(state, conn, session, add),
            Making::Regenerate(id) => regenerate_and_show(state, conn, session, id),
        }
    }

    /// Its form again, asking for the account password, saying `message`.
    fn again(
        &self,
        state: &State,
        headers: &HeaderMap,
        session: &Session,
        status: StatusCode,
        message: &str,
    ) -> HttpResponse {
        match self {
            Making::Create(add) => {
                create_page(state, session, status, Some(message), &add.label, true)
            }
            Making::Regenerate(id) => match resume(state, headers) {
                Ok((mut conn, _)) => {
                    regenerate_page(state, &mut conn, session, *id, status, Some(message), true)
                }
                Err(r) => *r,
            },
        }
    }
}

/// What a form that makes a credential does: nothing if it was sent before (its nonce);
/// the proof first when it carries the account password (a further prompt, such as a
/// one-time code, gets a page of its own); then the credential, shown once.
fn prove_and_make(
    state: &State,
    headers: &HeaderMap,
    mut form: Form,
    mut conn: Conn,
    session: Session,
    making: Making,
) -> HttpResponse {
    let nonce = form.get("nonce").to_string();
    if nonce.len() != 64 || !state.first_use(&nonce) {
        return redirect("/?done=duplicate");
    }
    let password = form.take("password");
    if !password.is_empty() {
        let step = conn
            .call(&Request::Prove)
            .and_then(|r| converse(&mut conn, r, Some(password)));
        match step {
            Ok(Step::Done(Response::Proved)) => {}
            Ok(Step::Done(_)) => {
                state.forget_nonce(&nonce);
                return unavailable(state, &Failure::Unexpected("prove"));
            }
            Ok(Step::Ask(prompts)) => {
                let shown = prompts.clone();
                let (next, title) = (making.next(), making.title());
                let token = token(headers).unwrap_or_default();
                let parked = state.park(Pending {
                    conn,
                    created: Instant::now(),
                    purpose: Purpose::Make {
                        token,
                        making: making.clone(),
                    },
                    prompts,
                });
                return match parked {
                    Some(id) => page(
                        state,
                        StatusCode::OK,
                        Some(&session),
                        title,
                        pages::conversation(next, &id, Some(&session.csrf), &shown),
                    ),
                    None => making.again(
                        state,
                        headers,
                        &session,
                        StatusCode::SERVICE_UNAVAILABLE,
                        t::BUSY,
                    ),
                };
            }
            Err(e) => {
                state.forget_nonce(&nonce);
                let m = match e {
                    Failure::Refused(ErrorKind::Limit, _) => t::THROTTLED,
                    Failure::Refused(..) => t::WRONG,
                    _ => t::UNAVAILABLE,
                };
                return making.again(state, headers, &session, StatusCode::UNAUTHORIZED, m);
            }
        }
    }
    let response = making.make(state, &mut conn, &session);
    if !response.status().is_success() {
        state.forget_nonce(&nonce);
    }
    response
}

/// The next step of a proof that a form posted to `route` started: the stack's prompts
/// answered on the parked connection, then the credential. Only the session that
/// started it may finish it; a lost or foreign one starts again at `start`.
async fn make_next(
    state: State,
    headers: HeaderMap,
    body: Bytes,
    route: &'static str,
    start: &'static str,
) -> HttpResponse {
    let Some(mut form) = form_of(&headers, &body) else {
        return bad_request(&state);
    };
    blocking(move || {
        let id = form.get("pending").to_string();
        let Some(mut p) = state.unpark(&id) else {
            return redirect(start);
        };
        let Purpose::Make {
            token: owner,
            making,
        } = std::mem::replace(
            &mut p.purpose,
            Purpose::SignIn {
                user: String::new(),
            },
        )
        else {
            return redirect(start);
        };
        if making.next() != route {
            return redirect(start);
        }
        let (_, session) = match resume_form(&state, &headers, &form) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        if !token(&headers).is_some_and(|t| same_secret(&t, &owner)) {
            return page(
                &state,
                StatusCode::FORBIDDEN,
                Some(&session),
                t::BAD_REQUEST,
                pages::error(Some(t::FORGED)),
            );
        }
        let answers = answers_of(&mut form, &p.prompts);
        let step = p
            .conn
            .call(&Request::Answer { answers })
            .and_then(|r| converse(&mut p.conn, r, None));
        match step {
            Ok(Step::Done(Response::Proved)) => making.make(&state, &mut p.conn, &session),
            Ok(_) | Err(Failure::Refused(..)) => making.again(
                &state,
                &headers,
                &session,
                StatusCode::UNAUTHORIZED,
                t::WRONG,
            ),
            Err(e) => unavailable(&state, &e),
        }
    })
    .await
}

/// Whether apppassd still takes `session`'s sign-in (or last proof) as proof for a new
/// credential.
fn proof_fresh(state: &State, session: &Session) -> bool {
    state
        .config
        .proof_is_fresh(session.proved, apppass_core::time::now())
}

/// A new password, shown this once with its QR code and profile, in this one answer.
fn show_added(state: &State, session: &Session, a: &apppass_proto::Added) -> HttpResponse {
    let qr = profile::qr_svg(&a.password, t::QR_LABEL);
    let data = profile::Mail::of(&state.config.web).map(|mail| {
        let plist = Zeroizing::new(profile::mobileconfig(&mail, &a.user, &a.password));
        profile::base64(plist.as_bytes())
    });
    let data = data.map(Zeroizing::new);
    let body = pages::shown_once(
        &a.password,
        &a.service,
        &a.label,
        qr.as_deref(),
        data.as_ref().map(|d| d.as_str()),
    );
    page(
        state,
        StatusCode::OK,
        Some(session),
        t::SHOWN_ONCE_TITLE,
        body,
    )
}

/// Creates the password and shows it, with its QR code and profile, in this one answer.
fn add_and_show(
    state: &State,
    conn: &mut Conn,
    session: &Session,
    add: AddRequest,
) -> HttpResponse {
    let label = add.label.clone();
    match conn.call(&Request::Add(add)) {
        Ok(Response::Added(a)) => {
            state.log.info(&format!(
                "created user={} id={} service={}",
                field(&a.user),
                a.id,
                field(&a.service)
            ));
            show_added(state, session, &a)
        }
        Ok(_) => unavailable(state, &Failure::Unexpected("add")),
        Err(Failure::Refused(ErrorKind::Reauthenticate, _)) => create_page(
            state,
            session,
            StatusCode::UNAUTHORIZED,
            Some(t::REAUTH),
            &label,
            true,
        ),
        Err(e) => {
            let (status, m) = refusal(&e);
            create_page(state, session, status, Some(&m), &label, false)
        }
    }
}

// ---- Regenerate: a new secret in place of an old one, shown once ----

/// The person's own active app password `id`, as "service · label".
fn own_password(conn: &mut Conn, id: i64) -> Option<String> {
    match conn.call(&Request::List {
        user: None,
        all: false,
    }) {
        Ok(Response::Passwords(list)) => list
            .into_iter()
            .find(|p| p.id == id && p.revoked.is_none())
            .map(|p| {
                if p.label.is_empty() {
                    p.service
                } else {
                    format!("{} · {}", p.service, p.label)
                }
            }),
        _ => None,
    }
}

fn regenerate_page(
    state: &State,
    conn: &mut Conn,
    session: &Session,
    id: i64,
    status: StatusCode,
    message: Option<&str>,
    ask: bool,
) -> HttpResponse {
    let Some(what) = own_password(conn, id) else {
        return page(
            state,
            StatusCode::NOT_FOUND,
            Some(session),
            t::REGENERATE,
            pages::error(Some(t::NOT_FOUND)),
        );
    };
    let nonce = random_id();
    let body = pages::regenerate(&pages::RegenerateForm {
        what: &what,
        id,
        csrf: &session.csrf,
        nonce: &nonce,
        ask_password: ask || !proof_fresh(state, session),
        message,
    });
    page(state, status, Some(session), t::REGENERATE, body)
}

async fn regenerate_confirm(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> HttpResponse {
    blocking(move || match resume(&state, &headers) {
        Ok((mut conn, session)) => {
            regenerate_page(&state, &mut conn, &session, id, StatusCode::OK, None, false)
        }
        Err(r) => *r,
    })
    .await
}

async fn regenerate(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let Some(form) = form_of(&headers, &body) else {
        return bad_request(&state);
    };
    blocking(move || {
        let (conn, session) = match resume_form(&state, &headers, &form) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let Ok(id) = form.get("id").parse::<i64>() else {
            return bad_request(&state);
        };
        prove_and_make(
            &state,
            &headers,
            form,
            conn,
            session,
            Making::Regenerate(id),
        )
    })
    .await
}

async fn regenerate_next(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    make_next(state, headers, body, "/regenerate/next", "/").await
}

/// Regenerates app password `id` and shows the new one, this once.
fn regenerate_and_show(state: &State, conn: &mut Conn, session: &Session, id: i64) -> HttpResponse {
    match conn.call(&Request::Regenerate { id }) {
        Ok(Response::Added(a)) => {
            state.log.info(&format!(
                "regenerated user={} id={} replaces={id} service={}",
                field(&a.user),
                a.id,
                field(&a.service)
            ));
            show_added(state, session, &a)
        }
        Ok(_) => unavailable(state, &Failure::Unexpected("regenerate")),
        Err(Failure::Refused(ErrorKind::Reauthenticate, _)) => regenerate_page(
            state,
            conn,
            session,
            id,
            StatusCode::UNAUTHORIZED,
            Some(t::REGENERATE_REAUTH),
            true,
        ),
        Err(e) => refused(state, session, t::REGENERATE, &e),
    }
}

// ---- Without a session ----

async fn autoconfig(Extract(state): Extract<State>) -> HttpResponse {
    match profile::Mail::of(&state.config.web) {
        Some(mail) => (
            [
                (header::CONTENT_TYPE, "application/xml; charset=utf-8"),
                (header::CACHE_CONTROL, "max-age=3600"),
            ],
            profile::autoconfig(&mail),
        )
            .into_response(),
        None => not_found(Extract(state)).await,
    }
}

async fn script() -> HttpResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../static/copy.js"),
    )
        .into_response()
}

async fn style() -> HttpResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../static/style.css"),
    )
        .into_response()
}

async fn not_found(Extract(state): Extract<State>) -> HttpResponse {
    page(
        &state,
        StatusCode::NOT_FOUND,
        None,
        t::NOT_FOUND,
        pages::error(Some(t::NOT_FOUND)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn same_origin_needs_a_matching_origin_or_referer() {
        let ok = headers(&[
            ("host", "portal.example:8443"),
            ("origin", "https://portal.example:8443"),
        ]);
        assert!(same_origin(&ok));
        let referer = headers(&[
            ("host", "p.example"),
            ("referer", "https://p.example/new?x"),
        ]);
        assert!(same_origin(&referer));
        for bad in [
            headers(&[("host", "p.example"), ("origin", "https://evil.example")]),
            headers(&[("host", "p.example"), ("origin", "null")]),
            headers(&[
                ("host", "p.example"),
                ("origin", "https://p.example.evil.example"),
            ]),
            headers(&[("host", "p.example")]),
            headers(&[("origin", "https://p.example")]),
        ] {
            assert!(!same_origin(&bad), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let trusted = Networks::parse("127.0.0.1, 10.0.0.0/8").unwrap();
        let xff = headers(&[("x-forwarded-for", "203.0.113.7, 10.1.2.3")]);
        let proxy = Peer {
            addr: Some("127.0.0.1".parse().unwrap()),
        };
        let stranger = Peer {
            addr: Some("198.51.100.1".parse().unwrap()),
        };
        assert_eq!(
            client_addr(proxy, &xff, Some(&trusted)).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            client_addr(stranger, &xff, Some(&trusted)).as_deref(),
            Some("198.51.100.1")
        );
        assert_eq!(client_addr(proxy, &xff, None).as_deref(), Some("127.0.0.1"));
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, garbage, 203.0.113.9")]);
        assert_eq!(
            client_addr(proxy, &spoofed, Some(&trusted)).as_deref(),
            Some("203.0.113.9")
        );
        let unix = Peer { addr: None };
        assert_eq!(client_addr(unix, &xff, None).as_deref(), Some("10.1.2.3"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd") && !same_secret("abc", "ab") && !same_secret("", ""));
    }
}
