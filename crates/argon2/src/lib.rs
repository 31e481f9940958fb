//! argon2id for apppass (RFC 9106, version 0x13): the fill ([`argon2id`]) with the
//! compression G in AVX-512 or AVX2 instructions ([`blamka`]) where the CPU has them,
//! else the argon2 crate's; in memory mapped for it ([`Arena`]).
//!
//! This crate and the PAM module are the only ones with `unsafe`: here, the SIMD loads,
//! stores and calls, the prefetches, and the arena's mapping.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use zeroize::Zeroize;

mod arena;
pub mod argon2id;
pub mod blamka;

pub use arena::Arena;

/// An argon2id computation that could not run: out of memory, or parameters the memory
/// or output cannot hold. Never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("argon2id failed (out of memory?)")
    }
}

impl std::error::Error for Failed {}

/// One argon2id computation, in a fresh [`Arena`] when the system gives one
/// (see there why), else in memory from the allocator; with [`argon2id`] and the best
/// of [`blamka`]'s compressions where the CPU has AVX-512 or AVX2, else with the
/// argon2 crate.
pub fn compute(params: &Params, input: &[u8], salt: &[u8], out: &mut [u8]) -> Result<(), Failed> {
    compute_with(blamka::best(), params, input, salt, out)
}

/// [`compute`] with the compression chosen by the caller: `None` for the argon2 crate.
pub fn compute_with(
    compress: Option<blamka::Compress>,
    params: &Params,
    input: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), Failed> {
    let blocks = params.block_count();
    match Arena::new(blocks) {
        // The arena goes back to the kernel when dropped, which zeroes it.
        Some(mut arena) => fill(compress, params, input, salt, out, arena.blocks()),
        None => on_heap(compress, params, input, salt, out),
    }
}

/// In memory from the allocator: where the system refuses a mapping.
fn on_heap(
    compress: Option<blamka::Compress>,
    params: &Params,
    input: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), Failed> {
    let blocks = params.block_count();
    let mut heap = Vec::new();
    // Fallible: a stored hash may ask for more memory than the machine has, and that
    // must be an error, not an abort.
    heap.try_reserve_exact(blocks).map_err(|_| Failed)?;
    heap.resize(blocks, Block::new());
    let result = fill(compress, params, input, salt, out, &mut heap);
    // The heap stays in this process: wipe it.
    heap.iter_mut().for_each(Zeroize::zeroize);
    result
}

/// The computation itself, in `memory` (whatever it holds: argon2 writes every block
/// before it reads it).
fn fill(
    compress: Option<blamka::Compress>,
    params: &Params,
    input: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut [Block],
) -> Result<(), Failed> {
    match compress {
        Some(compress) => {
            let input = argon2id::Input {
                password: input,
                salt,
                secret: &[],
                data: params.data(),
            };
            argon2id::hash(&input, params, out, memory, compress).map_err(|_| Failed)
        }
        None => Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(input, salt, out, memory)
            .map_err(|_| Failed),
    }
}

/// Hashers for several threads, handed out most recently used first: a computation then
/// runs in the arena the last one ran in, which is still in the caches. (With an arena
/// per worker, two workers taking turns at sequential logins each found their arena
/// evicted by the other's: about 2 ms more per verification, measured with two 19 MiB
/// arenas.) At most as many hashers exist as threads hold one at once.
#[derive(Default)]
pub struct Pool {
    free: std::sync::Mutex<Vec<Hasher>>,
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// The most recently returned hasher, or a new one.
    pub fn checkout(&self) -> Hasher {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Returns a hasher for the next computation.
    pub fn checkin(&self, hasher: Hasher) {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hasher);
    }
}

/// argon2id computations in one arena kept from one to the next: a daemon's worker.
///
/// Mapping and populating 19 MiB costs about 1.5 ms a verification; a worker that keeps
/// its arena pays it once. The arena grows to the largest computation asked of it (the
/// caller bounds that), and is unmapped with the hasher.
pub struct Hasher {
    compress: Option<blamka::Compress>,
    arena: Option<Arena>,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

impl Hasher {
    /// A hasher with no memory yet, computing with the best compression the CPU can
    /// run ([`blamka::best`]).
    pub fn new() -> Hasher {
        Hasher {
            compress: blamka::best(),
            arena: None,
        }
    }

