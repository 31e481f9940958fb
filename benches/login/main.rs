//! The login benchmark: apppass through the real libpam (the module asking a real
//! apppassd over its socket), side by side in one run with the floor (one bare argon2id
//! verification by apppassd's own code, in steady state: a kept arena, as a worker has
//! it), the peers (pam_userdb, pam_pwdfile with yescrypt), the naive "verify every hash"
//! design, and the C reference argon2. Every figure is a median of samples taken in
//! interleaved rounds, each in a fresh order, so that the noise of a shared machine and
//! the order of cases fall on all of them alike; ratios are what to read.
//!
//! Run with `scripts/bench` (which builds apppassd, installs the peers and fetches the C
//! reference's source) or `cargo bench --bench login -- [--rounds N] [--json PATH]
//! [--svg PATH]` after `cargo build --release --workspace --bins --lib`.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/pg/mod.rs"]
mod pg;
mod report;
mod setup;
mod stats;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use apppass_argon2::Hasher;
use apppass_core::secret::{self, Candidate, HashParams};
use argon2::PasswordVerifier;
use common::Daemon;
use pam_apppass::client::{self, Attempt};
use pam_apppass::code::Code;

use report::{Check, Report, Row};
use stats::{Samples, time};
use support::wrong_secret;

const ROLE: &str = "APPPASS_BENCH_ROLE";
/// The naive design's cases run in one round of this many.
const NAIVE_EVERY: usize = 10;

