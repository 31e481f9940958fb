//! The module's logic, free of libpam so that it can be tested alone: arguments and
//! settings, what the host knows of the login, one request to apppassd, and its answer
//! as a PAM code ([`code_for`], the one place where answers become codes).
//!
//! apppassd writes the login's syslog line (it knows the outcome and why); the module
//! logs only what apppassd cannot: that it could not be reached, and why.

use std::path::Path;
use std::time::Duration;

use apppass_proto::args::{self, ModuleArgs};
use apppass_proto::conf::{self, ClientSettings};
use apppass_proto::{AuthAnswer, AuthRequest, Client, ErrorKind, Request, Response};
use zeroize::Zeroizing;

use crate::code::Code;

/// Syslog priorities the module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

/// What the login logic needs from the application that loaded the module.
pub trait Host {
    /// PAM_USER (asking the application if it is not set yet).
    fn user(&mut self) -> Result<Vec<u8>, Code>;
    /// The password, via `pam_get_authtok` (which honours use_first_pass/try_first_pass).
    fn authtok(&mut self) -> Result<Zeroizing<Vec<u8>>, Code>;
    /// PAM_SERVICE.
    fn service(&self) -> Option<String>;
    /// PAM_RHOST.
    fn rhost(&self) -> Option<String>;
    /// PAM_TTY.
    fn tty(&self) -> Option<String>;
    /// PAM_RUSER.
    fn ruser(&self) -> Option<String>;
    /// The login name of the controlling terminal's user, as pam_unix logs it.
    fn logname(&self) -> Option<String>;
    /// Real and effective uid of the host process.
    fn uids(&self) -> (u32, u32);
    /// The uid of a user (NSS), for the user apppassd runs as.
    fn uid_of(&self, name: &str) -> Option<u32>;
    /// One line to syslog (authpriv), prefixed by libpam with `pam_apppass(service:auth)`.
    fn log(&self, level: Level, message: &str);
}

/// Why a login got no answer from apppassd.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad arguments or configuration.
    Config(String),
    /// libpam or the application failed us (no user, conversation error, ...).
    Host(Code),
    /// apppassd could not be reached, or did not answer in time.
    Unreachable(String),
}

/// `pam_sm_authenticate`.
pub fn authenticate(host: &mut dyn Host, argv: &[&[u8]]) -> Code {
    let args = match args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            host.log(Level::Err, &format!("bad arguments: {e}"));
            return Code::SERVICE_ERR;
        }
    };
    for arg in &args.unknown {
        host.log(
            Level::Warning,
            &format!("unknown argument ignored: {}", field(arg)),
        );
    }
    for arg in &args.obsolete {
        host.log(
            Level::Warning,
            &format!(
                "argument {arg} is obsolete and ignored: apppassd owns the store now (its --db or db setting); remove it from this PAM line (apppass doctor shows where)"
            ),
        );
    }
    match ask(host, &args) {
        Ok(response) => {
            let code = code_for(&response);
            if args.debug {
                host.log(Level::Debug, &format!("apppassd answered {code}"));
            }
            if let Response::Error { kind, message } = &response {
                // apppassd logged its side; the host's log says why this login failed.
                let level = if *kind == ErrorKind::Denied {
                    Level::Notice
                } else {
                    Level::Err
                };
                host.log(
                    level,
                    &format!("apppassd: {}: {}", kind.as_str(), field_text(message)),
                );
            }
            code
        }
        Err(Failure::Config(why)) => {
            host.log(Level::Err, &format!("bad configuration: {why}"));
            Code::SERVICE_ERR
        }
        Err(Failure::Host(code)) => {
            // Conversation failures (a client that hung up) are routine.
            let level = if args.debug {
                Level::Debug
            } else {
                Level::Info
            };
            host.log(level, &format!("no password obtained (libpam said {code})"));
            // Never PAM_ABORT: it tells the application to give up altogether.
            if code == Code::ABORT {
                Code::SYSTEM_ERR
            } else {
                code
            }
        }
        Err(Failure::Unreachable(why)) => {
            host.log(Level::Err, &format!("{why}: PAM_AUTHINFO_UNAVAIL"));
            Code::AUTHINFO_UNAVAIL
        }
    }
}

