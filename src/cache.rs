//! The per-thread front cache: one per (thread, arena), living inside the
//! arena, found through the thread's dense index.
//!
//! A thread-local holds only the thread's index, never a pointer into an
//! arena, so nothing dangles when an arena is dropped. The arena keeps a
//! table of cache pointers indexed by thread index: 64 inline slots, then
//! chunks of 64 made on demand, up to [`MAX_TIDS`] threads alive at once;
//! threads past that (and threads whose thread-locals are already gone)
//! use the central lists directly, correct but slower.
//!
//! Each cache holds, per size class, a free list and a bump range of
//! uncarved blocks. A full list flushes half of itself to the central
//! lists; an empty one refills a batch. When a thread exits, its caches in
//! every live arena are returned (see [`crate::registry`]) and the empty
//! cache stays in the slot for the next thread given that index.
//!
//! Invariant: a cache is touched only by the thread whose index names its
//! slot (alloc, free, and that thread's exit flush); its blocks are counted
//! as `used` by their slabs.

use crate::arena::ArenaState;
use crate::registry;
use crate::size_class::{index_for_size, CACHE_CAP, CLASS_ALIGN, CLASS_SIZE, NUM_CLASSES};
use crate::slab::SLAB_SIZE;
use crate::slab::{next_of, set_next, Batch};
use crate::superslab::{SuperSlab, META};
use crate::sync::lock;
use crate::sync::{bump, thread_local_const, AtomicPtr, AtomicU64, Ordering, UnsafeCell};
use core::cell::Cell;
use core::ptr::{null_mut, NonNull};

/// Cache slots stored inline in the arena state.
pub(crate) const INLINE_SLOTS: usize = 64;
/// Further chunks of 64 slots, made on demand.
pub(crate) const CHUNKS: usize = 63;
/// Threads alive at once that get a front cache.
pub(crate) const MAX_TIDS: usize = INLINE_SLOTS * (CHUNKS + 1);

const NO_TID: u32 = u32::MAX;
/// This thread's thread-locals are being destroyed: no cache any more.
const DEAD: u32 = u32::MAX - 1;

/// A chunk of cache slots.
pub(crate) type SlotChunk = [AtomicPtr<ThreadCache>; INLINE_SLOTS];

const EMPTY: ClassCache = ClassCache {
    head: null_mut(),
    count: 0,
    bump: null_mut(),
    end: null_mut(),
};

/// One class's part of a front cache.
#[derive(Clone, Copy, Debug)]
struct ClassCache {
    /// Free list of `count` blocks.
    head: *mut u8,
    count: u32,
    /// Uncarved blocks `[bump, end)` taken from one slab.
    bump: *mut u8,
    end: *mut u8,
}

/// Free slabs a cache keeps so that a burst of new classes (a fresh
/// per-request arena touches twenty) takes the pool lock once per few.
const STASH: usize = 4;

/// What a front cache holds (see the module docs).
#[derive(Debug)]
struct Inner {
    lists: [ClassCache; NUM_CLASSES],
    /// Free slabs taken from the pool, `stash[..stashed]`, not yet used.
    stash: [(*const SuperSlab, usize); STASH],
    stashed: usize,
    /// Bit `c` set: class `c` has gone through the slow path here, so its
    /// counters may be non-zero (a recycled arena zeroes just those).
    touched: u64,
}

/// Per-class counters of one cache. Written only by the owning thread (with
/// [`bump`]), read by anyone (`stats()`).
#[derive(Debug, Default)]
pub(crate) struct ClassCounters {
    pub(crate) allocs: AtomicU64,
    pub(crate) frees: AtomicU64,
    /// Refills: allocations that missed the cache.
    pub(crate) refills: AtomicU64,
    pub(crate) flushes: AtomicU64,
    /// Blocks this cache flushed into slabs another thread had taken from.
    pub(crate) cross: AtomicU64,
}

/// The front cache of one thread in one arena.
#[derive(Debug)]
pub(crate) struct ThreadCache {
    inner: UnsafeCell<Inner>,
    pub(crate) counters: [ClassCounters; NUM_CLASSES],
}

/// Size class whose blocks hold the caches themselves.
const CACHE_CLASS: usize = index_for_size(core::mem::size_of::<ThreadCache>());
const _: () = assert!(core::mem::align_of::<ThreadCache>() <= CLASS_ALIGN[CACHE_CLASS] as usize);
const CHUNK_CLASS: usize = index_for_size(core::mem::size_of::<SlotChunk>());
const _: () = assert!(core::mem::align_of::<SlotChunk>() <= CLASS_ALIGN[CHUNK_CLASS] as usize);

