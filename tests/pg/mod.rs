//! A private PostgreSQL cluster for the tests and the benchmark: `initdb` into a
//! temporary directory, `pg_ctl start` on a free loopback port with the unix socket in
//! that directory, stopped (`pg_ctl stop -m immediate`, then by pid) when dropped, also
//! when a test fails. As root the server runs as the `postgres` system user (initdb
//! refuses root). The superuser logs in over the socket (trust); apppass's roles over
//! TCP with passwords (scram-sha-256), from a password file, and TLS that verifies the
//! server: a throwaway CA and a server certificate for 127.0.0.1, made with `openssl`
//! when the cluster starts (apppass refuses TCP without `sslmode=verify-full`).
//!
//! Roles, as README "Running on several hosts" sets them up: `apppass_admin` owns each
//! database and runs the CLI; `apppass_login` gets what sql/postgres/roles.sql grants.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, is_root, random_hex};

/// The newest PostgreSQL server installed (Debian: /usr/lib/postgresql/VERSION/bin).
pub fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "pg_ctl", "psql", "postgres"]
                .iter()
                .all(|p| bin.join(p).exists())
                .then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

pub const ADMIN: &str = "apppass_admin";
pub const LOGIN: &str = "apppass_login";

/// A running private cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    tls: PathBuf,
    /// Passwords of apppass_admin and apppass_login.
    pub admin_password: String,
    pub login_password: String,
}

