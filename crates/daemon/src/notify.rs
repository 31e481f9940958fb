//! Mail to the owner of an app password when one is made or regenerated for them, or
//! revoked by someone else (an admin, or a change of their account password): often the
//! only way a person notices an app password they did not make.
//!
//! Sent through the local sendmail (`sendmail PROGRAM ARGS -i -- ADDRESS`, the message on
//! its standard input) by one thread of its own, from a small bounded queue: a slow or
//! broken mail system never holds a worker or a login, a full queue drops the notice (and
//! says so in the log), and a failure is a log line, never a failed request. The message
//! never holds a password; what a client chose (a label) is only in its body, escaped,
//! and the headers hold only names apppassd checked and numbers.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use apppass_core::config::Config;
use apppass_core::time::{self, Timestamp};

use crate::log::{field, quoted};
use crate::state::Shared;

/// Notices waiting at most; beyond them a notice is dropped and logged.
pub const QUEUE: usize = 64;
/// How long one sendmail may take before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping apppassd waits for the notices still queued; then the sendmail
/// under way is killed and the rest are dropped, logged.
const DRAIN: Duration = Duration::from_secs(5);
/// What of sendmail's complaints goes into the log.
const MAX_STDERR: u64 = 512;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    Created,
    /// A new secret in place of app password `replaces`, which no longer works.
    Regenerated {
        replaces: i64,
    },
    /// Revoked by someone else than its owner.
    Revoked,
    /// `count` of them (for `service` only, if given), by someone else than their owner.
    RevokedAll {
        count: usize,
        service: Option<String>,
    },
    /// `count` of them, because the account password was changed.
    PasswordChanged {
        count: usize,
    },
}

/// One app password, as a notice names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About {
    pub id: i64,
    pub label: String,
    pub service: String,
    /// Canonical networks, `""` for anywhere.
    pub networks: String,
    pub expires: Option<Timestamp>,
}

/// A notice for `user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub what: What,
    pub user: String,
    pub password: Option<About>,
    /// Who did it: a user name, or how apppassd knows the caller.
    pub by: String,
    pub by_uid: u32,
    pub at: Timestamp,
}

/// The sending side, in [`Shared`]: off, or a queue to the sender thread.
#[derive(Default)]
pub struct Notifier {
    queue: Mutex<Option<SyncSender<Notice>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// apppassd is stopping and has waited long enough: send nothing more.
    hurry: AtomicBool,
}

impl Notifier {
    /// Queues a notice, without waiting; a full queue drops it, logged.
    pub fn send(&self, shared: &Shared, notice: Notice) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = queue.as_ref() else { return };
        if let Err(TrySendError::Full(n) | TrySendError::Disconnected(n)) = queue.try_send(notice) {
            shared.log.warning(&format!(
                "owner notice dropped, {QUEUE} waiting already: {} to user={}",
                n.what.name(),
                field(&n.user)
            ));
        }
    }
}

impl What {
    fn name(&self) -> &'static str {
        match self {
            What::Created => "created",
            What::Regenerated { .. } => "regenerated",
            What::Revoked => "revoked",
            What::RevokedAll { .. } => "revoked-all",
            What::PasswordChanged { .. } => "revoked-on-password-change",
        }
    }
}

/// Whether notices are on: `notify`, else whether the sendmail program exists (or an
/// SMTP server is named).
pub fn enabled(config: &Config) -> bool {
    config.notify.unwrap_or_else(|| {
        config
            .sendmail
            .first()
            .is_some_and(|p| p.starts_with("smtp://") || std::path::Path::new(p).is_file())
    })
}

/// Where notices go: `sendmail` as configured, except that the default program cannot
/// queue a mail under NoNewPrivileges= (apppassd.service): Postfix's sendmail hands it to
/// the setgid postdrop, Exim's is setuid, and neither gains anything there. Then the
/// local mail server takes it over SMTP, on the loopback address the unit allows.
fn route(config: &Config) -> Vec<String> {
    let default = config.sendmail == [apppass_core::config::DEFAULT_SENDMAIL];
    if default && no_new_privileges() {
        vec![LOCAL_SMTP.to_string()]
    } else {
        config.sendmail.clone()
    }
}

/// The local mail server, for a sandbox where set-id programs gain nothing.
const LOCAL_SMTP: &str = "smtp://127.0.0.1:25";

/// Whether this process runs with no_new_privs (the kernel's `NoNewPrivs:` line).
fn no_new_privileges() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["NoNewPrivs:", "1"])
    })
}

