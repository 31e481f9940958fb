//! The rules: which names are acceptable, which app password opens which service, who
//! may choose which scope, and when one stops working.

use std::collections::BTreeMap;

use std::net::{IpAddr, Ipv6Addr};

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

/// After `failures` guesses within `interval` seconds from one remote host at one of a
/// user's app passwords (or at selectors that are none of theirs), that host is refused
/// for `lockout` seconds, without hashing, for that user and that password only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub failures: u32,
    pub interval: i64,
    pub lockout: i64,
}

/// The remote host as throttling counts it: an IPv4 address as itself; an IPv6 address
/// by its /64, the prefix one subscriber gets, inside which an attacker picks a new
/// address for every guess (an IPv4-mapped one as its IPv4 address); a name (sshd's
/// `UseDNS yes`) as given; `""` when the service gave none. Addresses are parsed, so
/// that every spelling of one (`2001:DB8::1`, `2001:db8:0::1`, `[2001:db8::1]`) is one
/// key; a zone (`fe80::1%eth0`) names our link, not the peer, and is dropped.
pub fn throttle_host(rhost: &str) -> String {
    let bare = rhost
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(rhost);
    let addr = bare.split_once('%').map_or(bare, |(a, _)| a);
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                format!("{}/64", Ipv6Addr::from(prefix))
            }
        },
        Err(_) => rhost.to_string(),
    }
}

/// The dates that decide whether an app password works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dates {
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
    pub last_used: Option<Timestamp>,
}

/// The account an app password belongs to. A user name can outlive its account
/// (userdel, then useradd gives the name to someone else): a password stays with the
/// account it was made for, never with the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// The uid that held the user name when the password was made.
    Uid(u32),
    /// No account held the name (one only the PAM stack knows): the password works while
    /// none does.
    NoAccount,
    /// Made before apppass recorded owners, and not adopted yet (apppassd gives such
    /// rows their user's uid when it opens the store): refused until then.
    Unadopted,
}

/// How [`Account::Unadopted`] is stored: no account has uid -1 (POSIX reserves
/// `(uid_t)-1`).
pub const UNADOPTED: i64 = -1;

impl Account {
    /// The stored `owner_uid` column: a uid, NULL for no account, -1 not adopted yet.
    pub fn from_column(value: Option<i64>) -> Account {
        match value {
            None => Account::NoAccount,
            Some(n) => u32::try_from(n).map_or(Account::Unadopted, Account::Uid),
        }
    }

    pub fn to_column(self) -> Option<i64> {
        match self {
            Account::Uid(uid) => Some(i64::from(uid)),
            Account::NoAccount => None,
            Account::Unadopted => Some(UNADOPTED),
        }
    }

    /// The account `holder` (the uid that has the name now, from NSS) as an owner.
    pub fn of(holder: Option<u32>) -> Account {
        holder.map_or(Account::NoAccount, Account::Uid)
    }

    /// Whether the account that has the name now (`holder`) is the one this password
    /// was made for.
    pub fn holds(self, holder: Option<u32>) -> bool {
        self != Account::Unadopted && self == Account::of(holder)
    }
}

/// The state of an app password at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Expired,
    /// Unused for longer than `idle_expiry`.
    Idle,
    Revoked,
    /// Its user name now belongs to another account, or to none (see [`Account`]).
    Orphaned,
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

    /// This status once it is known whether the name's account is still the password's
    /// own: revocation still wins (it is final), then the owner, then the dates.
    pub fn owned(self, owned: bool) -> Status {
        if owned || self == Status::Revoked {
            self
        } else {
            Status::Orphaned
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
            Status::Orphaned => "orphaned",
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
    fn throttle_hosts() {
        for (given, key) in [
            ("", ""),
            ("192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:DB8:1:2:ffff::1", "2001:db8:1:2::/64"),
            ("2001:0db8:0001:0002::", "2001:db8:1:2::/64"),
            ("[2001:db8:1:2::9]", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
            ("fe80::1%eth0", "fe80::/64"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("::1", "::/64"),
            ("mail.example.org", "mail.example.org"),
            ("010.0.0.1", "010.0.0.1"),
            ("name%with-percent", "name%with-percent"),
        ] {
            assert_eq!(throttle_host(given), key, "{given}");
        }
    }

    #[test]
    fn owners() {
        let alice = Account::Uid(1001);
        assert!(alice.holds(Some(1001)));
        assert!(!alice.holds(Some(1002)), "the name went to another account");
        assert!(!alice.holds(None), "the account was deleted");
        assert!(Account::NoAccount.holds(None));
        assert!(
            !Account::NoAccount.holds(Some(1001)),
            "an account got the name"
        );
        assert!(!Account::Unadopted.holds(None));
        assert!(!Account::Unadopted.holds(Some(1001)));
        for a in [
            alice,
            Account::Uid(0),
            Account::NoAccount,
            Account::Unadopted,
        ] {
            assert_eq!(Account::from_column(a.to_column()), a);
        }
        assert_eq!(Account::from_column(Some(-5)), Account::Unadopted);
        let active = Status::Active;
        assert_eq!(active.owned(true), Status::Active);
        assert_eq!(active.owned(false), Status::Orphaned);
        assert_eq!(Status::Expired.owned(false), Status::Orphaned);
        assert_eq!(Status::Revoked.owned(false), Status::Revoked);
    }

    #[test]
    fn labels() {
        assert!(check_label("Thunderbird on the laptop ✓").is_ok());
        assert!(check_label("a\nb").is_err());
        assert!(check_label(&"x".repeat(101)).is_err());
    }
}
