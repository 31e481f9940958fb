//! One set of store cases, run against both stores through the [`Store`] interface:
//! SQLite in a temporary file, PostgreSQL in a private cluster (tests/pg), each case on
//! a database of its own made by `store::init`. Then what only PostgreSQL has: its
//! connections (TLS that verifies the server over TCP, Unix sockets, several hosts, a
//! server restart) and its two roles. Under CI a missing PostgreSQL fails.

mod common;
mod pg;

use apppass_core::policy::{Account, Throttle};
use apppass_core::store::{
    self, Attempt, Connect, KEPT_INACTIVE, Location, LookupQuery, NewRow, Outcome, Owner, Purpose,
    Regenerated, Retention, Revoked, Store, StoreError,
};
use apppass_core::time::Timestamp;

/// A database for one case: where it is and how to reach it.
struct Db {
    location: Location,
    connect: Connect,
    _dir: tempfile::TempDir,
}

impl Db {
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        Db {
            location: Location::Sqlite(dir.path().join("sub/apppass.db")),
            connect: Connect::default(),
            _dir: dir,
        }
    }

    fn postgres(cluster: &pg::Cluster) -> Db {
        let dir = tempfile::tempdir().unwrap();
        let passfile = dir.path().join("pgpass");
        cluster.passfile(&passfile, &[pg::ADMIN]);
        let db = cluster.create_database();
        Db {
            location: Location::parse(&cluster.uri(pg::ADMIN, &db)).unwrap(),
            connect: Connect {
                passfile: Some(passfile),
                ..Connect::default()
            },
            _dir: dir,
        }
    }

    fn init(&self) -> Box<dyn Store> {
        store::init(&self.location, &self.connect, false).unwrap()
    }

    fn open(&self, purpose: Purpose) -> Box<dyn Store> {
        store::open(&self.location, &self.connect, purpose, false).unwrap()
    }
}

const KEEP: Retention = Retention {
    max_age: 1000,
    max_rows: 1000,
    throttle_rows: 1000,
};

fn row<'a>(user: &'a str, service: &'a str, selector: &'a str) -> NewRow<'a> {
    NewRow {
        user,
        service,
        label: "phone",
        selector,
        hash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
        created: 100,
        expires: None,
        owner: Account::NoAccount,
        networks: "",
    }
}

fn failure<'a>(at: Timestamp, user: &'a str, rhost: Option<&'a str>, guess: bool) -> Attempt<'a> {
    Attempt {
        at,
        user,
        service: "imap",
        rhost,
        password_id: None,
        outcome: Outcome::Failure {
            reason: "wrong_password",
            guess,
        },
    }
}

fn init_is_idempotent_and_versioned(db: &Db) {
    let s = db.init();
    let id = s.create(&row("alice", "imap", "aaaaaa")).unwrap();
    drop(s);
    let s = db.init();
    assert_eq!(s.schema_version().unwrap(), store::sqlite::SCHEMA_VERSION);
    assert_eq!(
        store::postgres::SCHEMA_VERSION,
        store::sqlite::SCHEMA_VERSION
    );
    assert_eq!(s.list(Owner::Anyone).unwrap()[0].id, id);
    let s = db.open(Purpose::Read);
    assert_eq!(s.list(Owner::Anyone).unwrap().len(), 1);
}

fn lookups_and_usage(db: &Db) {
    let s = db.init();
    let id = s.create(&row("alice", "imap", "abcdef")).unwrap();
    assert!(matches!(
        s.create(&row("bob", "imap", "abcdef")),
        Err(StoreError::SelectorTaken)
    ));
    let s = db.open(Purpose::Read);
    let c = s.find_by_selector("abcdef").unwrap().unwrap();
    assert_eq!(
        (c.id, c.user.as_str(), c.service.as_str(), c.label.as_str()),
        (id, "alice", "imap", "phone")
    );
    assert_eq!(
        (c.dates.created, c.dates.expires, c.dates.revoked),
        (100, None, None)
    );
    assert!(c.hash.starts_with("$argon2id$"));
    assert!(s.find_by_selector("zzzzzz").unwrap().is_none());
    assert!(s.user_has_passwords("alice").unwrap());
    assert!(!s.user_has_passwords("bob").unwrap());
    let ok = |at, rhost| Attempt {
        at,
        user: "alice",
        service: "imap",
        rhost,
        password_id: Some(id),
        outcome: Outcome::Success,
    };
    s.record_attempt(&ok(500, Some("192.0.2.7")), None, KEEP)
        .unwrap();
    let l = &s.list(Owner::User("alice")).unwrap()[0];
    assert_eq!(
        (
            l.last_used,
            l.use_count,
            l.last_rhost.as_deref(),
            l.last_service.as_deref()
        ),
        (Some(500), 1, Some("192.0.2.7"), Some("imap"))
    );
    s.record_attempt(&ok(600, None), None, KEEP).unwrap();
    let l = &s.list(Owner::User("alice")).unwrap()[0];
    assert_eq!(
        (l.last_used, l.use_count, l.last_rhost.as_deref()),
        (Some(600), 2, None)
    );
    assert_eq!(
        s.find_by_selector("abcdef")
            .unwrap()
            .unwrap()
            .dates
            .last_used,
        Some(600)
    );
    // Odd but valid text survives the round trip.
    let odd = s
        .create(&NewRow {
            label: "Ünïcode 'quotes' \"and\" \\ back; DROP TABLE x",
            ..row("o'brien", "*", "oddsel")
        })
        .unwrap();
    let l = s.list(Owner::User("o'brien")).unwrap();
    assert_eq!(
        (l[0].id, l[0].label.as_str()),
        (odd, "Ünïcode 'quotes' \"and\" \\ back; DROP TABLE x")
    );
}

