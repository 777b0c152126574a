//! Arena-level extras: the memory the arena holds, a runtime memory limit,
//! address ownership and pre-reserved capacity.

use crate::arena::SmallMidArena;
use crate::sync::lock;

impl SmallMidArena {
    /// Bytes this arena holds from the OS right now: its SuperSlabs (1 MiB
    /// each, used or not) plus its huge blocks' mappings. O(1): one pool
    /// lock, no walk over threads or slabs.
    ///
    /// This is what the memory limit counts ([`Stats::bytes_held`]), not
    /// what is allocated: [`Stats::bytes_in_use`] sums the live blocks (at
    /// their block sizes) and needs a walk over every thread's cache.
    /// On an arena no thread is changing, `allocated_bytes()` is at least
    /// `stats().bytes_in_use`; the
    /// difference is free space in slabs, free slabs and spare SuperSlabs.
    ///
    /// [`Stats::bytes_held`]: crate::Stats::bytes_held
    /// [`Stats::bytes_in_use`]: crate::Stats::bytes_in_use
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert_eq!(arena.allocated_bytes(), 1 << 20); // the home SuperSlab
    /// let b = arena.alloc([0u8; 300]);
    /// assert_eq!(arena.allocated_bytes(), 1 << 20); // served from it
    /// assert_eq!(arena.stats().bytes_in_use, 320);  // one 320-byte block
    /// # drop(b);
    /// ```
    pub fn allocated_bytes(&self) -> usize {
        lock(&self.state().pool).held_bytes()
    }
}
