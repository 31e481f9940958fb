//! Helpers on top of tests/common: of the fault, abuse, concurrency and timing tests
//! (tests/faults.rs, tests/crash.rs, tests/concurrency.rs, tests/timing.rs,
//! tests/leak_logins.rs), of the benchmark (benches/login), and the one wrong-secret
//! spelling every test that logs in with a mistyped password uses.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use apppass_core::secret::{HashParams, NewPassword};
use apppass_core::store::sqlite::{Purpose, SqliteStore};
use apppass_core::store::{NewRow, Store};

/// argon2id's cheapest parameters: for tests where the cost of a hash is not the point.
pub const CHEAP: HashParams = HashParams {
    m_kib: 8,
    t: 1,
    p: 1,
};

/// Puts in an app password hashed at `params`, through the store API (the CLI refuses
/// parameters below OWASP's minimum); returns its id and the password as shown.
pub fn insert_row(db: &Path, user: &str, service: &str, params: HashParams) -> (i64, String) {
    let pw = NewPassword::generate().unwrap();
    let hash = pw.hash(params).unwrap();
    let store = SqliteStore::open(db, Purpose::Admin, false).unwrap();
    let id = store
        .create(&NewRow {
            user,
            service,
            label: "test row",
            selector: pw.selector(),
            hash: &hash,
            created: 0,
            expires: None,
        })
        .unwrap();
    (id, pw.display().to_string())
}

/// Whether `program` is installed: an executable of that name in PATH (or in the sbin
/// directories, which a non-login root shell may lack).
pub fn have(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .any(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The environment variable that makes a test binary a helper process (see [`helper`]).
pub const HELPER: &str = "APPPASS_TEST_HELPER";

/// Starts this very test binary again as a helper: the libtest harness runs only the
/// test named `test` (which must call [`helper_role`] first), with `role` and `args`
/// handed over in the environment.
pub fn helper(test: &str, role: &str, args: &[(&str, &str)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(HELPER, role);
    for (k, v) in args {
        c.env(k, v);
    }
    c
}

/// The role this process was started in by [`helper`], if any.
pub fn helper_role() -> Option<String> {
    std::env::var(HELPER).ok()
}

pub fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} not set")))
}

/// Kills (SIGKILL) and reaps a child we started, if it is still running.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `password` with its last character changed to another of the alphabet: the selector
/// still names its row, the secret is wrong.
pub fn wrong_secret(password: &str) -> String {
    let mut w = password.to_string();
    let last = w.pop().unwrap();
    w.push(if last == '2' { '3' } else { '2' });
    w
}

/// xorshift64*: reproducible randomness from a seed that is printed, and can be given
/// back through the environment variable `var` to replay a failure.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).unwrap();
                u64::from_le_bytes(b) | 1
            });
        println!("seed: {var}={seed}");
        Rng(seed)
    }

    /// From a fixed seed, for what must come out the same on every run.
    pub fn fixed(seed: u64) -> Rng {
        // xorshift's state must not be zero.
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}
