//! What apppass hashes verifies with another implementation of argon2id: the C
//! reference, as Debian's libargon2 ships it. At the default parameters and at others
//! with more passes and lanes (apppass computes these with its own argon2id, crates/argon2,
//! in AVX-512 or AVX2, whichever is the best the CPU has); a wrong password does not
//! verify.

mod common;
mod support;

use std::path::PathBuf;
use std::process::Command;

use apppass_core::secret::{HashParams, NewPassword};

/// `benches/login/argon2_ref.c` built against libargon2 (package libargon2-dev).
fn reference() -> Option<PathBuf> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/login/argon2_ref.c");
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("argon2_ref_interop");
    let built = Command::new("cc")
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .arg("-largon2")
        .status()
        .is_ok_and(|s| s.success());
    built.then_some(bin)
}

#[test]
fn libargon2_verifies_what_apppass_hashes() {
    let Some(bin) = reference() else {
        common::require(false, "cc and libargon2 (apt-get install libargon2-dev)");
        return;
    };
    let params = [
        HashParams::default(),
        HashParams {
            m_kib: 64,
            t: 1,
            p: 1,
        },
        HashParams {
            m_kib: 1000,
            t: 3,
            p: 2,
        },
        HashParams {
            m_kib: 4096,
            t: 2,
            p: 4,
        },
    ];
    for p in params {
        let pw = NewPassword::generate().unwrap();
        let phc = pw.hash(p).unwrap();
        let password = pw.display().replace('-', "");
        let verify = |password: &str| {
            Command::new(&bin)
                .args(["first", &phc, password])
                .output()
                .unwrap()
        };
        let right = verify(&password);
        assert!(
            right.status.success(),
            "{phc}: {}",
            String::from_utf8_lossy(&right.stderr)
        );
        let wrong = verify(&support::wrong_secret(&password));
        assert_eq!(
            wrong.status.code(),
            Some(1),
            "{phc} verified a wrong password"
        );
    }
}
