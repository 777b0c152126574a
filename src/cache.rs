//! The front cache of one thread in one arena: per size class a free list
//! and a bump range of uncarved blocks, a mixed range, and a few kept
//! spans. It works on the [`Heap`] it is given and knows nothing of the
//! arena around it: which thread's cache serves an allocation, and what
//! becomes of a cache when its thread exits or the arena is reset, is the
//! arena's (see [`crate::arena`]).
//!
//! A full list flushes half of itself to the central lists; an empty one
//! refills a batch. The cache also keeps a few spans (large blocks of one
//! to [`SPAN_MAX`] slabs) its thread freed, for the thread's next spans of
//! the same length: a ring of I/O buffers then takes no pool lock. Caches
//! are metadata on the global heap (an arena's first one sits inside the
//! arena state), never blocks of the arena's own slabs, so a retired
//! cache pins nothing: its blocks go back to their slabs, its counters are
//! folded into the arena's, and it waits idle for the next thread.
//!
//! Invariant: a cache's lists are touched only by its owning thread, or
//! by whoever owns the arena exclusively (reset, drop); its blocks are
//! counted as `used` by their slabs.

use crate::heap::Heap;
use crate::size_class::{CACHE_CAP, CLASS_ALIGN, CLASS_SIZE, NUM_CLASSES};
use crate::slab::{next_of, set_next, Batch, MIXED_MAX, SLAB_SIZE};
use crate::superslab::{SuperSlab, META};
use crate::sync::{bump, store_against_swaps, AtomicPtr, AtomicU64, Ordering, UnsafeCell};
use core::ptr::{null_mut, NonNull};

const EMPTY: ClassCache = ClassCache {
    head: null_mut(),
    count: 0,
    cap: 0,
    bump: null_mut(),
    end: null_mut(),
};

/// One class's part of a front cache.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClassCache {
    /// Free list of `count` blocks.
    head: *mut u8,
    count: u32,
    /// Blocks the list may hold: 0 until the class is touched, so the
    /// first free of a class takes the slow path and marks it.
    cap: u32,
    /// Uncarved blocks `[bump, end)` taken from one slab.
    bump: *mut u8,
    end: *mut u8,
}

/// Spans a cache keeps, at most.
const SPANS: usize = 8;
/// Longest span a cache keeps, in slabs (256 KiB).
const SPAN_MAX: usize = 4;
/// Slabs a cache keeps in spans, at most (2 MiB: a ring of 32..=256 KiB
/// blocks, 48 -> 34 ns per free and allocation).
const SPAN_SLABS: usize = 32;

/// Classes carved from a mixed slab (see [`crate::slab`]).
const MIXED_CLASSES: usize = crate::size_class::index_for_size(MIXED_MAX) + 1;

/// What a carve of each class takes from a mixed range: its size and
/// alignment mask; past [`MIXED_MAX`] a size no range holds, so the
/// range check refuses it with no other branch.
const CARVE: [(u32, u32); NUM_CLASSES] = {
    let mut t = [(0u32, 0u32); NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        t[c] = if c < MIXED_CLASSES {
            (CLASS_SIZE[c], CLASS_ALIGN[c] - 1)
        } else {
            (1 << 24, 0)
        };
        c += 1;
    }
    t
};

/// A cache's range of a mixed slab: blocks of any class up to
/// [`MIXED_MAX`] carved in address order, each at its class's alignment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mix {
    start: *mut u8,
    bump: *mut u8,
    end: *mut u8,
    /// Blocks carved since the range was taken or rewound (high 32 bits)
    /// and bytes skipped to align them (low: out of the slab until the
    /// range goes back). One word: one add per carve.
    acct: u64,
    /// Bit `c`: a block of class `c` was carved, or resized to it in
    /// place (a burst of one class gains nothing from packing, see
    /// `alloc_small_slow`); goes into the cache's `touched` when the range
    /// does.
    classes: u64,
    /// A fresh mixed slab was taken (or refused) since the cache was
    /// attached or the arena reset: one per cache and epoch, so a mixed
    /// slab pinned by a few long-lived blocks is not followed by another.
    /// Rests parked by other caches may still be taken (they add no slab).
    taken: bool,
}

const NO_MIX: Mix = Mix {
    start: null_mut(),
    bump: null_mut(),
    end: null_mut(),
    acct: 0,
    classes: 0,
    taken: false,
};

