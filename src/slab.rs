//! One 64 KiB slab: the blocks of a single size class, or one piece of a
//! large span.
//!
//! A class slab hands out blocks from an intrusive free list (reused blocks
//! first) and from an uncarved bump range (fresh memory, never written until
//! the user does). Its state is protected by its class's lock in the arena
//! while it serves a class, and by the pool lock while it is free or part
//! of a span.
//!
//! Invariant of a class slab (checked by `debug_check` after every change):
//!
//! `used + free_count + (end - bump) / size == capacity`
//!
//! where `used` counts blocks outside the slab: with users, in front caches,
//! or in a cache's bump range. A slab with `used == 0` is empty and goes back
//! to the pool, where it may serve another class; nothing is ever stranded.
//!
//! A *mixed* slab serves every class up to [`MIXED_MAX`] from one range, in
//! address order, as a bump allocator does: an arena's first blocks of many
//! sizes share pages instead of each size taking a page of its own slab.
//! It is handed whole to one front cache, which carves blocks of any class
//! from it (each at its class's alignment). Freed blocks serve their class
//! from the caches' lists; one flushed to the slab is not reused until every
//! byte of the slab is back, then the slab returns to the pool. Its count
//! lives outside the lock-protected state (see [`Slab::mixed_put`]), so
//! flushes of different classes need no common lock:
//!
//! `bytes out == capacity + 1 - bytes returned` (carved blocks, padding, and
//! a cache's uncarved range count as out until they come back; the one is
//! the holding cache's, given back with its range).

use crate::sync::{AtomicU64, Ordering, UnsafeCell};
use core::ptr::null;

/// Size and alignment of a slab.
pub(crate) const SLAB_SIZE: usize = 64 << 10;

/// Largest block carved from a mixed slab: the design centre. Larger
/// classes have few blocks per page anyway and take class slabs.
pub(crate) const MIXED_MAX: usize = 1024;

/// What a slab is currently used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// In the pool, owned by no class.
    Free,
    /// Serving size class `0`.
    Class(u8),
    /// First slab of a large block spanning `0` slabs.
    SpanHead(u8),
    /// A later slab of a large block.
    SpanTail,
    /// A mixed slab (see the module docs): `bump..end` is an uncarved rest
    /// a cache gave back, parked for the next one (empty when a cache holds
    /// the range). Its state is the pool lock's, its count
    /// [`Slab::mixed_put`]'s.
    Mixed,
}

/// Reads the free-list link stored in a free block's first bytes.
///
/// # Safety
/// `b` points to a free block of at least 8 bytes owned by the caller.
#[inline(always)]
pub(crate) unsafe fn next_of(b: *mut u8) -> *mut u8 {
    // SAFETY: per contract; blocks of classes like 10 B are not 8-aligned.
    unsafe { b.cast::<*mut u8>().read_unaligned() }
}

/// Writes a free block's link.
///
/// # Safety
/// As for [`next_of`].
#[inline(always)]
pub(crate) unsafe fn set_next(b: *mut u8, next: *mut u8) {
    // SAFETY: per contract.
    unsafe { b.cast::<*mut u8>().write_unaligned(next) }
}

/// A chain of free blocks handed between a slab and a front cache.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Batch {
    /// `count` blocks linked through [`next_of`], null-terminated.
    List { head: *mut u8, count: u32 },
    /// Uncarved blocks `[start, end)`.
    Range { start: *mut u8, end: *mut u8 },
}

/// The mutable state of one slab. See the module docs for the invariant.
#[derive(Debug)]
pub(crate) struct SlabState {
    pub(crate) use_: Use,
    /// Block size (class slabs).
    pub(crate) size: u32,
    pub(crate) capacity: u32,
    pub(crate) used: u32,
    pub(crate) free_count: u32,
    /// Head of the free list (null when `free_count == 0`).
    pub(crate) free: *mut u8,
    /// Uncarved range `[bump, end)`, always within the slab.
    pub(crate) bump: *mut u8,
    pub(crate) end: *mut u8,
    /// Thread index of the cache that last took blocks (stats only).
    pub(crate) taker: u32,
    /// Links in the class's list of slabs with blocks available.
    pub(crate) in_partial: bool,
    pub(crate) prev: *const Slab,
    pub(crate) next: *const Slab,
}

/// One slab's metadata, living in its SuperSlab's header.
#[derive(Debug)]
pub(crate) struct Slab {
    state: UnsafeCell<SlabState>,
    /// For a mixed slab: bytes out in the low 32 bits (never 0 while any
    /// block, padding or range of it is out), and in the high 32 bits the
    /// carved blocks its caches have reported minus those flushed back
    /// (mod 2^32: the blocks out once no cache holds its range). 0 for
    /// every other slab.
    mixed: AtomicU64,
}

