//! The configuration file, `/etc/security/apppass.conf`: every setting, as apppassd
//! reads it. Its shape is faillock.conf's (`key = value` lines, `#` comments; the line
//! reader is apppass-proto's, which the clients use for the few keys they need).
//! Command-line options override what it says.

use std::path::{Path, PathBuf};
use std::time::Duration;

use apppass_proto::conf;
pub use apppass_proto::conf::{
    ConfError as ConfigError, DEFAULT_CONFIG, DEFAULT_SOCKET, DEFAULT_USER,
};

use crate::policy::{self, Groups, Throttle};
use crate::secret::HashParams;
use crate::store::{Connect, Location};
use crate::time;

/// Where the database lives unless the configuration or an argument says otherwise.
pub const DEFAULT_DB: &str = "/var/lib/apppass/apppass.db";
/// The lifetime of a new app password unless `default_lifetime` or `--expires` says
/// otherwise: app passwords are meant to expire and be replaced.
pub const DEFAULT_LIFETIME: i64 = 365 * 86400;
/// The most active app passwords per user unless `max_passwords` says otherwise.
pub const DEFAULT_MAX_PASSWORDS: u32 = 20;

/// The default of `expiry_warning`: two weeks, time enough to make a new password.
pub const EXPIRY_WARNING: i64 = 14 * 86_400;
/// Where the Debian package installs the PAM helper (`pam_helper`).
pub const DEFAULT_PAM_HELPER: &str = "/usr/libexec/apppass/apppass-pam-helper";
/// The socket of the helper's systemd units (`pam_helper_socket`).
pub const DEFAULT_PAM_HELPER_SOCKET: &str = "/run/apppass/pam-helper.sock";
/// The user apppass-web runs as, as its package makes it (`portal_user`).
pub const DEFAULT_PORTAL_USER: &str = "_apppass-web";
/// Where PAM's service files live (`pam_dir`).
pub const DEFAULT_PAM_DIR: &str = "/etc/pam.d";
/// The program owner notices are mailed through (`sendmail`).
pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";

/// Settings shared by the module and the CLI. Durations are in seconds; `None` means
/// "never" or "no limit".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The database: an SQLite file or a PostgreSQL connection string.
    pub db: Location,
    /// How to reach a PostgreSQL database (`db_passfile`, `db_*_timeout`).
    pub connect: Connect,
    /// argon2id parameters for new app passwords (and for the dummy hash that unknown
    /// users and selectors are checked against).
    pub hash: HashParams,
    /// The services and groups people who are not admins may make app passwords for
    /// (root and `admin_group` may make any); empty: none.
    pub services: Vec<String>,
    /// Service groups (`group NAME = SERVICE ...`): a password scoped to one opens each
    /// service in it.
    pub groups: Groups,
    /// Services whose app passwords must name source networks (`--from`); empty: none.
    pub require_from: Vec<String>,
    /// Most active app passwords per user.
    pub max_passwords: Option<u32>,
    /// Lifetime of a new app password when `--expires` is not given.
    pub default_lifetime: Option<i64>,
    /// Longest lifetime `--expires` may ask for.
    pub max_lifetime: Option<i64>,
    /// App passwords unused (or, if never used, created) longer ago than this stop working.
    pub idle_expiry: Option<i64>,
    /// Active app passwords that expire within this are flagged in listings, so that
    /// their owners replace them in time (`None`: never flagged).
    pub expiry_warning: Option<i64>,
    /// Throttling of guesses per (user, remote host, app password); `None`: off.
    pub throttle: Option<Throttle>,
    /// The same for attempts with no remote host (`throttle_local_failures`,
    /// `throttle_local_lockout`, and `throttle_interval`); `None`: off, as it is
    /// whenever `throttle` is.
    pub throttle_local: Option<Throttle>,
    /// Most rows in the throttle table: beyond it, each new row pushes out the least
    /// recently written.
    pub throttle_max_rows: i64,
    /// The audit log keeps events at most this old...
    pub audit_max_age: i64,
    /// ... and at most this many.
    pub audit_max_rows: i64,
    /// Members of this group manage everyone's app passwords, as root does.
    pub admin_group: Option<String>,
    /// `socket`: where apppassd listens (unless systemd hands it a socket).
    pub socket: PathBuf,
    /// `timeout`: how long clients wait for apppassd, and the longest a request may wait
    /// in apppassd's queue.
    pub timeout: Duration,
    /// `user`: the system user apppassd runs as; clients trust a socket it owns.
    pub user: String,
    /// `workers`: verifications at most at once (`None`: one per CPU).
    pub workers: Option<u32>,
    /// `queue_max`: requests at most waiting for a worker.
    pub queue_max: u32,
    /// `max_clients`: connections at most open at once.
    pub max_clients: u32,
    /// `auth_trusted`: users (and `%groups`) whose processes may check any user's
    /// password, as root's may (Dovecot's auth worker where it does not run as root).
    pub auth_trusted: Vec<String>,
    /// The most a stored hash may ask for (`argon2_max_memory` KiB, `argon2_max_time`,
    /// `argon2_max_lanes`): beyond it a row is refused unhashed, so that no row can
    /// take apppassd's memory or time.
    pub hash_cap: HashParams,
    /// `revoke_on_password_change`: whether a change of the account password through PAM
    /// (pam_apppass's password hook) revokes all of the user's app passwords.
    pub revoke_on_password_change: bool,
    /// `pam_helper`: the privileged program that runs apppassd's PAM stacks (`apppass`,
    /// `apppass-portal`) to prove a person.
    pub pam_helper: PathBuf,
    /// `pam_helper_socket`: where systemd runs the helper, one per connection
    /// (apppass-pam-helper.socket); used when it exists, else `pam_helper` is started.
    pub pam_helper_socket: PathBuf,
    /// `pam_dir`: where those stacks' files are. Only a helper started by root takes
    /// another one than /etc/pam.d (tests); the installed, privileged helper refuses.
    pub pam_dir: PathBuf,
    /// `prove_timeout`: the longest one proof (or sign-in) may take, prompts and all.
    pub prove_timeout: Duration,
    /// `reauthenticate_after`: a proof (or the portal's sign-in) lets a credential be
    /// made for this long (seconds); after it the person proves who they are again.
    pub reauthenticate_after: i64,
    /// `portal_user`: the system user apppass-web runs as; its processes may sign
    /// people in and then act only for them.
    pub portal_user: Option<String>,
    /// `session_idle`, `session_lifetime`: a portal session ends this long after its
    /// last use, and this long after sign-in at the latest (seconds).
    pub session_idle: i64,
    pub session_lifetime: i64,
    /// `notify`: whether owners get a mail when an app password is made or regenerated
    /// for them, or revoked by someone else. `None`: yes when the sendmail program
    /// exists.
    pub notify: Option<bool>,
    /// `sendmail`: the program (absolute path) and its arguments; apppassd adds `-i --`
    /// and the address.
    pub sendmail: Vec<String>,
    /// `notify_domain`: the domain of owners' addresses (`None`: the bare user name,
    /// which the local mail system delivers or qualifies).
    pub notify_domain: Option<String>,
    /// The portal's settings (apppass-web); apppassd ignores them.
    pub web: Web,
}

