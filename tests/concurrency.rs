//! Two processes logging in continuously through libpam while the CLI adds, revokes,
//! lists, reads the log and lifts throttling through the same apppassd: no login of a
//! valid password fails, every one of them is recorded (the password's use count and
//! the audit log agree with what the login processes saw: no record gave up on a lock),
//! and no "database is locked" reaches anyone: not the CLI, not a login, not apppassd's
//! own log.
//!
//! The login processes are this test binary again, in a helper role. Every fifth attempt
//! of theirs is a wrong guess, so that the writes apppassd makes include the throttle
//! counter; each guess comes from a remote host of its own, so throttling (on, at its
//! defaults) never refuses anything here.

mod common;
mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Sandbox;
use pam_apppass::code::Code;
use support::{helper, helper_role, wrong_secret};

/// How long the login processes run.
const RUN_FOR: Duration = Duration::from_secs(8);
const RESULT: &str = "login-worker-result";

/// One login process: logs in with the given app passwords (user:password,...) for
/// [`RUN_FOR`], then prints what happened.
#[test]
fn helper_login_worker() {
    let Some(worker) = helper_role() else { return };
    let confdir = support::env_path("APPPASS_CONFDIR");
    let passwords: Vec<(String, String)> = std::env::var("APPPASS_PASSWORDS")
        .unwrap()
        .split(',')
        .map(|p| {
            let (u, p) = p.split_once(':').unwrap();
            (u.to_string(), p.to_string())
        })
        .collect();
    let login = |user: &str, password: &str, rhost: &str| {
        common::login_in(&confdir, "imap", user, password.as_bytes(), Some(rhost)).code
    };
    let (mut ok, mut guesses) = (0, 0);
    let mut failures = Vec::new();
    let started = Instant::now();
    let mut i = 0usize;
    while started.elapsed() < RUN_FOR {
        let (user, password) = &passwords[i % passwords.len()];
        if i % 5 == 4 {
            let wrong = wrong_secret(password);
            let rhost = format!("198.51.{worker}.{}", i % 250);
            let code = login(user, &wrong, &rhost);
            if code == Code::AUTH_ERR {
                guesses += 1;
            } else {
                failures.push(format!("guess {i}: {}", code.name()));
            }
        } else {
            let code = login(user, password, &format!("192.0.2.{worker}"));
            if code == Code::SUCCESS {
                ok += 1;
            } else {
                failures.push(format!("{user} {i}: {}", code.name()));
            }
        }
        i += 1;
    }
    println!(
        "{RESULT} {ok} {guesses} {}",
        serde_json::to_string(&failures).unwrap()
    );
}

#[test]
fn logins_and_cli_changes_at_once() {
    let mut s = Sandbox::new();
    let log = support::restart_with_log(&mut s);
    s.simple_service("imap", "");
    let stable = [
        s.add("alice", "imap", &[]),
        s.add("alice", "*", &[]),
        s.add("bob", "imap", &[]),
    ];
    let users = ["alice", "alice", "bob"];
    let list: Vec<String> = stable
        .iter()
        .zip(users)
        .map(|(a, u)| format!("{u}:{}", a.password))
        .collect();
    let confdir: PathBuf = s.confdir.clone();
    let workers: Vec<_> = (1..=2)
        .map(|w| {
            helper(
                "helper_login_worker",
                &w.to_string(),
                &[
                    ("APPPASS_CONFDIR", &confdir.to_string_lossy()),
                    ("APPPASS_PASSWORDS", &list.join(",")),
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
        })
        .collect();

    // Meanwhile, the CLI: add, check, revoke, check; list, log, unlock.
    let started = Instant::now();
    let mut cli_runs = 0;
    let mut round = 0;
    let cli = |args: &[&str]| {
        let out = s.apppass(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success() && !err.contains("locked"),
            "apppass {args:?}: {err}"
        );
        out
    };
    while started.elapsed() < RUN_FOR {
        let user = format!("carol{}", round % 3);
        let added = s.add(&user, "imap", &[]);
        cli_runs += 1;
        assert_eq!(s.code("imap", &user, &added.password), Code::SUCCESS);
        cli(&["revoke", &added.id.to_string()]);
        assert_eq!(s.code("imap", &user, &added.password), Code::AUTH_ERR);
        match round % 4 {
            0 => drop(cli(&["list", "--all", "--json"])),
            1 => drop(cli(&["log", "--all", "--limit", "20"])),
            2 => drop(cli(&["unlock", "--user", "alice"])),
            _ => drop(cli(&["revoke", "--user", &user, "--all"])),
        }
        cli_runs += 2;
        round += 1;
    }

    let (mut ok, mut guesses) = (0, 0);
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "a login worker failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.split_once(RESULT).map(|(_, r)| r.trim().to_string()))
            .unwrap_or_else(|| panic!("no result from a worker: {stdout}"));
        let mut parts = line.splitn(3, ' ');
        ok += parts.next().unwrap().parse::<i64>().unwrap();
        guesses += parts.next().unwrap().parse::<i64>().unwrap();
        let failures: Vec<String> = serde_json::from_str(parts.next().unwrap()).unwrap();
        assert!(failures.is_empty(), "logins that failed: {failures:?}");
    }
    println!(
        "{ok} logins and {guesses} wrong guesses in two processes, {cli_runs} CLI runs, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(ok > 50 && cli_runs > 20, "too little happened to tell");
    // Every successful login was recorded: no record gave up waiting for a lock. (A
    // listing waits for the records of logins already answered, at most 2 s each: on a
    // loaded machine the last ones may take longer, so ask again for a while.)
    let used = || -> i64 {
        let rows = s.list();
        stable
            .iter()
            .map(|a| {
                rows.iter().find(|r| r["id"] == a.id).unwrap()["use_count"]
                    .as_i64()
                    .unwrap()
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while used() < ok && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        used(),
        ok,
        "logins recorded (apppassd's log:\n{})",
        s.daemon.log()
    );
    // And in the audit log: each success with its password, each guess from its host.
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    let ids: Vec<String> = stable.iter().map(|a| a.id.to_string()).collect();
    let successes: i64 = conn
        .query_row(
            &format!(
                "SELECT count(*) FROM event WHERE outcome = 'success' AND password_id IN ({})",
                ids.join(",")
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    let wrong: i64 = conn
        .query_row(
            "SELECT count(*) FROM event WHERE outcome = 'failure'
              AND reason = 'wrong_password' AND rhost LIKE '198.51.%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!((successes, wrong), (ok, guesses), "audit events");
    drop(conn);
    assert_eq!(support::integrity(&s.db), "ok");
    let status = support::assert_alive(&mut s.daemon);
    let count = |name: &str| {
        status
            .counts
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    };
    assert_eq!(
        (count("unavailable"), count("busy"), count("expired")),
        (0, 0, 0),
        "{:?}",
        status.counts
    );
    let said = support::read_log(&log);
    for bad in ["locked", "could not record", "unavailable"] {
        assert!(
            !said.lines().any(|l| l.contains(bad)),
            "apppassd logged {bad:?}:\n{said}"
        );
    }
    support::assert_clean_stop(&mut s.daemon, Some(&log));
}
