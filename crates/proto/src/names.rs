//! Names as every part checks them: services (scopes) and users.

/// The scope of an app password that opens every service.
pub const ANY_SERVICE: &str = "*";
/// Longest user or service name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// A service name as PAM and Dovecot spell them (`imap`, `sshd`, `smtp`), or `*`.
pub fn check_service(name: &str) -> Result<(), String> {
    if name == ANY_SERVICE {
        return Ok(());
    }
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad service name {name:?}: use letters, digits, '.', '_' and '-' (or '*' for every service)"
        ))
    }
}

/// A user name: what PAM_USER may hold (a login name, or an address for virtual mail
/// users), without spaces or control characters.
pub fn check_user(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('-')
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control());
    if ok {
        Ok(())
    } else {
        Err(format!("bad user name {name:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["imap", "pop3", "sshd-apppass", "smtp.submission", "*"] {
            assert!(check_service(ok).is_ok(), "{ok}");
        }
        for bad in ["", "im ap", "imap\n", "a/b", "**"] {
            assert!(check_service(bad).is_err(), "{bad:?}");
        }
        for ok in ["alice", "alice@example.org", "d.o_e-1"] {
            assert!(check_user(ok).is_ok(), "{ok}");
        }
        for bad in ["", "al ice", "bob\n", "-rf"] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
    }
}
