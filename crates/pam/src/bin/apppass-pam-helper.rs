//! apppass-pam-helper: runs one of apppassd's own PAM stacks (`apppass` before a
//! credential is made, `apppass-portal` to sign in to the portal) for one user, and
//! relays the stack's conversation to apppassd over standard input and output
//! (apppass_proto::helper).
//!
//! apppassd runs unprivileged, so it cannot read /etc/shadow; this is the one step that
//! must be root, kept as small as cockpit-session or unix_chkpwd. The package installs
//! it setuid root, mode 4750, group of apppassd's user: only apppassd runs it. It takes
//! only the two service names of apppass's own stacks, and a privileged run reads them
//! from /etc/pam.d and nowhere else.
//!
//! Where systemd runs apppassd (with NoNewPrivileges=, under which no setuid program
//! gains anything), the helper is instead the service of a socket
//! (apppass-pam-helper.socket, Accept=yes, mode 0660, group _apppass): systemd starts
//! one, as root, per connection, with the connection as standard input and output, and
//! apppassd sends what to prove as the first frame.
//!
//! Usage: apppass-pam-helper SERVICE USER [--rhost ADDRESS] [--confdir DIR]
//!        apppass-pam-helper --socket [--confdir DIR]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::Write;
use std::process::ExitCode;

use apppass_proto::helper::{Begin, FromHelper, SERVICES, Verdict};
use apppass_proto::message::MAX_PROMPTS;
use apppass_proto::wire;
use apppass_proto::{Prompt, PromptStyle, Request};
use pam_apppass::PamHandle;
use pam_apppass::app::{
    PAM_DISALLOW_NULL_AUTHTOK, PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_RHOST,
    PamConv, PamMessage, PamResponse, pam_acct_mgmt, pam_authenticate, pam_end, pam_set_item,
    pam_start_confdir, pam_strerror,
};
use pam_apppass::code::Code;

const PAM_NEW_AUTHTOK_REQD: c_int = 12;
const PAM_ACCT_EXPIRED: c_int = 13;
/// A stack that asks more often than this in one proof is refused.
const MAX_ROUNDS: u32 = 16;
/// Longest message shown from the stack; longer ones are cut.
const MAX_TEXT: usize = 512;
/// Largest answer frame read from apppassd.
const MAX_FRAME: usize = 64 * 1024;

#[repr(C)]
struct Spwd {
    sp_namp: *mut c_char,
    sp_pwdp: *mut c_char,
    // The rest of struct spwd is never read.
}

unsafe extern "C" {
    fn getspnam(name: *const c_char) -> *mut Spwd;
}

struct Args {
    service: CString,
    user: CString,
    rhost: Option<CString>,
    confdir: Option<CString>,
}

fn parse(args: &[String], privileged: bool) -> Result<Args, String> {
    let [service, user, rest @ ..] = args else {
        return Err(
            "usage: apppass-pam-helper SERVICE USER [--rhost ADDRESS] [--confdir DIR]".into(),
        );
    };
    if !SERVICES.contains(&service.as_str()) {
        return Err(format!("{service:?} is not one of apppass's PAM services"));
    }
    apppass_proto::names::check_user(user)?;
    let mut rhost = None;
    let mut confdir = None;
    let mut rest = rest.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rhost" => rhost = Some(value.clone()),
            // A stack elsewhere than /etc/pam.d is for tests that run apppassd as root;
            // the setuid helper never reads one its caller names.
            "--confdir" if privileged => {
                return Err("--confdir is refused when the helper runs setuid".into());
            }
            "--confdir" => confdir = Some(value.clone()),
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }
    let c = |s: &str| CString::new(s).map_err(|_| "an argument holds a NUL byte".to_string());
    Ok(Args {
        service: c(service)?,
        user: c(user)?,
        rhost: rhost.as_deref().map(c).transpose()?,
        confdir: confdir.as_deref().map(c).transpose()?,
    })
}

/// The conversation's state: where it writes prompts and reads answers.
struct Relay {
    rounds: u32,
    failed: bool,
}

fn send(message: &FromHelper) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    wire::write_frame(&mut out, &message.encode()).map_err(std::io::Error::other)?;
    out.flush()
}

/// The text of a PAM message, cut to [`MAX_TEXT`].
fn text(msg: *const c_char) -> String {
    if msg.is_null() {
        return String::new();
    }
    // SAFETY: a non-null message from libpam is a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(msg) }.to_bytes();
    let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_TEXT)]).into_owned();
    if bytes.len() > MAX_TEXT {
        s.push('…');
    }
    s
}

