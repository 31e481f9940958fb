//! libpam's application interface, as declared in `security/pam_appl.h`: what
//! [`crate::client`] (the tests' PAM application) and apppass-pam-helper (apppassd's
//! proofs) call. The module itself never does.

use std::ffi::{c_char, c_int, c_void};

use crate::PamHandle;

pub const PAM_RHOST: c_int = 4;
pub const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x1;
pub const PAM_PROMPT_ECHO_OFF: c_int = 1;
pub const PAM_PROMPT_ECHO_ON: c_int = 2;
pub const PAM_ERROR_MSG: c_int = 3;

#[repr(C)]
pub struct PamMessage {
    pub msg_style: c_int,
    pub msg: *const c_char,
}

#[repr(C)]
pub struct PamResponse {
    pub resp: *mut c_char,
    pub resp_retcode: c_int,
}

/// The conversation function and its data, as `pam_start` takes them.
pub type Converse =
    extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int;

#[repr(C)]
pub struct PamConv {
    pub conv: Converse,
    pub appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
unsafe extern "C" {
    pub fn pam_start_confdir(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut PamHandle,
    ) -> c_int;
    pub fn pam_set_item(pamh: *mut PamHandle, item: c_int, value: *const c_void) -> c_int;
    pub fn pam_authenticate(pamh: *mut PamHandle, flags: c_int) -> c_int;
    pub fn pam_acct_mgmt(pamh: *mut PamHandle, flags: c_int) -> c_int;
    pub fn pam_chauthtok(pamh: *mut PamHandle, flags: c_int) -> c_int;
    pub fn pam_strerror(pamh: *mut PamHandle, errnum: c_int) -> *const c_char;
    pub fn pam_end(pamh: *mut PamHandle, status: c_int) -> c_int;
}
