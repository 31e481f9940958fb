//! The PAM module's arguments, as written after `pam_apppass.so` in a PAM service file.
//! Here, not in the module, so that `apppass doctor` reads them the same way.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::conf;
use crate::names;

/// What the PAM line asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModuleArgs {
    /// `socket=PATH`: apppassd's socket, overriding the configuration.
    pub socket: Option<PathBuf>,
    /// `conf=PATH`: the configuration file (it must then exist).
    pub conf: Option<PathBuf>,
    /// `service=NAME`: the scope to check instead of PAM_SERVICE.
    pub service: Option<String>,
    /// `timeout=`: how long to wait for apppassd, overriding the configuration.
    pub timeout: Option<Duration>,
    /// `debug`: log each step at LOG_DEBUG.
    pub debug: bool,
    /// Arguments of earlier versions that mean nothing now (`db=`): logged at every
    /// login, and flagged by `apppass doctor`, until the PAM file is updated.
    pub obsolete: Vec<String>,
    /// Arguments this module does not know: logged, not fatal, so that a newer PAM file
    /// does not lock everyone out of an older module.
    pub unknown: Vec<String>,
}

/// An argument that is known but unusable: the module refuses to guess (PAM_SERVICE_ERR).
#[derive(Debug, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

/// Parses the module's argv. `use_first_pass` and `try_first_pass` are recognised here
/// but acted on by libpam's `pam_get_authtok`, which reads them itself.
pub fn parse(argv: &[&[u8]]) -> Result<ModuleArgs, ArgError> {
    let mut args = ModuleArgs::default();
    for raw in argv {
        let Ok(arg) = std::str::from_utf8(raw) else {
            args.unknown.push(String::from_utf8_lossy(raw).into_owned());
            continue;
        };
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (arg, None),
        };
        match (key, value) {
            ("debug", None) => args.debug = true,
            ("use_first_pass" | "try_first_pass", None) => {}
            // The store is apppassd's now; never echo the value (it may have held a
            // connection string).
            ("db", _) => args.obsolete.push("db=".into()),
            ("socket", Some(v)) => args.socket = Some(conf::parse_socket(v).map_err(ArgError)?),
            ("conf", Some(v)) => args.conf = Some(absolute(key, v)?),
            ("timeout", Some(v)) => args.timeout = Some(conf::parse_timeout(v).map_err(ArgError)?),
            ("service", Some(v)) => {
                names::check_service(v).map_err(ArgError)?;
                if v == names::ANY_SERVICE {
                    return Err(ArgError(
                        "service=* would let every scope in; name one service".into(),
                    ));
                }
                args.service = Some(v.to_string());
            }
            ("socket" | "conf" | "service" | "timeout", None) => {
                return Err(ArgError(format!("{key} needs a value: {key}=...")));
            }
            _ => args.unknown.push(arg.to_string()),
        }
    }
    Ok(args)
}

fn absolute(key: &str, value: &str) -> Result<PathBuf, ArgError> {
    if value.starts_with('/') {
        Ok(PathBuf::from(value))
    } else {
        Err(ArgError(format!(
            "{key}= must be an absolute path, got {value:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<ModuleArgs, ArgError> {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        parse(&bytes)
    }

    #[test]
    fn known_arguments() {
        let a = p(&[
            "socket=/run/x.sock",
            "conf=/etc/x.conf",
            "service=imap",
            "timeout=2s",
            "debug",
            "use_first_pass",
        ])
        .unwrap();
        assert_eq!(a.socket, Some(PathBuf::from("/run/x.sock")));
        assert_eq!(a.conf, Some(PathBuf::from("/etc/x.conf")));
        assert_eq!(a.service.as_deref(), Some("imap"));
        assert_eq!(a.timeout, Some(Duration::from_secs(2)));
        assert!(a.debug && a.unknown.is_empty() && a.obsolete.is_empty());
    }

    #[test]
    fn db_is_obsolete_and_never_echoed() {
        let a = p(&["db=postgresql://u:s3cret@h/d"]).unwrap();
        assert_eq!(a.obsolete, vec!["db="]);
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_arguments_are_kept_for_the_log() {
        let a = p(&["nullok", "debug=1"]).unwrap();
        assert_eq!(a.unknown, vec!["nullok", "debug=1"]);
        let bytes: &[&[u8]] = &[b"\xff"];
        assert_eq!(parse(bytes).unwrap().unknown, vec!["\u{fffd}"]);
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in [
            &["socket=relative.sock"][..],
            &["socket"],
            &["conf=x"],
            &["service=a b"],
            &["service=*"],
            &["service="],
            &["timeout=0"],
            &["timeout=forever"],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }
}
