//! The built module, loaded by the real libpam (`pam_start_confdir`) from a service file
//! in a temporary directory, against a database made with the real CLI.

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
fn unusable_databases_are_authinfo_unavail() {
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    // Missing.
    s.service(
        "missing",
        "auth required {module} conf={conf} db=/nonexistent/apppass.db\n",
    );
    assert_eq!(
        s.code("missing", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    // Corrupt: random bytes, and a real database with its header damaged.
    let junk = s.dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a; 64 * 1024]).unwrap();
    s.service(
        "junk",
        &format!(
            "auth required {{module}} conf={{conf}} db={}\n",
            junk.display()
        ),
    );
    assert_eq!(
        s.code("junk", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    let damaged = s.dir.path().join("damaged.db");
    std::fs::copy(&s.db, &damaged).unwrap();
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[..16].copy_from_slice(b"not sqlite here!");
    std::fs::write(&damaged, bytes).unwrap();
    s.service(
        "damaged",
        &format!(
            "auth required {{module}} conf={{conf}} db={}\n",
            damaged.display()
        ),
    );
    assert_eq!(
        s.code("damaged", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    // Newer schema, foreign application id, never initialised.
    for (name, sql) in [
        ("newer", "PRAGMA user_version = 99"),
        ("foreign", "PRAGMA application_id = 42"),
        ("uninit", "PRAGMA user_version = 0"),
    ] {
        let path = s.dir.path().join(format!("{name}.db"));
        std::fs::copy(&s.db, &path).unwrap();
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
        s.service(
            name,
            &format!(
                "auth required {{module}} conf={{conf}} db={}\n",
                path.display()
            ),
        );
        assert_eq!(
            s.code(name, "alice", &pw.password),
            Code::AUTHINFO_UNAVAIL,
            "{name}"
        );
    }
    // The real database still works.
    s.simple_service("imap", "");
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
}

#[test]
fn unsafe_databases_are_refused_when_running_as_root() {
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
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    set_mode(&s.db, 0o666);
    assert_eq!(
        s.code("imap", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    set_mode(&s.db, 0o620);
    assert_eq!(
        s.code("imap", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    set_mode(&s.db, 0o600);
    let dir = s.db.parent().unwrap();
    set_mode(dir, 0o777);
    assert_eq!(
        s.code("imap", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    set_mode(dir, 0o700);
    std::os::unix::fs::chown(&s.db, Some(65534), None).unwrap();
    assert_eq!(
        s.code("imap", "alice", &pw.password),
        Code::AUTHINFO_UNAVAIL
    );
    std::os::unix::fs::chown(&s.db, Some(0), None).unwrap();
    // A configuration file others can write could point the module anywhere.
    set_mode(&s.conf, 0o666);
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SERVICE_ERR);
    set_mode(&s.conf, 0o644);
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
}

#[test]
fn bad_arguments_are_service_err_and_unknown_ones_are_ignored() {
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    for (name, args) in [
        ("relative", "db=apppass.db"),
        ("empty", "db="),
        ("novalue", "service"),
        ("badservice", "service=im/ap"),
        ("wildservice", "service=*"),
        ("noconf", "conf=/nonexistent/apppass.conf"),
    ] {
        s.service(
            name,
            &format!("auth required {{module}} db={{db}} {args}\n"),
        );
        assert_eq!(
            s.code(name, "alice", &pw.password),
            Code::SERVICE_ERR,
            "{args}"
        );
    }
    s.service(
        "imap",
        "auth required {module} db={db} conf={conf} frobnicate nullok\n",
    );
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
}

#[test]
fn bad_configuration_is_service_err() {
    let s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    s.simple_service("imap", "");
    std::fs::write(&s.conf, "this is not key = value\nargon2_time = many\n").unwrap();
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SERVICE_ERR);
    std::fs::write(&s.conf, format!("db = {}\n", s.db.display())).unwrap();
    s.service(
        "viaconf",
        "auth required {module} conf={conf} service=imap\n",
    );
    assert_eq!(s.code("viaconf", "alice", &pw.password), Code::SUCCESS);
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
            &format!("auth optional pam_unix.so\nauth required {{module}} db={{db}} conf={{conf}} {flag}\n"),
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
        "auth sufficient {module} db={db} conf={conf}\nauth required pam_permit.so\n",
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
    std::fs::write(
        s.confdir.join("imap"),
        format!(
            "auth required {} db={} conf={}\n",
            s.module.display(),
            s.db.display(),
            s.conf.display()
        ),
    )
    .unwrap();
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
        assert_eq!(exported, ["pam_sm_authenticate", "pam_sm_setcred"]);
    }
}

#[test]
fn syslog_lines_have_pam_unix_shape_and_no_secret() {
    let Some(log) = AuthLog::open() else { return };
    let s = Sandbox::new();
    let svc = unique("apppass-log");
    s.service(
        &svc,
        "auth required {module} db={db} conf={conf} service=imap\n",
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
    let marker = format!("pam_apppass({svc}:auth)");
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
