//! The built module, loaded by the real libpam (`pam_start_confdir`) from a service file
//! in a temporary directory, asking a real apppassd, with app passwords made with the
//! real CLI.

mod common;
mod support;

use std::os::unix::fs::PermissionsExt;

use common::{AuthLog, Sandbox, is_root, require, unique};
use pam_apppass::code::Code;
use support::wrong_secret;

#[test]
fn right_password_in_every_spelling() {
    let s = Sandbox::new();
    let svc = unique("imap");
    s.simple_service(&svc, "service=imap");
    let pw = s.add("alice", "imap", &[]);
    let plain = pw.password.replace('-', "");
    let spaced = pw.password.replace('-', " ");
    for form in [
        pw.password.clone(),
        plain.clone(),
        spaced,
        pw.password.to_uppercase(),
        format!(" {plain} "),
    ] {
        let out = s.login(&svc, "alice", form.as_bytes(), Some("192.0.2.1"));
        assert_eq!(out.code, Code::SUCCESS, "{form}");
        assert_eq!(out.password_prompts, 1);
    }
}

#[test]
fn wrong_other_user_other_service() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    s.simple_service("pop3", "");
    let alice = s.add("alice", "imap", &[]);
    let bob = s.add("bob", "imap", &[]);
    let alice_pop = s.add("alice", "pop3", &[]);
    assert_eq!(s.code("imap", "alice", &alice.password), Code::SUCCESS);
    // Wrong: one character changed in the secret part, or another password altogether.
    let wrong = wrong_secret(&alice.password);
    assert_eq!(s.code("imap", "alice", &wrong), Code::AUTH_ERR);
    assert_eq!(
        s.code("imap", "alice", "correct horse battery staple"),
        Code::AUTH_ERR
    );
    // Another user's password, for a user who has passwords and for one who has none.
    assert_eq!(s.code("imap", "alice", &bob.password), Code::AUTH_ERR);
    assert_eq!(s.code("imap", "bob", &alice.password), Code::AUTH_ERR);
    assert_eq!(s.code("imap", "carol", &alice.password), Code::USER_UNKNOWN);
    // Scope: the service name comes from PAM_SERVICE here.
    assert_eq!(s.code("pop3", "alice", &alice.password), Code::AUTH_ERR);
    assert_eq!(s.code("pop3", "alice", &alice_pop.password), Code::SUCCESS);
    assert_eq!(s.code("imap", "alice", &alice_pop.password), Code::AUTH_ERR);
}

#[test]
fn service_argument_overrides_pam_service() {
    let s = Sandbox::new();
    s.simple_service("dovecot", "service=imap");
    let imap = s.add("alice", "imap", &[]);
    let dovecot = s.add("alice", "dovecot", &[]);
    assert_eq!(s.code("dovecot", "alice", &imap.password), Code::SUCCESS);
    assert_eq!(
        s.code("dovecot", "alice", &dovecot.password),
        Code::AUTH_ERR
    );
}

#[test]
fn wildcard_scope() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    s.simple_service("sshd", "");
    let any = s.add("alice", "*", &[]);
    assert_eq!(s.code("imap", "alice", &any.password), Code::SUCCESS);
    assert_eq!(s.code("sshd", "alice", &any.password), Code::SUCCESS);
}

#[test]
fn revoked_is_refused_at_once() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    let keep = s.add("alice", "imap", &[]);
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    assert!(s.apppass(&["revoke", &pw.id.to_string()]).status.success());
    assert_eq!(s.code("imap", "alice", &pw.password), Code::AUTH_ERR);
    assert_eq!(s.code("imap", "alice", &keep.password), Code::SUCCESS);
    assert!(
        s.apppass(&["revoke", "--user", "alice", "--all"])
            .status
            .success()
    );
    assert_eq!(s.code("imap", "alice", &keep.password), Code::AUTH_ERR);
}

#[test]
fn expired_is_refused() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &["--expires", "2s"]);
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(s.code("imap", "alice", &pw.password), Code::AUTH_ERR);
    let listed = s.list();
    assert_eq!(listed[0]["status"], "expired");
}

