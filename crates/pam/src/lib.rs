//! pam_apppass.so: a thin client of apppassd. The module gathers the user, the service,
//! the remote host and the password, sends one request over apppassd's socket, and
//! returns the answer as a PAM code. It links no database and no argon2; it starts no
//! thread, and leaves no descriptor or mapping behind.
//!
//! This file holds the FFI: the entry points, the libpam and libc calls, and
//! ([`client`]) the application side of PAM for the tests, the demo and the benchmark.
//! The logic is in [`login`], free of libpam.
//!
//! Every entry point catches panics, silences Rust's default panic message (it would go
//! to the host's stderr) and answers with a PAM code: never PAM_ABORT, which tells the
//! application to give up altogether.

// A panic that aborts would take sshd or Dovecot's auth worker down with it.
#[cfg(panic = "abort")]
compile_error!("pam_apppass must be built with panic = \"unwind\": it runs inside sshd");

use std::cell::Cell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

use zeroize::Zeroizing;

use crate::code::Code;
use crate::login::{Host, Level};

pub mod app;
pub mod client;
pub mod code;
pub mod login;
pub mod password;

/// libpam's handle, opaque.
#[repr(C)]
pub struct PamHandle {
    _private: [u8; 0],
}

const PAM_SERVICE: c_int = 1;
const PAM_TTY: c_int = 3;
const PAM_RHOST: c_int = 4;
const PAM_AUTHTOK: c_int = 6;
const PAM_RUSER: c_int = 8;

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_get_authtok(
        pamh: *mut PamHandle,
        item: c_int,
        authtok: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    fn pam_get_user(pamh: *mut PamHandle, user: *mut *const c_char, prompt: *const c_char)
    -> c_int;
    fn pam_get_item(pamh: *const PamHandle, item: c_int, value: *mut *const c_void) -> c_int;
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
    fn pam_modutil_getlogin(pamh: *mut PamHandle) -> *const c_char;
}

thread_local! {
    /// The handle of the call in progress on this thread, for the panic hook's log line.
    /// A plain pointer in a `Cell` has no destructor, so this registers none (a TLS
    /// destructor would pin the module in memory after the host unloads it).
    static CURRENT: Cell<*mut PamHandle> = const { Cell::new(std::ptr::null_mut()) };
}

/// Logs where the panic happened, never its message: a message may quote its input
/// (a slicing panic prints the string), and the input may be a password.
fn panic_hook(info: &PanicHookInfo<'_>) {
    let pamh = CURRENT.with(Cell::get);
    if pamh.is_null() {
        return;
    }
    let place = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    syslog(
        pamh,
        libc::LOG_CRIT,
        &format!("internal error at {place}; please report it"),
    );
}

fn syslog(pamh: *mut PamHandle, priority: c_int, message: &str) {
    let Ok(msg) = CString::new(message.replace('\0', "\\x00")) else {
        return;
    };
    // SAFETY: pamh is the live handle libpam passed to the current entry point; the format
    // is a literal "%s" with one C string argument.
    unsafe { pam_syslog(pamh, priority, c"%s".as_ptr(), msg.as_ptr()) };
}

/// Runs `f` for one entry point: panics caught and logged, the result a PAM code.
fn guard(pamh: *mut PamHandle, f: impl FnOnce(&mut LibPam) -> Code) -> c_int {
    static HOOK: Once = Once::new();
    if pamh.is_null() {
        return Code::SYSTEM_ERR.0;
    }
    HOOK.call_once(|| std::panic::set_hook(Box::new(panic_hook)));
    CURRENT.with(|c| c.set(pamh));
    let code = contain(|| f(&mut LibPam { pamh }));
    CURRENT.with(|c| c.set(std::ptr::null_mut()));
    code.0
}

/// `f`'s code, or PAM_SYSTEM_ERR if it panicked: never an unwind into C.
fn contain(f: impl FnOnce() -> Code) -> Code {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(payload) => {
            // Dropping a panic payload can itself panic: contain that too.
            if let Err(again) = std::panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
                std::mem::forget(again);
            }
            Code::SYSTEM_ERR
        }
    }
}

/// The module's arguments as byte strings.
///
/// # Safety
/// `argv` must hold `argc` valid NUL-terminated strings (libpam guarantees it).
unsafe fn args<'a>(argc: c_int, argv: *const *const c_char) -> Vec<&'a [u8]> {
    let n = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() {
        return Vec::new();
    }
    (0..n)
        .filter_map(|i| {
            // SAFETY: i < argc, per the caller's contract.
            let p = unsafe { *argv.add(i) };
            // SAFETY: libpam's argument strings are NUL-terminated and outlive the call.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
        })
        .collect()
}

/// Authenticates the user with an app password, asking apppassd. See pam_apppass(8).
///
/// # Safety
/// Called by libpam with its own handle and argument vector.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_authenticate(
    pamh: *mut PamHandle,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guard(pamh, |host| {
        // SAFETY: libpam's argc/argv, valid for the duration of this call.
        let argv = unsafe { args(argc, argv) };
        crate::login::authenticate(host, &argv)
    })
}

