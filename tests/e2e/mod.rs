//! The end-to-end tests' world: real Dovecot, Postfix and OpenSSH servers on loopback,
//! each with its own configuration, state, log and pid files, loading the module built
//! from this tree through the PAM files shipped in `pam.d/`; the test's own apppassd,
//! which the module asks; a throwaway Linux user; real clients (curl, python3's smtplib,
//! ssh driven by sshpass); and fail2ban-regex over the syslog lines the logins really
//! produced.
//!
//! Dovecot and sshd read their PAM files from /etc/pam.d under their real names (imap,
//! pop3, submission, smtp, sshd), and that name is the scope an app password must have.
//! So that a test never touches the machine's /etc, each server runs in a private mount
//! namespace (unshare(1)) in which a copy of /etc/pam.d holding our files, and a copy of
//! /etc/security holding an apppass.conf that names the test's apppassd socket, are
//! mounted over the real directories. The servers see an ordinary system; the machine
//! sees nothing, and the namespace ends with the server.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::{self, AuthLog, Sandbox, free_port, require, unique};

/// This source tree (for the shipped pam.d/ and fail2ban/ files).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether root and the programs a test drives are here; under CI a missing one fails.
pub fn have(programs: &[&str]) -> bool {
    if !require(
        common::is_root(),
        "root (servers, a test user, mount namespaces)",
    ) {
        return false;
    }
    programs.iter().all(|p| {
        require(
            find_program(p).is_some(),
            &format!("{p} (scripts/prereqs.sh installs it as root)"),
        )
    })
}

pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.starts_with('/') {
        return Path::new(name).exists().then(|| PathBuf::from(name));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A loopback source address no other login of this test run uses: every attempt comes
/// from its own, so that Dovecot's per-IP penalty after a failure never slows the next
/// one, and so that each syslog line, `apppass list` entry and fail2ban count can be told
/// apart by its remote host alone.
pub fn fresh_ip() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static BASE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // A random second octet per test process, so that two runs never share addresses.
    let base = *BASE.get_or_init(|| {
        let mut b = [0u8; 1];
        getrandom::fill(&mut b).unwrap();
        2 + u32::from(b[0]) % 250
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("127.{base}.{}.{}", n / 250, 1 + n % 250)
}

/// Whether `line` names `ip` (and not a longer address that starts with it).
pub fn mentions_ip(line: &str, ip: &str) -> bool {
    line.match_indices(ip).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + ip.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !after.is_some_and(|c| c.is_ascii_digit() || c == '.')
    })
}

// ---------------------------------------------------------------------------------------
// A throwaway Linux user.

/// useradd and userdel lock /etc/passwd; tests running in parallel take turns.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// A Linux user with a home, a shell and an account password, removed (with its home)
/// when dropped, also when the test fails.
pub struct TestUser {
    pub name: String,
    pub password: String,
    pub home: PathBuf,
}

impl TestUser {
    pub fn create() -> TestUser {
        let name = unique("apppass-t");
        // Not shaped like an app password (too short; '0' and '!' are not in its
        // alphabet): pam_apppass says reason=not_app_password.
        let password = format!("Acc0unt!{}", &unique("x")[2..]);
        {
            let _turn = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
            retry_locked(|| {
                Command::new("useradd")
                    .args(["--create-home", "--shell", "/bin/sh"])
                    .args(["--comment", "apppass end-to-end test"])
                    .arg(&name)
                    .output()
            });
        }
        let mut user = TestUser {
            name,
            password,
            home: PathBuf::new(),
        };
        let entry = run(Command::new("getent").args(["passwd", &user.name]));
        let entry = String::from_utf8(entry.stdout).unwrap();
        user.home = PathBuf::from(entry.trim_end().split(':').nth(5).unwrap());
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(
            chpasswd.stdin.take().unwrap(),
            "{}:{}",
            user.name,
            user.password
        )
        .unwrap();
        let out = chpasswd.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "chpasswd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        user
    }

    /// Owner uid and gid, read from the home useradd made.
    pub fn ids(&self) -> (u32, u32) {
        let m = std::fs::metadata(&self.home).unwrap();
        (m.uid(), m.gid())
    }
}

