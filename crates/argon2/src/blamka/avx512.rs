//! G in AVX-512 (F and BW): the whole block in 16 of the 32 `zmm` registers, with the
//! other 16 for the work, so nothing goes to the stack.
//!
//! Register `z[k]` holds words `8k..8k + 8`, as the block lies in memory: row `r` is
//! `z[2r]` and `z[2r + 1]`, and each 128-bit lane is one of the row's eight word
//! pairs. The column rounds work in that layout: lane `l` of `z[2r + g]` is row `r`'s
//! pair `4g + l`, so lane `l` of the eight registers with one `g` is column pair
//! `4g + l` whole, and its diagonal step is a byte shift within lanes (`vpalignr`), as
//! in the AVX2 code. The row rounds pair two rows, the first four words of each in one
//! register, and so cost two shuffles per register on the way in and two on the way
//! out. Rotations are single instructions (`vprorq`); the final XOR with the two
//! inputs reloads them (they are in L1) rather than keeping a copy in registers.
//!
//! G is a chain of dependent steps; what keeps the CPU busy is working on independent
//! sets of registers in turn: four row pairs at once, then two sets of columns.

use std::arch::x86_64::*;

use argon2::Block;

use crate::argon2id::Ahead;

/// Words `8k..8k + 8` of a block.
#[target_feature(enable = "avx512f")]
#[inline]
fn load(b: &Block, k: usize) -> __m512i {
    let words = &b.as_ref()[8 * k..8 * k + 8];
    // SAFETY: `words` is 64 readable bytes (a checked slice); the load has no alignment
    // requirement, and this function runs only where AVX-512 F is enabled.
    unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f")]
#[inline]
fn store(b: &mut Block, k: usize, v: __m512i) {
    let words = &mut b.as_mut()[8 * k..8 * k + 8];
    // SAFETY: `words` is 64 writable bytes, borrowed mutably (a checked slice); no
    // alignment requirement; AVX-512 F is enabled here.
    unsafe { _mm512_storeu_si512(words.as_mut_ptr().cast(), v) }
}

/// BlaMka's multiply-add, per 64-bit lane: a + b + 2 * lo32(a) * lo32(b).
#[target_feature(enable = "avx512f")]
#[inline]
fn blamka(a: __m512i, b: __m512i) -> __m512i {
    let m = _mm512_mul_epu32(a, b);
    _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(m, m))
}

/// GB on `N` sets of eight columns (one per 64-bit lane), step by step across the
/// sets: each step waits on the one before in its set, so the CPU needs the other
/// sets' steps at hand to keep busy, and in program order, not behind a whole GB.
#[target_feature(enable = "avx512f")]
#[inline]
fn gb<const N: usize>(
    a: &mut [__m512i; N],
    b: &mut [__m512i; N],
    c: &mut [__m512i; N],
    d: &mut [__m512i; N],
) {
    for i in 0..N {
        a[i] = blamka(a[i], b[i]);
    }
    for i in 0..N {
        d[i] = _mm512_ror_epi64::<32>(_mm512_xor_si512(d[i], a[i]));
    }
    for i in 0..N {
        c[i] = blamka(c[i], d[i]);
    }
    for i in 0..N {
        b[i] = _mm512_ror_epi64::<24>(_mm512_xor_si512(b[i], c[i]));
    }
    for i in 0..N {
        a[i] = blamka(a[i], b[i]);
    }
    for i in 0..N {
        d[i] = _mm512_ror_epi64::<16>(_mm512_xor_si512(d[i], a[i]));
    }
    for i in 0..N {
        c[i] = blamka(c[i], d[i]);
    }
    for i in 0..N {
        b[i] = _mm512_ror_epi64::<63>(_mm512_xor_si512(b[i], c[i]));
    }
}

