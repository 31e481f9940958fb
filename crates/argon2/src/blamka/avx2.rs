//! G in AVX2. The row rounds hold a row's sixteen words in four `ymm` registers, and
//! work on two rows at a time. The column rounds take two column pairs at a time, each
//! 256-bit register holding two words of one row for each of the two pairs, so that
//! the diagonal step is a byte shift within 128-bit lanes (`vpalignr`) rather than a
//! cross-lane permutation. A block is twice what the sixteen `ymm` registers hold, so
//! it lives on the stack between rounds; the final XOR with the two inputs reloads
//! them (they are in L1) rather than keeping a copy there too.

use std::arch::x86_64::*;

use argon2::Block;

use crate::argon2id::Ahead;

/// Words `4k..4k + 4` of a block.
#[target_feature(enable = "avx2")]
#[inline]
fn load(b: &Block, k: usize) -> __m256i {
    let words = &b.as_ref()[4 * k..4 * k + 4];
    // SAFETY: `words` is 32 readable bytes (a checked slice); the load has no alignment
    // requirement, and this function runs only where AVX2 is enabled.
    unsafe { _mm256_loadu_si256(words.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn store(b: &mut Block, k: usize, v: __m256i) {
    let words = &mut b.as_mut()[4 * k..4 * k + 4];
    // SAFETY: `words` is 32 writable bytes, borrowed mutably (a checked slice); no
    // alignment requirement; AVX2 is enabled here.
    unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), v) }
}

/// BlaMka's multiply-add, per 64-bit lane: a + b + 2 * lo32(a) * lo32(b).
#[target_feature(enable = "avx2")]
#[inline]
fn blamka(a: __m256i, b: __m256i) -> __m256i {
    let m = _mm256_mul_epu32(a, b);
    _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(m, m))
}

/// Rotations of each 64-bit word right by 32, 24, 16 and 63 bits: the first three are
/// byte shuffles, the last a shift and an add.
#[target_feature(enable = "avx2")]
#[inline]
fn ror32(x: __m256i) -> __m256i {
    _mm256_shuffle_epi32::<0b10_11_00_01>(x)
}

#[target_feature(enable = "avx2")]
#[inline]
fn ror24(x: __m256i) -> __m256i {
    let rot24 = _mm256_setr_epi8(
        3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10, 3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13,
        14, 15, 8, 9, 10,
    );
    _mm256_shuffle_epi8(x, rot24)
}

#[target_feature(enable = "avx2")]
#[inline]
fn ror16(x: __m256i) -> __m256i {
    let rot16 = _mm256_setr_epi8(
        2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9, 2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12,
        13, 14, 15, 8, 9,
    );
    _mm256_shuffle_epi8(x, rot16)
}

#[target_feature(enable = "avx2")]
#[inline]
fn ror63(x: __m256i) -> __m256i {
    _mm256_xor_si256(_mm256_srli_epi64::<63>(x), _mm256_add_epi64(x, x))
}

/// GB on `N` sets of four columns (one per 64-bit lane), step by step across the
/// sets: each step waits on the one before in its set, so the CPU needs the other
/// sets' steps at hand to keep busy, and in program order, not behind a whole GB.
#[target_feature(enable = "avx2")]
#[inline]
fn gb<const N: usize>(
    a: &mut [__m256i; N],
    b: &mut [__m256i; N],
    c: &mut [__m256i; N],
    d: &mut [__m256i; N],
) {
    for i in 0..N {
        a[i] = blamka(a[i], b[i]);
    }
    for i in 0..N {
        d[i] = ror32(_mm256_xor_si256(d[i], a[i]));
    }
    for i in 0..N {
        c[i] = blamka(c[i], d[i]);
    }
    for i in 0..N {
        b[i] = ror24(_mm256_xor_si256(b[i], c[i]));
    }
    for i in 0..N {
        a[i] = blamka(a[i], b[i]);
    }
    for i in 0..N {
        d[i] = ror16(_mm256_xor_si256(d[i], a[i]));
    }
    for i in 0..N {
        c[i] = blamka(c[i], d[i]);
    }
    for i in 0..N {
        b[i] = ror63(_mm256_xor_si256(b[i], c[i]));
    }
}

