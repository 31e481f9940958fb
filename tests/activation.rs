//! Socket activation, with systemd's own `systemd-socket-activate` (Debian package
//! systemd; it needs no systemd as PID 1): it holds the listening socket and starts
//! apppassd with it as descriptor 3 (`LISTEN_FDS`, `LISTEN_PID`) when the first client
//! connects. apppassd must take that socket rather than bind its own, and leave it in
//! place when it stops; and since the socket outlives each apppassd, restarting the
//! daemon under a stream of logins must fail none of them: what arrives while no daemon
//! runs waits in the socket's backlog for the next one.

mod common;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, Sandbox, require, signal, workspace_bin};
use pam_apppass::code::Code;
use support::have;

/// apppassd's status through `socket`, waiting up to 10 s (for a daemon still starting,
/// the request waits in the socket's backlog).
fn status(socket: &Path) -> Option<apppass_proto::Status> {
    let own = pam_apppass::uids().1;
    let mut client =
        apppass_proto::Client::connect(socket, Duration::from_secs(10), &[0, own]).ok()?;
    match client.call(&apppass_proto::Request::Status).ok()? {
        apppass_proto::Response::Status(s) => Some(*s),
        _ => None,
    }
}

fn have_activator() -> bool {
    require(
        have("systemd-socket-activate"),
        "systemd-socket-activate (Debian package systemd)",
    )
}

/// Waits (up to 10 s) until `path` exists.
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within 10 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purpose: it answers nothing and holds no socket.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.starts_with(" Z"))
    })
}

/// Waits (up to `limit`) until process `pid` (not necessarily our child) is gone.
fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

#[test]
fn apppassd_takes_its_socket_from_systemd() {
    if !have_activator() {
        return;
    }
    let mut s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    s.daemon.stop();
    let activated = s.dir.path().join("activated.sock");
    // Where apppassd would listen on its own: it must not.
    let own = s.dir.path().join("own.sock");
    std::fs::write(&s.conf, format!("socket = {}\n", own.display())).unwrap();
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&activated)
        .arg("--")
        .arg(workspace_bin("apppassd"))
        .arg("--db")
        .arg(&s.db)
        .arg("--config")
        .arg(&s.conf)
        .arg("--stderr")
        .spawn()
        .unwrap();
    // Stopped (SIGTERM) and reaped when dropped, whatever happens.
    let mut daemon = Daemon {
        child,
        socket: activated.clone(),
        db: s.db.clone(),
        conf: s.conf.clone(),
    };
    wait_for_file(&activated);
    // The first connection starts apppassd, which answers it on the socket it was given;
    // systemd-socket-activate executes it in its own process, so the pids agree.
    let status = daemon.status().expect("no answer on the activated socket");
    assert_eq!(status.pid, daemon.child.id());
    assert!(!own.exists(), "apppassd bound a socket of its own");
    s.service(
        "imap",
        &format!(
            "auth required {{module}} socket={} conf={{conf}}\n",
            activated.display()
        ),
    );
    assert_eq!(s.code("imap", "alice", &pw.password), Code::SUCCESS);
    assert_eq!(
        s.code("imap", "alice", &support::wrong_secret(&pw.password)),
        Code::AUTH_ERR
    );
    let exit = daemon.stop();
    assert!(exit.success(), "apppassd stopped with {exit}");
    // The socket is systemd's: apppassd leaves it for the next start.
    assert!(activated.exists(), "apppassd removed systemd's socket");
}

/// `systemd-socket-activate` running a shell that starts apppassd again each time it
/// stops: the shell holds the listening socket between two apppassd. Killed, with the
/// apppassd it runs, when dropped.
struct Restarting {
    shell: Child,
}

impl Restarting {
    /// The apppassd running now, if any (the shell's child; `exec` keeps its pid).
    fn daemon_pid(&self) -> Option<u32> {
        children_of(self.shell.id()).into_iter().find(|p| {
            std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e.ends_with("apppassd"))
        })
    }
}

impl Drop for Restarting {
    fn drop(&mut self) {
        // The shell stopped first, so that it starts no other while its children are
        // listed (once it is gone they are init's, and no longer to be found as its).
        signal(self.shell.id(), "STOP");
        let children = children_of(self.shell.id());
        let _ = self.shell.kill();
        let _ = self.shell.wait();
        for pid in children {
            signal(pid, "TERM");
            if !wait_gone(pid, Duration::from_secs(20)) {
                signal(pid, "KILL");
            }
        }
    }
}

