//! Dovecot 2.3 (IMAP, POP3, submission) logging in through the shipped PAM files with
//! real clients (curl), with the test's apppassd running and stopped, then the syslog
//! lines (apppassd's, the module's, Dovecot's), `apppass list` and fail2ban counts those
//! logins produced. The servers and helpers are in tests/e2e/mod.rs.

mod common;
mod e2e;
mod support;

use std::time::{Duration, Instant};

use common::AuthLog;
use e2e::{
    Dovecot, DovecotSetup, Expected, Host, Mail, TestUser, World, assert_last_use, check_syslog,
    check_unavailable, fail2ban_ips, fresh_ip, listed, mail_login, sorted,
};
use support::wrong_secret;

fn prerequisites() -> bool {
    e2e::have(&[
        e2e::DOVECOT,
        "doveadm",
        "curl",
        "unshare",
        "useradd",
        "fail2ban-regex",
    ])
}

/// One login from an address of its own; returns the address.
fn login(d: &Dovecot, proto: Mail, user: &str, password: &str, accepted: bool) -> String {
    let ip = fresh_ip();
    let attempt = mail_login(d, proto, user, password, &ip);
    if accepted {
        attempt.assert_in(proto);
    } else {
        attempt.assert_refused(proto);
    }
    ip
}

/// Waits until `deadline` has passed: an app password made with `--expires 1s` has then
/// expired whatever the rounding of its creation time.
fn until(deadline: Instant) {
    let now = Instant::now();
    if now < deadline {
        std::thread::sleep(deadline - now);
    }
}

#[test]
fn app_passwords_only() {
    if !prerequisites() {
        return;
    }
    let Some(log) = AuthLog::open() else { return };
    let submission = e2e::have_submission();
    let user = TestUser::create();
    let world = World::new();
    for name in ["imap", "pop3", "submission"] {
        world.install_pam("dovecot-apppass-only", name);
    }
    let s = &world.sandbox;
    let u = user.name.as_str();
    let imap = s.add(u, "imap", &["--label", "Thunderbird"]);
    let pop3 = s.add(u, "pop3", &["--label", "Phone"]);
    let sub = s.add(u, "submission", &[]);
    let ssh = s.add(u, "sshd", &[]);
    let to_revoke = s.add(u, "imap", &["--label", "Old laptop"]);
    let expiring = s.add(u, "imap", &["--expires", "1s"]);
    let expired_by = Instant::now() + Duration::from_secs(2);
    let d = Dovecot::start(&world, &DovecotSetup::default());
    let mut expected = Vec::new();

    // The right app password, each for its own protocol, in any spelling.
    let ip = login(&d, Mail::Imap, u, &imap.password, true);
    expected.push(Expected::success(&ip, u, "imap", imap.id, "Thunderbird"));
    assert_last_use(&world, imap.id, &ip, "imap", 1);
    let spoken = imap.password.to_uppercase().replace('-', " ");
    let ip = login(&d, Mail::Imap, u, &spoken, true);
    expected.push(Expected::success(&ip, u, "imap", imap.id, "Thunderbird"));
    assert_last_use(&world, imap.id, &ip, "imap", 2);
    let ip = login(&d, Mail::Pop3, u, &pop3.password, true);
    expected.push(Expected::success(&ip, u, "pop3", pop3.id, "Phone"));
    assert_last_use(&world, pop3.id, &ip, "pop3", 1);
    if submission {
        let ip = login(&d, Mail::Submission, u, &sub.password, true);
        expected.push(Expected::success(&ip, u, "submission", sub.id, ""));
        assert_last_use(&world, sub.id, &ip, "submission", 1);
    }

    // A wrong one.
    let ip = login(&d, Mail::Imap, u, &wrong_secret(&imap.password), false);
    expected.push(Expected::failure(
        &ip,
        u,
        "imap",
        "wrong_password",
        Some(imap.id),
    ));

    // Another service's: the imap password on POP3 and submission, the ssh one on IMAP.
    let ip = login(&d, Mail::Pop3, u, &imap.password, false);
    expected.push(Expected::failure(
        &ip,
        u,
        "pop3",
        "wrong_service",
        Some(imap.id),
    ));
    if submission {
        let ip = login(&d, Mail::Submission, u, &imap.password, false);
        expected.push(Expected::failure(
            &ip,
            u,
            "submission",
            "wrong_service",
            Some(imap.id),
        ));
    }
    let ip = login(&d, Mail::Imap, u, &ssh.password, false);
    expected.push(Expected::failure(
        &ip,
        u,
        "imap",
        "wrong_service",
        Some(ssh.id),
    ));

    // Revoked: refused at once (the auth cache is off).
    let ip = login(&d, Mail::Imap, u, &to_revoke.password, true);
    expected.push(Expected::success(
        &ip,
        u,
        "imap",
        to_revoke.id,
        "Old laptop",
    ));
    let out = s.apppass(&["revoke", &to_revoke.id.to_string()]);
    assert!(out.status.success());
    let ip = login(&d, Mail::Imap, u, &to_revoke.password, false);
    expected.push(Expected::failure(
        &ip,
        u,
        "imap",
        "revoked",
        Some(to_revoke.id),
    ));

    // Expired.
    until(expired_by);
    let ip = login(&d, Mail::Imap, u, &expiring.password, false);
    expected.push(Expected::failure(
        &ip,
        u,
        "imap",
        "expired",
        Some(expiring.id),
    ));
    assert_eq!(listed(&world, expiring.id)["status"], "expired");
    assert_eq!(listed(&world, expiring.id)["use_count"], 0);

    // The account password is not for mail here.
    let mut account_ips = Vec::new();
    for proto in [Mail::Imap, Mail::Pop3] {
        let ip = login(&d, proto, u, &user.password, false);
        expected.push(Expected::failure(
            &ip,
            u,
            proto.service(),
            "not_app_password",
            None,
        ));
        account_ips.push(ip);
    }
    assert_eq!(listed(&world, imap.id)["use_count"], 2);
    assert_eq!(listed(&world, ssh.id)["use_count"], 0);

    let lines = check_syslog(&log, &world, Host::Dovecot, &expected);

    // fail2ban, strict mode (meant for this stack): every failure counts once.
    let failures: Vec<&String> = expected
        .iter()
        .filter(|e| e.counted())
        .map(|e| &e.ip)
        .collect();
    assert_eq!(
        fail2ban_ips(&lines, "apppass[mode=strict]"),
        sorted(failures.iter().copied())
    );
    // Migration mode does not count the account password.
    assert_eq!(
        fail2ban_ips(&lines, "apppass[mode=migration]"),
        sorted(failures.into_iter().filter(|ip| !account_ips.contains(ip)))
    );
}

