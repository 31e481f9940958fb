//! OpenSSH 9.2 logging in through the shipped PAM files with a real client (ssh, driven
//! by sshpass for passwords), running a command and checking its output, with the test's
//! apppassd running and stopped; then the syslog lines, `apppass list` and fail2ban
//! counts those logins produced. The servers and helpers are in tests/e2e/mod.rs.

mod common;
mod e2e;
mod support;

use std::time::{Duration, Instant};

use common::{AuthLog, unique};
use e2e::{
    Expected, Host, Sshd, TestUser, World, assert_last_use, authorize_key, check_syslog,
    check_unavailable, fail2ban_ips, fresh_ip, listed, sorted, ssh_key, ssh_password,
};
use support::wrong_secret;

/// Both ways sshd hands a password to PAM.
const METHODS: [&str; 2] = ["password", "keyboard-interactive"];

fn prerequisites() -> bool {
    e2e::have(&[
        e2e::SSHD,
        "ssh",
        "ssh-keygen",
        "sshpass",
        "unshare",
        "useradd",
        "fail2ban-regex",
    ])
}

#[test]
fn shipped_file_takes_app_passwords_keys_and_the_account_password() {
    if !prerequisites() {
        return;
    }
    let Some(log) = AuthLog::open() else { return };
    let user = TestUser::create();
    let world = World::new();
    world.install_pam("sshd", "sshd");
    let s = &world.sandbox;
    let u = user.name.as_str();
    let sftp = s.add(u, "sshd", &["--label", "SFTP client"]);
    let imap = s.add(u, "imap", &[]);
    let key = authorize_key(&world, &user);
    let sshd = Sshd::start(&world, &[u]);
    let mut expected = Vec::new();

    // An app password for sshd, with either method, with one prompt.
    for method in METHODS {
        let ip = fresh_ip();
        let login = ssh_password(&sshd, method, u, &sftp.password, &ip);
        login.assert_in(u);
        assert_eq!(login.prompts, 1, "{method}: {}", login.stderr);
        expected.push(Expected::success(&ip, u, "sshd", sftp.id, "SFTP client"));
        assert_last_use(&world, sftp.id, &ip, "sshd", expected.len() as i64);
    }

    // The account password keeps working, still with one prompt: pam_unix in
    // common-auth takes the password pam_apppass asked for.
    let mut by_account = Vec::new();
    for method in METHODS {
        let ip = fresh_ip();
        let login = ssh_password(&sshd, method, u, &user.password, &ip);
        login.assert_in(u);
        assert_eq!(login.prompts, 1, "{method}: {}", login.stderr);
        expected.push(Expected::failure(&ip, u, "sshd", "not_app_password", None));
        by_account.push(ip);
    }

    // Keys never reach the PAM auth stack.
    let key_ip = fresh_ip();
    ssh_key(&sshd, u, &key, &key_ip).assert_in(u);

    // Refused: the imap password, a mistyped app password, a wrong account password.
    let mut refused = Vec::new();
    let ip = fresh_ip();
    ssh_password(&sshd, "password", u, &imap.password, &ip).assert_refused();
    expected.push(Expected::failure(
        &ip,
        u,
        "sshd",
        "wrong_service",
        Some(imap.id),
    ));
    refused.push(ip);
    let ip = fresh_ip();
    ssh_password(
        &sshd,
        "keyboard-interactive",
        u,
        &wrong_secret(&sftp.password),
        &ip,
    )
    .assert_refused();
    expected.push(Expected::failure(
        &ip,
        u,
        "sshd",
        "wrong_password",
        Some(sftp.id),
    ));
    refused.push(ip);
    let wrong_account = fresh_ip();
    ssh_password(&sshd, "password", u, "Not-the-password-1", &wrong_account).assert_refused();
    expected.push(Expected::failure(
        &wrong_account,
        u,
        "sshd",
        "not_app_password",
        None,
    ));

    assert_eq!(listed(&world, sftp.id)["use_count"], 2);
    assert_eq!(listed(&world, imap.id)["use_count"], 0);
    let lines = check_syslog(&log, &world, Host::Sshd, &expected);
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("pam_apppass(") && e2e::mentions_ip(l, &key_ip)),
        "a key login went through pam_apppass"
    );

    // fail2ban, migration mode (meant for this file): the refused app passwords count;
    // the account-password logins do not.
    assert_eq!(
        fail2ban_ips(&lines, "apppass[mode=migration]"),
        sorted(&refused)
    );
    // Account-password guessing is counted by the stock sshd filter, from sshd's own
    // "Failed password" lines, as README says.
    let mut all_refused = refused.clone();
    all_refused.push(wrong_account);
    let mut stock = fail2ban_ips(&lines, "sshd");
    stock.dedup();
    assert_eq!(stock, sorted(&all_refused));
}