/// App passwords carry no credentials to establish: always PAM_SUCCESS.
///
/// # Safety
/// Called by libpam with its own handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_setcred(
    pamh: *mut PamHandle,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guard(pamh, |_| Code::SUCCESS)
}

/// Revokes the user's app passwords once the account password has been changed (the
/// PAM_UPDATE_AUTHTOK pass, after pam_unix); does nothing in PAM_PRELIM_CHECK. See
/// pam_apppass(8) and [`password`].
///
/// # Safety
/// Called by libpam with its own handle and argument vector.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_chauthtok(
    pamh: *mut PamHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guard(pamh, |host| {
        // SAFETY: libpam's argc/argv, valid for the duration of this call.
        let argv = unsafe { args(argc, argv) };
        crate::password::chauthtok(host, flags, &argv)
    })
}

/// [`Host`] over a live libpam handle.
struct LibPam {
    pamh: *mut PamHandle,
}

impl LibPam {
    /// A string item (PAM_SERVICE, PAM_RHOST, ...), lossily as UTF-8.
    fn item(&self, item: c_int) -> Option<String> {
        let mut p: *const c_void = std::ptr::null();
        // SAFETY: valid handle; libpam stores a pointer it owns in `p`.
        let rc = unsafe { pam_get_item(self.pamh, item, &mut p) };
        if rc != Code::SUCCESS.0 || p.is_null() {
            return None;
        }
        // SAFETY: the string items are NUL-terminated strings owned by the handle.
        Some(
            unsafe { CStr::from_ptr(p.cast()) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}

impl Host for LibPam {
    fn user(&mut self) -> Result<Vec<u8>, Code> {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: valid handle; libpam stores the answer in `p`, owned by the handle.
        let rc = unsafe { pam_get_user(self.pamh, &mut p, std::ptr::null()) };
        if rc != Code::SUCCESS.0 {
            return Err(Code(rc));
        }
        if p.is_null() {
            return Err(Code::USER_UNKNOWN);
        }
        // SAFETY: libpam returned a NUL-terminated string that lives as long as the handle.
        Ok(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
    }

    fn authtok(&mut self) -> Result<Zeroizing<Vec<u8>>, Code> {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: valid handle; the token stays owned (and later wiped) by libpam.
        let rc = unsafe { pam_get_authtok(self.pamh, PAM_AUTHTOK, &mut p, std::ptr::null()) };
        if rc != Code::SUCCESS.0 {
            return Err(Code(rc));
        }
        if p.is_null() {
            return Ok(Zeroizing::new(Vec::new()));
        }
        // SAFETY: a NUL-terminated string owned by the handle.
        Ok(Zeroizing::new(
            unsafe { CStr::from_ptr(p) }.to_bytes().to_vec(),
        ))
    }

    fn service(&self) -> Option<String> {
        self.item(PAM_SERVICE)
    }

    fn rhost(&self) -> Option<String> {
        self.item(PAM_RHOST)
    }

    fn tty(&self) -> Option<String> {
        self.item(PAM_TTY)
    }

    fn ruser(&self) -> Option<String> {
        self.item(PAM_RUSER)
    }

    fn logname(&self) -> Option<String> {
        // SAFETY: valid handle; the result is a static or handle-owned string, or null.
        let p = unsafe { pam_modutil_getlogin(self.pamh) };
        // SAFETY: non-null results are NUL-terminated.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    fn uids(&self) -> (u32, u32) {
        uids()
    }

    fn uid_of(&self, name: &str) -> Option<u32> {
        uid_of(name)
    }

    fn log(&self, level: Level, message: &str) {
        let priority = match level {
            Level::Err => libc::LOG_ERR,
            Level::Warning => libc::LOG_WARNING,
            Level::Notice => libc::LOG_NOTICE,
            Level::Info => libc::LOG_INFO,
            Level::Debug => libc::LOG_DEBUG,
        };
        syslog(self.pamh, priority, message);
    }
}

/// Real and effective uid of this process.
pub fn uids() -> (u32, u32) {
    // SAFETY: getuid and geteuid cannot fail and touch no memory.
    unsafe { (libc::getuid(), libc::geteuid()) }
}

/// The uid of the user `name`, from the password database (NSS), as pam_unix looks
/// users up.
fn uid_of(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; zeroed is a valid (empty) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live memory of the stated size; on success `found`
    // points at `pwd`.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some(pwd.pw_uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_system_err() {
        assert_eq!(contain(|| Code::SUCCESS), Code::SUCCESS);
        assert_eq!(contain(|| panic!("boom")), Code::SYSTEM_ERR);
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("payload drop");
            }
        }
        assert_eq!(contain(|| std::panic::panic_any(Bomb)), Code::SYSTEM_ERR);
    }

    #[test]
    fn null_handle_is_refused() {
        let code = guard(std::ptr::null_mut(), |_| Code::SUCCESS);
        assert_eq!(code, Code::SYSTEM_ERR.0);
    }

    #[test]
    fn root_has_uid_zero() {
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(uid_of("no-such-user-apppass"), None);
    }
}
