//! PAM return codes. (The bindings crate's enum is neither `Copy` nor constructible from
//! a raw value, and both ends of PAM need both.)

use std::fmt;

/// A PAM return code, as `pam_sm_authenticate` returns it and `pam_authenticate` reports it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub i32);

impl Code {
    pub const SUCCESS: Code = Code(0);
    pub const SERVICE_ERR: Code = Code(3);
    pub const SYSTEM_ERR: Code = Code(4);
    pub const BUF_ERR: Code = Code(5);
    pub const PERM_DENIED: Code = Code(6);
    pub const AUTH_ERR: Code = Code(7);
    pub const AUTHINFO_UNAVAIL: Code = Code(9);
    pub const USER_UNKNOWN: Code = Code(10);
    pub const CONV_ERR: Code = Code(19);
    pub const AUTHTOK_ERR: Code = Code(20);
    pub const ABORT: Code = Code(26);

    /// The name libpam's headers give this code.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 32] = [
            "PAM_SUCCESS",
            "PAM_OPEN_ERR",
            "PAM_SYMBOL_ERR",
            "PAM_SERVICE_ERR",
            "PAM_SYSTEM_ERR",
            "PAM_BUF_ERR",
            "PAM_PERM_DENIED",
            "PAM_AUTH_ERR",
            "PAM_CRED_INSUFFICIENT",
            "PAM_AUTHINFO_UNAVAIL",
            "PAM_USER_UNKNOWN",
            "PAM_MAXTRIES",
            "PAM_NEW_AUTHTOK_REQD",
            "PAM_ACCT_EXPIRED",
            "PAM_SESSION_ERR",
            "PAM_CRED_UNAVAIL",
            "PAM_CRED_EXPIRED",
            "PAM_CRED_ERR",
            "PAM_NO_MODULE_DATA",
            "PAM_CONV_ERR",
            "PAM_AUTHTOK_ERR",
            "PAM_AUTHTOK_RECOVERY_ERR",
            "PAM_AUTHTOK_LOCK_BUSY",
            "PAM_AUTHTOK_DISABLE_AGING",
            "PAM_TRY_AGAIN",
            "PAM_IGNORE",
            "PAM_ABORT",
            "PAM_AUTHTOK_EXPIRED",
            "PAM_MODULE_UNKNOWN",
            "PAM_BAD_ITEM",
            "PAM_CONV_AGAIN",
            "PAM_INCOMPLETE",
        ];
        usize::try_from(self.0)
            .ok()
            .and_then(|i| NAMES.get(i))
            .copied()
            .unwrap_or("PAM_(unknown)")
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}
