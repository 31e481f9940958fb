//! Property tests (fuzzing, bounded): the protocol's decoders (requests, answers,
//! frames), the PAM module's argument parser, the configuration parser (apppassd's and
//! the clients'), the `db` setting's parser, the duration and expiry parsers and the
//! password normaliser, fed arbitrary bytes, mutations of valid encodings and of the
//! seeds in tests/corpus/, and inputs built from their grammars; then random frames sent
//! to a running apppassd, and random users, passwords and hosts through the real module.
//!
//! What must hold: no decoder or parser panics (a panic in the module is a failed login
//! at best; in apppassd, a request answered "internal error"); each either accepts or
//! says why; what is accepted means what it says (a decoded request encodes back to the
//! very bytes it came from, a model of each grammar is checked against its parser); a
//! frame longer than its limit is refused before anything is read or allocated for it;
//! apppassd answers any bytes with an error or by closing, stays up, and changes
//! nothing for them; a password in a database setting never reaches a message;
//! normalisation is idempotent and ignores spaces, dashes and case; every generated
//! password parses back to itself; nothing longer than MAX_INPUT_LEN is ever a candidate.
//!
//! Bounded: APPPASS_PROPTEST_CASES cases per property (default 5,000; fewer where each
//! case hashes, logs in or talks to apppassd), some seconds in all. Failures proptest
//! finds are kept in tests/corpus/proptest-regressions.txt and replayed first on every
//! run; the seeds in tests/corpus/ are run as they are and mutated. The same decoders
//! are fuzzed without bounds by the cargo-fuzz targets in fuzz/ (see fuzz/README.md).

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use apppass_core::config::Config;
use apppass_core::policy::Throttle;
use apppass_core::secret::{self, ALPHABET, Candidate, MAX_INPUT_LEN, NewPassword, PASSWORD_LEN};
use apppass_core::store::Location;
use apppass_core::time;
use apppass_proto::wire::{self, WireError};
use apppass_proto::{
    AddRequest, Added, AuthAnswer, AuthRequest, ErrorKind, EventInfo, Identity, PasswordInfo,
    Reason, Request, Response, RevokeOutcome, Status, args, conf,
};
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Params, Version};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const REGRESSIONS: &str = "tests/corpus/proptest-regressions.txt";
const MARK: &str = "SECRETMARK";

fn cases(divisor: u32) -> ProptestConfig {
    let n: u32 = std::env::var("APPPASS_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    ProptestConfig {
        cases: (n / divisor).max(1),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..ProptestConfig::default()
    }
}

/// The seeds of one kind, from tests/corpus/KIND/.
fn seeds(kind: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
    /// Copy `len` bytes from one place to another (repeats structure: `=`, quotes, ...).
    Duplicate(usize, usize, usize),
    /// Insert one of the bytes the grammars care about.
    Special(usize, usize),
}

const SPECIAL: &[u8] = b"=#'\\ \t\n\r-/:@?%&,[]*\0\xff";

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), any::<usize>(), 1..16usize).prop_map(|(a, b, n)| Edit::Duplicate(a, b, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, s)| Edit::Special(i, s)),
    ]
}

fn apply(mut v: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match *e {
            Edit::Insert(i, b) => {
                let i = at(i, v.len());
                v.insert(i, b)
            }
            Edit::Delete(i) if !v.is_empty() => {
                let i = i % v.len();
                v.remove(i);
            }
            Edit::Replace(i, b) if !v.is_empty() => {
                let i = i % v.len();
                v[i] = b
            }
            Edit::Duplicate(from, to, n) if !v.is_empty() => {
                let from = from % v.len();
                let piece: Vec<u8> = v[from..(from + n).min(v.len())].to_vec();
                let to = at(to, v.len());
                v.splice(to..to, piece);
            }
            Edit::Special(i, s) => {
                let i = at(i, v.len());
                v.insert(i, SPECIAL[s % SPECIAL.len()])
            }
            _ => {}
        }
    }
    v
}

/// A seed of `kind`, mutated by up to eight edits.
fn mutated(kind: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(kind);
    (
        proptest::sample::select(seeds),
        proptest::collection::vec(edit(), 0..8),
    )
        .prop_map(|(seed, edits)| apply(seed, &edits))
}

/// Arbitrary bytes, or a mutated seed of `kind`: both kinds of input, half and half.
fn input(kind: &str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        mutated(kind)
    ]
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------
// The module's arguments

/// What `args::parse` must make of one argument, by a separate reading of pam_apppass(8).
fn check_arg(raw: &[u8], parsed: &Result<args::ModuleArgs, args::ArgError>) {
    let Ok(arg) = std::str::from_utf8(raw) else {
        return;
    };
    let (key, value) = match arg.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (arg, None),
    };
    match (key, value, parsed) {
        ("socket" | "conf" | "service" | "timeout", None, r) => {
            assert!(r.is_err(), "{arg:?} needs a value")
        }
        // Obsolete whatever it says (never an error), and never repeated.
        ("db", _, Ok(a)) => assert!(a.obsolete.iter().all(|o| o == "db=")),
        ("socket" | "conf", Some(v), Ok(a)) if !v.starts_with('/') => {
            panic!("relative {key}= accepted: {a:?}")
        }
        ("timeout", Some(v), Ok(_)) => assert!(conf::parse_timeout(v).is_ok(), "{v:?}"),
        ("service", Some("*"), Ok(_)) => panic!("service=* accepted"),
        ("service", Some(v), Ok(_)) => {
            assert!(apppass_core::policy::check_service(v).is_ok(), "{v:?}")
        }
        ("debug", None, Ok(a)) => assert!(a.debug),
        _ => {}
    }
}

fn parse_argv(argv: &[Vec<u8>]) -> Result<args::ModuleArgs, args::ArgError> {
    let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    args::parse(&refs)
}

