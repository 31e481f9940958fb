//! Argon2's compression function G (RFC 9106, section 3.5) in AVX2 instructions, for
//! apppass-core's's argon2id on CPUs that have them.
//!
//! The argon2 crate leaves G to the compiler's auto-vectorisation, which handles the
//! row rounds well and the column rounds (two words from each of eight rows) poorly: in
//! the same arena a verification took 15.6 ms with the crate's G and takes 12.1 with
//! this one (README, Benchmark). Here the column rounds work on two
//! columns at once, each 256-bit register holding two words of one row for each of two
//! column pairs, so the diagonal step is a byte shift within 128-bit lanes
//! (`vpalignr`) rather than a cross-lane permutation.
//!
//! The `unsafe` here: 256-bit loads and stores inside one 1,024-byte block, and the
//! call into code compiled for AVX2, reachable only once the CPU has said it has AVX2.

use argon2::Block;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `next = G(prev, reference)`, or `next ^= G(prev, reference)` with `xor` (passes after
/// the first, version 0x13).
pub type Compress = fn(prev: &Block, reference: &Block, next: &mut Block, xor: bool);

/// The AVX2 compression, if this CPU can run it.
#[cfg(target_arch = "x86_64")]
pub fn avx2() -> Option<Compress> {
    std::is_x86_feature_detected!("avx2").then_some(compress as Compress)
}

/// The AVX2 compression, if this CPU can run it.
#[cfg(not(target_arch = "x86_64"))]
pub fn avx2() -> Option<Compress> {
    None
}

#[cfg(target_arch = "x86_64")]
fn compress(prev: &Block, reference: &Block, next: &mut Block, xor: bool) {
    // SAFETY: this function is handed out only by `avx2`, after the CPU reported AVX2.
    unsafe { compress_avx2(prev, reference, next, xor) }
}

/// Words `4k..4k + 4` of a block.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn load(b: &Block, k: usize) -> __m256i {
    let words = &b.as_ref()[4 * k..4 * k + 4];
    // SAFETY: `words` is 32 readable bytes; the load has no alignment requirement.
    unsafe { _mm256_loadu_si256(words.as_ptr().cast()) }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn store(b: &mut Block, k: usize, v: __m256i) {
    let words = &mut b.as_mut()[4 * k..4 * k + 4];
    // SAFETY: `words` is 32 writable bytes, borrowed mutably; no alignment requirement.
    unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), v) }
}

/// BlaMka's multiply-add, per 64-bit lane: a + b + 2 * lo32(a) * lo32(b).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn blamka(a: __m256i, b: __m256i) -> __m256i {
    let m = _mm256_mul_epu32(a, b);
    _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(m, m))
}

/// GB on four columns at once (one per 64-bit lane).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn gb(a: &mut __m256i, b: &mut __m256i, c: &mut __m256i, d: &mut __m256i) {
    // Rotations by whole bytes are byte shuffles within each 64-bit word.
    let rot24 = _mm256_setr_epi8(
        3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10, 3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13,
        14, 15, 8, 9, 10,
    );
    let rot16 = _mm256_setr_epi8(
        2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9, 2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12,
        13, 14, 15, 8, 9,
    );
    *a = blamka(*a, *b);
    *d = _mm256_shuffle_epi32(_mm256_xor_si256(*d, *a), 0b10_11_00_01);
    *c = blamka(*c, *d);
    *b = _mm256_shuffle_epi8(_mm256_xor_si256(*b, *c), rot24);
    *a = blamka(*a, *b);
    *d = _mm256_shuffle_epi8(_mm256_xor_si256(*d, *a), rot16);
    *c = blamka(*c, *d);
    let x = _mm256_xor_si256(*b, *c);
    *b = _mm256_xor_si256(_mm256_srli_epi64(x, 63), _mm256_add_epi64(x, x));
}

/// The permutation P on row `i` (words 16i..16i + 16): four registers of four words,
/// the diagonal step by rotating three of them across lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn row(q: &mut [__m256i; 32], i: usize) {
    let (mut a, mut b, mut c, mut d) = (q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]);
    gb(&mut a, &mut b, &mut c, &mut d);
    b = _mm256_permute4x64_epi64(b, 0b00_11_10_01);
    c = _mm256_permute4x64_epi64(c, 0b01_00_11_10);
    d = _mm256_permute4x64_epi64(d, 0b10_01_00_11);
    gb(&mut a, &mut b, &mut c, &mut d);
    q[4 * i] = a;
    q[4 * i + 1] = _mm256_permute4x64_epi64(b, 0b10_01_00_11);
    q[4 * i + 2] = _mm256_permute4x64_epi64(c, 0b01_00_11_10);
    q[4 * i + 3] = _mm256_permute4x64_epi64(d, 0b00_11_10_01);
}

/// P on column pairs 2j and 2j + 1 (words 4j..4j + 4 of every row): in each 128-bit
/// half, register r holds the two words row r gives that pair.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn columns(q: &mut [__m256i; 32], j: usize) {
    let (mut a1, mut a2, b1, b2) = (q[j], q[4 + j], q[8 + j], q[12 + j]);
    let (mut c1, mut c2, d1, d2) = (q[16 + j], q[20 + j], q[24 + j], q[28 + j]);
    let (mut b1, mut b2, mut d1, mut d2) = (b1, b2, d1, d2);
    gb(&mut a1, &mut b1, &mut c1, &mut d1);
    gb(&mut a2, &mut b2, &mut c2, &mut d2);
    let mut e1 = _mm256_alignr_epi8(b2, b1, 8);
    let mut e2 = _mm256_alignr_epi8(b1, b2, 8);
    let mut f1 = _mm256_alignr_epi8(d1, d2, 8);
    let mut f2 = _mm256_alignr_epi8(d2, d1, 8);
    gb(&mut a1, &mut e1, &mut c2, &mut f1);
    gb(&mut a2, &mut e2, &mut c1, &mut f2);
    q[j] = a1;
    q[4 + j] = a2;
    q[8 + j] = _mm256_alignr_epi8(e1, e2, 8);
    q[12 + j] = _mm256_alignr_epi8(e2, e1, 8);
    q[16 + j] = c1;
    q[20 + j] = c2;
    q[24 + j] = _mm256_alignr_epi8(f2, f1, 8);
    q[28 + j] = _mm256_alignr_epi8(f1, f2, 8);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn compress_avx2(prev: &Block, reference: &Block, next: &mut Block, xor: bool) {
    let r: [__m256i; 32] =
        std::array::from_fn(|k| _mm256_xor_si256(load(prev, k), load(reference, k)));
    let mut q = r;
    for i in 0..8 {
        row(&mut q, i);
    }
    for j in 0..4 {
        columns(&mut q, j);
    }
    for k in 0..32 {
        let v = _mm256_xor_si256(q[k], r[k]);
        let v = if xor {
            _mm256_xor_si256(v, load(next, k))
        } else {
            v
        };
        store(next, k, v);
    }
}
