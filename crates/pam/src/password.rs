//! The module's password hook (`pam_sm_chauthtok`): once the account password has been
//! changed, ask apppassd to revoke every app password of the user, so that a stolen app
//! password does not outlive the change meant to stop the thief.
//!
//! It is stacked after pam_unix (see pam_apppass(8)): libpam runs the stack twice, first
//! with PAM_PRELIM_CHECK (nothing is changed yet, and this hook does nothing), then with
//! PAM_UPDATE_AUTHTOK, where a failed pam_unix stops the stack before this hook runs.
//! apppassd decides (who may ask, `revoke_on_password_change`) and logs the revocation;
//! the module logs only what apppassd cannot: that it could not be reached.

use apppass_proto::args;
use apppass_proto::{ErrorKind, Request, Response};

use crate::code::Code;
use crate::login::{self, Failure, Host, Level, field, field_text};

/// `flags` of `pam_sm_chauthtok`: the first pass over the stack, before any change.
pub const PAM_PRELIM_CHECK: i32 = 0x4000;
/// The second pass: the modules before this one have set the new password.
pub const PAM_UPDATE_AUTHTOK: i32 = 0x2000;

/// `pam_sm_chauthtok`.
///
/// PAM_SUCCESS in the preliminary pass, whatever the control (PAM_IGNORE would fail a
/// `[success=ok default=die]` line). In the update pass: PAM_SUCCESS once apppassd has
/// revoked (or, with `revoke_on_password_change = no`, kept) the app passwords;
/// PAM_PERM_DENIED if apppassd refuses this process; PAM_AUTHTOK_ERR if it cannot be
/// reached or cannot revoke: the one failure pam_chauthtok(3) documents for "the
/// change did not complete", which a `required` line turns into passwd's failure, so
/// that the person sees that something is wrong. (PAM_AUTHINFO_UNAVAIL is not among
/// pam_sm_chauthtok's documented returns.)
pub fn chauthtok(host: &mut dyn Host, flags: i32, argv: &[&[u8]]) -> Code {
    if flags & PAM_PRELIM_CHECK != 0 || flags & PAM_UPDATE_AUTHTOK == 0 {
        return Code::SUCCESS;
    }
    let args = match args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            host.log(Level::Err, &format!("bad arguments: {e}"));
            return Code::AUTHTOK_ERR;
        }
    };
    let user = match host.user() {
        Ok(u) => u,
        Err(code) => {
            host.log(
                Level::Err,
                &format!("no user; app passwords not revoked (libpam said {code})"),
            );
            return Code::AUTHTOK_ERR;
        }
    };
    let name = String::from_utf8_lossy(&user).into_owned();
    let Ok(user) = String::from_utf8(user) else {
        host.log(
            Level::Err,
            &format!("user name is not UTF-8: {}", field(&name)),
        );
        return Code::AUTHTOK_ERR;
    };
    match ask(host, &args, &user) {
        Ok(Response::Count(n)) => {
            if args.debug {
                host.log(
                    Level::Debug,
                    &format!("apppassd revoked {n} app passwords of {}", field(&user)),
                );
            }
            Code::SUCCESS
        }
        Ok(Response::Error { kind, message }) => {
            host.log(
                Level::Err,
                &format!(
                    "app passwords of {} NOT revoked: apppassd: {}: {}; run apppass revoke --all --user {}",
                    field(&user),
                    kind.as_str(),
                    field_text(&message),
                    field(&user)
                ),
            );
            if kind == ErrorKind::Denied {
                Code::PERM_DENIED
            } else {
                Code::AUTHTOK_ERR
            }
        }
        Ok(other) => {
            host.log(
                Level::Err,
                &format!(
                    "app passwords of {} NOT revoked: unexpected answer {other:?}",
                    field(&user)
                ),
            );
            Code::AUTHTOK_ERR
        }
        Err(Failure::Config(why)) => {
            host.log(
                Level::Err,
                &format!(
                    "bad configuration: {why}; app passwords of {} NOT revoked",
                    field(&user)
                ),
            );
            Code::AUTHTOK_ERR
        }
        Err(Failure::Host(code)) => {
            host.log(
                Level::Err,
                &format!(
                    "app passwords of {} NOT revoked (libpam said {code})",
                    field(&user)
                ),
            );
            Code::AUTHTOK_ERR
        }
        Err(Failure::Unreachable(why)) => {
            host.log(
                Level::Err,
                &format!(
                    "{why}: app passwords of {} NOT revoked; run apppass revoke --all --user {}: PAM_AUTHTOK_ERR",
                    field(&user),
                    field(&user)
                ),
            );
            Code::AUTHTOK_ERR
        }
    }
}

/// Settings, then the one request.
fn ask(host: &mut dyn Host, args: &args::ModuleArgs, user: &str) -> Result<Response, Failure> {
    let (_, euid) = host.uids();
    let settings = login::settings(args, euid == 0)?;
    let socket = args.socket.as_deref().unwrap_or(&settings.socket);
    let timeout = args.timeout.unwrap_or(settings.timeout);
    let mut client = login::connect(host, socket, timeout, &settings.user)?;
    client
        .call(&Request::PasswordChanged {
            user: user.to_string(),
        })
        .map_err(|e| login::unreachable(socket, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::tests::TestHost;

    fn run(flags: i32, socket: &std::path::Path) -> (Code, Vec<(Level, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("apppass.conf");
        std::fs::write(&conf, "").unwrap();
        let mut host = TestHost::new("passwd");
        let socket = format!("socket={}", socket.display());
        let conf = format!("conf={}", conf.display());
        let argv: Vec<&[u8]> = vec![socket.as_bytes(), conf.as_bytes()];
        let code = chauthtok(&mut host, flags, &argv);
        (code, host.lines.into_inner())
    }

    #[test]
    fn preliminary_pass_asks_nobody() {
        let (code, lines) = run(PAM_PRELIM_CHECK, std::path::Path::new("/nonexistent/s"));
        assert_eq!(code, Code::SUCCESS);
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn no_daemon_is_authtok_err_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let (code, lines) = run(PAM_UPDATE_AUTHTOK, &dir.path().join("none.sock"));
        assert_eq!(code, Code::AUTHTOK_ERR);
        let (level, line) = lines.last().unwrap();
        assert_eq!(*level, Level::Err);
        assert!(
            line.contains("apppassd is not running") && line.contains("NOT revoked"),
            "{line}"
        );
    }
}