/// Runs a shadow-utils command, again if another process held the passwd lock.
fn retry_locked(mut cmd: impl FnMut() -> std::io::Result<Output>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cmd().expect("shadow-utils command (useradd, userdel)");
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("lock") || Instant::now() > deadline {
            panic!("{}: {err}", out.status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _turn = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        // A session process of the user may take a moment to end after its server.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("userdel")
                .args(["--remove", &self.name])
                .output();
            match out {
                // 6: no such user (any more).
                Ok(out) if out.status.success() || out.status.code() == Some(6) => return,
                Ok(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                other => {
                    eprintln!("could not remove test user {}: {other:?}", self.name);
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The private /etc.

/// A test's apppassd, store and CLI ([`Sandbox`]), plus the private copies of
/// /etc/pam.d and /etc/security the servers run with, and a directory for the servers'
/// own files.
pub struct World {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub pam_d: PathBuf,
    pub security: PathBuf,
}

impl World {
    pub fn new() -> World {
        World::around(Sandbox::new())
    }

    /// A world whose module asks `sandbox`'s apppassd.
    pub fn around(sandbox: Sandbox) -> World {
        let conf = format!("socket = {}\n", sandbox.socket.display());
        World::with(sandbox, &conf)
    }

    /// A world around `sandbox`, whose servers' apppass.conf (what the module reads:
    /// `socket`, `timeout`, `user`) says `conf`.
    pub fn with(sandbox: Sandbox, conf: &str) -> World {
        let dir = tempfile::Builder::new()
            .prefix("apppass-e2e")
            .tempdir()
            .unwrap();
        // The servers' unprivileged processes (dovenull, the mail user) must reach their
        // sockets below it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pam_d = dir.path().join("pam.d");
        let security = dir.path().join("security");
        run(Command::new("cp").arg("-a").arg("/etc/pam.d").arg(&pam_d));
        run(Command::new("cp")
            .arg("-a")
            .arg("/etc/security")
            .arg(&security));
        // The module's default configuration file, as an administrator would write it.
        std::fs::write(security.join("apppass.conf"), conf).unwrap();
        World {
            sandbox,
            dir,
            pam_d,
            security,
        }
    }

    /// Stops apppassd (SIGTERM, waiting for it to exit): what a login gets while it is
    /// down.
    pub fn stop_daemon(&mut self) {
        let status = self.sandbox.daemon.stop();
        assert!(status.success(), "apppassd stopped with {status}");
    }

    /// Starts apppassd again on the same socket, store and configuration.
    pub fn start_daemon(&mut self) {
        let s = &mut self.sandbox;
        s.daemon = common::Daemon::start_at(s.dir.path(), &s.db, &s.conf, &[]);
    }

    /// apppassd's pid: the syslog lines of logins carry it.
    pub fn daemon_pid(&self) -> u32 {
        self.sandbox.daemon.child.id()
    }

    /// Installs the shipped `pam.d/<shipped>` as `/etc/pam.d/<name>` of the namespace,
    /// with the module's path as the only change.
    pub fn install_pam(&self, shipped: &str, name: &str) {
        let text = std::fs::read_to_string(repo().join("pam.d").join(shipped)).unwrap();
        std::fs::write(
            self.pam_d.join(name),
            with_module_path(&text, &self.sandbox.module),
        )
        .unwrap();
    }

    /// `program` with its arguments, run where /etc/pam.d and /etc/security are ours.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount --bind \"$1\" /etc/pam.d && mount --bind \"$2\" /etc/security \
                 && shift 2 && exec \"$@\"",
            )
            .arg("apppass-e2e")
            .arg(&self.pam_d)
            .arg(&self.security)
            .arg(program);
        cmd
    }
}

/// A shipped PAM file with `pam_apppass.so` replaced by the module built from this tree,
/// in rule lines only (comments stay as shipped).
pub fn with_module_path(text: &str, module: &Path) -> String {
    let mut replaced = 0;
    let mut out = String::new();
    for line in text.lines() {
        let is_rule = !line.trim_start().starts_with('#');
        if is_rule && line.split_whitespace().any(|t| t == "pam_apppass.so") {
            out.push_str(&line.replacen("pam_apppass.so", &module.display().to_string(), 1));
            replaced += 1;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(replaced > 0, "no pam_apppass.so rule in the shipped file");
    out
}

// ---------------------------------------------------------------------------------------
// Servers.

/// A server process of the test's own, stopped by its pid (SIGTERM, so that Dovecot's
/// master takes its children with it) when dropped, also when the test fails.
pub struct Server {
    what: String,
    child: Child,
    output: PathBuf,
}

impl Server {
    /// Starts `cmd` and waits until every port accepts connections.
    fn start(
        what: &str,
        mut cmd: Command,
        ports: &[u16],
        output: PathBuf,
    ) -> Result<Server, String> {
        let out = std::fs::File::create(&output).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let mut server = Server {
            what: what.to_string(),
            child,
            output,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in ports {
            loop {
                if let Ok(Some(status)) = server.child.try_wait() {
                    return Err(format!(
                        "{what} exited ({status}) while starting: {}",
                        std::fs::read_to_string(&server.output).unwrap_or_default()
                    ));
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{what} does not listen on port {port}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server, again on other ports if one it picked was taken in the meantime.
fn start_with_ports<T>(
    what: &str,
    mut attempt: impl FnMut(usize) -> (Command, Vec<u16>, PathBuf, T),
) -> (Server, T) {
    let mut last = String::new();
    for n in 0..3 {
        let (cmd, ports, output, extra) = attempt(n);
        match Server::start(what, cmd, &ports, output) {
            Ok(server) => return (server, extra),
            Err(e) => last = e,
        }
    }
    panic!("{last}");
}

/// How a test wants its Dovecot.
pub struct DovecotSetup<'a> {
    /// passdb { driver = pam; args = ... }
    pub passdb_args: &'a str,
    /// auth_cache_size: 0 turns the cache off (Dovecot's default).
    pub auth_cache_size: &'a str,
    /// A SASL socket of Dovecot's auth service for this user (Postfix's smtpd, which
    /// runs as "postfix"), as Dovecot's documentation has one made for Postfix.
    pub sasl_for: Option<&'a str>,
}

impl Default for DovecotSetup<'_> {
    fn default() -> Self {
        DovecotSetup {
            passdb_args: "%s",
            auth_cache_size: "0",
            sasl_for: None,
        }
    }
}

/// A private Dovecot: IMAP, POP3 and (when dovecot-submissiond is installed) submission.
pub struct Dovecot {
    pub server: Server,
    pub imap: u16,
    pub pop3: u16,
    pub submission: Option<u16>,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The SASL socket [`DovecotSetup::sasl_for`] asked for.
    pub sasl_socket: Option<PathBuf>,
}

/// The SASL socket's name in Dovecot's base_dir.
const SASL_SOCKET: &str = "auth-sasl";

pub const DOVECOT: &str = "/usr/sbin/dovecot";
const SUBMISSION_BINARY: &str = "/usr/lib/dovecot/submission";

/// Whether dovecot-submissiond is here (under CI it must be).
pub fn have_submission() -> bool {
    require(
        Path::new(SUBMISSION_BINARY).exists(),
        "dovecot-submissiond (submission)",
    )
}

impl Dovecot {
    pub fn start(world: &World, setup: &DovecotSetup) -> Dovecot {
        let submission = Path::new(SUBMISSION_BINARY).exists();
        let (server, (imap, pop3, sub, dir)) = start_with_ports("dovecot", |n| {
            let dir = world.dir.path().join(format!("dovecot{n}"));
            std::fs::create_dir_all(dir.join("state")).unwrap();
            let (imap, pop3) = (free_port(), free_port());
            let sub = submission.then(free_port);
            let config = dir.join("dovecot.conf");
            std::fs::write(&config, dovecot_config(&dir, imap, pop3, sub, setup)).unwrap();
            let mut cmd = world.command(Path::new(DOVECOT));
            cmd.arg("-F").arg("-c").arg(&config);
            let mut ports = vec![imap, pop3];
            ports.extend(sub);
            (cmd, ports, dir.join("stdout"), (imap, pop3, sub, dir))
        });
        let sasl_socket = setup.sasl_for.map(|_| dir.join("run").join(SASL_SOCKET));
        Dovecot {
            server,
            imap,
            pop3,
            submission: sub,
            config: dir.join("dovecot.conf"),
            log: dir.join("dovecot.log"),
            sasl_socket,
        }
    }

    /// `doveadm auth cache flush [user]` against this instance, as the README says.
    pub fn flush_auth_cache(&self, user: &str) -> String {
        let out = run(Command::new("doveadm")
            .arg("-c")
            .arg(&self.config)
            .args(["auth", "cache", "flush", user]));
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

fn dovecot_config(
    dir: &Path,
    imap: u16,
    pop3: u16,
    submission: Option<u16>,
    setup: &DovecotSetup,
) -> String {
    let name = unique("apppass-e2e");
    let protocols = if submission.is_some() {
        "imap pop3 submission"
    } else {
        "imap pop3"
    };
    let submission_service = submission
        .map(|port| {
            format!(
                "service submission-login {{\n  inet_listener submission {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n"
            )
        })
        .unwrap_or_default();
    let sasl_service = setup
        .sasl_for
        .map(|user| {
            format!(
                "service auth {{\n  unix_listener {SASL_SOCKET} {{\n    mode = 0600\n    user = {user}\n  }}\n}}\n"
            )
        })
        .unwrap_or_default();
    format!(
        "# A private Dovecot for apppass's end-to-end tests: its own instance name, ports and
# directories, nothing shared with a system instance.
instance_name = {name}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = {protocols}
listen = 127.0.0.1
# Plaintext logins on loopback, as a TLS-terminated setup would see them.
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# Every failure would otherwise wait 2 s for its reply.
auth_failure_delay = 0
auth_cache_size = {cache}
auth_cache_ttl = 1 hour
mail_location = maildir:~/Maildir
hostname = apppass-e2e.invalid
# Nothing listens there: submission's AUTH is what is under test, and the session ends
# when submission then tries its relay.
submission_relay_host = 127.0.0.1
submission_relay_port = {relay}
passdb {{
  driver = pam
  args = {args}
}}
userdb {{
  driver = passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
{submission_service}{sasl_service}",
        dir = dir.display(),
        cache = setup.auth_cache_size,
        relay = free_port(),
        args = setup.passdb_args,
    )
}

pub const POSTFIX: &str = "/usr/sbin/postfix";

/// A private Postfix whose smtpd takes SMTP AUTH through a Dovecot's SASL socket
/// (`smtpd_sasl_type = dovecot`), as Postfix's SASL_README sets it up: its own
/// configuration, queue and data directories (`postfix -c DIR`), a loopback port;
/// relaying for authenticated clients only. Stopped with `postfix -c DIR stop`, then by
/// the master's pid, when dropped, also when the test fails.
pub struct Postfix {
    pub port: u16,
    /// The configuration directory (main.cf, master.cf).
    pub config: PathBuf,
    /// Postfix's own log (maillog_file).
    pub log: PathBuf,
    /// The master daemon, a child of `postfix-script start-fg` (which is `server`).
    pub master: u32,
    server: Server,
}

impl Postfix {
    pub fn start(world: &World, dovecot: &Dovecot) -> Postfix {
        let sasl = dovecot
            .sasl_socket
            .as_ref()
            .expect("a Dovecot with a SASL socket for postfix (DovecotSetup::sasl_for)");
        let (server, (port, dir)) = start_with_ports("postfix", |n| {
            let dir = world.dir.path().join(format!("postfix{n}"));
            let config = dir.join("config");
            for d in ["config", "queue", "data"] {
                std::fs::create_dir_all(dir.join(d)).unwrap();
            }
            // Postfix's own files: its data directory is the mail owner's.
            run(Command::new("chown").arg("postfix:").arg(dir.join("data")));
            let port = free_port();
            std::fs::write(config.join("main.cf"), postfix_main_cf(&dir, sasl)).unwrap();
            std::fs::write(
                config.join("master.cf"),
                format!(
                    "# service type private unpriv chroot wakeup maxproc command
127.0.0.1:{port} inet n - n - - smtpd
anvil     unix  -  -  n  -  1  anvil
rewrite   unix  -  -  n  -  -  trivial-rewrite
cleanup   unix  n  -  n  -  0  cleanup
postlog   unix-dgram n - n - 1 postlogd
"
                ),
            )
            .unwrap();
            let mut cmd = Command::new(POSTFIX);
            cmd.arg("-c").arg(&config).arg("start-fg");
            (cmd, vec![port], dir.join("stdout"), (port, dir))
        });
        let pid_file = dir.join("queue/pid/master.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        let master = loop {
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            match pid {
                Some(pid) => break pid,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                None => panic!("no pid in {}", pid_file.display()),
            }
        };
        Postfix {
            port,
            config: dir.join("config"),
            log: dir.join("postfix.log"),
            master,
            server,
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // The master is not our child: stop it as Postfix's own script does (SIGTERM,
        // then SIGKILL to its process group after 5 s); then make sure by its pid.
        let _ = Command::new(POSTFIX)
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(self.master) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if running(self.master) {
            eprintln!("postfix master {} did not stop; killing it", self.master);
            common::signal(self.master, "KILL");
        }
        // `server` (postfix-script, the master's parent) exits with it.
    }
}

/// Whether process `pid` exists and has not exited (a zombie has).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn postfix_main_cf(dir: &Path, sasl: &Path) -> String {
    format!(
        "# A private Postfix for apppass's end-to-end tests: its own directories and port,
# nothing shared with a system instance, and no mail delivered anywhere.
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
maillog_file = {dir}/postfix.log
maillog_file_prefixes = {dir}
inet_protocols = ipv4
inet_interfaces = 127.0.0.1
myhostname = apppass-e2e.invalid
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
# No DNS at test time: no reverse lookup of each client.
smtpd_peername_lookup = no
# SMTP AUTH through Dovecot, which asks PAM with the service Postfix names (smtp).
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {sasl}
smtpd_sasl_security_options = noanonymous
# Plaintext AUTH on loopback, as a TLS-terminated setup would see it.
smtpd_tls_security_level = none
# What SMTP AUTH is for: only an authenticated client may relay.
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
",
        dir = dir.display(),
        sasl = sasl.display(),
    )
}

/// An SMTP session with python3's smtplib: EHLO, AUTH with `mech` (PLAIN or LOGIN), then
/// MAIL and RCPT to an outside address (relaying, which only an authenticated client may
/// do), RSET and QUIT. It prints each reply, never what it sent.
const SMTP_CLIENT: &str = r#"
import smtplib, sys
host, port, source, mech = sys.argv[1:]
user, password = sys.stdin.read().split("\n")[:2]
def reply(step, code, text):
    text = text.decode() if isinstance(text, bytes) else str(text)
    print(step, code, " ".join(text.split()))
s = smtplib.SMTP(host, int(port), source_address=(source, 0), timeout=60)
code, _ = s.ehlo("client.apppass-e2e.invalid")
reply("EHLO", code, "AUTH " + s.esmtp_features.get("auth", ""))
s.user, s.password = user, password
try:
    code, text = s.auth(mech, getattr(s, "auth_" + mech.lower()))
except smtplib.SMTPAuthenticationError as e:
    code, text = e.smtp_code, e.smtp_error
reply("AUTH", code, text)
reply("MAIL", *s.mail("probe@apppass-e2e.invalid"))
reply("RCPT", *s.rcpt("someone@example.com"))
s.rset()
s.quit()
"#;

pub const PYTHON3: &str = "/usr/bin/python3";

/// What an SMTP session gave: the replies, one line per step (`AUTH 235 2.7.0 ...`).
#[derive(Debug)]
pub struct SmtpSession {
    pub transcript: String,
}

impl SmtpSession {
    /// The reply to `step` (EHLO, AUTH, MAIL, RCPT).
    pub fn reply(&self, step: &str) -> &str {
        self.transcript
            .lines()
            .find_map(|l| l.strip_prefix(step)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {step} in\n{}", self.transcript))
    }

    /// Logged in, and so allowed to relay.
    pub fn assert_in(&self) {
        assert!(
            self.reply("AUTH").starts_with("235 2.7.0 "),
            "{}",
            self.transcript
        );
        assert!(
            self.reply("RCPT").starts_with("250 "),
            "{}",
            self.transcript
        );
    }

    /// Refused, and so not allowed to relay.
    pub fn assert_refused(&self) {
        assert!(
            self.reply("AUTH").starts_with("535 5.7.8 "),
            "{}",
            self.transcript
        );
        assert!(
            self.reply("RCPT")
                .starts_with("554 5.7.1 <someone@example.com>: Relay access denied"),
            "{}",
            self.transcript
        );
    }
}

/// An SMTP session with Postfix from `ip`, authenticating with `mech`.
pub fn smtp_login(p: &Postfix, mech: &str, user: &str, password: &str, ip: &str) -> SmtpSession {
    assert!(
        !format!("{user}{password}").contains('\n'),
        "credentials with a line break"
    );
    // The credentials go through stdin, not the command line other processes can read.
    let mut child = Command::new(PYTHON3)
        .arg("-c")
        .arg(SMTP_CLIENT)
        .args(["127.0.0.1", &p.port.to_string(), ip, mech])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    writeln!(child.stdin.take().unwrap(), "{user}\n{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "smtplib from {ip}: {}\n{transcript}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    SmtpSession { transcript }
}

/// Dovecot's protocols, as its PAM service names (passdb args = %s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mail {
    Imap,
    Pop3,
    Submission,
}

impl Mail {
    pub fn service(self) -> &'static str {
        match self {
            Mail::Imap => "imap",
            Mail::Pop3 => "pop3",
            Mail::Submission => "submission",
        }
    }
}

/// What a real client saw.
#[derive(Debug)]
pub struct Attempt {
    pub logged_in: bool,
    /// The protocol exchange (credentials redacted).
    pub transcript: String,
}

/// A login with curl from `ip`: IMAP selects INBOX, POP3 lists the messages, submission
/// authenticates (SMTP AUTH).
pub fn mail_login(d: &Dovecot, proto: Mail, user: &str, password: &str, ip: &str) -> Attempt {
    let url = match proto {
        Mail::Imap => format!("imap://127.0.0.1:{}/INBOX?ALL", d.imap),
        Mail::Pop3 => format!("pop3://127.0.0.1:{}/", d.pop3),
        Mail::Submission => format!(
            "smtp://127.0.0.1:{}/",
            d.submission.expect("submission is not served")
        ),
    };
    assert!(
        !format!("{user}{password}").contains(['"', '\\', '\n']),
        "credentials that need quoting"
    );
    // The credentials go through stdin, not the command line other processes can read.
    let mut child = Command::new("curl")
        .args(["--silent", "--show-error", "--verbose", "--max-time", "60"])
        .args(["--interface", ip, "--config", "-", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    writeln!(child.stdin.take().unwrap(), "user = \"{user}:{password}\"").unwrap();
    let out = child.wait_with_output().unwrap();
    let transcript = redact(&String::from_utf8_lossy(&out.stderr));
    let code = out.status.code();
    let logged_in = match (proto, code) {
        (Mail::Imap | Mail::Pop3, Some(0)) => true,
        // The relay is unreachable, so the command after AUTH fails (curl exits 8);
        // the 235 reply is the login.
        (Mail::Submission, Some(8)) if transcript.contains("< 235 ") => true,
        (_, Some(67)) => false,
        _ => panic!("curl {proto:?} from {ip}: {:?}\n{transcript}", out.status),
    };
    Attempt {
        logged_in,
        transcript,
    }
}

/// curl's transcript without the base64 credentials the client sent.
fn redact(transcript: &str) -> String {
    transcript
        .lines()
        .map(|l| {
            let last = l.split_whitespace().last().unwrap_or("");
            let base64 = last.len() >= 16
                && last
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
            if l.starts_with("> ") && base64 {
                "> [credentials]".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Attempt {
    /// Asserts a successful login and what the client then did.
    pub fn assert_in(&self, proto: Mail) {
        assert!(
            self.logged_in,
            "{proto:?} login refused:\n{}",
            self.transcript
        );
        let proof = match proto {
            Mail::Imap => "OK [READ-WRITE] Select completed",
            Mail::Pop3 => "< +OK 0 messages",
            Mail::Submission => "< 235 2.7.0 Logged in.",
        };
        assert!(
            self.transcript.contains(proof),
            "{proto:?}: no {proof:?} in\n{}",
            self.transcript
        );
    }

    /// Asserts an authentication failure as the protocol reports it.
    pub fn assert_refused(&self, proto: Mail) {
        assert!(
            !self.logged_in,
            "{proto:?} login accepted:\n{}",
            self.transcript
        );
        let proof = match proto {
            Mail::Imap => "NO [AUTHENTICATIONFAILED]",
            Mail::Pop3 => "-ERR [AUTH]",
            Mail::Submission => "< 535 ",
        };
        assert!(
            self.transcript.contains(proof),
            "{proto:?}: no {proof:?} in\n{}",
            self.transcript
        );
    }
}

/// sshd's privilege separation directory, /run/sshd, which a packaged sshd gets from its
/// init script: made for the test's sshd if missing and removed after the last one.
struct PrivsepDir;

static PRIVSEP: Mutex<(usize, bool)> = Mutex::new((0, false));
const PRIVSEP_DIR: &str = "/run/sshd";

impl PrivsepDir {
    fn take() -> PrivsepDir {
        let mut state = PRIVSEP.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 == 0 && !Path::new(PRIVSEP_DIR).exists() {
            std::fs::create_dir(PRIVSEP_DIR).unwrap();
            std::fs::set_permissions(PRIVSEP_DIR, std::fs::Permissions::from_mode(0o755)).unwrap();
            state.1 = true;
        }
        state.0 += 1;
        PrivsepDir
    }
}

impl Drop for PrivsepDir {
    fn drop(&mut self) {
        let mut state = PRIVSEP.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        if state.0 == 0 && state.1 {
            let _ = std::fs::remove_dir(PRIVSEP_DIR);
            state.1 = false;
        }
    }
}

pub const SSHD: &str = "/usr/sbin/sshd";

/// A private sshd on 127.0.0.1, PAM service "sshd".
pub struct Sshd {
    // Declared first so that the server stops before its privsep directory goes.
    pub server: Server,
    pub port: u16,
    _privsep: PrivsepDir,
}

impl Sshd {
    /// Only `users` may log in (an unknown name among them still gets "Invalid user").
    pub fn start(world: &World, users: &[&str]) -> Sshd {
        let privsep = PrivsepDir::take();
        let key = world.dir.path().join("ssh_host_ed25519_key");
        if !key.exists() {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key));
        }
        let (server, port) = start_with_ports("sshd", |n| {
            let port = free_port();
            let config = world.dir.path().join(format!("sshd_config{n}"));
            std::fs::write(
                &config,
                format!(
                    "# A private sshd for apppass's end-to-end tests.
ListenAddress 127.0.0.1:{port}
HostKey {key}
PidFile {dir}/sshd{n}.pid
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication yes
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PermitRootLogin no
AllowUsers {users}
UseDNS no
PrintMotd no
",
                    key = key.display(),
                    dir = world.dir.path().display(),
                    users = users.join(" "),
                ),
            )
            .unwrap();
            let mut cmd = world.command(Path::new(SSHD));
            cmd.arg("-D").arg("-f").arg(&config);
            (
                cmd,
                vec![port],
                world.dir.path().join(format!("sshd{n}.out")),
                port,
            )
        });
        Sshd {
            server,
            port,
            _privsep: privsep,
        }
    }
}

/// What an ssh login that ran `echo apppass-e2e:$(id -un)` gave.
#[derive(Debug)]
pub struct SshLogin {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    /// Password prompts sshpass answered.
    pub prompts: usize,
}

pub const SSH_COMMAND: &str = "echo apppass-e2e:$(id -un)";

fn ssh_base(sshd: &Sshd, ip: &str) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=30",
        "-p",
        &sshd.port.to_string(),
        "-b",
        ip,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn ssh_result(out: Output) -> SshLogin {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    SshLogin {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        prompts: stderr.matches("SSHPASS: detected prompt").count(),
        stderr,
    }
}

/// A password login (`method` is "password" or "keyboard-interactive") from `ip`, with
/// sshpass answering the prompt; it gives up on a second prompt.
pub fn ssh_password(sshd: &Sshd, method: &str, user: &str, password: &str, ip: &str) -> SshLogin {
    let out = Command::new("sshpass")
        .args(["-v", "-e", "ssh"])
        .args(ssh_base(sshd, ip))
        .args(["-o", "PubkeyAuthentication=no", "-o"])
        .arg(format!("PreferredAuthentications={method}"))
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .arg(format!("{user}@127.0.0.1"))
        .arg(SSH_COMMAND)
        // sshpass reads it from the environment, not from the command line.
        .env("SSHPASS", password)
        .stdin(Stdio::null())
        .output()
        .expect("sshpass");
    ssh_result(out)
}

/// A key login from `ip`.
pub fn ssh_key(sshd: &Sshd, user: &str, key: &Path, ip: &str) -> SshLogin {
    let out = Command::new("ssh")
        .args(ssh_base(sshd, ip))
        .arg("-i")
        .arg(key)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args(["-o", "PreferredAuthentications=publickey"])
        .arg(format!("{user}@127.0.0.1"))
        .arg(SSH_COMMAND)
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    ssh_result(out)
}

impl SshLogin {
    pub fn assert_in(&self, user: &str) {
        assert!(self.ok, "ssh login refused: {}", self.stderr);
        assert_eq!(
            self.stdout,
            format!("apppass-e2e:{user}\n"),
            "{}",
            self.stderr
        );
    }

    pub fn assert_refused(&self) {
        assert!(!self.ok, "ssh login accepted: {}", self.stdout);
        assert!(
            self.stderr.contains("Permission denied"),
            "not an authentication failure: {}",
            self.stderr
        );
        assert_eq!(self.stdout, "");
    }
}

/// A key pair for `user`, its public half in ~/.ssh/authorized_keys (removed with the
/// user's home); returns the private key's path.
pub fn authorize_key(world: &World, user: &TestUser) -> PathBuf {
    let key = world.dir.path().join("client_ed25519_key");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
    let ssh = user.home.join(".ssh");
    std::fs::create_dir(&ssh).unwrap();
    let keys = ssh.join("authorized_keys");
    std::fs::copy(key.with_extension("pub"), &keys).unwrap();
    let (uid, gid) = user.ids();
    for (path, mode) in [(&ssh, 0o700), (&keys, 0o600)] {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    key
}

// ---------------------------------------------------------------------------------------
// Syslog and fail2ban.

/// What one login attempt must have logged: apppassd writes the line, in the shape the
/// module wrote it before (`pam_apppass(SERVICE:auth): ...`).
#[derive(Debug, Clone)]
pub struct Expected {
    pub ip: String,
    pub user: String,
    pub service: String,
    /// `None`: success; else the failure's reason.
    pub reason: Option<&'static str>,
    /// The app password's id, when the line names one.
    pub id: Option<i64>,
    /// The success line's label.
    pub label: String,
}

impl Expected {
    /// Whether the shipped fail2ban filter counts this line in strict mode: every
    /// failure but a revoked password (no guess: a stale device). Migration mode ignores
    /// more, which its callers leave out.
    pub fn counted(&self) -> bool {
        self.reason.is_some_and(|r| r != "revoked")
    }

    pub fn success(ip: &str, user: &str, service: &str, id: i64, label: &str) -> Expected {
        Expected {
            ip: ip.into(),
            user: user.into(),
            service: service.into(),
            reason: None,
            id: Some(id),
            label: label.into(),
        }
    }

    pub fn failure(
        ip: &str,
        user: &str,
        service: &str,
        reason: &'static str,
        id: Option<i64>,
    ) -> Expected {
        Expected {
            ip: ip.into(),
            user: user.into(),
            service: service.into(),
            reason: Some(reason),
            id,
            label: String::new(),
        }
    }

    /// The line as README and pam_apppass(8) document it, from `pam_apppass(` on.
    fn line(&self, tty: &str, ruser: &str) -> String {
        let head = format!(
            "pam_apppass({svc}:auth): authentication {what}; logname= uid=0 euid=0 tty={tty} ruser={ruser} rhost={ip} user={user} service={svc}",
            svc = self.service,
            what = if self.reason.is_some() {
                "failure"
            } else {
                "success"
            },
            ip = self.ip,
            user = self.user,
        );
        match (self.reason, self.id) {
            (None, Some(id)) => format!("{head} id={id} label=\"{}\"", self.label),
            (Some(r), Some(id)) => format!("{head} reason={r} id={id}"),
            (Some(r), None) => format!("{head} reason={r}"),
            (None, None) => unreachable!("a success names its app password"),
        }
    }
}

/// How a host program fills the PAM items the module passes on and apppassd logs, and
/// the syslog tag of what the module itself logs (through libpam, as the host).
#[derive(Debug, Clone, Copy)]
pub enum Host {
    /// Dovecot's auth worker: syslog tag `auth`, PAM_TTY "dovecot", PAM_RUSER the user.
    Dovecot,
    /// sshd: syslog tag `sshd[pid]`, PAM_TTY "ssh", no PAM_RUSER.
    Sshd,
}

impl Host {
    /// The start of the syslog tag of the host's own lines.
    pub fn tag(self) -> &'static str {
        match self {
            Host::Dovecot => " auth: ",
            Host::Sshd => " sshd[",
        }
    }
}

/// Checks that each attempt logged exactly its one documented line, written by the
/// world's apppassd as rsyslog wrote it, and returns every auth.log line that names one
/// of the attempts' addresses (ours, pam_unix's and the server's own), for fail2ban.
pub fn check_syslog(
    log: &AuthLog,
    world: &World,
    host: Host,
    expected: &[Expected],
) -> Vec<String> {
    let tag = format!(" apppassd[{}]: ", world.daemon_pid());
    for e in expected {
        let marker = format!("rhost={} user={} service=", e.ip, e.user);
        let lines = log.wait_for(&marker, 1);
        assert_eq!(lines.len(), 1, "one line for {e:?}: {lines:#?}");
        let (tty, ruser) = match host {
            Host::Dovecot => ("dovecot", e.user.as_str()),
            Host::Sshd => ("ssh", ""),
        };
        let want = format!("{tag}{}", e.line(tty, ruser));
        assert!(
            lines[0].ends_with(&want),
            "logged:   {}\nexpected: ...{want}",
            lines[0]
        );
    }
    log.wait_for("", 0)
        .into_iter()
        .filter(|l| expected.iter().any(|e| mentions_ip(l, &e.ip)))
        .collect()
}

/// Checks that `n` logins to `service` found apppassd down: each logged, through the
/// host (libpam's pam_syslog, the host's tag), that the module could not ask apppassd on
/// the world's socket and answered PAM_AUTHINFO_UNAVAIL; returns those lines.
pub fn check_unavailable(
    log: &AuthLog,
    world: &World,
    host: Host,
    service: &str,
    n: usize,
) -> Vec<String> {
    let marker = format!(
        "pam_apppass({service}:auth): cannot ask apppassd on {}: apppassd is not running",
        world.sandbox.socket.display()
    );
    let lines = log.wait_for(&marker, n);
    assert_eq!(lines.len(), n, "{marker}: {lines:#?}");
    for l in &lines {
        assert!(
            l.contains(host.tag()) && l.ends_with(": PAM_AUTHINFO_UNAVAIL"),
            "{l}"
        );
    }
    lines
}

/// The addresses (one per counted failure, sorted) fail2ban-regex finds in `lines` with
/// `filter`: `apppass[mode=...]` is ours from `fail2ban/filter.d/`, installed next to the
/// system's common.conf as an administrator would; any other name is a stock filter from
/// /etc/fail2ban/filter.d.
pub fn fail2ban_ips(lines: &[String], filter: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let (name, options) = match filter.split_once('[') {
        Some((n, o)) => (n, format!("[{o}")),
        None => (filter, String::new()),
    };
    let path = if name == "apppass" {
        let filters = dir.path().join("filter.d");
        std::fs::create_dir(&filters).unwrap();
        std::fs::copy(
            repo().join("fail2ban/filter.d/apppass.conf"),
            filters.join("apppass.conf"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/etc/fail2ban/filter.d/common.conf",
            filters.join("common.conf"),
        )
        .unwrap();
        filters.join("apppass.conf")
    } else {
        PathBuf::from(format!("/etc/fail2ban/filter.d/{name}.conf"))
    };
    let out = run(Command::new("fail2ban-regex")
        .args(["--out", "ip"])
        .arg(&log)
        .arg(format!("{}{options}", path.display())));
    let mut ips: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    ips.sort();
    ips
}

/// `ips`, sorted, for comparing with [`fail2ban_ips`].
pub fn sorted<'a>(ips: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = ips.into_iter().cloned().collect();
    v.sort();
    v
}

/// The `apppass list` entry with this id.
pub fn listed(world: &World, id: i64) -> serde_json::Value {
    world
        .sandbox
        .list()
        .into_iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no app password {id} listed"))
}

/// Asserts the last use `apppass list` shows for an app password.
pub fn assert_last_use(world: &World, id: i64, ip: &str, service: &str, uses: i64) {
    let row = listed(world, id);
    assert_eq!(row["last_rhost"], ip, "{row}");
    assert_eq!(row["last_service"], service, "{row}");
    assert_eq!(row["use_count"], uses, "{row}");
}
