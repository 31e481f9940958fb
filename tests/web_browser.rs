//! The portal in a real browser: Debian's chromium, headless, through chromedriver, on
//! a real apppass-web and apppassd with the shipped `apppass-portal` stack. A person
//! signs in, creates a mail password (shown once; gone on reload and on back), logs in
//! with it through the real libpam, revokes it (after a confirmation) and the next
//! login fails; a label with markup is shown as text; a cross-site form is refused;
//! sign-out; a wrong password and a one-time code from pam_oath; an admin revoking
//! another user's password, who cannot look at anyone else's. Screenshots of each page
//! go to target/debug/web-screenshots/ (README shows them from docs/portal/).

#[path = "web/browser.rs"]
mod browser;
mod common;
#[path = "web/portal.rs"]
mod portal;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use browser::Browser;
use common::{is_root, require};
use pam_apppass::code::Code;
use portal::World;

fn prerequisites() -> bool {
    require(is_root(), "root (throwaway accounts, the PAM helper)")
        && require(
            browser::available(),
            "chromium and chromium-driver (Debian packages)",
        )
}

#[test]
fn sign_in_create_see_once_revoke_in_a_browser() {
    if !prerequisites() {
        return;
    }
    let w = World::start("", &portal::shipped_stack());
    let origin = format!("http://127.0.0.1:{}", w.web.port);
    let b = Browser::start();

    b.go(&format!("{origin}/"));
    b.wait_for("name=\"password\"");
    assert!(b.url().ends_with("/signin"), "{}", b.url());
    b.screenshot("signin");
    b.type_into("#user", &w.person);
    b.type_into("#password", &w.password);
    b.click("main button[type=submit]");
    b.wait_for("You have no app passwords");
    b.screenshot("passwords-empty");

    // Create, with a label that is markup.
    let label = "<script>alert(1)</script>";
    b.go(&format!("{origin}/new"));
    b.wait_for("name=\"label\"");
    b.screenshot("create");
    b.type_into("#label", label);
    b.click("main button[type=submit]");
    b.wait_for("data-copy=");
    let password = b.attribute("#secret", "data-copy").unwrap();
    assert_eq!(password.len(), 34);
    // The copy button shows only with the script, which the CSP lets run.
    assert_eq!(b.attribute("button.copy", "hidden"), None);
    b.screenshot("shown-once");
    assert_eq!(w.imap_login(&password), Code::SUCCESS);

    // Reloading, or going back, never shows it again.
    b.refresh();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!b.source().contains(&password), "shown again on reload");
    b.go(&format!("{origin}/"));
    b.wait_for("/revoke/");
    b.back();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!b.source().contains(&password), "shown again on back");

    // The label is text, not markup.
    b.go(&format!("{origin}/"));
    let src = b.wait_for("/revoke/");
    assert!(src.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(b.text("tbody").contains(label));
    assert!(src.contains("never used") || src.contains("used 1×"));
    b.screenshot("passwords");

    // A form on another site that posts to the portal: refused, nothing revoked.
    let evil = tempfile::tempdir().unwrap();
    std::fs::write(
        evil.path().join("evil.html"),
        format!(
            "<!DOCTYPE html><form method=post action=\"{origin}/revoke-all\">\
             <input type=hidden name=csrf value=guess><button id=go>Win a prize</button></form>"
        ),
    )
    .unwrap();
    let evil_port = common::free_port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &evil_port.to_string(),
        ])
        .current_dir(evil.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", evil_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "python3 -m http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Another origin: localhost, not 127.0.0.1.
    b.go(&format!("http://localhost:{evil_port}/evil.html"));
    b.click("#go");
    b.wait_for("did not come from this site");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(w.imap_login(&password), Code::SUCCESS, "still valid");

    // Revoke it, after a confirmation.
    b.go(&format!("{origin}/"));
    b.wait_for("/revoke/");
    b.click("a[href^='/revoke/']");
    b.wait_for("Revoke this app password?");
    b.screenshot("revoke-confirm");
    b.click("main button[type=submit]");
    b.wait_for("The app password is revoked.");
    b.screenshot("passwords-revoked");
    assert_ne!(w.imap_login(&password), Code::SUCCESS);

    b.go(&format!("{origin}/log"));
    b.wait_for("success");
    b.screenshot("activity");

    // Sign out: back to the sign-in form, and the session is gone.
    b.click("form.signout button");
    b.wait_for("You have signed out.");
    b.go(&format!("{origin}/"));
    b.wait_for("name=\"password\"");
}

