//! apppassd through its socket, with the protocol's own client: logins and management,
//! a bad frame, a store it cannot use, SIGTERM with requests in flight.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use apppass_proto::{
    AddRequest, AuthAnswer, AuthRequest, ErrorKind, Reason, Request, Response, RevokeOutcome,
};
use common::Daemon;
use zeroize::Zeroizing;

fn world() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("apppassd-test")
        .tempdir()
        .unwrap();
    let conf = dir.path().join("apppass.conf");
    std::fs::write(&conf, "# defaults\n").unwrap();
    (dir, conf)
}

fn auth(user: &str, service: &str, password: &str) -> Request {
    Request::Authenticate(AuthRequest {
        user: user.as_bytes().to_vec(),
        service: service.into(),
        pam_service: service.into(),
        rhost: Some("192.0.2.7".into()),
        tty: None,
        ruser: None,
        logname: None,
        password: Zeroizing::new(password.as_bytes().to_vec()),
        timeout_ms: 5000,
    })
}

fn add(d: &Daemon, user: &str, service: &str) -> (i64, String) {
    match d
        .call(&Request::Add(AddRequest {
            user: Some(user.into()),
            service: service.into(),
            label: "test".into(),
            expires: None,
            from: None,
        }))
        .unwrap()
    {
        Response::Added(a) => (a.id, a.password.to_string()),
        other => panic!("{other:?}"),
    }
}

fn answer(d: &Daemon, r: &Request) -> AuthAnswer {
    match d.call(r).unwrap() {
        Response::Auth(a) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn logins_and_management_through_the_socket() {
    let (dir, conf) = world();
    let d = Daemon::start(dir.path(), &conf);
    let status = d.status().unwrap();
    assert_eq!(status.store_error, None, "{status:?}");
    assert!(
        status.you.admin && status.you.authenticates_anyone,
        "{status:?}"
    );
    // The socket is open to every local user; the store is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.socket), 0o666);
    assert_eq!(mode(d.db.parent().unwrap()), 0o700);
    assert_eq!(mode(&d.db), 0o600);

    let (id, pw) = add(&d, "alice", "imap");
    assert!(
        matches!(answer(&d, &auth("alice", "imap", &pw)), AuthAnswer::Success { id: i, .. } if i == id)
    );
    let mut wrong = pw.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'z' { 'y' } else { 'z' });
    assert_eq!(
        answer(&d, &auth("alice", "imap", &wrong)),
        AuthAnswer::Denied {
            reason: Reason::WrongPassword,
            id: Some(id)
        }
    );
    assert_eq!(
        answer(&d, &auth("alice", "pop3", &pw)),
        AuthAnswer::Denied {
            reason: Reason::WrongService,
            id: Some(id)
        }
    );
    assert_eq!(
        answer(&d, &auth("bob", "imap", &pw)),
        AuthAnswer::NoAppPasswords
    );
    assert_eq!(
        answer(&d, &auth("alice", "imap", "hunter2")),
        AuthAnswer::Denied {
            reason: Reason::NotAppPassword,
            id: None
        }
    );
    let Response::Passwords(list) = d
        .call(&Request::List {
            user: Some("alice".into()),
            all: false,
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].use_count, list[0].last_rhost.as_deref()),
        (1, Some("192.0.2.7"))
    );
    let Response::Revoked(r) = d.call(&Request::Revoke { ids: vec![id, 999] }).unwrap() else {
        panic!()
    };
    assert_eq!(
        r,
        [(id, RevokeOutcome::Now), (999, RevokeOutcome::NotFound)]
    );
    assert_eq!(
        answer(&d, &auth("alice", "imap", &pw)),
        AuthAnswer::Denied {
            reason: Reason::Revoked,
            id: Some(id)
        }
    );
    let Response::Events(events) = d
        .call(&Request::Log {
            user: Some("alice".into()),
            all: false,
            limit: 10,
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(events.len(), 5, "{events:?}");
    let status = d.status().unwrap();
    let n = |name: &str| status.counts.iter().find(|(k, _)| k == name).unwrap().1;
    assert_eq!(
        (
            n("login_success"),
            n("login_failure"),
            n("login_no_app_passwords")
        ),
        (1, 4, 1)
    );
}

#[test]
fn bad_frames_get_an_error_and_change_nothing() {
    let (dir, conf) = world();
    let d = Daemon::start(dir.path(), &conf);
    add(&d, "alice", "imap");
    let everything = |d: &Daemon| {
        let list = d
            .call(&Request::List {
                user: None,
                all: true,
            })
            .unwrap();
        let log = d
            .call(&Request::Log {
                user: None,
                all: true,
                limit: 1000,
            })
            .unwrap();
        format!("{list:?} {log:?}")
    };
    let before = everything(&d);
    for frame in [
        &b"\x00\x00\x00\x02\x09\x01"[..], // another protocol version
        b"\x00\x00\x00\x02\x01\xee",      // an unknown request
        b"\x00\x00\x00\x03\x01\x04\x07",  // a list request with a bad flag
        b"\xff\xff\xff\xff",              // a frame larger than allowed
    ] {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(frame).unwrap();
        let body = apppass_proto::wire::read_frame(&mut s, 1 << 20).unwrap();
        match Response::decode(&body).unwrap() {
            Response::Error { kind, .. } => assert_eq!(kind, ErrorKind::BadRequest, "{frame:?}"),
            other => panic!("{frame:?}: {other:?}"),
        }
    }
    // A client that connects and says nothing is dropped, not waited for forever.
    let mut silent = UnixStream::connect(&d.socket).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut silent, &mut buf).unwrap_or(0), 0);
    let status = d.status().unwrap();
    assert_eq!(status.store_error, None);
    let bad = status
        .counts
        .iter()
        .find(|(k, _)| k == "bad_request")
        .unwrap()
        .1;
    assert_eq!(bad, 4);
    assert!(everything(&d) == before, "a bad frame changed the store");
}

