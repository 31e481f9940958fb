//! apppass's argon2id against two other implementations on whatever the fuzzer makes of
//! parameters, passwords, salts, secrets and associated data: the argon2 crate (every
//! input) and the C reference as Debian ships it, libargon2 (inputs it can take through
//! `argon2id_hash_raw`: no secret, no associated data). Every compression this CPU can
//! run (AVX-512, AVX2) must give the same bytes as both.
#![no_main]

use apppass_argon2::argon2id::{self, Input};
use apppass_argon2::blamka;
use argon2::{Algorithm, Argon2, AssociatedData, Block, ParamsBuilder, Version};
use libfuzzer_sys::fuzz_target;

mod libargon2 {
    use std::ffi::{c_int, c_void};

    #[link(name = "argon2")]
    unsafe extern "C" {
        fn argon2id_hash_raw(
            t_cost: u32,
            m_cost: u32,
            parallelism: u32,
            pwd: *const c_void,
            pwdlen: usize,
            salt: *const c_void,
            saltlen: usize,
            hash: *mut c_void,
            hashlen: usize,
        ) -> c_int;
    }

    /// libargon2's argon2id of `password` and `salt` into `out`; `None` if it refuses.
    pub fn hash(
        t: u32,
        m: u32,
        p: u32,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Option<()> {
        // SAFETY: each pointer comes with its slice's own length, `out` is writable for
        // all of its length, and libargon2 reads and writes nothing beyond them.
        let rc = unsafe {
            argon2id_hash_raw(
                t,
                m,
                p,
                password.as_ptr().cast(),
                password.len(),
                salt.as_ptr().cast(),
                salt.len(),
                out.as_mut_ptr().cast(),
                out.len(),
            )
        };
        (rc == 0).then_some(())
    }
}

/// Takes a length byte, then that many bytes (fewer if the input ends).
fn take<'a>(data: &mut &'a [u8], max: u8, min: usize) -> Option<&'a [u8]> {
    let (&n, rest) = data.split_first()?;
    let n = (min + usize::from(n % max)).min(rest.len());
    let (part, rest) = rest.split_at(n);
    *data = rest;
    (part.len() >= min).then_some(part)
}

fuzz_target!(|data: &[u8]| {
    let Some((head, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let p = u32::from(head[0] % 4) + 1;
    let t = u32::from(head[1] % 3) + 1;
    // At least 8p KiB, as argon2id asks; up to 255 KiB more, past the lanes' rounding.
    let m = 8 * p + u32::from(head[2]);
    // Short, exactly 64, and past 64 bytes, where H' chains.
    let out_len = 4 + usize::from(head[3] % 127);
    let (Some(password), Some(salt)) = (take(&mut rest, 64, 0), take(&mut rest, 32, 8)) else {
        return;
    };
    let secret = take(&mut rest, 16, 0).unwrap_or_default();
    let ad = take(&mut rest, 16, 0).unwrap_or_default();
    let Ok(params) = ParamsBuilder::new()
        .m_cost(m)
        .t_cost(t)
        .p_cost(p)
        .output_len(out_len)
        .data(AssociatedData::new(ad).unwrap())
        .build()
    else {
        return;
    };

    let mut crate_out = vec![0u8; out_len];
    Argon2::new_with_secret(secret, Algorithm::Argon2id, Version::V0x13, params.clone())
        .unwrap()
        .hash_password_into(password, salt, &mut crate_out)
        .unwrap();
    let reference = (secret.is_empty() && ad.is_empty()).then(|| {
        let mut out = vec![0u8; out_len];
        libargon2::hash(t, m, p, password, salt, &mut out).expect("libargon2 refused");
        out
    });
    if let Some(c) = &reference {
        assert_eq!(c, &crate_out, "the argon2 crate and libargon2 disagree");
    }

    let input = Input {
        password,
        salt,
        secret,
        data: ad,
    };
    let mut memory = vec![Block::new(); params.block_count()];
    for compress in [blamka::avx512(), blamka::avx2()].into_iter().flatten() {
        let mut ours = vec![0u8; out_len];
        argon2id::hash(&input, &params, &mut ours, &mut memory, compress).unwrap();
        assert_eq!(
            ours, crate_out,
            "{compress:?}: not the argon2 crate's bytes"
        );
    }
});
