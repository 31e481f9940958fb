//! Where the database is: the `db` setting (module argument `db=`, configuration `db =`,
//! CLI `--db`). An absolute path is an SQLite file; a `postgresql://` (or `postgres://`)
//! URI, a libpq `key=value` string or `service=NAME` is a PostgreSQL database.
//!
//! A password in the setting is refused: the setting is on PAM lines, in the
//! configuration and on command lines, all of which others may read or log. Passwords
//! come from the password file named by `db_passfile` ([`Connect`]). Nothing here ever
//! prints the setting itself: [`Conninfo`]'s Display and Debug show only the host, port,
//! database, user and service.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Keywords whose values are secrets, or name where secrets are: never in the setting.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "password",
        "holds a password: put it in the file db_passfile names (libpq's .pgpass format)",
    ),
    (
        "passfile",
        "names a password file: use db_passfile in the configuration instead",
    ),
    (
        "sslpassword",
        "holds the client key's password: use a key without one, readable by root only",
    ),
];

/// Keywords shown when a location is printed: where, never how to get in.
const SHOWN: &[&str] = &["service", "host", "hostaddr", "port", "dbname", "user"];

/// A database location.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(Conninfo),
}

/// A PostgreSQL connection string without a password, as libpq reads it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conninfo {
    /// The setting as given (passed to libpq as an expanded `dbname`).
    text: String,
    /// The `options` it sets, if any (apppass adds its statement timeout to them).
    options: Option<String>,
    /// What may be shown of it.
    shown: Vec<(String, String)>,
}

impl Location {
    /// Parses a `db` setting. Errors never quote a setting that could hold a password.
    pub fn parse(value: &str) -> Result<Location, String> {
        if value.starts_with('/') {
            return Ok(Location::Sqlite(PathBuf::from(value)));
        }
        let pairs = if let Some(rest) = value
            .strip_prefix("postgresql://")
            .or_else(|| value.strip_prefix("postgres://"))
        {
            parse_uri(rest)?
        } else if value.contains('=') {
            parse_keywords(value)?
        } else {
            // Quoted only if it cannot be a mistyped URI with a password in it.
            let got = if value.contains([':', '@']) {
                String::new()
            } else {
                format!(", got {value:?}")
            };
            return Err(format!(
                "db must be an absolute path (SQLite) or a PostgreSQL connection string \
                 (postgresql://..., key=value ..., service=NAME){got}"
            ));
        };
        for (key, _) in &pairs {
            if let Some((_, why)) = FORBIDDEN.iter().find(|(k, _)| k == key) {
                return Err(format!("the PostgreSQL connection string {why}"));
            }
        }
        if let Some((_, v)) = pairs.iter().find(|(k, _)| k == "dbname") {
            // libpq expands only the outermost string: a nested one would be a database
            // name, shown in messages, perhaps with a password in it.
            if v.contains('=') || v.contains("://") {
                return Err(
                    "the PostgreSQL connection string's dbname is itself a connection string"
                        .into(),
                );
            }
        }
        let last = |key: &str| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        // What the string itself says; the connection checks again what libpq resolved
        // (a service file or PGSSLMODE may supply sslmode, PGHOST the host).
        if let Some(mode) = last("sslmode") {
            let tcp = tcp_hosts(last("host"), last("hostaddr"));
            if mode != "verify-full" && !tcp.is_empty() {
                return Err(unverified_tls(&tcp, mode));
            }
        }
        let options = last("options").map(String::from);
        let shown = pairs
            .into_iter()
            .filter(|(k, _)| SHOWN.contains(&k.as_str()))
            .collect();
        Ok(Location::Postgres(Conninfo {
            text: value.to_string(),
            options,
            shown,
        }))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }
}

impl Conninfo {
    /// The string to hand libpq.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The `options` the string sets.
    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(c) => c.fmt(f),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Location::Postgres(c) => f.debug_tuple("Postgres").field(c).finish(),
        }
    }
}

impl fmt::Display for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PostgreSQL")?;
        for (k, v) in &self.shown {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Conninfo({self})")
    }
}

