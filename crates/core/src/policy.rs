//! The rules: which names are acceptable, which app password opens which service, who
//! may choose which scope, and when one stops working.

use std::collections::BTreeMap;

use crate::time::Timestamp;

pub use apppass_proto::names::{ANY_SERVICE, check_service, check_user};
/// Longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 100;

/// Service groups (`group NAME = SERVICE ...`): one scope for the services one
/// application needs, such as a phone's mail app for IMAP and SMTP. Groups hold services
/// only, and a name is a group or a service, never both (the configuration refuses
/// anything else), so resolving a scope takes one look-up.
pub type Groups = BTreeMap<String, Vec<String>>;

/// The group the built-in configuration defines: what a mail client needs (Dovecot's
/// IMAP, POP3, submission and ManageSieve, and Postfix's SMTP through Dovecot's SASL).
pub const MAIL_GROUP: &str = "mail";
pub const MAIL_SERVICES: [&str; 5] = ["imap", "pop3", "submission", "smtp", "sieve"];

/// The groups apppassd knows when the configuration defines none.
pub fn default_groups() -> Groups {
    Groups::from([(
        MAIL_GROUP.to_string(),
        MAIL_SERVICES.iter().map(|s| s.to_string()).collect(),
    )])
}

/// Whether an app password scoped to `scope` may open `service`: `*`, the service itself,
/// or a group that holds it. Scope belongs to the row that was verified, never to "any
/// row of the user". A group is resolved from the configuration of the moment, so
/// changing a group's members changes what its existing passwords open.
pub fn scope_allows(scope: &str, service: &str, groups: &Groups) -> bool {
    if scope == ANY_SERVICE {
        return true;
    }
    match groups.get(scope) {
        Some(members) => members.iter().any(|m| m == service),
        None => scope == service,
    }
}

/// Whether someone who is not an admin may make an app password scoped to `scope`: only
/// if `services` (the configuration's list of services and groups people may choose)
/// names it. Everything else, `*` first, is the admins' to give.
pub fn may_choose(scope: &str, services: &[String]) -> bool {
    scope != ANY_SERVICE && services.iter().any(|s| s == scope)
}

/// After `failures` guesses within `interval` seconds from one remote host, that host is
/// refused for `lockout` seconds, without hashing, for that user only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub failures: u32,
    pub interval: i64,
    pub lockout: i64,
}

/// The dates that decide whether an app password works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dates {
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
    pub last_used: Option<Timestamp>,
}

/// The state of an app password at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Expired,
    /// Unused for longer than `idle_expiry`.
    Idle,
    Revoked,
}

impl Status {
    /// Revocation wins over expiry, expiry over idleness: the stronger statement first.
    /// `idle_expiry` counts from the last use, or from creation if never used.
    pub fn of(d: Dates, idle_expiry: Option<i64>, now: Timestamp) -> Status {
        if d.revoked.is_some() {
            Status::Revoked
        } else if d.expires.is_some_and(|e| e <= now) {
            Status::Expired
        } else if idle_expiry
            .is_some_and(|idle| d.last_used.unwrap_or(d.created).saturating_add(idle) <= now)
        {
            Status::Idle
        } else {
            Status::Active
        }
    }

    /// [`Status::of`] without idle expiry.
    pub fn at(expires: Option<Timestamp>, revoked: Option<Timestamp>, now: Timestamp) -> Status {
        Status::of(
            Dates {
                created: now,
                expires,
                revoked,
                last_used: None,
            },
            None,
            now,
        )
    }

    /// The word `list` and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Expired => "expired",
            Status::Idle => "idle",
            Status::Revoked => "revoked",
        }
    }
}

/// A label: free text for people, one line.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(format!("label is longer than {MAX_LABEL_CHARS} characters"));
    }
    if label.chars().any(char::is_control) {
        return Err("label must not contain control characters".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope() {
        let none = Groups::new();
        assert!(scope_allows("imap", "imap", &none));
        assert!(!scope_allows("imap", "pop3", &none));
        assert!(!scope_allows("imap", "IMAP", &none));
        assert!(scope_allows("*", "sshd", &none));
        assert!(!scope_allows("", "imap", &none));
    }

    #[test]
    fn groups_open_their_members_only() {
        let groups = default_groups();
        for s in ["imap", "pop3", "submission", "smtp", "sieve"] {
            assert!(scope_allows("mail", s, &groups), "{s}");
            // A member's own scope still opens only itself.
            assert!(scope_allows(s, s, &groups));
        }
        for s in ["sshd", "sudo", "su", "login", "mail", "IMAP", "*"] {
            assert!(!scope_allows("mail", s, &groups), "{s}");
        }
        assert!(!scope_allows("imap", "smtp", &groups));
        // Without the group, "mail" is a plain service name again.
        assert!(scope_allows("mail", "mail", &Groups::new()));
        assert!(!scope_allows("mail", "imap", &Groups::new()));
    }

    #[test]
    fn people_choose_only_what_is_listed() {
        let listed = vec!["mail".to_string(), "sshd".to_string()];
        assert!(may_choose("mail", &listed));
        assert!(may_choose("sshd", &listed));
        assert!(!may_choose("imap", &listed));
        assert!(!may_choose("*", &listed));
        assert!(!may_choose("*", &["*".to_string()]));
        assert!(!may_choose("mail", &[]));
    }

    #[test]
    fn status() {
        let d = |expires, revoked, last_used| Dates {
            created: 0,
            expires,
            revoked,
            last_used,
        };
        assert_eq!(Status::of(d(None, None, None), None, 10), Status::Active);
        assert_eq!(
            Status::of(d(Some(11), None, None), None, 10),
            Status::Active
        );
        assert_eq!(
            Status::of(d(Some(10), None, None), None, 10),
            Status::Expired
        );
        assert_eq!(
            Status::of(d(Some(5), Some(1), None), None, 10),
            Status::Revoked
        );
        // Idle: from creation when never used, else from the last use.
        assert_eq!(Status::of(d(None, None, None), Some(10), 10), Status::Idle);
        assert_eq!(
            Status::of(d(None, None, None), Some(11), 10),
            Status::Active
        );
        assert_eq!(
            Status::of(d(None, None, Some(5)), Some(10), 14),
            Status::Active
        );
        assert_eq!(
            Status::of(d(None, None, Some(5)), Some(10), 15),
            Status::Idle
        );
        assert_eq!(
            Status::of(d(Some(3), None, None), Some(1), 10),
            Status::Expired
        );
    }

    #[test]
    fn labels() {
        assert!(check_label("Thunderbird on the laptop ✓").is_ok());
        assert!(check_label("a\nb").is_err());
        assert!(check_label(&"x".repeat(101)).is_err());
    }
}