/// What a front cache holds (see the module docs).
#[derive(Debug)]
pub(crate) struct Inner {
    lists: [ClassCache; NUM_CLASSES],
    mix: Mix,
    /// Bit `c` set: class `c` went through the slow path, so its counters
    /// may be non-zero (others are zero: retiring and reset skip them).
    /// With the mixed range's `classes`, every class the cache counted:
    /// a reset that finds a few clears those, one that finds many clears
    /// the whole table at once (see [`ThreadCache::clear_counters`]).
    touched: u64,
    /// Retired by a detach (its thread may come back): the classes it used,
    /// which the next reset gives whole slabs to, as for the resetting
    /// thread's own cache.
    pub(crate) want: u64,
    /// Likewise: it had a mixed range, which the next reset gives back.
    pub(crate) want_mix: bool,
}

/// Per-class counters of one cache. Written by the owning thread (with
/// [`bump`]), read by anyone holding the arena's members lock, and zeroed
/// with plain stores by whoever owns the arena exclusively (no reader or
/// writer can run then: [`ThreadCache::clear_counters`]). Five `u64`s,
/// no padding: all-zero bytes are zero counts.
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

// Zeroed as bytes by `ThreadCache::clear_counters`: five plain `u64`s.
#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<ClassCounters>() == 5 * 8);

/// What a cache's kept spans did: spans allocated from and freed into it,
/// and the change of bytes in use (wrapping). Written only by the owning
/// thread (with [`bump`]), read under the members lock; folded into the
/// arena's large counters when the cache retires.
#[derive(Debug, Default)]
pub(crate) struct SpanCounters {
    pub(crate) allocs: AtomicU64,
    pub(crate) frees: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl SpanCounters {
    /// (allocs, frees, bytes) counted; with `zero`, zeroed (writer excluded).
    pub(crate) fn read(&self, zero: bool) -> (u64, u64, u64) {
        let r = |a: &AtomicU64| {
            let v = a.load(Ordering::Relaxed);
            if zero {
                a.store(0, Ordering::Relaxed);
            }
            v
        };
        (r(&self.allocs), r(&self.frees), r(&self.bytes))
    }
}

/// Plain per-class counts: what retired caches and cacheless threads did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) allocs: u64,
    pub(crate) frees: u64,
    pub(crate) refills: u64,
    pub(crate) flushes: u64,
    pub(crate) cross: u64,
}

impl ClassCounters {
    /// Reads and zeroes the counters. The caller excludes their writer (its
    /// thread, or exclusive ownership of the arena), so a load and a store
    /// do, not a read-modify-write.
    pub(crate) fn take(&self) -> Counts {
        let t = |a: &AtomicU64| {
            let v = a.load(Ordering::Relaxed);
            a.store(0, Ordering::Relaxed);
            v
        };
        Counts {
            allocs: t(&self.allocs),
            frees: t(&self.frees),
            refills: t(&self.refills),
            flushes: t(&self.flushes),
            cross: t(&self.cross),
        }
    }

    /// Zeroes the counters (their writer excluded, as for [`Self::take`]):
    /// stores only, for a reset that drops what they counted.
    pub(crate) fn clear(&self) {
        let all = [
            &self.allocs,
            &self.frees,
            &self.refills,
            &self.flushes,
            &self.cross,
        ];
        for a in all {
            a.store(0, Ordering::Relaxed);
        }
    }

    /// Counts `n` blocks a flush put into slabs another thread last took
    /// from as cross-thread frees, at most as many as this cache's frees:
    /// a flush also returns blocks a refill brought that nobody allocated
    /// (a refused allocation under a limit flushes them all, then refills
    /// them again), which are not frees. Owner only.
    pub(crate) fn count_cross(&self, n: u32) {
        let room =
            (self.frees.load(Ordering::Relaxed)).saturating_sub(self.cross.load(Ordering::Relaxed));
        bump(&self.cross, room.min(n as u64));
    }

    pub(crate) fn read(&self) -> Counts {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            allocs: r(&self.allocs),
            frees: r(&self.frees),
            refills: r(&self.refills),
            flushes: r(&self.flushes),
            cross: r(&self.cross),
        }
    }
}