/// Where apppass-web listens: a TCP address (behind the site's reverse proxy, or with
/// its own TLS) or a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    /// `127.0.0.1:8443`, `[::1]:8443` or `unix:/run/apppass-web/web.sock`.
    pub fn parse(value: &str) -> Result<Listen, String> {
        if let Some(path) = value.strip_prefix("unix:") {
            return if path.starts_with('/') {
                Ok(Listen::Unix(PathBuf::from(path)))
            } else {
                Err(format!("unix: needs an absolute path, found {path:?}"))
            };
        }
        value.parse().map(Listen::Tcp).map_err(|_| {
            format!("expected ADDRESS:PORT (127.0.0.1:8443) or unix:PATH, found {value:?}")
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The portal's settings: where it listens, whom it believes about client addresses,
/// and the mail servers that its profiles and Thunderbird's autoconfig name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Web {
    /// `web_listen`.
    pub listen: Listen,
    /// `web_tls_cert` and `web_tls_key`: PEM files; both or neither (then plain HTTP,
    /// for a reverse proxy in front).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `trusted_proxies`: peers whose X-Forwarded-For is believed; `None`: nobody's.
    pub trusted_proxies: Option<crate::networks::Networks>,
    /// `site_name`: the name pages and profiles show.
    pub site_name: String,
    /// `mail_domain`: the domain of people's addresses (user@mail_domain) in profiles and
    /// autoconfig; `None`: the IMAP host's.
    pub mail_domain: Option<String>,
    /// `imap_host`, `imap_port`, `smtp_host`, `smtp_port`: the servers mail apps use;
    /// without `imap_host` no profile or autoconfig is offered.
    pub imap_host: Option<String>,
    pub imap_port: u16,
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            listen: Listen::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 8443))),
            tls_cert: None,
            tls_key: None,
            trusted_proxies: None,
            site_name: "apppass".into(),
            mail_domain: None,
            imap_host: None,
            imap_port: 993,
            smtp_host: None,
            smtp_port: 465,
        }
    }
}

