//! The module's arguments, as written after `pam_apppass.so` in a PAM service file.

use std::fmt;
use std::path::PathBuf;

use crate::policy;
use crate::store::Location;

/// What the PAM line asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModuleArgs {
    /// `db=PATH` or `db=CONNINFO`: overrides the configuration file's database.
    pub db: Option<Location>,
    /// `conf=PATH`: the configuration file (it must then exist).
    pub conf: Option<PathBuf>,
    /// `service=NAME`: the scope to check instead of PAM_SERVICE.
    pub service: Option<String>,
    /// `debug`: log each step at LOG_DEBUG.
    pub debug: bool,
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
            ("db", Some(v)) => args.db = Some(Location::parse(v).map_err(ArgError)?),
            ("conf", Some(v)) => args.conf = Some(absolute(key, v)?),
            ("service", Some(v)) => {
                policy::check_service(v).map_err(ArgError)?;
                if v == policy::ANY_SERVICE {
                    return Err(ArgError(
                        "service=* would let every scope in; name one service".into(),
                    ));
                }
                args.service = Some(v.to_string());
            }
            ("db" | "conf" | "service", None) => {
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
            "db=/srv/a.db",
            "conf=/etc/x.conf",
            "service=imap",
            "debug",
            "use_first_pass",
        ])
        .unwrap();
        assert_eq!(a.db, Some(Location::Sqlite(PathBuf::from("/srv/a.db"))));
        let pg = p(&["db=postgresql://apppass_login@db1/apppass"]).unwrap();
        assert!(pg.db.is_some_and(|d| d.is_postgres()));
        assert_eq!(a.conf, Some(PathBuf::from("/etc/x.conf")));
        assert_eq!(a.service.as_deref(), Some("imap"));
        assert!(a.debug && a.unknown.is_empty());
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
            &["db=relative.db"][..],
            &["db=postgresql://u:pw@h/d"],
            &["db="],
            &["db"],
            &["conf=x"],
            &["service=a b"],
            &["service=*"],
            &["service="],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }
}