impl ThreadCache {
    pub(crate) fn new() -> Self {
        ThreadCache {
            inner: UnsafeCell::new(Inner {
                lists: [EMPTY; NUM_CLASSES],
                stash: [(core::ptr::null(), 0); STASH],
                stashed: 0,
                touched: 0,
            }),
            counters: core::array::from_fn(|_| ClassCounters::default()),
        }
    }

    /// # Safety
    /// Called by the thread owning this cache, not reentrantly.
    #[inline(always)]
    unsafe fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        self.inner.with_mut(|i| {
            // SAFETY: only the owning thread touches its cache (type invariant).
            f(unsafe { &mut *i })
        })
    }
}

struct ThreadGuard {
    tid: Cell<u32>,
    /// This thread's recycled arena, if any (see [`crate::recycle`]).
    spare: Cell<*mut ArenaState>,
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        let spare = self.spare.replace(null_mut());
        if !spare.is_null() {
            // SAFETY: a spare arena has no handle; only this slot holds it.
            unsafe { ArenaState::destroy(spare) };
        }
        let tid = self.tid.get();
        if tid != NO_TID {
            let _ = TID.try_with(|t| t.set(DEAD));
            registry::release_thread(tid);
        }
    }
}

thread_local_const! {
    /// This thread's index, read on every alloc and free (no destructor, so
    /// reading it is a single thread-relative load).
    static TID: Cell<u32> = Cell::new(NO_TID);
}
thread_local_const! {
    /// Registered on first use; its destructor returns the thread's caches.
    static GUARD: ThreadGuard = ThreadGuard { tid: Cell::new(NO_TID), spare: Cell::new(null_mut()) };
}

#[inline(always)]
fn current_tid() -> u32 {
    TID.try_with(Cell::get).unwrap_or(DEAD)
}

/// The index recorded as a slab's taker (for cross-thread counts).
#[inline]
fn tid_of_cache() -> u32 {
    current_tid()
}

#[cold]
fn assign_tid() -> u32 {
    let tid = registry::acquire_tid();
    if GUARD.try_with(|g| g.tid.set(tid)).is_err() {
        registry::release_thread(tid);
        let _ = TID.try_with(|t| t.set(DEAD));
        return DEAD;
    }
    let _ = TID.try_with(|t| t.set(tid));
    tid
}

