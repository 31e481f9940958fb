//! The portal's side of apppassd, through its socket: the uid `portal_user` signs people
//! in through the real `apppass-portal` PAM stack (pam_unix, run by the built helper),
//! then acts for each only through the session apppassd issued, with that person's
//! rights; sign-out ends the session in apppassd; failed sign-ins are throttled per
//! (user, browser address) without locking the owner out from elsewhere. Run by
//! throwaway users (setpriv): this program again, as the portal's user, as a raw client.

mod common;

use std::process::Command;
use std::time::Duration;

use apppass_proto::{AddRequest, Client, Request, Response, Secret};
use common::people::{Accounts, World, password_of};
use common::{is_root, require};

const ROLE_SOCKET: &str = "APPPASS_SESSIONS_SOCKET";
const ROLE_USERS: &str = "APPPASS_SESSIONS_USERS";

/// A stack for the portal's sign-in like the shipped one: the account password.
const PORTAL_STACK: &str = "auth required pam_unix.so\naccount required pam_unix.so\n";

fn prerequisites() -> bool {
    require(is_root(), "root (throwaway users, apppassd as root)")
        && require(
            Command::new("setpriv").arg("--version").output().is_ok(),
            "setpriv (util-linux)",
        )
}

/// What apppassd answered, in a word.
fn word(r: Result<Response, apppass_proto::ClientError>) -> String {
    match r {
        Ok(Response::Error { kind, .. }) => kind.as_str().to_string(),
        Ok(Response::Session(_)) => "session".into(),
        Ok(Response::Passwords(p)) => format!("passwords:{}", p.len()),
        Ok(Response::Added(a)) => format!("added:{}", a.user),
        Ok(Response::Done) => "done".into(),
        Ok(Response::Proved) => "proved".into(),
        Ok(Response::Conversation(_)) => "conversation".into(),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("closed ({e})"),
    }
}

fn add(user: Option<&str>) -> Request {
    Request::Add(AddRequest {
        user: user.map(str::to_string),
        service: "mail".into(),
        label: "portal".into(),
        expires: None,
        from: None,
    })
}

/// Signs `user` in from `client` with `password`, on a new connection.
fn sign_in(
    socket: &str,
    user: &str,
    client: &str,
    password: &str,
) -> (Client, Result<Response, apppass_proto::ClientError>) {
    let mut c = Client::connect(socket.as_ref(), Duration::from_secs(20), &[0]).unwrap();
    let first = c.call(&Request::SignIn {
        user: user.into(),
        client: Some(client.into()),
    });
    let r = match first {
        Ok(Response::Conversation(prompts)) => {
            let answers = prompts
                .iter()
                .map(|p| {
                    if p.style.is_question() {
                        Secret::new(password.as_bytes())
                    } else {
                        Secret::default()
                    }
                })
                .collect();
            c.call(&Request::Answer { answers })
        }
        other => other,
    };
    (c, r)
}

