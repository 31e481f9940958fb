//! The portal's test world: throwaway accounts (the person, and the portal's own system
//! user), a real apppassd with the shipped `apppass-portal` stack, and a real apppass-web
//! running as the portal's user; plus a plain HTTP/1.1 client, so that every byte a test
//! sends (hostile ones included) is its own.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, Daemon, random_hex, unique, workspace_bin};

/// Throwaway accounts, removed again even when a test fails.
#[derive(Default)]
pub struct Accounts(Vec<String>);

impl Accounts {
    /// A new account with `password` (None: a locked one, for system users).
    pub fn create(&mut self, prefix: &str, password: Option<&str>) -> String {
        let name = unique(prefix);
        let out = Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.0.push(name.clone());
        if let Some(pw) = password {
            let mut c = Command::new("chpasswd")
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            writeln!(c.stdin.take().unwrap(), "{name}:{pw}").unwrap();
            assert!(c.wait().unwrap().success(), "chpasswd failed");
        }
        name
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("userdel").arg(name).output();
        }
    }
}

/// useradd and chpasswd lock /etc/passwd and give up rather than wait: one test at a time
/// creates accounts.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shipped portal stack, as installed: the file in debian/pam.d.
pub fn shipped_stack() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(repo.join("debian/pam.d/apppass-portal")).unwrap()
}

/// A running apppass-web; killed when dropped.
pub struct Web {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Web {
    /// Starts apppass-web with `args` (as `user` through setpriv, if given) and waits
    /// until `ready` (a TCP port, or a Unix socket path) accepts.
    pub fn start(user: Option<&str>, args: &[&str], log: &Path, port: u16) -> Web {
        let mut c = common::as_user(user);
        c.arg(workspace_bin("apppass-web"))
            .args(args)
            .arg("--stderr")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        let child = c.spawn().unwrap();
        let mut web = Web {
            child,
            port,
            log: log.to_path_buf(),
        };
        // Port 0: a Unix socket, which the caller waits for.
        if port != 0 {
            web.wait(|| TcpStream::connect(("127.0.0.1", port)).is_ok());
        }
        web
    }

    /// apppass-web alone (as root, no apppassd behind it), listening on `listen`
    /// (`port`: as for [`Web::start`]), with `conf` as its whole configuration, in
    /// `dir`: for what it does before it asks apppassd anything.
    pub fn alone(dir: &Path, conf: &str, listen: &str, port: u16, log: &str) -> Web {
        let path = dir.join("apppass.conf");
        std::fs::write(&path, conf).unwrap();
        let socket = dir.join("none.sock");
        Web::start(
            None,
            &[
                "--listen",
                listen,
                "--config",
                path.to_str().unwrap(),
                "--socket",
                socket.to_str().unwrap(),
            ],
            &dir.join(log),
            port,
        )
    }