impl Counts {
    pub(crate) fn add(&mut self, o: Counts) {
        self.allocs += o.allocs;
        self.frees += o.frees;
        self.refills += o.refills;
        self.flushes += o.flushes;
        self.cross += o.cross;
    }
}

/// The front cache of one thread in one arena.
///
/// Lives as long as its arena: attached to a thread's slot, or idle in the
/// arena's members for the next thread; freed when the arena is destroyed.
/// So a thread record may link it and a detach may reach it while the
/// arena lives, whatever its thread does meanwhile.
#[derive(Debug)]
pub(crate) struct ThreadCache {
    inner: UnsafeCell<Inner>,
    pub(crate) counters: [ClassCounters; NUM_CLASSES],
    pub(crate) spans: SpanCounters,
    /// Freed spans kept (see the module docs): each the span's address
    /// (slab aligned) tagged with its length in slabs, or null. Only the
    /// owning thread stores a span into an empty entry; it, or anyone
    /// holding the arena's members lock, takes one with a swap, so a limit
    /// or a refused allocation on another thread can reclaim them. A kept
    /// span is still in use for the pool, and counted as freed in `spans`.
    kept: [AtomicPtr<u8>; SPANS],
}

impl ThreadCache {
    pub(crate) fn new() -> Self {
        ThreadCache {
            inner: UnsafeCell::new(Inner {
                lists: [EMPTY; NUM_CLASSES],
                mix: NO_MIX,
                touched: 0,
                want: 0,
                want_mix: false,
            }),
            counters: core::array::from_fn(|_| ClassCounters::default()),
            spans: SpanCounters::default(),
            kept: core::array::from_fn(|_| AtomicPtr::new(null_mut())),
        }
    }

    /// # Safety
    /// Called by the thread owning this cache (or with the arena owned
    /// exclusively), not reentrantly.
    #[inline(always)]
    pub(crate) unsafe fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        self.inner.with_mut(|i| {
            // SAFETY: only the owner touches its cache (type invariant).
            f(unsafe { &mut *i })
        })
    }
}

/// The slab count a kept entry is tagged with.
fn kept_len(e: *mut u8) -> usize {
    e.addr() & (SLAB_SIZE - 1)
}

impl ThreadCache {
    /// Takes a kept span of `k` slabs (owner only).
    fn pop_kept(&self, k: usize) -> Option<*mut u8> {
        for e in &self.kept {
            let p = e.load(Ordering::Relaxed);
            // A swap: a reclaim may take the entry meanwhile (then null).
            if !p.is_null() && kept_len(p) == k && e.swap(null_mut(), Ordering::AcqRel) == p {
                return Some(p.map_addr(|a| a & !(SLAB_SIZE - 1)));
            }
        }
        None
    }

    /// Keeps span `p` of `k` slabs if there is room (owner only).
    ///
    /// # Panics
    /// If `p` is kept already: freed twice.
    fn push_kept(&self, p: *mut u8, k: usize) -> bool {
        if k == 0 || k > SPAN_MAX {
            return false;
        }
        let (mut held, mut empty) = (0, None);
        for e in &self.kept {
            let q = e.load(Ordering::Relaxed);
            if q.is_null() {
                empty = empty.or(Some(e));
            } else {
                assert!(
                    q.map_addr(|a| a & !(SLAB_SIZE - 1)) != p,
                    "smallmid: span {p:p} freed twice"
                );
                held += kept_len(q);
            }
        }
        match empty {
            Some(e) if held + k <= SPAN_SLABS => {
                // Release: a reclaiming thread's swap sees the entry whole.
                store_against_swaps(e, p.map_addr(|a| a | k));
                true
            }
            _ => false,
        }
    }

    /// Takes every kept span, calling `f` on each: the owner, an exclusive
    /// owner of the arena, or a holder of its members lock.
    pub(crate) fn take_kept(&self, mut f: impl FnMut(*mut u8)) {
        for e in &self.kept {
            let p = e.swap(null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                f(p.map_addr(|a| a & !(SLAB_SIZE - 1)));
            }
        }
    }

    /// Forgets every kept span (their slabs are being reset wholesale).
    pub(crate) fn forget_kept(&self) {
        for e in &self.kept {
            e.store(null_mut(), Ordering::Relaxed);
        }
    }
}