/// The hosts of `host` / `hostaddr` lists that libpq reaches over TCP: an address, or a
/// name that is not a Unix socket's directory (`/...`, or `@...` in the abstract
/// namespace). No host at all is the local socket.
pub(crate) fn tcp_hosts(host: Option<&str>, hostaddr: Option<&str>) -> Vec<String> {
    let split = |v: Option<&str>| -> Vec<String> {
        v.filter(|v| !v.is_empty())
            .map(|v| v.split(',').map(String::from).collect())
            .unwrap_or_default()
    };
    let (hosts, addrs) = (split(host), split(hostaddr));
    (0..hosts.len().max(addrs.len()))
        .filter_map(|i| {
            let addr = addrs.get(i).filter(|a| !a.is_empty());
            let name = hosts.get(i).filter(|h| !h.is_empty());
            match (name, addr) {
                (_, Some(a)) => Some(name.unwrap_or(a).clone()),
                (Some(h), None) if !h.starts_with('/') && !h.starts_with('@') => Some(h.clone()),
                _ => None,
            }
        })
        .collect()
}

/// Why a TCP connection without sslmode=verify-full is refused, and what to do.
pub(crate) fn unverified_tls(tcp: &[String], mode: &str) -> String {
    format!(
        "refusing to reach PostgreSQL at {} over TCP with sslmode={mode}, which does not \
         verify the server: add sslmode=verify-full (with sslrootcert=FILE, the CA of the \
         server's certificate) to db, or use a Unix socket (host=/var/run/postgresql)",
        tcp.join(",")
    )
}

/// libpq's `key=value` syntax: values bare (backslash escapes) or single-quoted.
fn parse_keywords(text: &str) -> Result<Vec<(String, String)>, String> {
    let bad = |why: &str| format!("bad PostgreSQL connection string: {why}");
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(bad("expected key=value"));
        }
        if key.is_empty() {
            return Err(bad("a value without a key"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(bad("unterminated quoted value")),
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key.to_ascii_lowercase(), value));
    }
    Ok(out)
}

/// libpq's URI syntax, after the scheme: `[user[:password]@][hosts][/dbname][?k=v&...]`.
fn parse_uri(rest: &str) -> Result<Vec<(String, String)>, String> {
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    // The authority ends at the first '/', as libpq reads it.
    let (authority, dbname) = main.split_once('/').unwrap_or((main, ""));
    let mut out = Vec::new();
    let hosts = match authority.split_once('@') {
        Some((userinfo, hosts)) => {
            if userinfo.contains(':') {
                return Err(format!(
                    "the PostgreSQL connection string {}",
                    FORBIDDEN[0].1
                ));
            }
            if !userinfo.is_empty() {
                out.push(("user".to_string(), decode(userinfo)?));
            }
            hosts
        }
        None => authority,
    };
    if !hosts.is_empty() {
        let mut names = Vec::new();
        let mut ports = Vec::new();
        for h in hosts.split(',') {
            // [v6]:port, or name:port.
            let (name, port) = if let Some(v6) = h.strip_prefix('[') {
                let (addr, after) = v6
                    .split_once(']')
                    .ok_or("bad PostgreSQL URI: unterminated [")?;
                (addr.to_string(), after.strip_prefix(':').unwrap_or(""))
            } else {
                let (n, p) = h.split_once(':').unwrap_or((h, ""));
                (decode(n)?, p)
            };
            names.push(name);
            ports.push(port.to_string());
        }
        out.push(("host".into(), names.join(",")));
        if ports.iter().any(|p| !p.is_empty()) {
            out.push(("port".into(), ports.join(",")));
        }
    }
    if !dbname.is_empty() {
        out.push(("dbname".into(), decode(dbname)?));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or("bad PostgreSQL URI: a parameter without =")?;
        out.push((decode(k)?.to_ascii_lowercase(), decode(v)?));
    }
    Ok(out)
}

/// Percent-decoding, as libpq does it for URIs.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad PostgreSQL URI: bad percent-encoding")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "bad PostgreSQL URI: not UTF-8".into())
}

/// How to reach a PostgreSQL database, from the configuration (SQLite ignores it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// `db_passfile`: the password file (libpq's .pgpass format), root's only.
    pub passfile: Option<PathBuf>,
    /// `db_connect_timeout`: the most a connection may take.
    pub connect_timeout: Duration,
    /// `db_query_timeout`: the most one query may take (also the server's
    /// statement_timeout).
    pub query_timeout: Duration,
}

/// The default of both timeouts.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