struct Opts {
    rounds: usize,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    throughput_secs: f64,
    fresh_processes: usize,
    large_rows: usize,
    /// argon2id parameters of every hash in the run, apppassd's and the CLI's included.
    params: HashParams,
    /// apppassd's workers (default: one per CPU, as apppassd's own default).
    workers: u32,
    /// Concurrent clients of the flood.
    flood: usize,
    /// Remote hosts (and as many user names) of the growth flood, and the rounds
    /// measured before and after it.
    growth_hosts: usize,
    growth_rounds: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        rounds: 201,
        json: None,
        svg: None,
        throughput_secs: 3.0,
        // 101, so that the p99 of first verifications is the second slowest, not the
        // slowest: one process the machine stalled must not decide a target alone.
        fresh_processes: 101,
        large_rows: 1_000_000,
        params: HashParams::default(),
        workers: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        flood: 200,
        growth_hosts: 4000,
        growth_rounds: 101,
    };
    let quick = |o: &mut Opts| {
        o.rounds = 7;
        o.throughput_secs = 0.5;
        o.fresh_processes = 7;
        o.large_rows = 100_000;
        o.flood = 20;
        o.growth_hosts = 60;
        o.growth_rounds = 3;
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench. `cargo test --all-targets` runs this without it, in a
    // debug build whose figures mean nothing: there it only has to show that every case
    // still runs, and the full run would add minutes to the test suite.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("bench: not run by cargo bench: --quick (a check that every case runs)");
        quick(&mut o);
    }
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {}
            "--rounds" => {
                o.rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            "--json" => o.json = args.next().map(PathBuf::from),
            "--argon2-memory" => o.params.m_kib = number(args.next(), "--argon2-memory KiB"),
            "--argon2-time" => o.params.t = number(args.next(), "--argon2-time N"),
            "--argon2-lanes" => o.params.p = number(args.next(), "--argon2-lanes N"),
            "--svg" => o.svg = args.next().map(PathBuf::from),
            "--quick" => quick(&mut o),
            "--help" | "-h" => {
                println!(
                    "usage: cargo bench --bench login -- [--quick] [--rounds N] [--json PATH] [--svg PATH]\n\
                     \x20      [--argon2-memory KiB] [--argon2-time N] [--argon2-lanes N]"
                );
                std::process::exit(0);
            }
            other => {
                eprintln!("bench: unknown option {other:?} (see --help)");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = o.params.validate() {
        eprintln!("bench: {e}");
        std::process::exit(2);
    }
    o
}

fn number(value: Option<String>, usage: &str) -> u32 {
    value.and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        eprintln!("bench: {usage}");
        std::process::exit(2);
    })
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role, &std::env::args().skip(1).collect::<Vec<_>>());
        return;
    }
    let o = opts();
    let params = o.params;
    let work = tempfile::Builder::new()
        .prefix("apppass-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = work.path();
    eprintln!(
        "bench: hashing the real rows and building stores of 1,000 and {} app passwords ...",
        o.large_rows
    );
    let real = setup::RealRows::make(params);
    let (small_db, people) = setup::database(dir, "small", 1_000, &real);
    let (large_db, _) = setup::database(dir, "large", o.large_rows, &real);
    let large_name = if o.large_rows == 1_000_000 {
        "1M".to_string()
    } else {
        format!("{}k", o.large_rows / 1000)
    };
    // Other parameters than the defaults go to apppassd the way an administrator gives
    // them, in its configuration: its unknown-user and unknown-selector logins then hash
    // at those parameters too. The workers as apppassd's default would have them.
    let params_conf = setup::params_conf(params);
    let conf = dir.join("apppass.conf");
    // No limit on active passwords (the default is 20): the CLI's case adds to a user
    // who has forty, as an administrator who raised the limit would.
    std::fs::write(
        &conf,
        format!("{params_conf}workers = {}\nmax_passwords = 0\n", o.workers),
    )
    .unwrap();
    let daemon = |name: &str, db: &Path, conf: &Path| {
        let run = dir.join(format!("run-{name}"));
        std::fs::create_dir(&run).unwrap();
        Daemon::start_at(&run, db, conf, &[])
    };
    let small = daemon("small", &small_db, &conf);
    let large = daemon("large", &large_db, &conf);

    let confdir = dir.join("pam.d");
    std::fs::create_dir(&confdir).unwrap();
    let module = common::built_module();
    let service =
        |name: &str, line: String| std::fs::write(confdir.join(name), line + "\n").unwrap();
    for (name, d) in [("apppass-1k", &small), ("apppass-large", &large)] {
        service(
            name,
            format!(
                "auth required {} socket={} service=imap",
                module.display(),
                d.socket.display()
            ),
        );
    }
    service("permit", "auth required pam_permit.so".into());

    // Peers, with the same password as solo's app password, hashed with yescrypt.
    let peer_password = people.solo.password.clone();
    let mut peers: Vec<(&str, &str)> = Vec::new();
    if let Some(hash) = setup::yescrypt(&peer_password) {
        if setup::have_module("pam_userdb.so") {
            if let Some(db) = setup::userdb(dir, "peer", &hash) {
                service(
                    "userdb",
                    format!(
                        "auth required pam_userdb.so db={} crypt=crypt",
                        db.display()
                    ),
                );
                peers.push(("pam_userdb (yescrypt)", "userdb"));
            }
        }
        if setup::have_module("pam_pwdfile.so") {
            let f = setup::pwdfile(dir, "peer", &hash);
            service(
                "pwdfile",
                format!(
                    "auth required pam_pwdfile.so pwdfile={} nodelay",
                    f.display()
                ),
            );
            peers.push(("pam_pwdfile (yescrypt)", "pwdfile"));
        }
    }
    if peers.len() < 2 {
        eprintln!(
            "bench: pam_userdb/pam_pwdfile peers missing (install libpam-pwdfile, db5.3-util, whois)"
        );
    }

    // The cases measured in every round.
    let solo_hash = hashes_of(&large_db, "solo")[0].clone();
    let forty_hashes = hashes_of(&large_db, "forty");
    let unknown_selector = {
        let other = secret::NewPassword::generate().unwrap();
        other.display().to_string()
    };
    let active40 = &people.forty[1..];
    let mut cases: Vec<Case> = vec![
        Case::floor(
            "floor: one argon2id verification, apppassd's code, steady state",
            people.solo.password.clone(),
            solo_hash.clone(),
        ),
        Case::pam(
            "PAM harness alone (pam_permit)",
            "harness",
            "permit",
            "x",
            "x",
            Code::SUCCESS,
        ),
    ];
    for (db, svc) in [("1k", "apppass-1k"), (large_name.as_str(), "apppass-large")] {
        let g = format!("apppass, {db} rows");
        let c = |name: &str, user: &str, pw: String, code| {
            Case::pam(&format!("{g}: {name}"), &g, svc, user, &pw, code)
        };
        cases.push(c(
            "right password, user with 1",
            "solo",
            people.solo.password.clone(),
            Code::SUCCESS,
        ));
        cases.push(c(
            "right password, user with 40",
            "forty",
            active40[19].password.clone(),
            Code::SUCCESS,
        ));
        cases.push(c(
            "wrong secret, user with 1",
            "solo",
            wrong_secret(&people.solo.password),
            Code::AUTH_ERR,
        ));
        cases.push(c(
            "wrong secret, user with 40",
            "forty",
            wrong_secret(&active40[19].password),
            Code::AUTH_ERR,
        ));
        cases.push(c(
            "unknown selector, user with 40",
            "forty",
            unknown_selector.clone(),
            Code::AUTH_ERR,
        ));
        cases.push(c(
            "unknown user",
            "nobody-here",
            people.solo.password.clone(),
            Code::USER_UNKNOWN,
        ));
        cases.push(c(
            "revoked, user with 40",
            "forty",
            people.forty[0].password.clone(),
            Code::AUTH_ERR,
        ));
    }
    // PostgreSQL on loopback (TLS that verifies the server, as apppassd requires over
    // TCP): the same real rows in a private cluster, served by an apppassd with the
    // front ends' login role; what its round trips add shows against the floor.
    let cluster = match pg::Cluster::start() {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("bench: no PostgreSQL rows (missing: {e})");
            None
        }
    };
    let pg_daemon = cluster.as_ref().map(|cluster| {
        let (pg_conf, login) = setup::postgres(
            cluster,
            dir,
            &real,
            &format!("{params_conf}workers = {}\n", o.workers),
        );
        let run = dir.join("run-pg");
        std::fs::create_dir(&run).unwrap();
        let d = Daemon::start_at(&run, Path::new(&login), &pg_conf, &[]);
        service(
            "apppass-pg",
            format!(
                "auth required {} socket={} service=imap",
                module.display(),
                d.socket.display()
            ),
        );
        d
    });
    if pg_daemon.is_some() {
        let g = "PostgreSQL (loopback, TLS), 81 rows".to_string();
        for (name, user, pw, code) in [
            (
                "right password, user with 1",
                "solo",
                people.solo.password.clone(),
                Code::SUCCESS,
            ),
            (
                "wrong secret, user with 1",
                "solo",
                wrong_secret(&people.solo.password),
                Code::AUTH_ERR,
            ),
            (
                "unknown user",
                "nobody-here",
                people.solo.password.clone(),
                Code::USER_UNKNOWN,
            ),
        ] {
            cases.push(Case::pam(
                &format!("{g}: {name}"),
                &g,
                "apppass-pg",
                user,
                &pw,
                code,
            ));
        }
    }
    for (name, svc) in &peers {
        cases.push(Case::pam(
            &format!("{name}: right password"),
            "peers",
            svc,
            "peer",
            &peer_password,
            Code::SUCCESS,
        ));
        cases.push(Case::pam(
            &format!("{name}: wrong password"),
            "peers",
            svc,
            "peer",
            &wrong_secret(&peer_password),
            Code::AUTH_ERR,
        ));
    }
    cases.push(Case::naive(
        "naive, verify every hash of 40: right password",
        active40[19].password.clone(),
        forty_hashes.clone(),
    ));
    cases.push(Case::naive(
        "naive, verify every hash of 40: wrong password",
        wrong_secret(&active40[19].password),
        forty_hashes.clone(),
    ));

    eprintln!(
        "bench: {} rounds of {} cases, interleaved ...",
        o.rounds,
        cases.len()
    );
    let mut order: Vec<usize> = (0..cases.len()).collect();
    let mut rng = support::Rng::fixed(0x0061_7070_7061_7373);
    // The floor's kept arena, as an apppassd worker keeps its own.
    let mut hasher = Hasher::new();
    for round in 0..=o.rounds {
        // Each round in a fresh order: what ran just before a case (a login whose code
        // is still in the caches, or a hash that evicted it) must not always favour the
        // same ones. The seed is fixed, so runs are comparable.
        rng.shuffle(&mut order);
        for &i in &order {
            let case = &mut cases[i];
            // Round 0 warms caches and is not counted; a case measured in one round of
            // several sits it out.
            if round % case.every != 1 % case.every {
                continue;
            }
            let ms = case.run(&confdir, round, &mut hasher);
            if round > 0 {
                case.samples.push(ms);
            }
        }
    }

    let mut report = Report::new(params, o.rounds, o.large_rows, o.workers);
    let floor = &cases[0].samples;
    for c in &cases {
        report
            .rows
            .push(Row::new(&c.group, &c.name, &c.samples, floor, &mut rng));
    }

    eprintln!("bench: throughput with one and two login processes ...");
    report.throughput = throughput(
        &confdir,
        "apppass-large",
        "solo",
        &people.solo.password,
        &solo_hash,
        o.throughput_secs,
    );
    eprintln!("bench: a flood of {} concurrent clients ...", o.flood);
    report.flood = flood(
        &confdir,
        &large,
        "apppass-large",
        "solo",
        &people.solo.password,
        o.flood,
    );
    eprintln!(
        "bench: growth: a flood of {n} remote hosts and {n} user names, logins before and after ...",
        n = o.growth_hosts
    );
    report.growth = growth(
        dir,
        &confdir,
        &real,
        &format!("{params_conf}workers = {}\n", o.workers),
        o.growth_hosts,
        o.growth_rounds,
        &mut hasher,
    );
    eprintln!(
        "bench: argon2id implementations, first verification in fresh processes and steady state ..."
    );
    report.hashes = hashes(dir, &solo_hash, &people.solo.password, o.fresh_processes);
    eprintln!("bench: the CLI on the {large_name}-row store ...");
    report.cli = cli(&large, people.cli_user);
    drop(pg_daemon);

    report.check(&large_name);
    print!("{}", report.table());
    if let Some(path) = &o.json {
        std::fs::write(path, report.json().to_string()).unwrap();
        eprintln!("bench: wrote {}", path.display());
    }
    if let Some(path) = &o.svg {
        std::fs::write(path, report.svg()).unwrap();
        eprintln!("bench: wrote {}", path.display());
    }
    if report.checks.iter().any(|c: &Check| !c.pass) {
        eprintln!("bench: some targets were missed (see above)");
    }
}

