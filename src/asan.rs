//! AddressSanitizer hooks: with `--cfg smallmid_asan` (and
//! `-Zsanitizer=address`), memory the arena is not lending out is poisoned,
//! so a use after free or an overflow into a neighbouring free block is
//! reported by ASan instead of hidden inside the arena's own mapping.
//! Otherwise every function is empty.
//!
//! What is poisoned: free blocks (all but the 8-byte free-list link the
//! engine itself reads), uncarved slab space, freed spans, and everything
//! but the headers of a SuperSlab leaving its arena.

#[cfg(smallmid_asan)]
mod imp {
    extern "C" {
        fn __asan_poison_memory_region(addr: *const u8, size: usize);
        fn __asan_unpoison_memory_region(addr: *const u8, size: usize);
        fn __lsan_register_root_region(addr: *const u8, size: usize);
        fn __lsan_unregister_root_region(addr: *const u8, size: usize);
    }

    /// Lets LeakSanitizer scan a mapping of ours for pointers: arena state
    /// (caches, counters on the heap) and user blocks live there, so what
    /// they point to is reachable, not leaked.
    #[inline]
    pub(crate) fn register_root(p: *const u8, len: usize) {
        // SAFETY: LSan only records the range to scan.
        unsafe { __lsan_register_root_region(p, len) }
    }

    /// Undoes [`register_root`] with the same range.
    #[inline]
    pub(crate) fn unregister_root(p: *const u8, len: usize) {
        // SAFETY: LSan only forgets the range.
        unsafe { __lsan_unregister_root_region(p, len) }
    }

    #[inline]
    pub(crate) fn poison(p: *const u8, len: usize) {
        // SAFETY: ASan only records the range as unusable.
        unsafe { __asan_poison_memory_region(p, len) }
    }

    #[inline]
    pub(crate) fn unpoison(p: *const u8, len: usize) {
        // SAFETY: ASan only records the range as usable.
        unsafe { __asan_unpoison_memory_region(p, len) }
    }
}

#[cfg(not(smallmid_asan))]
mod imp {
    #[inline(always)]
    pub(crate) fn register_root(_: *const u8, _: usize) {}
    #[inline(always)]
    pub(crate) fn unregister_root(_: *const u8, _: usize) {}
    #[inline(always)]
    pub(crate) fn poison(_: *const u8, _: usize) {}
    #[inline(always)]
    pub(crate) fn unpoison(_: *const u8, _: usize) {}
}

pub(crate) use imp::{poison, register_root, unpoison, unregister_root};

/// Bytes of a free block the engine keeps readable: its free-list link.
pub(crate) const LINK: usize = 8;

/// Marks a block free: all but its link.
#[inline(always)]
pub(crate) fn free_block(b: *const u8, size: usize) {
    poison(b.wrapping_add(LINK), size.saturating_sub(LINK));
}