impl Inner {
    /// Carves a block of `class` from the mixed range; null when it has no
    /// room (or the class is too large for it).
    ///
    /// Cost: a table load, an align-up, a compare, a store and an add.
    #[inline(always)]
    fn carve(&mut self, class: usize) -> *mut u8 {
        let (size, mask) = CARVE[class];
        let m = &mut self.mix;
        // Short dependency chain from one carve to the next: add, and, add.
        let bump = m.bump.addr();
        let b = (bump + mask as usize) & !(mask as usize);
        let next = b + size as usize;
        if next > m.end.addr() {
            return null_mut();
        }
        m.bump = m.bump.with_addr(next);
        m.acct += (1 << 32) | (b - bump) as u64;
        m.classes |= 1 << class;
        m.end.with_addr(b)
    }

    /// Resizes block `b` of class `from` to class `to` in place if it is
    /// the last block carved from the mixed range and the range has room:
    /// a `Vec` growing (or shrinking) at the end of what was carved moves
    /// nothing, as in a bump allocator. The block count and the alignment
    /// padding in `acct` stay as they are; the block's bytes go back with
    /// its new class when it is freed.
    fn resize_tail(&mut self, b: *mut u8, from: usize, to: usize) -> bool {
        let m = &mut self.mix;
        let (old, _) = CARVE[from];
        let (new, mask) = CARVE[to];
        let a = b.addr();
        let fits = a >= m.start.addr()
            && a + old as usize == m.bump.addr()
            && a & mask as usize == 0
            && a + new as usize <= m.end.addr();
        if fits {
            m.bump = m.bump.with_addr(a + new as usize);
            m.classes |= 1 << to;
        }
        fits
    }

    /// Gives the cache the mixed range `[start, end)`, whole.
    pub(crate) fn set_mixed(&mut self, start: *mut u8, end: *mut u8) {
        self.touched |= self.mix.classes;
        self.mix = Mix {
            start,
            bump: start,
            end,
            acct: 0,
            classes: 0,
            taken: true,
        };
    }

    /// Classes this cache holds a class slab's range for (whole or used
    /// up): the ones a reset gives it a whole slab of again.
    pub(crate) fn ranged(&self) -> u64 {
        let mut m = 0;
        let mut t = self.touched;
        while t != 0 {
            let c = t.trailing_zeros() as usize;
            t &= t - 1;
            m |= (!self.lists[c].end.is_null() as u64) << c;
        }
        m
    }

    /// Whether the cache took a mixed range this epoch.
    pub(crate) fn had_mixed(&self) -> bool {
        self.mix.taken
    }

    /// Gives class `class` the uncarved range `[bump, end)`.
    pub(crate) fn set_range(&mut self, class: usize, bump: *mut u8, end: *mut u8) {
        let l = &mut self.lists[class];
        *l = EMPTY;
        l.cap = CACHE_CAP[class];
        l.bump = bump;
        l.end = end;
        self.touched |= 1 << class;
    }

    /// Rewinds every class's range to its slab's start and forgets the free
    /// lists: in a clean arena (each class's one slab handed whole to this
    /// cache, nothing returned since) that frees every block. Returns the
    /// classes counted.
    pub(crate) fn rewind(&mut self) -> u64 {
        let counted = self.touched | self.mix.classes;
        let mut t = self.touched;
        while t != 0 {
            let class = t.trailing_zeros() as usize;
            t &= t - 1;
            let l = &mut self.lists[class];
            l.head = null_mut();
            l.count = 0;
            if !l.end.is_null() {
                let len = range_len(l.end, class);
                l.bump = l.end.wrapping_sub(len);
                crate::asan::poison(l.bump, len);
            }
        }
        let m = &mut self.mix;
        if !m.end.is_null() {
            m.bump = m.start;
            m.acct = 0;
            m.classes = 0;
            crate::asan::poison(m.start, m.end as usize - m.start as usize);
        }
        counted
    }

    /// Forgets every block (they were freed wholesale) and returns the
    /// classes counted. Untouched classes are empty already.
    pub(crate) fn clear(&mut self) -> u64 {
        let touched = core::mem::take(&mut self.touched) | self.mix.classes;
        self.mix = NO_MIX;
        let mut t = touched;
        while t != 0 {
            self.lists[t.trailing_zeros() as usize] = EMPTY;
            t &= t - 1;
        }
        touched
    }
}

