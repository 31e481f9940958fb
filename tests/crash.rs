//! The CLI killed (SIGKILL) in the middle of its work, many times: the database stays
//! whole (`PRAGMA integrity_check` says ok), every change the CLI reported done is there,
//! a change it did not finish is there entirely or not at all, and the app passwords it
//! handed out log in through libpam.
//!
//! Each kill lands at a random moment within the command's usual running time (measured
//! first), so that kills fall before, during and after its transaction; the moments are
//! drawn from a printed seed (APPPASS_CRASH_SEED repeats a run).

mod common;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Added, Sandbox, apppass_bin};
use pam_apppass::code::Code;

/// What became of one run of the CLI.
enum Run {
    /// It exited on its own, with this status and output.
    Done(std::process::Output),
    /// It was killed first.
    Killed,
}

/// Runs the CLI on `db`, killing it (SIGKILL) after `after` unless it is done by then.
fn run_killed(db: &Path, conf: &Path, args: &[&str], after: Duration) -> Run {
    let mut child = Command::new(apppass_bin())
        .arg("--db")
        .arg(db)
        .arg("--config")
        .arg(conf)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + after;
    loop {
        if child.try_wait().unwrap().is_some() {
            return Run::Done(child.wait_with_output().unwrap());
        }
        if Instant::now() >= deadline {
            support::kill(&mut child);
            return Run::Killed;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Where kills land: anywhere from 0 to 1.2 x the usual running time of the command,
/// the median of its last few uninterrupted runs. Warm-up runs on a fresh machine can be
/// much slower than the rest (cold caches, another test's fsyncs), which would put most
/// kills after the command is done; so every eighth draw lets the command run to its end
/// and measures it again. Runs that merely beat their kill would not do: they are the
/// short ones, and the window would shrink until nothing finished.
struct Window {
    took: Vec<Duration>,
    draws: usize,
}

impl Window {
    fn warmed_up(mut run: impl FnMut() -> Duration) -> Window {
        Window {
            took: (0..5).map(|_| run()).collect(),
            draws: 0,
        }
    }

    fn usual(&self) -> Duration {
        let mut recent: Vec<Duration> = self.took.iter().rev().take(5).copied().collect();
        recent.sort();
        recent[recent.len() / 2]
    }

    /// When to kill the next run.
    fn draw(&mut self, rng: &mut support::Rng) -> Duration {
        self.draws += 1;
        if self.measuring() {
            return Duration::from_secs(60);
        }
        Duration::from_micros(rng.below(self.usual().as_micros() as usize * 6 / 5) as u64)
    }

    /// Whether the last draw let the command run to its end.
    fn measuring(&self) -> bool {
        self.draws % 8 == 0
    }

    /// The last run drawn for finished, in `took`.
    fn finished(&mut self, took: Duration) {
        if self.measuring() {
            self.took.push(took);
        }
    }
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn cli_killed_during_changes() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let mut rng = support::Rng::seeded("APPPASS_CRASH_SEED");

    let mut add_window = Window::warmed_up(|| {
        let t = Instant::now();
        let _ = s.add("warmup", "imap", &[]);
        t.elapsed()
    });
    let mut revoke_window = Window::warmed_up(|| {
        let id = s.add("warmup", "imap", &[]).id.to_string();
        let t = Instant::now();
        assert!(s.apppass(&["revoke", &id]).status.success());
        t.elapsed()
    });
    println!(
        "usual time: add {:?}, revoke {:?}",
        add_window.usual(),
        revoke_window.usual()
    );

    // What the CLI said it did, and what it may or may not have done.
    let mut added: Vec<(Added, String)> = Vec::new();
    let mut revoked: Vec<i64> = Vec::new();
    let mut maybe_added_users: Vec<String> = Vec::new();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    const RUNS: usize = 300;
    for i in 0..RUNS {
        // Kill anywhere from the start to a little past the usual end.
        let active: Vec<i64> = added
            .iter()
            .map(|(a, _)| a.id)
            .filter(|id| !revoked.contains(id))
            .collect();
        if i % 3 == 2 && !active.is_empty() {
            let id = active[rng.below(active.len())];
            let after = revoke_window.draw(&mut rng);
            let t = Instant::now();
            match run_killed(&s.db, &s.conf, &["revoke", &id.to_string()], after) {
                Run::Done(out) => {
                    revoke_window.finished(t.elapsed());
                    assert!(
                        out.status.success(),
                        "revoke {id}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    revoked.push(id);
                    *tally.entry("revoke done").or_default() += 1;
                }
                Run::Killed => *tally.entry("revoke killed").or_default() += 1,
            }
        } else {
            let user = format!("user{i}");
            let after = add_window.draw(&mut rng);
            let args = ["add", "--user", &user, "--service", "imap", "--json"];
            let t = Instant::now();
            match run_killed(&s.db, &s.conf, &args, after) {
                Run::Done(out) => {
                    add_window.finished(t.elapsed());
                    assert!(
                        out.status.success(),
                        "add: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    let a = Added {
                        id: v["id"].as_i64().unwrap(),
                        password: v["password"].as_str().unwrap().to_string(),
                    };
                    added.push((a, user));
                    *tally.entry("add done").or_default() += 1;
                }
                Run::Killed => {
                    maybe_added_users.push(user);
                    *tally.entry("add killed").or_default() += 1;
                }
            }
        }
        // The database is whole, as the next reader finds it.
        if i % 10 == 9 {
            assert_eq!(integrity(&s.db), "ok", "after run {i}");
        }
    }
    println!("{RUNS} runs: {tally:?}");
    // Enough of both, or the test tested nothing.
    for what in ["add done", "add killed", "revoke killed"] {
        assert!(tally.get(what).copied().unwrap_or(0) >= 5, "{tally:?}");
    }

    assert_eq!(integrity(&s.db), "ok");
    let rows = s.list();
    let by_id: BTreeMap<i64, &serde_json::Value> = rows
        .iter()
        .map(|r| (r["id"].as_i64().unwrap(), r))
        .collect();
    // Every completed add is there, whole, and revoked exactly if a revoke completed
    // (a killed revoke may or may not have happened).
    for (a, user) in &added {
        let row = by_id
            .get(&a.id)
            .unwrap_or_else(|| panic!("add {} lost", a.id));
        assert_eq!(row["user"], user.as_str());
        assert_eq!(row["service"], "imap");
        if revoked.contains(&a.id) {
            assert_eq!(row["status"], "revoked", "revoke of {} lost", a.id);
        }
    }
    // A killed add left a whole row or none: every row belongs to a known user.
    let mut partial = 0;
    for row in &rows {
        let user = row["user"].as_str().unwrap();
        assert!(
            user == "warmup"
                || added.iter().any(|(_, u)| u == user)
                || maybe_added_users.iter().any(|u| u == user),
            "unexpected row {row}"
        );
        if maybe_added_users.iter().any(|u| u == user) {
            partial += 1;
        }
    }
    println!("killed adds whose row made it in: {partial}");
    // What the CLI handed out logs in, unless it was revoked.
    for (a, _) in &added {
        let user = &by_id[&a.id]["user"];
        let want = if by_id[&a.id]["status"] == "revoked" {
            Code::AUTH_ERR
        } else {
            Code::SUCCESS
        };
        assert_eq!(
            s.code("imap", user.as_str().unwrap(), &a.password),
            want,
            "app password {}",
            a.id
        );
    }
}

/// `apppass init` killed at any moment on a new database: running it again finishes the
/// job, and the result is a whole database at the current schema.
#[test]
fn init_killed_and_run_again() {
    let conf = tempfile::NamedTempFile::new().unwrap();
    let mut rng = support::Rng::seeded("APPPASS_CRASH_SEED");
    let dir = tempfile::tempdir().unwrap();
    let mut window = Window::warmed_up(|| {
        let db = dir.path().join(format!("warm{}/a.db", rng.next()));
        let t = Instant::now();
        assert!(matches!(
            run_killed(&db, conf.path(), &["init"], Duration::from_secs(60)),
            Run::Done(o) if o.status.success()
        ));
        t.elapsed()
    });
    // Until enough kills have landed, and at least 40 runs.
    let mut killed = 0;
    let mut runs = 0;
    while runs < 40 || (killed < 20 && runs < 200) {
        let db = dir.path().join(format!("db{runs}/apppass.db"));
        runs += 1;
        let after = window.draw(&mut rng);
        let t = Instant::now();
        match run_killed(&db, conf.path(), &["init"], after) {
            Run::Killed => killed += 1,
            Run::Done(_) => window.finished(t.elapsed()),
        }
        match run_killed(&db, conf.path(), &["init"], Duration::from_secs(60)) {
            Run::Done(out) => assert!(
                out.status.success(),
                "init after a kill: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Run::Killed => unreachable!(),
        }
        assert_eq!(integrity(&db), "ok");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, apppass_core::store::sqlite::SCHEMA_VERSION);
    }
    println!("init killed {killed} times of {runs}");
    assert!(killed >= 10, "init was killed only {killed} times");
}