/// P on all eight rows, two by two: each 256-bit half of `a[i]`, `b[i]`, `c[i]`,
/// `d[i]` holds four words of row `2i` or `2i + 1`, so the diagonal step rotates words
/// within the halves.
#[target_feature(enable = "avx512f")]
#[inline]
fn rows(z: &mut [__m512i; 16]) {
    // Lanes 0 and 1 of the first row, then lanes 0 and 1 of the second (or 2 and 3).
    let mut a: [__m512i; 4] =
        std::array::from_fn(|i| _mm512_shuffle_i64x2::<0b01_00_01_00>(z[4 * i], z[4 * i + 2]));
    let mut b: [__m512i; 4] =
        std::array::from_fn(|i| _mm512_shuffle_i64x2::<0b11_10_11_10>(z[4 * i], z[4 * i + 2]));
    let mut c: [__m512i; 4] =
        std::array::from_fn(|i| _mm512_shuffle_i64x2::<0b01_00_01_00>(z[4 * i + 1], z[4 * i + 3]));
    let mut d: [__m512i; 4] =
        std::array::from_fn(|i| _mm512_shuffle_i64x2::<0b11_10_11_10>(z[4 * i + 1], z[4 * i + 3]));
    gb(&mut a, &mut b, &mut c, &mut d);
    for i in 0..4 {
        b[i] = _mm512_permutex_epi64::<0b00_11_10_01>(b[i]);
        c[i] = _mm512_permutex_epi64::<0b01_00_11_10>(c[i]);
        d[i] = _mm512_permutex_epi64::<0b10_01_00_11>(d[i]);
    }
    gb(&mut a, &mut b, &mut c, &mut d);
    for i in 0..4 {
        b[i] = _mm512_permutex_epi64::<0b10_01_00_11>(b[i]);
        c[i] = _mm512_permutex_epi64::<0b01_00_11_10>(c[i]);
        d[i] = _mm512_permutex_epi64::<0b00_11_10_01>(d[i]);
        z[4 * i] = _mm512_shuffle_i64x2::<0b01_00_01_00>(a[i], b[i]);
        z[4 * i + 2] = _mm512_shuffle_i64x2::<0b11_10_11_10>(a[i], b[i]);
        z[4 * i + 1] = _mm512_shuffle_i64x2::<0b01_00_01_00>(c[i], d[i]);
        z[4 * i + 3] = _mm512_shuffle_i64x2::<0b11_10_11_10>(c[i], d[i]);
    }
}

/// P on column pairs `4g..4g + 4`: in each 128-bit lane, register `z[2r + g]` holds
/// the two words row `r` gives that pair. Even rows in set 0, odd rows in set 1.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn columns<const G: usize>(z: &mut [__m512i; 16]) {
    let g = G;
    let mut a = [z[g], z[2 + g]];
    let mut b = [z[4 + g], z[6 + g]];
    let mut c = [z[8 + g], z[10 + g]];
    let mut d = [z[12 + g], z[14 + g]];
    gb(&mut a, &mut b, &mut c, &mut d);
    let mut e = [
        _mm512_alignr_epi8::<8>(b[1], b[0]),
        _mm512_alignr_epi8::<8>(b[0], b[1]),
    ];
    let mut c = [c[1], c[0]];
    let mut f = [
        _mm512_alignr_epi8::<8>(d[0], d[1]),
        _mm512_alignr_epi8::<8>(d[1], d[0]),
    ];
    gb(&mut a, &mut e, &mut c, &mut f);
    z[g] = a[0];
    z[2 + g] = a[1];
    z[4 + g] = _mm512_alignr_epi8::<8>(e[0], e[1]);
    z[6 + g] = _mm512_alignr_epi8::<8>(e[1], e[0]);
    z[8 + g] = c[1];
    z[10 + g] = c[0];
    z[12 + g] = _mm512_alignr_epi8::<8>(f[1], f[0]);
    z[14 + g] = _mm512_alignr_epi8::<8>(f[0], f[1]);
}

/// G, handing `ahead` the new block's first word once column pairs 0 to 3 have it.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn compress(
    prev: &Block,
    reference: &Block,
    next: &mut Block,
    xor: bool,
    ahead: &mut Ahead<'_>,
) {
    let mut z: [__m512i; 16] =
        std::array::from_fn(|k| _mm512_xor_si512(load(prev, k), load(reference, k)));
    // Every index is a constant (after unrolling): the arrays live in registers.
    rows(&mut z);
    columns::<0>(&mut z);
    let out = |next: &Block, k: usize, q: __m512i| {
        // 0x96: the XOR of all three operands.
        let v = _mm512_ternarylogic_epi64::<0x96>(q, load(prev, k), load(reference, k));
        if xor {
            _mm512_xor_si512(v, load(next, k))
        } else {
            v
        }
    };
    let first = out(next, 0, z[0]);
    ahead.first_word(_mm_cvtsi128_si64(_mm512_castsi512_si128(first)) as u64);
    columns::<1>(&mut z);
    store(next, 0, first);
    for (k, q) in z.iter().enumerate().skip(1) {
        let v = out(next, k, *q);
        store(next, k, v);
    }
}
