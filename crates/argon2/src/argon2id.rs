//! Argon2id, version 0x13 (RFC 9106), computed in memory the caller provides with a
//! compression function the caller chooses: one of [`crate::blamka`]'s.
//!
//! The argon2 crate still checks parameters and reads and writes PHC strings, and
//! computes the hash where the CPU has neither AVX2 nor AVX-512. The tests hold this to
//! the crate and to RFC 9106's test vector, with every compression, so that a hash
//! stays verifiable by any implementation.

use argon2::{Block, Params};
use blake2::Blake2bVarCore;
use blake2::digest::block_api::{UpdateCore, VariableOutputCore};
use blake2::digest::block_buffer::LazyBuffer;
use zeroize::Zeroize;

use crate::blamka::Compress;

const SYNC_POINTS: usize = 4;
const VERSION: u32 = 0x13;
/// Argon2's type number for argon2id.
const ARGON2ID: u32 = 2;
const WORDS: usize = 128;

/// What is hashed: the password and salt, and the optional secret key and associated
/// data of RFC 9106 (apppass uses neither; the test vector does).
pub struct Input<'a> {
    pub password: &'a [u8],
    pub salt: &'a [u8],
    pub secret: &'a [u8],
    pub data: &'a [u8],
}

/// Blocks per lane and per segment: the argon2 crate's `Params::block_count` (m
/// rounded down to a multiple of 4p, at least 8p) split over the lanes and sync points.
fn lane_length(params: &Params) -> usize {
    params.block_count() / params.p_cost() as usize
}

fn segment_length(params: &Params) -> usize {
    lane_length(params) / SYNC_POINTS
}

/// Why a computation could not run: memory or output of the wrong size. Never a panic.
#[derive(Debug, PartialEq, Eq)]
pub struct BadInput;

/// Fills `out` with argon2id of `input` at `params` (whose output length is `out`'s),
/// in `memory` (at least `params.block_count()` blocks; their contents do not matter).
pub fn hash(
    input: &Input<'_>,
    params: &Params,
    out: &mut [u8],
    memory: &mut [Block],
    compress: Compress,
) -> Result<(), BadInput> {
    if out.len() < 4 || u32::try_from(out.len()).is_err() {
        return Err(BadInput);
    }
    let memory = memory.get_mut(..params.block_count()).ok_or(BadInput)?;
    let mut h0 = initial_hash(input, params, out.len())?;
    let lanes = params.p_cost() as usize;
    let lane_length = lane_length(params);
    let mut bytes = [0u8; 1024];
    for lane in 0..lanes {
        let lane_bytes = u32::try_from(lane).map_err(|_| BadInput)?.to_le_bytes();
        for column in 0..2u32 {
            h_prime(&mut bytes, &[&h0, &column.to_le_bytes(), &lane_bytes]);
            let block = &mut memory[lane * lane_length + column as usize];
            for (word, chunk) in block.as_mut().iter_mut().zip(bytes.chunks_exact(8)) {
                *word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            }
        }
    }
    h0.zeroize();
    for pass in 0..params.t_cost() as usize {
        for slice in 0..SYNC_POINTS {
            for lane in 0..lanes {
                fill_segment(memory, params, pass, slice, lane, compress);
            }
        }
    }
    let mut last = memory[lane_length - 1];
    for lane in 1..lanes {
        last ^= &memory[lane * lane_length + lane_length - 1];
    }
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(last.as_ref()) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    h_prime(out, &[&bytes]);
    bytes.zeroize();
    last.as_mut().zeroize();
    Ok(())
}

/// H0: BLAKE2b-512 of the parameters and inputs, each with its length.
fn initial_hash(input: &Input<'_>, params: &Params, out_len: usize) -> Result<[u8; 64], BadInput> {
    let len = |b: &[u8]| {
        u32::try_from(b.len())
            .map(u32::to_le_bytes)
            .map_err(|_| BadInput)
    };
    let out_len = u32::try_from(out_len).map_err(|_| BadInput)?;
    let words = [
        params.p_cost(),
        out_len,
        params.m_cost(),
        params.t_cost(),
        VERSION,
        ARGON2ID,
    ]
    .map(u32::to_le_bytes);
    let parts = [input.password, input.salt, input.secret, input.data];
    let lengths = [
        len(parts[0])?,
        len(parts[1])?,
        len(parts[2])?,
        len(parts[3])?,
    ];
    let mut h0 = [0u8; 64];
    blake2b_var(
        &mut h0,
        words.iter().map(|w| &w[..]).chain(
            lengths
                .iter()
                .zip(parts)
                .flat_map(|(l, part)| [&l[..], part]),
        ),
    );
    Ok(h0)
}