/// Starts the sender thread, if notices are on, and says in the log which way.
pub fn start(shared: &Arc<Shared>) {
    let config = &shared.config;
    if !enabled(config) {
        shared.log.info(&format!(
            "owner notices by mail: off ({})",
            if config.notify == Some(false) {
                "notify = no".to_string()
            } else {
                format!("no {}", config.sendmail.first().map_or("", String::as_str))
            }
        ));
        return;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let for_thread = Arc::clone(shared);
    let via = route(config);
    let through = via.join(" ");
    let thread = std::thread::Builder::new()
        .name("notify".into())
        .spawn(move || run(&for_thread, &rx, &via));
    match thread {
        Ok(t) => {
            *shared
                .notify
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(tx);
            *shared
                .notify
                .thread
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(t);
            shared
                .log
                .info(&format!("owner notices by mail: on, through {through}"));
        }
        Err(e) => shared.log.err(&format!(
            "owner notices by mail: off, no thread for them: {e}"
        )),
    }
}

/// Closes the queue and waits a little for the notices still in it.
pub fn stop(shared: &Shared) {
    drop(
        shared
            .notify
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(),
    );
    let thread = shared
        .notify
        .thread
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(thread) = thread else { return };
    let wait = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(DRAIN);
    if !thread.is_finished() {
        shared.notify.hurry.store(true, Ordering::Relaxed);
        wait(Duration::from_secs(2));
    }
    if thread.is_finished() {
        let _ = thread.join();
    } else {
        shared
            .log
            .warning("stopping with owner notices still unsent");
    }
}

fn run(shared: &Shared, queue: &Receiver<Notice>, via: &[String]) {
    let host = host_name();
    let hurry = &shared.notify.hurry;
    while let Ok(notice) = queue.recv() {
        if hurry.load(Ordering::Relaxed) {
            shared.log.warning(&format!(
                "owner notice not sent: {} to user={}: apppassd is stopping",
                notice.what.name(),
                field(&notice.user)
            ));
            continue;
        }
        let Some(to) = address(&notice.user, shared.config.notify_domain.as_deref()) else {
            shared.log.warning(&format!(
                "owner notice not sent: user={} is not usable as a mail address",
                field(&notice.user)
            ));
            continue;
        };
        let message = message(&notice, &to, &host);
        let what = format!(
            "{} id={} to={}",
            notice.what.name(),
            notice.password.as_ref().map_or(0, |p| p.id),
            field(&to)
        );
        let sent = match via.first().and_then(|v| v.strip_prefix("smtp://")) {
            Some(server) => submit(server, &to, &message, &host),
            None => deliver(via, &to, &message, hurry),
        };
        match sent {
            Ok(()) => shared.log.info(&format!("owner notice sent: {what}")),
            Err(why) => shared
                .log
                .warning(&format!("owner notice not sent: {what}: {why}")),
        }
    }
}

/// The owner's address: the user name (with `@domain`, if configured), if it is one a
/// mail system takes as it is: nothing that could read as a second address, an option
/// or a header.
fn address(user: &str, domain: Option<&str>) -> Option<String> {
    let ok = !user.is_empty()
        && !user.starts_with(['-', '.'])
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| match domain {
        Some(d) => format!("{user}@{d}"),
        None => user.to_string(),
    })
}

/// This host's name, for the message (the daemon's unit hides /proc/sys, so uname).
fn host_name() -> String {
    let name = rustix::system::uname();
    let name = name.nodename().to_string_lossy();
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    if ok {
        name.into_owned()
    } else {
        "this host".to_string()
    }
}

