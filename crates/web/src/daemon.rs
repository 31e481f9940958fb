//! Reaching apppassd: a blocking connection per browser request (the protocol's own
//! client), kept open only while a sign-in's conversation waits for the person.

use std::path::PathBuf;
use std::time::Duration;

use apppass_proto::{Client, ClientError, ErrorKind, Request, Response, Session};
use nix::unistd::{Uid, User};

/// Why a call to apppassd gave no usable answer.
#[derive(Debug)]
pub enum Failure {
    /// apppassd could not be reached, or did not answer in time.
    Unreachable(ClientError),
    /// apppassd refused, and why.
    Refused(ErrorKind, String),
    /// An answer that does not fit the request.
    Unexpected(&'static str),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(e) => write!(f, "{e}"),
            Failure::Refused(kind, m) => write!(f, "{}: {m}", kind.as_str()),
            Failure::Unexpected(what) => write!(f, "unexpected answer from apppassd to {what}"),
        }
    }
}

/// Where apppassd is and whom to trust there.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub socket: PathBuf,
    pub timeout: Duration,
    /// The user apppassd runs as: a socket it owns is trusted, besides root's.
    pub user: String,
}

impl Daemon {
    pub fn connect(&self) -> Result<Conn, Failure> {
        let own = Uid::effective().as_raw();
        let daemon_uid = User::from_name(&self.user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw());
        let mut trust = |uid: u32| uid == 0 || uid == own || Some(uid) == daemon_uid;
        Client::connect_trusting(&self.socket, self.timeout, &mut trust)
            .map(Conn)
            .map_err(Failure::Unreachable)
    }
}

/// One connection to apppassd.
#[derive(Debug)]
pub struct Conn(Client);

impl Conn {
    /// Sends `request`; an error answer becomes [`Failure::Refused`].
    pub fn call(&mut self, request: &Request) -> Result<Response, Failure> {
        match self.0.call(request).map_err(Failure::Unreachable)? {
            Response::Error { kind, message } => Err(Failure::Refused(kind, message)),
            r => Ok(r),
        }
    }

    /// Binds this connection to the session named by `token`.
    pub fn resume(&mut self, token: &str) -> Result<Session, Failure> {
        match self.call(&Request::Resume {
            token: apppass_proto::message::Secret::new(token.as_bytes()),
        })? {
            Response::Session(s) => Ok(*s),
            _ => Err(Failure::Unexpected("resume")),
        }
    }
}