enum Kind {
    Floor {
        password: String,
        hash: String,
    },
    Pam {
        service: String,
        user: String,
        password: String,
        expect: Code,
    },
    Naive {
        password: String,
        hashes: Vec<String>,
    },
}

struct Case {
    name: String,
    group: String,
    kind: Kind,
    samples: Samples,
    /// Measured in every `every`-th round only.
    every: usize,
}

impl Case {
    fn floor(name: &str, password: String, hash: String) -> Case {
        Case {
            name: name.into(),
            group: "floor".into(),
            kind: Kind::Floor { password, hash },
            samples: Samples::default(),
            every: 1,
        }
    }

    fn pam(
        name: &str,
        group: &str,
        service: &str,
        user: &str,
        password: &str,
        expect: Code,
    ) -> Case {
        Case {
            name: name.into(),
            group: group.into(),
            kind: Kind::Pam {
                service: service.into(),
                user: user.into(),
                password: password.into(),
                expect,
            },
            samples: Samples::default(),
            every: 1,
        }
    }

    fn naive(name: &str, password: String, hashes: Vec<String>) -> Case {
        Case {
            name: name.into(),
            group: "naive".into(),
            kind: Kind::Naive { password, hashes },
            samples: Samples::default(),
            // Forty hashes take 0.3 to 0.9 s, twice the rest of a round: at a tenth of
            // the rounds they still show what they are (15 to 40 x the floor), and the
            // rounds saved go to the ratios near 1.10, which need the samples.
            every: NAIVE_EVERY,
        }
    }