/// H', the variable-length hash: BLAKE2b of the length and input, chained in 32-byte
/// steps for outputs longer than 64 bytes.
fn h_prime(out: &mut [u8], inputs: &[&[u8]]) {
    let len = u32::try_from(out.len()).unwrap_or(u32::MAX).to_le_bytes();
    let parts = std::iter::once(&len[..]).chain(inputs.iter().copied());
    if out.len() <= 64 {
        blake2b_var(out, parts);
        return;
    }
    let mut v = [0u8; 64];
    blake2b_var(&mut v, parts);
    out[..32].copy_from_slice(&v[..32]);
    let mut at = 32;
    let mut previous = [0u8; 64];
    while out.len() - at > 64 {
        previous = v;
        blake2b_var(&mut v, [&previous[..]]);
        out[at..at + 32].copy_from_slice(&v[..32]);
        at += 32;
    }
    blake2b_var(&mut out[at..], [&v[..]]);
    v.zeroize();
    previous.zeroize();
}

/// BLAKE2b with an output of `out.len()` (1 to 64) bytes.
fn blake2b_var<'a>(out: &mut [u8], inputs: impl IntoIterator<Item = &'a [u8]>) {
    let Ok(mut h) = Blake2bVarCore::new(out.len()) else {
        return;
    };
    let mut buffer = LazyBuffer::new(&[]);
    for part in inputs {
        buffer.digest_blocks(part, |blocks| h.update_blocks(blocks));
    }
    let mut full = Default::default();
    h.finalize_variable_core(&mut buffer, &mut full);
    out.copy_from_slice(&full[..out.len()]);
    full.zeroize();
}

/// One segment of one lane in one pass: where its blocks take their references from
/// (RFC 9106, section 3.4).
struct Segment {
    pass: usize,
    slice: usize,
    lane: usize,
    lanes: usize,
    lane_length: usize,
    segment_length: usize,
}

impl Segment {
    /// The block that block `index` of the segment refers to, given its pseudo-random
    /// word.
    fn reference(&self, index: usize, pseudo_random: u64) -> usize {
        let (pass, slice, segment_length, lane_length) =
            (self.pass, self.slice, self.segment_length, self.lane_length);
        let column = slice * segment_length + index;
        let ref_lane = if pass == 0 && slice == 0 {
            self.lane
        } else {
            // Lanes fit in 24 bits (argon2's bound): a 32-bit division is enough.
            ((pseudo_random >> 32) as u32 % self.lanes as u32) as usize
        };
        let same_lane = ref_lane == self.lane;
        // The blocks this one may refer to: finished segments, and in its own lane the
        // blocks before it but the previous one.
        let area = if pass == 0 {
            if slice == 0 || same_lane {
                column - 1
            } else {
                slice * segment_length - usize::from(index == 0)
            }
        } else if same_lane {
            lane_length - segment_length + index - 1
        } else {
            lane_length - segment_length - usize::from(index == 0)
        };
        let x = pseudo_random & 0xffff_ffff;
        let x = (x * x) >> 32;
        let relative = area - 1 - ((area as u64 * x) >> 32) as usize;
        let start = if pass == 0 || slice == SYNC_POINTS - 1 {
            0
        } else {
            (slice + 1) * segment_length
        };
        // Both are below `lane_length`: a subtraction, not a division, wraps the sum.
        let at = start + relative;
        let at = if at >= lane_length {
            at - lane_length
        } else {
            at
        };
        ref_lane * lane_length + at
    }
}