/// Each row keeps the account it was made for (a uid, none, or not known yet), through
/// the login's lookup, find_by_selector and list; rows not known yet are found and
/// adopted once.
fn owners_are_kept_and_adopted(db: &Db) {
    let s = db.init();
    for (user, selector, owner) in [
        ("alice", "aaaaaa", Account::Uid(1001)),
        ("nobody-here", "bbbbbb", Account::NoAccount),
        ("old", "cccccc", Account::Unadopted),
        ("old", "dddddd", Account::Unadopted),
    ] {
        s.create(&NewRow {
            owner,
            ..row(user, "imap", selector)
        })
        .unwrap();
    }
    let s = db.open(Purpose::Read);
    let found = |sel| s.find_by_selector(sel).unwrap().unwrap().owner;
    assert_eq!(found("aaaaaa"), Account::Uid(1001));
    assert_eq!(found("bbbbbb"), Account::NoAccount);
    assert_eq!(found("cccccc"), Account::Unadopted);
    let looked = s
        .lookup(&LookupQuery {
            user: "alice",
            selector: Some("aaaaaa"),
            rhost: "",
            now: 0,
        })
        .unwrap();
    assert_eq!(looked.credential.unwrap().owner, Account::Uid(1001));
    let owners: Vec<Account> = s
        .list(Owner::Anyone)
        .unwrap()
        .iter()
        .map(|l| l.owner)
        .collect();
    assert_eq!(
        owners,
        [
            Account::Uid(1001),
            Account::NoAccount,
            Account::Unadopted,
            Account::Unadopted
        ]
    );
    let s = db.init();
    assert_eq!(s.unadopted(10).unwrap(), ["old"]);
    assert_eq!(s.adopt(&[("old".into(), Account::Uid(7))]).unwrap(), 2);
    assert!(s.unadopted(10).unwrap().is_empty());
    assert_eq!(s.adopt(&[("old".into(), Account::Uid(8))]).unwrap(), 0);
    assert_eq!(found("dddddd"), Account::Uid(7));
}

/// The login's one read: the selector's row only if it is this user's, whether the user
/// has any app password, and whether guesses at that row from this host are throttled
/// now.
fn login_lookup_reads_everything_at_once(db: &Db) {
    let s = db.init();
    let id = s.create(&row("alice", "imap", "abcdef")).unwrap();
    s.create(&row("bob", "imap", "bbbbbb")).unwrap();
    let t = Throttle {
        failures: 2,
        interval: 60,
        lockout: 100,
    };
    for at in [10, 11] {
        s.record_attempt(
            &Attempt {
                password_id: Some(id),
                ..failure(at, "alice", Some("198.51.100.7"), true)
            },
            Some(&t),
            KEEP,
        )
        .unwrap();
    }
    let s = db.open(Purpose::Read);
    let q = |user, selector, rhost, now| {
        s.lookup(&LookupQuery {
            user,
            selector,
            rhost,
            now,
        })
        .unwrap()
    };
    let found = q("alice", Some("abcdef"), "203.0.113.1", 12);
    assert_eq!(found.credential.map(|c| c.id), Some(id));
    assert!(found.has_passwords && !found.throttled);
    // bob's selector, given by alice: as if it did not exist.
    let other = q("alice", Some("bbbbbb"), "203.0.113.1", 12);
    assert!(other.credential.is_none() && other.has_passwords);
    // Not shaped like an app password: no selector.
    assert!(q("alice", None, "203.0.113.1", 12).credential.is_none());
    // Nobody's.
    let nobody = q("carol", Some("abcdef"), "", 12);
    assert!(nobody.credential.is_none() && !nobody.has_passwords && !nobody.throttled);
    // Throttled from that host only, for that password only, until the lockout ends.
    assert!(q("alice", Some("abcdef"), "198.51.100.7", 12).throttled);
    assert!(!q("alice", Some("zzzzzz"), "198.51.100.7", 12).throttled);
    assert!(!q("alice", Some("abcdef"), "198.51.100.7", 111).throttled);
}

/// Each row keeps its networks through the login's lookup, find_by_selector, list and
/// find; only its owner (or anyone, for admins) changes them.
fn networks_are_kept_and_changed(db: &Db) {
    let s = db.init();
    let a = s
        .create(&NewRow {
            networks: "192.0.2.0/24,2001:db8::/48",
            ..row("alice", "imap", "aaaaaa")
        })
        .unwrap();
    let b = s.create(&row("bob", "imap", "bbbbbb")).unwrap();
    let looked = s
        .lookup(&LookupQuery {
            user: "alice",
            selector: Some("aaaaaa"),
            rhost: "192.0.2.1",
            now: 101,
        })
        .unwrap();
    assert_eq!(
        looked.credential.unwrap().networks,
        "192.0.2.0/24,2001:db8::/48"
    );
    assert_eq!(s.find_by_selector("bbbbbb").unwrap().unwrap().networks, "");
    assert_eq!(
        s.list(Owner::User("alice")).unwrap()[0].networks,
        "192.0.2.0/24,2001:db8::/48"
    );
    // Another user's row is as if it did not exist, to find and to change.
    assert!(s.find(b, Owner::User("alice")).unwrap().is_none());
    assert!(
        !s.set_networks(b, Owner::User("alice"), "10.0.0.0/8")
            .unwrap()
    );
    assert!(!s.set_networks(999, Owner::Anyone, "10.0.0.0/8").unwrap());
    assert_eq!(s.find(b, Owner::Anyone).unwrap().unwrap().networks, "");
    assert!(s.set_networks(a, Owner::User("alice"), "").unwrap());
    assert!(s.set_networks(b, Owner::Anyone, "10.0.0.0/8").unwrap());
    let found = s.find(b, Owner::User("bob")).unwrap().unwrap();
    assert_eq!((found.id, found.networks.as_str()), (b, "10.0.0.0/8"));
    assert_eq!(s.find(a, Owner::Anyone).unwrap().unwrap().networks, "");
}