    fn run(&self, confdir: &Path, round: usize, hasher: &mut Hasher) -> f64 {
        match &self.kind {
            Kind::Floor { password, hash } => {
                let c = Candidate::parse(password.as_bytes()).unwrap();
                let (ms, ok) = time(|| secret::verify_in(hasher, Some(&c), hash, None).unwrap());
                assert!(ok);
                ms
            }
            Kind::Pam {
                service,
                user,
                password,
                expect,
            } => {
                // A remote host of its own for each round (from 198.18.0.0/15, the
                // benchmarking range): the failure cases repeat every round, and from one
                // host they would soon be throttled, refused without a hash, and measure
                // that instead (guesses at unknown selectors are never cleared by a
                // success; see README, "Throttling").
                let rhost = format!("198.18.{}.{}", round / 256 % 256, round % 256);
                let (ms, out) = time(|| {
                    client::authenticate(&Attempt {
                        confdir,
                        service,
                        user: user.as_bytes(),
                        password: password.as_bytes(),
                        rhost: Some(&rhost),
                    })
                    .unwrap()
                });
                assert_eq!(out.code, *expect, "{}", self.name);
                ms
            }
            Kind::Naive { password, hashes } => {
                // What tools without a selector do: try each of the user's hashes in turn.
                // The right one sits at a different place each round, as it would.
                let c = Candidate::parse(password.as_bytes());
                let start = round % hashes.len();
                let (ms, _) = time(|| {
                    (0..hashes.len()).any(|i| {
                        secret::verify(c.as_ref(), &hashes[(start + i) % hashes.len()]).unwrap()
                    })
                });
                ms
            }
        }
    }
}

