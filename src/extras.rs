//! Arena-level extras: the memory the arena holds, a runtime memory limit,
//! address ownership and pre-reserved capacity.

use crate::arena::{SmallMidArena, View};
use crate::slab::SLAB_SIZE;
use crate::superslab::{SuperSlab, SUPERSLAB_SIZE};
use crate::sync::{lock, Ordering};
use allocator_api2::alloc::AllocError;

/// The largest [`SmallMidArena::reserve`]: 64 GiB (65,536 SuperSlabs,
/// 256 MiB of committed headers).
pub const MAX_RESERVE: usize = if usize::MAX as u64 > 1 << 36 {
    (1u64 << 36) as usize
} else {
    usize::MAX / 2
};

impl SmallMidArena {
    /// Bytes this arena uses right now: its slabs holding blocks (64 KiB
    /// each: a class's slab, a mixed slab, a large block's run) plus its
    /// huge blocks' mappings. O(1): one pool lock, no walk over threads or
    /// slabs.
    ///
    /// This is what the memory limit counts ([`Stats::bytes_held`]), not
    /// what is allocated: [`Stats::bytes_in_use`] sums the live blocks (at
    /// their block sizes) and needs a walk over every thread's cache.
    /// On an arena no thread is changing, `allocated_bytes()` is at least
    /// `stats().bytes_in_use`; the difference is free space in used slabs
    /// (and blocks and freed spans that threads' caches keep). An
    /// arena recycled warm by `new()` may start with the slabs its caches
    /// kept (`flush_thread_cache()` gives them back). An arena still in its
    /// seed (see [`SmallMidArena::new`]) holds no slab: 0.
    ///
    /// [`Stats::bytes_held`]: crate::Stats::bytes_held
    /// [`Stats::bytes_in_use`]: crate::Stats::bytes_in_use
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert_eq!(arena.allocated_bytes(), 0); // nothing allocated yet
    /// let b = arena.alloc([0u8; 300]);
    /// assert_eq!(arena.allocated_bytes(), 64 << 10); // one slab in use
    /// assert_eq!(arena.stats().bytes_in_use, 320);  // one 320-byte block
    /// let c = arena.alloc([0u8; 300]);
    /// assert_eq!(arena.allocated_bytes(), 64 << 10); // served from it
    /// # drop((b, c));
    /// ```
    pub fn allocated_bytes(&self) -> usize {
        self.full().map_or(0, |st| lock(&st.heap.pool).held_bytes())
    }

    /// Changes the memory limit at run time (bumpalo's
    /// `set_allocation_limit`); `usize::MAX` removes it.
    ///
    /// Freed spans that threads' caches keep go back to the arena first; if
    /// it still holds more than `bytes`, the calling thread's front cache
    /// is flushed (its blocks may keep slabs in use); if it still holds
    /// more (live blocks, or blocks other threads' caches hold), nothing
    /// changes and the result is an error.
    ///
    /// # Errors
    /// `AllocError` if `bytes` is below one slab (64 KiB), or if the
    /// arena's live memory does not fit in `bytes`; the old limit stays.
    ///
    /// # Example
    /// ```
    /// use allocator_api2::alloc::{Allocator, Layout};
    /// let arena = smallmid::SmallMidArena::new();
    /// arena.set_memory_limit(2 << 20).unwrap();
    /// assert_eq!(arena.memory_limit(), 2 << 20);
    /// assert!(arena.allocate(Layout::new::<[u8; 4 << 20]>()).is_err());
    /// assert!(arena.set_memory_limit(1000).is_err()); // below 64 KiB
    /// arena.set_memory_limit(usize::MAX).unwrap();    // no limit
    /// assert!(arena.allocate(Layout::new::<[u8; 4 << 20]>()).is_ok());
    /// ```
    pub fn set_memory_limit(&self, bytes: usize) -> Result<(), AllocError> {
        if bytes < SLAB_SIZE {
            return Err(AllocError);
        }
        let st = match self.view() {
            View::Full(st) => st,
            // A seed holds no slab: the limit waits for the state.
            View::Seed(seed) if seed.set_limit(bytes) => return Ok(()),
            View::Seed(seed) => seed.full().expect("grown"),
        };
        if bytes != usize::MAX {
            // Spans threads keep are freed memory: back to the pool (a
            // limited arena keeps none).
            st.reclaim_kept_spans();
            if lock(&st.heap.pool).held_bytes() > bytes {
                // Blocks this thread caches keep their slabs busy: return
                // them (takes class locks and the pool lock, so not under it).
                self.flush_thread_cache();
            }
        }
        let limit = if bytes == usize::MAX {
            u64::MAX
        } else {
            bytes as u64
        };
        let pool = lock(&st.heap.pool);
        if pool.held_bytes() > bytes {
            return Err(AllocError);
        }
        // The limit is read under the pool lock: stored under it, no
        // allocation sees the new value with the old holdings.
        st.heap.limit.store(limit, Ordering::Relaxed);
        Ok(())
    }