/// A wrong password, then a second factor: pam_oath's prompt on a page of its own.
#[test]
fn a_wrong_password_then_a_one_time_code_in_a_browser() {
    if !prerequisites() {
        return;
    }
    let have_oath = std::path::Path::new("/lib/x86_64-linux-gnu/security/pam_oath.so").exists()
        && Command::new("sh")
            .args(["-c", "command -v oathtool"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !require(have_oath, "pam_oath and oathtool (libpam-oath, oathtool)") {
        return;
    }
    let users = tempfile::tempdir().unwrap();
    let file = users.path().join("users.oath");
    let stack = portal::shipped_stack().replace(
        "#auth    required   pam_oath.so usersfile=/etc/users.oath window=20",
        &format!(
            "auth     required   pam_oath.so usersfile={} window=20",
            file.display()
        ),
    );
    let w = World::start("", &stack);
    let key = common::random_hex(20);
    std::fs::write(&file, format!("HOTP/T30/6 {} - {key}\n", w.person)).unwrap();
    let origin = format!("http://127.0.0.1:{}", w.web.port);
    let b = Browser::start();

    b.go(&format!("{origin}/signin"));
    b.wait_for("name=\"password\"");
    b.type_into("#user", &w.person);
    b.type_into("#password", "not-the-password");
    b.click("main button[type=submit]");
    // `required` modules all run: the stack asks the code even after a wrong password,
    // and tells which factor failed to nobody.
    b.wait_for("One-time password");
    b.type_into("#a0", "123456");
    b.click("main button[type=submit]");
    b.wait_for("is not right");
    b.screenshot("signin-wrong");

    b.type_into("#password", &w.password);
    b.click("main button[type=submit]");
    b.wait_for("One-time password");
    b.screenshot("second-factor");
    let out = Command::new("oathtool")
        .args(["--totp", "-d", "6", &key])
        .output()
        .unwrap();
    let code = String::from_utf8(out.stdout).unwrap().trim().to_string();
    b.type_into("#a0", &code);
    b.click("main button[type=submit]");
    b.wait_for("You have no app passwords");
}

/// An admin finds another user and revokes their password; that user cannot look at
/// anyone else's.
#[test]
fn an_admin_revokes_another_users_password_in_a_browser() {
    if !prerequisites() {
        return;
    }
    let mut extra = portal::Accounts::default();
    let (admin, admin_password) = portal::admin(&mut extra);
    let w = World::start(
        &format!("admin_group = {admin}\n"),
        &portal::shipped_stack(),
    );
    let (password, _) = w.add_for_person("Laptop");
    let origin = format!("http://127.0.0.1:{}", w.web.port);

    let b = Browser::start();
    b.go(&format!("{origin}/signin"));
    b.wait_for("name=\"password\"");
    b.type_into("#user", &admin);
    b.type_into("#password", &admin_password);
    b.click("main button[type=submit]");
    b.wait_for("Find a user");
    b.type_into("#find", &w.person);
    b.click("form.find button");
    b.wait_for("Laptop");
    b.screenshot("admin");
    b.click("a[href^='/revoke/']");
    b.wait_for("Revoke this app password?");
    b.click("main button[type=submit]");
    b.wait_for("The app password is revoked.");
    assert_ne!(w.imap_login(&password), Code::SUCCESS);
    drop(b);

    // The person sees their own (revoked) password and nobody else's.
    let b = Browser::start();
    b.go(&format!("{origin}/signin"));
    b.wait_for("name=\"password\"");
    b.type_into("#user", &w.person);
    b.type_into("#password", &w.password);
    b.click("main button[type=submit]");
    let src = b.wait_for("Laptop");
    assert!(!src.contains("Find a user"));
    b.go(&format!("{origin}/?user={admin}"));
    let src = b.wait_for("You may not do that.");
    assert!(!src.contains("/revoke/"));
}
