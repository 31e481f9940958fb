//! The configuration file's shape, `/etc/security/apppass.conf`: `key = value` lines and
//! `#` comments, as faillock.conf. apppassd reads every key (apppass-core's `Config`);
//! the clients read only the few that tell them how to reach it ([`ClientSettings`]),
//! through the same line reader.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration lives unless `conf=` or `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/security/apppass.conf";
/// Where apppassd listens unless the configuration or an argument says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/apppass/apppassd.sock";
/// How long a client waits for apppassd unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The system user apppassd runs as (Debian's `_name` convention for system users).
pub const DEFAULT_USER: &str = "_apppass";
/// Larger files are not configuration files.
pub const MAX_CONFIG_LEN: u64 = 64 * 1024;

/// A line that cannot be used; Display names the file and line.
#[derive(Debug)]
pub enum ConfError {
    /// The file exists (or was named explicitly) but could not be read.
    Read(PathBuf, std::io::Error),
    /// A line that is not `key = value`, or a value out of range.
    Invalid {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            ConfError::Invalid { path, line, why } => {
                write!(f, "{}:{line}: {why}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfError {}

/// One `key = value` line: its number (from 1), key and value, trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub number: usize,
    pub key: &'a str,
    pub value: &'a str,
}

/// The settings of `text`, in order, without comments and blank lines; a line that is
/// not `key = value` is an error naming it.
pub fn lines<'a>(text: &'a str, path: &Path) -> Result<Vec<Line<'a>>, ConfError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let (key, value) = content.split_once('=').ok_or_else(|| ConfError::Invalid {
            path: path.to_path_buf(),
            line: i + 1,
            why: format!("expected key = value, found {content:?}"),
        })?;
        out.push(Line {
            number: i + 1,
            key: key.trim(),
            value: value.trim(),
        });
    }
    Ok(out)
}

/// Reads `path` whole (at most [`MAX_CONFIG_LEN`]). `None`: it does not exist and was
/// not asked for by name, so the defaults apply.
pub fn read(path: &Path, explicit: bool) -> Result<Option<String>, ConfError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfError::Read(path.to_path_buf(), e)),
    };
    let mut text = String::new();
    file.take(MAX_CONFIG_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|e| ConfError::Read(path.to_path_buf(), e))?;
    if text.len() as u64 > MAX_CONFIG_LEN {
        return Err(ConfError::Invalid {
            path: path.to_path_buf(),
            line: 0,
            why: format!("larger than {MAX_CONFIG_LEN} bytes"),
        });
    }
    Ok(Some(text))
}

/// `socket`: an absolute path.
pub fn parse_socket(value: &str) -> Result<PathBuf, String> {
    if value.starts_with('/') {
        Ok(PathBuf::from(value))
    } else {
        Err(format!("socket must be an absolute path, found {value:?}"))
    }
}

/// `timeout`: seconds (`5`, `5s`) or milliseconds (`500ms`), from 1 ms to 10 minutes.
pub fn parse_timeout(value: &str) -> Result<Duration, String> {
    let bad = || format!("bad timeout {value:?}: expected seconds (5, 5s) or milliseconds (500ms)");
    let (number, scale) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1000)
    } else {
        (value, 1000)
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms = n.checked_mul(scale).ok_or_else(bad)?;
    if ms == 0 || ms > 600_000 {
        return Err(format!(
            "bad timeout {value:?}: must be between 1ms and 600s"
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// What a client needs from the configuration to reach apppassd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// `socket`: where apppassd listens.
    pub socket: PathBuf,
    /// `timeout`: how long to wait for it.
    pub timeout: Duration,
    /// `user`: the user apppassd runs as, trusted to answer (beside root).
    pub user: String,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            socket: PathBuf::from(DEFAULT_SOCKET),
            timeout: DEFAULT_TIMEOUT,
            user: DEFAULT_USER.to_string(),
        }
    }
}

impl ClientSettings {
    /// The client's keys of the configuration at `path` (every other key is apppassd's
    /// business, and checked by it).
    pub fn load(path: &Path, explicit: bool) -> Result<ClientSettings, ConfError> {
        let mut settings = ClientSettings::default();
        let Some(text) = read(path, explicit)? else {
            return Ok(settings);
        };
        for line in lines(&text, path)? {
            let invalid = |why: String| ConfError::Invalid {
                path: path.to_path_buf(),
                line: line.number,
                why,
            };
            match line.key {
                "socket" => settings.socket = parse_socket(line.value).map_err(invalid)?,
                "timeout" => settings.timeout = parse_timeout(line.value).map_err(invalid)?,
                "user" => {
                    crate::names::check_user(line.value).map_err(invalid)?;
                    settings.user = line.value.to_string();
                }
                _ => {}
            }
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_comments() {
        let l = lines("# c\n\n a = b # x\nc=d=e\n", Path::new("t")).unwrap();
        assert_eq!(
            l,
            [
                Line {
                    number: 3,
                    key: "a",
                    value: "b"
                },
                Line {
                    number: 4,
                    key: "c",
                    value: "d=e"
                }
            ]
        );
        let e = lines("a = b\nnonsense\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t:2: expected key = value"), "{e}");
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_timeout("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_timeout("250ms").unwrap(), Duration::from_millis(250));
        for bad in [
            "",
            "0",
            "0ms",
            "601s",
            "5m",
            "-1",
            "1.5s",
            "99999999999999999999",
        ] {
            assert!(parse_timeout(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_settings() {
        let dir = std::env::temp_dir().join(format!("apppass-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("apppass.conf");
        std::fs::write(
            &p,
            "socket = /tmp/s.sock\ntimeout = 1s\nargon2_time = 3\nuser = apppass\n",
        )
        .unwrap();
        let s = ClientSettings::load(&p, true).unwrap();
        assert_eq!(s.socket, Path::new("/tmp/s.sock"));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!(s.user, "apppass");
        std::fs::write(&p, "socket = relative\n").unwrap();
        assert!(ClientSettings::load(&p, true).is_err());
        assert_eq!(
            ClientSettings::load(&dir.join("none"), false).unwrap(),
            ClientSettings::default()
        );
        assert!(ClientSettings::load(&dir.join("none"), true).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