fn revoke_respects_the_owner(db: &Db) {
    let s = db.init();
    let a = s.create(&row("alice", "imap", "aaaaaa")).unwrap();
    let b = s.create(&row("bob", "imap", "bbbbbb")).unwrap();
    let out = s.revoke(&[a, b, 999], Owner::User("alice"), 7).unwrap();
    assert_eq!(
        out,
        vec![
            (a, Revoked::Now),
            (b, Revoked::NotFound),
            (999, Revoked::NotFound)
        ]
    );
    assert_eq!(
        s.revoke(&[a], Owner::Anyone, 8).unwrap(),
        vec![(a, Revoked::Already)]
    );
    assert_eq!(s.list(Owner::User("bob")).unwrap()[0].revoked, None);
    assert_eq!(s.list(Owner::User("alice")).unwrap()[0].revoked, Some(7));
    assert_eq!(
        s.find_by_selector("aaaaaa").unwrap().unwrap().dates.revoked,
        Some(7)
    );
    s.create(&row("bob", "pop3", "cccccc")).unwrap();
    s.create(&row("bob", "smtp", "dddddd")).unwrap();
    assert_eq!(s.revoke_all("bob", Some("pop3"), 9).unwrap(), 1);
    assert_eq!(s.revoke_all("bob", None, 9).unwrap(), 2);
    assert_eq!(s.revoke_all("bob", None, 9).unwrap(), 0);
}

fn throttling_counts_guesses_per_user_and_host(db: &Db) {
    let s = db.init();
    let t = Throttle {
        failures: 3,
        interval: 60,
        lockout: 100,
    };
    let phone = Some("198.51.100.7");
    for at in [10, 20] {
        s.record_attempt(&failure(at, "alice", phone, true), Some(&t), KEEP)
            .unwrap();
    }
    assert_eq!(
        s.throttled_until("alice", "198.51.100.7", None, 21)
            .unwrap(),
        None
    );
    // Not guesses (expired, revoked, not app-shaped) do not count.
    s.record_attempt(&failure(25, "alice", phone, false), Some(&t), KEEP)
        .unwrap();
    assert_eq!(
        s.throttled_until("alice", "198.51.100.7", None, 26)
            .unwrap(),
        None
    );
    s.record_attempt(&failure(30, "alice", phone, true), Some(&t), KEEP)
        .unwrap();
    assert_eq!(
        s.throttled_until("alice", "198.51.100.7", None, 31)
            .unwrap(),
        Some(130)
    );
    assert_eq!(
        s.throttled_until("alice", "203.0.113.1", None, 31).unwrap(),
        None
    );
    assert_eq!(
        s.throttled_until("bob", "198.51.100.7", None, 31).unwrap(),
        None
    );
    assert_eq!(
        s.throttled_until("alice", "198.51.100.7", None, 130)
            .unwrap(),
        None
    );
    // Guesses too far apart start a new window.
    for at in [200, 300, 400] {
        s.record_attempt(&failure(at, "alice", None, true), Some(&t), KEEP)
            .unwrap();
    }
    assert_eq!(s.throttled_until("alice", "", None, 401).unwrap(), None);
    // unlock lifts it; a success clears the counter.
    for at in [500, 501, 502] {
        s.record_attempt(&failure(at, "alice", None, true), Some(&t), KEEP)
            .unwrap();
    }
    assert!(s.throttled_until("alice", "", None, 503).unwrap().is_some());
    assert_eq!(s.unlock("alice", Some("")).unwrap(), 1);
    assert_eq!(s.throttled_until("alice", "", None, 503).unwrap(), None);
    for at in [600, 601] {
        s.record_attempt(&failure(at, "alice", phone, true), Some(&t), KEEP)
            .unwrap();
    }
    let ok = Attempt {
        outcome: Outcome::Success,
        ..failure(602, "alice", phone, false)
    };
    s.record_attempt(&ok, Some(&t), KEEP).unwrap();
    s.record_attempt(&failure(603, "alice", phone, true), Some(&t), KEEP)
        .unwrap();
    assert_eq!(
        s.throttled_until("alice", "198.51.100.7", None, 604)
            .unwrap(),
        None
    );
    // Throttled attempts are recorded, and unlock without a host clears every host.
    s.record_attempt(
        &Attempt {
            outcome: Outcome::Throttled,
            ..failure(700, "alice", phone, false)
        },
        Some(&t),
        KEEP,
    )
    .unwrap();
    assert_eq!(s.unlock("alice", None).unwrap(), 1);
    assert_eq!(s.unlock("alice", None).unwrap(), 0);
    let e = &s.events(Owner::User("alice"), 1).unwrap()[0];
    assert_eq!(
        (e.outcome.as_str(), e.reason.as_deref()),
        ("throttled", Some("throttled"))
    );
}