#[test]
fn an_untrusted_store_is_refused_and_the_daemon_stays_up() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, conf) = world();
    let db = dir.path().join("db");
    std::fs::create_dir(&db).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o777)).unwrap();
    let d = Daemon::start(dir.path(), &conf);
    let status = d.status().unwrap();
    let why = status.store_error.expect("an untrusted store");
    assert!(why.contains("writable by group or other"), "{why}");
    match d
        .call(&auth("alice", "imap", "k46p-wjpw-pvq5-txq2-c86r-4tuk-ckzh"))
        .unwrap()
    {
        Response::Error { kind, message } => {
            assert_eq!(kind, ErrorKind::Unavailable);
            assert!(message.contains("writable"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Fixed, it is used at the next request after the retry interval.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    add(&d, "alice", "imap");
    assert_eq!(d.status().unwrap().store_error, None);
}

#[test]
fn sigterm_stops_cleanly() {
    let (dir, conf) = world();
    let mut d = Daemon::start(dir.path(), &conf);
    let status = d.stop();
    assert!(status.success(), "{status:?}");
    assert!(!d.socket.exists(), "the socket it made is gone");
}

#[test]
fn backups_are_roots_and_whole() {
    let (dir, conf) = world();
    let d = Daemon::start(dir.path(), &conf);
    let (_, pw) = add(&d, "alice", "imap");
    let own = pam_apppass::uids().1;
    let mut client =
        apppass_proto::Client::connect(&d.socket, Duration::from_secs(10), &[0, own]).unwrap();
    let mut first = client.call(&Request::Backup).unwrap();
    if own != 0 {
        assert!(matches!(
            first,
            Response::Error {
                kind: ErrorKind::Denied,
                ..
            }
        ));
        return;
    }
    let mut copy = Vec::new();
    loop {
        match first {
            Response::Chunk(data) => copy.extend_from_slice(&data),
            Response::Done => break,
            other => panic!("{other:?}"),
        }
        first = client.read_more().unwrap();
    }
    let restored = dir.path().join("restored/apppass.db");
    // Restored as the store was: a directory and a file of apppassd's own.
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(restored.parent().unwrap())
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&restored)
        .unwrap()
        .write_all(&copy)
        .unwrap();
    drop(d);
    // Its own socket directory: the store's holds only the store.
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let d2 = Daemon::start_at(&run, &restored, &conf, &[]);
    assert!(matches!(
        answer(&d2, &auth("alice", "imap", &pw)),
        AuthAnswer::Success { .. }
    ));
}