/// A host name for mail settings: letters, digits, dots and dashes.
fn check_host(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !value.starts_with(['.', '-']);
    if ok {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(format!("bad host name {value:?}"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db: Location::Sqlite(PathBuf::from(DEFAULT_DB)),
            connect: Connect::default(),
            hash: HashParams::default(),
            // The safe values are the built-in ones too: a machine without the file, or
            // with an administrator's file from before they existed, gets them.
            services: vec![policy::MAIL_GROUP.to_string()],
            groups: policy::default_groups(),
            max_passwords: Some(DEFAULT_MAX_PASSWORDS),
            default_lifetime: Some(DEFAULT_LIFETIME),
            require_from: Vec::new(),
            max_lifetime: None,
            idle_expiry: None,
            expiry_warning: Some(EXPIRY_WARNING),
            throttle: Some(Throttle {
                failures: 10,
                interval: 15 * 60,
                lockout: 15 * 60,
            }),
            throttle_local: Some(Throttle {
                failures: 30,
                interval: 15 * 60,
                lockout: 5 * 60,
            }),
            throttle_max_rows: 100_000,
            audit_max_age: 90 * 86400,
            audit_max_rows: 100_000,
            admin_group: None,
            socket: PathBuf::from(DEFAULT_SOCKET),
            timeout: conf::DEFAULT_TIMEOUT,
            user: DEFAULT_USER.to_string(),
            workers: None,
            queue_max: 1024,
            max_clients: 1024,
            auth_trusted: Vec::new(),
            hash_cap: HashParams {
                m_kib: 256 * 1024,
                t: 16,
                p: 8,
            },
            revoke_on_password_change: true,
            pam_helper: PathBuf::from(DEFAULT_PAM_HELPER),
            pam_helper_socket: PathBuf::from(DEFAULT_PAM_HELPER_SOCKET),
            pam_dir: PathBuf::from(DEFAULT_PAM_DIR),
            prove_timeout: Duration::from_secs(120),
            reauthenticate_after: 5 * 60,
            portal_user: Some(DEFAULT_PORTAL_USER.to_string()),
            session_idle: 15 * 60,
            session_lifetime: 8 * 3600,
            notify: None,
            sendmail: vec![DEFAULT_SENDMAIL.to_string()],
            notify_domain: None,
            web: Web::default(),
        }
    }
}

/// A configuration and what was odd but harmless in it (unknown keys), for the caller to
/// log or print.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// Whether a person who proved who they are at `proved` (Unix seconds) may still
    /// make a credential at `now` without proving it again. apppassd decides by this;
    /// the portal asks up front by the same rule.
    pub fn proof_is_fresh(&self, proved: i64, now: i64) -> bool {
        now.saturating_sub(proved) < self.reauthenticate_after
    }

    /// Reads `path`. When `explicit` is false a missing file means the defaults (the file is
    /// optional); a file that was asked for must exist.
    pub fn load(path: &Path, explicit: bool) -> Result<Loaded, ConfigError> {
        match conf::read(path, explicit)? {
            Some(text) => Self::parse(&text, path),
            None => Ok(Loaded {
                config: Config::default(),
                warnings: Vec::new(),
            }),
        }
    }

    /// Parses configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        let mut config = Config::default();
        let mut warnings = Vec::new();
        let mut throttle = config.throttle.unwrap_or(Throttle {
            failures: 0,
            interval: 0,
            lockout: 0,
        });
        let mut throttle_failures = None;
        let mut local = config.throttle_local.unwrap_or(throttle);
        let mut default_lifetime_set = false;
        // Where each group was defined in this file (the built-in ones: nowhere).
        let mut group_lines: Vec<(String, usize)> = Vec::new();
        for conf::Line {
            number: line,
            key,
            value,
        } in conf::lines(text, path)?
        {
            let invalid = |why: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                why,
            };
            let number = || -> Result<u32, ConfigError> {
                value
                    .parse()
                    .map_err(|_| invalid(format!("{key} must be a whole number, found {value:?}")))
            };
            // A duration, or "never" (None).
            let duration = || -> Result<Option<i64>, ConfigError> {
                if value == "never" {
                    return Ok(None);
                }
                time::parse_duration(value)
                    .map(Some)
                    .map_err(|e| invalid(format!("{key}: {e} (or never)")))
            };
            let limit = |n: u32| if n == 0 { None } else { Some(n) };
            if let Some(name) = group_name(key) {
                let name = name.map_err(invalid)?;
                if let Some((_, first)) = group_lines.iter().find(|(n, _)| *n == name) {
                    return Err(invalid(format!(
                        "group {name} is already defined on line {first}"
                    )));
                }
                let members = service_list(value).map_err(invalid)?;
                if members.is_empty() {
                    return Err(invalid(format!(
                        "group {name} holds no service: name them, e.g. group {name} = imap smtp"
                    )));
                }
                config.groups.insert(name.clone(), members);
                group_lines.push((name, line));
                continue;
            }
            match key {
                "db" => config.db = Location::parse(value).map_err(invalid)?,
                "db_passfile" => {
                    if !value.starts_with('/') {
                        return Err(invalid(format!(
                            "db_passfile must be an absolute path, found {value:?}"
                        )));
                    }
                    config.connect.passfile = Some(PathBuf::from(value));
                }
                "db_connect_timeout" => {
                    config.connect.connect_timeout = seconds(duration()?, key).map_err(invalid)?
                }
                "db_query_timeout" => {
                    config.connect.query_timeout = seconds(duration()?, key).map_err(invalid)?
                }
                "argon2_memory" => config.hash.m_kib = number()?,
                "argon2_time" => config.hash.t = number()?,
                "argon2_lanes" => config.hash.p = number()?,
                "services" => {
                    config.services = service_list(value).map_err(invalid)?;
                    if config.services.iter().any(|s| s == policy::ANY_SERVICE) {
                        return Err(invalid(
                            "services cannot hold *: every user could then make app passwords \
                             for every service, sudo and sshd included; root and admin_group \
                             make * passwords with apppass add --service '*'"
                                .into(),
                        ));
                    }
                }
                "require_from" => {
                    config.require_from = value
                        .split([' ', ',', '\t'])
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            policy::check_service(s)
                                .map(|()| s.to_string())
                                .map_err(invalid)
                        })
                        .collect::<Result<_, _>>()?;
                }
                "max_passwords" => config.max_passwords = limit(number()?),
                "default_lifetime" => {
                    config.default_lifetime = duration()?;
                    default_lifetime_set = true;
                }
                "max_lifetime" => config.max_lifetime = duration()?,
                "idle_expiry" => config.idle_expiry = duration()?,
                "expiry_warning" => config.expiry_warning = duration()?,
                "throttle_failures" => {
                    let n = number()?;
                    throttle_failures = Some(n);
                }
                "throttle_interval" => {
                    throttle.interval =
                        duration()?.ok_or_else(|| invalid(format!("{key} cannot be never")))?
                }
                "throttle_lockout" => {
                    throttle.lockout =
                        duration()?.ok_or_else(|| invalid(format!("{key} cannot be never")))?
                }
                "throttle_local_failures" => local.failures = number()?,
                "throttle_local_lockout" => {
                    local.lockout =
                        duration()?.ok_or_else(|| invalid(format!("{key} cannot be never")))?
                }
                "throttle_max_rows" => {
                    let n = number()?;
                    if n == 0 {
                        return Err(invalid(format!("{key} must be at least 1")));
                    }
                    config.throttle_max_rows = i64::from(n);
                }
                "audit_max_age" => config.audit_max_age = duration()?.unwrap_or(i64::MAX),
                "audit_max_rows" => config.audit_max_rows = i64::from(number()?),
                "admin_group" => {
                    policy::check_user(value)
                        .map_err(|_| invalid(format!("bad group name {value:?}")))?;
                    config.admin_group = Some(value.to_string());
                }
                "socket" => config.socket = conf::parse_socket(value).map_err(invalid)?,
                "timeout" => config.timeout = conf::parse_timeout(value).map_err(invalid)?,
                "user" => {
                    policy::check_user(value).map_err(invalid)?;
                    config.user = value.to_string();
                }
                "workers" => {
                    let n = number()?;
                    if n == 0 || n > 1024 {
                        return Err(invalid(format!(
                            "workers must be between 1 and 1024, found {n}"
                        )));
                    }
                    config.workers = Some(n);
                }
                "queue_max" => config.queue_max = number()?.max(1),
                "max_clients" => config.max_clients = number()?.max(1),
                "auth_trusted" => {
                    config.auth_trusted = value
                        .split([' ', ',', '\t'])
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            policy::check_user(s.strip_prefix('%').unwrap_or(s))
                                .map(|()| s.to_string())
                                .map_err(invalid)
                        })
                        .collect::<Result<_, _>>()?;
                }
                "pam_helper" | "pam_dir" | "pam_helper_socket" => {
                    if !value.starts_with('/') {
                        return Err(invalid(format!(
                            "{key} must be an absolute path, found {value:?}"
                        )));
                    }
                    if key == "pam_helper" {
                        config.pam_helper = PathBuf::from(value);
                    } else if key == "pam_helper_socket" {
                        config.pam_helper_socket = PathBuf::from(value);
                    } else {
                        config.pam_dir = PathBuf::from(value);
                    }
                }
                "prove_timeout" => {
                    let s = duration()?
                        .filter(|s| (10..=3600).contains(s))
                        .ok_or_else(|| invalid(format!("{key} must be between 10s and 1h")))?;
                    config.prove_timeout = Duration::from_secs(s.unsigned_abs());
                }
                "reauthenticate_after" => {
                    config.reauthenticate_after =
                        duration()?
                            .filter(|s| (10..=3600).contains(s))
                            .ok_or_else(|| invalid(format!("{key} must be between 10s and 1h")))?;
                }
                "portal_user" => {
                    policy::check_user(value).map_err(invalid)?;
                    config.portal_user = Some(value.to_string());
                }
                "session_idle" | "session_lifetime" => {
                    let s = duration()?
                        .filter(|s| (60..=30 * 86_400).contains(s))
                        .ok_or_else(|| invalid(format!("{key} must be between 1m and 30d")))?;
                    if key == "session_idle" {
                        config.session_idle = s;
                    } else {
                        config.session_lifetime = s;
                    }
                }
                "argon2_max_memory" => config.hash_cap.m_kib = number()?,
                "argon2_max_time" => config.hash_cap.t = number()?,
                "argon2_max_lanes" => config.hash_cap.p = number()?,
                "notify" => {
                    config.notify = Some(match value {
                        "yes" | "true" | "on" => true,
                        "no" | "false" | "off" => false,
                        _ => {
                            return Err(invalid(format!(
                                "{key} must be yes or no, found {value:?}"
                            )));
                        }
                    })
                }
                "sendmail" => {
                    let words: Vec<String> = value.split_whitespace().map(String::from).collect();
                    let smtp = words.len() == 1
                        && value
                            .strip_prefix("smtp://")
                            .and_then(|a| a.rsplit_once(':'))
                            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                    if !smtp && !words.first().is_some_and(|w| w.starts_with('/')) {
                        return Err(invalid(format!(
                            "{key} must start with the program's absolute path, or be \
                             smtp://HOST:PORT, found {value:?}"
                        )));
                    }
                    config.sendmail = words;
                }
                "notify_domain" => {
                    let ok = !value.starts_with(['.', '-'])
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
                    if !ok {
                        return Err(invalid(format!(
                            "{key} must be a domain name (letters, digits, dots, dashes), found {value:?}"
                        )));
                    }
                    config.notify_domain = Some(value.to_ascii_lowercase());
                }
                "revoke_on_password_change" => {
                    config.revoke_on_password_change = match value {
                        "yes" | "true" | "on" => true,
                        "no" | "false" | "off" => false,
                        _ => {
                            return Err(invalid(format!(
                                "{key} must be yes or no, found {value:?}"
                            )));
                        }
                    }
                }
                "web_listen" => config.web.listen = Listen::parse(value).map_err(invalid)?,
                "web_tls_cert" | "web_tls_key" => {
                    // Empty, as the shipped file's commented line: none.
                    if !value.is_empty() && !value.starts_with('/') {
                        return Err(invalid(format!(
                            "{key} must be an absolute path, found {value:?}"
                        )));
                    }
                    let slot = if key == "web_tls_cert" {
                        &mut config.web.tls_cert
                    } else {
                        &mut config.web.tls_key
                    };
                    *slot = (!value.is_empty()).then(|| PathBuf::from(value));
                }
                "trusted_proxies" => {
                    let nets = crate::networks::Networks::from_column(value)
                        .map_err(|e| invalid(format!("{key}: {e}")))?;
                    config.web.trusted_proxies = (!nets.is_any()).then_some(nets);
                }
                "site_name" => {
                    if value.is_empty()
                        || value.chars().count() > 64
                        || value.chars().any(char::is_control)
                    {
                        return Err(invalid(format!(
                            "{key} must be 1 to 64 printable characters"
                        )));
                    }
                    config.web.site_name = value.to_string();
                }
                "mail_domain" => config.web.mail_domain = Some(check_host(value).map_err(invalid)?),
                "imap_host" => config.web.imap_host = Some(check_host(value).map_err(invalid)?),
                "smtp_host" => config.web.smtp_host = Some(check_host(value).map_err(invalid)?),
                "imap_port" | "smtp_port" => {
                    let port: u16 = value
                        .parse()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| invalid(format!("{key} must be a port (1-65535)")))?;
                    if key == "imap_port" {
                        config.web.imap_port = port;
                    } else {
                        config.web.smtp_port = port;
                    }
                }
                _ => warnings.push(format!(
                    "{}:{line}: unknown setting {key:?} ignored",
                    path.display()
                )),
            }
        }
        if config.web.tls_cert.is_some() != config.web.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: 0,
                why: "web_tls_cert and web_tls_key go together: set both, or neither".into(),
            });
        }
        if let Some(n) = throttle_failures {
            throttle.failures = n;
        }
        config.throttle = (throttle.failures > 0).then_some(throttle);
        local.interval = throttle.interval;
        config.throttle_local = config.throttle.and((local.failures > 0).then_some(local));
        check_groups(&config.groups, &group_lines).map_err(|(line, why)| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            why,
        })?;
        if let (Some(d), Some(m)) = (config.default_lifetime, config.max_lifetime) {
            // The built-in lifetime gives way to a shorter max_lifetime; one the file
            // sets must fit.
            if d > m && !default_lifetime_set {
                config.default_lifetime = Some(m);
            } else if d > m {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line: 0,
                    why: "default_lifetime is longer than max_lifetime".into(),
                });
            }
        }
        config.hash.validate().map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: 0,
            why: e.to_string(),
        })?;
        let cap = config.hash_cap;
        if config.hash.m_kib > cap.m_kib || config.hash.t > cap.t || config.hash.p > cap.p {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: 0,
                why: "argon2 parameters above their caps (argon2_max_memory, argon2_max_time, argon2_max_lanes)".into(),
            });
        }
        let weakest = HashParams::default();
        if config.hash.m_kib < weakest.m_kib || config.hash.t < weakest.t {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: 0,
                why: format!(
                    "argon2 parameters below OWASP's minimum (argon2_memory >= {}, argon2_time >= {})",
                    weakest.m_kib, weakest.t
                ),
            });
        }
        Ok(Loaded { config, warnings })
    }
}