/// One counter per (user, remote host as counted, password named): guesses at unknown
/// selectors never throttle a real password, a wrong secret for one password throttles
/// only it, a success clears only its own; an IPv6 /64 is one host. Refused attempts
/// are one audit event per lockout, counted on the row. The row bound holds at every
/// write; expired rows go at maintenance.
fn throttling_is_per_password_and_prefix(db: &Db) {
    fn at_password(at: Timestamp, rhost: &str, id: Option<i64>) -> Attempt<'_> {
        Attempt {
            password_id: id,
            ..failure(at, "alice", Some(rhost), true)
        }
    }
    let s = db.init();
    let t = Throttle {
        failures: 3,
        interval: 60,
        lockout: 100,
    };
    // Unknown selectors from rotating addresses in one /64: one counter.
    for (at, rhost) in [
        (10, "2001:db8:1:2::a"),
        (11, "2001:DB8:1:2:ffff::1"),
        (12, "[2001:db8:1:2::3]"),
    ] {
        s.record_attempt(&at_password(at, rhost, None), Some(&t), KEEP)
            .unwrap();
    }
    let until = |rhost, id| s.throttled_until("alice", rhost, id, 13).unwrap();
    assert_eq!(until("2001:db8:1:2::99", None), Some(112));
    assert_eq!(until("2001:db8:1:3::1", None), None);
    assert_eq!(until("2001:db8:1:2::99", Some(7)), None);
    // A wrong secret for password 7 throttles password 7 only.
    for at in [20, 21, 22] {
        s.record_attempt(&at_password(at, "192.0.2.1", Some(7)), Some(&t), KEEP)
            .unwrap();
    }
    assert_eq!(until("192.0.2.1", Some(7)), Some(122));
    assert_eq!(until("192.0.2.1", Some(8)), None);
    assert_eq!(until("192.0.2.1", None), None);
    assert_eq!(until("::ffff:192.0.2.1", Some(7)), Some(122));
    // A success of password 8 clears its own counter, not the unknown selectors'.
    s.record_attempt(&at_password(30, "192.0.2.2", None), Some(&t), KEEP)
        .unwrap();
    s.record_attempt(&at_password(31, "192.0.2.2", Some(8)), Some(&t), KEEP)
        .unwrap();
    let ok = Attempt {
        outcome: Outcome::Success,
        ..at_password(32, "192.0.2.2", Some(8))
    };
    s.record_attempt(&ok, Some(&t), KEEP).unwrap();
    for at in [33, 34] {
        s.record_attempt(&at_password(at, "192.0.2.2", None), Some(&t), KEEP)
            .unwrap();
    }
    assert!(until("192.0.2.2", None).is_some());
    assert_eq!(until("192.0.2.2", Some(8)), None);
    // Refused attempts: the first of a lockout is an event, the rest are counted.
    let events = |s: &dyn Store| s.events(Owner::User("alice"), 10_000).unwrap();
    let before = events(&*s).len();
    for at in 40..50 {
        let refused = Attempt {
            outcome: Outcome::Throttled,
            ..at_password(at, "192.0.2.1", Some(7))
        };
        s.record_attempt(&refused, Some(&t), KEEP).unwrap();
    }
    let after = events(&*s);
    assert_eq!(after.len(), before + 1);
    assert_eq!(
        (
            after[0].outcome.as_str(),
            after[0].time,
            after[0].password_id
        ),
        ("throttled", 40, Some(7))
    );
    // A new lockout (after this one ends) is an event again.
    for at in [300, 301, 302] {
        s.record_attempt(&at_password(at, "192.0.2.1", Some(7)), Some(&t), KEEP)
            .unwrap();
    }
    let refused = Attempt {
        outcome: Outcome::Throttled,
        ..at_password(303, "192.0.2.1", Some(7))
    };
    s.record_attempt(&refused, Some(&t), KEEP).unwrap();
    s.record_attempt(&refused, Some(&t), KEEP).unwrap();
    // The three guesses' events, and one for the new lockout.
    assert_eq!(events(&*s).len(), before + 1 + 3 + 1);
    // unlock counts hosts, not counters; a host is named in any spelling.
    assert_eq!(s.unlock("alice", Some("2001:db8:1:2::1")).unwrap(), 1);
    assert_eq!(until("2001:db8:1:2::99", None), None);
    assert_eq!(s.unlock("alice", None).unwrap(), 2);
    // The bound: a flood of hosts leaves at most throttle_rows rows, the newest.
    let small = Retention {
        throttle_rows: 5,
        ..KEEP
    };
    let hosts: Vec<String> = (0..40).map(|i| format!("2001:db8:{i:x}::1")).collect();
    for (i, h) in hosts.iter().enumerate() {
        s.record_attempt(&at_password(400 + i as i64, h, None), Some(&t), small)
            .unwrap();
    }
    // One guess each, none locked. The newest host's row is there: two more guesses
    // lock it. The oldest's is gone: two more do not.
    for at in [440, 441] {
        s.record_attempt(&at_password(at, &hosts[39], None), Some(&t), small)
            .unwrap();
    }
    for at in [442, 443] {
        s.record_attempt(&at_password(at, &hosts[0], None), Some(&t), small)
            .unwrap();
    }
    let now_until = |h: &str| s.throttled_until("alice", h, None, 444).unwrap();
    assert!(now_until(&hosts[39]).is_some());
    assert_eq!(now_until(&hosts[0]), None);
    assert!(s.unlock("alice", None).unwrap() <= 5);
    // Maintenance deletes a row once it has expired (its window's end here), not before.
    let once = at_password(500, "192.0.2.9", None);
    s.record_attempt(&once, Some(&t), small).unwrap();
    s.prune(small, 559).unwrap();
    assert_eq!(s.unlock("alice", Some("192.0.2.9")).unwrap(), 1);
    s.record_attempt(&once, Some(&t), small).unwrap();
    s.prune(small, 560).unwrap();
    assert_eq!(s.unlock("alice", None).unwrap(), 0);
}

