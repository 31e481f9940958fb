//! The configuration file, `/etc/security/apppass.conf`, read by the module and the CLI
//! alike. Its shape is faillock.conf's: `key = value` lines, `#` comments. Module
//! arguments and CLI options override what it says.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::secret::HashParams;

/// Where the configuration lives unless `conf=` or `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/security/apppass.conf";
/// Where the database lives unless the configuration or an argument says otherwise.
pub const DEFAULT_DB: &str = "/var/lib/apppass/apppass.db";
/// Larger files are not configuration files.
const MAX_CONFIG_LEN: u64 = 64 * 1024;

/// Settings shared by the module and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The database.
    pub db: PathBuf,
    /// argon2id parameters for new app passwords (and for the dummy hash that unknown
    /// users and selectors are checked against).
    pub hash: HashParams,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db: PathBuf::from(DEFAULT_DB),
            hash: HashParams::default(),
        }
    }
}

/// A configuration that cannot be used. Display names the file and line.
#[derive(Debug)]
pub enum ConfigError {
    /// The file exists (or was named explicitly) but could not be read.
    Read(PathBuf, std::io::Error),
    /// A line that is not `key = value`, or a value out of range.
    Invalid {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            ConfigError::Invalid { path, line, why } => {
                write!(f, "{}:{line}: {why}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A configuration and what was odd but harmless in it (unknown keys), for the caller to
/// log or print.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads `path`. When `explicit` is false a missing file means the defaults (the file is
    /// optional); a file that was asked for must exist.
    pub fn load(path: &Path, explicit: bool) -> Result<Loaded, ConfigError> {
        use std::io::Read;
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    config: Config::default(),
                    warnings: Vec::new(),
                });
            }
            Err(e) => return Err(ConfigError::Read(path.to_path_buf(), e)),
        };
        let mut text = String::new();
        file.take(MAX_CONFIG_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        if text.len() as u64 > MAX_CONFIG_LEN {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: 0,
                why: format!("larger than {MAX_CONFIG_LEN} bytes"),
            });
        }
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        let mut config = Config::default();
        let mut warnings = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let invalid = |why: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                why,
            };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let (key, value) = content
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| invalid(format!("expected key = value, found {content:?}")))?;
            let number = || -> Result<u32, ConfigError> {
                value
                    .parse()
                    .map_err(|_| invalid(format!("{key} must be a whole number, found {value:?}")))
            };
            match key {
                "db" => {
                    if !value.starts_with('/') {
                        return Err(invalid(format!(
                            "db must be an absolute path, found {value:?}"
                        )));
                    }
                    config.db = PathBuf::from(value);
                }
                "argon2_memory" => config.hash.m_kib = number()?,
                "argon2_time" => config.hash.t = number()?,
                "argon2_lanes" => config.hash.p = number()?,
                _ => warnings.push(format!(
                    "{}:{line}: unknown setting {key:?} ignored",
                    path.display()
                )),
            }
        }
        config.hash.validate().map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: 0,
            why: e.to_string(),
        })?;
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
    fn keys_and_comments() {
        let l = parse(
            "db = /srv/app.db  # shared\nargon2_memory=65536\n argon2_time = 3\nargon2_lanes = 2\n",
        )
        .unwrap();
        assert_eq!(l.config.db, PathBuf::from("/srv/app.db"));
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
}