/// The stored hashes of `user`, by id.
fn hashes_of(db: &Path, user: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT hash FROM app_password WHERE user = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([user], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn self_command(role: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env(ROLE, role);
    c
}

/// Logins per second with one and with two processes logging in at once, and beside
/// them the bare verification's own rate with one and two processes (medians of five
/// alternations): two argon2 arenas of 19 MiB share the machine's caches and memory
/// bandwidth, so the hash alone does not scale to 2 x either, and that is the bound.
fn throughput(
    confdir: &Path,
    service: &str,
    user: &str,
    password: &str,
    phc: &str,
    secs: f64,
) -> report::Throughput {
    let login = [confdir.to_str().unwrap(), service, user, password];
    let hash = [phc, password];
    let run = |n: usize, role: &str, args: &[&str]| -> f64 {
        let children: Vec<_> = (0..n)
            .map(|_| {
                self_command(role)
                    .args(args)
                    .arg(secs.to_string())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let total: f64 = children
            .into_iter()
            .map(|c| {
                String::from_utf8(c.wait_with_output().unwrap().stdout)
                    .unwrap()
                    .trim()
                    .parse::<f64>()
                    .unwrap()
            })
            .sum();
        total / secs
    };
    let mut s: [Samples; 4] = Default::default();
    // Five alternations, so that one window in which the machine's other vCPU was taken
    // does not decide the figure (with three, one run in five came out at 1.57 x).
    for _ in 0..5 {
        s[0].push(run(1, "worker", &login));
        s[1].push(run(2, "worker", &login));
        s[2].push(run(1, "hash-worker", &hash));
        s[3].push(run(2, "hash-worker", &hash));
    }
    report::Throughput {
        one: s[0].median(),
        two: s[1].median(),
        hash_one: s[2].median(),
        hash_two: s[3].median(),
    }
}

/// A flood of `n` clients logging in at once through libpam (threads of this process,
/// each its own PAM handle and connection): how many apppassd answered within the
/// module's timeout, how long they waited, and apppassd's peak memory meanwhile.
fn flood(
    confdir: &Path,
    daemon: &Daemon,
    service: &str,
    user: &str,
    password: &str,
    n: usize,
) -> report::Flood {
    let pid = daemon.child.id();
    let status = || std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    // The peak from here on (root may reset another process's).
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let idle_kib = kib(&status(), "VmRSS:");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let barrier = std::sync::Arc::clone(&barrier);
            let (confdir, service, user, password) = (
                confdir.to_path_buf(),
                service.to_string(),
                user.to_string(),
                password.to_string(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                time(|| {
                    client::authenticate(&Attempt {
                        confdir: &confdir,
                        service: &service,
                        user: user.as_bytes(),
                        password: password.as_bytes(),
                        rhost: Some("192.0.2.1"),
                    })
                    .unwrap()
                    .code
                })
            })
        })
        .collect();
    let mut waits = Samples::default();
    let mut in_time = 0;
    for h in handles {
        let (ms, code) = h.join().unwrap();
        // The module's default timeout: what a login waits at most.
        if code == Code::SUCCESS && ms <= 5000.0 {
            in_time += 1;
        }
        waits.push(ms);
    }
    let peak_kib = kib(&status(), "VmHWM:");
    report::Flood {
        clients: n,
        in_time,
        waits,
        idle_kib,
        peak_kib,
    }
}

/// Issue 13's bounded growth (see [`report::Growth`]): an apppassd on a store of its own
/// whose throttle and audit bounds are a quarter of the flood; guesses at two real users
/// (unknown selectors, wrong secrets), each from a new IPv6 /64, and logins as user names
/// that have no app passwords, from four threads; then the tables' sizes, and a right
/// and a wrong login interleaved with the floor before and after.
fn growth(
    dir: &Path,
    confdir: &Path,
    real: &setup::RealRows,
    conf_text: &str,
    hosts: usize,
    rounds: usize,
    hasher: &mut Hasher,
) -> report::Growth {
    let (db, people) = setup::database(dir, "growth", 1_000, real);
    let bound = i64::try_from(hosts / 4).unwrap_or(i64::MAX).max(10);
    let conf = dir.join("growth.conf");
    std::fs::write(
        &conf,
        format!("{conf_text}throttle_max_rows = {bound}\naudit_max_rows = {bound}\n"),
    )
    .unwrap();
    let run = dir.join("run-growth");
    std::fs::create_dir(&run).unwrap();
    let daemon = Daemon::start_at(&run, &db, &conf, &[]);
    std::fs::write(
        confdir.join("apppass-growth"),
        format!(
            "auth required {} socket={} service=imap\n",
            common::built_module().display(),
            daemon.socket.display()
        ),
    )
    .unwrap();
    let solo_hash = hashes_of(&db, "solo")[0].clone();
    let right = people.solo.password.clone();
    let wrong = wrong_secret(&right);
    let login = |user: &str, password: &str, rhost: &str| {
        client::authenticate(&Attempt {
            confdir,
            service: "apppass-growth",
            user: user.as_bytes(),
            password: password.as_bytes(),
            rhost: Some(rhost),
        })
        .unwrap()
        .code
    };
    let mut g = report::Growth {
        hosts,
        names: hosts,
        throttle_bound: bound,
        audit_bound: bound,
        ..Default::default()
    };
    // The right login comes last in each round, so that it clears the one failure the
    // wrong one counted (the same password's counter) and no round is throttled.
    let mut measure = |floor: &mut Samples, wrong_s: &mut Samples, right_s: &mut Samples| {
        let c = Candidate::parse(right.as_bytes()).unwrap();
        for round in 0..=rounds {
            let (f, ok) = time(|| secret::verify_in(hasher, Some(&c), &solo_hash, None).unwrap());
            assert!(ok);
            let (w, code) = time(|| login("solo", &wrong, "192.0.2.1"));
            assert_eq!(code, Code::AUTH_ERR);
            let (r, code) = time(|| login("solo", &right, "192.0.2.1"));
            assert_eq!(code, Code::SUCCESS);
            if round > 0 {
                floor.push(f);
                wrong_s.push(w);
                right_s.push(r);
            }
        }
    };
    measure(
        &mut g.floor_before,
        &mut g.wrong_before,
        &mut g.right_before,
    );

    let unknown = secret::NewPassword::generate()
        .unwrap()
        .display()
        .to_string();
    let forty = people.forty[1].password.clone();
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (unknown, forty, wrong, confdir) = (&unknown, &forty, &wrong, confdir);
            scope.spawn(move || {
                for i in (t..hosts).step_by(4) {
                    // A new /64 for every guess, as an attacker with many prefixes.
                    let rhost = format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff);
                    let (user, guess) = match i % 3 {
                        0 => ("forty", unknown.as_str()),
                        1 => ("forty", forty.as_str()),
                        _ => ("solo", wrong.as_str()),
                    };
                    let guess = if i % 3 == 1 {
                        wrong_secret(guess)
                    } else {
                        guess.to_string()
                    };
                    let attempt = |user: &str, password: &str| {
                        client::authenticate(&Attempt {
                            confdir,
                            service: "apppass-growth",
                            user: user.as_bytes(),
                            password: password.as_bytes(),
                            rhost: Some(&rhost),
                        })
                        .unwrap()
                        .code
                    };
                    assert_eq!(attempt(user, &guess), Code::AUTH_ERR);
                    // A user name with no app passwords, never the same twice.
                    assert_eq!(attempt(&format!("flood{i}"), unknown), Code::USER_UNKNOWN);
                }
            });
        }
    });
    g.flood_secs = start.elapsed().as_secs_f64();

    measure(&mut g.floor_after, &mut g.wrong_after, &mut g.right_after);
    // Read beside apppassd, once the last records are in (the list waits for them).
    let _ = daemon.call(&apppass_proto::Request::List {
        user: Some("solo".into()),
        all: false,
    });
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    g.throttle_rows = count("throttle");
    g.event_rows = count("event");
    g
}

