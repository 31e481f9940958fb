//! Property tests (fuzzing, bounded): the module's argument parser, the configuration
//! parser, the `db` setting's parser, the duration and expiry parsers and the password
//! normaliser, fed arbitrary bytes, mutations of the seeds in tests/corpus/, and inputs
//! built from their grammars.
//!
//! What must hold: no parser panics (a panic in the module is a failed login at best,
//! and the CLI runs setuid); each either accepts or says why; what is accepted means what
//! it says (a model of each grammar is checked against the parser); a password in a
//! database setting never reaches a message; normalisation is idempotent and ignores
//! spaces, dashes and case; every generated password parses back to itself; nothing
//! longer than MAX_INPUT_LEN is ever a candidate.
//!
//! Bounded: APPPASS_PROPTEST_CASES cases per property (default 5,000; fewer where each
//! case hashes or logs in), about ten seconds in all. Failures proptest finds are kept in
//! tests/corpus/proptest-regressions.txt and replayed first on every run; the seeds in
//! tests/corpus/ are run as they are and mutated.

mod common;
mod support;

use std::path::{Path, PathBuf};

use apppass_core::args;
use apppass_core::config::Config;
use apppass_core::policy::Throttle;
use apppass_core::secret::{self, ALPHABET, Candidate, MAX_INPUT_LEN, NewPassword, PASSWORD_LEN};
use apppass_core::store::Location;
use apppass_core::time;
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
        ("db" | "conf" | "service", None, r) => assert!(r.is_err(), "{arg:?} needs a value"),
        ("conf", Some(v), Ok(a)) if !v.starts_with('/') => {
            panic!("relative conf= accepted: {a:?}")
        }
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
    /// argument means what the manual says; unknown ones are kept, in order, for the log.
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
                let unknown: Vec<String> = argv
                    .iter()
                    .filter(|raw| {
                        let s = lossy(raw);
                        let key = s.split_once('=').map_or(s.as_str(), |(k, _)| k).to_string();
                        std::str::from_utf8(raw).is_err()
                            || !(["db", "conf", "service"].contains(&key.as_str())
                                || (["debug", "use_first_pass", "try_first_pass"]
                                    .contains(&key.as_str())
                                    && !s.contains('=')))
                    })
                    .map(|raw| lossy(raw))
                    .collect();
                prop_assert_eq!(&a.unknown, &unknown);
            }
        }
        for raw in &argv {
            check_arg(raw, &parsed);
        }
    }

    /// A password in `db=` never reaches the error (which goes to syslog).
    #[test]
    fn module_arguments_never_echo_a_db_password(db in location_with_password()) {
        let arg = format!("db={db}");
        if let Err(e) = args::parse(&[arg.as_bytes()]) {
            prop_assert!(!e.0.contains(MARK), "{}", e.0);
        } else {
            prop_assert!(false, "a db= with a password was accepted: {arg}");
        }
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
            )| {
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

/// The built module, loaded by libpam: whatever a client sends, an answer (no crash),
/// and a success exactly for alice's password in one of its spellings. Throttling is off
/// in this sandbox (`throttle_failures = 0`): guesses are not the subject here.
#[test]
fn module_logins() {
    use pam_apppass::client::{Attempt, authenticate};
    use pam_apppass::code::Code;
    let s = common::Sandbox::new();
    std::fs::write(&s.conf, "throttle_failures = 0\n").unwrap();
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