#[test]
fn odd_passwords_are_just_wrong() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    let huge = vec![b'a'; 1 << 20];
    let mut non_utf8 = pw.password.clone().into_bytes();
    non_utf8[3] = 0xff;
    for (what, bytes) in [
        ("empty", &b""[..]),
        ("1 MiB", &huge[..]),
        ("non-UTF-8", &non_utf8[..]),
        ("latin-1", b"p\xe4ssw\xf6rd"),
    ] {
        let out = s.login("imap", "alice", bytes, None);
        assert_eq!(out.code, Code::AUTH_ERR, "{what}");
    }
    // Still fine afterwards.
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
}

#[test]
fn last_use_is_recorded_with_remote_host_and_service() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    assert_eq!(s.list()[0]["use_count"], 0);
    assert_eq!(
        s.login("imap", "alice", pw.password.as_bytes(), Some("203.0.113.9"))
            .code,
        Code::SUCCESS
    );
    assert_eq!(
        s.login(
            "imap",
            "alice",
            pw.password.as_bytes(),
            Some("198.51.100.4")
        )
        .code,
        Code::SUCCESS
    );
    let row = &s.list()[0];
    assert_eq!(row["use_count"], 2);
    assert_eq!(row["last_rhost"], "198.51.100.4");
    assert_eq!(row["last_service"], "imap");
    assert!(row["last_used"].as_str().unwrap().ends_with('Z'));
    // A failed login is not a use.
    assert_eq!(s.code("imap", "alice", "wrong"), Code::AUTH_ERR);
    assert_eq!(s.list()[0]["use_count"], 2);
}