#[test]
fn app_passwords_only() {
    if !prerequisites() {
        return;
    }
    let Some(log) = AuthLog::open() else { return };
    let user = TestUser::create();
    let world = World::new();
    world.install_pam("sshd-apppass-only", "sshd");
    let s = &world.sandbox;
    let u = user.name.as_str();
    let sftp = s.add(u, "sshd", &["--label", "Laptop"]);
    let imap = s.add(u, "imap", &[]);
    let to_revoke = s.add(u, "sshd", &[]);
    let expiring = s.add(u, "sshd", &["--expires", "1s"]);
    let expired_by = Instant::now() + Duration::from_secs(2);
    let key = authorize_key(&world, &user);
    // Not a user of this machine: sshd still runs PAM for it, with a fake password.
    let ghost = unique("apppass-nouser");
    let sshd = Sshd::start(&world, &[u, &ghost]);
    let mut expected = Vec::new();

    for method in METHODS {
        let ip = fresh_ip();
        let login = ssh_password(&sshd, method, u, &sftp.password, &ip);
        login.assert_in(u);
        assert_eq!(login.prompts, 1, "{method}: {}", login.stderr);
        expected.push(Expected::success(&ip, u, "sshd", sftp.id, "Laptop"));
        assert_last_use(&world, sftp.id, &ip, "sshd", expected.len() as i64);
    }
    let key_ip = fresh_ip();
    ssh_key(&sshd, u, &key, &key_ip).assert_in(u);

    // The account password is refused over ssh.
    let mut legitimate_looking = Vec::new();
    for method in METHODS {
        let ip = fresh_ip();
        ssh_password(&sshd, method, u, &user.password, &ip).assert_refused();
        expected.push(Expected::failure(&ip, u, "sshd", "not_app_password", None));
        legitimate_looking.push(ip);
    }
    // So are an IMAP password, a revoked and an expired one, and an unknown user.
    let ip = fresh_ip();
    ssh_password(&sshd, "password", u, &imap.password, &ip).assert_refused();
    expected.push(Expected::failure(
        &ip,
        u,
        "sshd",
        "wrong_service",
        Some(imap.id),
    ));
    assert!(
        s.apppass(&["revoke", &to_revoke.id.to_string()])
            .status
            .success()
    );
    let ip = fresh_ip();
    ssh_password(&sshd, "password", u, &to_revoke.password, &ip).assert_refused();
    expected.push(Expected::failure(
        &ip,
        u,
        "sshd",
        "revoked",
        Some(to_revoke.id),
    ));
    let now = Instant::now();
    if now < expired_by {
        std::thread::sleep(expired_by - now);
    }
    let ip = fresh_ip();
    ssh_password(&sshd, "keyboard-interactive", u, &expiring.password, &ip).assert_refused();
    expected.push(Expected::failure(
        &ip,
        u,
        "sshd",
        "expired",
        Some(expiring.id),
    ));
    let ip = fresh_ip();
    ssh_password(&sshd, "password", &ghost, &sftp.password, &ip).assert_refused();
    expected.push(Expected::failure(
        &ip,
        &ghost,
        "sshd",
        "no_app_passwords",
        None,
    ));
    legitimate_looking.push(ip);

    assert_eq!(listed(&world, sftp.id)["use_count"], 2);
    let lines = check_syslog(&log, &world, Host::Sshd, &expected);

    // fail2ban, strict mode (meant for this file): every failure counts once.
    let failures: Vec<&String> = expected
        .iter()
        .filter(|e| e.counted())
        .map(|e| &e.ip)
        .collect();
    assert_eq!(
        fail2ban_ips(&lines, "apppass[mode=strict]"),
        sorted(failures.iter().copied())
    );
    assert_eq!(
        fail2ban_ips(&lines, "apppass[mode=migration]"),
        sorted(
            failures
                .into_iter()
                .filter(|ip| !legitimate_looking.contains(ip))
        )
    );
}