impl Slab {
    pub(crate) fn new_free() -> Self {
        Slab {
            mixed: AtomicU64::new(0),
            state: UnsafeCell::new(SlabState {
                use_: Use::Free,
                size: 0,
                capacity: 0,
                used: 0,
                free_count: 0,
                free: core::ptr::null_mut(),
                bump: core::ptr::null_mut(),
                end: core::ptr::null_mut(),
                taker: u32::MAX,
                in_partial: false,
                prev: null(),
                next: null(),
            }),
        }
    }

    /// Whether this is a mixed slab. Exact for the slab of a live block:
    /// that block keeps the count non-zero, and whatever handed it over
    /// ordered the count's last write (a reset, a release to the pool)
    /// before this read.
    #[inline]
    pub(crate) fn is_mixed(&self) -> bool {
        self.mixed.load(Ordering::Relaxed) as u32 != 0
    }

    /// Makes the count of a mixed slab handed whole to a cache: `bytes`,
    /// all out, plus one for the cache's hold on the range, so the count
    /// cannot reach 0 while a cache holds it, even used up to its last
    /// byte (the cache gives the one back with its range). Pool lock held
    /// or the arena owned (the slab is in no one else's hands).
    pub(crate) fn mixed_init(&self, bytes: u32) {
        self.mixed.store(bytes as u64 + 1, Ordering::Relaxed);
    }

    /// Takes a hold on `bytes` parked in a mixed slab (pool lock held), as
    /// [`Self::mixed_init`] does for a whole range. False if the count is
    /// 0 already: the slab is empty and its emptier is about to free it.
    pub(crate) fn mixed_hold(&self, bytes: u32) -> bool {
        let mut v = self.mixed.load(Ordering::Relaxed);
        loop {
            if v as u32 == 0 {
                return false;
            }
            match self.mixed.compare_exchange_weak(
                v,
                v + bytes as u64 + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
    }

    /// Clears the count of a mixed slab leaving its use (pool lock held,
    /// nothing of it out).
    pub(crate) fn mixed_clear(&self) {
        self.mixed.store(0, Ordering::Relaxed);
    }

    /// Blocks out of a mixed slab (exact when no cache holds its range).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn mixed_blocks(&self) -> u32 {
        (self.mixed.load(Ordering::Relaxed) >> 32) as u32
    }

    /// No block came back to this mixed slab from a cache's list, and no
    /// cache reported blocks still out: whoever holds its range has only
    /// carved from it so far (an allocation burst).
    pub(crate) fn mixed_untouched(&self) -> bool {
        self.mixed.load(Ordering::Relaxed) >> 32 == 0
    }

    /// Gives `bytes` back to a mixed slab and reports `blocks` carved (a
    /// cache returning its range reports its carved blocks; a flushed block
    /// gives its size and reports -1). True when the slab is now empty:
    /// the caller, alone with it, gives it to the pool.
    ///
    /// # Panics
    /// If more bytes come back than are out: a double free or a foreign
    /// block.
    pub(crate) fn mixed_put(&self, bytes: u32, blocks: i32) -> bool {
        let delta = ((blocks as i64 as u64) << 32).wrapping_sub(bytes as u64);
        // AcqRel: the thread that empties the slab sees every other
        // return's writes to the memory before reusing it.
        let old = self.mixed.fetch_add(delta, Ordering::AcqRel);
        assert!(
            old as u32 >= bytes,
            "smallmid: a block freed twice, or not from this arena (mixed slab)"
        );
        let empty = old as u32 == bytes;
        // Empty means no cache holds the range, so every carved block was
        // reported: the block count is 0 too, unless a block came back with
        // another class's size.
        assert!(
            !empty || old.wrapping_add(delta) == 0,
            "smallmid: a block freed with a layout of another size class (mixed slab emptied \
             with {} blocks out): wrong layout or double free",
            (old.wrapping_add(delta) >> 32) as u32 as i32
        );
        empty
    }

    /// Runs `f` on the state.
    ///
    /// # Safety
    /// The caller holds the lock that protects this slab (its class lock
    /// while it serves a class, else the pool lock), and `f` does not call
    /// `with` on the same slab.
    #[inline(always)]
    pub(crate) unsafe fn with<R>(&self, f: impl FnOnce(&mut SlabState) -> R) -> R {
        // SAFETY: exclusive access is guaranteed by the lock the caller holds.
        self.state.with_mut(|s| f(unsafe { &mut *s }))
    }
}

impl SlabState {
    /// Makes a free slab serve class `class`, its blocks laid out in
    /// `[start, slab_end)`.
    pub(crate) fn init_class(&mut self, class: u8, size: u32, start: *mut u8, slab_end: *mut u8) {
        let capacity = (slab_end as usize - start as usize) / size as usize;
        debug_assert!(capacity >= 1);
        self.use_ = Use::Class(class);
        self.size = size;
        self.capacity = capacity as u32;
        self.used = 0;
        self.free_count = 0;
        self.free = core::ptr::null_mut();
        self.bump = start;
        // SAFETY-free arithmetic: stays within the slab by construction.
        self.end = start.wrapping_add(capacity * size as usize);
        self.in_partial = false;
        self.taker = u32::MAX;
        crate::asan::poison(start, slab_end as usize - start as usize);
        self.debug_check();
    }