fn audit_log_is_per_user_newest_first_and_pruned(db: &Db) {
    let s = db.init();
    for at in 0..40 {
        let user = if at % 2 == 0 { "alice" } else { "bob" };
        s.record_attempt(&failure(at, user, Some("192.0.2.1"), false), None, KEEP)
            .unwrap();
    }
    let all = s.events(Owner::Anyone, 10_000).unwrap();
    assert_eq!(all.len(), 40);
    assert_eq!(all[0].time, 39, "newest first");
    let alice = s.events(Owner::User("alice"), 5).unwrap();
    assert_eq!(alice.len(), 5);
    assert!(
        alice
            .iter()
            .all(|e| e.user == "alice" && e.outcome == "failure")
    );
    assert_eq!(alice[0].time, 38);
    assert_eq!(alice[0].reason.as_deref(), Some("wrong_password"));
    assert_eq!(alice[0].rhost.as_deref(), Some("192.0.2.1"));
    assert_eq!(alice[0].password_id, None);
    // Pruning by rows, then by age.
    s.prune(
        Retention {
            max_age: 1_000_000,
            max_rows: 10,
            throttle_rows: 1000,
        },
        40,
    )
    .unwrap();
    let left = s.events(Owner::Anyone, 10_000).unwrap();
    assert_eq!(left.len(), 10, "{left:?}");
    assert_eq!(left[9].time, 30);
    s.prune(
        Retention {
            max_age: 5,
            max_rows: 1_000_000,
            throttle_rows: 1000,
        },
        40,
    )
    .unwrap();
    let left = s.events(Owner::Anyone, 10_000).unwrap();
    assert!(left.iter().all(|e| e.time >= 35), "{left:?}");
    assert_eq!(left.len(), 5);
}

fn count_active_ignores_revoked_and_expired(db: &Db) {
    let s = db.init();
    let a = s.create(&row("alice", "imap", "aaaaaa")).unwrap();
    s.create(&NewRow {
        expires: Some(50),
        ..row("alice", "imap", "bbbbbb")
    })
    .unwrap();
    s.create(&row("alice", "pop3", "cccccc")).unwrap();
    assert_eq!(s.count_active("alice", 10).unwrap(), 3);
    assert_eq!(s.count_active("alice", 50).unwrap(), 2);
    s.revoke(&[a], Owner::Anyone, 60).unwrap();
    assert_eq!(s.count_active("alice", 60).unwrap(), 1);
    let later = |sel| NewRow {
        created: 60,
        ..row("alice", "imap", sel)
    };
    assert!(matches!(
        s.create_limited(&later("dddddd"), 1),
        Err(StoreError::Limit(1))
    ));
    s.create_limited(&later("dddddd"), 2).unwrap();
    assert_eq!(s.count_active("alice", 60).unwrap(), 2);
    // A refused addition left nothing behind, and the store is usable after it.
    assert_eq!(s.list(Owner::User("alice")).unwrap().len(), 4);
}

fn inactive_rows_are_bounded_per_user(db: &Db) {
    let s = db.init();
    let n = usize::try_from(KEPT_INACTIVE).unwrap();
    let selectors: Vec<String> = (0..n + 10).map(|i| format!("s{i:05}")).collect();
    let kept = s.create(&row("alice", "imap", "keepme")).unwrap();
    let mut dead = Vec::new();
    for (i, sel) in selectors.iter().enumerate() {
        // Half revoked, half expired: both are inactive.
        let expires = (i % 2 == 1).then_some(150);
        let id = s
            .create(&NewRow {
                expires,
                ..row("alice", "imap", sel)
            })
            .unwrap();
        if expires.is_none() {
            s.revoke(&[id], Owner::Anyone, 150).unwrap();
        }
        dead.push(id);
    }
    s.create(&row("bob", "imap", "bobbob")).unwrap();
    s.revoke_all("bob", None, 150).unwrap();
    // An addition once they are inactive drops the oldest beyond the bound, and only
    // those: the active password, the newest inactive ones and other users' stay.
    let added = s
        .create(&NewRow {
            created: 200,
            ..row("alice", "imap", "newone")
        })
        .unwrap();
    let left: Vec<i64> = s
        .list(Owner::User("alice"))
        .unwrap()
        .iter()
        .map(|l| l.id)
        .collect();
    let mut want = vec![kept];
    want.extend_from_slice(&dead[dead.len() - n..]);
    want.push(added);
    assert_eq!(left, want);
    assert_eq!(s.list(Owner::User("bob")).unwrap().len(), 1);
}

