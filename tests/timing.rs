//! Timing: an unknown user, an unknown selector, a wrong secret and a revoked password
//! take the same time through libpam, so the time of an answer tells an attacker nothing
//! about which of them it was.
//!
//! How: the four kinds of attempt, plus two controls, in 51 interleaved rounds (each
//! round in a fresh random order, so that drift and bursts of load on a shared machine
//! fall on every kind alike), timed from `pam_start` to `pam_end`; the statistic is each
//! kind's median.
//!
//! The tolerance: every median of the four within 10% of every other (largest / smallest
//! <= 1.10). Each attempt is one argon2id verification at the default cost (19 MiB, two
//! passes: about 20 ms here, most of the time of a login) plus a few SQL statements and,
//! for users who have app passwords, the audit record (tens to hundreds of microseconds):
//! the paths differ by a few percent at most by construction. The median of 51 samples
//! moves by a few percent between runs on a busy two-core machine, so 10% leaves room for
//! that noise and no more.
//!
//! That the comparison cannot pass by accident (a noise floor so high that anything
//! passes, a clock that measures nothing) is shown in the same run, by the same
//! statistic on the same samples' conditions, with two controls that must come out
//! different:
//! - a throttled attempt, refused before any hashing (must be below 1/1.10 of the
//!   fastest of the four);
//! - a wrong secret for a row hashed with three passes instead of two, a path that does
//!   half as much argon2 work again (must be above 1.10 x the slowest of the four).
//!
//! Throttling would otherwise interfere (the same user and host guess 51 times): the four
//! kinds run through a service whose configuration turns it off (`throttle_failures = 0`);
//! the throttled control goes through a second service on the same database whose
//! configuration turns it on at one guess.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::Sandbox;
use pam_apppass::code::Code;
use pam_apppass::secret::{HashParams, NewPassword};

const ROUNDS: usize = 51;
const WARMUP: usize = 3;
const TOLERANCE: f64 = 1.10;

struct Kind {
    name: &'static str,
    service: &'static str,
    user: &'static str,
    password: String,
    rhost: &'static str,
    want: Code,
    samples: Vec<Duration>,
}

fn median(samples: &[Duration]) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn wrong_secret(password: &str) -> String {
    let mut w = password.to_string();
    let last = w.pop().unwrap();
    w.push(if last == '2' { '3' } else { '2' });
    w
}

#[test]
fn failures_take_the_same_time() {
    let s = Sandbox::new();
    std::fs::write(&s.conf, "throttle_failures = 0\n").unwrap();
    let throttled_conf = s.dir.path().join("throttled.conf");
    std::fs::write(
        &throttled_conf,
        "throttle_failures = 1\nthrottle_lockout = 1h\n",
    )
    .unwrap();
    s.simple_service("timing", "service=imap");
    s.service(
        "timing-throttled",
        &format!(
            "auth required {{module}} db={{db}} conf={} service=imap\n",
            throttled_conf.display()
        ),
    );
    // Made by the CLI, at the default cost, as in production.
    let active = s.add("alice", "imap", &[]);
    let revoked = s.add("alice", "imap", &[]);
    assert!(
        s.apppass(&["revoke", &revoked.id.to_string()])
            .status
            .success()
    );
    let never_issued = NewPassword::generate().unwrap().display().to_string();
    let (_, heavy) = support::insert_row(
        &s.db,
        "alice",
        "imap",
        HashParams {
            t: 3,
            ..HashParams::default()
        },
    );
    // One guess locks alice out from this host on the throttled service.
    assert_eq!(
        s.login(
            "timing-throttled",
            "alice",
            wrong_secret(&active.password).as_bytes(),
            Some("203.0.113.99")
        )
        .code,
        Code::AUTH_ERR
    );

    let kind = |name, service, user, password: &str, rhost, want| Kind {
        name,
        service,
        user,
        password: password.to_string(),
        rhost,
        want,
        samples: Vec::with_capacity(ROUNDS),
    };
    let mut kinds = [
        kind(
            "unknown user",
            "timing",
            "mallory",
            &active.password,
            "192.0.2.1",
            Code::USER_UNKNOWN,
        ),
        kind(
            "unknown selector",
            "timing",
            "alice",
            &never_issued,
            "192.0.2.1",
            Code::AUTH_ERR,
        ),
        kind(
            "wrong secret",
            "timing",
            "alice",
            &wrong_secret(&active.password),
            "192.0.2.1",
            Code::AUTH_ERR,
        ),
        kind(
            "revoked",
            "timing",
            "alice",
            &revoked.password,
            "192.0.2.1",
            Code::AUTH_ERR,
        ),
        // The controls.
        kind(
            "throttled (control)",
            "timing-throttled",
            "alice",
            &wrong_secret(&active.password),
            "203.0.113.99",
            Code::AUTH_ERR,
        ),
        kind(
            "3-pass row (control)",
            "timing",
            "alice",
            &wrong_secret(&heavy),
            "192.0.2.1",
            Code::AUTH_ERR,
        ),
    ];

    let mut order: Vec<usize> = (0..kinds.len()).collect();
    for round in 0..WARMUP + ROUNDS {
        shuffle(&mut order);
        for &k in &order {
            let k = &mut kinds[k];
            let started = Instant::now();
            let out = s.login(k.service, k.user, k.password.as_bytes(), Some(k.rhost));
            let took = started.elapsed();
            assert_eq!(out.code, k.want, "{}", k.name);
            if round >= WARMUP {
                k.samples.push(took);
            }
        }
    }

    let medians: Vec<(&str, f64)> = kinds
        .iter()
        .map(|k| (k.name, median(&k.samples).as_secs_f64() * 1e3))
        .collect();
    for (name, m) in &medians {
        println!("{name:>22}: median {m:.2} ms of {ROUNDS}");
    }
    let four: Vec<f64> = medians[..4].iter().map(|(_, m)| *m).collect();
    let fastest = four.iter().copied().fold(f64::INFINITY, f64::min);
    let slowest = four.iter().copied().fold(0.0, f64::max);
    println!(
        "largest / smallest of the four: {:.3} (tolerance {TOLERANCE})",
        slowest / fastest
    );
    let (throttled, heavy) = (medians[4].1, medians[5].1);
    assert!(
        throttled * TOLERANCE < fastest,
        "the control that skips hashing was not told apart: {medians:?}"
    );
    assert!(
        heavy > slowest * TOLERANCE,
        "the control that hashes 1.5 times as long was not told apart: {medians:?}"
    );
    assert!(
        slowest <= fastest * TOLERANCE,
        "the four failures do not take the same time: {medians:?}"
    );
}

/// Fisher-Yates with the OS's randomness.
fn shuffle(v: &mut [usize]) {
    for i in (1..v.len()).rev() {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let j = (u64::from_le_bytes(b) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}