proptest! {
    #![proptest_config(cases(1))]

    /// Any argument vector: an answer, never a panic; errors say something; every
    /// argument means what the manual says; unknown ones are kept, in order, for the log,
    /// and each db= (of earlier versions) is flagged obsolete, never repeated.
    #[test]
    fn module_arguments(argv in prop_oneof![
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
        mutated("args").prop_map(|line| line
            .split(|b| b.is_ascii_whitespace())
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect()),
    ]) {
        let parsed = parse_argv(&argv);
        match &parsed {
            Err(e) => prop_assert!(!e.0.is_empty()),
            Ok(a) => {
                if let Some(c) = &a.conf {
                    prop_assert!(c.is_absolute());
                }
                if let Some(c) = &a.socket {
                    prop_assert!(c.is_absolute());
                }
                let key = |raw: &[u8]| {
                    let s = lossy(raw);
                    s.split_once('=').map_or(s.clone(), |(k, _)| k.to_string())
                };
                let unknown: Vec<String> = argv
                    .iter()
                    .filter(|raw| {
                        let flag = !raw.contains(&b'=');
                        std::str::from_utf8(raw).is_err()
                            || !(["db", "socket", "conf", "service", "timeout"]
                                .contains(&key(raw).as_str())
                                || (flag
                                    && ["debug", "use_first_pass", "try_first_pass"]
                                        .contains(&key(raw).as_str())))
                    })
                    .map(|raw| lossy(raw))
                    .collect();
                prop_assert_eq!(&a.unknown, &unknown);
                let dbs = argv
                    .iter()
                    .filter(|raw| std::str::from_utf8(raw).is_ok() && key(raw) == "db")
                    .count();
                prop_assert_eq!(a.obsolete.len(), dbs);
            }
        }
        for raw in &argv {
            check_arg(raw, &parsed);
        }
    }

    /// A db= of earlier versions, with a password in it: obsolete, and the password is in
    /// nothing the module keeps or logs.
    #[test]
    fn module_arguments_never_echo_a_db_password(db in location_with_password()) {
        let arg = format!("db={db}");
        let a = args::parse(&[arg.as_bytes()])
            .map_err(|e| TestCaseError::fail(format!("{arg}: {e}")))?;
        prop_assert_eq!(&a.obsolete, &vec!["db=".to_string()]);
        prop_assert!(!format!("{a:?}").contains(MARK), "{:?}", a);
    }
}

// ---------------------------------------------------------------------------------------
// The `db` setting

/// A PostgreSQL setting with a password (the marker) somewhere libpq would read one.
fn location_with_password() -> impl Strategy<Value = String> {
    let word = "[a-z][a-z0-9_.-]{0,8}";
    (word, word, word, 0..6usize, any::<bool>()).prop_map(|(host, user, db, form, upper)| {
        let key = if upper { "PASSWORD" } else { "password" };
        match form {
            0 => format!("postgresql://{user}:{MARK}@{host}/{db}"),
            1 => format!("postgres://{user}@{host}/{db}?{key}={MARK}"),
            2 => format!("postgresql://{host}/{db}?pass%77ord={MARK}&sslmode=require"),
            3 => format!("host={host} dbname={db} {key}='{MARK}'"),
            4 => format!("host={host} user={user} sslpassword={MARK}"),
            _ => format!("dbname=postgresql://{user}:{MARK}@{host}/{db}"),
        }
    })
}