impl ArenaState {
    /// The slot of thread `tid`, creating its chunk if asked.
    fn slot(&self, tid: usize, create: bool) -> Option<&AtomicPtr<ThreadCache>> {
        if tid < INLINE_SLOTS {
            return Some(&self.slots[tid]);
        }
        if tid >= MAX_TIDS {
            return None;
        }
        let cell = &self.chunks[tid / INLINE_SLOTS - 1];
        let mut chunk = cell.load(Ordering::Acquire);
        if chunk.is_null() {
            if !create {
                return None;
            }
            let mem = self.alloc_one(CHUNK_CLASS)?.cast::<SlotChunk>();
            crate::asan::unpoison(mem.cast(), core::mem::size_of::<SlotChunk>());
            // SAFETY: a fresh block of a class that fits a chunk.
            unsafe { mem.write(core::array::from_fn(|_| AtomicPtr::new(null_mut()))) };
            match cell.compare_exchange(null_mut(), mem, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.meta_blocks.fetch_add(1, Ordering::Relaxed);
                    chunk = mem;
                }
                Err(winner) => {
                    // SAFETY: our chunk was never published.
                    unsafe { self.free_one(CHUNK_CLASS, mem.cast()) };
                    chunk = winner;
                }
            }
        }
        // SAFETY: published chunks live as long as the arena.
        Some(unsafe { &(*chunk)[tid % INLINE_SLOTS] })
    }

    /// This thread's cache in this arena, if it has one.
    #[inline(always)]
    fn cache(&self) -> Option<&ThreadCache> {
        let tid = current_tid() as usize;
        let slot = if tid < INLINE_SLOTS {
            &self.slots[tid]
        } else {
            self.slot(tid, false)?
        };
        // Relaxed: the slot is written by this thread, or by an earlier
        // thread with this index before the registry handed the index over.
        let p = slot.load(Ordering::Relaxed);
        // SAFETY: published caches live as long as the arena.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    #[cold]
    fn cache_or_create(&self) -> Option<&ThreadCache> {
        let mut tid = current_tid();
        if tid == NO_TID {
            tid = assign_tid();
        }
        let slot = self.slot(tid as usize, true)?;
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: published caches live as long as the arena.
            return Some(unsafe { &*p });
        }
        let mem = if !self.first_cache_taken.swap(true, Ordering::Relaxed) {
            // The first thread uses the cache inside the arena state.
            &self.first_cache as *const ThreadCache as *mut ThreadCache
        } else {
            let mem = self.alloc_one(CACHE_CLASS)?.cast::<ThreadCache>();
            crate::asan::unpoison(mem.cast(), core::mem::size_of::<ThreadCache>());
            // SAFETY: a fresh block of a class that fits a cache.
            unsafe { mem.write(ThreadCache::new()) };
            self.shared.store(true, Ordering::Relaxed);
            self.meta_blocks.fetch_add(1, Ordering::Relaxed);
            mem
        };
        slot.store(mem, Ordering::Release);
        // SAFETY: just initialized; lives as long as the arena.
        Some(unsafe { &*mem })
    }

    /// Allocates a block of `class`.
    ///
    /// Fast path, the common case: one thread-relative load (the index), one
    /// load of the arena's slot, then a pop (a load of the block's link and
    /// two stores) or a bump (a compare and a store). No atomic
    /// read-modify-write, no lock, no call.
    #[inline(always)]
    pub(crate) fn alloc_small(&self, class: usize) -> Option<NonNull<u8>> {
        if let Some(c) = self.cache() {
            // SAFETY: this thread owns its cache; blocks on its list are free.
            let b = unsafe {
                c.with(|i| {
                    let l = &mut i.lists[class];
                    let b = l.head;
                    if !b.is_null() {
                        l.head = next_of(b);
                        l.count -= 1;
                        b
                    } else if l.bump < l.end {
                        let b = l.bump;
                        l.bump = b.add(CLASS_SIZE[class] as usize);
                        b
                    } else {
                        null_mut()
                    }
                })
            };
            if let Some(b) = NonNull::new(b) {
                bump(&c.counters[class].allocs, 1);
                return Some(b);
            }
        }
        self.alloc_small_slow(class)
    }

    #[cold]
    #[inline(never)]
    fn alloc_small_slow(&self, class: usize) -> Option<NonNull<u8>> {
        let Some(c) = self.cache_or_create() else {
            let b = NonNull::new(self.alloc_one(class)?);
            self.orphan_allocs[class].fetch_add(1, Ordering::Relaxed);
            return b;
        };
        let size = CLASS_SIZE[class] as usize;
        let counters = &c.counters[class];
        // SAFETY: this thread owns its cache; refilled blocks are free.
        let b = unsafe {
            c.with(|i| {
                let l = &mut i.lists[class];
                if l.bump < l.end {
                    let b = l.bump;
                    l.bump = b.add(size);
                    return Some(b);
                }
                debug_assert!(l.head.is_null());
                bump(&counters.refills, 1);
                i.touched |= 1 << class;
                let had_range = !l.end.is_null();
                let batch = match self.refill(class, tid_of_cache()) {
                    Some(batch) => batch,
                    None => {
                        if had_range {
                            self.mark_dirty(); // a second fresh slab for this class
                        }
                        if i.stashed == 0 {
                            i.stashed = lock(&self.pool).take_slabs(&mut i.stash);
                            if i.stashed == 0 {
                                return None;
                            }
                            i.stash[..i.stashed].reverse(); // use in address order
                        }
                        i.stashed -= 1;
                        let (ss, idx) = i.stash[i.stashed];
                        self.fresh_slab(ss, idx, class, tid_of_cache())
                    }
                };
                let l = &mut i.lists[class];
                Some(match batch {
                    Batch::List { head, count } => {
                        l.head = next_of(head);
                        l.count = count - 1;
                        head
                    }
                    Batch::Range { start, end } => {
                        l.bump = start.add(size);
                        l.end = end;
                        start
                    }
                })
            })
        };
        let b = NonNull::new(b?);
        bump(&counters.allocs, 1);
        b
    }

    /// Frees a block of `class`.
    ///
    /// Fast path: the same two loads as allocation, a compare with the
    /// class's capacity, then a push (two stores and the count).
    ///
    /// # Safety
    /// `b` is a live block of `class` from this arena, not used afterwards.
    #[inline(always)]
    pub(crate) unsafe fn free_small(&self, class: usize, b: *mut u8) {
        if let Some(c) = self.cache() {
            // SAFETY: this thread owns its cache; `b` is ours to link.
            let done = unsafe {
                c.with(|i| {
                    let l = &mut i.lists[class];
                    if l.count < CACHE_CAP[class] {
                        set_next(b, l.head);
                        l.head = b;
                        l.count += 1;
                        true
                    } else {
                        false
                    }
                })
            };
            if done {
                bump(&c.counters[class].frees, 1);
                return;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_small_slow(class, b) }
    }

    /// # Safety
    /// As for [`Self::free_small`].
    #[cold]
    #[inline(never)]
    unsafe fn free_small_slow(&self, class: usize, b: *mut u8) {
        let Some(c) = self.cache_or_create() else {
            self.orphan_frees[class].fetch_add(1, Ordering::Relaxed);
            // SAFETY: forwarded contract.
            return unsafe { self.free_one(class, b) };
        };
        let counters = &c.counters[class];
        bump(&counters.frees, 1);
        // SAFETY: this thread owns its cache; the flushed blocks are free.
        unsafe {
            c.with(|i| {
                let l = &mut i.lists[class];
                if l.count >= CACHE_CAP[class] {
                    // Flush down to half capacity (a whole-slab refill may
                    // have left more than capacity). The most recent blocks
                    // go: they are the ones in this core's cache.
                    let n = l.count - CACHE_CAP[class] / 2;
                    let head = l.head;
                    let mut last = head;
                    for _ in 1..n {
                        last = next_of(last);
                    }
                    l.head = next_of(last);
                    l.count -= n;
                    set_next(last, null_mut());
                    let cross = self.flush(class, head, n, tid_of_cache());
                    bump(&counters.flushes, 1);
                    bump(&counters.cross, cross as u64);
                }
                set_next(b, l.head);
                l.head = b;
                l.count += 1;
            })
        }
    }

    /// Calls `f` on every thread cache of this arena.
    pub(crate) fn for_each_cache(&self, mut f: impl FnMut(&ThreadCache)) {
        let mut visit = |slot: &AtomicPtr<ThreadCache>| {
            let p = slot.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: published caches live as long as the arena.
                f(unsafe { &*p });
            }
        };
        self.slots.iter().for_each(&mut visit);
        for chunk in &self.chunks {
            let chunk = chunk.load(Ordering::Acquire);
            if !chunk.is_null() {
                // SAFETY: published chunks live as long as the arena.
                unsafe { (*chunk).iter().for_each(&mut visit) };
            }
        }
    }

    /// Zeroes the counters for a recycled arena. Its only cache is the
    /// calling thread's `first_cache`, and only classes that went through
    /// its slow path can be non-zero; unless `dirty`, no orphan or large
    /// counter moved either.
    ///
    /// # Safety
    /// The calling thread owns `first_cache`.
    pub(crate) unsafe fn reset_counters(&self, dirty: bool) {
        let zero = |a: &AtomicU64| a.store(0, Ordering::Relaxed);
        // SAFETY: the calling thread owns the cache (contract).
        let mut touched = unsafe { self.first_cache.with(|i| i.touched) };
        while touched != 0 {
            let k = &self.first_cache.counters[touched.trailing_zeros() as usize];
            [&k.allocs, &k.frees, &k.refills, &k.flushes, &k.cross]
                .into_iter()
                .for_each(zero);
            touched &= touched - 1;
        }
        if dirty {
            self.orphan_allocs
                .iter()
                .chain(&self.orphan_frees)
                .for_each(zero);
            [&self.large_allocs, &self.large_frees, &self.large_bytes]
                .into_iter()
                .for_each(zero);
        }
    }

    /// Returns what the calling thread's cache holds to the arena.
    pub(crate) fn flush_current_thread(&self) {
        let tid = current_tid();
        if (tid as usize) < MAX_TIDS {
            self.flush_thread(tid);
        }
    }

    /// Returns everything the cache of thread `tid` holds. Called by that
    /// thread only: as it exits (under the registry lock), or on request.
    pub(crate) fn flush_thread(&self, tid: u32) {
        let Some(slot) = self.slot(tid as usize, false) else {
            return;
        };
        let p = slot.load(Ordering::Acquire);
        if p.is_null() {
            return;
        }
        // SAFETY: published caches live as long as the arena.
        let c = unsafe { &*p };
        // SAFETY: the exiting thread owns this cache; what it holds is free
        // and came from this arena.
        unsafe {
            c.with(|i| {
                for (class, l) in i.lists.iter_mut().enumerate() {
                    let taken = core::mem::replace(l, EMPTY);
                    if taken.count > 0 {
                        let cross = self.flush(class, taken.head, taken.count, tid);
                        bump(&c.counters[class].cross, cross as u64);
                    }
                    self.put_range(class, taken.bump, taken.end);
                }
                let mut pool = lock(&self.pool);
                for &(ss, idx) in &i.stash[..i.stashed] {
                    pool.release_slab(ss, idx);
                }
                i.stashed = 0;
            })
        }
    }
}