/// The whole message: headers of checked names and numbers only, then a plain-text body.
fn message(n: &Notice, to: &str, host: &str) -> String {
    let id = n.password.as_ref().map(|p| p.id);
    let (subject, happened) = match &n.what {
        What::Created => (
            format!(
                "new app password {} for {} on {host}",
                id.unwrap_or(0),
                n.user
            ),
            format!(
                "An app password was created for your account {} on {host}.",
                n.user
            ),
        ),
        What::Regenerated { replaces } => (
            format!(
                "app password {replaces} replaced by {} for {} on {host}",
                id.unwrap_or(0),
                n.user
            ),
            format!(
                "A new app password was made for your account {} on {host}, in place of\n\
                 app password {replaces}, which no longer works.",
                n.user
            ),
        ),
        What::Revoked => (
            format!(
                "app password {} of {} revoked on {host}",
                id.unwrap_or(0),
                n.user
            ),
            format!(
                "One of the app passwords of your account {} on {host} was revoked by\n\
                 someone else than you. It no longer works.",
                n.user
            ),
        ),
        What::RevokedAll { count, service } => (
            format!("{count} app password(s) of {} revoked on {host}", n.user),
            format!(
                "{count} app password(s) of your account {} on {host}{} were revoked by\n\
                 someone else than you. They no longer work.",
                n.user,
                service
                    .as_ref()
                    .map(|s| format!(" (for {})", field(s)))
                    .unwrap_or_default()
            ),
        ),
        What::PasswordChanged { count } => (
            format!("{count} app password(s) of {} revoked on {host}", n.user),
            format!(
                "The password of your account {} on {host} was changed, so all {count} of\n\
                 its app passwords were revoked. They no longer work: make new ones for the\n\
                 devices that need them (apppass add).",
                n.user
            ),
        ),
    };
    let mut body = format!("{happened}\n\n");
    if let Some(p) = &n.password {
        let scope = if p.service == apppass_proto::names::ANY_SERVICE {
            "every service".to_string()
        } else {
            field(&p.service)
        };
        body.push_str(&format!(
            "  App password: {}\n  Label:        {}\n  Service:      {scope}\n  From:         {}\n",
            p.id,
            if p.label.is_empty() {
                "(none)".to_string()
            } else {
                quoted(&p.label)
            },
            if p.networks.is_empty() {
                "anywhere".to_string()
            } else {
                field(&p.networks)
            },
        ));
        if matches!(n.what, What::Created | What::Regenerated { .. }) {
            body.push_str(&format!(
                "  Expires:      {}\n",
                p.expires.map_or("never".into(), time::format_iso8601)
            ));
        }
    }
    body.push_str(&format!(
        "  By:           {} (uid {})\n  When:         {}\n\n",
        field(&n.by),
        n.by_uid,
        time::format_iso8601(n.at)
    ));
    body.push_str(match (&n.what, id) {
        (What::Created | What::Regenerated { .. }, Some(_)) => {
            "If this was you, or an administrator you asked, nothing needs doing.\n\
             If it was not, revoke it at once and tell your administrator: someone who\n\
             can act as you made it.\n"
        }
        _ => "If you did not expect this, tell your administrator.\n",
    });
    if let (What::Created | What::Regenerated { .. }, Some(id)) = (&n.what, id) {
        body.push_str(&format!("\n    apppass revoke {id}\n"));
    }
    body.push_str("\nThis message never holds a password. apppass list shows all of yours.\n");
    // Headers: every value checked (names, a host, numbers); anything else is dropped.
    let header = |v: &str| -> String {
        v.chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .collect()
    };
    format!(
        "To: {}\nSubject: apppass: {}\nAuto-Submitted: auto-generated\nMIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{body}",
        header(to),
        header(&subject),
    )
}

/// Runs sendmail for `to` with `message` on its standard input, within [`TIMEOUT`] (and
/// only until `hurry`).
fn deliver(sendmail: &[String], to: &str, message: &str, hurry: &AtomicBool) -> Result<(), String> {
    let (program, args) = sendmail
        .split_first()
        .ok_or_else(|| "no sendmail program configured".to_string())?;
    let mut child = Command::new(program)
        .args(args)
        .args(["-i", "--", to])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: what it starts (Postfix's postdrop) goes with it.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // A notice is far smaller than a pipe's buffer: this write does not wait for the
    // program to read.
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(message.as_bytes()));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if hurry.load(Ordering::Relaxed) => {
                kill(&mut child);
                return Err(format!("{program} killed: apppassd is stopping"));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                kill(&mut child);
                return Err(format!(
                    "{program} did not finish within {} s: killed",
                    TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("{program}: {e}")),
        }
    };
    let mut complaint = String::new();
    if let Some(stderr) = child.stderr.take() {
        let _ = stderr.take(MAX_STDERR).read_to_string(&mut complaint);
    }
    let complaint = complaint.split_whitespace().collect::<Vec<_>>().join(" ");
    match (status.success(), written) {
        (true, Some(Ok(()))) => Ok(()),
        (true, _) => Err(format!("{program} did not take the whole message")),
        (false, _) => Err(format!(
            "{program} failed ({status}){}",
            if complaint.is_empty() {
                String::new()
            } else {
                format!(": {}", field(&complaint).replace("\\x20", " "))
            }
        )),
    }
}

