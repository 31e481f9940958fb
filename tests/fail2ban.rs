//! The shipped fail2ban jail, installed into a copy of the system's /etc/fail2ban, as
//! fail2ban-client reads it. The filter itself is tested with fail2ban-regex against the
//! lines real logins produced, in tests/dovecot.rs and tests/sshd.rs.

mod common;
mod e2e;

use std::path::Path;
use std::process::Command;

use common::require;

/// `fail2ban-client -c DIR -d`: the commands the server would get, one per line.
fn dump(config: &Path) -> String {
    let out = Command::new("fail2ban-client")
        .arg("-c")
        .arg(config)
        .arg("-d")
        .output()
        .expect("fail2ban-client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn jail_example_loads_with_the_filter_in_either_mode() {
    let present = e2e::find_program("fail2ban-client").is_some()
        && Path::new("/etc/fail2ban/jail.conf").exists();
    if !require(present, "fail2ban (fail2ban-client, /etc/fail2ban)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fail2ban");
    let cp = Command::new("cp")
        .arg("-a")
        .arg("/etc/fail2ban")
        .arg(&config)
        .status()
        .unwrap();
    assert!(cp.success());
    let shipped = e2e::repo().join("fail2ban");
    for file in ["filter.d/apppass.conf", "jail.d/apppass.conf"] {
        std::fs::copy(shipped.join(file), config.join(file)).unwrap();
    }

    let test = Command::new("fail2ban-client")
        .arg("-c")
        .arg(&config)
        .arg("--test")
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    let strict = dump(&config);
    let jail: Vec<&str> = strict.lines().filter(|l| l.contains("'apppass'")).collect();
    assert!(jail.contains(&"['add', 'apppass', 'auto']"), "{jail:#?}");
    assert!(
        jail.iter()
            .any(|l| l.contains("'addlogpath', '/var/log/auth.log'")),
        "{jail:#?}"
    );
    // A banned host is shut out of every service the module guards: IMAP, POP3,
    // submission (Dovecot's or Postfix's), Postfix's SMTP AUTH on port 25, ssh.
    let ports = jail
        .iter()
        .find_map(|l| {
            let start = l.find("['port', '")? + "['port', '".len();
            l[start..].split('\'').next()
        })
        .unwrap_or_else(|| panic!("no port in {jail:#?}"));
    let ports: Vec<&str> = ports.split(',').collect();
    for port in [
        "imap",
        "imaps",
        "pop3",
        "pop3s",
        "submission",
        "submissions",
        "smtp",
        "ssh",
    ] {
        assert!(ports.contains(&port), "{port} not in {ports:?}");
    }
    let failregex = |jail: &[&str]| {
        jail.iter()
            .find(|l| l.contains("'addfailregex'"))
            .map(|l| l.to_string())
            .unwrap_or_default()
    };
    // Strict mode: every reason but a revoked password's (a stale device, no guess).
    assert!(
        failregex(&jail).contains("reason=(?!revoked(?:\\\\s|$))\\\\S+"),
        "{jail:#?}"
    );

    // Choosing migration mode the way README says, in a .local file.
    std::fs::write(
        config.join("jail.d/apppass.local"),
        "[apppass]\nfilter = apppass[mode=migration]\n",
    )
    .unwrap();
    let migration = dump(&config);
    let jail: Vec<&str> = migration
        .lines()
        .filter(|l| l.contains("'apppass'"))
        .collect();
    let re = failregex(&jail);
    assert!(
        re.contains("not_app_password")
            && re.contains("no_app_passwords")
            && re.contains("revoked"),
        "{re}"
    );
}