proptest! {
    #![proptest_config(cases(1))]

    /// Any `db` setting: an answer, never a panic; an absolute path is SQLite; whatever is
    /// shown of a PostgreSQL one comes from what was given.
    #[test]
    fn db_settings(raw in input("location")) {
        let text = lossy(&raw);
        match Location::parse(&text) {
            Ok(Location::Sqlite(p)) => prop_assert_eq!(p, PathBuf::from(&text)),
            Ok(Location::Postgres(c)) => {
                prop_assert!(!text.starts_with('/'));
                prop_assert_eq!(c.text(), text.as_str());
                let _ = format!("{c} {c:?}");
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    /// A password in a `db` setting is refused, and neither the error nor anything else
    /// repeats it.
    #[test]
    fn db_passwords_are_refused_and_never_echoed(text in location_with_password()) {
        match Location::parse(&text) {
            Err(e) => prop_assert!(!e.contains(MARK), "{}", e),
            Ok(l) => prop_assert!(false, "accepted: {:?}", l),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The configuration file

/// A configuration and its text, from the grammar in apppass.conf(5).
#[derive(Debug, Clone)]
struct Written {
    text: String,
    db: PathBuf,
    hash: (u32, u32, u32),
    services: Vec<String>,
    max_passwords: u32,
    lifetime: (i64, i64),
    throttle: (u32, i64, i64),
    audit_max_rows: u32,
    socket: PathBuf,
    timeout_ms: u64,
    user: String,
    workers: u32,
}

fn duration_text() -> impl Strategy<Value = (String, i64)> {
    (1..10_000i64, 0..5usize).prop_map(|(n, u)| {
        let (unit, scale) = [
            ("s", 1),
            ("m", 60),
            ("h", 3600),
            ("d", 86400),
            ("w", 604_800),
        ][u];
        (format!("{n}{unit}"), n * scale)
    })
}

fn written() -> impl Strategy<Value = Written> {
    (
        "/[a-z0-9_./-]{1,30}",
        (19456..200_000u32, 2..6u32, 1..8u32),
        proptest::collection::vec("[a-z0-9][a-z0-9._-]{0,10}", 0..5),
        0..50u32,
        (duration_text(), duration_text()),
        (0..30u32, duration_text(), duration_text()),
        0..1_000_000u32,
        // Layout: spaces around '=', comments, blank lines.
        (0..3usize, any::<bool>(), any::<bool>()),
        // apppassd's own: where it listens, how long clients wait, as whom it runs.
        (
            "/[a-z0-9_./-]{1,30}",
            (1..600_000u64, any::<bool>()),
            "[a-z_][a-z0-9_-]{0,15}",
            1..1025u32,
        ),
    )
        .prop_map(
            |(
                db,
                hash,
                services,
                max,
                (l1, l2),
                (tf, ti, tl),
                rows,
                (spaces, comments, blanks),
                (socket, (timeout_ms, in_ms), user, workers),
            )| {
                // Seconds when the value is whole seconds and asked for so.
                let timeout_text = if in_ms || timeout_ms % 1000 != 0 {
                    format!("{timeout_ms}ms")
                } else {
                    format!("{}s", timeout_ms / 1000)
                };
                let (default_lifetime, max_lifetime) =
                    if l1.1 <= l2.1 { (l1, l2) } else { (l2, l1) };
                let eq = ["=", " = ", "\t=  "][spaces];
                let mut lines = vec![
                    format!("db{eq}{db}"),
                    format!("argon2_memory{eq}{}", hash.0),
                    format!("argon2_time{eq}{}", hash.1),
                    format!("argon2_lanes{eq}{}", hash.2),
                    format!("services{eq}{}", services.join(", ")),
                    format!("max_passwords{eq}{max}"),
                    format!("default_lifetime{eq}{}", default_lifetime.0),
                    format!("max_lifetime{eq}{}", max_lifetime.0),
                    format!("throttle_failures{eq}{tf}"),
                    format!("throttle_interval{eq}{}", ti.0),
                    format!("throttle_lockout{eq}{}", tl.0),
                    format!("audit_max_rows{eq}{rows}"),
                    format!("socket{eq}{socket}"),
                    format!("timeout{eq}{timeout_text}"),
                    format!("user{eq}{user}"),
                    format!("workers{eq}{workers}"),
                ];
                if comments {
                    lines = lines
                        .into_iter()
                        .map(|l| format!("  {l}   # note = {l}"))
                        .collect();
                    lines.insert(0, "# apppass.conf".into());
                }
                if blanks {
                    lines = lines
                        .into_iter()
                        .flat_map(|l| [l, String::from("  \t")])
                        .collect();
                }
                Written {
                    text: lines.join("\n"),
                    db: PathBuf::from(db),
                    hash,
                    services,
                    max_passwords: max,
                    lifetime: (default_lifetime.1, max_lifetime.1),
                    throttle: (tf, ti.1, tl.1),
                    audit_max_rows: rows,
                    socket: PathBuf::from(socket),
                    timeout_ms,
                    user,
                    workers,
                }
            },
        )
}

proptest! {
    #![proptest_config(cases(1))]

    /// Any text: an answer, never a panic; an error names the file and a line that exists;
    /// an accepted configuration is usable (argon2 parameters valid and at least OWASP's).
    #[test]
    fn configuration_files(raw in input("config")) {
        let text = lossy(&raw);
        let path = Path::new("/etc/security/apppass.conf");
        match Config::parse(&text, path) {
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("/etc/security/apppass.conf:"), "{}", msg);
                let line: usize = msg["/etc/security/apppass.conf:".len()..]
                    .split(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                prop_assert!(line <= text.lines().count(), "{}", msg);
            }
            Ok(loaded) => {
                let c = loaded.config;
                prop_assert!(c.hash.validate().is_ok());
                prop_assert!(c.hash.m_kib >= 19456 && c.hash.t >= 2);
                for w in &loaded.warnings {
                    prop_assert!(w.starts_with("/etc/security/apppass.conf:"), "{}", w);
                }
            }
        }
    }

    /// A configuration written by the grammar reads back as what was written, whatever the
    /// spacing, comments and blank lines.
    #[test]
    fn configuration_reads_back(w in written()) {
        let c = Config::parse(&w.text, Path::new("t.conf"))
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", w.text)))?
            .config;
        prop_assert_eq!(c.db, Location::Sqlite(w.db.clone()));
        prop_assert_eq!((c.hash.m_kib, c.hash.t, c.hash.p), w.hash);
        prop_assert_eq!(&c.services, &w.services);
        prop_assert_eq!(c.max_passwords, (w.max_passwords > 0).then_some(w.max_passwords));
        prop_assert_eq!((c.default_lifetime, c.max_lifetime), (Some(w.lifetime.0), Some(w.lifetime.1)));
        let (failures, interval, lockout) = w.throttle;
        prop_assert_eq!(
            c.throttle,
            (failures > 0).then_some(Throttle { failures, interval, lockout })
        );
        prop_assert_eq!(c.audit_max_rows, i64::from(w.audit_max_rows));
        prop_assert_eq!(&c.socket, &w.socket);
        prop_assert_eq!(c.timeout, std::time::Duration::from_millis(w.timeout_ms));
        prop_assert_eq!(&c.user, &w.user);
        prop_assert_eq!(c.workers, Some(w.workers));
    }
}

/// The configuration as a client reads it (the module, the CLI: socket, timeout, user),
/// from a file of `text`.
fn client_settings(dir: &Path, text: &[u8]) -> Result<conf::ClientSettings, conf::ConfError> {
    let path = dir.join("apppass.conf");
    std::fs::write(&path, text).unwrap();
    conf::ClientSettings::load(&path, true)
}

proptest! {
    #![proptest_config(cases(10))]

    /// The clients and apppassd read one file the same way: what a client refuses,
    /// apppassd refuses too (else the module would fail where apppassd runs), and where
    /// apppassd accepts the file, a client finds the same socket, timeout and user (else
    /// the module would knock at another door than apppassd's).
    #[test]
    fn clients_read_the_configuration_as_apppassd_does(
        raw in prop_oneof![input("config"), written().prop_map(|w| w.text.into_bytes())]
    ) {
        let dir = tempfile::tempdir().unwrap();
        let client = client_settings(dir.path(), &raw);
        let daemon = std::str::from_utf8(&raw)
            .map_err(|e| e.to_string())
            .and_then(|t| Config::parse(t, &dir.path().join("apppass.conf")).map_err(|e| e.to_string()));
        match (client, daemon) {
            (Err(_), Err(_)) | (Ok(_), Err(_)) => {}
            (Err(e), Ok(_)) => prop_assert!(false, "a client refuses what apppassd takes: {}", e),
            (Ok(c), Ok(d)) => {
                let d = d.config;
                prop_assert_eq!((&c.socket, c.timeout, &c.user), (&d.socket, d.timeout, &d.user));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Durations and expiry dates

proptest! {
    #![proptest_config(cases(1))]

    /// Any text: an answer, never a panic; a duration is positive and reads back from its
    /// own formatting.
    #[test]
    fn durations(raw in input("duration")) {
        let text = lossy(&raw);
        if let Ok(secs) = time::parse_duration(&text) {
            prop_assert!(secs > 0);
            prop_assert_eq!(time::parse_duration(&time::format_duration(secs)), Ok(secs));
        }
    }

    #[test]
    fn durations_of_the_grammar((text, secs) in duration_text()) {
        prop_assert_eq!(time::parse_duration(&text), Ok(secs));
    }

    /// `--expires`: any text, an answer, never a panic (the CLI runs setuid).
    #[test]
    fn expiry_dates(raw in input("expiry"), now in 0..4_000_000_000i64) {
        let text = lossy(&raw);
        let _ = time::parse_expiry(&text, now);
    }

    /// A date and time as apppass prints them reads back as the same instant.
    #[test]
    fn expiry_dates_read_back(t in 0..253_402_300_799i64) {
        let shown = time::format_iso8601(t);
        prop_assert_eq!(time::parse_expiry(&shown, 0), Ok(t));
    }
}

// ---------------------------------------------------------------------------------------
// Passwords

/// What an app password is, read independently of the normaliser: separators dropped,
/// lowercased, exactly PASSWORD_LEN characters of the alphabet, from at most
/// MAX_INPUT_LEN bytes of input.
fn model(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() > MAX_INPUT_LEN {
        return None;
    }
    let kept: Vec<u8> = input
        .iter()
        .filter(|&&b| b != b'-' && !b.is_ascii_whitespace())
        .map(u8::to_ascii_lowercase)
        .collect();
    (kept.len() == PASSWORD_LEN && kept.iter().all(|b| ALPHABET.contains(b))).then_some(kept)
}

/// A cheap argon2id hash of exactly these bytes, made with the argon2 crate directly
/// (not through apppass): verifying a candidate against it proves which bytes it holds.
fn hash_of(bytes: &[u8]) -> String {
    let params = Params::new(8, 1, 1, Some(32)).unwrap();
    let salt = b"properties-salt!";
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into(bytes, salt, &mut out)
        .unwrap();
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).unwrap(),
        salt: Some(Salt::new(salt).unwrap()),
        hash: Some(Output::new(&out).unwrap()),
    }
    .to_string()
}

/// A respelling a person might type: dashes and spaces anywhere, any case.
fn respelled(chars: &[u8], noise: &[(usize, u8)], upper: &[bool]) -> Vec<u8> {
    let mut out: Vec<u8> = chars
        .iter()
        .zip(upper.iter().cycle())
        .map(|(&c, &u)| if u { c.to_ascii_uppercase() } else { c })
        .collect();
    for &(at, sep) in noise {
        let at = at % (out.len() + 1);
        out.insert(at, [b'-', b' ', b'\t', b'\n', b'\r'][usize::from(sep) % 5]);
    }
    out
}

fn password_chars() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(proptest::sample::select(ALPHABET.to_vec()), PASSWORD_LEN)
}

proptest! {
    #![proptest_config(cases(1))]

    /// Any input: never a panic, never a candidate from more than MAX_INPUT_LEN bytes, and
    /// a candidate exactly when the model says so, with the model's selector.
    #[test]
    fn candidates_follow_the_model(raw in prop_oneof![
        input("password"),
        (password_chars(), proptest::collection::vec((any::<usize>(), any::<u8>()), 0..300),
            proptest::collection::vec(any::<bool>(), 1..4))
            .prop_map(|(c, n, u)| respelled(&c, &n, &u)),
    ]) {
        let c = Candidate::parse(&raw);
        if raw.len() > MAX_INPUT_LEN {
            prop_assert!(c.is_none());
        }
        match (c, model(&raw)) {
            (None, None) => {}
            (Some(c), Some(m)) => {
                prop_assert_eq!(c.selector().as_bytes(), &m[..secret::SELECTOR_LEN]);
            }
            (c, m) => prop_assert!(false, "parse {:?} vs model {:?}", c, m),
        }
    }
}

proptest! {
    #![proptest_config(cases(4))]

    /// Normalisation is idempotent and ignores dashes, spaces and case: every respelling
    /// of a password (within MAX_INPUT_LEN) is the same 28 characters, and nothing else is.
    #[test]
    fn normalisation_ignores_spelling(
        chars in password_chars(),
        noise in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..100),
        upper in proptest::collection::vec(any::<bool>(), 1..5),
        other in password_chars(),
    ) {
        let hash = hash_of(&chars);
        let spelled = respelled(&chars, &noise, &upper);
        let c = Candidate::parse(&spelled);
        if spelled.len() > MAX_INPUT_LEN {
            prop_assert!(c.is_none());
            return Ok(());
        }
        let c = c.expect("a respelling was refused");
        prop_assert!(secret::verify(Some(&c), &hash).unwrap());
        // Idempotent: the normal form parses to the same.
        let again = Candidate::parse(&chars).unwrap();
        prop_assert!(secret::verify(Some(&again), &hash).unwrap());
        if other != chars {
            let o = Candidate::parse(&other).unwrap();
            prop_assert!(!secret::verify(Some(&o), &hash).unwrap());
        }
    }

    /// Every generated password, as shown and respelled, parses back to itself.
    #[test]
    fn generated_passwords_parse_back(
        noise in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..40),
        upper in proptest::collection::vec(any::<bool>(), 1..5),
    ) {
        let pw = NewPassword::generate().unwrap();
        let shown = pw.display();
        let hash = pw.hash(support::CHEAP).unwrap();
        let c = Candidate::parse(shown.as_bytes()).unwrap();
        prop_assert_eq!(c.selector(), pw.selector());
        prop_assert!(secret::verify(Some(&c), &hash).unwrap());
        let plain: Vec<u8> = shown.bytes().filter(|&b| b != b'-').collect();
        let c = Candidate::parse(&respelled(&plain, &noise, &upper)).unwrap();
        prop_assert!(secret::verify(Some(&c), &hash).unwrap());
    }
}

// ---------------------------------------------------------------------------------------
// The protocol

/// Text as clients send it: names, or anything (UTF-8 is all the wire allows).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9@._*-]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(24).collect()),
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// A secret: the marker, then anything, so that a test can tell where it went.
fn secret() -> impl Strategy<Value = Vec<u8>> {
    bytes(60).prop_map(|b| [MARK.as_bytes(), &b].concat())
}

/// Any request a client could build (shared: requests are not Clone, as proptest's
/// values must be).
fn request() -> BoxedStrategy<Arc<Request>> {
    let any_request = prop_oneof![
        (
            bytes(40),
            text(),
            text(),
            (opt_text(), opt_text(), opt_text(), opt_text()),
            secret(),
            any::<u32>(),
        )
            .prop_map(
                |(
                    user,
                    service,
                    pam_service,
                    (rhost, tty, ruser, logname),
                    password,
                    timeout_ms,
                )| {
                    Request::Authenticate(AuthRequest {
                        user,
                        service,
                        pam_service,
                        rhost,
                        tty,
                        ruser,
                        logname,
                        password: zeroize::Zeroizing::new(password),
                        timeout_ms,
                    })
                }
            ),
        Just(()).prop_map(|()| Request::Status),
        (opt_text(), text(), text(), opt_text(), opt_text()).prop_map(
            |(user, service, label, expires, from)| {
                Request::Add(AddRequest {
                    user,
                    service,
                    label,
                    expires,
                    from,
                })
            }
        ),
        (opt_text(), any::<bool>()).prop_map(|(user, all)| Request::List { user, all }),
        proptest::collection::vec(any::<i64>(), 0..10).prop_map(|ids| Request::Revoke { ids }),
        (opt_text(), opt_text()).prop_map(|(user, service)| Request::RevokeAll { user, service }),
        (opt_text(), any::<bool>(), any::<u32>()).prop_map(|(user, all, limit)| Request::Log {
            user,
            all,
            limit
        }),
        (opt_text(), opt_text()).prop_map(|(user, rhost)| Request::Unlock { user, rhost }),
        Just(()).prop_map(|()| Request::Backup),
        (any::<i64>(), opt_text()).prop_map(|(id, from)| Request::SetNetworks { id, from }),
        text().prop_map(|user| Request::PasswordChanged { user }),
        any::<i64>().prop_map(|id| Request::Regenerate { id }),
    ];
    // Boxed: inline, its value trees (one per kind) outgrew a test thread's stack in a
    // debug build where streams of several requests are built.
    any_request.prop_map(Arc::new).boxed()
}

const REASONS: [Reason; 11] = [
    Reason::NotAppPassword,
    Reason::UnknownPassword,
    Reason::WrongPassword,
    Reason::Expired,
    Reason::Idle,
    Reason::Revoked,
    Reason::WrongService,
    Reason::Throttled,
    Reason::BadHash,
    Reason::OwnerChanged,
    Reason::Network,
];

const ERROR_KINDS: [ErrorKind; 9] = [
    ErrorKind::BadRequest,
    ErrorKind::Usage,
    ErrorKind::Denied,
    ErrorKind::NotFound,
    ErrorKind::Limit,
    ErrorKind::Unavailable,
    ErrorKind::Busy,
    ErrorKind::Timeout,
    ErrorKind::Internal,
];

fn opt_i64() -> impl Strategy<Value = Option<i64>> {
    proptest::option::of(any::<i64>())
}

fn status() -> impl Strategy<Value = Status> {
    (
        (text(), any::<u32>(), any::<u32>(), any::<u64>(), text()),
        (opt_text(), opt_text(), opt_i64(), any::<[u32; 5]>()),
        proptest::collection::vec((text(), any::<u64>()), 0..4),
        (any::<u32>(), opt_text(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (version, pid, daemon_uid, uptime_s, store),
                (
                    store_error,
                    store_warning,
                    schema_version,
                    [workers, busy, queued, queue_max, clients],
                ),
                counts,
                (uid, user, admin, authenticates_anyone),
            )| Status {
                version,
                pid,
                daemon_uid,
                uptime_s,
                store,
                store_error,
                store_warning,
                schema_version,
                workers,
                busy,
                queued,
                queue_max,
                clients,
                counts,
                you: Identity {
                    uid,
                    user,
                    admin,
                    authenticates_anyone,
                },
            },
        )
}

fn password_info() -> impl Strategy<Value = PasswordInfo> {
    (
        (any::<i64>(), text(), text(), text(), any::<i64>()),
        (opt_i64(), opt_i64(), text(), opt_i64()),
        (opt_text(), opt_text(), any::<i64>(), text(), any::<bool>()),
        opt_i64(),
    )
        .prop_map(
            |(
                (id, user, service, label, created),
                (expires, revoked, status, last_used),
                (last_service, last_rhost, use_count, networks, expires_soon),
                replaced_by,
            )| PasswordInfo {
                id,
                user,
                service,
                label,
                created,
                expires,
                revoked,
                status,
                last_used,
                last_service,
                last_rhost,
                use_count,
                networks,
                expires_soon,
                replaced_by,
            },
        )
}

fn event_info() -> impl Strategy<Value = EventInfo> {
    (
        any::<i64>(),
        text(),
        text(),
        opt_i64(),
        opt_text(),
        text(),
        opt_text(),
    )
        .prop_map(
            |(time, user, service, password_id, rhost, outcome, reason)| EventInfo {
                time,
                user,
                service,
                password_id,
                rhost,
                outcome,
                reason,
            },
        )
}

/// Any answer apppassd could give.
fn response() -> impl Strategy<Value = Arc<Response>> {
    let any_response = prop_oneof![
        (any::<i64>(), text())
            .prop_map(|(id, label)| Response::Auth(AuthAnswer::Success { id, label })),
        (proptest::sample::select(REASONS.to_vec()), opt_i64())
            .prop_map(|(reason, id)| Response::Auth(AuthAnswer::Denied { reason, id })),
        Just(()).prop_map(|()| Response::Auth(AuthAnswer::NoAppPasswords)),
        (proptest::sample::select(ERROR_KINDS.to_vec()), text())
            .prop_map(|(kind, message)| Response::error(kind, message)),
        status().prop_map(|s| Response::Status(Box::new(s))),
        (
            (any::<i64>(), text(), text(), text()),
            (any::<i64>(), opt_i64(), text()),
            secret()
        )
            .prop_map(
                |((id, user, service, label), (created, expires, networks), password)| {
                    Response::Added(Box::new(Added {
                        id,
                        user,
                        service,
                        label,
                        created,
                        expires,
                        networks,
                        password: zeroize::Zeroizing::new(lossy(&password)),
                    }))
                }
            ),
        proptest::collection::vec(password_info(), 0..4).prop_map(Response::Passwords),
        proptest::collection::vec(
            (
                any::<i64>(),
                proptest::sample::select(vec![
                    RevokeOutcome::Now,
                    RevokeOutcome::Already,
                    RevokeOutcome::NotFound
                ])
            ),
            0..5
        )
        .prop_map(Response::Revoked),
        any::<u64>().prop_map(Response::Count),
        proptest::collection::vec(event_info(), 0..4).prop_map(Response::Events),
        bytes(100).prop_map(Response::Chunk),
        Just(()).prop_map(|()| Response::Done),
    ];
    any_response.prop_map(Arc::new)
}

/// Bytes a request decoder may be handed: anything, a valid request's encoding edited
/// a little, a seed of tests/corpus/request/ edited.
fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(300),
        (request(), proptest::collection::vec(edit(), 1..6))
            .prop_map(|(r, edits)| apply(r.encode().to_vec(), &edits)),
        mutated("request"),
    ]
}

/// The same for answers.
fn response_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(300),
        (response(), proptest::collection::vec(edit(), 1..6))
            .prop_map(|(r, edits)| apply(r.encode().to_vec(), &edits)),
        mutated("response"),
    ]
}

proptest! {
    #![proptest_config(cases(1))]

    /// Every request decodes back from its encoding, and encodes again to the very same
    /// bytes; its Debug never shows the password.
    #[test]
    fn requests_round_trip(r in request()) {
        let body = r.encode();
        let back = Request::decode(&body)
            .map_err(|e| TestCaseError::fail(format!("{r:?}: {e}")))?;
        prop_assert_eq!(&back.encode()[..], &body[..]);
        prop_assert_eq!(back.name(), r.name());
        let shown = format!("{back:?}");
        prop_assert!(!shown.contains(MARK), "{}", shown);
    }

    /// Any bytes: a request or an error, never a panic; and the encoding is canonical:
    /// a request decoded from bytes encodes back to exactly them (so two spellings of one
    /// request cannot reach apppassd, nor a field it would silently drop).
    #[test]
    fn request_decoder_takes_any_bytes(raw in request_bytes()) {
        match Request::decode(&raw) {
            Ok(r) => prop_assert_eq!(&r.encode()[..], &raw[..], "{:?}", r),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Every answer decodes back from its encoding, to the same bytes again; a new
    /// password is not in its Debug.
    #[test]
    fn responses_round_trip(r in response()) {
        let body = r.encode();
        let back = Response::decode(&body)
            .map_err(|e| TestCaseError::fail(format!("{r:?}: {e}")))?;
        prop_assert_eq!(&back.encode()[..], &body[..]);
        let shown = format!("{back:?}");
        prop_assert!(!shown.contains(MARK), "{}", shown);
    }

    /// Any bytes as an answer (a client reading a daemon that is not apppassd, or a
    /// broken one): an answer or an error, never a panic, and canonical as requests are.
    #[test]
    fn response_decoder_takes_any_bytes(raw in response_bytes()) {
        match Response::decode(&raw) {
            Ok(r) => prop_assert_eq!(&r.encode()[..], &raw[..], "{:?}", r),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// A frame: its body when the length is within the limit and all of it is there;
    /// `TooLarge` past the limit, before anything of the body is read (the reader below
    /// holds far less than the length it announces); "cut short" when the body or the
    /// length itself ends early.
    #[test]
    fn frames_have_limits(
        len in prop_oneof![
            0..64u32,
            any::<u32>(),
            Just(wire::MAX_REQUEST as u32),
            Just(wire::MAX_REQUEST as u32 + 1),
            Just(u32::MAX),
        ],
        body in bytes(100),
        header_cut in prop_oneof![Just(4usize), 0..4usize],
        max in prop_oneof![Just(wire::MAX_REQUEST), Just(wire::MAX_RESPONSE), 0..64usize],
    ) {
        let mut frame = len.to_be_bytes()[..header_cut].to_vec();
        if header_cut == 4 {
            frame.extend_from_slice(&body);
        }
        let n = len as usize;
        match wire::read_frame(&mut &frame[..], max) {
            Ok(b) => {
                prop_assert!(header_cut == 4 && n <= max && body.len() >= n);
                prop_assert_eq!(&b[..], &body[..n]);
            }
            Err(WireError::Closed) => prop_assert_eq!(header_cut, 0),
            Err(WireError::TooLarge { len: l, max: m }) => {
                prop_assert!(header_cut == 4 && l == n && m == max && n > max);
            }
            Err(WireError::Malformed(_)) => {
                prop_assert!(header_cut < 4 || (n <= max && body.len() < n));
            }
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}

/// Whether apppassd, read frame by frame as it reads them, would be asked to change
/// something (its store, its audit log) by these bytes: a test that wants it to change
/// nothing must not ask. Reading stops where apppassd stops: at the first frame that is
/// too long, cut short or not a request.
fn asks_for_a_change(stream: &[u8]) -> bool {
    let mut rest = stream;
    while rest.len() >= 4 {
        let n = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        if n > wire::MAX_REQUEST || rest.len() - 4 < n {
            return false;
        }
        match Request::decode(&rest[4..4 + n]) {
            Ok(Request::Status | Request::List { .. } | Request::Log { .. } | Request::Backup) => {}
            Ok(_) => return true,
            Err(_) => return false,
        }
        rest = &rest[4 + n..];
    }
    false
}

/// A frame around `body`.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// What a client might send apppassd: pieces of garbage, frames of garbage or of edited
/// requests, frames cut short or longer than the limit, between harmless requests.
fn wire_stream() -> impl Strategy<Value = Vec<u8>> {
    let harmless = prop_oneof![
        Just(()).prop_map(|()| Request::Status),
        (opt_text(), any::<bool>()).prop_map(|(user, all)| Request::List { user, all }),
        (opt_text(), any::<bool>(), 0..100u32).prop_map(|(user, all, limit)| Request::Log {
            user,
            all,
            limit
        }),
    ];
    let piece = prop_oneof![
        harmless.prop_map(|r| framed(&r.encode())),
        bytes(64),
        bytes(300).prop_map(|b| framed(&b)),
        request_bytes().prop_map(|b| framed(&b)),
        (request_bytes(), 1..8usize).prop_map(|(b, cut)| {
            let f = framed(&b);
            f[..f.len().saturating_sub(cut)].to_vec()
        }),
        ((wire::MAX_REQUEST as u32 + 1).., bytes(32)).prop_map(|(len, b)| {
            let mut f = len.to_be_bytes().to_vec();
            f.extend_from_slice(&b);
            f
        }),
    ];
    proptest::collection::vec(piece, 1..4).prop_map(|pieces| pieces.concat())
}

/// Sends `stream` to apppassd on `socket`, closes the sending side, and reads every
/// answer until apppassd closes: each must be a well-formed answer.
fn send_raw(socket: &Path, stream: &[u8]) -> Result<Vec<Response>, TestCaseError> {
    use std::io::Write;
    let mut conn = std::os::unix::net::UnixStream::connect(socket).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // apppassd may close before reading it all (a frame it refused): not an error here.
    let _ = conn.write_all(stream);
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut answers = Vec::new();
    loop {
        match wire::read_frame(&mut conn, wire::MAX_RESPONSE) {
            Ok(body) => answers.push(
                Response::decode(&body)
                    .map_err(|e| TestCaseError::fail(format!("an answer that is not one: {e}")))?,
            ),
            Err(WireError::Closed) => return Ok(answers),
            // It closed with bytes of ours unread: the kernel says "reset" after the answer.
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(answers);
            }
            Err(e) => return Err(TestCaseError::fail(format!("reading answers: {e}"))),
        }
    }
}

/// Random bytes to a running apppassd, connection after connection: every answer is
/// well formed, a stream that goes wrong ends with a "bad request" answer (or just a
/// close, if nothing of a frame came), apppassd stays up, keeps its memory, and its store
/// (every app password, the audit log) is exactly as before.
#[test]
fn apppassd_takes_any_bytes() {
    let mut s = common::Sandbox::new();
    let log = support::restart_with_log(&mut s);
    s.simple_service("imap", "");
    let pw = s.add("alice", "imap", &["--label", "phone"]);
    assert_eq!(
        s.code("imap", "alice", &pw.password),
        pam_apppass::code::Code::SUCCESS
    );
    let before = support::visible_store(&s);
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let pid = s.daemon.child.id();
    let rss_before = rss(pid);
    let bad_before = bad_requests(&s.daemon.status().unwrap());
    let mut runner = proptest::test_runner::TestRunner::new(cases(10));
    let sent = std::cell::Cell::new(0u64);
    let bad = std::cell::Cell::new(0u64);
    let result = runner.run(&wire_stream(), |stream| {
        prop_assume!(!asks_for_a_change(&stream));
        let answers = send_raw(&s.socket, &stream)?;
        sent.set(sent.get() + 1);
        if let Some(Response::Error { kind, .. }) = answers.last() {
            prop_assert_eq!(*kind, ErrorKind::BadRequest);
            bad.set(bad.get() + 1);
        }
        Ok(())
    });
    let (sent, bad) = (sent.get(), bad.get());
    if let Err(e) = result {
        panic!("{e}");
    }
    let status = support::assert_alive(&mut s.daemon);
    let rss_after = rss(pid);
    println!(
        "{sent} streams, {bad} answered \"bad request\"; apppassd's memory {rss_before} -> {rss_after} KiB"
    );
    assert!(
        bad > sent / 4,
        "too few streams went wrong to tell: {bad} of {sent}"
    );
    assert!(bad_requests(&status) >= bad_before + bad);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "{rss_before} -> {rss_after} KiB"
    );
    assert_eq!(support::visible_store(&s), before, "the store changed");
    assert_eq!(
        s.code("imap", "alice", &pw.password),
        pam_apppass::code::Code::SUCCESS
    );
    support::assert_clean_stop(&mut s.daemon, Some(&log));
}

/// A frame longer than the limit is refused on its length alone: apppassd answers "bad
/// request" at once, without waiting for (or making room for) a body that never comes.
#[test]
fn apppassd_refuses_frames_over_the_limit() {
    use std::io::Write;
    let s = common::Sandbox::new();
    for len in [wire::MAX_REQUEST as u32 + 1, u32::MAX] {
        let mut conn = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        let started = std::time::Instant::now();
        conn.write_all(&len.to_be_bytes()).unwrap();
        let body = wire::read_frame(&mut conn, wire::MAX_RESPONSE).unwrap();
        let took = started.elapsed();
        match Response::decode(&body).unwrap() {
            Response::Error { kind, message } => {
                assert_eq!(kind, ErrorKind::BadRequest);
                assert!(
                    message.contains(&format!("more than the {} allowed", wire::MAX_REQUEST)),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
        assert!(matches!(
            wire::read_frame(&mut conn, wire::MAX_RESPONSE),
            Err(WireError::Closed)
        ));
    }
}

fn bad_requests(status: &Status) -> u64 {
    status
        .counts
        .iter()
        .find(|(n, _)| n == "bad_request")
        .map_or(0, |(_, v)| *v)
}

/// The protocol's golden examples: one of each request and answer of version 1, as
/// tests/corpus/request/ and tests/corpus/response/ hold them (the fuzz targets start
/// from them too). A change to how any of them is encoded breaks every module and CLI
/// already installed; `APPPASS_WRITE_SEEDS=1` writes them anew, for a new version.
fn golden() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let z = |b: &[u8]| zeroize::Zeroizing::new(b.to_vec());
    let requests = [
        (
            "authenticate",
            Request::Authenticate(AuthRequest {
                user: b"alice".to_vec(),
                service: "imap".into(),
                pam_service: "dovecot".into(),
                rhost: Some("203.0.113.9".into()),
                tty: None,
                ruser: Some("alice".into()),
                logname: None,
                password: z(b"k46p-wjpw-pvq5-txq2-c86r-4tuk-ckzh"),
                timeout_ms: 5000,
            }),
        ),
        ("status", Request::Status),
        (
            "add",
            Request::Add(AddRequest {
                user: Some("bob".into()),
                service: "*".into(),
                label: "Phone".into(),
                expires: Some("90d".into()),
                from: Some("192.0.2.0/24,2001:db8::/48".into()),
            }),
        ),
        (
            "list",
            Request::List {
                user: None,
                all: true,
            },
        ),
        (
            "revoke",
            Request::Revoke {
                ids: vec![3, 4, -1],
            },
        ),
        (
            "revoke-all",
            Request::RevokeAll {
                user: Some("alice".into()),
                service: Some("pop3".into()),
            },
        ),
        (
            "log",
            Request::Log {
                user: None,
                all: false,
                limit: 50,
            },
        ),
        (
            "unlock",
            Request::Unlock {
                user: None,
                rhost: Some("198.51.100.7".into()),
            },
        ),
        ("backup", Request::Backup),
        (
            "networks",
            Request::SetNetworks {
                id: 3,
                from: Some("198.51.100.0/24".into()),
            },
        ),
        (
            "password-changed",
            Request::PasswordChanged {
                user: "alice".into(),
            },
        ),
        ("regenerate", Request::Regenerate { id: 3 }),
    ];
    let responses = [
        (
            "auth-success",
            Response::Auth(AuthAnswer::Success {
                id: 3,
                label: "Phone".into(),
            }),
        ),
        (
            "auth-denied",
            Response::Auth(AuthAnswer::Denied {
                reason: Reason::WrongService,
                id: Some(4),
            }),
        ),
        (
            "auth-no-app-passwords",
            Response::Auth(AuthAnswer::NoAppPasswords),
        ),
        (
            "error",
            Response::error(ErrorKind::Unavailable, "store unavailable: disk full"),
        ),
        (
            "status",
            Response::Status(Box::new(Status {
                version: "0.1.0".into(),
                pid: 812,
                daemon_uid: 998,
                uptime_s: 3600,
                store: "/var/lib/apppass/apppass.db".into(),
                store_error: None,
                store_warning: None,
                schema_version: Some(2),
                workers: 2,
                busy: 1,
                queued: 0,
                queue_max: 1024,
                clients: 3,
                counts: vec![("login_success".into(), 10), ("busy".into(), 0)],
                you: Identity {
                    uid: 0,
                    user: Some("root".into()),
                    admin: true,
                    authenticates_anyone: true,
                },
            })),
        ),
        (
            "added",
            Response::Added(Box::new(Added {
                id: 9,
                user: "alice".into(),
                service: "imap".into(),
                label: "Thunderbird".into(),
                created: 1_790_000_000,
                expires: Some(1_797_776_000),
                networks: "192.0.2.0/24,2001:db8::/48".into(),
                password: zeroize::Zeroizing::new("k46p-wjpw-pvq5-txq2-c86r-4tuk-ckzh".into()),
            })),
        ),
        (
            "passwords",
            Response::Passwords(vec![PasswordInfo {
                id: 1,
                user: "alice".into(),
                service: "imap".into(),
                label: "Phone".into(),
                created: 1_790_000_000,
                expires: None,
                revoked: Some(1_790_086_400),
                status: "revoked".into(),
                last_used: Some(1_790_000_100),
                last_service: Some("imap".into()),
                last_rhost: Some("203.0.113.9".into()),
                use_count: 7,
                networks: "203.0.113.0/24".into(),
                expires_soon: false,
                replaced_by: Some(2),
            }]),
        ),
        (
            "revoked",
            Response::Revoked(vec![(1, RevokeOutcome::Now), (2, RevokeOutcome::NotFound)]),
        ),
        ("count", Response::Count(2)),
        (
            "events",
            Response::Events(vec![EventInfo {
                time: 1_790_000_100,
                user: "alice".into(),
                service: "imap".into(),
                password_id: Some(1),
                rhost: Some("203.0.113.9".into()),
                outcome: "failure".into(),
                reason: Some("wrong_password".into()),
            }]),
        ),
        ("chunk", Response::Chunk(b"SQLite format 3\0".to_vec())),
        ("done", Response::Done),
    ];
    let v = wire::VERSION;
    let mut out: Vec<(&str, &str, Vec<u8>)> = requests
        .iter()
        .map(|(n, r)| ("request", *n, r.encode().to_vec()))
        .chain(
            responses
                .iter()
                .map(|(n, r)| ("response", *n, r.encode().to_vec())),
        )
        .collect();
    // And what must be refused.
    for (kind, name, body) in [
        ("request", "bad-version", vec![v + 1, 2]),
        ("request", "bad-kind", vec![v, 200]),
        ("request", "bad-trailing-byte", vec![v, 2, 0]),
        (
            "request",
            "bad-huge-list",
            vec![v, 5, 0xff, 0xff, 0xff, 0xff],
        ),
        ("request", "bad-flag", vec![v, 4, 0, 2]),
        (
            "request",
            "bad-utf8",
            vec![v, 3, 0, 0, 0, 0, 2, 0xc3, 0x28, 0, 0, 0, 0, 0],
        ),
        ("request", "bad-empty", vec![]),
        // A reason code no Reason has (10 became owner_changed).
        ("response", "bad-reason", vec![v, 64, 200, 0]),
        ("response", "bad-error-kind", vec![v, 65, 0, 0, 0, 0, 0]),
        ("response", "bad-cut-short", vec![v, 70, 0, 0, 0]),
    ] {
        out.push((kind, name, body));
    }
    out
}

// ---------------------------------------------------------------------------------------
// The module itself, through libpam

/// What a client controls, end to end: the user name, the password, the remote host.
#[derive(Debug, Clone)]
enum Password {
    Right,
    Respelled(Vec<(usize, u8)>, Vec<bool>),
    Mutated(Vec<Edit>),
    Bytes(Vec<u8>),
}

fn client_password() -> impl Strategy<Value = Password> {
    prop_oneof![
        Just(Password::Right),
        (
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..30),
            proptest::collection::vec(any::<bool>(), 1..4)
        )
            .prop_map(|(n, u)| Password::Respelled(n, u)),
        proptest::collection::vec(edit(), 1..4).prop_map(Password::Mutated),
        proptest::collection::vec(any::<u8>(), 0..400).prop_map(Password::Bytes),
    ]
}

fn client_user() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"alice".to_vec()),
        Just(b"bob".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// The built module, loaded by libpam, asking apppassd: whatever a client sends, an
/// answer (no crash), and a success exactly for alice's password in one of its
/// spellings. Throttling is off in this sandbox (`throttle_failures = 0`): guesses are
/// not the subject here.
#[test]
fn module_logins() {
    use pam_apppass::client::{Attempt, authenticate};
    use pam_apppass::code::Code;
    let s = common::Sandbox::with_config("throttle_failures = 0\n");
    s.simple_service("imap", "");
    let (_, right) = support::insert_row(&s.db, "alice", "imap", support::CHEAP);
    support::insert_row(&s.db, "bob", "pop3", support::CHEAP);
    let plain: Vec<u8> = right.bytes().filter(|&b| b != b'-').collect();
    let rhost = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..60));
    let mut runner = proptest::test_runner::TestRunner::new(cases(40));
    let result = runner.run(
        &(client_user(), client_password(), rhost),
        |(user, password, rhost)| {
            let sent = match &password {
                Password::Right => right.as_bytes().to_vec(),
                Password::Respelled(n, u) => respelled(&plain, n, u),
                Password::Mutated(edits) => apply(right.as_bytes().to_vec(), edits),
                Password::Bytes(b) => b.clone(),
            };
            // C strings: libpam's items cannot hold a NUL.
            let strip = |v: &[u8]| v.iter().copied().filter(|&b| b != 0).collect::<Vec<u8>>();
            let (user, sent) = (strip(&user), strip(&sent));
            let rhost = rhost.map(|r| lossy(&strip(&r)).replace('\0', ""));
            let out = authenticate(&Attempt {
                confdir: &s.confdir,
                service: "imap",
                user: &user,
                password: &sent,
                rhost: rhost.as_deref(),
            })
            .unwrap();
            if user == b"alice" && model(&sent).as_deref() == Some(&plain[..]) {
                prop_assert_eq!(out.code, Code::SUCCESS);
            } else {
                prop_assert!(
                    [Code::AUTH_ERR, Code::USER_UNKNOWN].contains(&out.code),
                    "{:?} for user {:?}",
                    out.code,
                    lossy(&user)
                );
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// The seeds as they are

/// Every seed, unmutated, through the parser it is for, with the answers it documents.
#[test]
fn corpus_seeds() {
    for raw in seeds("args") {
        let argv: Vec<Vec<u8>> = raw
            .split(|b| b.is_ascii_whitespace())
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let _ = parse_argv(&argv);
    }
    for raw in seeds("config") {
        let _ = Config::parse(&lossy(&raw), Path::new("seed.conf"));
    }
    for raw in seeds("location") {
        let text = lossy(&raw);
        match Location::parse(&text) {
            Err(e) => assert!(!e.contains(MARK), "{e}"),
            Ok(l) => assert!(!text.contains(MARK), "accepted {l:?}"),
        }
    }
    for raw in seeds("duration") {
        let _ = time::parse_duration(&lossy(&raw));
    }
    for raw in seeds("expiry") {
        let _ = time::parse_expiry(&lossy(&raw), 0);
    }
    let mut accepted = 0;
    for raw in seeds("password") {
        let c = Candidate::parse(&raw);
        assert_eq!(c.is_some(), model(&raw).is_some(), "{}", lossy(&raw));
        accepted += usize::from(c.is_some());
    }
    // shown, spaced-upper, plain, messy.
    assert_eq!(accepted, 4);
}

/// The protocol's seeds are its golden examples, byte for byte (see [`golden`]); each
/// good one decodes and encodes back to itself, each `bad-` one is refused.
#[test]
fn protocol_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let write = std::env::var("APPPASS_WRITE_SEEDS").is_ok_and(|v| v == "1");
    for (kind, name, bytes) in golden() {
        let path = root.join(kind).join(format!("{name}.bin"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let seed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (APPPASS_WRITE_SEEDS=1 writes it)", path.display())
        });
        assert!(
            seed == bytes,
            "{}: the encoding of protocol version {} changed",
            path.display(),
            wire::VERSION
        );
    }
    for (kind, decode) in [
        (
            "request",
            (|b: &[u8]| Request::decode(b).map(|r| r.encode().to_vec()))
                as fn(&[u8]) -> Result<Vec<u8>, WireError>,
        ),
        ("response", |b: &[u8]| {
            Response::decode(b).map(|r| r.encode().to_vec())
        }),
    ] {
        let mut n = 0;
        for entry in std::fs::read_dir(root.join(kind)).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let bad = path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("bad-");
            match decode(&bytes) {
                Ok(again) => {
                    assert!(!bad, "{} was accepted", path.display());
                    assert_eq!(again, bytes, "{}", path.display());
                }
                Err(e) => assert!(bad, "{}: {e}", path.display()),
            }
            n += 1;
        }
        assert!(n >= 10, "{kind}: {n} seeds");
    }
}