fn regenerate_replaces_and_links(db: &Db) {
    let s = db.init();
    let old = s
        .create(&NewRow {
            expires: Some(500),
            networks: "192.0.2.0/24",
            ..row("alice", "imap", "aaaaaa")
        })
        .unwrap();
    let bobs = s.create(&row("bob", "imap", "bbbbbb")).unwrap();
    let at = |created, selector| NewRow {
        created,
        ..row("alice", "imap", selector)
    };
    let find = |id| s.find(id, Owner::Anyone).unwrap().unwrap();
    // Someone else's, or none: as if it did not exist, and nothing made.
    for (id, owner) in [
        (bobs, Owner::User("alice")),
        (bobs, Owner::Anyone),
        (999, Owner::Anyone),
    ] {
        assert_eq!(
            s.regenerate(id, owner, &at(200, "cccccc"), None).unwrap(),
            Regenerated::NotFound
        );
    }
    assert_eq!(s.list(Owner::Anyone).unwrap().len(), 2);

    // At the limit: the old one stops counting as the new one starts.
    let Regenerated::New(new) = s
        .regenerate(old, Owner::User("alice"), &at(200, "cccccc"), Some(1))
        .unwrap()
    else {
        panic!("not regenerated")
    };
    let (o, n) = (find(old), find(new));
    assert_eq!((o.revoked, o.replaced_by), (Some(200), Some(new)));
    assert_eq!((n.revoked, n.replaced_by, n.created), (None, None, 200));
    assert_eq!(o.networks, "192.0.2.0/24");
    assert_eq!(
        s.find_by_selector("aaaaaa").unwrap().unwrap().dates.revoked,
        Some(200)
    );
    let events = s.events(Owner::User("alice"), 10).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (e.password_id, e.outcome.as_str(), e.reason.as_deref()),
        (Some(old), "revoked", Some(store::REGENERATED))
    );
    assert_eq!((e.time, e.service.as_str()), (200, "imap"));

    // Once only; a taken selector or the limit change nothing.
    assert_eq!(
        s.regenerate(old, Owner::Anyone, &at(300, "dddddd"), None)
            .unwrap(),
        Regenerated::Already(new)
    );
    assert!(matches!(
        s.regenerate(new, Owner::Anyone, &at(300, "aaaaaa"), None),
        Err(StoreError::SelectorTaken)
    ));
    s.create(&at(300, "eeeeee")).unwrap();
    assert!(matches!(
        s.regenerate(new, Owner::Anyone, &at(300, "ffffff"), Some(1)),
        Err(StoreError::Limit(1))
    ));
    assert_eq!(find(new).revoked, None);
    assert_eq!(s.events(Owner::User("alice"), 10).unwrap().len(), 1);
    assert_eq!(s.list(Owner::User("alice")).unwrap().len(), 3);

    // A password revoked already keeps the time it was revoked.
    s.revoke(&[new], Owner::Anyone, 350).unwrap();
    let Regenerated::New(newer) = s
        .regenerate(new, Owner::Anyone, &at(400, "gggggg"), Some(2))
        .unwrap()
    else {
        panic!("not regenerated")
    };
    assert_eq!(
        (find(new).revoked, find(new).replaced_by),
        (Some(350), Some(newer))
    );
}

type Case = fn(&Db);

const CASES: &[(&str, Case)] = &[
    (
        "init_is_idempotent_and_versioned",
        init_is_idempotent_and_versioned,
    ),
    ("lookups_and_usage", lookups_and_usage),
    ("revoke_respects_the_owner", revoke_respects_the_owner),
    (
        "throttling_counts_guesses_per_user_and_host",
        throttling_counts_guesses_per_user_and_host,
    ),
    (
        "throttling_is_per_password_and_prefix",
        throttling_is_per_password_and_prefix,
    ),
    (
        "audit_log_is_per_user_newest_first_and_pruned",
        audit_log_is_per_user_newest_first_and_pruned,
    ),
    (
        "login_lookup_reads_everything_at_once",
        login_lookup_reads_everything_at_once,
    ),
    (
        "count_active_ignores_revoked_and_expired",
        count_active_ignores_revoked_and_expired,
    ),
    (
        "inactive_rows_are_bounded_per_user",
        inactive_rows_are_bounded_per_user,
    ),
    ("owners_are_kept_and_adopted", owners_are_kept_and_adopted),
    (
        "networks_are_kept_and_changed",
        networks_are_kept_and_changed,
    ),
    (
        "regenerate_replaces_and_links",
        regenerate_replaces_and_links,
    ),
];

#[test]
fn sqlite() {
    for (name, case) in CASES {
        eprintln!("sqlite: {name}");
        case(&Db::sqlite());
    }
}

/// The cluster for this binary's PostgreSQL tests, or `None` (skipped; a failure under
/// CI).
fn cluster() -> Option<pg::Cluster> {
    match pg::Cluster::start() {
        Ok(c) => Some(c),
        Err(e) => {
            common::require(false, &e);
            None
        }
    }
}

#[test]
fn postgresql() {
    let Some(cluster) = cluster() else { return };
    for (name, case) in CASES {
        eprintln!("postgresql: {name}");
        case(&Db::postgres(&cluster));
    }
}

