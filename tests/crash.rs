//! apppassd killed (SIGKILL) in the middle of its work, many times: while the CLI streams
//! changes to it, while it makes a new store, and in the middle of a login. After each
//! kill apppassd starts again on the same store: the store is whole (`PRAGMA
//! integrity_check` says ok), every change the CLI reported done is there, a change it
//! did not see finish is there entirely or not at all, and the app passwords it handed out
//! log in through libpam. A login whose apppassd dies under it is PAM_AUTHINFO_UNAVAIL at
//! once: the process that logs in (the host) neither crashes nor hangs.
//!
//! Kills land at random moments drawn from a printed seed (APPPASS_CRASH_SEED repeats a
//! run).

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Added, Sandbox, apppass_bin};
use pam_apppass::code::Code;
use support::{Rng, helper, helper_role, insert_row, integrity, restart_with_log};

/// The CLI against `socket`, waiting at most 10 s for apppassd.
fn cli(socket: &Path, conf: &Path, args: &[&str]) -> Output {
    Command::new(apppass_bin())
        .arg("--socket")
        .arg(socket)
        .arg("--config")
        .arg(conf)
        .args(["--timeout", "10s"])
        .args(args)
        .output()
        .unwrap()
}

/// What the CLI streams saw, shared between them.
#[derive(Default)]
struct Seen {
    /// Adds reported done: the password, and whose.
    added: Vec<(Added, String)>,
    /// Revokes reported done.
    revoked: BTreeSet<i64>,
    /// Users of adds that were cut off: their row may or may not be there.
    maybe_added: BTreeSet<String>,
    /// Ids being revoked by a stream now (so that two streams never revoke one id).
    pending: BTreeSet<i64>,
    tally: BTreeMap<&'static str, usize>,
}

impl Seen {
    fn count(&mut self, what: &'static str) {
        *self.tally.entry(what).or_default() += 1;
    }
}

/// A command cut off by apppassd's death failed the way it should: exit status 1 and a
/// message about the connection, never a panic.
fn assert_cut_off(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert!(
        ["connection", "not running", "did not answer"]
            .iter()
            .any(|w| err.contains(w)),
        "{what}: {err}"
    );
}

/// One stream of CLI commands, back to back, until one fails (apppassd was killed).
fn stream(s: &Sandbox, seen: &Mutex<Seen>, name: &str, seed: u64) {
    let mut rng = Rng::fixed(seed);
    for n in 0.. {
        let target = {
            let mut g = seen.lock().unwrap();
            let active: Vec<i64> = g
                .added
                .iter()
                .map(|(a, _)| a.id)
                .filter(|id| !g.revoked.contains(id) && !g.pending.contains(id))
                .collect();
            // One revoke for two adds, once there is something to revoke.
            let id =
                (rng.below(3) == 2 && !active.is_empty()).then(|| active[rng.below(active.len())]);
            if let Some(id) = id {
                g.pending.insert(id);
            }
            id
        };
        match target {
            Some(id) => {
                let out = cli(&s.socket, &s.conf, &["revoke", &id.to_string()]);
                let mut g = seen.lock().unwrap();
                g.pending.remove(&id);
                if out.status.success() {
                    g.revoked.insert(id);
                    g.count("revoke done");
                } else {
                    assert_cut_off(&out, &format!("revoke {id}"));
                    g.count("revoke cut off");
                    return;
                }
            }
            None => {
                let user = format!("{name}-{n}");
                let args = ["add", "--user", &user, "--service", "imap", "--json"];
                let out = cli(&s.socket, &s.conf, &args);
                let mut g = seen.lock().unwrap();
                if out.status.success() {
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    let a = Added {
                        id: v["id"].as_i64().unwrap(),
                        password: v["password"].as_str().unwrap().to_string(),
                    };
                    g.added.push((a, user));
                    g.count("add done");
                } else {
                    assert_cut_off(&out, "add");
                    g.maybe_added.insert(user);
                    g.count("add cut off");
                    return;
                }
            }
        }
    }
}

