//! OpenSSH 9.2 logging in through the shipped PAM files with a real client (ssh, driven
//! by sshpass for passwords), running a command and checking its output; then the syslog
//! lines, `apppass list` and fail2ban counts those logins produced. The servers and
//! helpers are in tests/e2e/mod.rs.

mod common;
mod e2e;
mod support;

use std::time::{Duration, Instant};

use common::{AuthLog, unique};
use e2e::{
    Expected, Host, Sshd, TestUser, World, assert_last_use, authorize_key, check_syslog,
    fail2ban_ips, fresh_ip, listed, sorted, ssh_key, ssh_password,
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
    let lines = check_syslog(&log, Host::Sshd, &expected);
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
    let lines = check_syslog(&log, Host::Sshd, &expected);

    // fail2ban, strict mode (meant for this file): every failure counts once.
    let failures: Vec<&String> = expected
        .iter()
        .filter(|e| e.reason.is_some())
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