/// Swaps this thread's spare arena for `new` (null to take it). Returns the
/// old one, or `new` itself back when this thread cannot hold a spare.
pub(crate) fn swap_spare(new: *mut ArenaState) -> *mut ArenaState {
    if current_tid() as usize >= MAX_TIDS {
        return new;
    }
    GUARD.try_with(|g| g.spare.replace(new)).unwrap_or(new)
}

impl ArenaState {
    /// Whether the only front cache of this arena is the calling thread's.
    pub(crate) fn used_by_this_thread_only(&self) -> bool {
        let tid = current_tid() as usize;
        !self.shared.load(Ordering::Relaxed)
            && self
                .slot(tid, false)
                .is_some_and(|s| core::ptr::eq(s.load(Ordering::Relaxed), &self.first_cache))
    }

    /// Fast reset: the cache's ranges are the only slabs in use, untouched
    /// by the central lists, so rewinding each range frees every block.
    ///
    /// # Safety
    /// As for [`Self::reset_first_cache`], and the arena is not dirty.
    pub(crate) unsafe fn rewind_first_cache(&self) {
        // SAFETY: the calling thread owns this cache (contract).
        unsafe {
            self.first_cache.with(|i| {
                // Only classes that took their range through the slow path
                // can hold anything.
                let mut touched = i.touched;
                while touched != 0 {
                    let class = touched.trailing_zeros() as usize;
                    touched &= touched - 1;
                    let l = &mut i.lists[class];
                    l.head = null_mut();
                    l.count = 0;
                    if !l.end.is_null() {
                        l.bump = l.end.wrapping_sub(range_len(l.end, class));
                        crate::asan::poison(l.bump, range_len(l.end, class));
                    }
                }
            })
        }
    }