/// Two CLI streams of adds and revokes; apppassd SIGKILLed at a random moment among
/// them, then started again on the same store, over and over.
#[test]
fn apppassd_killed_during_changes() {
    let mut s = Sandbox::new();
    s.simple_service("imap", "");
    let mut rng = Rng::seeded("APPPASS_CRASH_SEED");
    let seen = Mutex::new(Seen::default());
    const KILLS: usize = 100;
    let started = Instant::now();
    for round in 0..KILLS {
        let pid = s.daemon.child.id();
        let seeds = [rng.next(), rng.next()];
        // Anywhere from the first command's start to a few commands in.
        let after = Duration::from_micros(rng.below(150_000) as u64);
        std::thread::scope(|scope| {
            for (i, seed) in seeds.into_iter().enumerate() {
                let (s, seen) = (&s, &seen);
                scope.spawn(move || stream(s, seen, &format!("r{round}s{i}"), seed));
            }
            std::thread::sleep(after);
            common::signal(pid, "KILL");
        });
        let status = s.daemon.child.wait().unwrap();
        assert!(!status.success(), "apppassd was not killed: {status}");
        // apppassd starts again on what it left: a stale socket, a hot WAL; each of
        // its workers opens the store.
        let log = restart_with_log(&mut s);
        std::thread::sleep(Duration::from_millis(30));
        let st = support::assert_alive(&mut s.daemon);
        assert_eq!(st.store_error, None, "after kill {round}");
        let said = support::read_log(&log);
        assert!(
            !said.contains("store unavailable"),
            "after kill {round}, started again:\n{said}"
        );
        if round % 10 == 9 {
            assert_eq!(integrity(&s.db), "ok", "after kill {round}");
        }
    }
    let seen = seen.into_inner().unwrap();
    println!(
        "{KILLS} kills in {:.1} s: {:?}",
        started.elapsed().as_secs_f64(),
        seen.tally
    );
    // Enough of each, or the test tested nothing.
    for what in ["add done", "add cut off", "revoke done", "revoke cut off"] {
        assert!(
            seen.tally.get(what).copied().unwrap_or(0) >= 5,
            "{:?}",
            seen.tally
        );
    }

    assert_eq!(integrity(&s.db), "ok");
    let rows = s.list();
    let by_id: BTreeMap<i64, &serde_json::Value> = rows
        .iter()
        .map(|r| (r["id"].as_i64().unwrap(), r))
        .collect();
    // Every add reported done is there, whole, and revoked if a revoke was reported
    // done (a revoke cut off may or may not have happened).
    for (a, user) in &seen.added {
        let row = by_id
            .get(&a.id)
            .unwrap_or_else(|| panic!("add {} reported done, and lost", a.id));
        assert_eq!(row["user"], user.as_str());
        assert_eq!(row["service"], "imap");
        if seen.revoked.contains(&a.id) {
            assert_eq!(row["status"], "revoked", "revoke of {} lost", a.id);
        }
    }
    // An add cut off left a whole row or none: every row belongs to a known user.
    let mut made_it = 0;
    for row in &rows {
        let user = row["user"].as_str().unwrap();
        let cut_off = seen.maybe_added.contains(user);
        assert!(
            cut_off || seen.added.iter().any(|(_, u)| u == user),
            "unexpected row {row}"
        );
        made_it += usize::from(cut_off);
    }
    println!("adds cut off whose row made it in: {made_it}");
    // What the CLI handed out logs in, unless it was revoked (a sample: each login
    // costs a real verification).
    let mut sample: Vec<&(Added, String)> = seen.added.iter().collect();
    rng.shuffle(&mut sample);
    for (a, user) in sample.into_iter().take(60) {
        let want = if by_id[&a.id]["status"] == "revoked" {
            Code::AUTH_ERR
        } else {
            Code::SUCCESS
        };
        assert_eq!(
            s.code("imap", user, &a.password),
            want,
            "app password {}",
            a.id
        );
    }
}