/// One segment of one lane in one pass: RFC 9106, sections 3.2 to 3.4.
fn fill_segment(
    memory: &mut [Block],
    params: &Params,
    pass: usize,
    slice: usize,
    lane: usize,
    compress: Compress,
) {
    let segment = Segment {
        pass,
        slice,
        lane,
        lanes: params.p_cost() as usize,
        lane_length: lane_length(params),
        segment_length: segment_length(params),
    };
    let (segment_length, lane_length) = (segment.segment_length, segment.lane_length);
    // argon2id: the first half of the first pass takes its references from a counter
    // (data-independent), the rest from the previous block.
    let independent = pass == 0 && slice < SYNC_POINTS / 2;
    let zero = Block::new();
    let mut input = Block::new();
    let mut addresses = Block::new();
    if independent {
        input.as_mut()[..6].copy_from_slice(&[
            pass as u64,
            lane as u64,
            slice as u64,
            params.block_count() as u64,
            u64::from(params.t_cost()),
            u64::from(ARGON2ID),
        ]);
    }
    let next_addresses = |input: &mut Block, addresses: &mut Block| {
        input.as_mut()[6] += 1;
        let mut once = Block::new();
        compress.compress(&zero, input, &mut once, false);
        compress.compress(&zero, &once, addresses, false);
    };
    // The first two blocks of each lane come from H0.
    let first = if pass == 0 && slice == 0 { 2 } else { 0 };
    if first == 2 && independent {
        next_addresses(&mut input, &mut addresses);
    }
    let lane_start = lane * lane_length;
    // Only an address to prefetch from: never read through (the blocks are borrowed
    // below).
    let base = memory.as_ptr();
    // The reference of the block to come, when it was found early (below).
    let mut known = None;
    for index in first..segment_length {
        let column = slice * segment_length + index;
        let previous = if column == 0 {
            lane_start + lane_length - 1
        } else {
            lane_start + column - 1
        };
        let reference = match known.take() {
            Some(reference) => reference,
            None if independent => {
                if index % WORDS == 0 {
                    next_addresses(&mut input, &mut addresses);
                }
                segment.reference(index, addresses.as_ref()[index % WORDS])
            }
            None => segment.reference(index, memory[previous].as_ref()[0]),
        };
        // The next block's reference is a random block, most likely not in cache: ask
        // for it as soon as its pseudo-random word is known, so that it arrives while G
        // works on this one. When data-independent, that is now; else it is the first
        // word of this block, which G hands to `ahead` before it has finished.
        let following = index + 1;
        let mut ahead = Ahead::nothing();
        if following < segment_length {
            if !independent {
                ahead = Ahead::find(&segment, following, base);
            } else if following % WORDS != 0 {
                let reference = segment.reference(following, addresses.as_ref()[following % WORDS]);
                prefetch(base.wrapping_add(reference));
                known = Some(reference);
            }
        }
        let current = lane_start + column;
        let (prev, refb, next) = three(memory, previous, reference, current);
        compress.compress_ahead(prev, refb, next, pass > 0, &mut ahead);
        known = known.or(ahead.found);
    }
    addresses.as_mut().zeroize();
}

/// What G does with the first word of the block it is making as soon as it has it: in
/// a data-dependent segment, find the next block's reference and ask for it.
pub(crate) struct Ahead<'a> {
    next: Option<(&'a Segment, usize, *const Block)>,
    found: Option<usize>,
}

impl<'a> Ahead<'a> {
    /// Nothing to do.
    pub(crate) fn nothing() -> Ahead<'a> {
        Ahead {
            next: None,
            found: None,
        }
    }

    /// Find the reference of block `index` of `segment` in the memory at `base`.
    fn find(segment: &'a Segment, index: usize, base: *const Block) -> Ahead<'a> {
        Ahead {
            next: Some((segment, index, base)),
            found: None,
        }
    }

    /// Called by G with the first word of its result, before it has finished.
    #[inline]
    pub(crate) fn first_word(&mut self, word: u64) {
        if let Some((segment, index, base)) = self.next {
            let reference = segment.reference(index, word);
            prefetch(base.wrapping_add(reference));
            self.found = Some(reference);
        }
    }
}

/// Asks the CPU to bring a block into cache. A hint: it reads nothing and cannot fault,
/// so `block` may be any address (it is a block of the memory being filled).
#[inline]
fn prefetch(block: *const Block) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..size_of::<Block>() / 64 {
        let at = block.cast::<i8>().wrapping_add(64 * line);
        // SAFETY: a prefetch is only a hint: it never faults and reads nothing into the
        // program, whatever the address (this one is inside `memory` anyway).
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at) };
    }
}

