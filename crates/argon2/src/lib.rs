//! argon2id for apppass (RFC 9106, version 0x13): the fill ([`argon2id`]) with the
//! compression G in AVX2 instructions ([`blamka`]) where the CPU has them, else the
//! argon2 crate's; in memory mapped for it ([`Arena`]).
//!
//! This crate and the PAM module are the only ones with `unsafe`: here, the AVX2 loads,
//! stores and calls, and the arena's mapping.

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
/// (see there why), else in memory from the allocator; with [`argon2id`] where the CPU
/// has AVX2, else with the argon2 crate.
pub fn compute(params: &Params, input: &[u8], salt: &[u8], out: &mut [u8]) -> Result<(), Failed> {
    compute_with(blamka::avx2(), params, input, salt, out)
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
    let mut arena = Arena::new(blocks);
    let mut heap = Vec::new();
    let memory = match &mut arena {
        Some(arena) => arena.blocks(),
        None => {
            // Fallible: a stored hash may ask for more memory than the machine has, and
            // that must be an error, not an abort inside the host.
            heap.try_reserve_exact(blocks).map_err(|_| Failed)?;
            heap.resize(blocks, Block::new());
            &mut heap[..]
        }
    };
    let result = match compress {
        Some(compress) => {
            let input = argon2id::Input {
                password: input,
                salt,
                secret: &[],
                data: &[],
            };
            argon2id::hash(&input, params, out, memory, compress).map_err(|_| Failed)
        }
        None => Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(input, salt, out, memory)
            .map_err(|_| Failed),
    };
    // The arena goes back to the kernel, which zeroes it; the heap stays in this process.
    heap.iter_mut().for_each(Zeroize::zeroize);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of computing argon2id give the same bytes: apppass's own with AVX2, and
    /// the argon2 crate for CPUs without it (the first is also held to RFC 9106 and the
    /// crate in argon2id's own tests).
    #[test]
    fn both_computations_agree() {
        let Some(avx2) = blamka::avx2() else {
            return;
        };
        for (m, t, p) in [(64, 1, 1), (19456, 2, 1), (1024, 3, 4)] {
            let params = Params::new(m, t, p, Some(32)).unwrap();
            let (mut ours, mut theirs) = ([0u8; 32], [0u8; 32]);
            compute_with(Some(avx2), &params, b"password", b"saltsaltsalt", &mut ours).unwrap();
            compute_with(None, &params, b"password", b"saltsaltsalt", &mut theirs).unwrap();
            assert_eq!(ours, theirs, "m={m} t={t} p={p}");
        }
    }
}