    pub fn wait(&mut self, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("apppass-web exited at start: {status}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "apppass-web did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        common::signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole world: a person with an account password, apppassd, and the portal.
pub struct World {
    pub web: Web,
    pub daemon: Daemon,
    pub person: String,
    pub password: String,
    pub dir: tempfile::TempDir,
    pub confdir: PathBuf,
    pub accounts: Accounts,
}

/// A throwaway admin in `accounts`: their name (useradd gave them a group of that name,
/// which is what admin_group names) and account password.
pub fn admin(accounts: &mut Accounts) -> (String, String) {
    let password = format!("Adm-{}", random_hex(8));
    let _g = serial();
    (accounts.create("apwadm", Some(&password)), password)
}

impl World {
    /// An app password for the person, made by root with the CLI (no proof asked):
    /// the password and its id.
    pub fn add_for_person(&self, label: &str) -> (String, i64) {
        let out = Command::new(workspace_bin("apppass"))
            .arg("--socket")
            .arg(&self.daemon.socket)
            .arg("--config")
            .arg(&self.daemon.conf)
            .args(["add", "--user", &self.person, "--service", "mail"])
            .args(["--label", label, "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            added["password"].as_str().unwrap().to_string(),
            added["id"].as_i64().unwrap(),
        )
    }

    /// `conf_extra`: more apppass.conf lines; `stack`: the `apppass-portal` stack.
    pub fn start(conf_extra: &str, stack: &str) -> World {
        let mut accounts = Accounts::default();
        let password = format!("Pw-{}", random_hex(8));
        let (person, portal_user) = {
            let _guard = serial();
            (
                accounts.create("apw", Some(&password)),
                accounts.create("apwweb", None),
            )
        };
        let dir = tempfile::Builder::new()
            .prefix("apppass-web")
            .tempdir()
            .unwrap();
        // The portal runs as its own user: it must reach the socket and read the
        // configuration, and nothing else here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pam_dir = dir.path().join("pam.d");
        std::fs::create_dir(&pam_dir).unwrap();
        std::fs::write(pam_dir.join("apppass-portal"), stack).unwrap();
        // notify = no: owner notices are not what these tests are about.
        let conf = dir.path().join("apppass.conf");
        std::fs::write(
            &conf,
            format!(
                "portal_user = {portal_user}\npam_helper = {}\npam_dir = {}\n\
                 imap_host = imap.example.org\nsmtp_host = smtp.example.org\nmail_domain = example.org\n\
                 site_name = Example Mail\nnotify = no\n{conf_extra}",
                workspace_bin("apppass-pam-helper").display(),
                pam_dir.display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let daemon = Daemon::start_at(dir.path(), &dir.path().join("db/apppass.db"), &conf, &[]);
        // Logins through the real libpam and the built module, as Dovecot would.
        let confdir = dir.path().join("host-pam.d");
        std::fs::create_dir(&confdir).unwrap();
        std::fs::write(
            confdir.join("imap"),
            format!(
                "auth required {} socket={} conf={}\n",
                common::built_module().display(),
                daemon.socket.display(),
                conf.display()
            ),
        )
        .unwrap();
        let port = common::free_port();
        let listen = format!("127.0.0.1:{port}");
        let web = Web::start(
            Some(&portal_user),
            &[
                "--listen",
                &listen,
                "--socket",
                daemon.socket.to_str().unwrap(),
                "--config",
                conf.to_str().unwrap(),
            ],
            &dir.path().join("web.log"),
            port,
        );
        World {
            web,
            daemon,
            person,
            password,
            dir,
            confdir,
            accounts,
        }
    }

    /// A login through the real libpam with `password`, as the mail server would.
    pub fn imap_login(&self, password: &str) -> pam_apppass::code::Code {
        common::login_in(
            &self.confdir,
            "imap",
            &self.person,
            password.as_bytes(),
            Some("192.0.2.1"),
        )
        .code
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Sends `head` (request line and headers, without the blank line) and `body` as they
/// are, one request per connection; reads the whole answer.
pub fn raw(port: u16, head: &str, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = head.trim_end().replace('\n', "\r\n").into_bytes();
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    req.extend_from_slice(body);
    // The server may answer (413, say) and close before reading all of a huge body.
    let _ = s.write_all(&req);
    // Read to the end of the body its Content-Length gives (a server may keep the
    // connection open all the same), or else to the end of the stream.
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(split) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| out.len() >= split + 4 + n) {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    parse(&out)
}

pub fn parse(out: &[u8]) -> Answer {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(out)));
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let mut body = out[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = unchunk(&body);
    }
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

/// A browser-like client of the portal: it keeps the session cookie and sends the
/// portal's own Origin with its forms.
pub struct Client {
    pub port: u16,
    pub cookie: Option<String>,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client { port, cookie: None }
    }

    fn cookie_header(&self) -> String {
        self.cookie
            .as_ref()
            .map(|c| format!("\nCookie: __Host-apppass={c}"))
            .unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Answer {
        raw(
            self.port,
            &format!(
                "GET {path} HTTP/1.1\nHost: 127.0.0.1:{}{}",
                self.port,
                self.cookie_header()
            ),
            b"",
        )
    }

    /// A form POST from the portal's own pages.
    pub fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        self.post_from(
            path,
            fields,
            Some(&format!("http://127.0.0.1:{}", self.port)),
        )
    }

    pub fn post_from(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Answer {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let origin = origin.map(|o| format!("\nOrigin: {o}")).unwrap_or_default();
        let a = raw(
            self.port,
            &format!(
                "POST {path} HTTP/1.1\nHost: 127.0.0.1:{}{origin}{}\nContent-Type: application/x-www-form-urlencoded\nContent-Length: {}",
                self.port,
                self.cookie_header(),
                body.len()
            ),
            body.as_bytes(),
        );
        for c in a.all("set-cookie") {
            if let Some(v) = c.strip_prefix("__Host-apppass=") {
                let v = v.split(';').next().unwrap();
                self.cookie = (!v.is_empty()).then(|| v.to_string());
            }
        }
        a
    }
}

pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of the first `<input name="NAME" ... value="...">` in `html`.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.split("value=\"").nth(1)?;
    Some(unescape(&v[..v.find('"')?]))
}

pub fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