/// The one place where apppassd's answers become PAM codes.
pub fn code_for(response: &Response) -> Code {
    match response {
        Response::Auth(AuthAnswer::Success { .. }) => Code::SUCCESS,
        Response::Auth(AuthAnswer::Denied { .. }) => Code::AUTH_ERR,
        // The next module decides (a migration stack's pam_unix).
        Response::Auth(AuthAnswer::NoAppPasswords) => Code::USER_UNKNOWN,
        // This process may not check that user's password (not root, not auth_trusted,
        // not the user itself): a refusal, as unix_chkpwd's.
        Response::Error {
            kind: ErrorKind::Denied,
            ..
        } => Code::AUTH_ERR,
        Response::Error {
            kind: ErrorKind::BadRequest,
            ..
        } => Code::SERVICE_ERR,
        // Unavailable, busy, timed out, internal: the stack decides what then happens.
        Response::Error { .. } => Code::AUTHINFO_UNAVAIL,
        // Not an answer to a login at all.
        _ => Code::AUTHINFO_UNAVAIL,
    }
}

/// Settings, the login's items, one request.
fn ask(host: &mut dyn Host, args: &ModuleArgs) -> Result<Response, Failure> {
    let (_, euid) = host.uids();
    let settings = settings(args, euid == 0)?;
    let socket = args.socket.as_deref().unwrap_or(&settings.socket);
    let timeout = args.timeout.unwrap_or(settings.timeout);
    let user = host.user().map_err(Failure::Host)?;
    let pam_service = host
        .service()
        .ok_or_else(|| Failure::Config("the application set no PAM service name".into()))?;
    let service = args.service.clone().unwrap_or_else(|| pam_service.clone());
    if args.debug {
        host.log(
            Level::Debug,
            &format!(
                "socket={} scope={} timeout={}ms",
                field(&socket.display().to_string()),
                field(&service),
                timeout.as_millis()
            ),
        );
    }
    let mut password = host.authtok().map_err(Failure::Host)?;
    // A megabyte typed as a password is still a wrong password, not a frame too large
    // to send: what is beyond the limit cannot matter (see MAX_PASSWORD).
    password.truncate(apppass_proto::message::MAX_PASSWORD + 1);
    let mut client = connect(host, socket, timeout, &settings.user)?;
    let request = Request::Authenticate(AuthRequest {
        user,
        service,
        pam_service,
        rhost: host.rhost(),
        tty: host.tty(),
        ruser: host.ruser(),
        logname: host.logname(),
        password,
        timeout_ms: millis(client.time_left()),
    });
    client.call(&request).map_err(|e| unreachable(socket, e))
}

/// A connection to apppassd on `socket`. Root, apppassd's user (`daemon_user`), and this
/// process's own user may answer: a password goes to nobody else. apppassd's user is
/// looked up (NSS) only if a uid is neither root nor ours: where systemd or root made
/// the socket, never.
pub(crate) fn connect(
    host: &dyn Host,
    socket: &Path,
    timeout: Duration,
    daemon_user: &str,
) -> Result<Client, Failure> {
    let (_, euid) = host.uids();
    let mut daemon_uid = None;
    let mut trust = |uid: u32| {
        uid == 0
            || uid == euid
            || Some(uid) == *daemon_uid.get_or_insert_with(|| host.uid_of(daemon_user))
    };
    Client::connect_trusting(socket, timeout, &mut trust).map_err(|e| unreachable(socket, e))
}

