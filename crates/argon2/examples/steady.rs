//! Steady-state argon2id timings, to set beside the C reference's
//! (`benches/login/argon2_ref.c steady`, with `ARGON2_REF_CPU=1` for the same columns):
//!
//!   steady phc PASSWORD [M T P]          the PHC string to give the C reference
//!   steady WHICH PASSWORD N [M T P]      N computations in a row, one line each:
//!                                        wall-clock ms, then this thread's CPU ms
//!
//! WHICH: `ours` (a kept Hasher, the daemon's way), `crate` (the argon2 crate as it
//! comes, memory allocated per computation), `crate-kept` (the crate in a kept arena),
//! `avx2`, `avx512` (apppass's fill in a kept arena with that compression).
//! Defaults: m = 19456 KiB, t = 2, p = 1, the salt below, 32 bytes out.

use std::time::Instant;

use apppass_argon2::{Arena, Hasher, argon2id, blamka};
use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Params, Version};

const SALT: &[u8] = b"apppass-steady-salt";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: steady phc PASSWORD [M T P] | steady ours|crate|crate-kept|avx2|avx512 PASSWORD N [M T P]";
    let (which, password) = match (args.first(), args.get(1)) {
        (Some(w), Some(p)) => (w.as_str(), p.as_bytes()),
        _ => return eprintln!("{usage}"),
    };
    let number = |i: usize, default: u32| args.get(i).map_or(default, |a| a.parse().unwrap());
    let rest = if which == "phc" { 2 } else { 3 };
    let params = Params::new(
        number(rest, 19456),
        number(rest + 1, 2),
        number(rest + 2, 1),
        Some(32),
    )
    .unwrap();
    let crate_argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    if which == "phc" {
        let phc = crate_argon2
            .hash_password_with_salt(password, SALT)
            .unwrap();
        return println!("{phc}");
    }
    let n: usize = number(2, 1) as usize;
    let mut out = [0u8; 32];
    let mut hasher = Hasher::new();
    let mut arena = Arena::new(params.block_count()).unwrap();
    for _ in 0..n {
        let (start, cpu) = (Instant::now(), thread_cpu_ms());
        match which {
            "ours" => hasher.compute(&params, password, SALT, &mut out).unwrap(),
            "crate" => crate_argon2
                .hash_password_into(password, SALT, &mut out)
                .unwrap(),
            "avx2" | "avx512" => {
                let compress = if which == "avx2" {
                    blamka::avx2()
                } else {
                    blamka::avx512()
                };
                let input = argon2id::Input {
                    password,
                    salt: SALT,
                    secret: &[],
                    data: &[],
                };
                argon2id::hash(&input, &params, &mut out, arena.blocks(), compress.unwrap())
                    .unwrap()
            }
            "crate-kept" => crate_argon2
                .hash_password_into_with_memory(password, SALT, &mut out, arena.blocks())
                .unwrap(),
            _ => return eprintln!("{usage}"),
        }
        let wall = start.elapsed().as_secs_f64() * 1e3;
        println!("{wall:.4} {:.4}", thread_cpu_ms() - cpu);
    }
    // All three must agree, or the timings compare different work.
    eprintln!(
        "{}",
        out.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
}

/// This thread's CPU time: on a shared machine, less disturbed than the wall clock by
/// other processes taking the CPU.
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the clock id is a constant Linux has.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}