/// apppassd killed at any moment while it makes a new store (directory, file, WAL mode,
/// migrations): started again, it finishes the job, and the store is whole, at the
/// current schema, and works.
#[test]
fn apppassd_killed_while_making_its_store() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let mut rng = Rng::seeded("APPPASS_CRASH_SEED");
    let base = s.dir.path().join("fresh");
    std::fs::create_dir(&base).unwrap();
    let spawn = |db: &Path| {
        Command::new(common::workspace_bin("apppassd"))
            .arg("--db")
            .arg(db)
            .arg("--socket")
            .arg(base.join("apppassd.sock"))
            .arg("--config")
            .arg(&s.conf)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut killed, mut runs) = (0, 0);
    let mut refused = Vec::new();
    // Until enough kills have landed before the store was whole, and at least 40 runs.
    while runs < 40 || (killed < 15 && runs < 200) {
        let db = base.join(format!("db{runs}/apppass.db"));
        runs += 1;
        let mut child = spawn(&db);
        let after = Duration::from_micros(rng.below(30_000) as u64);
        std::thread::sleep(after);
        support::kill(&mut child);
        let whole =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)))
                .is_ok_and(|v| v == apppass_core::store::sqlite::SCHEMA_VERSION);
        killed += usize::from(!whole);
        let (mut d, log) = support::daemon_with_log(&base, &db, &s.conf, &[]);
        // Both workers have tried the store by now.
        std::thread::sleep(Duration::from_millis(50));
        let st = support::assert_alive(&mut d);
        if let Some(e) = st.store_error {
            refused.push(format!("run {runs} (killed after {after:?}): {e}"));
        } else {
            assert_eq!(
                st.schema_version,
                Some(apppass_core::store::sqlite::SCHEMA_VERSION)
            );
            let args = ["add", "--user", "alice", "--service", "imap", "--json"];
            let out = cli(&d.socket, &s.conf, &args);
            if !out.status.success() {
                let said = support::read_log(&log)
                    .lines()
                    .filter(|l| l.contains("store"))
                    .collect::<Vec<_>>()
                    .join(" / ");
                refused.push(format!(
                    "run {runs} (killed after {after:?}): status ok, yet add: {} (apppassd: {said})",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        support::assert_clean_stop(&mut d, Some(&log));
        assert_eq!(integrity(&db), "ok");
    }
    println!("killed before the store was whole: {killed} of {runs}");
    assert!(killed >= 10, "only {killed} kills landed early enough");
    assert!(
        refused.is_empty(),
        "apppassd, started again, reported its store unusable: {refused:#?}"
    );
}

/// A clean stop (SIGTERM) leaves the whole store in its file, its WAL folded in: what an
/// administrator copies after stopping apppassd (a backup, a move to another host, a
/// read-only mount) holds every change made before the stop, a revoke included. Each
/// round is a new store, used at once, as after an installation.
#[test]
fn clean_stop_folds_the_wal_into_the_store() {
    let mut stale = Vec::new();
    for round in 0..30 {
        let mut s = Sandbox::new();
        let a = s.add("alice", "imap", &[]);
        let out = s.apppass(&["revoke", &a.id.to_string()]);
        assert!(out.status.success());
        assert!(s.daemon.stop().success());
        let wal = std::fs::metadata(support::side_file(&s.db, "-wal")).map_or(0, |m| m.len());
        // The file alone, as `cp apppass.db` takes it.
        let copy = s.dir.path().join("copy.db");
        std::fs::copy(&s.db, &copy).unwrap();
        let revoked: Result<i64, _> = rusqlite::Connection::open(&copy).and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM app_password WHERE revoked IS NOT NULL",
                [],
                |r| r.get(0),
            )
        });
        if !matches!(revoked, Ok(1)) {
            stale.push(format!("stop {round}: {revoked:?}, WAL of {wal} bytes"));
        }
    }
    assert!(
        stale.is_empty(),
        "stopped cleanly, yet the store's file lacks changes still in its WAL: {stale:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// Killed in the middle of a login

const CONFDIR: &str = "APPPASS_CONFDIR";
const PASSWORD: &str = "APPPASS_PASSWORD";
const RESULT: &str = "host-result";

/// A host process (sshd, Dovecot's auth worker) logging in through libpam until its
/// stdin closes, with SIGPIPE at its default action as a C program has it (Rust ignores
/// it; a host need not): a module that wrote to a dead apppassd's socket with write(2)
/// would kill its host (std's UnixStream sends with MSG_NOSIGNAL; this keeps it honest).
/// Prints one line per login: the code and how long it took.
#[test]
fn helper_host() {
    let Some(_) = helper_role() else { return };
    // SAFETY: setting a signal's action to its default, before any other thread of
    // this process could care.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let confdir = support::env_path(CONFDIR);
    let password = std::env::var(PASSWORD).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        let code = common::login_in(&confdir, "imap", "alice", password.as_bytes(), None).code;
        println!("{RESULT} {} {}", code.name(), t.elapsed().as_micros());
    }
}