/// P on rows `I` and `I + 1` (words 16I..16I + 32): four registers of four words per
/// row, the diagonal step by rotating three of them across lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn rows<const I: usize>(q: &mut [__m256i; 32]) {
    let (r, s) = (4 * I, 4 * I + 4);
    let mut a = [q[r], q[s]];
    let mut b = [q[r + 1], q[s + 1]];
    let mut c = [q[r + 2], q[s + 2]];
    let mut d = [q[r + 3], q[s + 3]];
    gb(&mut a, &mut b, &mut c, &mut d);
    for i in 0..2 {
        b[i] = _mm256_permute4x64_epi64::<0b00_11_10_01>(b[i]);
        c[i] = _mm256_permute4x64_epi64::<0b01_00_11_10>(c[i]);
        d[i] = _mm256_permute4x64_epi64::<0b10_01_00_11>(d[i]);
    }
    gb(&mut a, &mut b, &mut c, &mut d);
    for (i, at) in [r, s].into_iter().enumerate() {
        q[at] = a[i];
        q[at + 1] = _mm256_permute4x64_epi64::<0b10_01_00_11>(b[i]);
        q[at + 2] = _mm256_permute4x64_epi64::<0b01_00_11_10>(c[i]);
        q[at + 3] = _mm256_permute4x64_epi64::<0b00_11_10_01>(d[i]);
    }
}

/// P on column pairs `2J` and `2J + 1` (words 4J..4J + 4 of every row): in each
/// 128-bit half, register `q[4r + J]` holds the two words row `r` gives that pair.
/// Even rows in set 0, odd rows in set 1.
#[target_feature(enable = "avx2")]
#[inline]
fn columns<const J: usize>(q: &mut [__m256i; 32]) {
    let mut a = [q[J], q[4 + J]];
    let mut b = [q[8 + J], q[12 + J]];
    let mut c = [q[16 + J], q[20 + J]];
    let mut d = [q[24 + J], q[28 + J]];
    gb(&mut a, &mut b, &mut c, &mut d);
    let mut e = [
        _mm256_alignr_epi8::<8>(b[1], b[0]),
        _mm256_alignr_epi8::<8>(b[0], b[1]),
    ];
    let mut c = [c[1], c[0]];
    let mut f = [
        _mm256_alignr_epi8::<8>(d[0], d[1]),
        _mm256_alignr_epi8::<8>(d[1], d[0]),
    ];
    gb(&mut a, &mut e, &mut c, &mut f);
    q[J] = a[0];
    q[4 + J] = a[1];
    q[8 + J] = _mm256_alignr_epi8::<8>(e[0], e[1]);
    q[12 + J] = _mm256_alignr_epi8::<8>(e[1], e[0]);
    q[16 + J] = c[1];
    q[20 + J] = c[0];
    q[24 + J] = _mm256_alignr_epi8::<8>(f[1], f[0]);
    q[28 + J] = _mm256_alignr_epi8::<8>(f[0], f[1]);
}

/// G, handing `ahead` the new block's first word once column pairs 0 and 1 have it.
#[target_feature(enable = "avx2")]
pub(super) fn compress(
    prev: &Block,
    reference: &Block,
    next: &mut Block,
    xor: bool,
    ahead: &mut Ahead<'_>,
) {
    let mut q: [__m256i; 32] =
        std::array::from_fn(|k| _mm256_xor_si256(load(prev, k), load(reference, k)));
    // Spelled out, not looped, so that every index is a constant.
    rows::<0>(&mut q);
    rows::<2>(&mut q);
    rows::<4>(&mut q);
    rows::<6>(&mut q);
    columns::<0>(&mut q);
    let out = |next: &Block, k: usize, q: __m256i| {
        let v = _mm256_xor_si256(q, _mm256_xor_si256(load(prev, k), load(reference, k)));
        if xor {
            _mm256_xor_si256(v, load(next, k))
        } else {
            v
        }
    };
    let first = out(next, 0, q[0]);
    ahead.first_word(_mm_cvtsi128_si64(_mm256_castsi256_si128(first)) as u64);
    columns::<1>(&mut q);
    columns::<2>(&mut q);
    columns::<3>(&mut q);
    store(next, 0, first);
    for (k, q) in q.iter().enumerate().skip(1) {
        let v = out(next, k, *q);
        store(next, k, v);
    }
}
