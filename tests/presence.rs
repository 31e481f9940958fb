//! A credential needs the person, not just their session: throwaway users (setpriv) run
//! the real CLI against a real apppassd (as root), which runs the shipped `apppass` PAM
//! stack in the built apppass-pam-helper through the real libpam and pam_unix, and
//! relays its prompts. Without the account password nothing is made; an expired or
//! missing account password is told what to do; a second factor's prompt reaches the
//! person at their terminal (a pty), and a script's `--password-stdin` is refused for
//! it; admins prove themselves too and make no `*` password and none for root or other
//! admins; an app password never proves a person; failed proofs are throttled.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use apppass_proto::{AddRequest, Client, PromptStyle, Request, Response, Secret};
use common::people::{Accounts, World, password_of, run_ok};
use common::{is_root, require};
use pam_apppass::code::Code;

/// Set (to apppassd's socket) when this program runs again as a user, as a raw client.
const ROLE_SOCKET: &str = "APPPASS_PRESENCE_SOCKET";
const ROLE_PASSWORD: &str = "APPPASS_PRESENCE_PASSWORD";

fn prerequisites() -> bool {
    require(is_root(), "root (throwaway users, apppassd as root)")
        && require(
            Command::new("setpriv").arg("--version").output().is_ok(),
            "setpriv (util-linux)",
        )
        && require(
            common::workspace_bin("apppass-pam-helper").exists(),
            "target/*/apppass-pam-helper (cargo build --workspace --bins)",
        )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn count(w: &World, user: &str) -> usize {
    let out = w.apppass(None, &["list", "--user", user, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().len()
}

/// `apppass add --service mail --json --password-stdin` as `user`, with `stdin`.
fn add_with(w: &World, user: &str, stdin: &str, extra: &[&str]) -> Output {
    let mut args = vec!["add", "--service", "mail", "--json", "--password-stdin"];
    args.extend_from_slice(extra);
    w.apppass_with(Some(user), &args, stdin)
}

fn add_request() -> Request {
    Request::Add(AddRequest {
        user: None,
        service: "mail".into(),
        label: "raw".into(),
        expires: None,
        from: None,
    })
}

/// The raw client's role: what apppassd answers a process of the user that asks for a
/// credential without proof, with one, and twice with one.
#[test]
fn raw_client_role() {
    let (Some(socket), Some(password)) = (
        std::env::var_os(ROLE_SOCKET),
        std::env::var_os(ROLE_PASSWORD),
    ) else {
        return;
    };
    let connect = || Client::connect(socket.as_ref(), std::time::Duration::from_secs(20), &[0]);
    let kind = |r: Response| match r {
        Response::Error { kind, .. } => kind.as_str().to_string(),
        Response::Added(_) => "added".into(),
        Response::Proved => "proved".into(),
        other => format!("{other:?}"),
    };
    let mut c = connect().unwrap();
    println!("unproved add: {}", kind(c.call(&add_request()).unwrap()));
    let mut c = connect().unwrap();
    let Response::Conversation(prompts) = c.call(&Request::Prove).unwrap() else {
        panic!("no conversation")
    };
    assert_eq!(prompts[0].style, PromptStyle::EchoOff);
    let answers = vec![Secret::new(password.as_encoded_bytes())];
    println!(
        "prove: {}",
        kind(c.call(&Request::Answer { answers }).unwrap())
    );
    println!("proved add: {}", kind(c.call(&add_request()).unwrap()));
    println!("second add: {}", kind(c.call(&add_request()).unwrap()));
    // Answers on a connection that asked nothing are a protocol error.
    let mut c = connect().unwrap();
    let stray = c.call(&Request::Answer { answers: vec![] });
    println!(
        "stray answer: {}",
        match stray {
            Ok(r) => kind(r),
            Err(e) => format!("closed ({e})"),
        }
    );
}

#[test]
fn making_a_credential_needs_the_account_password() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create("apr", 2, 0);
    let (alice, bob) = (acc.users[0].as_str(), acc.users[1].as_str());
    let w = World::new("", &["imap"]);

    // The right account password on standard input: made, and it logs in.
    let out = add_with(&w, alice, &format!("{}\n", password_of(alice)), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let code = common::login_in(
        &w.confdir,
        "imap",
        alice,
        added["password"].as_str().unwrap().as_bytes(),
        Some("192.0.2.9"),
    )
    .code;
    assert_eq!(code, Code::SUCCESS);

    // A wrong one: refused (4), nothing made, and the log says so without the password.
    let out = add_with(&w, alice, "not-her-password\n", &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("that did not prove who you are"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count(&w, alice), 1);
    let failures = w
        .daemon
        .log_lines(&["proof of presence through apppass: failure", alice], 1);
    assert_eq!(failures.len(), 1, "{}", w.daemon.log());
    assert!(!w.daemon.log().contains("not-her-password"));

    // No terminal and no --password-stdin: told how, nothing made.
    let out = w.apppass_with(Some(alice), &["add", "--service", "mail"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--password-stdin"),
        "{}",
        stderr(&out)
    );
    // --password-stdin with nothing on it.
    assert_eq!(add_with(&w, alice, "", &[]).status.code(), Some(2));
    assert_eq!(count(&w, alice), 1);

    // Only root skips the proof.
    let out = w.apppass_with(None, &["add", "--service", "mail", "--user", alice], "");
    assert!(out.status.success(), "{}", stderr(&out));

    // A raw client of bob's: no credential without proof, one per proof, and answers
    // out of turn end the connection.
    let exe = w.dir.path().join("presence-role");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let role = common::as_user(Some(bob))
        .arg(&exe)
        .args([
            "raw_client_role",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_SOCKET, &w.daemon.socket)
        .env(ROLE_PASSWORD, password_of(bob))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&role.stdout);
    assert!(role.status.success(), "{said}{}", stderr(&role));
    for line in [
        "unproved add: reauthenticate",
        "prove: proved",
        "proved add: added",
        "second add: reauthenticate",
        "stray answer: bad_request",
    ] {
        assert!(said.contains(line), "no {line:?} in {said}");
    }
    assert_eq!(count(&w, bob), 1);

    // Five failures in a row: the sixth attempt is refused unasked, even with the right
    // password, for this user only.
    for _ in 0..4 {
        assert_eq!(add_with(&w, alice, "wrong\n", &[]).status.code(), Some(4));
    }
    let out = add_with(&w, alice, &format!("{}\n", password_of(alice)), &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("too many failed attempts"),
        "{}",
        stderr(&out)
    );
    let out = add_with(&w, bob, &format!("{}\n", password_of(bob)), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_expired_or_missing_account_password_is_told_what_to_do() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create("apx", 3, 0);
    let (expired, locked, empty) = (
        acc.users[0].as_str(),
        acc.users[1].as_str(),
        acc.users[2].as_str(),
    );
    run_ok(Command::new("chage").args(["-d", "0", expired]));
    run_ok(Command::new("usermod").args(["-L", locked]));
    run_ok(Command::new("passwd").args(["-d", empty]));
    let w = World::new("", &[]);
    let out = add_with(&w, expired, &format!("{}\n", password_of(expired)), &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("your account password has expired: change it first"),
        "{}",
        stderr(&out)
    );
    for user in [locked, empty] {
        let out = add_with(&w, user, "anything\n", &[]);
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("ask an admin to make the app password for you"),
            "{user}: {}",
            stderr(&out)
        );
        assert_eq!(count(&w, user), 0);
    }
}

/// Whether python3 is there to drive a pty ([`at_terminal`]).
fn has_pty_driver() -> bool {
    require(
        Command::new("python3").arg("--version").output().is_ok(),
        "python3 (for a pty)",
    )
}

/// Runs `command` (its program, arguments and environment) on a pty, answering each
/// prompt that ends in ": " with the next of `answers` (python3's pty: the CLI finds its
/// terminal at /dev/tty). What the terminal showed, and the exit status.
fn at_terminal(command: &Command, answers: &[&str]) -> (String, i32) {
    const DRIVER: &str = r#"
import os, pty, sys, select, time
answers = sys.stdin.read().split("\n")[:-1]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
shown = b""
seen = 0
deadline = time.time() + 60
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    if answers and shown.rstrip(b" ").endswith(b":") and len(shown) > seen:
        seen = len(shown)
        os.write(fd, answers.pop(0).encode() + b"\n")
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let mut driver = Command::new("python3");
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => driver.env(key, value),
            None => driver.env_remove(key),
        };
    }
    let mut child = driver
        .arg("-c")
        .arg(DRIVER)
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for a in answers {
        input.push_str(a);
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// The next HOTP code of `key` (hex) at `counter`.
fn hotp(key: &str, counter: u32) -> String {
    let out = run_ok(Command::new("oathtool").args(["--hotp", "-c", &counter.to_string(), key]));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_second_factor_is_asked_at_the_terminal() {
    if !prerequisites()
        || !require(
            std::path::Path::new("/lib/x86_64-linux-gnu/security/pam_oath.so").exists()
                && Command::new("oathtool").arg("--version").output().is_ok(),
            "pam_oath and oathtool (Debian packages libpam-oath, oathtool)",
        )
        || !has_pty_driver()
    {
        return;
    }
    let acc = Accounts::create("apo", 1, 0);
    let alice = acc.users[0].as_str();
    let w = World::new("", &[]);
    // The shipped stack with its second-factor slot filled in with pam_oath.
    const KEY: &str = "3132333435363738393031323334353637383930";
    let users = w.dir.path().join("users.oath");
    std::fs::write(&users, format!("HOTP {alice} - {KEY}\n")).unwrap();
    let stack = common::people::shipped_stack().replace(
        "#auth    required   pam_oath.so usersfile=/etc/users.oath window=20",
        &format!(
            "auth     required   pam_oath.so usersfile={} window=5",
            users.display()
        ),
    );
    assert!(stack.contains("pam_oath.so usersfile="), "{stack}");
    std::fs::write(w.confdir.join("apppass"), stack).unwrap();

    // A script cannot answer a second prompt: told to use a terminal, nothing made.
    let out = add_with(&w, alice, &format!("{}\n", password_of(alice)), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("asks more than the account password"),
        "{}",
        stderr(&out)
    );

    // At a terminal: the password (not echoed), then the one-time code.
    let add = w.apppass_command(
        Some(alice),
        &["add", "--service", "mail", "--label", "phone"],
    );
    let password = password_of(alice);
    let (shown, code) = at_terminal(&add, &[&password, &hotp(KEY, 1)]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("Password:"), "{shown}");
    assert!(shown.contains("One-time password"), "{shown}");
    assert!(shown.contains("New app password for"), "{shown}");
    assert!(
        !shown.contains(&password),
        "the account password was echoed: {shown}"
    );
    // A wrong code: nothing made.
    let (shown, code) = at_terminal(&add, &[&password, "000000"]);
    assert_eq!(code, 4, "{shown}");
    assert_eq!(count(&w, alice), 1);
}

#[test]
fn ctrl_c_at_the_password_prompt_gives_the_terminal_back() {
    if !prerequisites() || !has_pty_driver() {
        return;
    }
    let acc = Accounts::create("apc", 1, 0);
    let alice = acc.users[0].as_str();
    let w = World::new("", &[]);
    // dash restores no terminal after its job dies, so what stty sees is apppass's doing.
    // The trap keeps the shell alive past Ctrl-C; apppass itself gets SIGINT's default.
    let add = w.apppass_command(Some(alice), &["add", "--service", "mail"]);
    let mut sh = Command::new("/bin/sh");
    sh.args([
        "-c",
        "trap : INT; \"$@\"; echo \"status=$?\"; stty -a",
        "sh",
    ])
    .arg(add.get_program())
    .args(add.get_args())
    .envs(add.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let (shown, code) = at_terminal(&sh, &["\u{3}"]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("Password:"), "{shown}");
    assert!(
        shown.contains("status=130"),
        "apppass did not die of SIGINT: {shown}"
    );
    let after = &shown[shown.find("status=130").unwrap()..];
    let flags: Vec<&str> = after.split([' ', ';', '\n', '\r']).collect();
    assert!(
        flags.contains(&"echo") && !flags.contains(&"-echo"),
        "echo stayed off after Ctrl-C: {after}"
    );
    assert_eq!(count(&w, alice), 0);
}

#[test]
fn admins_prove_themselves_and_make_nothing_that_leads_to_root() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create("apa", 3, 1);
    let (alice, admin, other_admin) = (
        acc.users[0].as_str(),
        acc.users[1].as_str(),
        acc.users[2].as_str(),
    );
    acc.join(admin, &acc.groups[0]);
    acc.join(other_admin, &acc.groups[0]);
    let w = World::new(&format!("admin_group = {}\n", acc.groups[0]), &[]);
    let as_admin = |args: &[&str], stdin: &str| {
        let mut all = vec!["add", "--json"];
        all.extend_from_slice(args);
        w.apppass_with(Some(admin), &all, stdin)
    };
    let proof = format!("{}\n", password_of(admin));
    // Without proof, nothing, even for an admin.
    let out = as_admin(&["--service", "imap", "--user", alice], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // With it: any named service, for a person.
    let out = as_admin(
        &["--password-stdin", "--service", "sshd", "--user", alice],
        &proof,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Never *, never for root, never for another admin.
    for (args, wanted) in [
        (
            vec!["--password-stdin", "--service", "*"],
            "* (every service) is root's to give",
        ),
        (
            vec!["--password-stdin", "--service", "*", "--user", alice],
            "* (every service) is root's to give",
        ),
        (
            vec!["--password-stdin", "--service", "imap", "--user", "root"],
            "only root makes app passwords for root",
        ),
        (
            vec![
                "--password-stdin",
                "--service",
                "imap",
                "--user",
                other_admin,
            ],
            "is an admin too: only root makes app passwords for admins",
        ),
    ] {
        let out = as_admin(&args, &proof);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(wanted), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(count(&w, other_admin), 0);
    assert_eq!(count(&w, "root"), 0);
    // Root may.
    let out = w.apppass_with(None, &["add", "--service", "*", "--user", other_admin], "");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_app_password_never_proves_a_person() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create("apl", 1, 0);
    let alice = acc.users[0].as_str();
    let w = World::new("", &[]);
    // An administrator's mistake: pam_apppass in the apppass stack, before pam_unix.
    std::fs::write(
        w.confdir.join("apppass"),
        format!(
            "auth sufficient {} socket={} conf={}\nauth required pam_unix.so try_first_pass\naccount required pam_unix.so\n",
            w.module.display(),
            w.daemon.socket.display(),
            w.conf.display()
        ),
    )
    .unwrap();
    let out = w.apppass_with(
        None,
        &["add", "--service", "*", "--user", alice, "--json"],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let app: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let app = app["password"].as_str().unwrap();
    // The app password (scope *) offered as the account password: refused.
    let out = add_with(&w, alice, &format!("{app}\n"), &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(count(&w, alice), 1);
    let refused = w.daemon.log_lines(&["reason=loopback", alice], 1);
    assert_eq!(refused.len(), 1, "{}", w.daemon.log());
    // The account password still proves her.
    let out = add_with(&w, alice, &format!("{}\n", password_of(alice)), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // doctor flags the stack.
    let out = w.apppass_with(
        None,
        &[
            "doctor",
            "--pam-dir",
            w.confdir.to_str().unwrap(),
            "apppass",
        ],
        "",
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("pam_apppass.so must not be in the apppass stack"),
        "{said}{}",
        stderr(&out)
    );
    assert_ne!(out.status.code(), Some(0));
}

/// As systemd runs the helper (apppass-pam-helper.socket, Accept=yes): one
/// `apppass-pam-helper --socket` per connection, with the connection as its standard
/// input and output. apppassd uses the socket when it exists; here the program it would
/// otherwise start does not exist, so every proof goes through the socket.
#[test]
fn the_helper_serves_a_socket_as_systemd_runs_it() {
    if !prerequisites() {
        return;
    }
    let acc = Accounts::create("aps", 1, 0);
    let alice = acc.users[0].as_str();
    let sockets = tempfile::tempdir().unwrap();
    let path = sockets.path().join("pam-helper.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let w = World::new(
        &format!(
            "pam_helper = /nonexistent/apppass-pam-helper\npam_helper_socket = {}\n",
            path.display()
        ),
        &[],
    );
    let confdir = w.confdir.clone();
    let helper = common::workspace_bin("apppass-pam-helper");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let input = std::os::fd::OwnedFd::from(stream.try_clone().unwrap());
            let _ = Command::new(&helper)
                .arg("--socket")
                .arg("--confdir")
                .arg(&confdir)
                .stdin(Stdio::from(input))
                .stdout(Stdio::from(std::os::fd::OwnedFd::from(stream)))
                .spawn()
                .map(|mut c| std::thread::spawn(move || c.wait()));
        }
    });
    let out = add_with(&w, alice, &format!("{}\n", password_of(alice)), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = add_with(&w, alice, "wrong\n", &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(count(&w, alice), 1);
    // The socket's service takes what to prove from apppassd, never where the stacks
    // are: a frame cannot name another directory, and a setuid run refuses --socket.
    let out = Command::new(common::workspace_bin("apppass-pam-helper"))
        .args(["--socket", "--rhost", "x"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