/// A `Key:  N kB` field of a /proc file.
fn kib(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// argon2id at the same parameters: ours, the RustCrypto crate as it comes, and the C
/// reference (Debian's libargon2, and the reference sources built with AVX2).
fn hashes(dir: &Path, phc: &str, password: &str, fresh: usize) -> Vec<report::HashImpl> {
    let normalised = password.replace('-', "");
    let mut impls: Vec<(String, Command)> = Vec::new();
    for which in ["ours", "crate"] {
        let mut c = self_command("hash");
        c.args([which, phc, &normalised]);
        impls.push((which.to_string(), c));
    }
    for (label, bin) in reference_binaries(dir) {
        let mut c = Command::new(&bin);
        c.args(["steady", phc, &normalised]);
        impls.push((label, c));
    }
    let mut first: Vec<Samples> = vec![Samples::default(); impls.len()];
    let mut steady: Vec<Samples> = vec![Samples::default(); impls.len()];
    let samples = |c: &mut Command, n: usize| -> Vec<f64> {
        let out = c.arg(n.to_string()).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    };
    for round in 0..fresh {
        for (i, (_, cmd)) in impls.iter().enumerate() {
            let mut c = clone_command(cmd);
            let v = samples(&mut c, if round % 3 == 0 { 11 } else { 1 });
            first[i].push(v[0]);
            for ms in v.iter().skip(1) {
                steady[i].push(*ms);
            }
        }
    }
    impls
        .iter()
        .zip(first.into_iter().zip(steady))
        .map(|((label, _), (first, steady))| report::HashImpl {
            name: label.clone(),
            first,
            steady,
        })
        .collect()
}

fn clone_command(c: &Command) -> Command {
    let mut n = Command::new(c.get_program());
    n.args(c.get_args());
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            n.env(k, v);
        }
    }
    n
}

