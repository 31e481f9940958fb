//! Argon2's compression function G (RFC 9106, section 3.5) in SIMD instructions, for
//! [`crate::argon2id`] on CPUs that have them: AVX-512 where the CPU has it, else AVX2.
//!
//! The argon2 crate leaves G to the compiler's auto-vectorisation, which handles the
//! row rounds well and the column rounds (two words from each of eight rows) poorly;
//! here both keep whole column pairs in register lanes (README, Benchmark).
//!
//! The `unsafe` here: SIMD loads and stores inside one 1,024-byte block, and calls into
//! code compiled for AVX2 or AVX-512. A [`Compress`] is made only after the CPU said it
//! has the instructions, so it is the proof that calling that code is sound.

use argon2::Block;

use crate::argon2id::Ahead;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// A compression G this CPU can run. Only [`avx2`], [`avx512`] and [`best`] make one,
/// once the CPU has reported the instructions it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compress(Simd);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The fastest compression this CPU can run, if it can run any of these: what
/// [`crate::Hasher`] and [`crate::compute`] use.
pub fn best() -> Option<Compress> {
    avx512().or_else(avx2)
}

/// The AVX2 compression, if this CPU can run it.
pub fn avx2() -> Option<Compress> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        return Some(Compress(Simd::Avx2));
    }
    None
}

/// The AVX-512 compression (F and BW), if this CPU can run it. The detection also
/// checks that the OS saves the `zmm` registers.
pub fn avx512() -> Option<Compress> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
        return Some(Compress(Simd::Avx512));
    }
    None
}

impl Compress {
    /// `next = G(prev, reference)`, or `next ^= G(prev, reference)` with `xor` (passes
    /// after the first, version 0x13).
    pub fn compress(self, prev: &Block, reference: &Block, next: &mut Block, xor: bool) {
        self.compress_ahead(prev, reference, next, xor, &mut Ahead::nothing());
    }

    /// [`Compress::compress`], handing [`Ahead::first_word`] the first word of the new
    /// `next` as soon as it is known, before the rest is.
    pub(crate) fn compress_ahead(
        self,
        prev: &Block,
        reference: &Block,
        next: &mut Block,
        xor: bool,
        ahead: &mut Ahead<'_>,
    ) {
        match self.0 {
            // SAFETY: `Compress`'s field is private to this module, where only `avx2`
            // makes one holding `Avx2`, once the CPU has reported AVX2.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { avx2::compress(prev, reference, next, xor, ahead) },
            // SAFETY: likewise, `Avx512` only by `avx512`, once the CPU (and OS) has
            // reported AVX-512 F and BW.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { avx512::compress(prev, reference, next, xor, ahead) },
        }
    }
}

/// Every compression this CPU can run. Under CI a CPU without AVX2 fails the test that
/// asks, rather than leaving the compression every x86-64 server since 2013 runs
/// untested; without AVX-512 its path is said to be untested here (it is then never
/// chosen either).
#[cfg(test)]
pub(crate) fn every_for_tests() -> Vec<Compress> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        avx2().is_some() || !ci,
        "this CPU has no AVX2: its compression would go untested under CI"
    );
    if avx512().is_none() {
        eprintln!("note: this CPU has no AVX-512 F and BW: that compression is not tested here");
    }
    [avx2(), avx512()].into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// G as RFC 9106 (sections 3.5 and 3.6) writes it, a word at a time. If it were
    /// wrong, the SIMD compressions (held to the RFC's vector and the argon2 crate in
    /// `argon2id`) would disagree with it.
    fn g(x: &Block, y: &Block) -> Block {
        fn blamka(a: u64, b: u64) -> u64 {
            let m = (a & 0xffff_ffff) * (b & 0xffff_ffff);
            a.wrapping_add(b).wrapping_add(m.wrapping_mul(2))
        }
        fn gb(v: &mut [u64; 16], a: usize, b: usize, c: usize, d: usize) {
            for (r1, r2) in [(32, 24), (16, 63)] {
                v[a] = blamka(v[a], v[b]);
                v[d] = (v[d] ^ v[a]).rotate_right(r1);
                v[c] = blamka(v[c], v[d]);
                v[b] = (v[b] ^ v[c]).rotate_right(r2);
            }
        }
        /// P on the sixteen words at `at` (eight 16-byte registers).
        fn p(q: &mut [u64], at: [usize; 16]) {
            let mut v: [u64; 16] = std::array::from_fn(|i| q[at[i]]);
            for (a, b, c, d) in [(0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15)] {
                gb(&mut v, a, b, c, d);
            }
            for (a, b, c, d) in [(0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)] {
                gb(&mut v, a, b, c, d);
            }
            for i in 0..16 {
                q[at[i]] = v[i];
            }
        }
        let mut r = *x;
        r ^= y;
        let mut q = r;
        for i in 0..8 {
            p(q.as_mut(), std::array::from_fn(|k| 16 * i + k));
        }
        for i in 0..8 {
            p(
                q.as_mut(),
                std::array::from_fn(|k| 16 * (k / 2) + 2 * i + k % 2),
            );
        }
        q ^= &r;
        q
    }

    fn block(words: &[u64]) -> Block {
        let mut b = Block::new();
        b.as_mut().copy_from_slice(words);
        b
    }

    fn words() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(any::<u64>(), 128)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every compression gives G's bytes, overwriting or XORing into `next`.
        #[test]
        fn every_compression_is_g(x in words(), y in words(), old in words(), xor: bool) {
            let (x, y, old) = (block(&x), block(&y), block(&old));
            let mut want = g(&x, &y);
            if xor {
                want ^= &old;
            }
            for compress in every_for_tests() {
                let mut next = old;
                compress.compress(&x, &y, &mut next, xor);
                prop_assert_eq!(next.as_ref(), want.as_ref(), "{:?} xor={}", compress, xor);
            }
        }
    }
}
