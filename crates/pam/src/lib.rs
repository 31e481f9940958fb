//! pam_apppass.so: the module's entry points, libpam calls the bindings crate does not
//! wrap, ([`client`]) the application side of PAM for tests, the demo and the
//! benchmark, and the few libc calls the CLI makes.
//!
//! Every entry point catches panics, silences Rust's default panic message (it would go
//! to the host's stderr) and answers with a PAM code: never PAM_ABORT, which tells the
//! application to give up altogether.

use std::cell::Cell;
use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

use crate::code::Code;
use pam::items::{RHost, RUser, Service, Tty};
use pam::module::PamHandle;
use zeroize::Zeroizing;

use crate::login::{Host, Level};
use apppass_core::time::Timestamp;

pub mod client;
pub mod code;
pub mod login;

const PAM_AUTHTOK: c_int = 6;

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
            crate::login::LoginError::Internal.code()
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

/// Authenticates the user with an app password. See pam_apppass(8).
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

/// [`Host`] over a live libpam handle.
struct LibPam {
    pamh: *mut PamHandle,
}

impl LibPam {
    fn handle(&self) -> &PamHandle {
        // SAFETY: non-null (checked in `guard`) and valid for the entry point's duration.
        unsafe { &*self.pamh }
    }

    fn item<'a, T: pam::items::Item<'a> + std::ops::Deref<Target = &'a CStr>>(
        &'a self,
    ) -> Option<String> {
        match self.handle().get_item::<T>() {
            Ok(Some(v)) => Some(v.to_string_lossy().into_owned()),
            _ => None,
        }
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
        self.item::<Service>()
    }

    fn rhost(&self) -> Option<String> {
        self.item::<RHost>()
    }

    fn tty(&self) -> Option<String> {
        self.item::<Tty>()
    }

    fn ruser(&self) -> Option<String> {
        self.item::<RUser>()
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

    fn now(&self) -> Timestamp {
        apppass_core::time::now()
    }
}

/// Real and effective uid of this process.
pub fn uids() -> (u32, u32) {
    // SAFETY: getuid and geteuid cannot fail and touch no memory.
    unsafe { (libc::getuid(), libc::geteuid()) }
}

/// The login name of `uid`, from the password database (NSS).
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; zeroed is a valid (empty) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live memory of the stated size; on success `found`
    // points at `pwd`, whose strings point into `buf`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`, which is still alive.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    name.to_str().ok().map(str::to_owned)
}

/// Empties the environment: a setuid program must not let its caller steer SQLite
/// (`SQLITE_TMPDIR`, `TMPDIR`), NSS or anything else through it.
pub fn clear_environment() -> std::io::Result<()> {
    // SAFETY: called first thing in a single-threaded program, before anything reads
    // the environment.
    if unsafe { libc::clearenv() } != 0 {
        return Err(std::io::Error::other("clearenv failed"));
    }
    Ok(())
}

/// Sets the effective uid (a setuid program moves between root, for the database, and
/// its caller, for everything else).
pub fn set_effective_uid(uid: u32) -> std::io::Result<()> {
    // SAFETY: seteuid takes a number and touches no memory.
    if unsafe { libc::seteuid(uid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process belongs to the group named `name` (primary or supplementary).
pub fn in_group(name: &str) -> bool {
    let Ok(cname) = CString::new(name) else {
        return false;
    };
    let mut buf = vec![0 as c_char; 64 * 1024];
    // SAFETY: group is plain old data; zeroed is a valid (empty) value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to live memory of the stated size.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return false;
    }
    let gid = grp.gr_gid;
    // SAFETY: getgid cannot fail.
    if unsafe { libc::getgid() } == gid {
        return true;
    }
    let mut groups = vec![0 as libc::gid_t; 65536];
    // SAFETY: the buffer holds as many gids as we say.
    let n = unsafe { libc::getgroups(groups.len() as c_int, groups.as_mut_ptr()) };
    usize::try_from(n).is_ok_and(|n| groups[..n].contains(&gid))
}

/// One line to syslog's authpriv facility from the CLI (its own process, so it may name
/// itself), the way passwd and chage record account changes.
pub fn cli_syslog(priority: c_int, message: &str) {
    let Ok(msg) = CString::new(message.replace('\0', "\\x00")) else {
        return;
    };
    // SAFETY: the ident is a static string, as openlog requires; the format is a literal
    // "%s" with one C string argument.
    unsafe {
        libc::openlog(c"apppass".as_ptr(), libc::LOG_PID, libc::LOG_AUTHPRIV);
        libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr());
    }
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
}