#[test]
fn migration_accepts_the_account_password_too() {
    if !prerequisites() {
        return;
    }
    let Some(log) = AuthLog::open() else { return };
    let submission = e2e::have_submission();
    let user = TestUser::create();
    let newcomer = TestUser::create();
    let world = World::new();
    for name in ["imap", "pop3", "submission"] {
        world.install_pam("dovecot-migration", name);
    }
    let s = &world.sandbox;
    let u = user.name.as_str();
    let imap = s.add(u, "imap", &["--label", "Thunderbird"]);
    let to_revoke = s.add(u, "imap", &[]);
    let d = Dovecot::start(&world, &DovecotSetup::default());
    let mut expected = Vec::new();
    // Logins that succeed through pam_unix after pam_apppass said no.
    let mut by_account = Vec::new();

    // The account password still works everywhere, for users with app passwords and for
    // those without any.
    let mut protos = vec![Mail::Imap, Mail::Pop3];
    if submission {
        protos.push(Mail::Submission);
    }
    for proto in protos {
        let ip = login(&d, proto, u, &user.password, true);
        expected.push(Expected::failure(
            &ip,
            u,
            proto.service(),
            "not_app_password",
            None,
        ));
        by_account.push(ip);
    }
    let n = newcomer.name.as_str();
    let ip = login(&d, Mail::Imap, n, &newcomer.password, true);
    expected.push(Expected::failure(&ip, n, "imap", "no_app_passwords", None));
    by_account.push(ip);

    // So does an app password, for its own protocol only.
    let ip = login(&d, Mail::Imap, u, &imap.password, true);
    expected.push(Expected::success(&ip, u, "imap", imap.id, "Thunderbird"));
    assert_last_use(&world, imap.id, &ip, "imap", 1);
    let mut refused = Vec::new();
    let ip = login(&d, Mail::Pop3, u, &imap.password, false);
    expected.push(Expected::failure(
        &ip,
        u,
        "pop3",
        "wrong_service",
        Some(imap.id),
    ));
    refused.push(ip);

    // A revoked app password is refused by both modules.
    assert!(
        s.apppass(&["revoke", &to_revoke.id.to_string()])
            .status
            .success()
    );
    // Our filter counts it in neither mode (the right password, from a stale device);
    // the stock ones below do, as pam_unix refuses it too.
    let ip = login(&d, Mail::Imap, u, &to_revoke.password, false);
    expected.push(Expected::failure(
        &ip,
        u,
        "imap",
        "revoked",
        Some(to_revoke.id),
    ));
    let revoked = ip.clone();
    refused.push(ip);

    // A wrong account password.
    let wrong_account = login(&d, Mail::Imap, u, "Not-the-password-1", false);
    expected.push(Expected::failure(
        &wrong_account,
        u,
        "imap",
        "not_app_password",
        None,
    ));

    let lines = check_syslog(&log, &world, Host::Dovecot, &expected);

    // Migration mode counts the refused app passwords and none of the account-password
    // logins; strict mode would count the legitimate ones too (why the mode exists).
    assert_eq!(
        fail2ban_ips(&lines, "apppass[mode=migration]"),
        sorted(refused.iter().filter(|ip| **ip != revoked))
    );
    let all_failures: Vec<&String> = expected
        .iter()
        .filter(|e| e.counted())
        .map(|e| &e.ip)
        .collect();
    assert_eq!(
        fail2ban_ips(&lines, "apppass[mode=strict]"),
        sorted(all_failures)
    );
    // What README promises for account-password guessing in this mode: pam_unix's own
    // failure line (stock pam-generic filter) and Dovecot's "auth failed" line (stock
    // dovecot filter, on Dovecot's log) count every refused login, never an accepted one.
    let mut refused_any = refused.clone();
    refused_any.push(wrong_account);
    let refused_any = sorted(&refused_any);
    let mut generic = fail2ban_ips(&lines, "pam-generic");
    generic.dedup();
    assert_eq!(generic, refused_any);
    let mut stock = fail2ban_ips(&dovecot_log(&d), "dovecot");
    stock.dedup();
    assert_eq!(stock, refused_any);
}

