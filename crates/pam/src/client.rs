//! The application side of PAM: what sshd or dovecot do to log someone in, reduced to one
//! call. Used by the tests, the demo and the benchmark to drive the real libpam, which
//! loads the built module from a service file in a directory of their own
//! (`pam_start_confdir`). The module itself never calls this.

use std::ffi::{CString, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::PamHandle;
use crate::app::{
    PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_RHOST, PamConv, PamMessage, PamResponse,
    pam_authenticate, pam_chauthtok, pam_end, pam_set_item, pam_start_confdir,
};
use crate::code::Code;

/// One login attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// Directory holding the service file (instead of /etc/pam.d).
    pub confdir: &'a Path,
    /// The PAM service name: the file in `confdir`.
    pub service: &'a str,
    pub user: &'a [u8],
    /// What the conversation answers to a password prompt.
    pub password: &'a [u8],
    /// PAM_RHOST, as a server would set it.
    pub rhost: Option<&'a str>,
}

/// What came of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// `pam_authenticate`'s (or `pam_chauthtok`'s) answer.
    pub code: Code,
    /// How many times the stack asked for a password.
    pub password_prompts: u32,
}

/// Why an attempt could not even start.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A string with an interior NUL.
    Nul(&'static str),
    /// `pam_start_confdir` failed with this code.
    Start(Code),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Nul(what) => write!(f, "{what} contains a NUL byte"),
            ClientError::Start(code) => write!(f, "pam_start_confdir failed: {}", code),
        }
    }
}

impl std::error::Error for ClientError {}

struct Answers {
    user: CString,
    /// The answers to password prompts, in turn; the last one again once they run out.
    passwords: Vec<CString>,
    prompts: u32,
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
    if count == 0 || msgs.is_null() || resp.is_null() || appdata.is_null() {
        return Code::CONV_ERR.0;
    }
    // SAFETY: appdata is the `Answers` `transaction` passed, alive for the whole call.
    let answers = unsafe { &mut *appdata.cast::<Answers>() };
    // SAFETY: calloc'd as libpam expects (it frees the array and each answer with free()).
    let out =
        unsafe { libc::calloc(count, std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if out.is_null() {
        return Code::BUF_ERR.0;
    }
    for i in 0..count {
        // Linux-PAM passes an array of pointers to messages.
        // SAFETY: i < n entries, per libpam's contract.
        let msg = unsafe { &**msgs.add(i) };
        let text = match msg.msg_style {
            PAM_PROMPT_ECHO_OFF => {
                let turn = usize::try_from(answers.prompts).unwrap_or(usize::MAX);
                answers.prompts += 1;
                answers
                    .passwords
                    .get(turn)
                    .or_else(|| answers.passwords.last())
            }
            PAM_PROMPT_ECHO_ON => Some(&answers.user),
            _ => None,
        };
        if let Some(text) = text {
            // SAFETY: strdup of a valid C string; libpam frees it.
            let copy = unsafe { libc::strdup(text.as_ptr()) };
            // SAFETY: out has `count` zeroed entries.
            unsafe { (*out.add(i)).resp = copy };
        }
    }
    // SAFETY: resp is libpam's out-pointer.
    unsafe { *resp = out };
    Code::SUCCESS.0
}

/// Runs `pam_start_confdir` / `pam_authenticate` / `pam_end` once, as an application would.
pub fn authenticate(a: &Attempt<'_>) -> Result<Outcome, ClientError> {
    transaction(
        a.confdir,
        a.service,
        a.user,
        a.rhost,
        &[a.password],
        pam_authenticate,
    )
}

/// One PAM transaction: `pam_start_confdir`, PAM_RHOST if given, `step` (the stack to
/// run), `pam_end`; the conversation answers password prompts with `passwords` in turn.
fn transaction(
    confdir: &Path,
    service: &str,
    user: &[u8],
    rhost: Option<&str>,
    passwords: &[&[u8]],
    step: unsafe extern "C" fn(*mut PamHandle, c_int) -> c_int,
) -> Result<Outcome, ClientError> {
    let service = CString::new(service).map_err(|_| ClientError::Nul("service"))?;
    let user = CString::new(user).map_err(|_| ClientError::Nul("user"))?;
    let confdir =
        CString::new(confdir.as_os_str().as_bytes()).map_err(|_| ClientError::Nul("confdir"))?;
    let rhost = rhost
        .map(CString::new)
        .transpose()
        .map_err(|_| ClientError::Nul("rhost"))?;
    let passwords = passwords
        .iter()
        .map(|p| CString::new(*p).map_err(|_| ClientError::Nul("password")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut answers = Answers {
        user: user.clone(),
        passwords,
        prompts: 0,
    };
    let conv = PamConv {
        conv: converse,
        appdata_ptr: (&raw mut answers).cast(),
    };
    let mut pamh: *mut PamHandle = std::ptr::null_mut();
    // SAFETY: all strings are valid C strings; conv and answers outlive the handle.
    let rc = unsafe {
        pam_start_confdir(
            service.as_ptr(),
            user.as_ptr(),
            &conv,
            confdir.as_ptr(),
            &mut pamh,
        )
    };
    if rc != 0 || pamh.is_null() {
        return Err(ClientError::Start(Code(rc)));
    }
    if let Some(rhost) = &rhost {
        // SAFETY: valid handle; libpam copies the string.
        unsafe { pam_set_item(pamh, PAM_RHOST, rhost.as_ptr().cast()) };
    }
    // SAFETY: valid handle; `step` is one of libpam's stack calls.
    let code = unsafe { step(pamh, 0) };
    // SAFETY: valid handle, ended exactly once.
    unsafe { pam_end(pamh, code) };
    Ok(Outcome {
        code: Code(code),
        password_prompts: answers.prompts,
    })
}

/// One change of the account password, as passwd does it.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// Directory holding the service file (instead of /etc/pam.d).
    pub confdir: &'a Path,
    /// The PAM service name: the file in `confdir`.
    pub service: &'a str,
    pub user: &'a [u8],
    /// What the conversation answers to the password prompts, in turn (the old password
    /// if asked, the new one, the new one again); the last once they run out.
    pub answers: &'a [&'a [u8]],
}

/// Runs `pam_start_confdir` / `pam_chauthtok` / `pam_end` once (libpam runs the stack
/// twice: PAM_PRELIM_CHECK, then PAM_UPDATE_AUTHTOK).
pub fn chauthtok(c: &Change<'_>) -> Result<Outcome, ClientError> {
    transaction(c.confdir, c.service, c.user, None, c.answers, pam_chauthtok)
}