impl ThreadCache {
    /// Pops or carves a block of `class`: the fast path's cache half (see
    /// [`crate::arena`] for the whole). `None` when the class's list and
    /// range are empty and the mixed range has no room.
    ///
    /// Cost: a pop (a load of the block's link and two stores) or a bump
    /// (a compare and a store), then a counter (a load and a store).
    ///
    /// # Safety
    /// Called by the thread owning this cache, not reentrantly.
    #[inline(always)]
    pub(crate) unsafe fn alloc(&self, class: usize) -> Option<NonNull<u8>> {
        // SAFETY: the owner (contract); blocks on its list are free.
        let b = unsafe {
            self.with(|i| {
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
                    i.carve(class)
                }
            })
        };
        let b = NonNull::new(b)?;
        bump(&self.counters[class].allocs, 1);
        Some(b)
    }

    /// Allocates a block of `class` when [`Self::alloc`] found none: a
    /// mixed range, else a batch refilled from `heap`'s central list (or a
    /// fresh slab's range). `None` when the heap is out of memory.
    ///
    /// # Safety
    /// As for [`Self::alloc`]; `heap` is the heap of the cache's arena and
    /// `tid` the owner's thread index.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn alloc_slow(
        &self,
        heap: &Heap,
        class: usize,
        tid: u32,
    ) -> Option<NonNull<u8>> {
        let size = CLASS_SIZE[class] as usize;
        let counters = &self.counters[class];
        // SAFETY: the owner (contract); refilled blocks are free.
        let b = unsafe {
            self.with(|i| {
                let l = &mut i.lists[class];
                if l.bump < l.end {
                    let b = l.bump;
                    l.bump = b.add(size);
                    return Some(b);
                }
                debug_assert!(l.head.is_null());
                let b = i.carve(class);
                if !b.is_null() {
                    return Some(b);
                }
                i.touched |= 1 << class;
                i.lists[class].cap = CACHE_CAP[class];
                // A cache with no mixed range takes one: a rest another
                // gave back, or a fresh slab once per epoch (and after a
                // burst, below). One whose used-up range got blocks back
                // goes on with class slabs. Under a limit, a
                // fresh one whenever needed: a class slab would cost the
                // limit the same slab, and serve one class only (a one-slab
                // arena used again after a flush needs a mixed one).
                if class < MIXED_CLASSES
                    && !i.mix.end.is_null()
                    && i.mix.classes.count_ones() >= BURST_CLASSES
                    && !heap.limited()
                    && burst(i.mix.end)
                {
                    // Used up by an allocation burst of many sizes: packing
                    // it on in a fresh mixed slab (while the arena holds
                    // fewer than MAX_MIXED) beats a slab per class, each
                    // barely used. Not for one or a few classes (their own
                    // slabs are as dense and reuse freed blocks at once),
                    // nor under a limit (a mixed slab's freed bytes wait
                    // for its last block: room the limit would refuse).
                    // Once blocks come back, class slabs recycle them.
                    let m = core::mem::replace(&mut i.mix, NO_MIX);
                    i.touched |= m.classes;
                    heap.put_mixed(m.bump, m.end, m.acct as u32, (m.acct >> 32) as u32);
                }
                if class < MIXED_CLASSES && i.mix.end.is_null() {
                    let fresh = !i.mix.taken || heap.limited();
                    i.mix.taken = true;
                    if let Some((start, end)) = heap.take_mixed(fresh) {
                        bump(&counters.refills, 1);
                        // A fresh range keeps a clean arena clean: it is a
                        // whole slab this cache can rewind.
                        i.set_mixed(start, end);
                        let b = i.carve(class);
                        if !b.is_null() {
                            return Some(b);
                        }
                    }
                }
                let l = &mut i.lists[class];
                let batch = heap.refill(class, tid, !l.end.is_null())?;
                bump(&counters.refills, 1);
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

    /// Pushes block `b` of `class` on its list if the list has room: the
    /// fast path's cache half. Cost: a compare with the class's capacity,
    /// then a push (two stores and the count) and a counter.
    ///
    /// # Safety
    /// As for [`Self::alloc`]; `b` is a live block of `class` of the
    /// cache's arena, not used afterwards if this returns `true`.
    #[inline(always)]
    pub(crate) unsafe fn free(&self, class: usize, b: *mut u8) -> bool {
        // SAFETY: the owner (contract); `b` is ours to link.
        let done = unsafe {
            self.with(|i| {
                let l = &mut i.lists[class];
                if l.count < l.cap {
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
            bump(&self.counters[class].frees, 1);
        }
        done
    }

    /// Frees block `b` of `class` when [`Self::free`] found the list full
    /// (or the class untouched): half the list flushes to `heap` first.
    ///
    /// # Safety
    /// As for [`Self::alloc_slow`]; `b` as for [`Self::free`].
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_slow(&self, heap: &Heap, class: usize, b: *mut u8, tid: u32) {
        let counters = &self.counters[class];
        bump(&counters.frees, 1);
        // SAFETY: the owner (contract); the flushed blocks are free.
        unsafe {
            self.with(|i| {
                i.touched |= 1 << class;
                let l = &mut i.lists[class];
                l.cap = CACHE_CAP[class];
                if l.count >= CACHE_CAP[class] {
                    // Flush down to half capacity (a whole-slab refill may
                    // have left more than capacity). The most recent blocks
                    // go: they are the ones in this core's cache.
                    let n = l.count - CACHE_CAP[class] / 2;
                    // One pass: the flush hands back the rest of the list
                    // (a walk to split it first cost a dependent load per
                    // block: half of this path in a free-heavy phase). The
                    // list is detached meanwhile: if the flush panics on a
                    // misused block, the cache holds none of the blocks it
                    // already returned (the rest stay out until reset).
                    let (head, count) = (l.head, l.count);
                    l.head = null_mut();
                    l.count = 0;
                    let (cross, rest) = heap.flush(class, head, n, tid);
                    l.head = rest;
                    l.count = count - n;
                    bump(&counters.flushes, 1);
                    counters.count_cross(cross);
                }
                set_next(b, l.head);
                l.head = b;
                l.count += 1;
            })
        }
    }

    /// Returns every block, range and kept span the cache holds to `heap`.
    ///
    /// # Safety
    /// The caller owns the cache (see the type invariant); `tid` names it;
    /// `heap` is its arena's.
    pub(crate) unsafe fn flush(&self, heap: &Heap, tid: u32) {
        // SAFETY: per contract; what the cache holds is free and ours.
        unsafe {
            self.with(|i| {
                for (class, l) in i.lists.iter_mut().enumerate() {
                    let taken = core::mem::replace(l, EMPTY);
                    if !taken.end.is_null() {
                        // A whole slab leaves the cache's sight (even a used
                        // up one): a clean rewind could no longer free it.
                        heap.mark_dirty();
                    }
                    if taken.count > 0 {
                        let (cross, _) = heap.flush(class, taken.head, taken.count, tid);
                        self.counters[class].count_cross(cross);
                        i.touched |= 1 << class;
                    }
                    heap.put_range(class, taken.bump, taken.end);
                }
                let taken = i.mix.taken;
                let m = core::mem::replace(&mut i.mix, Mix { taken, ..NO_MIX });
                i.touched |= m.classes;
                heap.put_mixed(m.bump, m.end, m.acct as u32, (m.acct >> 32) as u32);
            });
            // Counted as freed when they were kept.
            // Kept spans are ours and unused (the enclosing SAFETY).
            self.take_kept(|p| heap.release_kept_span(p));
        }
    }

    /// Empties the cache for the next thread: with `flush`, its blocks and
    /// ranges go back to `heap` and what it counted is returned (its
    /// counters, for classes in the mask, and its spans' counts, zeroed
    /// by the caller's fold); else its contents are forgotten (the caller
    /// resets every slab) and noted for the next reset (`want`), its
    /// counters zeroed. Returns the classes counted.
    ///
    /// # Safety
    /// The caller owns the cache (its thread, or the arena exclusively;
    /// without `flush`, the arena exclusively); `tid` names it; `heap` is
    /// its arena's.
    pub(crate) unsafe fn empty(&self, heap: &Heap, tid: u32, flush: bool) -> u64 {
        if flush {
            // SAFETY: forwarded contract.
            unsafe { self.flush(heap, tid) };
        }
        // SAFETY: forwarded contract.
        let touched = unsafe {
            self.with(|i| {
                i.want_mix = !flush && i.had_mixed();
                i.want = if flush { 0 } else { i.ranged() };
                i.clear()
            })
        };
        if flush {
            let (allocs, frees, bytes) = self.spans.read(true);
            heap.fold_large(allocs, frees, bytes);
        } else {
            self.spans.read(true);
            self.forget_kept();
            // A detach for a reset or a drop: what it counted goes anyway.
            // SAFETY: without `flush` the arena is ours alone (contract).
            unsafe { self.clear_counters(touched) };
        }
        touched
    }

    /// Zeroes the counters of the classes in `classes`. Many classes at
    /// once are one `memset` of the whole table: a reset after a request
    /// of 30 sizes spent 18 ns here class by class, 7 so (32 allocations
    /// and a reset: 122 -> 115 ns).
    ///
    /// # Safety
    /// No other thread reads or writes the counters meanwhile (the arena
    /// is owned exclusively).
    #[inline]
    pub(crate) unsafe fn clear_counters(&self, mut classes: u64) {
        #[cfg(not(loom))]
        if classes.count_ones() > 8 {
            let p = self.counters.as_ptr().cast_mut();
            // SAFETY: the counters are atomics, plain integers behind
            // `UnsafeCell`, so writable through a shared borrow; no other
            // thread touches them (contract), so plain stores race nothing.
            unsafe { core::ptr::write_bytes(p, 0, NUM_CLASSES) };
            return;
        }
        while classes != 0 {
            self.counters[classes.trailing_zeros() as usize].clear();
            classes &= classes - 1;
        }
    }

    /// Resizes block `b` from class `from` to `to` in place, if it is the
    /// last one the cache carved from its mixed range and the range has
    /// room.
    ///
    /// # Safety
    /// As for [`Self::alloc`]; `b` is a live block of class `from` of the
    /// cache's arena; on `true` it is a block of class `to`.
    #[inline]
    pub(crate) unsafe fn resize_in_place(&self, b: *mut u8, from: usize, to: usize) -> bool {
        if from >= MIXED_CLASSES || to >= MIXED_CLASSES {
            return false;
        }
        // SAFETY: the owner (contract); a live block at the carve point was
        // carved by this cache (blocks of other ranges or epochs cannot end
        // at its bump pointer inside its range).
        if !unsafe { self.with(|i| i.resize_tail(b, from, to)) } {
            return false;
        }
        bump(&self.counters[from].frees, 1);
        bump(&self.counters[to].allocs, 1);
        true
    }

    /// A span of `k` slabs the cache kept, if any (owner only).
    #[inline]
    pub(crate) fn take_span(&self, k: usize) -> Option<NonNull<u8>> {
        let p = self.pop_kept(k)?;
        bump(&self.spans.allocs, 1);
        bump(&self.spans.bytes, (k * SLAB_SIZE) as u64);
        NonNull::new(p)
    }

    /// Keeps freed span `p` of `k` slabs for the owner's next span of that
    /// length; `false` if the cache has no room (owner only).
    ///
    /// # Safety
    /// `p` is a live span of `k` slabs of the cache's arena, not used
    /// afterwards if this returns `true`.
    #[inline]
    pub(crate) unsafe fn keep_span(&self, p: *mut u8, k: usize) -> bool {
        if !self.push_kept(p, k) {
            return false;
        }
        bump(&self.spans.frees, 1);
        bump(&self.spans.bytes, (k * SLAB_SIZE).wrapping_neg() as u64);
        true
    }
}

/// Classes a used-up mixed range must have served for a burst to go on
/// in another mixed range.
const BURST_CLASSES: u32 = 4;

/// Whether the mixed range ending at `end` was only carved from so far.
fn burst(end: *mut u8) -> bool {
    let (_, _, slab) = crate::central::slab_of(end.wrapping_sub(1));
    // SAFETY: the range's slab is live while a cache holds the range.
    unsafe { (*slab).mixed_untouched() }
}

/// Length of the whole range of the class slab whose range ends at `end`.
fn range_len(end: *mut u8, class: usize) -> usize {
    let slab_base = (end as usize - 1) & !(SLAB_SIZE - 1);
    RANGE_LEN[(SuperSlab::slab_index(slab_base) == 0) as usize][class] as usize
}

/// Bytes of a whole class slab's blocks: `[in slabs 1..16, in slab 0]`
/// (slab 0's blocks start after the metadata). A table: no division on
/// the reset path.
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