impl Config {
    /// The throttling rule for an attempt from `rhost` (`""`: the service gave none).
    pub fn throttle_for(&self, rhost: &str) -> Option<Throttle> {
        if rhost.is_empty() {
            self.throttle_local
        } else {
            self.throttle
        }
    }
}

/// `group NAME` keys: `None` for every other key; the name, or why it cannot be one.
fn group_name(key: &str) -> Option<Result<String, String>> {
    let rest = key.strip_prefix("group")?;
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut words = rest.split_whitespace();
    Some(match (words.next(), words.next()) {
        (Some(name), None) if name == policy::ANY_SERVICE => {
            Err("* cannot be a group's name: it already means every service".into())
        }
        (Some(name), None) => policy::check_service(name)
            .map(|()| name.to_string())
            .map_err(|e| format!("group {name}: {e}")),
        _ => Err("expected group NAME = SERVICE ..., e.g. group mail = imap smtp".into()),
    })
}

/// A list of service names, separated by spaces or commas.
fn service_list(value: &str) -> Result<Vec<String>, String> {
    value
        .split([' ', ',', '\t'])
        .filter(|s| !s.is_empty())
        .map(|s| policy::check_service(s).map(|()| s.to_string()))
        .collect()
}

/// Groups hold services, and a name is a group or a service, never both: a group holds no
/// `*` and no group (itself included). Otherwise a password's scope would change meaning
/// with the order of lines, or open more than its group lists. `lines`: where the file
/// defined each group (the others are built in). `Err`: the line and why.
fn check_groups(groups: &Groups, lines: &[(String, usize)]) -> Result<(), (usize, String)> {
    let line_of = |name: &str| lines.iter().find(|(n, _)| n == name).map(|(_, l)| *l);
    let defined = |name: &str| match line_of(name) {
        Some(l) => format!("defined on line {l}"),
        None => format!("built in; redefine it with group {name} = ..."),
    };
    for (name, members) in groups {
        let at = line_of(name).unwrap_or(0);
        for m in members {
            if m == policy::ANY_SERVICE {
                return Err((
                    at,
                    format!(
                        "group {name} cannot hold *: a group names the services it opens; \
                         an admin makes * passwords"
                    ),
                ));
            }
            if groups.contains_key(m) {
                return Err((
                    at,
                    format!(
                        "group {name} holds {m}, which is a group ({}): groups hold services \
                         only, and a name cannot be both a group and a service",
                        defined(m)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A database timeout: a duration, never "never".
fn seconds(value: Option<i64>, key: &str) -> Result<std::time::Duration, String> {
    let secs = value.ok_or_else(|| format!("{key} cannot be never"))?;
    Ok(std::time::Duration::from_secs(secs.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded, ConfigError> {
        Config::parse(text, Path::new("test.conf"))
    }

    #[test]
    fn empty_is_default() {
        let l = parse("# nothing\n\n   \n").unwrap();
        assert_eq!(l.config, Config::default());
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn a_proof_is_fresh_for_reauthenticate_after() {
        let c = Config::default();
        assert!(c.proof_is_fresh(1000, 1000 + 299) && !c.proof_is_fresh(1000, 1000 + 300));
        let c = parse("reauthenticate_after = 10s\n").unwrap().config;
        assert!(c.proof_is_fresh(1000, 1009) && !c.proof_is_fresh(1000, 1010));
        for bad in ["9s", "2h", "never", "soon"] {
            let e = parse(&format!("reauthenticate_after = {bad}\n")).unwrap_err();
            assert!(e.to_string().contains("reauthenticate_after"), "{e}");
        }
    }

    #[test]
    fn keys_and_comments() {
        let l = parse(
            "db = /srv/app.db  # shared\nargon2_memory=65536\n argon2_time = 3\nargon2_lanes = 2\n",
        )
        .unwrap();
        assert_eq!(l.config.db, Location::Sqlite(PathBuf::from("/srv/app.db")));
        assert_eq!(
            l.config.hash,
            HashParams {
                m_kib: 65536,
                t: 3,
                p: 2
            }
        );
    }

    #[test]
    fn web_keys() {
        let w = parse(
            "web_listen = unix:/run/w.sock\nweb_tls_cert = /c.pem\nweb_tls_key = /k.pem\n\
             trusted_proxies = 127.0.0.1, ::1\nsite_name = Example Mail\nmail_domain = Example.org\n\
             imap_host = imap.example.org\nimap_port = 143\nsmtp_host = smtp.example.org\nsmtp_port = 587\n",
        )
        .unwrap()
        .config
        .web;
        assert_eq!(w.listen, Listen::Unix(PathBuf::from("/run/w.sock")));
        assert_eq!(w.tls_key.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(
            (w.site_name.as_str(), w.mail_domain.as_deref()),
            ("Example Mail", Some("example.org"))
        );
        assert_eq!((w.imap_port, w.smtp_port), (143, 587));
        assert!(w.trusted_proxies.unwrap().allows(Some("::1")));
        let none = parse("trusted_proxies =\nweb_tls_cert =\nweb_tls_key =").unwrap();
        assert_eq!(none.config.web, Web::default());
        assert_eq!(Listen::parse("[::1]:80").unwrap().to_string(), "[::1]:80");
        for bad in [
            "web_listen = localhost:80",
            "web_listen = unix:rel",
            "web_tls_cert = /c.pem",
            "imap_port = 0",
            "imap_host = a b",
            "trusted_proxies = nonsense",
            "site_name = ",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_keys() {
        let l = parse(
            "services = imap, pop3 submission\nmax_passwords = 5\ndefault_lifetime = 90d\nmax_lifetime = 365d\n\
             idle_expiry = 30d\nthrottle_failures = 3\nthrottle_interval = 10m\nthrottle_lockout = 1h\n\
             audit_max_age = never\naudit_max_rows = 500\nadmin_group = mailadm\n",
        )
        .unwrap()
        .config;
        assert_eq!(l.services, ["imap", "pop3", "submission"]);
        assert_eq!(l.max_passwords, Some(5));
        assert_eq!(
            (l.default_lifetime, l.max_lifetime, l.idle_expiry),
            (Some(90 * 86400), Some(365 * 86400), Some(30 * 86400))
        );
        assert_eq!(
            l.throttle,
            Some(Throttle {
                failures: 3,
                interval: 600,
                lockout: 3600
            })
        );
        assert_eq!(
            l.throttle_local,
            Some(Throttle {
                failures: 30,
                interval: 600,
                lockout: 300
            })
        );
        assert_eq!(l.throttle_for("192.0.2.1"), l.throttle);
        assert_eq!(l.throttle_for(""), l.throttle_local);
        assert_eq!((l.audit_max_age, l.audit_max_rows), (i64::MAX, 500));
        assert_eq!(l.admin_group.as_deref(), Some("mailadm"));
        let off = parse("throttle_failures = 0").unwrap().config;
        assert_eq!((off.throttle, off.throttle_local), (None, None));
        let local = parse(
            "throttle_local_failures = 50\nthrottle_local_lockout = 1m\nthrottle_max_rows = 7",
        )
        .unwrap()
        .config;
        assert_eq!(
            local.throttle_local,
            Some(Throttle {
                failures: 50,
                interval: 900,
                lockout: 60
            })
        );
        assert_eq!(local.throttle, Config::default().throttle);
        assert_eq!(local.throttle_max_rows, 7);
        let no_local = parse("throttle_local_failures = 0").unwrap().config;
        assert!(no_local.throttle.is_some() && no_local.throttle_local.is_none());
        assert!(parse("throttle_local_lockout = never").is_err());
        assert!(parse("throttle_max_rows = 0").is_err());
        assert_eq!(
            parse("max_passwords = 0").unwrap().config.max_passwords,
            None
        );
        assert!(parse("default_lifetime = 400d\nmax_lifetime = 365d").is_err());
        assert!(parse("services = im/ap").is_err());
        assert!(parse("throttle_lockout = never").is_err());
        assert!(
            parse("idle_expiry = soon")
                .unwrap_err()
                .to_string()
                .contains("idle_expiry")
        );
    }

    #[test]
    fn safe_defaults_without_a_file() {
        let d = Config::default();
        assert_eq!(d.services, ["mail"]);
        assert_eq!(
            d.groups.get("mail").unwrap(),
            &["imap", "pop3", "submission", "smtp", "sieve"]
        );
        assert_eq!(d.max_passwords, Some(20));
        assert_eq!(d.default_lifetime, Some(365 * 86400));
        assert_eq!(d.max_lifetime, None);
        // An administrator's own values win: none at all, or other ones.
        let c = parse(
            "services =
max_passwords = 0
default_lifetime = never
",
        )
        .unwrap()
        .config;
        assert!(c.services.is_empty());
        assert_eq!((c.max_passwords, c.default_lifetime), (None, None));
        // A shorter max_lifetime alone shortens the built-in lifetime rather than
        // making the file invalid.
        let c = parse("max_lifetime = 90d").unwrap().config;
        assert_eq!(c.default_lifetime, Some(90 * 86400));
    }

    #[test]
    fn groups() {
        let c = parse(
            "group office = imap smtp\ngroup\tdav = caldav, carddav\nservices = office dav sshd\n",
        )
        .unwrap()
        .config;
        assert_eq!(c.groups["office"], ["imap", "smtp"]);
        assert_eq!(c.groups["dav"], ["caldav", "carddav"]);
        // The built-in group stays unless redefined.
        assert_eq!(c.groups["mail"].len(), 5);
        assert_eq!(c.services, ["office", "dav", "sshd"]);
        let c = parse("group mail = imap smtp").unwrap().config;
        assert_eq!(c.groups["mail"], ["imap", "smtp"]);
        // "groups" is another key, unknown.
        assert_eq!(parse("groups = x").unwrap().warnings.len(), 1);
    }

    #[test]
    fn bad_groups_are_refused_with_the_line() {
        let e = |text: &str| parse(text).unwrap_err().to_string();
        let msg = e("group office = imap\ngroup office = smtp\n");
        assert!(
            msg.contains("test.conf:2: group office is already defined on line 1"),
            "{msg}"
        );
        let msg = e("group = imap");
        assert!(
            msg.contains("test.conf:1: expected group NAME = SERVICE"),
            "{msg}"
        );
        let msg = e("group a b = imap");
        assert!(msg.contains("expected group NAME"), "{msg}");
        let msg = e("group * = imap");
        assert!(msg.contains("* cannot be a group's name"), "{msg}");
        let msg = e("group im/ap = imap");
        assert!(msg.contains("bad service name"), "{msg}");
        let msg = e("group office =\n");
        assert!(msg.contains("group office holds no service"), "{msg}");
        let msg = e("# x\ngroup all = imap *\n");
        assert!(
            msg.contains("test.conf:2: group all cannot hold *"),
            "{msg}"
        );
        // A name is a group or a service, never both: no group in a group, itself
        // included, whichever line comes first; a built-in group counts.
        let msg = e("group office = imap\ngroup phone = office smtp\n");
        assert!(
            msg.contains(
                "test.conf:2: group phone holds office, which is a group (defined on line 1)"
            ),
            "{msg}"
        );
        let msg = e("group phone = office smtp\ngroup office = imap\n");
        assert!(
            msg.contains("test.conf:1: group phone holds office"),
            "{msg}"
        );
        let msg = e("group loop = loop imap");
        assert!(
            msg.contains("group loop holds loop, which is a group"),
            "{msg}"
        );
        let msg = e("group phone = mail sshd");
        assert!(
            msg.contains("group phone holds mail, which is a group (built in; redefine it with group mail = ...)"),
            "{msg}"
        );
        let msg = e("services = mail *");
        assert!(msg.contains("services cannot hold *"), "{msg}");
    }

    #[test]
    fn postgresql_keys() {
        let c = parse(
            "db = host=10.0.0.5 dbname=apppass user=apppass_login\ndb_passfile = /etc/security/apppass.pgpass\n\
             db_connect_timeout = 1s\ndb_query_timeout = 3s\n",
        )
        .unwrap()
        .config;
        assert_eq!(
            c.db.to_string(),
            "PostgreSQL host=10.0.0.5 dbname=apppass user=apppass_login"
        );
        assert_eq!(
            c.connect,
            Connect {
                passfile: Some(PathBuf::from("/etc/security/apppass.pgpass")),
                connect_timeout: std::time::Duration::from_secs(1),
                query_timeout: std::time::Duration::from_secs(3),
            }
        );
        assert_eq!(Config::default().connect.connect_timeout.as_secs(), 2);
        let e = parse("db = postgresql://u:hunter2@h/d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("password") && !e.contains("hunter2"), "{e}");
        assert!(parse("db_passfile = pgpass").is_err());
        assert!(parse("db_query_timeout = never").is_err());
        assert!(parse("db_connect_timeout = 0s").is_err());
    }

    #[test]
    fn daemon_keys() {
        let c = parse(
            "socket = /run/x/apppassd.sock\ntimeout = 750ms\nuser = apppassd\nworkers = 4\n\
             queue_max = 64\nmax_clients = 300\nauth_trusted = dovecot, %mail\n\
             argon2_max_memory = 65536\nargon2_max_time = 4\nargon2_max_lanes = 2\n",
        )
        .unwrap()
        .config;
        assert_eq!(c.socket, PathBuf::from("/run/x/apppassd.sock"));
        assert_eq!(c.timeout, Duration::from_millis(750));
        assert_eq!(c.user, "apppassd");
        assert_eq!((c.workers, c.queue_max, c.max_clients), (Some(4), 64, 300));
        assert_eq!(c.auth_trusted, ["dovecot", "%mail"]);
        assert_eq!(
            c.hash_cap,
            HashParams {
                m_kib: 65536,
                t: 4,
                p: 2
            }
        );
        let d = Config::default();
        assert_eq!(d.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            (d.user.as_str(), d.timeout),
            (DEFAULT_USER, Duration::from_secs(5))
        );
        for bad in [
            "socket = relative",
            "timeout = 0",
            "workers = 0",
            "auth_trusted = %",
            "user = a b",
            "argon2_max_memory = 8192",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn notices_by_mail() {
        let d = Config::default();
        assert_eq!(
            (d.notify, d.sendmail, d.notify_domain),
            (None, vec![DEFAULT_SENDMAIL.to_string()], None)
        );
        let c = parse(
            "notify = no\nsendmail = /usr/sbin/sendmail -C /etc/postfix-out\nnotify_domain = Example.ORG\n",
        )
        .unwrap()
        .config;
        assert_eq!(c.notify, Some(false));
        assert_eq!(c.sendmail, ["/usr/sbin/sendmail", "-C", "/etc/postfix-out"]);
        assert_eq!(c.notify_domain.as_deref(), Some("example.org"));
        for bad in [
            "notify = maybe",
            "sendmail = sendmail",
            "sendmail =",
            "notify_domain = a b",
            "notify_domain = x>y",
            "notify_domain = -x",
        ] {
            assert!(parse(&format!("{bad}\n")).is_err(), "{bad}");
        }
    }

    #[test]
    fn revoke_on_password_change_is_yes_or_no() {
        assert!(Config::default().revoke_on_password_change);
        let c = parse("revoke_on_password_change = no\n").unwrap().config;
        assert!(!c.revoke_on_password_change);
        let c = parse("revoke_on_password_change = yes\n").unwrap().config;
        assert!(c.revoke_on_password_change);
        assert!(parse("revoke_on_password_change = maybe\n").is_err());
    }

    #[test]
    fn unknown_keys_warn() {
        let l = parse("colour = blue\n").unwrap();
        assert_eq!(
            l.warnings,
            vec!["test.conf:1: unknown setting \"colour\" ignored"]
        );
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = parse("db = /x\nnonsense\n").unwrap_err().to_string();
        assert!(e.starts_with("test.conf:2: expected key = value"), "{e}");
        let e = parse("argon2_time = lots").unwrap_err().to_string();
        assert!(e.contains("argon2_time must be a whole number"), "{e}");
        assert!(parse("db = relative.db").is_err());
        assert!(
            parse("argon2_memory = 1024")
                .unwrap_err()
                .to_string()
                .contains("OWASP")
        );
        assert!(parse("argon2_lanes = 0").is_err());
    }

    #[test]
    fn missing_file_is_default_only_when_implicit() {
        let p = Path::new("/nonexistent/apppass.conf");
        assert_eq!(Config::load(p, false).unwrap().config, Config::default());
        assert!(Config::load(p, true).is_err());
    }

    #[test]
    fn require_from() {
        let l = parse("require_from = smtp sshd,imap\n").unwrap().config;
        assert_eq!(l.require_from, ["smtp", "sshd", "imap"]);
        assert!(parse("").unwrap().config.require_from.is_empty());
        assert!(parse("require_from = sm/tp").is_err());
    }
}