impl Default for Connect {
    fn default() -> Self {
        Connect {
            passfile: None,
            connect_timeout: DEFAULT_TIMEOUT,
            query_timeout: DEFAULT_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(text: &str) -> Conninfo {
        match Location::parse(text).unwrap() {
            Location::Postgres(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_and_connection_strings() {
        assert_eq!(
            Location::parse("/var/lib/apppass/apppass.db").unwrap(),
            Location::Sqlite(PathBuf::from("/var/lib/apppass/apppass.db"))
        );
        let c = pg(
            "postgresql://apppass_login@db1.example:5433,[::1]:5432/apppass?sslmode=verify-full&connect_timeout=1",
        );
        assert_eq!(
            c.to_string(),
            "PostgreSQL user=apppass_login host=db1.example,::1 port=5433,5432 dbname=apppass"
        );
        assert_eq!(
            pg("postgres://h/d").to_string(),
            "PostgreSQL host=h dbname=d"
        );
        let c = pg(
            "host=10.0.0.5 port=5432 dbname='app pass' user=apppass_login options='-c search_path=ap'",
        );
        assert_eq!(
            c.to_string(),
            "PostgreSQL host=10.0.0.5 port=5432 dbname=app pass user=apppass_login"
        );
        assert_eq!(c.options(), Some("-c search_path=ap"));
        assert_eq!(
            pg("service=apppass").to_string(),
            "PostgreSQL service=apppass"
        );
        assert_eq!(pg("service = apppass").text(), "service = apppass");
        for bad in ["", "relative.db", "apppass", "host", "=x", "host='x"] {
            assert!(Location::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_refused_and_never_echoed() {
        for text in [
            "postgresql://u:s3cret@h/d",
            "postgresql://u:@h/d",
            "postgresql://u@h/d?password=s3cret",
            "postgresql://u@h/d?pass%77ord=s3cret",
            "host=h password=s3cret",
            "host=h PASSWORD='s3cret'",
            "host=h passfile=/tmp/s3cret",
            "host=h sslpassword=s3cret",
            "dbname=postgresql://u:s3cret@h/d",
        ] {
            let e = Location::parse(text).unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
            assert!(e.contains("PostgreSQL connection string"), "{e}");
        }
        assert!(
            Location::parse("host=h password=x")
                .unwrap_err()
                .contains("db_passfile")
        );
    }

    #[test]
    fn tcp_needs_tls_that_verifies_the_server() {
        for bad in [
            "postgresql://u@db1/apppass?sslmode=require",
            "postgresql://u@db1,db2/apppass?sslmode=verify-ca",
            "host=/run/postgresql,db2 sslmode=prefer",
            "hostaddr=10.0.0.5 sslmode=disable",
            "host=db1 sslmode=verify-full sslmode=allow",
        ] {
            let e = Location::parse(bad).unwrap_err();
            assert!(
                e.contains("over TCP") && e.contains("sslmode=verify-full"),
                "{bad}: {e}"
            );
        }
        for good in [
            "postgresql://u@db1/apppass?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
            "host=db1,db2 sslmode=verify-full target_session_attrs=read-write",
            // Unix sockets need no TLS.
            "host=/var/run/postgresql dbname=apppass sslmode=disable",
            "postgresql://%2Fvar%2Frun%2Fpostgresql/apppass?sslmode=disable",
            "dbname=apppass sslmode=disable",
            "host=@pg sslmode=disable",
            // No sslmode here: a service file or PGSSLMODE may set it; the connection
            // checks what libpq resolved.
            "host=db1 dbname=apppass",
            "service=apppass",
        ] {
            assert!(Location::parse(good).is_ok(), "{good}");
        }
        assert_eq!(tcp_hosts(Some("/s,db1,"), None), ["db1"]);
        assert_eq!(tcp_hosts(Some("db1"), Some("10.0.0.5")), ["db1"]);
        assert_eq!(tcp_hosts(None, Some("10.0.0.5,10.0.0.6")).len(), 2);
        assert!(tcp_hosts(Some(""), None).is_empty());
    }

    #[test]
    fn shown_parts_only() {
        let c = pg("host=h sslkey=/k application_name=x user=u");
        assert_eq!(format!("{c:?}"), "Conninfo(PostgreSQL host=h user=u)");
    }
}
