//! The portal, apppass-web, over real HTTP: a real apppassd running the shipped
//! `apppass-portal` stack (pam_unix) through the real PAM helper, for a throwaway account;
//! apppass-web running as a throwaway system user of its own (the daemon's `portal_user`);
//! every request written byte by byte. Sign in, create (shown once, QR code and profile
//! read back), log in with it through the real libpam and the built module, revoke it,
//! sign out; the security headers and cookie; forged, cross-site and hostile requests;
//! autoconfig; a Unix socket and the built-in TLS; the systemd unit.

mod common;
#[path = "web/portal.rs"]
mod portal;

use std::process::Command;

use common::{is_root, require};
use pam_apppass::code::Code;
use portal::{Client, World, input_value, raw};

fn prerequisites() -> bool {
    require(is_root(), "root (throwaway accounts, the PAM helper)")
        && require(
            ["useradd", "userdel", "chpasswd", "setpriv", "python3"]
                .iter()
                .all(|p| {
                    Command::new("sh")
                        .args(["-c", &format!("command -v {p}")])
                        .output()
                        .is_ok_and(|o| o.status.success())
                }),
            "useradd, userdel, chpasswd, setpriv, python3",
        )
}

/// The security headers every page carries.
fn assert_headers(a: &portal::Answer) {
    let csp = a.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(a.header("x-frame-options"), Some("DENY"));
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
}

fn sign_in(w: &World) -> Client {
    let mut c = Client::new(w.web.port);
    let a = c.post("/signin", &[("user", &w.person), ("password", &w.password)]);
    assert_eq!(
        a.status,
        303,
        "sign-in: {}\n{}\n{}",
        a.body,
        w.web.log(),
        w.daemon.log()
    );
    assert_eq!(a.header("location"), Some("/"));
    assert!(c.cookie.is_some());
    c
}