extern "C" fn converse(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    let Ok(count) = usize::try_from(n) else {
        return Code::CONV_ERR.0;
    };
    if count == 0 || count > MAX_PROMPTS || msgs.is_null() || resp.is_null() || appdata.is_null() {
        return Code::CONV_ERR.0;
    }
    // SAFETY: appdata is the `Relay` that `prove` passed, alive for the whole call.
    let relay = unsafe { &mut *appdata.cast::<Relay>() };
    relay.rounds += 1;
    if relay.failed || relay.rounds > MAX_ROUNDS {
        return Code::CONV_ERR.0;
    }
    let mut prompts = Vec::with_capacity(count);
    for i in 0..count {
        // Linux-PAM passes an array of pointers to messages.
        // SAFETY: i < n entries, per libpam's contract.
        let msg = unsafe { &**msgs.add(i) };
        let style = match msg.msg_style {
            PAM_PROMPT_ECHO_OFF => PromptStyle::EchoOff,
            PAM_PROMPT_ECHO_ON => PromptStyle::EchoOn,
            PAM_ERROR_MSG => PromptStyle::ErrorMsg,
            _ => PromptStyle::Info,
        };
        prompts.push(Prompt {
            style,
            text: text(msg.msg),
        });
    }
    let answers = match exchange(prompts.clone()) {
        Some(a) if a.len() == count => a,
        _ => {
            relay.failed = true;
            return Code::CONV_ERR.0;
        }
    };
    // SAFETY: calloc'd as libpam expects (it frees the array and each answer with free()).
    let out =
        unsafe { libc::calloc(count, std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if out.is_null() {
        return Code::BUF_ERR.0;
    }
    for (i, (prompt, answer)) in prompts.iter().zip(answers.iter()).enumerate() {
        if !prompt.style.is_question() {
            continue;
        }
        let Ok(answer) = CString::new(answer.as_bytes()) else {
            // An answer with a NUL byte: free what was given so far, refuse.
            for j in 0..i {
                // SAFETY: out has `count` entries; each resp is null or strdup'd.
                unsafe { libc::free((*out.add(j)).resp.cast()) };
            }
            // SAFETY: allocated above.
            unsafe { libc::free(out.cast()) };
            return Code::CONV_ERR.0;
        };
        // SAFETY: strdup of a valid C string; libpam (or the module) frees it.
        let copy = unsafe { libc::strdup(answer.as_ptr()) };
        // The CString's bytes are a secret: wiped before they are freed.
        zeroize::Zeroize::zeroize(&mut answer.into_bytes_with_nul());
        // SAFETY: out has `count` zeroed entries.
        unsafe { (*out.add(i)).resp = copy };
    }
    // SAFETY: resp is libpam's out-pointer.
    unsafe { *resp = out };
    Code::SUCCESS.0
}

/// Sends the prompts to apppassd and reads its answers; `None` when it hung up or sent
/// something else.
fn exchange(prompts: Vec<Prompt>) -> Option<Vec<apppass_proto::Secret>> {
    send(&FromHelper::Conversation(prompts)).ok()?;
    let body = wire::read_frame(&mut std::io::stdin().lock(), MAX_FRAME).ok()?;
    match Request::decode(&body) {
        Ok(Request::Answer { answers }) => Some(answers),
        _ => None,
    }
}

/// PAM's words for `code`.
fn strerror(pamh: *mut PamHandle, code: c_int) -> String {
    // SAFETY: pam_strerror returns a static string (the handle may be anything).
    let s = unsafe { pam_strerror(pamh, code) };
    text(s)
}

/// Whether the account has a shadow entry that no password can open (`!`, `*`, empty):
/// such a person proves nothing with a password, and is told so before being asked.
fn has_no_password(user: &CStr) -> bool {
    // SAFETY: a valid C string; getspnam returns null or a pointer into static storage.
    let sp = unsafe { getspnam(user.as_ptr()) };
    if sp.is_null() {
        return false;
    }
    // SAFETY: non-null, from getspnam; sp_pwdp is a C string or null.
    let hash = unsafe { (*sp).sp_pwdp };
    if hash.is_null() {
        return true;
    }
    // SAFETY: as above.
    let hash = unsafe { CStr::from_ptr(hash) }.to_bytes();
    hash.is_empty() || hash[0] == b'!' || hash[0] == b'*'
}

fn prove(args: &Args) -> Verdict {
    if has_no_password(&args.user) {
        return Verdict::NoPassword;
    }
    let mut relay = Relay {
        rounds: 0,
        failed: false,
    };
    let conv = PamConv {
        conv: converse,
        appdata_ptr: (&raw mut relay).cast(),
    };
    let mut pamh: *mut PamHandle = std::ptr::null_mut();
    let confdir = args
        .confdir
        .as_ref()
        .map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: valid C strings (confdir null means /etc/pam.d); conv and relay outlive the
    // handle.
    let rc = unsafe {
        pam_start_confdir(
            args.service.as_ptr(),
            args.user.as_ptr(),
            &conv,
            confdir,
            &mut pamh,
        )
    };
    if rc != 0 || pamh.is_null() {
        return Verdict::Unavailable(format!("pam_start failed: {}", Code(rc).name()));
    }
    if let Some(rhost) = &args.rhost {
        // SAFETY: valid handle; libpam copies the string.
        unsafe { pam_set_item(pamh, PAM_RHOST, rhost.as_ptr().cast()) };
    }
    // SAFETY: valid handle.
    let mut rc = unsafe { pam_authenticate(pamh, PAM_DISALLOW_NULL_AUTHTOK) };
    let verdict = if rc != 0 {
        match Code(rc) {
            Code::AUTHINFO_UNAVAIL | Code::SERVICE_ERR | Code::SYSTEM_ERR | Code::ABORT => {
                Verdict::Unavailable(strerror(pamh, rc))
            }
            _ => Verdict::Failed(strerror(pamh, rc)),
        }
    } else {
        // SAFETY: valid handle.
        rc = unsafe { pam_acct_mgmt(pamh, PAM_DISALLOW_NULL_AUTHTOK) };
        match rc {
            0 => Verdict::Proved,
            PAM_NEW_AUTHTOK_REQD => Verdict::PasswordExpired,
            PAM_ACCT_EXPIRED => Verdict::AccountRefused("the account has expired".into()),
            _ => Verdict::AccountRefused(strerror(pamh, rc)),
        }
    };
    // SAFETY: valid handle, ended exactly once.
    unsafe { pam_end(pamh, rc) };
    verdict
}

fn main() -> ExitCode {
    // SAFETY: getuid/geteuid cannot fail.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    let privileged = uid != euid;
    if privileged {
        // Nothing of the caller's environment reaches the stack's modules.
        let names: Vec<_> = std::env::vars_os().map(|(k, _)| k).collect();
        for name in names {
            // SAFETY: single-threaded: nothing else reads the environment yet.
            unsafe { std::env::remove_var(name) };
        }
        // SAFETY: as above.
        unsafe { std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin") };
        // The stack's modules behave as under a root login program (pam_unix reads
        // /etc/shadow itself instead of asking unix_chkpwd, which only checks the
        // caller's own password).
        // SAFETY: plain system call.
        if unsafe { libc::setresuid(0, 0, 0) } != 0 {
            eprintln!("apppass-pam-helper: cannot become root");
            return ExitCode::from(2);
        }
    }
    if euid != 0 {
        eprintln!("apppass-pam-helper: must run as root (installed setuid root for apppassd)");
        return ExitCode::from(2);
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "--socket") {
        let confdir = match std::env::args().skip(2).collect::<Vec<_>>().as_slice() {
            [] => None,
            [flag, dir] if flag == "--confdir" => Some(dir.clone()),
            _ => {
                eprintln!("apppass-pam-helper: usage: apppass-pam-helper --socket [--confdir DIR]");
                return ExitCode::from(2);
            }
        };
        return socket_service(privileged, confdir);
    }
    let argv: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<_, _>>()
    {
        Ok(a) => a,
        Err(_) => {
            eprintln!("apppass-pam-helper: arguments must be UTF-8");
            return ExitCode::from(2);
        }
    };
    let args = match parse(&argv, privileged) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("apppass-pam-helper: {e}");
            return ExitCode::from(2);
        }
    };
    let verdict = prove(&args);
    match send(&FromHelper::Done(verdict)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

/// `--socket`: what to prove comes as the first frame on standard input; a directory of
/// stacks only from the command line (the unit's, root's), never from the frame.
fn socket_service(privileged: bool, confdir: Option<String>) -> ExitCode {
    if privileged {
        eprintln!("apppass-pam-helper: --socket is for the socket's service, run as root");
        return ExitCode::from(2);
    }
    let begin = match wire::read_frame(&mut std::io::stdin().lock(), MAX_FRAME)
        .map_err(|e| e.to_string())
        .and_then(|b| Begin::decode(&b).map_err(|e| e.to_string()))
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("apppass-pam-helper: {e}");
            return ExitCode::from(2);
        }
    };
    let mut argv = vec![begin.service, begin.user];
    if let Some(rhost) = begin.rhost {
        argv.extend(["--rhost".to_string(), rhost]);
    }
    let args = match parse(&argv, true).and_then(|mut a| {
        a.confdir = confdir
            .map(|d| CString::new(d).map_err(|_| "--confdir holds a NUL byte".to_string()))
            .transpose()?;
        Ok(a)
    }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("apppass-pam-helper: {e}");
            return ExitCode::from(2);
        }
    };
    match send(&FromHelper::Done(prove(&args))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_apppass_stacks_and_no_confdir_when_setuid() {
        assert!(parse(&args(&["apppass", "alice"]), true).is_ok());
        assert!(parse(&args(&["apppass-portal", "alice", "--rhost", "::1"]), true).is_ok());
        assert!(parse(&args(&["sshd", "alice"]), false).is_err());
        assert!(parse(&args(&["apppass", "-x"]), false).is_err());
        assert!(parse(&args(&["apppass", "alice", "--confdir", "/tmp"]), true).is_err());
        assert!(parse(&args(&["apppass", "alice", "--confdir", "/tmp"]), false).is_ok());
        assert!(parse(&args(&["apppass", "alice", "--rhost"]), false).is_err());
        assert!(parse(&args(&["apppass"]), false).is_err());
    }
}