/// Builds `argon2_ref.c` against Debian's libargon2 and, if its sources were fetched
/// (scripts/bench does), against the C reference with AVX2.
fn reference_binaries(dir: &Path) -> Vec<(String, PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/login/argon2_ref.c");
    let mut out = Vec::new();
    let deb = dir.join("argon2_ref_debian");
    let ok = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&deb)
        .arg(&src)
        .arg("-largon2")
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        out.push(("C reference, Debian libargon2".to_string(), deb));
    } else {
        eprintln!("bench: no Debian libargon2 to compare with (apt-get install libargon2-dev)");
    }
    let refdir = std::env::var_os("APPPASS_ARGON2_REF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/argon2-ref/libargon2")
        });
    if refdir.join("src/opt.c").exists() {
        let avx2 = dir.join("argon2_ref_avx2");
        let files = [
            "argon2.c",
            "core.c",
            "encoding.c",
            "opt.c",
            "thread.c",
            "blake2/blake2b.c",
        ];
        let mut cc = Command::new("cc");
        cc.args(["-O3", "-mavx2", "-DARGON2_NO_THREADS", "-o"])
            .arg(&avx2)
            .arg(&src);
        cc.arg(format!("-I{}", refdir.join("include").display()));
        cc.arg(format!("-I{}", refdir.join("src").display()));
        for f in files {
            cc.arg(refdir.join("src").join(f));
        }
        if cc.status().is_ok_and(|s| s.success()) {
            out.push(("C reference, AVX2 build (-O3 -mavx2)".to_string(), avx2));
        }
    } else {
        eprintln!(
            "bench: C reference sources not found in {} (scripts/bench fetches them)",
            refdir.display()
        );
    }
    out
}