#[test]
fn auth_cache_keeps_a_revoked_password_until_flushed() {
    if !prerequisites() {
        return;
    }
    let Some(log) = AuthLog::open() else { return };
    let user = TestUser::create();
    let world = World::new();
    for name in ["imap", "pop3"] {
        world.install_pam("dovecot-apppass-only", name);
    }
    let s = &world.sandbox;
    let u = user.name.as_str();

    // With the cache key README recommends: the user and the service.
    let pw = s.add(u, "imap", &[]);
    let d = Dovecot::start(
        &world,
        &DovecotSetup {
            passdb_args: "cache_key=%u%s %s",
            auth_cache_size: "1M",
            ..DovecotSetup::default()
        },
    );
    let first = login(&d, Mail::Imap, u, &pw.password, true);
    assert!(s.apppass(&["revoke", &pw.id.to_string()]).status.success());
    // Revoked, yet accepted from Dovecot's cache, without asking PAM.
    let cached = login(&d, Mail::Imap, u, &pw.password, true);
    // The cache key holds the service, so POP3 asks PAM, which refuses.
    let pop3 = login(&d, Mail::Pop3, u, &pw.password, false);
    let flushed = d.flush_auth_cache(u);
    assert!(flushed.contains("cache entries flushed"), "{flushed}");
    let after_flush = login(&d, Mail::Imap, u, &pw.password, false);
    check_syslog(
        &log,
        &world,
        Host::Dovecot,
        &[
            Expected::success(&first, u, "imap", pw.id, ""),
            Expected::failure(&pop3, u, "pop3", "revoked", Some(pw.id)),
            Expected::failure(&after_flush, u, "imap", "revoked", Some(pw.id)),
        ],
    );
    // The lines above are in order, so by now the cached login would have logged.
    assert!(log.wait_for(&format!("rhost={cached} "), 0).is_empty());
    assert_eq!(listed(&world, pw.id)["use_count"], 1);
    drop(d);

    // Without the service in the cache key, a cached IMAP password opens POP3: README
    // warns about exactly this.
    let pw = s.add(u, "imap", &[]);
    let d = Dovecot::start(
        &world,
        &DovecotSetup {
            passdb_args: "cache_key=%u %s",
            auth_cache_size: "1M",
            ..DovecotSetup::default()
        },
    );
    login(&d, Mail::Imap, u, &pw.password, true);
    login(&d, Mail::Pop3, u, &pw.password, true);
    assert_eq!(listed(&world, pw.id)["use_count"], 1);
}