/// The portal's role: prints what apppassd answers it, line by line.
#[test]
fn portal_role() {
    let (Ok(socket), Ok(users)) = (std::env::var(ROLE_SOCKET), std::env::var(ROLE_USERS)) else {
        return;
    };
    let users: Vec<&str> = users.split(',').collect();
    let (alice, bob) = (users[0], users[1]);
    let connect = || Client::connect(socket.as_ref(), Duration::from_secs(20), &[0]).unwrap();

    // Nothing without a session.
    println!(
        "list without a session: {}",
        word(connect().call(&Request::List {
            user: None,
            all: false
        }))
    );
    println!(
        "add without a session: {}",
        word(connect().call(&add(None)))
    );

    // Signed in: a session, and through it alice's own rights, nobody else's.
    let (_, r) = sign_in(&socket, alice, "192.0.2.10", &password_of(alice));
    let Ok(Response::Session(session)) = r else {
        panic!("no session: {}", word(r))
    };
    println!(
        "session: user={} uid_matches={} token_len={} admin={}",
        session.user,
        session.uid != 0,
        session.token.as_bytes().len(),
        session.admin
    );
    let mut c = connect();
    println!(
        "resume: {}",
        word(c.call(&Request::Resume {
            token: session.token.clone()
        }))
    );
    println!("add for her: {}", word(c.call(&add(None))));
    println!("add for bob: {}", word(c.call(&add(Some(bob)))));
    println!(
        "list: {}",
        word(c.call(&Request::List {
            user: None,
            all: false
        }))
    );
    println!(
        "list all: {}",
        word(c.call(&Request::List {
            user: None,
            all: true
        }))
    );
    // A re-proof runs the portal's stack again, on this connection.
    let proved = match c.call(&Request::Prove) {
        Ok(Response::Conversation(prompts)) => c.call(&Request::Answer {
            answers: prompts
                .iter()
                .map(|_| Secret::new(password_of(alice).as_bytes()))
                .collect(),
        }),
        other => other,
    };
    println!("prove: {}", word(proved));
    println!("sign out: {}", word(c.call(&Request::SignOut)));
    println!(
        "resume after sign-out: {}",
        word(connect().call(&Request::Resume {
            token: session.token.clone()
        }))
    );
    println!(
        "forged token: {}",
        word(connect().call(&Request::Resume {
            token: Secret::new(b"0000000000000000000000000000000000000000000000000000000000000000"),
        }))
    );

    // Guessing at bob from one address: stopped there after 5, while bob himself,
    // elsewhere, signs in.
    for _ in 0..5 {
        let (_, r) = sign_in(&socket, bob, "198.51.100.66", "guess");
        assert_eq!(word(r), "denied");
    }
    let (_, r) = sign_in(&socket, bob, "198.51.100.66", &password_of(bob));
    println!("bob from the guesser's address: {}", word(r));
    let (_, r) = sign_in(&socket, bob, "203.0.113.5", &password_of(bob));
    println!("bob from his own: {}", word(r));
    // Root and names nobody has never get a session, whatever is typed.
    let (_, r) = sign_in(&socket, "root", "192.0.2.11", "x");
    println!("root: {}", word(r));
    let (_, r) = sign_in(&socket, "no-such-user-zz", "192.0.2.12", "x");
    println!("unknown: {}", word(r));
}

#[test]
fn the_portal_acts_only_through_sessions() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create("aps", 3, 0);
    let (portal, alice, bob) = (
        acc.users[0].as_str(),
        acc.users[1].as_str(),
        acc.users[2].as_str(),
    );
    let w = World::new(&format!("portal_user = {portal}\n"), &[]);
    std::fs::write(w.confdir.join("apppass-portal"), PORTAL_STACK).unwrap();

    // Only the portal signs people in.
    let out = {
        let exe = w.dir.path().join("sessions-role");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        common::as_user(Some(portal))
            .arg(&exe)
            .args(["portal_role", "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_SOCKET, &w.daemon.socket)
            .env(ROLE_USERS, format!("{alice},{bob}"))
            .output()
            .unwrap()
    };
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "list without a session: denied".to_string(),
        "add without a session: denied".to_string(),
        format!("session: user={alice} uid_matches=true token_len=64 admin=false"),
        "resume: session".to_string(),
        // The sign-in is the proof: a credential within five minutes of it.
        format!("add for her: added:{alice}"),
        "add for bob: denied".to_string(),
        "list: passwords:1".to_string(),
        "list all: denied".to_string(),
        "sign out: done".to_string(),
        "resume after sign-out: denied".to_string(),
        "forged token: denied".to_string(),
        "bob from the guesser's address: limit".to_string(),
        "bob from his own: session".to_string(),
        "root: denied".to_string(),
        "unknown: denied".to_string(),
    ] {
        assert!(said.contains(&line), "no {line:?} in {said}");
    }
    assert!(said.contains("prove: proved"), "{said}");
    // What the portal did is alice's, logged as hers.
    let listed: serde_json::Value =
        serde_json::from_slice(&w.apppass(None, &["list", "--user", alice, "--json"]).stdout)
            .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert!(
        !w.daemon
            .log_lines(&["portal session opened", alice], 1)
            .is_empty()
    );
    // Someone who is not the portal cannot sign anyone in.
    let mut c = Client::connect(&w.daemon.socket, Duration::from_secs(20), &[0]).unwrap();
    let r = c.call(&Request::SignIn {
        user: alice.into(),
        client: None,
    });
    assert_eq!(word(r), "denied");
}
