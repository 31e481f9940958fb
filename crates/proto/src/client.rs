//! The client every front uses (the PAM module, the CLI, the portal): connect with a
//! deadline, check who answers, send one request, read one answer within the deadline.
//! Blocking, without threads: it runs inside sshd and Dovecot.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::message::{Request, Response};
use crate::wire::{self, WireError};

/// Why a call did not get an answer.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens at the socket (no file, or nobody accepting): apppassd is not
    /// running.
    NotRunning(PathBuf, io::Error),
    /// The socket, or the process answering on it, belongs to a user the client does not
    /// trust with a password.
    Untrusted(String),
    /// No connection or no answer within the timeout.
    Timeout(Duration),
    /// Reading or writing failed (apppassd went away mid-request, say).
    Io(io::Error),
    /// An answer that is not one (another protocol version, garbage).
    Protocol(WireError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotRunning(p, e) => {
                write!(f, "apppassd is not running ({}: {e})", p.display())
            }
            ClientError::Untrusted(why) => write!(f, "refusing to talk to {why}"),
            ClientError::Timeout(t) => {
                write!(f, "apppassd did not answer within {} s", t.as_secs_f32())
            }
            ClientError::Io(e) => write!(f, "lost the connection to apppassd: {e}"),
            ClientError::Protocol(e) => write!(f, "bad answer from apppassd: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A connection to apppassd.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    timeout: Duration,
    /// The first call shares the connection's deadline: connecting and the answer
    /// together take at most the timeout (a login must not wait twice as long).
    first_deadline: Option<Instant>,
    /// The uid of the process that answers (from the kernel).
    server_uid: u32,
}

impl Client {
    /// Connects to the socket at `path` within `timeout`. The socket file and the process
    /// listening on it must belong to one of `trusted` (root, apppassd's user, the
    /// caller itself), as sssd's client checks: a password goes to nobody else.
    pub fn connect(path: &Path, timeout: Duration, trusted: &[u32]) -> Result<Client, ClientError> {
        Client::connect_trusting(path, timeout, &mut |uid| trusted.contains(&uid))
    }

    /// [`Client::connect`], asking `trust` about each uid (the socket file's owner, then
    /// the listening process's): a caller can then look a name up only when a uid is
    /// neither root nor its own, which on most systems never happens (systemd, or
    /// apppassd started as root, listens as root).
    pub fn connect_trusting(
        path: &Path,
        timeout: Duration,
        trust: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Client, ClientError> {
        let deadline = Instant::now() + timeout;
        let meta =
            std::fs::metadata(path).map_err(|e| ClientError::NotRunning(path.to_path_buf(), e))?;
        if !meta.file_type().is_socket() {
            return Err(ClientError::NotRunning(
                path.to_path_buf(),
                io::Error::other("not a socket"),
            ));
        }
        if !trust(meta.uid()) {
            return Err(ClientError::Untrusted(format!(
                "{}: owned by uid {}, which is neither root nor apppassd's user",
                path.display(),
                meta.uid()
            )));
        }
        let addr = SocketAddrUnix::new(path).map_err(|e| ClientError::Io(e.into()))?;
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| ClientError::Io(e.into()))?;
        // A Unix socket's non-blocking connect either completes or says EAGAIN (the
        // listener's backlog is full: a flooded daemon); it cannot be waited for, only
        // tried again, until the deadline.
        loop {
            match rustix::net::connect(&fd, &addr) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(ClientError::Timeout(timeout));
                    }
                    std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
                }
                Err(e) => return Err(ClientError::NotRunning(path.to_path_buf(), e.into())),
            }
        }
        let peer =
            rustix::net::sockopt::socket_peercred(&fd).map_err(|e| ClientError::Io(e.into()))?;
        let server_uid = peer.uid.as_raw();
        if !trust(server_uid) {
            return Err(ClientError::Untrusted(format!(
                "the process on {} (pid {}, uid {server_uid}): neither root nor apppassd's user",
                path.display(),
                peer.pid.as_raw_nonzero()
            )));
        }
        rustix::io::ioctl_fionbio(fd.as_fd(), false).map_err(|e| ClientError::Io(e.into()))?;
        let stream = UnixStream::from(fd);
        Ok(Client {
            stream,
            timeout,
            first_deadline: Some(deadline),
            server_uid,
        })
    }

    /// The time left for the first call's answer, which the request should carry so that
    /// apppassd drops it unanswered rather than hash for nobody.
    pub fn time_left(&self) -> Duration {
        self.first_deadline.map_or(self.timeout, |d| {
            d.saturating_duration_since(Instant::now())
        })
    }

    /// The uid of the process answering.
    pub fn server_uid(&self) -> u32 {
        self.server_uid
    }

    /// Sends `request` and waits, at most the timeout given to [`Client::connect`], for
    /// its answer (the first call: what is left of it after connecting).
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let deadline = self
            .first_deadline
            .take()
            .unwrap_or_else(|| Instant::now() + self.timeout);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(self.timeout));
        }
        self.stream
            .set_write_timeout(Some(left))
            .map_err(ClientError::Io)?;
        wire::write_frame(&mut self.stream, &request.encode()).map_err(|e| self.error(e))?;
        self.read(deadline)
    }

    /// The next answer of a request that answers more than once (a backup's chunks).
    pub fn read_more(&mut self) -> Result<Response, ClientError> {
        self.read(Instant::now() + self.timeout)
    }

    fn read(&mut self, deadline: Instant) -> Result<Response, ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(self.timeout));
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(ClientError::Io)?;
        let body =
            wire::read_frame(&mut self.stream, wire::MAX_RESPONSE).map_err(|e| self.error(e))?;
        Response::decode(&body).map_err(ClientError::Protocol)
    }

    fn error(&self, e: WireError) -> ClientError {
        match e {
            WireError::Io(e) if wire::is_timeout(&e) => ClientError::Timeout(self.timeout),
            WireError::Io(e) => ClientError::Io(e),
            WireError::Closed => ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "apppassd closed the connection without answering",
            )),
            e => ClientError::Protocol(e),
        }
    }
}