/// Hands `message` for `to` to the SMTP server at `server` (HOST:PORT), within
/// [`TIMEOUT`] in all: the few commands of RFC 5321 a local server needs, the message
/// dot-stuffed, from the null sender (a notice is never answered, nor bounced back).
fn submit(server: &str, to: &str, message: &str, host: &str) -> Result<(), String> {
    use std::io::{BufRead, BufReader};
    use std::net::{TcpStream, ToSocketAddrs};
    let deadline = Instant::now() + TIMEOUT;
    let addr = server
        .to_socket_addrs()
        .map_err(|e| format!("smtp://{server}: {e}"))?
        .next()
        .ok_or_else(|| format!("smtp://{server}: no address"))?;
    let stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("smtp://{server}: {e}"))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    // One reply (its last line), which must start with `want`.
    let mut expect = |want: char, after: &str| -> Result<(), String> {
        let mut line = String::new();
        loop {
            line.clear();
            let _ = reader.get_ref().set_read_timeout(Some(left()));
            let n = reader
                .by_ref()
                .take(1024)
                .read_line(&mut line)
                .map_err(|e| format!("smtp://{server} after {after}: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "smtp://{server} closed the connection after {after}"
                ));
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        if line.starts_with(want) {
            Ok(())
        } else {
            Err(format!(
                "smtp://{server} refused {after}: {}",
                field(line.trim()).replace("\\x20", " ")
            ))
        }
    };
    let mut say = |text: &str| -> Result<(), String> {
        let _ = writer.set_write_timeout(Some(left()));
        writer
            .write_all(text.as_bytes())
            .map_err(|e| format!("smtp://{server}: {e}"))
    };
    expect('2', "connecting")?;
    say(&format!("HELO {host}\r\n"))?;
    expect('2', "HELO")?;
    say("MAIL FROM:<>\r\n")?;
    expect('2', "MAIL FROM")?;
    say(&format!("RCPT TO:<{to}>\r\n"))?;
    expect('2', "RCPT TO")?;
    say("DATA\r\n")?;
    expect('3', "DATA")?;
    let mut data = String::with_capacity(message.len() + 64);
    for line in message.lines() {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push_str(".\r\n");
    say(&data)?;
    expect('2', "the message")?;
    let _ = say("QUIT\r\n");
    Ok(())
}

/// Kills sendmail and whatever it started (its process group), and reaps it.
fn kill(child: &mut Child) {
    let group = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(what: What, label: &str) -> Notice {
        Notice {
            what,
            user: "alice".into(),
            password: Some(About {
                id: 7,
                label: label.into(),
                service: "imap".into(),
                networks: String::new(),
                expires: None,
            }),
            by: "root".into(),
            by_uid: 0,
            at: 1_790_000_000,
        }
    }

    #[test]
    fn addresses_are_names_a_mail_system_takes_as_they_are() {
        assert_eq!(address("alice", None).as_deref(), Some("alice"));
        assert_eq!(
            address("a.b-c_d", Some("example.org")).as_deref(),
            Some("a.b-c_d@example.org")
        );
        for bad in ["", "-oX", ".a", "a,b", "a b", "a@b", "a<b>", "ä", "a\nb"] {
            assert_eq!(address(bad, None), None, "{bad:?}");
        }
    }

    #[test]
    fn a_label_cannot_reach_the_headers() {
        let m = message(
            &notice(What::Created, "x\nBcc: mallory\nSubject: hi"),
            "alice",
            "mail.example.org",
        );
        let (headers, body) = m.split_once("\n\n").unwrap();
        assert!(
            !headers.contains("mallory") && !headers.contains("hi"),
            "{m}"
        );
        assert_eq!(headers.lines().count(), 6, "{headers}");
        assert!(!body.lines().any(|l| l.starts_with("Bcc:")), "{body}");
        assert!(body.contains("apppass revoke 7"), "{body}");
    }

    #[test]
    fn each_kind_says_what_happened() {
        let host = "mail.example.org";
        let created = message(&notice(What::Created, "Phone"), "alice", host);
        assert!(
            created
                .contains("Subject: apppass: new app password 7 for alice on mail.example.org\n")
        );
        assert!(created.contains("\"Phone\"") && created.contains("Expires:      never"));
        let regenerated = message(
            &notice(What::Regenerated { replaces: 5 }, ""),
            "alice",
            host,
        );
        assert!(
            regenerated.contains("in place of\napp password 5"),
            "{regenerated}"
        );
        let revoked = message(&notice(What::Revoked, "Phone"), "alice", host);
        assert!(revoked.contains("someone else than you") && !revoked.contains("Expires"));
        let all = Notice {
            password: None,
            ..notice(
                What::RevokedAll {
                    count: 2,
                    service: Some("pop3".into()),
                },
                "",
            )
        };
        assert!(
            message(&all, "alice", host)
                .contains("2 app password(s) of your account alice on mail.example.org (for pop3)")
        );
    }
}