impl Cluster {
    /// Makes and starts a cluster; `Err` says what is missing.
    pub fn start() -> Result<Cluster, String> {
        let bin = server_bin().ok_or("PostgreSQL server (apt-get install postgresql)")?;
        if is_root() && !Path::new("/usr/sbin/runuser").exists() {
            return Err("runuser (util-linux)".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("apppass-pg")
            .tempdir()
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        let log = dir.path().join("server.log");
        let tls = dir.path().join("tls");
        for d in [&data, &sock, &tls] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(&log, "").unwrap();
        let ca = certificates(&tls)?;
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .args([&data, &sock, &log, &tls])
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("a postgres system user (package postgresql-common)".into());
            }
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut cluster = Cluster {
            dir,
            port: 0,
            bin,
            data,
            sock,
            log,
            ca,
            tls,
            admin_password: random_hex(12),
            login_password: random_hex(12),
        };
        let mut initdb = cluster.server_cmd("initdb");
        initdb.args([
            "-D",
            cluster.data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        run(initdb)?;
        let mut last = String::new();
        for _ in 0..3 {
            cluster.port = free_port();
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    cluster.psql(
                        "postgres",
                        &format!(
                            "CREATE ROLE {ADMIN} LOGIN PASSWORD '{}';
                             CREATE ROLE {LOGIN} LOGIN PASSWORD '{}';",
                            cluster.admin_password, cluster.login_password
                        ),
                    );
                    return Ok(cluster);
                }
                Err(e) => last = e,
            }
        }
        Err(format!("pg_ctl start failed: {last}"))
    }

    /// A server program, as the postgres user when we are root.
    fn server_cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut c = if is_root() {
            let mut c = Command::new("/usr/sbin/runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        c.current_dir("/").stdin(Stdio::null());
        c
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        // fsync off (a throwaway cluster), but commits reach the WAL before they return:
        // the tests stop the server with -m immediate and expect the data back.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c full_page_writes=off -c max_connections=60 \
             -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            self.port,
            self.sock.display(),
            self.tls.join("server.crt").display(),
            self.tls.join("server.key").display(),
        );
        let mut c = self.server_cmd("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        run(c).map(|_| ()).map_err(|e| {
            format!(
                "{e}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }

    /// `pg_ctl stop -m immediate`: the server is gone at once, as if killed.
    pub fn stop_immediate(&self) {
        let mut c = self.server_cmd("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        let _ = c.output();
    }

    /// Starts it again after [`Self::stop_immediate`], on the same port.
    pub fn restart(&self) {
        self.pg_ctl_start().unwrap();
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The postmaster and every process it started (each backend is the leader of a
    /// process group of its own, so a signal to the postmaster's group misses them).
    pub fn pids(&self) -> Vec<u32> {
        let Some(postmaster) = self.pid() else {
            return Vec::new();
        };
        let mut pids = vec![postmaster];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces, so read after its ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Sends a signal to the whole server, backends included (STOP: hung, answering
    /// nothing, not even on connections already open; CONT: back).
    pub fn signal_all(&self, signal: &str) {
        for pid in self.pids() {
            // One may have exited since it was listed.
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Sends a signal to the postmaster (STOP: hung, accepting nothing; CONT: back).
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("postmaster running").to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// psql over the unix socket as the superuser, or `Err` with its stderr.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self.client("postgres", db, None).args(["-c", sql]).output();
        let out = out.map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// psql as `user`: over TCP with the password (an apppass role), or over the socket
    /// as the superuser.
    pub fn client(&self, user: &str, db: &str, password: Option<&str>) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", db])
            .arg("-p")
            .arg(self.port.to_string())
            .stdin(Stdio::null());
        match password {
            Some(pw) => {
                c.args(["-h", "127.0.0.1"]).env("PGPASSWORD", pw);
            }
            None => {
                c.arg("-h").arg(&self.sock);
            }
        }
        c
    }

    /// A new, empty database owned by apppass_admin; returns its name.
    pub fn create_database(&self) -> String {
        let name = format!("apppass_{}", random_hex(4));
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER {ADMIN}"));
        name
    }

    /// Applies sql/postgres/roles.sql to `db` (once it has its schema), as a superuser.
    pub fn grant_login_role(&self, db: &str) {
        let roles = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/postgres/roles.sql");
        let out = self
            .client("postgres", db, None)
            .arg("-f")
            .arg(roles)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "roles.sql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgresql://ROLE@127.0.0.1:PORT/DB?sslmode=verify-full&sslrootcert=CA`.
    pub fn uri(&self, role: &str, db: &str) -> String {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            self.plain_uri(role, db),
            self.ca.display()
        )
    }

    /// `postgresql://ROLE@127.0.0.1:PORT/DB`: TCP, without TLS settings.
    pub fn plain_uri(&self, role: &str, db: &str) -> String {
        format!("postgresql://{role}@127.0.0.1:{}/{db}", self.port)
    }

    /// `host=SOCKET_DIR port=PORT dbname=DB user=ROLE`: the Unix socket (trust).
    pub fn socket_conninfo(&self, role: &str, db: &str) -> String {
        format!(
            "host={} port={} dbname={db} user={role}",
            self.sock.display(),
            self.port
        )
    }

    /// The CA file that verifies the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca
    }

    /// Writes a password file (mode 0600) with the given roles' passwords.
    pub fn passfile(&self, path: &Path, roles: &[&str]) {
        let mut text = String::new();
        for role in roles {
            let pw = if *role == ADMIN {
                &self.admin_password
            } else {
                &self.login_password
            };
            text.push_str(&format!("127.0.0.1:{}:*:{role}:{pw}\n", self.port));
        }
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// The server's log so far (for failure messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) server cannot shut down: wake it first.
        self.signal_all("CONT");
        self.stop_immediate();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(pid) = self.pid() {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Another throwaway CA, in `dir`, that signed nothing this cluster uses; returns its
/// file.
pub fn unrelated_ca(dir: &Path) -> PathBuf {
    let mut c = Command::new("openssl");
    c.current_dir(dir).stdin(Stdio::null()).args([
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=apppass unrelated CA",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "other-ca.key",
        "-out",
        "other-ca.crt",
    ]);
    run(c).unwrap();
    dir.join("other-ca.crt")
}

/// A throwaway CA and a certificate it signed for 127.0.0.1 (ECDSA P-256, two days), in
/// `dir`; returns the CA's file.
fn certificates(dir: &Path) -> Result<PathBuf, String> {
    let openssl = |args: &[&str]| {
        let mut c = Command::new("openssl");
        c.current_dir(dir).args(args).stdin(Stdio::null());
        run(c).map_err(|e| {
            if e.contains("No such file") {
                "openssl (package openssl)".to_string()
            } else {
                e
            }
        })
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=apppass test CA"];
    ca.extend(key);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(&ca)?;
    let mut req = vec!["req", "-subj", "/CN=apppass test server"];
    req.extend(key);
    req.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&req)?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ])?;
    // The server refuses a key others can read.
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    Ok(dir.join("ca.crt"))
}

fn run(mut c: Command) -> Result<Output, String> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{c:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