/// What is not apppass's, or is newer, is refused, as SQLite refuses it; two hosts
/// initialising one database at once are safe.
#[test]
fn postgresql_schema_checks() {
    let Some(cluster) = cluster() else { return };
    let db = Db::postgres(&cluster);
    let name = match &db.location {
        Location::Postgres(c) => c.to_string(),
        _ => unreachable!(),
    };
    let open = |db: &Db| store::open(&db.location, &db.connect, Purpose::Read, false);
    let e = open(&db).err().unwrap();
    assert!(matches!(e, StoreError::Uninitialised(_)), "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    // Two at once: both succeed, the schema is made once.
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (location, connect) = (db.location.clone(), db.connect.clone());
            std::thread::spawn(move || {
                store::init(&location, &connect, false)
                    .map(|s| s.schema_version().unwrap())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Ok(store::postgres::SCHEMA_VERSION));
    }
    let dbname = name.rsplit("dbname=").next().unwrap();
    assert_eq!(
        cluster.psql(dbname, "SELECT count(*) FROM apppass_schema"),
        "1"
    );
    assert!(open(&db).is_ok());
    // Newer: refused, and init does not touch it.
    cluster.psql(dbname, "UPDATE apppass_schema SET version = 99");
    for e in [
        open(&db).err().unwrap(),
        store::init(&db.location, &db.connect, false).err().unwrap(),
    ] {
        assert!(
            matches!(e, StoreError::SchemaTooNew { found: 99, .. }),
            "{e}"
        );
    }
    // Another application's row, and tables by our names without ours.
    cluster.psql(
        dbname,
        "UPDATE apppass_schema SET application = 'other', version = 2",
    );
    assert!(matches!(
        open(&db).err().unwrap(),
        StoreError::ForeignSchema(_)
    ));
    let other = Db::postgres(&cluster);
    let other_name = match &other.location {
        Location::Postgres(c) => c.to_string().rsplit("dbname=").next().unwrap().to_string(),
        _ => unreachable!(),
    };
    cluster.psql(&other_name, "CREATE TABLE app_password (x int)");
    for e in [
        open(&other).err().unwrap(),
        store::init(&other.location, &other.connect, false)
            .err()
            .unwrap(),
    ] {
        assert!(matches!(e, StoreError::ForeignSchema(_)), "{e}");
    }
}

/// `db` of a PostgreSQL location (its shown form ends with it).
fn dbname(db: &Db) -> String {
    match &db.location {
        Location::Postgres(c) => c.to_string().rsplit("dbname=").next().unwrap().to_string(),
        _ => unreachable!(),
    }
}

/// Opens `conninfo` with `db`'s password file, for `purpose`.
fn open_at(db: &Db, conninfo: &str, purpose: Purpose) -> Result<Box<dyn Store>, String> {
    let location = Location::parse(conninfo)?;
    store::open(&location, &db.connect, purpose, false).map_err(|e| e.to_string())
}

fn lookup(s: &dyn Store) -> Result<bool, StoreError> {
    s.lookup(&LookupQuery {
        user: "alice",
        selector: Some("aaaaaa"),
        rhost: "",
        now: 100,
    })
    .map(|l| l.credential.is_some())
}

/// TCP only with TLS that verifies the server, refused before any password is sent
/// (what the string says by the parser, what libpq resolved at connect time); a Unix
/// socket needs none; several hosts are tried in turn, a hung one for the connect
/// timeout only; a lookup survives a server restart.
#[test]
fn postgresql_connections() {
    let Some(cluster) = cluster() else { return };
    let db = Db::postgres(&cluster);
    db.init().create(&row("alice", "imap", "aaaaaa")).unwrap();
    let name = dbname(&db);

    // Verified TLS over TCP; the Unix socket without TLS.
    let uri = cluster.uri(pg::ADMIN, &name);
    assert!(lookup(&*open_at(&db, &uri, Purpose::Read).unwrap()).unwrap());
    let socket = cluster.socket_conninfo(pg::ADMIN, &name);
    let s = open_at(&db, &format!("{socket} sslmode=disable"), Purpose::Read);
    assert!(s.is_ok(), "{:?}", s.err());
    // TCP without sslmode (the default, prefer, would not check the server): refused at
    // connect time, although the server would take it.
    let plain = cluster.plain_uri(pg::ADMIN, &name);
    let e = open_at(&db, &plain, Purpose::Read).err().unwrap();
    assert!(
        e.contains("over TCP with sslmode=prefer") && e.contains("sslmode=verify-full"),
        "{e}"
    );
    // Weaker modes said in the string: refused by the parser.
    for mode in ["disable", "allow", "require", "verify-ca"] {
        let e = Location::parse(&format!("{plain}?sslmode={mode}")).unwrap_err();
        assert!(e.contains(&format!("sslmode={mode}")), "{e}");
    }
    // verify-full verifies: another CA, or a name the certificate does not have, fails.
    let dir = tempfile::tempdir().unwrap();
    let other = pg::unrelated_ca(dir.path());
    let wrong_ca = uri.replace(
        &cluster.ca_file().display().to_string(),
        &other.display().to_string(),
    );
    let e = open_at(&db, &wrong_ca, Purpose::Read).err().unwrap();
    assert!(e.contains("certificate verify failed"), "{e}");
    let e = open_at(&db, &uri.replace("127.0.0.1", "localhost"), Purpose::Read)
        .err()
        .unwrap();
    assert!(e.contains("does not match host name"), "{e}");

    // Several hosts, target_session_attrs=read-write: a refused one is skipped at once,
    // a hung one (accepted by the kernel, never answered) after the connect timeout.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    let closed = common::free_port();
    let quick = Db {
        connect: store::Connect {
            connect_timeout: std::time::Duration::from_millis(500),
            ..db.connect.clone()
        },
        location: db.location.clone(),
        _dir: tempfile::tempdir().unwrap(),
    };
    for first in [closed, hung_port] {
        let several = format!(
            "postgresql://{}@127.0.0.1:{first},127.0.0.1:{}/{name}?sslmode=verify-full&sslrootcert={}&target_session_attrs=read-write",
            pg::ADMIN,
            cluster.port,
            cluster.ca_file().display()
        );
        let start = std::time::Instant::now();
        let s = open_at(&quick, &several, Purpose::Read).unwrap();
        assert!(lookup(&*s).unwrap());
        let took = start.elapsed();
        if first == hung_port {
            assert!(took >= std::time::Duration::from_millis(500), "{took:?}");
        }
        assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    }

    // A restart between two lookups: the second connects again and is answered; with
    // the server down, an error (Db: apppassd drops the store and opens it again later).
    let s = open_at(&db, &uri, Purpose::Daemon).unwrap();
    assert!(lookup(&*s).unwrap());
    cluster.stop_immediate();
    cluster.restart();
    assert!(lookup(&*s).unwrap());
    cluster.stop_immediate();
    let start = std::time::Instant::now();
    let e = lookup(&*s).unwrap_err();
    assert!(matches!(e, StoreError::Db(_)), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    cluster.restart();
    assert!(lookup(&*s).unwrap());
}

/// The login role reads, records and keeps the throttle, and nothing more: it cannot
/// add, revoke, read the audit log, prune it (its prune does nothing), or migrate the
/// schema; the administrators' role prunes and migrates, and apppassd's connection
/// creates the schema of an empty database.
#[test]
fn postgresql_roles() {
    let Some(cluster) = cluster() else { return };
    let db = Db::postgres(&cluster);
    let name = dbname(&db);
    let admin_uri = cluster.uri(pg::ADMIN, &name);
    let login_uri = cluster.uri(pg::LOGIN, &name);
    cluster.passfile(
        db.connect.passfile.as_deref().unwrap(),
        &[pg::ADMIN, pg::LOGIN],
    );
    let daemon = |uri: &str| {
        store::open_daemon(&Location::parse(uri).unwrap(), &db.connect, 1000).map(|o| o.store)
    };
    // An empty database: the login role's apppassd says who creates the schema; the
    // administrators' creates it.
    let e = daemon(&login_uri).err().unwrap().to_string();
    assert!(
        e.contains("no apppass schema yet") && e.contains("administrators' role"),
        "{e}"
    );
    let admin = daemon(&admin_uri).unwrap();
    assert_eq!(
        admin.schema_version().unwrap(),
        store::postgres::SCHEMA_VERSION
    );
    cluster.grant_login_role(&name);
    let id = admin.create(&row("alice", "imap", "aaaaaa")).unwrap();

    let login = daemon(&login_uri).unwrap();
    assert!(lookup(&*login).unwrap());
    let keep = Retention {
        max_age: 1_000_000,
        max_rows: 2,
        throttle_rows: 1000,
    };
    for at in 0..5 {
        login
            .record_attempt(&failure(at, "alice", None, true), None, keep)
            .unwrap();
    }
    login.prune(keep, 10).unwrap();
    assert_eq!(admin.events(Owner::Anyone, 100).unwrap().len(), 5);
    let denied = |r: Result<(), StoreError>| {
        let e = r.unwrap_err();
        assert!(
            matches!(e, StoreError::Db(_)) && e.to_string().contains("permission denied"),
            "{e}"
        );
    };
    denied(login.create(&row("mallory", "*", "mmmmmm")).map(|_| ()));
    denied(login.revoke(&[id], Owner::Anyone, 10).map(|_| ()));
    denied(login.revoke_all("alice", None, 10).map(|_| ()));
    denied(login.events(Owner::Anyone, 10).map(|_| ()));
    // It reads each row's owner, and may not change it: only the administrators'
    // apppassd adopts rows.
    let alice = login.find_by_selector("aaaaaa").unwrap().unwrap();
    assert_eq!(alice.owner, Account::NoAccount);
    denied(
        login
            .adopt(&[("alice".into(), Account::Uid(1))])
            .map(|_| ()),
    );
    assert_eq!(admin.list(Owner::Anyone).unwrap()[0].revoked, None);
    // The administrators' role prunes.
    admin.prune(keep, 10).unwrap();
    let left = admin.events(Owner::Anyone, 100).unwrap();
    assert_eq!(left.len(), 2, "{left:?}");

    // An older schema: the login role cannot migrate it and says so; the
    // administrators' role does.
    drop((admin, login));
    cluster.psql(
        &name,
        "DROP TABLE event, throttle; ALTER TABLE app_password DROP COLUMN owner_uid, DROP COLUMN networks, \
         DROP COLUMN replaced_by; \
         UPDATE apppass_schema SET version = 1",
    );
    let e = daemon(&login_uri).err().unwrap().to_string();
    assert!(
        e.contains("schema version 1 is older") && e.contains("administrators' role"),
        "{e}"
    );
    let admin = daemon(&admin_uri).unwrap();
    assert_eq!(
        admin.schema_version().unwrap(),
        store::postgres::SCHEMA_VERSION
    );
    // (New tables need the login role's grants again: roles.sql.)
    cluster.grant_login_role(&name);
    assert!(lookup(&*daemon(&login_uri).unwrap()).unwrap());
}