/// The QR code's SVG (unit squares in one path) drawn into pixels and decoded.
fn decode_qr(svg: &str) -> String {
    let size: usize = svg
        .split("viewBox=\"0 0 ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let d = svg
        .split(" d=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let mut dark = vec![vec![false; size]; size];
    for m in d.split('M').filter(|m| !m.is_empty()) {
        let xy = m.split('h').next().unwrap();
        let (x, y) = xy.split_once(' ').unwrap();
        dark[y.parse::<usize>().unwrap()][x.parse::<usize>().unwrap()] = true;
    }
    const SCALE: usize = 4;
    let mut img =
        rqrr::PreparedImage::prepare_from_greyscale(size * SCALE, size * SCALE, |x, y| {
            if dark[y / SCALE][x / SCALE] { 0 } else { 255 }
        });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    grids[0].decode().unwrap().1
}

/// The profile from the page's data: link, read back by Python's plistlib.
fn read_profile(html: &str) -> serde_json::Value {
    let b64 = html
        .split("data:application/x-apple-aspen-config;base64,")
        .nth(1)
        .expect("a profile link")
        .split('"')
        .next()
        .unwrap();
    let script = "import sys,json,plistlib,base64\n\
                  p=plistlib.loads(base64.b64decode(sys.stdin.read()))\n\
                  m=p['PayloadContent'][0]\n\
                  print(json.dumps({k:m[k] for k in m}|{'type':p['PayloadType']}))";
    let mut py = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    py.stdin.take().unwrap().write_all(b64.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success(), "plistlib could not read the profile");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sign_in_create_shown_once_use_revoke_sign_out() {
    if !prerequisites() {
        return;
    }
    let w = World::start("", &portal::shipped_stack());
    let auth_log = common::AuthLog::open();
    // Signed out: every page leads to the sign-in form.
    let a = Client::new(w.web.port).get("/");
    assert_eq!((a.status, a.header("location")), (303, Some("/signin")));
    let form = Client::new(w.web.port).get("/signin");
    assert_eq!(form.status, 200);
    assert_headers(&form);

    // A wrong password, then the right one.
    let mut c = Client::new(w.web.port);
    let a = c.post("/signin", &[("user", &w.person), ("password", "not-it")]);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("not right") && c.cookie.is_none());
    let a =
        Client::new(w.web.port).post("/signin", &[("user", &w.person), ("password", &w.password)]);
    let cookie = a
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("__Host-apppass="))
        .unwrap()
        .to_string();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    assert!(!cookie.contains("Domain"), "__Host- cookies name no domain");
    let mut c = sign_in(&w);

    // The list, then the create form.
    let home = c.get("/");
    assert_eq!(home.status, 200, "{}", home.body);
    assert_eq!(home.header("cache-control"), Some("no-store"));
    assert!(home.body.contains(&w.person));
    let new = c.get("/new");
    let csrf = input_value(&new.body, "csrf").unwrap();
    let nonce = input_value(&new.body, "nonce").unwrap();
    assert!(
        !new.body.contains("name=\"password\""),
        "a fresh sign-in needs no second proof"
    );

    // A forged form (no CSRF value, a wrong one) makes nothing.
    let label = "<script>alert(1)</script>";
    let a = c.post(
        "/new",
        &[("nonce", &nonce), ("service", "mail"), ("label", label)],
    );
    assert_eq!(a.status, 403);
    let a = c.post(
        "/new",
        &[
            ("csrf", "x"),
            ("nonce", &nonce),
            ("service", "mail"),
            ("label", label),
        ],
    );
    assert_eq!(a.status, 403);
    // From another site, with the right CSRF value even: refused.
    let a = c.post_from(
        "/new",
        &[
            ("csrf", &csrf),
            ("nonce", &nonce),
            ("service", "mail"),
            ("label", label),
        ],
        Some("https://evil.example"),
    );
    assert_eq!(a.status, 403);
    let a = c.post_from(
        "/new",
        &[("csrf", &csrf), ("nonce", &nonce), ("service", "mail")],
        None,
    );
    assert_eq!(a.status, 403, "no Origin and no Referer");

    // Created: shown once, with its QR code and profile, never stored by the browser.
    let shown = c.post(
        "/new",
        &[
            ("csrf", &csrf),
            ("nonce", &nonce),
            ("service", "mail"),
            ("label", label),
        ],
    );
    assert_eq!(shown.status, 200, "{}\n{}", shown.body, w.daemon.log());
    assert_eq!(shown.header("cache-control"), Some("no-store"));
    assert_headers(&shown);
    let password = shown
        .body
        .split("data-copy=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(password.len(), 34, "{password}");
    assert!(shown.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!shown.body.contains(label));
    let svg = &shown.body[shown.body.find("<svg").unwrap()..];
    assert_eq!(decode_qr(svg), password);
    let profile = read_profile(&shown.body);
    assert_eq!(profile["type"], "Configuration");
    assert_eq!(profile["PayloadType"], "com.apple.mail.managed");
    assert_eq!(profile["IncomingPassword"], password.as_str());
    assert_eq!(profile["IncomingMailServerHostName"], "imap.example.org");
    assert_eq!(profile["OutgoingMailServerHostName"], "smtp.example.org");
    assert_eq!(profile["IncomingMailServerPortNumber"], 993);
    assert_eq!(profile["EmailAddress"], format!("{}@example.org", w.person));
    assert!(!w.web.log().contains(&password) && !w.daemon.log().contains(&password));
    // The portal's own line, where admins read apppassd's: syslog's authpriv.
    if let Some(log) = &auth_log {
        let marker = format!("created user={}", w.person);
        let lines = log.wait_for(&marker, 1);
        assert!(
            lines.iter().any(|l| l.contains("apppass-web[")),
            "{lines:?}"
        );
        assert!(!lines.iter().any(|l| l.contains(&password)));
    }

    // Sending the same form again (a reload) makes no second password and shows none.
    let again = c.post(
        "/new",
        &[
            ("csrf", &csrf),
            ("nonce", &nonce),
            ("service", "mail"),
            ("label", "x"),
        ],
    );
    assert_eq!(
        (again.status, again.header("location")),
        (303, Some("/?done=duplicate"))
    );
    let list = c.get("/?done=duplicate");
    assert!(!list.body.contains(&password));
    assert_eq!(list.body.matches("/revoke/").count(), 1, "one password");
    assert!(list.body.contains("&lt;script&gt;") && !list.body.contains(label));
    assert!(list.body.contains("never used"));

    // It opens the mail service, through the real libpam.
    assert_eq!(w.imap_login(&password), Code::SUCCESS);

    // Revoked: with a confirmation step first.
    let id: i64 = list
        .body
        .split("/revoke/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let confirm = c.get(&format!("/revoke/{id}"));
    assert_eq!(confirm.status, 200);
    let a = c.post("/revoke", &[("csrf", &csrf), ("id", &id.to_string())]);
    assert_eq!(
        (a.status, a.header("location")),
        (303, Some("/?done=revoked"))
    );
    assert_ne!(w.imap_login(&password), Code::SUCCESS);
    let log = c.get("/log");
    assert_eq!(log.status, 200);
    assert!(
        log.body.contains("success") && log.body.contains("imap"),
        "{}",
        log.body
    );

    // Sign-out ends the session in apppassd too: the old cookie opens nothing.
    let old = c.cookie.clone();
    let a = c.post("/signout", &[("csrf", &csrf)]);
    assert_eq!(a.status, 303, "{}", a.body);
    assert!(a.all("set-cookie").iter().any(|c| c.contains("Max-Age=0")));
    let mut stale = Client::new(w.web.port);
    stale.cookie = old;
    let a = stale.get("/");
    assert_eq!(
        (a.status, a.header("location")),
        (303, Some("/signin?m=expired"))
    );
}

#[test]
fn sign_ins_are_throttled_per_user_and_address() {
    if !prerequisites() {
        return;
    }
    let w = World::start("", &portal::shipped_stack());
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let a =
            Client::new(w.web.port).post("/signin", &[("user", &w.person), ("password", "wrong")]);
        statuses.push(a.status);
        if a.status == 429 {
            assert!(a.body.contains("Too many"));
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&429),
        "throttled at last: {statuses:?}\n{}",
        w.daemon.log()
    );
    assert!(statuses[..statuses.len() - 1].iter().all(|s| *s == 401));
}

#[test]
fn hostile_requests_are_refused_cleanly() {
    if !prerequisites() {
        return;
    }
    let w = World::start("", &portal::shipped_stack());
    let port = w.web.port;
    let host = format!("Host: 127.0.0.1:{port}\nOrigin: http://127.0.0.1:{port}");
    // A body far past the limit.
    let big = vec![b'a'; 4 << 20];
    let a = raw(
        port,
        &format!(
            "POST /signin HTTP/1.1\n{host}\nContent-Type: application/x-www-form-urlencoded\nContent-Length: {}",
            big.len()
        ),
        &big,
    );
    assert_eq!(a.status, 413);
    // Bad percent escapes, bytes that are not UTF-8, another content type.
    for body in [
        &b"user=%zz&password=x"[..],
        b"user=%ff%fe&password=x",
        b"user=\xff",
    ] {
        let a = raw(
            port,
            &format!(
                "POST /signin HTTP/1.1\n{host}\nContent-Type: application/x-www-form-urlencoded\nContent-Length: {}",
                body.len()
            ),
            body,
        );
        assert_eq!(a.status, 400, "{body:?}");
    }
    let a = raw(
        port,
        &format!(
            "POST /signin HTTP/1.1\n{host}\nContent-Type: application/json\nContent-Length: 2"
        ),
        b"{}",
    );
    assert_eq!(a.status, 400);
    // A header block past the limit; a method nobody uses.
    let a = raw(
        port,
        &format!("GET / HTTP/1.1\n{host}\nX-Junk: {}", "a".repeat(64 << 10)),
        b"",
    );
    assert_eq!(a.status, 431);
    let a = raw(
        port,
        &format!("PUT / HTTP/1.1\n{host}\nContent-Length: 0"),
        b"",
    );
    assert_eq!(a.status, 405);
    let a = raw(
        port,
        &format!("GET /static/../../etc/passwd HTTP/1.1\n{host}"),
        b"",
    );
    assert!(!a.body.contains("root:"));
    // A cookie that is not a token, a pending sign-in that does not exist.
    let a = raw(
        port,
        &format!("GET / HTTP/1.1\n{host}\nCookie: __Host-apppass=<x>"),
        b"",
    );
    assert_eq!(a.status, 303);
    let mut c = Client::new(port);
    let a = c.post("/signin/next", &[("pending", "nope"), ("a0", "123456")]);
    assert_eq!(
        (a.status, a.header("location")),
        (303, Some("/signin?m=gone"))
    );
    // Still serving, and nothing secret in its log.
    assert_eq!(Client::new(port).get("/signin").status, 200);
}

#[test]
fn autoconfig_names_the_configured_servers() {
    if !prerequisites() {
        return;
    }
    let w = World::start(
        "imap_port = 143\nsmtp_port = 587\n",
        &portal::shipped_stack(),
    );
    for path in [
        "/.well-known/autoconfig/mail/config-v1.1.xml",
        "/mail/config-v1.1.xml?emailaddress=a%40example.org",
    ] {
        let a = Client::new(w.web.port).get(path);
        assert_eq!(a.status, 200);
        assert!(
            a.header("content-type")
                .unwrap()
                .starts_with("application/xml")
        );
        let script = "import sys,xml.etree.ElementTree as E\n\
                      r=E.fromstring(sys.stdin.read())\n\
                      i=r.find('emailProvider/incomingServer');o=r.find('emailProvider/outgoingServer')\n\
                      print(r.find('emailProvider').get('id'),i.get('type'),i.findtext('hostname'),i.findtext('port'),i.findtext('socketType'),o.findtext('hostname'),o.findtext('port'),o.findtext('socketType'))";
        let mut py = Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        py.stdin
            .take()
            .unwrap()
            .write_all(a.body.as_bytes())
            .unwrap();
        let out = py.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "example.org imap imap.example.org 143 STARTTLS smtp.example.org 587 STARTTLS"
        );
    }
}

/// Listening on a Unix socket (behind a local proxy) and serving TLS itself: no daemon
/// is needed to see the sign-in page.
#[test]
fn unix_socket_and_built_in_tls() {
    let have_tools = ["openssl", "curl"].iter().all(|p| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !require(have_tools, "openssl and curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tls = format!(
        "web_tls_cert = {}\nweb_tls_key = {}\n",
        cert.display(),
        key.display()
    );
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let web = portal::Web::alone(dir.path(), &tls, &listen, port, "tls.log");
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "--cacert"])
        .arg(&cert)
        .arg(format!("https://127.0.0.1:{port}/signin"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        web.log()
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{text}"
    );
    // Plain HTTP to the TLS port gets no page.
    let out = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{port}/signin")])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("<form"));
    drop(web);

    // A Unix socket, as a local reverse proxy would use.
    let path = dir.path().join("web.sock");
    let unix = format!("unix:{}", path.display());
    let mut web = portal::Web::alone(dir.path(), "", &unix, 0, "unix.log");
    web.wait(|| std::os::unix::net::UnixStream::connect(&path).is_ok());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the proxy's group may connect, nobody else");
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(&path)
        .arg("http://portal.example/signin")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{}", web.log());
}

/// A second factor: the stack asks pam_oath's one-time code after the password; the
/// portal shows that prompt on a page of its own and relays the answer.
#[test]
fn a_one_time_code_from_pam_oath_is_asked_in_turn() {
    if !prerequisites() {
        return;
    }
    let module = [
        "/lib/x86_64-linux-gnu/security/pam_oath.so",
        "/usr/lib/x86_64-linux-gnu/security/pam_oath.so",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists());
    let oathtool = Command::new("sh")
        .args(["-c", "command -v oathtool"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(
        module && oathtool,
        "pam_oath and oathtool (libpam-oath, oathtool)",
    ) {
        return;
    }
    let users = tempfile::tempdir().unwrap();
    let file = users.path().join("users.oath");
    // The shipped stack with its second-factor slot filled in, as an admin would.
    let stack = portal::shipped_stack().replace(
        "#auth    required   pam_oath.so usersfile=/etc/users.oath window=20",
        &format!(
            "auth     required   pam_oath.so usersfile={} window=20",
            file.display()
        ),
    );
    assert!(
        stack.contains("pam_oath.so usersfile=/tmp"),
        "the slot is in the shipped file"
    );
    let w = World::start("", &stack);
    let key = common::random_hex(20);
    std::fs::write(&file, format!("HOTP/T30/6 {} - {key}\n", w.person)).unwrap();
    let code = || {
        let out = Command::new("oathtool")
            .args(["--totp", "-d", "6", &key])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };

    // The password, then a page that asks for the code.
    let mut c = Client::new(w.web.port);
    let a = c.post("/signin", &[("user", &w.person), ("password", &w.password)]);
    assert_eq!(a.status, 200, "{}\n{}", a.body, w.daemon.log());
    assert!(a.body.contains("One-time password"), "{}", a.body);
    assert!(c.cookie.is_none(), "not signed in yet");
    let pending = input_value(&a.body, "pending").unwrap();
    // A wrong code: refused.
    let a = c.post("/signin/next", &[("pending", &pending), ("a0", "000000")]);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(c.cookie.is_none());
    // The pending sign-in is spent: it cannot be tried again.
    let a = c.post("/signin/next", &[("pending", &pending), ("a0", &code())]);
    assert_eq!(a.header("location"), Some("/signin?m=gone"));
    // Again, with the right code.
    let a = c.post("/signin", &[("user", &w.person), ("password", &w.password)]);
    let pending = input_value(&a.body, "pending").unwrap();
    let a = c.post("/signin/next", &[("pending", &pending), ("a0", &code())]);
    assert_eq!(a.status, 303, "{}\n{}", a.body, w.daemon.log());
    assert!(c.cookie.is_some());
    assert_eq!(c.get("/").status, 200);

    // Proving again before a creation asks the code too, on a page of its own, and
    // only then makes the password.
    let new = c.get("/new");
    let csrf = input_value(&new.body, "csrf").unwrap();
    let nonce = input_value(&new.body, "nonce").unwrap();
    let a = c.post(
        "/new",
        &[
            ("csrf", &csrf),
            ("nonce", &nonce),
            ("service", "mail"),
            ("password", &w.password),
        ],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("One-time password") && !a.body.contains("data-copy"));
    let pending = input_value(&a.body, "pending").unwrap();
    // Once a TOTP code is used, pam_oath refuses it again: wait for the next one.
    let first = code();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(35);
    while code() == first && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let shown = c.post(
        "/new/next",
        &[("csrf", &csrf), ("pending", &pending), ("a0", &code())],
    );
    assert_eq!(shown.status, 200, "{}\n{}", shown.body, w.daemon.log());
    assert!(shown.body.contains("data-copy="));
}

/// Admins (admin_group) see and revoke anyone's app passwords; others see only their own.
#[test]
fn an_admin_revokes_someone_elses_password_and_others_cannot_look() {
    if !prerequisites() {
        return;
    }
    let mut extra = portal::Accounts::default();
    let (admin, admin_password) = portal::admin(&mut extra);
    let w = World::start(
        &format!("admin_group = {admin}\n"),
        &portal::shipped_stack(),
    );
    let (password, id) = w.add_for_person("Phone");

    // The person cannot look at the admin's passwords.
    let mut person = Client::new(w.web.port);
    person.post("/signin", &[("user", &w.person), ("password", &w.password)]);
    let a = person.get(&format!("/?user={admin}"));
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(!a.body.contains("/revoke/"));

    // The admin finds the person and revokes their password.
    let mut c = Client::new(w.web.port);
    let a = c.post(
        "/signin",
        &[("user", &admin), ("password", &admin_password)],
    );
    assert_eq!(a.status, 303, "{}\n{}", a.body, w.daemon.log());
    let list = c.get(&format!("/?user={}", w.person));
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("Find a user") && list.body.contains("Phone"));
    let csrf = input_value(&list.body, "csrf").unwrap();
    assert!(
        c.get(&format!("/revoke/{id}?user={}", w.person))
            .body
            .contains("Revoke this")
    );
    let a = c.post(
        "/revoke",
        &[
            ("csrf", &csrf),
            ("id", &id.to_string()),
            ("user", &w.person),
        ],
    );
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(
        a.header("location"),
        Some(format!("/?user={}&done=revoked", w.person).as_str())
    );
    assert_ne!(w.imap_login(&password), Code::SUCCESS);
    let list = person.get("/");
    assert!(list.body.contains("revoked"), "{}", list.body);
}

/// A session unused for `session_idle` ends: apppassd says so, and the portal asks the
/// person to sign in again.
#[test]
fn an_idle_session_expires() {
    if !prerequisites() {
        return;
    }
    let w = World::start("session_idle = 1m\n", &portal::shipped_stack());
    let c = sign_in(&w);
    assert_eq!(c.get("/").status, 200);
    std::thread::sleep(std::time::Duration::from_secs(62));
    let a = c.get("/");
    assert_eq!(
        (a.status, a.header("location")),
        (303, Some("/signin?m=expired"))
    );
    assert!(a.all("set-cookie").iter().any(|c| c.contains("Max-Age=0")));
    assert!(
        Client::new(w.web.port)
            .get("/signin?m=expired")
            .body
            .contains("Your session has ended")
    );
}

/// A sign-in older than `reauthenticate_after` is no proof for a new password: the form
/// asks for the account password up front, and a post without it (a stale form, or a
/// portal that skips the field) is refused by apppassd, not just by the page.
#[test]
fn a_stale_sign_in_proves_again_before_creating() {
    if !prerequisites() {
        return;
    }
    let w = World::start("reauthenticate_after = 10s\n", &portal::shipped_stack());
    let mut c = sign_in(&w);
    let fresh = c.get("/new");
    assert!(!fresh.body.contains("name=\"password\""), "{}", fresh.body);
    let csrf = input_value(&fresh.body, "csrf").unwrap();
    let nonce = input_value(&fresh.body, "nonce").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(11));
    assert!(c.get("/new").body.contains("name=\"password\""));
    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("nonce", nonce.as_str()),
        ("service", "mail"),
        ("label", "Laptop"),
    ];
    let a = c.post("/new", &fields);
    assert_eq!(a.status, 401, "{}\n{}", a.body, w.daemon.log());
    assert!(
        a.body.contains("enter your account password again"),
        "{}",
        a.body
    );
    assert!(!a.body.contains("data-copy") && !c.get("/").body.contains("/revoke/"));
    fields.push(("password", w.password.as_str()));
    let a = c.post("/new", &fields);
    assert_eq!(a.status, 200, "{}\n{}", a.body, w.daemon.log());
    assert!(a.body.contains("data-copy="));
    // That proof is fresh again: the next form does not ask.
    assert!(!c.get("/new").body.contains("name=\"password\""));
}