/// Dovecot's own log, as lines for fail2ban's stock dovecot filter.
fn dovecot_log(d: &Dovecot) -> Vec<String> {
    std::fs::read_to_string(&d.log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn apppass_only_refuses_every_password_while_apppassd_is_down() {
    if !prerequisites() {
        return;
    }
    let Some(log) = AuthLog::open() else { return };
    let user = TestUser::create();
    let mut world = World::new();
    for name in ["imap", "pop3"] {
        world.install_pam("dovecot-apppass-only", name);
    }
    let u = user.name.as_str();
    let imap = world.sandbox.add(u, "imap", &[]);
    let d = Dovecot::start(&world, &DovecotSetup::default());
    let before = login(&d, Mail::Imap, u, &imap.password, true);

    // Down: the right app password and the account password are both refused, as a
    // wrong password is ("NO [AUTHENTICATIONFAILED]": Dovecot does not tell the client
    // that the service is unavailable), and nothing falls back to the account password.
    world.stop_daemon();
    let mut refused = vec![
        login(&d, Mail::Imap, u, &imap.password, false),
        login(&d, Mail::Imap, u, &user.password, false),
    ];
    check_unavailable(&log, &world, Host::Dovecot, "imap", 2);
    refused.push(login(&d, Mail::Pop3, u, &user.password, false));
    let lines = check_unavailable(&log, &world, Host::Dovecot, "pop3", 1);
    // The module's line has no remote host: apppass's filter counts none of these;
    // Dovecot's own "auth failed" line (the stock dovecot filter) counts each.
    for mode in ["strict", "migration"] {
        assert!(fail2ban_ips(&lines, &format!("apppass[mode={mode}]")).is_empty());
    }
    let mut stock = fail2ban_ips(&dovecot_log(&d), "dovecot");
    stock.dedup();
    assert_eq!(stock, sorted(&refused));

    // Back: the same Dovecot logs in again at once.
    world.start_daemon();
    let after = login(&d, Mail::Imap, u, &imap.password, true);
    check_syslog(
        &log,
        &world,
        Host::Dovecot,
        &[Expected::success(&after, u, "imap", imap.id, "")],
    );
    assert_eq!(listed(&world, imap.id)["use_count"], 2);
    assert_eq!(listed(&world, imap.id)["last_rhost"], after.as_str());
    assert_ne!(before, after);
}

#[test]
fn migration_takes_the_account_password_while_apppassd_is_down() {
    if !prerequisites() {
        return;
    }
    let Some(log) = AuthLog::open() else { return };
    let submission = e2e::have_submission();
    let user = TestUser::create();
    let mut world = World::new();
    for name in ["imap", "pop3", "submission"] {
        world.install_pam("dovecot-migration", name);
    }
    let u = user.name.as_str();
    let imap = world.sandbox.add(u, "imap", &[]);
    let d = Dovecot::start(&world, &DovecotSetup::default());
    world.stop_daemon();

    // "sufficient" ignores PAM_AUTHINFO_UNAVAIL: pam_unix decides, and takes the account
    // password only.
    let mut protos = vec![Mail::Imap, Mail::Pop3];
    if submission {
        protos.push(Mail::Submission);
    }
    for &proto in &protos {
        login(&d, proto, u, &user.password, true);
        check_unavailable(&log, &world, Host::Dovecot, proto.service(), 1);
    }
    let refused = vec![
        login(&d, Mail::Imap, u, &imap.password, false),
        login(&d, Mail::Imap, u, "Not-the-password-1", false),
    ];
    let lines = check_unavailable(&log, &world, Host::Dovecot, "imap", 3);
    for mode in ["strict", "migration"] {
        assert!(fail2ban_ips(&lines, &format!("apppass[mode={mode}]")).is_empty());
    }
    let mut stock = fail2ban_ips(&dovecot_log(&d), "dovecot");
    stock.dedup();
    assert_eq!(stock, sorted(&refused));

    // Back: nothing was recorded while it was down, and the app password works again.
    world.start_daemon();
    assert_eq!(listed(&world, imap.id)["use_count"], 0);
    let ip = login(&d, Mail::Imap, u, &imap.password, true);
    check_syslog(
        &log,
        &world,
        Host::Dovecot,
        &[Expected::success(&ip, u, "imap", imap.id, "")],
    );
}