    /// Maps memory for computations at `params` now, so that the first one does not pay
    /// for it.
    pub fn reserve(&mut self, params: &Params) -> Result<(), Failed> {
        let blocks = params.block_count();
        if self.arena.as_ref().is_some_and(|a| a.len() >= blocks) {
            return Ok(());
        }
        // The old arena goes first: two at once would be more than the bound promised.
        self.arena = None;
        self.arena = Some(Arena::new(blocks).ok_or(Failed)?);
        Ok(())
    }

    /// Bytes of memory the hasher holds now.
    pub fn memory(&self) -> usize {
        self.arena
            .as_ref()
            .map_or(0, |a| a.len() * std::mem::size_of::<Block>())
    }

    /// One computation, in the kept arena (grown first if it is too small).
    pub fn compute(
        &mut self,
        params: &Params,
        input: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), Failed> {
        if self.reserve(params).is_err() {
            return on_heap(self.compress, params, input, salt, out);
        }
        let blocks = params.block_count();
        match &mut self.arena {
            Some(arena) => fill(
                self.compress,
                params,
                input,
                salt,
                out,
                &mut arena.blocks()[..blocks],
            ),
            None => on_heap(self.compress, params, input, salt, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every way of computing argon2id gives the same bytes: apppass's own with each
    /// compression, in a fresh arena and on the heap, and the argon2 crate for CPUs with
    /// neither (each is also held to RFC 9106 and the crate in argon2id's own tests).
    #[test]
    fn every_computation_agrees() {
        for (m, t, p) in [(64, 1, 1), (19456, 2, 1), (1024, 3, 4)] {
            let params = Params::new(m, t, p, Some(32)).unwrap();
            let mut theirs = [0u8; 32];
            compute_with(None, &params, b"password", b"saltsaltsalt", &mut theirs).unwrap();
            for compress in blamka::every_for_tests() {
                let (mut mapped, mut heap) = ([0u8; 32], [0u8; 32]);
                compute_with(
                    Some(compress),
                    &params,
                    b"password",
                    b"saltsaltsalt",
                    &mut mapped,
                )
                .unwrap();
                on_heap(
                    Some(compress),
                    &params,
                    b"password",
                    b"saltsaltsalt",
                    &mut heap,
                )
                .unwrap();
                assert_eq!(mapped, theirs, "{compress:?} m={m} t={t} p={p}");
                assert_eq!(heap, theirs, "{compress:?} m={m} t={t} p={p}, heap");
            }
        }
    }

    /// A kept arena gives what a fresh one gives, whatever the computation before it
    /// left in it, smaller or larger.
    #[test]
    fn a_kept_arena_gives_the_same_bytes() {
        let mut hasher = Hasher::new();
        for (m, t, p) in [(1024, 1, 1), (64, 2, 1), (2048, 2, 2), (64, 1, 1)] {
            let params = Params::new(m, t, p, Some(32)).unwrap();
            let (mut kept, mut fresh) = ([0u8; 32], [0u8; 32]);
            hasher
                .compute(&params, b"password", b"saltsaltsalt", &mut kept)
                .unwrap();
            compute(&params, b"password", b"saltsaltsalt", &mut fresh).unwrap();
            assert_eq!(kept, fresh, "m={m} t={t} p={p}");
        }
        assert!(hasher.memory() >= 2048 * 1024, "it grew to the largest");
    }

    /// The hasher computes with the best compression there is, without being asked.
    #[test]
    fn the_hasher_takes_the_best_compression() {
        let all = blamka::every_for_tests();
        assert_eq!(Hasher::new().compress, all.last().copied());
        assert_eq!(blamka::best(), all.last().copied());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// One worker's hasher, through any run of computations, gives the argon2
        /// crate's bytes for each.
        #[test]
        fn a_kept_hasher_agrees_with_the_argon2_crate(
            runs in proptest::collection::vec(
                (1u32..=4, 0u32..200, 1u32..=3, proptest::collection::vec(any::<u8>(), 0..40)),
                1..6,
            ),
            salt in proptest::collection::vec(any::<u8>(), 8..24),
        ) {
            let mut hasher = Hasher::new();
            for (p, extra_kib, t, password) in runs {
                let params = Params::new(8 * p + extra_kib, t, p, Some(32)).unwrap();
                let (mut kept, mut theirs) = ([0u8; 32], [0u8; 32]);
                hasher.compute(&params, &password, &salt, &mut kept).unwrap();
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .hash_password_into(&password, &salt, &mut theirs)
                    .unwrap();
                prop_assert_eq!(kept, theirs);
            }
        }
    }
}