/// Typing the account password on the create form proves the person again (apppassd's
/// Prove) before the password is made: a wrong one makes nothing. A short lifetime is
/// flagged in the list.
#[test]
fn the_create_form_proves_again_and_short_lifetimes_are_flagged() {
    if !prerequisites() {
        return;
    }
    let w = World::start("", &portal::shipped_stack());
    let mut c = sign_in(&w);
    let new = c.get("/new");
    let csrf = input_value(&new.body, "csrf").unwrap();
    let nonce = input_value(&new.body, "nonce").unwrap();
    let fields = |pw: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("csrf", csrf.clone()),
            ("nonce", nonce.clone()),
            ("service", "mail".into()),
            ("label", "Tablet".into()),
            ("expires", "7d".into()),
            ("password", pw.into()),
        ]
    };
    let wrong = fields("not-the-password");
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = c.post("/new", &wrong);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("not right") && !a.body.contains("data-copy"));
    assert!(!c.get("/").body.contains("/revoke/"), "nothing made");
    // The nonce of a failed attempt may be used again.
    let mut right = fields("");
    right.pop();
    right.push(("password", w.password.clone()));
    let right: Vec<(&str, &str)> = right.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = c.post("/new", &right);
    assert_eq!(a.status, 200, "{}\n{}", a.body, w.daemon.log());
    assert!(a.body.contains("data-copy="));
    let password = a
        .body
        .split("data-copy=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let list = c.get("/");
    assert!(
        list.body.contains("Tablet") && list.body.contains("expires soon"),
        "{}",
        list.body
    );
    assert!(list.body.contains("from anywhere"));

    // Its source networks: a bad list is refused with apppassd's reason; a good one holds.
    let id = list
        .body
        .split("/networks/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let form = c.get(&format!("/networks/{id}"));
    assert_eq!(form.status, 200);
    let a = c.post(
        "/networks",
        &[("csrf", &csrf), ("id", &id), ("from", "mail.example.org")],
    );
    assert_eq!(a.status, 400, "{}", a.body);
    let a = c.post(
        "/networks",
        &[("csrf", &csrf), ("id", &id), ("from", "198.51.100.0/24")],
    );
    assert_eq!(
        (a.status, a.header("location")),
        (303, Some("/?done=networks"))
    );
    assert!(c.get("/").body.contains("only from 198.51.100.0/24"));
    assert_ne!(
        w.imap_login(&password),
        Code::SUCCESS,
        "192.0.2.1 is outside"
    );
    c.post(
        "/networks",
        &[("csrf", &csrf), ("id", &id), ("from", "192.0.2.0/24")],
    );
    assert_eq!(w.imap_login(&password), Code::SUCCESS);
}

/// systemd/apppass-web.service as systemd reads it (no systemd running): no complaint
/// from `systemd-analyze verify`, and an exposure of at most 2.0.
#[test]
fn the_unit_is_valid_and_confined() {
    let have = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(have, "systemd-analyze (systemd)") {
        return;
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("systemd/apppass-web.service")).unwrap();
    assert!(text.contains("ExecStart=/usr/sbin/apppass-web\n"));
    assert!(text.contains("User=_apppass-web\n"));
    let sysusers =
        std::fs::read_to_string(repo.join("systemd/sysusers.d/apppass-web.conf")).unwrap();
    assert!(sysusers.lines().any(|l| l.starts_with("u _apppass-web ")));
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("apppass-web.service");
    let bin = common::workspace_bin("apppass-web");
    std::fs::write(
        &unit,
        text.replace("/usr/sbin/apppass-web", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints: Vec<&str> = said.lines().filter(|l| l.contains("apppass-web")).collect();
    assert!(complaints.is_empty(), "{said}");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for apppass-web.service: ")
                .nth(1)
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in:\n{text}"));
    assert!(exposure <= 2.0, "exposure {exposure}\n{text}");
}

/// A client that never finishes its request head is cut off (10 s), so that slow
/// clients cannot hold the portal's connections.
#[test]
fn a_slow_client_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let _web = portal::Web::alone(dir.path(), "", &listen, port, "web.log");
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /signin HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(20),
        "still connected after {waited:?}"
    );
    assert!(!String::from_utf8_lossy(&buf).contains("<form"));
}

/// Regenerate (the lifecycle issue's, landed): a new secret in place of the old one,
/// confirmed first, shown once; the old one stops at once, the new one opens the same
/// service; a reload makes no third; and a stale proof asks for the account password.
#[test]
fn a_password_is_regenerated_in_place_and_shown_once() {
    if !prerequisites() {
        return;
    }
    let w = World::start("", &portal::shipped_stack());
    let mut c = sign_in(&w);
    let new = c.get("/new");
    let csrf = input_value(&new.body, "csrf").unwrap();
    let nonce = input_value(&new.body, "nonce").unwrap();
    let shown = c.post(
        "/new",
        &[
            ("csrf", &csrf),
            ("nonce", &nonce),
            ("service", "mail"),
            ("label", "Phone"),
        ],
    );
    assert_eq!(shown.status, 200, "{}", shown.body);
    let secret = |body: &str| {
        body.split("data-copy=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let old = secret(&shown.body);
    assert_eq!(w.imap_login(&old), Code::SUCCESS);
    let list = c.get("/");
    let id: i64 = list
        .body
        .split("/regenerate/")
        .nth(1)
        .expect("a Regenerate link")
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // Confirmed on a page that names it; a forged form makes nothing.
    let confirm = c.get(&format!("/regenerate/{id}"));
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains("mail · Phone"), "{}", confirm.body);
    assert_headers(&confirm);
    let nonce = input_value(&confirm.body, "nonce").unwrap();
    let a = c.post(
        "/regenerate",
        &[("csrf", "x"), ("nonce", &nonce), ("id", &id.to_string())],
    );
    assert_eq!(a.status, 403);
    assert_eq!(w.imap_login(&old), Code::SUCCESS, "nothing changed");

    let fields = [
        ("csrf", csrf.as_str()),
        ("nonce", nonce.as_str()),
        ("id", &id.to_string()),
    ];
    let shown = c.post("/regenerate", &fields);
    assert_eq!(shown.status, 200, "{}\n{}", shown.body, w.daemon.log());
    assert_eq!(shown.header("cache-control"), Some("no-store"));
    let new = secret(&shown.body);
    assert_ne!(new, old);
    assert!(shown.body.contains("mail · Phone"), "{}", shown.body);
    assert_eq!(w.imap_login(&new), Code::SUCCESS);
    assert_ne!(w.imap_login(&old), Code::SUCCESS);
    // A reload: no third password, nothing shown.
    let again = c.post("/regenerate", &fields);
    assert_eq!(again.status, 303);
    assert!(!c.get("/").body.contains(&new));
    assert_eq!(w.imap_login(&new), Code::SUCCESS);
    // The old one is gone from what may be regenerated.
    assert_eq!(c.get(&format!("/regenerate/{id}")).status, 404);
}
