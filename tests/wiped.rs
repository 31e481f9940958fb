//! A new app password passes through the CLI once, on its way to the person's terminal:
//! nothing of it may stay behind in the CLI's memory when it exits (a core dump, a
//! swapped page, the next program given the same memory). The CLI is stopped by gdb at
//! its exit_group and its whole address space dumped; the password must not be in it, in
//! the human form or in `--json`, while a label sent alongside (never wiped) is, which
//! shows that the dump holds what the CLI held.

mod common;

use std::process::Command;

use common::{Sandbox, apppass_bin, require, unique};

/// Runs `apppass ARGS` under gdb, dumps its memory at exit into `core`, and returns
/// what it printed.
fn run_and_dump(s: &Sandbox, args: &[&str], core: &std::path::Path) -> String {
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-q"])
        .args(["-ex", "set pagination off"])
        .args(["-ex", "catch syscall exit_group"])
        .args(["-ex", "run"])
        .args(["-ex", &format!("gcore {}", core.display())])
        .args(["-ex", "kill"])
        .arg("--args")
        .arg(apppass_bin())
        .arg("--socket")
        .arg(&s.socket)
        .arg("--config")
        .arg(&s.conf)
        .args(args)
        .output()
        .unwrap();
    assert!(
        core.exists(),
        "gdb wrote no core: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The app password printed in `text` (groups of four, dashes between).
fn password_in(text: &str) -> String {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|w| w.len() == 34 && w.matches('-').count() == 6)
        .unwrap_or_else(|| panic!("no app password in {text}"))
        .to_string()
}

#[test]
fn no_copy_of_a_new_password_outlives_the_cli() {
    if !require(
        Command::new("gdb").arg("--version").output().is_ok(),
        "gdb (Debian package gdb)",
    ) {
        return;
    }
    let s = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    for json in [true, false] {
        let canary = unique("canary");
        let mut args = vec![
            "add",
            "--user",
            "alice",
            "--service",
            "imap",
            "--label",
            &canary,
        ];
        if json {
            args.push("--json");
        }
        let core = dir.path().join(format!("core-{json}"));
        let printed = run_and_dump(&s, &args, &core);
        let password = password_in(&printed);
        let memory = std::fs::read(&core).unwrap();
        assert!(
            contains(&memory, canary.as_bytes()),
            "the dump does not hold the label: it shows nothing"
        );
        assert!(
            !contains(&memory, password.as_bytes()),
            "the CLI's memory still holds the new password at exit (--json: {json})"
        );
        // Nor its secret part alone (the groups after the selector).
        assert!(!contains(&memory, &password.as_bytes()[10..]));
        std::fs::remove_file(&core).unwrap();
    }
}
