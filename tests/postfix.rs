//! Postfix 3.7 taking SMTP AUTH through Dovecot's SASL socket, with a real client
//! (python3's smtplib), through the shipped PAM file; then the syslog lines, `apppass
//! list` and fail2ban counts those logins produced. The servers and helpers are in
//! tests/e2e/mod.rs.
//!
//! Postfix names the service it authenticates for "smtp" (its smtpd_sasl_service), and
//! Dovecot, with passdb args = %s, passes that name to PAM: the scope of an app password
//! for Postfix's SMTP AUTH is "smtp", its PAM file /etc/pam.d/smtp.

mod common;
mod e2e;
mod support;

use common::AuthLog;
use e2e::{
    Dovecot, DovecotSetup, Expected, Host, Postfix, TestUser, World, assert_last_use, check_syslog,
    check_unavailable, fail2ban_ips, fresh_ip, listed, smtp_login, sorted,
};
use support::wrong_secret;

fn prerequisites() -> bool {
    e2e::have(&[
        e2e::POSTFIX,
        e2e::DOVECOT,
        e2e::PYTHON3,
        "unshare",
        "useradd",
        "fail2ban-regex",
    ])
}

/// The user Postfix's smtpd runs as (mail_owner), for whom Dovecot makes the socket.
const MAIL_OWNER: &str = "postfix";

#[test]
fn smtp_auth_through_dovecot_takes_app_passwords_for_smtp() {
    if !prerequisites() {
        return;
    }
    let Some(log) = AuthLog::open() else { return };
    let user = TestUser::create();
    let mut world = World::new();
    world.install_pam("dovecot-apppass-only", "smtp");
    let s = &world.sandbox;
    let u = user.name.as_str();
    let smtp = s.add(u, "smtp", &["--label", "Phone"]);
    let imap = s.add(u, "imap", &[]);
    let submission = s.add(u, "submission", &[]);
    let d = Dovecot::start(
        &world,
        &DovecotSetup {
            sasl_for: Some(MAIL_OWNER),
            ..DovecotSetup::default()
        },
    );
    let p = Postfix::start(&world, &d);
    let mut expected = Vec::new();

    // The right app password, with either mechanism: logged in, so it may relay.
    for (n, mech) in ["PLAIN", "LOGIN"].into_iter().enumerate() {
        let ip = fresh_ip();
        smtp_login(&p, mech, u, &smtp.password, &ip).assert_in();
        expected.push(Expected::success(&ip, u, "smtp", smtp.id, "Phone"));
        assert_last_use(&world, smtp.id, &ip, "smtp", n as i64 + 1);
    }

    // Refused, and so not allowed to relay: a wrong one, another scope's (Dovecot's own
    // submission service is another scope), the account password.
    let ip = fresh_ip();
    smtp_login(&p, "PLAIN", u, &wrong_secret(&smtp.password), &ip).assert_refused();
    expected.push(Expected::failure(
        &ip,
        u,
        "smtp",
        "wrong_password",
        Some(smtp.id),
    ));
    for other in [&imap, &submission] {
        let ip = fresh_ip();
        smtp_login(&p, "LOGIN", u, &other.password, &ip).assert_refused();
        expected.push(Expected::failure(
            &ip,
            u,
            "smtp",
            "wrong_service",
            Some(other.id),
        ));
    }
    let ip = fresh_ip();
    smtp_login(&p, "PLAIN", u, &user.password, &ip).assert_refused();
    expected.push(Expected::failure(&ip, u, "smtp", "not_app_password", None));
    assert_eq!(listed(&world, smtp.id)["use_count"], 2);
    assert_eq!(listed(&world, imap.id)["use_count"], 0);
    assert_eq!(listed(&world, submission.id)["use_count"], 0);

    // Postfix passed the client's address on: apppassd logged it, so fail2ban bans it.
    let lines = check_syslog(&log, &world, Host::Dovecot, &expected);
    let failures: Vec<&String> = expected
        .iter()
        .filter(|e| e.counted())
        .map(|e| &e.ip)
        .collect();
    assert_eq!(
        fail2ban_ips(&lines, "apppass[mode=strict]"),
        sorted(failures.iter().copied())
    );
    let postfix_log = std::fs::read_to_string(&p.log).unwrap();
    assert!(
        postfix_log.contains(&format!("sasl_method=PLAIN, sasl_username={u}"))
            && postfix_log.contains(&format!("sasl_method=LOGIN, sasl_username={u}")),
        "{postfix_log}"
    );

    // apppassd down: every password is refused (this file has no fallback).
    world.stop_daemon();
    let ip = fresh_ip();
    smtp_login(&p, "PLAIN", u, &smtp.password, &ip).assert_refused();
    let ip = fresh_ip();
    smtp_login(&p, "PLAIN", u, &user.password, &ip).assert_refused();
    check_unavailable(&log, &world, Host::Dovecot, "smtp", 2);
    world.start_daemon();
    let ip = fresh_ip();
    smtp_login(&p, "PLAIN", u, &smtp.password, &ip).assert_in();
    assert_last_use(&world, smtp.id, &ip, "smtp", 3);
}