/// The host's lines: (code, how long the login took).
fn host_results(out: &Output) -> Vec<(String, Duration)> {
    assert!(
        out.status.success(),
        "the host process died: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    BufReader::new(&out.stdout[..])
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let (_, rest) = l.split_once(RESULT)?;
            let mut parts = rest.split_whitespace();
            let code = parts.next()?.to_string();
            let micros: u64 = parts.next()?.parse().ok()?;
            Some((code, Duration::from_micros(micros)))
        })
        .collect()
}

/// apppassd stopped (SIGSTOP) with a login waiting on it, then killed: the host's login
/// is PAM_AUTHINFO_UNAVAIL at once, not after the module's timeout. Then apppassd killed
/// at random moments while a host logs in back to back with a password whose
/// verification takes a while: every login is a success or PAM_AUTHINFO_UNAVAIL,
/// within the timeout, and the host lives on.
#[test]
fn apppassd_killed_in_the_middle_of_a_login() {
    let mut s = Sandbox::with_config("throttle_failures = 0\n");
    restart_with_log(&mut s);
    s.simple_service("imap", "timeout=5s");
    // Expensive enough that most of a login is spent inside apppassd.
    let heavy = apppass_core::secret::HashParams {
        m_kib: 19456,
        t: 6,
        p: 1,
    };
    let (_, password) = insert_row(&s.db, "alice", "imap", heavy);
    let confdir = s.confdir.to_string_lossy().into_owned();
    let host = || {
        helper(
            "helper_host",
            "host",
            &[(CONFDIR, &confdir), (PASSWORD, &password)],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };

    // 1. Stopped, then killed, with a login waiting.
    common::signal(s.daemon.child.id(), "STOP");
    let mut h = host();
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    common::signal(s.daemon.child.id(), "KILL");
    s.daemon.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(h.stdin.take());
    let waited = killed_at.elapsed();
    let results = host_results(&h.wait_with_output().unwrap());
    let (code, took) = &results[0];
    assert_eq!(code, "PAM_AUTHINFO_UNAVAIL", "{results:?}");
    // It had waited 0.5 s before the kill; it must end at the kill, not at 5 s.
    assert!(
        *took < Duration::from_millis(500) + waited + Duration::from_millis(200),
        "the waiting login took {took:?}"
    );
    restart_with_log(&mut s);

    // 2. Killed at random moments under a host logging in back to back.
    let mut rng = Rng::seeded("APPPASS_CRASH_SEED");
    let mut h = host();
    let started = Instant::now();
    const KILLS: usize = 40;
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_micros(rng.below(200_000) as u64));
        support::kill(&mut s.daemon.child);
        restart_with_log(&mut s);
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(h.stdin.take());
    let results = host_results(&h.wait_with_output().unwrap());
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for (code, took) in &results {
        assert!(
            code == "PAM_SUCCESS" || code == "PAM_AUTHINFO_UNAVAIL",
            "a right password got {code}"
        );
        assert!(*took < Duration::from_secs(6), "a login took {took:?}");
        *tally.entry(code.as_str()).or_default() += 1;
    }
    println!(
        "{KILLS} kills under {} logins in {:.1} s: {tally:?}",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.get("PAM_SUCCESS").copied().unwrap_or(0) >= 20,
        "{tally:?}"
    );
    assert!(
        tally.get("PAM_AUTHINFO_UNAVAIL").copied().unwrap_or(0) >= 10,
        "{tally:?}"
    );
    assert_eq!(s.code("imap", "alice", &password), Code::SUCCESS);
    assert_eq!(integrity(&s.db), "ok");
}