pub(crate) fn unreachable(socket: &Path, e: apppass_proto::ClientError) -> Failure {
    Failure::Unreachable(format!("cannot ask apppassd on {}: {e}", socket.display()))
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// The client's settings from the configuration; as root, only from a file only root
/// can change (it names the socket a password is sent to).
pub(crate) fn settings(args: &ModuleArgs, as_root: bool) -> Result<ClientSettings, Failure> {
    let (path, explicit) = match &args.conf {
        Some(p) => (p.as_path(), true),
        None => (Path::new(conf::DEFAULT_CONFIG), false),
    };
    if as_root && (explicit || path.exists()) {
        apppass_proto::trust::check_root_only(path).map_err(|e| {
            Failure::Config(format!("refusing a configuration others can change: {e}"))
        })?;
    }
    ClientSettings::load(path, explicit).map_err(|e| Failure::Config(e.to_string()))
}

/// A value for the log: client-supplied text must not add fields or lines.
pub(crate) fn field(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_graphic() && b != b'\\' && b != b'"' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A message from apppassd for the log: its spaces kept, nothing else unprintable.
pub(crate) fn field_text(value: &str) -> String {
    field(value).replace("\\x20", " ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A scripted application: what libpam would hand the module (as PAM service
    /// `service`), and the lines the module logged.
    pub(crate) struct TestHost {
        pub(crate) service: &'static str,
        pub(crate) lines: RefCell<Vec<(Level, String)>>,
    }

    impl TestHost {
        pub(crate) fn new(service: &'static str) -> TestHost {
            TestHost {
                service,
                lines: RefCell::new(Vec::new()),
            }
        }
    }

    impl Host for TestHost {
        fn user(&mut self) -> Result<Vec<u8>, Code> {
            Ok(b"alice".to_vec())
        }
        fn authtok(&mut self) -> Result<Zeroizing<Vec<u8>>, Code> {
            Ok(Zeroizing::new(
                b"k46p-wjpw-pvq5-txq2-c86r-4tuk-ckzh".to_vec(),
            ))
        }
        fn service(&self) -> Option<String> {
            Some(self.service.into())
        }
        fn rhost(&self) -> Option<String> {
            None
        }
        fn tty(&self) -> Option<String> {
            None
        }
        fn ruser(&self) -> Option<String> {
            None
        }
        fn logname(&self) -> Option<String> {
            None
        }
        fn uids(&self) -> (u32, u32) {
            (1000, 1000)
        }
        fn uid_of(&self, _: &str) -> Option<u32> {
            None
        }
        fn log(&self, level: Level, message: &str) {
            self.lines.borrow_mut().push((level, message.to_string()));
        }
    }

    fn run(argv: &[&str]) -> (Code, Vec<(Level, String)>) {
        let mut host = TestHost::new("imap");
        let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
        let code = authenticate(&mut host, &argv);
        (code, host.lines.into_inner())
    }

    #[test]
    fn no_daemon_is_authinfo_unavail_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("apppass.conf");
        std::fs::write(&conf, "").unwrap();
        let socket = dir.path().join("none.sock");
        let start = std::time::Instant::now();
        let (code, lines) = run(&[
            &format!("socket={}", socket.display()),
            &format!("conf={}", conf.display()),
        ]);
        assert_eq!(code, Code::AUTHINFO_UNAVAIL);
        assert!(start.elapsed() < Duration::from_secs(1));
        let last = &lines.last().unwrap().1;
        assert!(last.contains("apppassd is not running"), "{last}");
        assert!(!last.contains("k46p"), "{last}");
    }

    #[test]
    fn bad_arguments_are_service_err_and_db_is_obsolete() {
        assert_eq!(run(&["socket=relative"]).0, Code::SERVICE_ERR);
        assert_eq!(
            run(&["conf=/nonexistent/apppass.conf"]).0,
            Code::SERVICE_ERR
        );
        let (_, lines) = run(&["db=/var/lib/apppass/apppass.db", "socket=/nonexistent/s"]);
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == Level::Warning && m.contains("db= is obsolete")),
            "{lines:?}"
        );
    }

    #[test]
    fn answers_become_codes() {
        use apppass_proto::Reason;
        let err = |kind| Response::error(kind, "x");
        for (r, code) in [
            (
                Response::Auth(AuthAnswer::Success {
                    id: 1,
                    label: String::new(),
                }),
                Code::SUCCESS,
            ),
            (
                Response::Auth(AuthAnswer::Denied {
                    reason: Reason::Expired,
                    id: Some(1),
                }),
                Code::AUTH_ERR,
            ),
            (
                Response::Auth(AuthAnswer::NoAppPasswords),
                Code::USER_UNKNOWN,
            ),
            (err(ErrorKind::Denied), Code::AUTH_ERR),
            (err(ErrorKind::BadRequest), Code::SERVICE_ERR),
            (err(ErrorKind::Unavailable), Code::AUTHINFO_UNAVAIL),
            (err(ErrorKind::Busy), Code::AUTHINFO_UNAVAIL),
            (err(ErrorKind::Timeout), Code::AUTHINFO_UNAVAIL),
            (err(ErrorKind::Internal), Code::AUTHINFO_UNAVAIL),
            (Response::Done, Code::AUTHINFO_UNAVAIL),
        ] {
            assert_eq!(code_for(&r), code, "{r:?}");
        }
    }
}