    /// Blocks this slab can still hand out.
    #[inline]
    pub(crate) fn available(&self) -> bool {
        self.free_count > 0 || self.bump < self.end
    }

    /// Takes every available block in O(1): the whole free list (warm
    /// memory) if there is one, else the whole uncarved range (no write at
    /// all). Never walks the list: under cross-thread traffic its blocks sit
    /// in another core's cache, and walking them under the class lock was
    /// the producer/consumer bottleneck.
    ///
    /// # Safety
    /// The slab serves a class and its free list is intact.
    pub(crate) unsafe fn take(&mut self) -> Batch {
        debug_assert!(self.available());
        let batch = if self.free_count > 0 {
            let (head, count) = (self.free, self.free_count);
            self.free = core::ptr::null_mut();
            self.free_count = 0;
            self.used += count;
            Batch::List { head, count }
        } else {
            let (start, end) = (self.bump, self.end);
            self.used += ((end as usize - start as usize) / self.size as usize) as u32;
            self.bump = end;
            Batch::Range { start, end }
        };
        self.debug_check();
        batch
    }

    /// Returns `n` blocks linked from `head` to `tail` (whose link is
    /// overwritten) in O(1). Returns whether the slab just became
    /// available.
    ///
    /// # Safety
    /// The blocks are this slab's, out (counted in `used`), unused from
    /// now on, each once in the chain.
    pub(crate) unsafe fn put_chain(&mut self, head: *mut u8, tail: *mut u8, n: u32) -> bool {
        debug_assert!(self.used >= n, "slab put with used < n: double free?");
        let was_available = self.available();
        // SAFETY: `tail` is ours and not free, so we may reuse its first bytes.
        unsafe { set_next(tail, self.free) };
        self.free = head;
        self.free_count += n;
        self.used -= n;
        self.debug_check();
        !was_available
    }

    /// Returns a cache's unused bump range `[start, end)`.
    ///
    /// # Safety
    /// The range came from [`Self::take`] on this slab and was not used since.
    pub(crate) unsafe fn put_range(&mut self, start: *mut u8, end: *mut u8) -> bool {
        let was_available = self.available();
        let n = ((end as usize - start as usize) / self.size as usize) as u32;
        debug_assert!(self.used >= n);
        if end == self.bump {
            // Nothing was carved after it: un-carve in O(1).
            self.bump = start;
        } else {
            let mut b = start;
            while b < end {
                crate::asan::unpoison(b, crate::asan::LINK);
                // SAFETY: every block of the range is ours and unused.
                unsafe { set_next(b, self.free) };
                self.free = b;
                b = b.wrapping_add(self.size as usize);
            }
            self.free_count += n;
        }
        self.used -= n;
        self.debug_check();
        !was_available && n > 0
    }

    /// True when every block is back: the slab can leave its class.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.used == 0
    }

    #[inline]
    pub(crate) fn debug_check(&self) {
        if cfg!(debug_assertions) {
            self.check();
        }
    }

    /// Asserts the invariant (see the module docs).
    pub(crate) fn check(&self) {
        {
            if let Use::Class(_) = self.use_ {
                let uncarved = (self.end as usize - self.bump as usize) / self.size as usize;
                assert_eq!(
                    self.used as usize + self.free_count as usize + uncarved,
                    self.capacity as usize,
                    "slab invariant used + free + uncarved == capacity broken"
                );
                assert_eq!(
                    self.free.is_null(),
                    self.free_count == 0,
                    "slab free list/count disagree"
                );
            }
        }
    }
}