#[test]
fn restarts_under_a_stream_of_logins_fail_none() {
    const RESTARTS: usize = 5;
    if !have_activator() {
        return;
    }
    let mut s = Sandbox::new();
    let pw = s.add("alice", "imap", &[]);
    s.daemon.stop();
    let socket = s.dir.path().join("activated.sock");
    let log = s.dir.path().join("apppassd.log");
    // Each apppassd gets LISTEN_PID = its own pid (the inner shell's, which it replaces);
    // the pause between two makes the logins wait in the backlog a while.
    let inner = r#"export LISTEN_PID=$$; exec "$APPPASSD" --db "$DB" --config "$CONF" --stderr"#;
    // systemd-socket-activate hands on only the variables it is given (-E).
    let setenv = |name: &str, value: &Path| format!("--setenv={name}={}", value.display());
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(format!("--setenv=INNER={inner}"))
        .arg(setenv("APPPASSD", &workspace_bin("apppassd")))
        .arg(setenv("DB", &s.db))
        .arg(setenv("CONF", &s.conf))
        .args([
            "--",
            "sh",
            "-c",
            r#"while :; do sh -c "$INNER"; sleep 0.5; done"#,
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let restarting = Restarting { shell: child };
    wait_for_file(&socket);
    s.service(
        "imap",
        &format!(
            "auth required {{module}} socket={} conf={{conf}}\n",
            socket.display()
        ),
    );
    let first = status(&socket).unwrap_or_else(|| {
        panic!(
            "no answer on the activated socket:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });

    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let stream = {
        let (stop, confdir, password) = (Arc::clone(&stop), s.confdir.clone(), pw.password.clone());
        std::thread::spawn(move || {
            let mut logins = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = t0.elapsed();
                let code = common::login_in(
                    &confdir,
                    "imap",
                    "alice",
                    password.as_bytes(),
                    Some("192.0.2.1"),
                )
                .code;
                logins.push((start, t0.elapsed(), code));
            }
            logins
        })
    };
    // (old apppassd gone, new one answering), from t0.
    let mut gaps = Vec::new();
    let mut pid = first.pid;
    for i in 0..RESTARTS {
        std::thread::sleep(Duration::from_millis(300));
        signal(pid, "TERM");
        assert!(
            wait_gone(pid, Duration::from_secs(20)),
            "apppassd {pid} did not stop on SIGTERM"
        );
        let gone = t0.elapsed();
        let next = status(&socket).unwrap_or_else(|| panic!("no apppassd after restart {i}"));
        gaps.push((gone, t0.elapsed()));
        assert_ne!(next.pid, pid, "restart {i}: the same apppassd answers");
        pid = next.pid;
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let logins = stream.join().unwrap();
    assert_eq!(restarting.daemon_pid(), Some(pid));
    drop(restarting);

    let failed: Vec<_> = logins.iter().filter(|l| l.2 != Code::SUCCESS).collect();
    // Logins that were waiting while no apppassd ran: started before the next one
    // answered, answered after the last one was gone.
    let waited: Vec<usize> = gaps
        .iter()
        .map(|(gone, back)| {
            logins
                .iter()
                .filter(|(start, end, _)| start < back && end > gone)
                .count()
        })
        .collect();
    let longest = logins.iter().map(|(a, b, _)| *b - *a).max().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    println!(
        "{} logins over {RESTARTS} restarts in {:.1} s, {} failed; waiting through each gap \
         (no apppassd for {:?}): {waited:?}; longest login {longest:?}",
        logins.len(),
        t0.elapsed().as_secs_f64(),
        failed.len(),
        gaps.iter().map(|(a, b)| *b - *a).collect::<Vec<_>>()
    );
    assert!(
        failed.is_empty(),
        "failed logins (start, end, code): {failed:?}"
    );
    assert!(
        waited.iter().all(|n| *n >= 1),
        "a restart with no login waiting through it proves nothing: {waited:?}"
    );
    assert_eq!(
        text.matches("listening on the socket systemd passed")
            .count(),
        RESTARTS + 1,
        "{text}"
    );
    for bug in ["internal error", "panicked", "cannot start"] {
        assert!(!text.contains(bug), "apppassd logged {bug:?}:\n{text}");
    }
}