/// Two blocks to read and a third, always different from both, to write.
fn three(memory: &mut [Block], a: usize, b: usize, current: usize) -> (&Block, &Block, &mut Block) {
    let (before, rest) = memory.split_at_mut(current);
    let (next, after) = rest.split_at_mut(1);
    let pick = |i: usize| -> &Block {
        if i < current {
            &before[i]
        } else {
            &after[i - current - 1]
        }
    };
    (pick(a), pick(b), &mut next[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, Version};
    use proptest::prelude::*;

    use crate::blamka;

    /// H0's BLAKE2b state and block buffer take in the password: they must be wiped when
    /// dropped (blake2's `zeroize` feature), or the password stays behind in freed memory.
    #[test]
    fn blake2_states_wipe_themselves() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<Blake2bVarCore>();
        wiped_on_drop::<
            LazyBuffer<<Blake2bVarCore as blake2::digest::block_api::BlockSizeUser>::BlockSize>,
        >();
    }

    fn ours(input: &Input<'_>, params: &Params, out_len: usize, compress: Compress) -> Vec<u8> {
        let mut memory = vec![Block::new(); params.block_count()];
        let mut out = vec![0u8; out_len];
        hash(input, params, &mut out, &mut memory, compress).unwrap();
        out
    }

    fn theirs(input: &Input<'_>, params: &Params, out_len: usize) -> Vec<u8> {
        let mut out = vec![0u8; out_len];
        Argon2::new_with_secret(
            input.secret,
            Algorithm::Argon2id,
            Version::V0x13,
            params.clone(),
        )
        .unwrap()
        .hash_password_into(input.password, input.salt, &mut out)
        .unwrap();
        out
    }

    /// RFC 9106, section 5.3, with every compression.
    #[test]
    fn rfc_9106_test_vector() {
        let input = Input {
            password: &[0x01; 32],
            salt: &[0x02; 16],
            secret: &[0x03; 8],
            data: &[0x04; 12],
        };
        let params = Params::new(32, 3, 4, Some(32)).unwrap();
        let want = "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659";
        for compress in blamka::every_for_tests() {
            let got: String = ours(&input, &params, 32, compress)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, want, "{compress:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The same bytes as the argon2 crate, with every compression, over memory sizes,
        /// passes, lanes, output lengths (short, 64, and past 64 where H' chains) and
        /// inputs, with and without a secret and associated data.
        #[test]
        fn agrees_with_the_argon2_crate(
            p in 1u32..=4,
            extra_kib in 0u32..300,
            t in 1u32..=3,
            out_len in prop_oneof![4usize..=64, Just(64usize), 65usize..=130],
            password in proptest::collection::vec(any::<u8>(), 0..48),
            salt in proptest::collection::vec(any::<u8>(), 8..32),
            secret in proptest::collection::vec(any::<u8>(), 0..16),
            data in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let params = ParamsBuilder::new()
                .m_cost(8 * p + extra_kib)
                .t_cost(t)
                .p_cost(p)
                .output_len(out_len)
                .data(AssociatedData::new(&data).unwrap())
                .build()
                .unwrap();
            let input = Input {
                password: &password,
                salt: &salt,
                secret: &secret,
                data: &data,
            };
            let want = theirs(&input, &params, out_len);
            for compress in blamka::every_for_tests() {
                prop_assert_eq!(&ours(&input, &params, out_len, compress), &want, "{:?}", compress);
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_compute() {
        let input = Input {
            password: b"x",
            salt: b"saltsalt",
            secret: &[],
            data: &[],
        };
        let params = Params::new(64, 1, 1, None).unwrap();
        for compress in blamka::every_for_tests() {
            let mut small = vec![Block::new(); 63];
            assert_eq!(
                hash(&input, &params, &mut [0u8; 32], &mut small, compress),
                Err(BadInput)
            );
            let mut memory = vec![Block::new(); 64];
            assert_eq!(
                hash(&input, &params, &mut [0u8; 3], &mut memory, compress),
                Err(BadInput)
            );
        }
        // No pass or no lane cannot reach `hash`: its parameters are `argon2::Params`.
        assert!(Params::new(64, 0, 1, None).is_err());
        assert!(Params::new(64, 1, 0, None).is_err());
    }
}