    /// Whether `ptr` points into memory this arena holds for blocks: one of
    /// its SuperSlabs past the header area, or one of its huge blocks (like
    /// mimalloc's `mi_heap_contains_block`). Any address may be passed:
    /// only addresses are compared, nothing at `ptr` is read.
    ///
    /// `true` does not mean a live block starts at `ptr` (free space of the
    /// arena counts too). Cost: O(SuperSlabs + huge blocks), under the pool
    /// lock: not for a hot path.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let b = arena.alloc([0u8; 300]);
    /// assert!(arena.contains(b.as_ptr()));
    /// let x = Box::new(0u8);
    /// assert!(!arena.contains(&*x as *const u8));
    /// ```
    pub fn contains(&self, ptr: *const u8) -> bool {
        let addr = ptr as usize;
        if self.seed().is_some_and(|s| s.contains(addr)) {
            return true;
        }
        let Some(st) = self.full() else {
            return false;
        };
        let pool = lock(&st.heap.pool);
        let base = addr & !(SUPERSLAB_SIZE - 1);
        let in_superslab = pool.all_superslabs().iter().any(|ss| {
            // SAFETY: a SuperSlab of ours (pool lock held): a live header.
            ss.as_ptr() as usize == base
                && addr - base >= unsafe { (*ss.as_ptr().cast::<SuperSlab>()).blocks_from }
        });
        in_superslab || crate::large::huge_contains(&pool, addr)
    }

    /// Pre-reserves capacity: grows the arena until its SuperSlabs hold at
    /// least `bytes` (rounded up to whole 1 MiB SuperSlabs), so that the
    /// allocations that fill them make no system call. Already held
    /// SuperSlabs count (used or not); huge blocks do not. Under a memory
    /// limit, a reserve larger than the limit is refused (the arena could
    /// never use it); reserved slabs count against the limit once used.
    ///
    /// An arena still in its seed grows its state first (see
    /// [`SmallMidArena::new`]): `reserve(1)` does only that.
    ///
    /// Fully free SuperSlabs past one spare are handed to the process-wide
    /// warm cache when freed again, or when a limit needs room: a reserve
    /// serves the arena's first allocations, it is not pinned.
    ///
    /// # Errors
    /// `AllocError` if the reserve would pass the memory limit or
    /// [`MAX_RESERVE`] (nothing is reserved then: each SuperSlab commits a
    /// page of header, so an absurd reserve would exhaust memory before the
    /// OS refused the address space), or the OS refuses memory (what was
    /// reserved by then stays).
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// arena.reserve(4 << 20).unwrap();
    /// assert_eq!(arena.stats().superslabs, 4);
    /// let limited = smallmid::SmallMidArena::builder().memory_limit(2 << 20).build();
    /// assert!(limited.reserve(3 << 20).is_err());
    /// ```
    pub fn reserve(&self, bytes: usize) -> Result<(), AllocError> {
        let want = bytes.div_ceil(SUPERSLAB_SIZE);
        let st = self.grown()?;
        let mut pool = lock(&st.heap.pool);
        let Some(more) = want.checked_sub(pool.superslabs).filter(|&m| m > 0) else {
            return Ok(());
        };
        if bytes > MAX_RESERVE || bytes as u64 > st.heap.limit.load(Ordering::Relaxed) {
            return Err(AllocError);
        }
        for _ in 0..more {
            pool.grow(false).ok_or(AllocError)?;
        }
        Ok(())
    }
}