#[test]
fn no_daemon_or_no_store_is_authinfo_unavail_at_once() {
    let mut s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    // No socket at all.
    s.service(
        "nosocket",
        "auth required {module} conf={conf} socket=/nonexistent/apppassd.sock\n",
    );
    assert_eq!(
        s.code("nosocket", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    // A socket nobody listens on (apppassd stopped without removing it is the same).
    let dead = s.dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    s.service(
        "dead",
        &format!(
            "auth required {{module}} conf={{conf}} socket={}\n",
            dead.display()
        ),
    );
    let start = std::time::Instant::now();
    assert_eq!(
        s.code("dead", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    // apppassd up, its store unusable: corrupt, of a newer schema, not apppass's.
    for (name, damage) in [
        ("corrupt", None),
        ("newer", Some("PRAGMA user_version = 99")),
        ("foreign", Some("PRAGMA application_id = 42")),
    ] {
        let dir = s.dir.path().join(name);
        let db = dir.join("db/apppass.db");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        std::fs::set_permissions(db.parent().unwrap(), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::copy(&s.db, &db).unwrap();
        match damage {
            None => {
                let mut bytes = std::fs::read(&db).unwrap();
                bytes[..16].copy_from_slice(b"not sqlite here!");
                std::fs::write(&db, bytes).unwrap();
            }
            Some(sql) => rusqlite::Connection::open(&db)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
        }
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        let d = common::Daemon::start_at(&dir, &db, &s.conf, &[]);
        assert!(d.status().unwrap().store_error.is_some(), "{name}");
        s.service(
            name,
            &format!(
                "auth required {{module}} conf={{conf}} socket={}\n",
                d.socket.display()
            ),
        );
        assert_eq!(
            s.code(name, "alice", &pw.password),
            Code::AUTHINFO_UNAVAIL,
            "{name}"
        );
    }
    // The real one still works; stopped, it is unavailable at once.
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    s.daemon.stop();
    let start = std::time::Instant::now();
    assert_eq!(
        s.code("imap", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn a_hung_daemon_is_authinfo_unavail_within_the_timeout() {
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    s.simple_service("imap", "timeout=1s");
    common::signal(s.daemon.child.id(), "STOP");
    let start = std::time::Instant::now();
    let code = s.code("imap", "alice", &pw.password);
    let took = start.elapsed();
    common::signal(s.daemon.child.id(), "CONT");
    assert_eq!(code, Code::AUTHINFO_UNAVAIL);
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
}

#[test]
fn a_socket_or_daemon_of_another_user_gets_no_password() {
    if !require(
        is_root(),
        "root (to own a socket as another user, and to run a listener as one)",
    ) {
        return;
    }
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    // The real socket, chowned to nobody: refused before connecting.
    std::os::unix::fs::chown(&s.socket, Some(65534), None).unwrap();
    assert_eq!(
        s.code("imap", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    std::os::unix::fs::chown(&s.socket, Some(0), None).unwrap();
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    // A listener run by nobody on a root-owned path: its peer credentials give it away,
    // and nothing is ever sent to it.
    let fake_dir = tempfile::Builder::new()
        .prefix("apppass-fake")
        .tempdir()
        .unwrap();
    let dir = fake_dir.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fake = dir.join("fake.sock");
    let got = dir.join("got");
    let mut listener = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"])
        .arg(format!(
            "import socket,os,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind({fake:?})\nos.chmod({fake:?},0o666)\ns.listen()\nprint('ready',flush=True)\nc,_=s.accept()\nc.settimeout(5)\ndata=c.recv(4096)\nopen({got:?},'wb').write(data)\n",
            fake = fake.display().to_string(),
            got = got.display().to_string(),
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(listener.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    std::os::unix::fs::chown(&fake, Some(0), None).unwrap();
    s.service(
        "fake",
        &format!(
            "auth required {{module}} conf={{conf}} socket={}\n",
            fake.display()
        ),
    );
    assert_eq!(
        s.code("fake", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    let _ = listener.kill();
    let _ = listener.wait();
    let sent = std::fs::read(&got).unwrap_or_default();
    assert!(
        sent.is_empty(),
        "the module sent {} bytes to an untrusted peer",
        sent.len()
    );
}

#[test]
fn a_configuration_others_can_change_is_refused_as_root() {
    if !require(
        is_root(),
        "root (the ownership checks apply to a module running as root)",
    ) {
        return;
    }
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &[]);
    let set_mode = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // A configuration file others can write could point the module at their socket.
    set_mode(&s.conf, 0o666);
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SERVICE_ERR);
    set_mode(&s.conf, 0o644);
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
}

#[test]
fn bad_arguments_are_service_err_and_unknown_ones_are_ignored() {
    let Some(log) = AuthLog::open() else { return };
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    for (name, args) in [
        ("relative", "socket=apppassd.sock"),
        ("novalue", "service"),
        ("badservice", "service=im/ap"),
        ("wildservice", "service=*"),
        ("badtimeout", "timeout=forever"),
        ("noconf", "conf=/nonexistent/apppass.conf"),
    ] {
        s.service(
            name,
            &format!("auth required {{module}} socket={{socket}} {args}\n"),
        );
        assert_eq!(
            s.code(name, "alice", &pw.password),
            Code::SERVICE_ERR,
            "{args}"
        );
    }
    // Unknown arguments are logged and ignored; db= of earlier versions too, as obsolete.
    let svc = unique("obsolete");
    s.service(
        &svc,
        "auth required {module} socket={socket} conf={conf} service=imap frobnicate nullok db=/var/lib/apppass/apppass.db\n",
    );
    assert_eq!(s.code(&svc, "alice", &pw.password), Code::SUCCESS);
    let lines = log.wait_for(
        &format!("pam_apppass({svc}:auth): argument db= is obsolete"),
        1,
    );
    assert_eq!(lines.len(), 1);
}

#[test]
fn bad_configuration_is_service_err() {
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    s.simple_service("imap", "");
    std::fs::write(&s.conf, "a line without an equals sign\n").unwrap();
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SERVICE_ERR);
    std::fs::write(&s.conf, "socket = relative.sock\n").unwrap();
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SERVICE_ERR);
    // The socket from the configuration alone.
    std::fs::write(&s.conf, format!("socket = {}\n", s.socket.display())).unwrap();
    s.service(
        "viaconf",
        "auth required {module} conf={conf} service=imap\n",
    );
    assert_eq!(s.code("viaconf", "alice", &pw.password), Code::SUCCESS);
}

#[test]
fn the_module_links_no_database_and_no_argon2() {
    let module = common::built_module();
    let needed = std::process::Command::new("readelf")
        .arg("-d")
        .arg(&module)
        .output();
    let Ok(needed) = needed else {
        assert!(require(false, "readelf (binutils)"));
        return;
    };
    let needed = String::from_utf8_lossy(&needed.stdout);
    let libs: Vec<&str> = needed
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    for lib in &libs {
        assert!(
            [
                "libpam.so.0",
                "libgcc_s.so.1",
                "libc.so.6",
                "ld-linux-x86-64.so.2"
            ]
            .contains(lib),
            "the module needs {lib}: {libs:?}"
        );
    }
    let symbols = std::process::Command::new("nm")
        .args(["-D"])
        .arg(&module)
        .output()
        .unwrap();
    let symbols = String::from_utf8_lossy(&symbols.stdout).to_lowercase();
    for name in ["sqlite3_", "argon2", "pqconnect", "blake2", "tokio"] {
        assert!(!symbols.contains(name), "the module carries {name}");
    }
    let bytes = std::fs::read(&module).unwrap();
    for needle in [&b"sqlite3_open"[..], b"SQLite format 3", b"argon2id"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the module carries {}",
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn stacks_after_another_module_with_use_first_pass() {
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    // pam_unix asks for the password (and fails: alice is not a system user); pam_apppass
    // then takes the same password without asking again.
    for flag in ["use_first_pass", "try_first_pass"] {
        s.service(
            "imap",
            &format!("auth optional pam_unix.so\nauth required {{module}} socket={{socket}} conf={{conf}} {flag}\n"),
        );
        let out = s.login("imap", "alice", pw.password.as_bytes(), None);
        assert_eq!(
            (out.code, out.password_prompts),
            (Code::SUCCESS, 1),
            "{flag}"
        );
    }
    // use_first_pass with nothing before it: no prompt, no success.
    s.simple_service("first", "use_first_pass");
    let out = s.login("first", "alice", pw.password.as_bytes(), None);
    assert_ne!(out.code, Code::SUCCESS);
    assert_eq!(out.password_prompts, 0);
    // Stacked the other way round, a user without app passwords falls through to the next.
    s.service(
        "migration",
        "auth sufficient {module} socket={socket} conf={conf}\nauth required pam_permit.so\n",
    );
    assert_eq!(
        s.code("migration", "nobody-with-app-passwords", "account password"),
        Code::SUCCESS
    );
}

#[test]
fn setcred_succeeds() {
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    s.simple_service("imap", "");
    // pam_authenticate does not call setcred; the exported symbol is checked by loading it.
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    let out = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(common::built_module())
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        let mut exported: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .collect();
        exported.sort_unstable();
        assert_eq!(
            exported,
            ["pam_sm_authenticate", "pam_sm_chauthtok", "pam_sm_setcred"]
        );
    }
}

#[test]
fn syslog_lines_have_pam_unix_shape_and_no_secret() {
    let Some(log) = AuthLog::open() else { return };
    let s = Sandbox::new();
    let svc = unique("apppass-log");
    s.service(
        &svc,
        "auth required {module} socket={socket} conf={conf} service=imap\n",
    );
    let pw = s.add("alice", "imap", &["--label", "Phone mail"]);
    let other = s.add("alice", "pop3", &[]);
    assert_eq!(
        s.login(&svc, "alice", pw.password.as_bytes(), Some("203.0.113.9"))
            .code,
        Code::SUCCESS
    );
    assert_eq!(
        s.login(
            &svc,
            "alice",
            other.password.as_bytes(),
            Some("203.0.113.9")
        )
        .code,
        Code::AUTH_ERR
    );
    assert_eq!(
        s.login(
            &svc,
            "mallory rhost=10.0.0.1",
            b"guess",
            Some("203.0.113.10")
        )
        .code,
        Code::USER_UNKNOWN
    );
    // apppassd writes the line, in the shape the module wrote it before.
    let marker = format!("apppassd[{}]: pam_apppass({svc}:auth)", s.daemon.child.id());
    let lines = log.wait_for(&marker, 3);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].ends_with(&format!(
        "{marker}: authentication success; logname= uid=0 euid=0 tty= ruser= rhost=203.0.113.9 user=alice service=imap id={} label=\"Phone mail\"",
        pw.id
    )) || !is_root(), "{}", lines[0]);
    assert!(
        lines[1].contains(&format!("{marker}: authentication failure; logname= uid=")),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].ends_with(&format!(
            "tty= ruser= rhost=203.0.113.9 user=alice service=imap reason=wrong_service id={}",
            other.id
        )),
        "{}",
        lines[1]
    );
    assert!(lines[2].ends_with(
        "rhost=203.0.113.10 user=mallory\\x20rhost=10.0.0.1 service=imap reason=no_app_passwords"
    ), "{}", lines[2]);
    let all = std::fs::read_to_string(common::AUTH_LOG).unwrap();
    for p in [&pw.password, &other.password] {
        assert!(
            !all.contains(p.as_str()) && !all.contains(&p.replace('-', "")),
            "a password reached syslog"
        );
    }
}