/// `apppass add` and `apppass list` for a user with forty app passwords, through apppassd.
fn cli(daemon: &Daemon, user: &str) -> Vec<(String, Samples)> {
    let bin = common::apppass_bin();
    let (mut add, mut list) = (Samples::default(), Samples::default());
    let run = |args: &[&str]| {
        Command::new(&bin)
            .arg("--socket")
            .arg(&daemon.socket)
            .args(args)
            .output()
            .unwrap()
    };
    for _ in 0..11 {
        let (ms, out) = time(|| run(&["add", "--user", user, "--service", "imap", "--json"]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        add.push(ms);
        let (ms, out) = time(|| run(&["list", "--user", user]));
        assert!(out.status.success());
        list.push(ms);
    }
    vec![
        ("apppass add (user with 40+)".into(), add),
        ("apppass list (user with 40+)".into(), list),
    ]
}

/// One login from a child's arguments: CONFDIR SERVICE USER PASSWORD.
fn login_once(args: &[String]) -> Code {
    client::authenticate(&Attempt {
        confdir: Path::new(&args[0]),
        service: &args[1],
        user: args[2].as_bytes(),
        password: args[3].as_bytes(),
        rhost: None,
    })
    .unwrap()
    .code
}

/// Runs `once` over and over for `secs` seconds and prints how many times it ran.
fn count_for(secs: &str, mut once: impl FnMut()) {
    let secs: f64 = secs.parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    let mut n = 0u64;
    while std::time::Instant::now() < deadline {
        once();
        n += 1;
    }
    println!("{n}");
}

/// What the benchmark runs in child processes: fresh processes for first verifications,
/// memory peaks, and concurrent login workers.
fn child(role: &str, args: &[String]) {
    match role {
        "hash" => {
            // hash ours|crate PHC NORMALISED-PASSWORD N: N verifications, one line each.
            let (which, phc, password, n) = (
                &args[0],
                &args[1],
                &args[2],
                args[3].parse::<usize>().unwrap(),
            );
            let candidate = Candidate::parse(password.as_bytes()).unwrap();
            // The first verification maps the arena; the next ones reuse it, as an
            // apppassd worker does.
            let mut hasher = Hasher::new();
            for _ in 0..n {
                let (ms, ok) = match which.as_str() {
                    "ours" => time(|| {
                        secret::verify_in(&mut hasher, Some(&candidate), phc, None).unwrap()
                    }),
                    _ => time(|| {
                        argon2::Argon2::default()
                            .verify_password(password.as_bytes(), phc.as_str())
                            .is_ok()
                    }),
                };
                assert!(ok);
                println!("{ms:.4}");
            }
        }
        "hash-worker" => {
            // hash-worker PHC PASSWORD SECS: bare verifications in a kept arena, counted.
            let candidate = Candidate::parse(args[1].as_bytes()).unwrap();
            let mut hasher = Hasher::new();
            count_for(&args[2], || {
                assert!(secret::verify_in(&mut hasher, Some(&candidate), &args[0], None).unwrap())
            });
        }
        "worker" => count_for(&args[4], || assert_eq!(login_once(args), Code::SUCCESS)),
        other => panic!("unknown role {other}"),
    }
}
