//! The memory argon2 works in: mapped for one computation, or kept by a worker
//! ([`crate::Hasher`]).

/// Memory for one argon2 computation, mapped fresh and unmapped after use.
///
/// Asked for as transparent huge pages and populated in one call: faulting in 19 MiB
/// page by page costs a third of a verification in a process that has not hashed
/// before (every sshd login). Unmapping hands the memory back at once (nothing stays in
/// the host's heap), and the kernel zeroes it before anyone else sees it.
pub struct Arena {
    base: *mut libc::c_void,
    /// Bytes mapped.
    bytes: usize,
    blocks: *mut argon2::Block,
    count: usize,
}

const HUGE_PAGE: usize = 2 << 20;
const PAGE: usize = 4096;
/// `MADV_POPULATE_WRITE` (Linux 5.14); older kernels refuse it and fault pages in lazily.
const MADV_POPULATE_WRITE: std::ffi::c_int = 23;

impl Arena {
    /// Maps `count` blocks; `None` if the system refuses (the caller then allocates).
    pub fn new(count: usize) -> Option<Arena> {
        let bytes = count.checked_mul(std::mem::size_of::<argon2::Block>())?;
        let keep = bytes.checked_next_multiple_of(PAGE)?;
        // Room to start on a huge-page boundary.
        let len = keep.checked_add(HUGE_PAGE)?;
        // SAFETY: an anonymous private mapping of our own; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let start = (base as usize).next_multiple_of(HUGE_PAGE);
        let head = start - base as usize;
        let tail = len - head - keep;
        // SAFETY: head and tail are page-aligned parts of the mapping just made, outside
        // [start, start + keep). Trimming them keeps the last partial huge page from being
        // backed by a whole one (up to 2 MiB more resident for nothing).
        unsafe {
            if head > 0 {
                libc::munmap(base, head);
            }
            if tail > 0 {
                libc::munmap((start + keep) as *mut libc::c_void, tail);
            }
        }
        let blocks = start as *mut argon2::Block;
        // SAFETY: [start, start + keep) is what remains mapped. Both calls are advice: if
        // refused, the memory is still valid, only slower to touch.
        unsafe {
            libc::madvise(blocks.cast(), keep, libc::MADV_HUGEPAGE);
            libc::madvise(blocks.cast(), keep, MADV_POPULATE_WRITE);
        }
        Some(Arena {
            base: start as *mut libc::c_void,
            bytes: keep,
            blocks,
            count,
        })
    }

    /// How many blocks it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The blocks: zeroed when fresh (anonymous memory), as the last use left them after.
    pub fn blocks(&mut self) -> &mut [argon2::Block] {
        // SAFETY: `count` blocks from a page-aligned (so Block-aligned) start inside our
        // mapping, zero-initialised (a valid Block), borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.blocks, self.count) }
    }
}

// SAFETY: an Arena is the only owner of its mapping (nothing else holds its pointers,
// and `blocks` borrows it mutably), so moving it to another thread moves that ownership
// whole: apppassd's workers hand arenas to each other through a pool.
unsafe impl Send for Arena {}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base, self.bytes) };
    }
}