#[test]
fn apppass_only_refuses_every_password_while_apppassd_is_down() {
    if !prerequisites() {
        return;
    }
    let Some(log) = AuthLog::open() else { return };
    let user = TestUser::create();
    let mut world = World::new();
    world.install_pam("sshd-apppass-only", "sshd");
    let u = user.name.as_str();
    let sftp = world.sandbox.add(u, "sshd", &[]);
    let key = authorize_key(&world, &user);
    let sshd = Sshd::start(&world, &[u]);
    world.stop_daemon();

    // Down: no password logs in, the app password included; the account password is not
    // a way around it. Keys never ask apppassd.
    let (mut by_password, mut by_kbdint) = (Vec::new(), Vec::new());
    for password in [&sftp.password, &user.password] {
        let ip = fresh_ip();
        ssh_password(&sshd, "password", u, password, &ip).assert_refused();
        by_password.push(ip);
        let ip = fresh_ip();
        ssh_password(&sshd, "keyboard-interactive", u, password, &ip).assert_refused();
        by_kbdint.push(ip);
    }
    let lines = check_unavailable(&log, &world, Host::Sshd, "sshd", 4);
    ssh_key(&sshd, u, &key, &fresh_ip()).assert_in(u);
    // The module's line has no remote host: apppass's filter counts none of these.
    for mode in ["strict", "migration"] {
        assert!(fail2ban_ips(&lines, &format!("apppass[mode={mode}]")).is_empty());
    }
    // sshd logs "Failed password" for the password method, which the stock sshd filter
    // counts; for keyboard-interactive it logs PAM's message for PAM_AUTHINFO_UNAVAIL
    // instead, which no stock filter counts.
    let sshd_lines: Vec<String> = log
        .wait_for("", 0)
        .into_iter()
        .filter(|l| {
            by_password
                .iter()
                .chain(&by_kbdint)
                .any(|ip| e2e::mentions_ip(l, ip))
        })
        .collect();
    let mut stock = fail2ban_ips(&sshd_lines, "sshd");
    stock.dedup();
    assert_eq!(stock, sorted(&by_password));
    for ip in &by_kbdint {
        let unavailable = format!(
            "error: PAM: Authentication service cannot retrieve authentication info for {u} from {ip}"
        );
        assert!(
            sshd_lines.iter().any(|l| l.ends_with(&unavailable)),
            "{unavailable}: {sshd_lines:#?}"
        );
    }

    // Back: the same sshd takes the app password again.
    world.start_daemon();
    let ip = fresh_ip();
    ssh_password(&sshd, "password", u, &sftp.password, &ip).assert_in(u);
    check_syslog(
        &log,
        &world,
        Host::Sshd,
        &[Expected::success(&ip, u, "sshd", sftp.id, "")],
    );
    assert_last_use(&world, sftp.id, &ip, "sshd", 1);
}

#[test]
fn shipped_file_takes_the_account_password_while_apppassd_is_down() {
    if !prerequisites() {
        return;
    }
    let Some(log) = AuthLog::open() else { return };
    let user = TestUser::create();
    let mut world = World::new();
    world.install_pam("sshd", "sshd");
    let u = user.name.as_str();
    let sftp = world.sandbox.add(u, "sshd", &[]);
    let key = authorize_key(&world, &user);
    let sshd = Sshd::start(&world, &[u]);
    world.stop_daemon();

    // "sufficient" ignores PAM_AUTHINFO_UNAVAIL: common-auth's pam_unix decides, with
    // the password already given (one prompt), and takes the account password only.
    for method in METHODS {
        let login = ssh_password(&sshd, method, u, &user.password, &fresh_ip());
        login.assert_in(u);
        assert_eq!(login.prompts, 1, "{method}: {}", login.stderr);
    }
    let refused = fresh_ip();
    ssh_password(&sshd, "password", u, &sftp.password, &refused).assert_refused();
    check_unavailable(&log, &world, Host::Sshd, "sshd", 3);
    ssh_key(&sshd, u, &key, &fresh_ip()).assert_in(u);

    // Back: the app password works again; nothing was recorded while it was down.
    world.start_daemon();
    assert_eq!(listed(&world, sftp.id)["use_count"], 0);
    let ip = fresh_ip();
    ssh_password(&sshd, "keyboard-interactive", u, &sftp.password, &ip).assert_in(u);
    check_syslog(
        &log,
        &world,
        Host::Sshd,
        &[Expected::success(&ip, u, "sshd", sftp.id, "")],
    );
}
