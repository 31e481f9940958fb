//! The systemd units in systemd/, checked the way systemd reads them but with no systemd
//! running (as in CI): `systemd-analyze verify` (syntax, references, the ExecStart=
//! binary), `systemd-analyze security --offline` (the service's exposure, at most 3.0);
//! that they agree with the code's defaults and the Debian packaging; and the hand-over
//! they rely on, a socket passed through LISTEN_FDS, with systemd-socket-activate.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The exposure `systemd-analyze security` may give apppassd.service at most.
const MAX_EXPOSURE: f64 = 3.0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit(name: &str) -> PathBuf {
    repo().join("systemd").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The values of `key` in a unit file (or a sysusers/tmpfiles file's lines), in order.
fn values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .collect()
}

fn one(text: &str, key: &str) -> String {
    let v = values(text, key);
    assert_eq!(v.len(), 1, "expected exactly one {key}=, found {v:?}");
    v[0].clone()
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// Copies `from` into `to`, symbolic links as links (the host's unit directory has
/// aliases and masks).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// `systemd-analyze verify` on the given unit files as they would be installed: in a
/// root of their own that holds the host's units (for sockets.target, sysinit.target
/// and the like) and, where ExecStart= looks for it, `apppassd` (the built one, or none
/// if `daemon` is None). Returns everything it said; empty means no complaint (it exits
/// 0 even on unknown keys, so its output is what counts). `--man=no`: the man pages are
/// not installed here; [`units_document_man_pages_that_exist`] checks them.
fn verify(units: &[(&str, String)], daemon: Option<&Path>) -> (bool, String) {
    let exec = one(&units_text("apppassd.service"), "ExecStart");
    let bins: Vec<(String, &Path)> = daemon.map(|d| (exec, d)).into_iter().collect();
    verify_with(units, &bins, &[])
}

/// `systemd-analyze verify` of `units` (and `instances` of templates among them) in a
/// root of their own, with the host's units and `bins` (path there, file here).
fn verify_with(
    units: &[(&str, String)],
    bins: &[(String, &Path)],
    instances: &[&str],
) -> (bool, String) {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(Path::new)
        .find(|p| p.join("sockets.target").exists())
        .expect("the host's systemd units (sockets.target) are not in /usr/lib/systemd/system");
    copy_tree(host_units, &r.join("usr/lib/systemd/system"));
    let etc = r.join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    for (name, text) in units {
        std::fs::write(etc.join(name), text).unwrap();
    }
    for (exec, file) in bins {
        let target = r.join(exec.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(file, &target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", r.display()))
        .args(
            units
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| !n.ends_with("@.service")),
        )
        .args(instances)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn units_text(name: &str) -> String {
    read(&unit(name))
}

fn have_analyze() -> bool {
    common::require(
        on_path("systemd-analyze").is_some(),
        "systemd-analyze (Debian package systemd)",
    )
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !have_analyze() {
        return;
    }
    let units = [
        ("apppassd.service", units_text("apppassd.service")),
        ("apppassd.socket", units_text("apppassd.socket")),
    ];
    let daemon = common::workspace_bin("apppassd");
    let (ok, said) = verify(&units, Some(&daemon));
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
    // The helper's socket and its per-connection service (an instance of the template).
    let helper = common::workspace_bin("apppass-pam-helper");
    let helper_units = [
        (
            "apppass-pam-helper.socket",
            units_text("apppass-pam-helper.socket"),
        ),
        (
            "apppass-pam-helper@.service",
            units_text("apppass-pam-helper@.service"),
        ),
    ];
    let (ok, said) = verify_with(
        &helper_units,
        &[(
            apppass_core::config::DEFAULT_PAM_HELPER.to_string(),
            helper.as_path(),
        )],
        &["apppass-pam-helper@0-1-2.service"],
    );
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );

    // The same check does see faults: an unknown key, a bad value, no binary.
    let broken = [
        (
            "apppassd.service",
            units[0].1.replace(
                "[Service]\n",
                "[Service]\nNoSuchKey=1\nProtectSystem=stricter\n",
            ),
        ),
        units[1].clone(),
    ];
    let (_, said) = verify(&broken, None);
    for complaint in ["NoSuchKey", "stricter", "/usr/sbin/apppassd"] {
        assert!(
            said.contains(complaint),
            "verify did not report {complaint}:\n{said}"
        );
    }
}

#[test]
fn service_exposure_is_at_most_3() {
    if !have_analyze() {
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(unit("apppassd.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze security: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let marker = "Overall exposure level for apppassd.service:";
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split_once(marker))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    println!("apppassd.service: exposure {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "apppassd.service exposure {exposure} > {MAX_EXPOSURE}:\n{text}"
    );
}

/// What the score does not see: the units, the code's defaults and the package agree,
/// and nothing listens beyond this machine.
#[test]
fn units_agree_with_the_code_and_the_package() {
    let service = units_text("apppassd.service");
    let socket = units_text("apppassd.socket");
    let user = apppass_proto::conf::DEFAULT_USER;

    let listen = values(&socket, "ListenStream");
    assert_eq!(listen, [apppass_proto::conf::DEFAULT_SOCKET]);
    for key in [
        "ListenDatagram",
        "ListenSequentialPacket",
        "ListenFIFO",
        "ListenNetlink",
        "ListenSpecial",
        "ListenMessageQueue",
        "ListenUSBFunction",
        "Accept",
    ] {
        assert!(
            values(&socket, key).is_empty(),
            "apppassd.socket has {key}="
        );
    }
    assert_eq!(one(&socket, "SocketMode"), "0666");
    assert_eq!(one(&socket, "WantedBy"), "sockets.target");

    // The helper's socket: where apppassd looks for it, apppassd's group only, one
    // helper (as root, never setuid) per connection, from where the package puts it.
    let helper_socket = units_text("apppass-pam-helper.socket");
    let helper = units_text("apppass-pam-helper@.service");
    assert_eq!(
        values(&helper_socket, "ListenStream"),
        [apppass_core::config::DEFAULT_PAM_HELPER_SOCKET]
    );
    assert_eq!(one(&helper_socket, "SocketMode"), "0660");
    assert_eq!(one(&helper_socket, "SocketUser"), "root");
    assert_eq!(one(&helper_socket, "SocketGroup"), user);
    assert_eq!(one(&helper_socket, "Accept"), "yes");
    assert!(
        values(&helper, "User").is_empty(),
        "the helper runs as root"
    );
    assert_eq!(
        one(&helper, "ExecStart"),
        format!("{} --socket", apppass_core::config::DEFAULT_PAM_HELPER)
    );
    assert_eq!(one(&helper, "StandardInput"), "socket");

    assert_eq!(one(&service, "User"), user);
    assert_eq!(one(&service, "Type"), "simple");
    assert_eq!(one(&service, "Requires"), "apppassd.socket");
    // Unix sockets, and TCP to this host's loopback alone (owner notices over SMTP).
    assert_eq!(
        one(&service, "RestrictAddressFamilies"),
        "AF_UNIX AF_INET AF_INET6"
    );
    assert_eq!(one(&service, "IPAddressDeny"), "any");
    assert_eq!(one(&service, "IPAddressAllow"), "localhost");
    // A runtime directory of the service's would go, socket and all, when it stops.
    assert!(values(&service, "RuntimeDirectory").is_empty());
    // In a user namespace apppassd would see every peer but root and itself as nobody.
    assert!(values(&service, "PrivateUsers").is_empty());
    let db_dir = Path::new(apppass_core::config::DEFAULT_DB)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        values(&service, "ReadWritePaths"),
        std::slice::from_ref(&db_dir)
    );

    // The package installs the binary where ExecStart= runs it.
    let exec = one(&service, "ExecStart");
    let install = read(&repo().join("debian/apppass.install"));
    assert!(
        install.lines().any(|l| format!("/{}", l.trim()) == exec),
        "debian/apppass.install does not ship {exec}"
    );

    let sysusers = read(&unit("sysusers.d/apppass.conf"));
    let line: Vec<&str> = sysusers
        .lines()
        .filter(|l| l.starts_with("u "))
        .flat_map(|l| l.split_whitespace().take(2))
        .collect();
    assert_eq!(line, ["u", user]);
    let tmpfiles = read(&unit("tmpfiles.d/apppass.conf"));
    let dirs: Vec<Vec<&str>> = tmpfiles
        .lines()
        .filter(|l| l.starts_with("d "))
        .map(|l| l.split_whitespace().take(5).collect())
        .collect();
    let socket_dir = Path::new(apppass_proto::conf::DEFAULT_SOCKET)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        dirs.contains(&vec!["d", socket_dir, "0755", "root", "root"]),
        "{dirs:?}"
    );
    assert!(
        dirs.contains(&vec!["d", &db_dir, "0700", user, user]),
        "{dirs:?}"
    );
}

#[test]
fn units_document_man_pages_that_exist() {
    for name in [
        "apppassd.service",
        "apppassd.socket",
        "apppass-pam-helper.socket",
        "apppass-pam-helper@.service",
    ] {
        let docs = values(&units_text(name), "Documentation");
        assert!(!docs.is_empty(), "{name}: no Documentation=");
        for doc in docs.iter().flat_map(|d| d.split_whitespace()) {
            let page = doc
                .strip_prefix("man:")
                .and_then(|p| p.strip_suffix(')'))
                .and_then(|p| p.split_once('('))
                .unwrap_or_else(|| panic!("{name}: {doc} is not man:NAME(SECTION)"));
            let file = repo().join("man").join(format!("{}.{}", page.0, page.1));
            assert!(file.exists(), "{name}: {doc}: no {}", file.display());
        }
    }
}

/// What apppassd.service relies on: started with a listening socket passed through
/// LISTEN_FDS (as systemd does, here by systemd-socket-activate), apppassd answers on
/// it without binding one of its own, and leaves it in place when it stops (the socket
/// is the socket unit's).
#[test]
fn apppassd_serves_a_socket_passed_as_systemd_does() {
    let Some(activate) = on_path("systemd-socket-activate") else {
        common::require(false, "systemd-socket-activate (Debian package systemd)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("apppassd.sock");
    let conf = dir.path().join("apppass.conf");
    let db = dir.path().join("db/apppass.db");
    std::fs::write(&conf, "# empty: defaults\n").unwrap();
    // systemd-socket-activate binds, then execs apppassd in its own process.
    let child = Command::new(activate)
        .arg("--listen")
        .arg(&socket)
        .arg(common::workspace_bin("apppassd"))
        .arg("--config")
        .arg(&conf)
        .arg("--db")
        .arg(&db)
        .arg("--stderr")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut daemon = common::Daemon {
        child,
        socket: socket.clone(),
        db: db.clone(),
        conf,
    };
    daemon.wait_ready();
    let status = daemon.status().unwrap();
    assert_eq!(
        status.pid, pid,
        "the process systemd-socket-activate started answers"
    );
    assert_eq!(status.store_error, None);
    assert!(db.exists(), "apppassd created its store");
    assert!(daemon.stop().success());
    let mut said = String::new();
    use std::io::Read;
    daemon
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(
        said.contains("listening on the socket systemd passed"),
        "apppassd did not take the passed socket:\n{said}"
    );
    assert!(
        socket.exists(),
        "apppassd removed the socket it was given:\n{said}"
    );
}