    /// Empties the calling thread's cache, then gives it, per class, the
    /// whole range of `slab` (a freshly reset slab).
    ///
    /// # Safety
    /// The calling thread owns `first_cache`; the arena has no live block.
    pub(crate) unsafe fn reset_first_cache(
        &self,
        mut range_for: impl FnMut(usize) -> Option<(*mut u8, *mut u8)>,
    ) {
        // SAFETY: the calling thread owns this cache (contract).
        unsafe {
            self.first_cache.with(|i| {
                for (class, l) in i.lists.iter_mut().enumerate() {
                    *l = EMPTY;
                    if let Some((bump, end)) = range_for(class) {
                        l.bump = bump;
                        l.end = end;
                    }
                }
            })
        }
    }
}

/// Length of the whole range of the class slab whose range ends at `end`.
fn range_len(end: *mut u8, class: usize) -> usize {
    let slab_base = (end as usize - 1) & !(SLAB_SIZE - 1);
    RANGE_LEN[(SuperSlab::slab_index(slab_base) == 0) as usize][class] as usize
}

/// Bytes of a whole class slab's blocks: `[in slabs 1..16, in slab 0]`
/// (slab 0's blocks start after the metadata). A table: no division on
/// the recycle path.
const RANGE_LEN: [[u32; NUM_CLASSES]; 2] = {
    let mut t = [[0u32; NUM_CLASSES]; 2];
    let mut c = 0;
    while c < NUM_CLASSES {
        let size = CLASS_SIZE[c] as usize;
        let start0 = META.next_multiple_of(CLASS_ALIGN[c] as usize);
        t[0][c] = (SLAB_SIZE / size * size) as u32;
        t[1][c] = ((SLAB_SIZE - start0) / size * size) as u32;
        c += 1;
    }
    t
};
