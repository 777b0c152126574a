//! An arena's pool of SuperSlabs: free slabs for size classes, contiguous
//! slab runs ("spans") for large blocks, and the accounting behind the
//! memory limit.
//!
//! Everything here runs under the arena's pool lock. A slab that a class
//! gives back becomes free here at once and may serve another class or a
//! span; a SuperSlab whose slabs are all free is kept as a spare (one) or
//! handed to the process-wide warm cache for other arenas.
//!
//! Invariants (pool lock):
//! - every SuperSlab of the arena is on the `all` list, `superslabs` long;
//! - a SuperSlab is on the `avail` list iff its `free_mask != 0`;
//! - `spare` counts non-home SuperSlabs with `free_mask == ALL_FREE`;
//! - `used` is the number of clear bits in the SuperSlabs' `free_mask`s
//!   (slabs holding blocks, a cache's range, or a span), and
//!   `held_bytes() = used * SLAB_SIZE + huge_bytes <= limit` (the arena's
//!   `limit`): the limit counts memory in use at slab granularity, not the
//!   address space of SuperSlabs (a SuperSlab's free slabs are not memory
//!   the arena uses; a limited arena takes no new huge-paged SuperSlab,
//!   so the free slabs it keeps resident are mostly counted process-wide,
//!   below);
//! - `resident` is the number of bits set in the SuperSlabs' `resident`
//!   masks, each of which is also set in `free_mask`, and the process-wide
//!   [`RESIDENT_FREE`] is the sum of every live pool's `resident`.
//!
//! Returning memory: a slab emptied while the arena lives (its class's
//! last block back, a large block freed) stays resident, so the next class
//! takes it warm, until the process holds more than
//! [`MAX_RESIDENT_FREE`] such slabs; then an arena emptying one while it
//! holds more than [`KEEP_RESIDENT`] decommits its own down to about that
//! many, and one a thread leaves (its exit flushes its cache) decommits all
//! of its own once the process holds a quarter of that many
//! (`MADV_DONTNEED`, one call per run of adjacent slabs). Taking
//! a slab prefers a resident one. Slabs freed by a reset stay warm: a
//! recycled arena's next request needs them. Slabs of huge-paged
//! SuperSlabs (an arena's fifth on, or one a span of 256 KiB or more
//! took when the arena had no room for it) are never counted or
//! decommitted one by one: that splits their 2 MiB pages (measured: 10x
//! the faults to fill them again); they go back with their whole
//! SuperSlab, through the warm cache.

use crate::heap::Heap;
use crate::large::HugeHeader;
use crate::os;
use crate::slab::Use;
use crate::slab::SLAB_SIZE;
use crate::superslab::{SuperSlab, ALL_FREE, META, SLABS};
use crate::sync::{global, AtomicU64, Ordering};
use crate::warm;
use core::ptr::{null, null_mut, NonNull};

/// SuperSlabs an arena holds before its next ones come huge-paged.
const DENSE_SUPERSLABS: usize = 4;
/// A span of this many slabs (256 KiB) or more, about twice the arena's
/// previous large block (see [`Pool::doubles`]), that finds no room in the
/// arena's SuperSlabs takes a huge-paged one: a table or buffer growing
/// past the arena's first SuperSlab goes on growing.
const DENSE_SPAN: usize = 4;

/// Mixed slabs an arena holds at once. Blocks flushed back to a mixed slab
/// wait for the whole slab, so a few long-lived blocks can pin one: past
/// this many, classes take slabs of their own.
pub(crate) const MAX_MIXED: usize = 8;

/// Emptied slabs of live arenas that may stay resident, process-wide: 8 MiB
/// (the pages a slab's blocks reached: often much less).
const MAX_RESIDENT_FREE: u64 = 128;

/// Emptied slabs an arena in use keeps resident past that bound: a
/// producer/consumer pair empties and retakes slabs all the time, and
/// decommitting them would fault them in again at once.
const KEEP_RESIDENT: u64 = 4;

global! {
    /// Emptied, maybe resident slabs of all live arenas (see the module docs).
    static RESIDENT_FREE: AtomicU64 = AtomicU64::new(0);
}

/// Emptied slabs of live arenas that may be resident, process-wide.
pub(crate) fn resident_free_slabs() -> u64 {
    RESIDENT_FREE.load(Ordering::Relaxed)
}

/// Fully free SuperSlabs an arena keeps before giving them to the warm cache.
const MAX_SPARE: usize = 1;

#[derive(Debug)]
pub(crate) struct Pool {
    /// The heap this pool is part of (its limit is read through it).
    heap: *const Heap,
    home: *const SuperSlab,
    all: *const SuperSlab,
    avail: *const SuperSlab,
    pub(crate) superslabs: usize,
    spare: usize,
    /// Slabs claimed (see the invariants).
    used: usize,
    /// Room one thread (by index) holds for itself: counted as used for
    /// every other thread (see [`Self::reserve_room`]).
    reserved: (u32, usize),
    /// Mixed slabs held (see [`crate::slab`]): the first `mixed` entries.
    mixed_at: [(*const SuperSlab, usize); MAX_MIXED],
    mixed: usize,
    /// Size of the last large block asked for (0: none since the last
    /// reset), for [`Self::doubles`].
    pub(crate) last_large: usize,
    /// Emptied slabs that may be resident (see the module docs).
    resident: u64,
    /// Threads retiring their cache here: emptied slabs are not decommitted
    /// one by one meanwhile; [`Self::trim_resident`] does it in runs after.
    deferring: u32,
    /// Huge blocks (their own mappings), doubly linked.
    pub(crate) huge: *mut HugeHeader,
    pub(crate) huge_bytes: usize,
    /// `span_hint[k]`: where a span of `k` slabs was last given back (null,
    /// or one of our SuperSlabs): looked at first (for spans of `k` slabs
    /// or fewer), so spans freed and taken again in a loop cost no walk
    /// over the avail list (each step of which touches another
    /// SuperSlab's header).
    span_hint: [*const SuperSlab; SLABS],
}

// SAFETY: the raw pointers are only followed under the pool's mutex.
unsafe impl Send for Pool {}

impl Pool {
    /// A pool whose only SuperSlab is `home`, already initialized.
    ///
    /// # Safety
    /// `home` is a live SuperSlab header owned by `heap`, and the pool
    /// lives inside `heap`.
    pub(crate) unsafe fn new(heap: *const Heap, home: *const SuperSlab) -> Pool {
        let mut pool = Pool {
            heap,
            home,
            all: null(),
            avail: null(),
            superslabs: 0,
            spare: 0,
            used: 0,
            reserved: (0, 0),
            mixed_at: [(null(), 0); MAX_MIXED],
            mixed: 0,
            last_large: 0,
            resident: 0,
            deferring: 0,
            huge: null_mut(),
            huge_bytes: 0,
            span_hint: [null(); SLABS],
        };
        // SAFETY: forwarded contract.
        unsafe { pool.link(home) };
        pool
    }

    /// The mixed slabs held.
    pub(crate) fn mixed_slabs(&self) -> &[(*const SuperSlab, usize)] {
        &self.mixed_at[..self.mixed]
    }

    /// Notes slab `idx` of `ss` as a mixed slab (fewer than [`MAX_MIXED`]).
    pub(crate) fn add_mixed(&mut self, ss: *const SuperSlab, idx: usize) {
        self.mixed_at[self.mixed] = (ss, idx);
        self.mixed += 1;
    }

    /// Forgets mixed slab `idx` of `ss`.
    pub(crate) fn remove_mixed(&mut self, ss: *const SuperSlab, idx: usize) {
        let k = self.mixed_slabs().iter().position(|&m| m == (ss, idx));
        let k = k.expect("a mixed slab the pool knows");
        self.mixed -= 1;
        self.mixed_at[k] = self.mixed_at[self.mixed];
    }

    /// Whether a large block of `size` is about twice (1.5 to 2) the last
    /// one: a growing `Vec` or hash table, which will grow again. Huge
    /// pages pay for such a block; for a block like the last, or a first
    /// one, they would only add memory.
    pub(crate) fn doubles(&self, size: usize) -> bool {
        // Saturating: a refused request of any size (up to `usize::MAX`)
        // may be the last one.
        let last = self.last_large;
        last > 0
            && last.saturating_mul(2).saturating_add(size / 16) >= size
            && last.saturating_mul(3) <= size.saturating_mul(2)
    }

    /// Forgets every mixed slab (a reset lays them out again), and the
    /// last large block.
    pub(crate) fn clear_mixed(&mut self) {
        self.last_large = 0;
        self.mixed = 0;
    }

    pub(crate) fn held_bytes(&self) -> usize {
        self.used * SLAB_SIZE + self.huge_bytes
    }

    /// The heap this pool is part of, as owners name it (see
    /// [`crate::heap`]).
    pub(crate) fn heap(&self) -> *const Heap {
        self.heap
    }

    /// The heap's limit (`u64::MAX`: none).
    fn limit(&self) -> u64 {
        // SAFETY: the pool lives inside its heap (contract of `new`).
        unsafe { (*self.heap).limit.load(Ordering::Relaxed) }
    }

    /// Whether `bytes` more may be used under the arena's limit by the
    /// calling thread.
    pub(crate) fn fits(&self, bytes: usize) -> bool {
        let (tid, room) = self.reserved;
        let others = if room != 0 && tid != crate::thread::current_tid() {
            room
        } else {
            0
        };
        self.held_bytes()
            .checked_add(bytes)
            .and_then(|t| t.checked_add(others))
            .is_some_and(|t| t as u64 <= self.limit())
    }

    /// Holds `bytes` of room (about to be freed by the calling thread) for
    /// that thread alone until [`Self::release_room`]: a huge block shrunk
    /// to make room for its own copy keeps it from other threads. One at a
    /// time: `false` if another thread holds some.
    pub(crate) fn reserve_room(&mut self, bytes: usize) -> bool {
        if self.reserved.1 != 0 {
            return false;
        }
        self.reserved = (crate::thread::current_tid(), bytes);
        true
    }

    /// Ends [`Self::reserve_room`].
    pub(crate) fn release_room(&mut self) {
        self.reserved = (0, 0);
    }

    /// # Safety
    /// `ss` is a fresh header of this arena, on no list.
    unsafe fn link(&mut self, ss: *const SuperSlab) {
        let old = self.all;
        // SAFETY: pool lock held (we have `&mut self`); headers are live.
        unsafe {
            SuperSlab::links(ss, |l| {
                l.all_prev = null();
                l.all_next = old;
            });
            if !old.is_null() {
                SuperSlab::links(old, |l| l.all_prev = ss);
            }
            self.all = ss;
            self.superslabs += 1;
            self.avail_push(ss);
        }
        if ss != self.home {
            self.spare += 1; // fully free until claimed
        }
    }

    /// # Safety
    /// `ss` is live, ours, and not on the avail list.
    unsafe fn avail_push(&mut self, ss: *const SuperSlab) {
        let old = self.avail;
        // SAFETY: pool lock held.
        unsafe {
            SuperSlab::links(ss, |l| {
                l.in_avail = true;
                l.avail_prev = null();
                l.avail_next = old;
            });
            if !old.is_null() {
                SuperSlab::links(old, |l| l.avail_prev = ss);
            }
        }
        self.avail = ss;
    }

    /// # Safety
    /// `ss` is live, ours, and on the avail list.
    unsafe fn avail_remove(&mut self, ss: *const SuperSlab) {
        // SAFETY: pool lock held; neighbours are live members of the list.
        unsafe {
            let (prev, next) = SuperSlab::links(ss, |l| {
                l.in_avail = false;
                (l.avail_prev, l.avail_next)
            });
            if prev.is_null() {
                self.avail = next;
            } else {
                SuperSlab::links(prev, |l| l.avail_next = next);
            }
            if !next.is_null() {
                SuperSlab::links(next, |l| l.avail_prev = prev);
            }
        }
    }

    /// # Safety
    /// `ss` is live, ours, fully free, not home.
    unsafe fn unlink(&mut self, ss: *const SuperSlab) {
        // SAFETY: pool lock held.
        let bits = unsafe { SuperSlab::links(ss, |l| core::mem::take(&mut l.resident)) };
        self.forget_resident(bits.count_ones() as u64);
        // SAFETY: pool lock held; neighbours are live members of the list.
        unsafe {
            if SuperSlab::links(ss, |l| l.in_avail) {
                self.avail_remove(ss);
            }
            let (prev, next) = SuperSlab::links(ss, |l| (l.all_prev, l.all_next));
            if prev.is_null() {
                self.all = next;
            } else {
                SuperSlab::links(prev, |l| l.all_next = next);
            }
            if !next.is_null() {
                SuperSlab::links(next, |l| l.all_prev = prev);
            }
        }
        self.superslabs -= 1;
        for h in &mut self.span_hint {
            if core::ptr::eq(*h, ss) {
                *h = null();
            }
        }
    }

    /// Adds a SuperSlab from the warm cache or the OS (address space: the
    /// limit counts the slabs claimed from it), huge-paged if the arena is
    /// big or `dense` says the request is (and no limit forbids it).
    pub(crate) fn grow(&mut self, dense: bool) -> Option<*const SuperSlab> {
        // Huge pages pay once an arena is big: a few SuperSlabs are what a
        // request's arena with many size classes takes, one page per slab.
        // Not under a limit: a huge page would fill beyond the slabs the
        // limit counts, and its free slabs could not be decommitted.
        let limited = self.limit() != u64::MAX;
        let dense = (dense || self.superslabs >= DENSE_SUPERSLABS) && !limited;
        let base = warm::acquire(dense)?;
        // SAFETY: `acquire` hands out an unused, aligned SuperSlab.
        let ss = unsafe { SuperSlab::init(base.as_ptr(), self.heap, 0) };
        // SAFETY: a fresh header of ours, not shared yet.
        unsafe { SuperSlab::links(ss, |l| l.huge_paged = dense && os::HUGE_PAGES) };
        // SAFETY: fresh header of this arena, on no list.
        unsafe { self.link(ss) };
        Some(ss)
    }

    /// Clears `bits` in `ss`'s free mask, keeping the lists and counts right.
    ///
    /// # Safety
    /// `ss` is live and ours; every bit of `bits` is set in its mask.
    unsafe fn claim(&mut self, ss: *const SuperSlab, bits: u16) {
        // SAFETY: pool lock held.
        let mask = unsafe { SuperSlab::links(ss, |l| l.free_mask) };
        debug_assert_eq!(mask & bits, bits, "claiming slabs that are not free");
        if mask == ALL_FREE && ss != self.home {
            self.spare -= 1;
        }
        self.used += bits.count_ones() as usize;
        debug_assert!(self.held_bytes() as u64 <= self.limit(), "over the limit");
        // SAFETY: pool lock held.
        let warm = unsafe {
            SuperSlab::links(ss, |l| {
                l.free_mask = mask & !bits;
                let warm = l.resident & bits;
                l.resident &= !bits;
                warm
            })
        };
        self.forget_resident(warm.count_ones() as u64);
        if mask & !bits == 0 {
            // SAFETY: it had free slabs, so it is on the avail list.
            unsafe { self.avail_remove(ss) };
        }
    }

    /// Sets `bits` in `ss`'s free mask; a SuperSlab that becomes fully free
    /// is kept as a spare or given to the warm cache. Whether the arena
    /// kept it.
    ///
    /// # Safety
    /// `ss` is live and ours; the slabs of `bits` are no longer used.
    unsafe fn unclaim(&mut self, ss: *const SuperSlab, bits: u16) -> bool {
        // SAFETY: pool lock held.
        let mask = unsafe {
            SuperSlab::links(ss, |l| {
                debug_assert_eq!(l.free_mask & bits, 0, "freeing a free slab");
                l.free_mask |= bits;
                l.free_mask
            })
        };
        self.used -= bits.count_ones() as usize;
        // SAFETY: pool lock held.
        if !unsafe { SuperSlab::links(ss, |l| l.in_avail) } {
            // SAFETY: it is not on the list.
            unsafe { self.avail_push(ss) };
        }
        if mask == ALL_FREE && ss != self.home {
            if self.spare < MAX_SPARE {
                self.spare += 1;
            } else {
                // SAFETY: fully free, not home: nothing points into it.
                unsafe {
                    self.unlink(ss);
                    warm::release(&[NonNull::new_unchecked(ss as *mut u8)]);
                }
                return false;
            }
        }
        true
    }

    /// Notes `bits` of `ss`, just given back by [`Self::unclaim`], as
    /// emptied and resident; past the process-wide bound, decommits every
    /// such slab of this arena.
    ///
    /// # Safety
    /// As for [`Self::unclaim`], which returned `kept`.
    unsafe fn emptied(&mut self, ss: *const SuperSlab, bits: u16, kept: bool) {
        // SAFETY: pool lock held; the SuperSlab is ours while kept.
        if !kept || !os::CAN_DECOMMIT || unsafe { SuperSlab::links(ss, |l| l.huge_paged) } {
            return;
        }
        // SAFETY: pool lock held; the SuperSlab is still ours.
        unsafe { SuperSlab::links(ss, |l| l.resident |= bits) };
        let n = bits.count_ones() as u64;
        self.resident += n;
        if RESIDENT_FREE.fetch_add(n, Ordering::Relaxed) + n > MAX_RESIDENT_FREE
            && self.resident > KEEP_RESIDENT
            && self.deferring == 0
        {
            self.decommit_resident(KEEP_RESIDENT);
        }
    }

    /// A thread starts returning its cache: its emptied slabs wait for
    /// [`Self::end_retire`] (one `madvise` per run of slabs, not one per
    /// slab: each call is a TLB shootdown on every core running the
    /// process).
    pub(crate) fn begin_retire(&mut self) {
        self.deferring += 1;
    }

    /// Ends [`Self::begin_retire`], then trims (see [`Self::trim_resident`]).
    pub(crate) fn end_retire(&mut self) {
        self.deferring -= 1;
        self.trim_resident();
    }

    /// A thread left the arena: past a quarter of the process-wide bound,
    /// decommits every emptied slab it holds. An arena a thread left may
    /// not be used again for long, and nothing revisits it: with a thousand
    /// such arenas, each left holding a few emptied slabs until the whole
    /// bound was reached, the bound's 8 MiB stayed resident for good
    /// (thread churn beside 1,000 arenas: 26.6 -> 20.7 MiB peak RSS, time
    /// unchanged). Arenas in use keep the whole bound.
    pub(crate) fn trim_resident(&mut self) {
        if self.resident > 0 && RESIDENT_FREE.load(Ordering::Relaxed) > MAX_RESIDENT_FREE / 4 {
            self.decommit_resident(0);
        }
    }

    /// Decommits emptied, resident slabs of this arena until `keep` are
    /// left (whole SuperSlabs' worth at a time, newest SuperSlabs first).
    fn decommit_resident(&mut self, keep: u64) {
        let mut ss = self.all;
        while !ss.is_null() && self.resident > keep {
            // SAFETY: pool lock held; list members are live.
            let (mut bits, next) =
                unsafe { SuperSlab::links(ss, |l| (core::mem::take(&mut l.resident), l.all_next)) };
            self.forget_resident(bits.count_ones() as u64);
            while bits != 0 {
                let first = bits.trailing_zeros() as usize;
                let run = (bits >> first).trailing_ones() as usize;
                bits &= !((((1u32 << run) - 1) as u16) << first);
                // Slab 0 keeps the header (and the home's arena state).
                let skip = if first == 0 { META } else { 0 };
                let start = SuperSlab::slab_start(ss, first).wrapping_add(skip);
                // SAFETY: free slabs of our mapping: no block lives there;
                // page-aligned (slabs and META are).
                unsafe { os::decommit(NonNull::new_unchecked(start), run * SLAB_SIZE - skip) };
            }
            ss = next;
        }
    }

    /// Takes `n` slabs off this arena's resident count.
    fn forget_resident(&mut self, n: u64) {
        if n > 0 {
            self.resident -= n;
            RESIDENT_FREE.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Takes this arena's resident slabs off the process-wide count (the
    /// arena is destroyed: its SuperSlabs go to the warm cache).
    pub(crate) fn forget_all_resident(&mut self) {
        self.forget_resident(self.resident);
    }

    /// Gives every fully free SuperSlab but the home one to the warm cache.
    pub(crate) fn release_free_superslabs(&mut self) {
        let mut ss = self.all;
        while !ss.is_null() {
            // SAFETY: pool lock held; list members are live.
            let (mask, next) = unsafe { SuperSlab::links(ss, |l| (l.free_mask, l.all_next)) };
            if mask == ALL_FREE && ss != self.home {
                self.spare -= 1;
                // SAFETY: fully free, not home: nothing points into it.
                unsafe {
                    self.unlink(ss);
                    warm::release(&[NonNull::new_unchecked(ss as *mut u8)]);
                }
            }
            ss = next;
        }
    }

    /// Takes one free slab for a size class, within the limit.
    pub(crate) fn take_slab(&mut self) -> Option<(*const SuperSlab, usize)> {
        if !self.fits(SLAB_SIZE) {
            return None;
        }
        let ss = if self.avail.is_null() {
            self.grow(false)?
        } else {
            self.avail
        };
        // SAFETY: pool lock held; avail members have a free slab. A
        // resident one first: its pages are there.
        let idx = unsafe {
            SuperSlab::links(ss, |l| {
                let warm = if l.resident != 0 {
                    l.resident
                } else {
                    l.free_mask
                };
                warm.trailing_zeros() as usize
            })
        };
        // SAFETY: bit `idx` is set.
        unsafe { self.claim(ss, 1 << idx) };
        Some((ss, idx))
    }

    /// Gives back a slab that a class emptied.
    ///
    /// # Safety
    /// Slab `idx` of `ss` was taken with [`Self::take_slab`], its state is
    /// already `Use::Free`, and no block of it is in use.
    pub(crate) unsafe fn release_slab(&mut self, ss: *const SuperSlab, idx: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.unclaim(ss, 1 << idx) };
    }

    /// Gives back a slab emptied while the arena lives: as
    /// [`Self::release_slab`], then counted resident (see the module docs).
    ///
    /// # Safety
    /// As for [`Self::release_slab`].
    pub(crate) unsafe fn release_emptied_slab(&mut self, ss: *const SuperSlab, idx: usize) {
        // SAFETY: forwarded contract.
        unsafe {
            let kept = self.unclaim(ss, 1 << idx);
            self.emptied(ss, 1 << idx, kept);
        }
    }

    /// Whether a SuperSlab of the arena has a free slab.
    pub(crate) fn has_free_slab(&self) -> bool {
        !self.avail.is_null()
    }

    /// Where `k` contiguous free slabs starting at a multiple of `step`
    /// are, in the SuperSlabs the arena holds.
    pub(crate) fn find_span(&self, k: usize, step: usize) -> Option<(*const SuperSlab, usize)> {
        let fit = |mask: u16| span_start(mask, k, step);
        // Where spans of this length or longer were freed last: recently
        // touched headers, most likely to fit.
        for &hint in &self.span_hint[k..] {
            if !hint.is_null() {
                // SAFETY: pool lock held; a hint is one of our live SuperSlabs.
                let mask = unsafe { SuperSlab::links(hint, |l| l.free_mask) };
                if let Some(i) = fit(mask) {
                    return Some((hint, i));
                }
            }
        }
        let mut ss = self.avail;
        while !ss.is_null() {
            // SAFETY: pool lock held; list members are live.
            let (mask, next) = unsafe { SuperSlab::links(ss, |l| (l.free_mask, l.avail_next)) };
            if let Some(i) = fit(mask) {
                return Some((ss, i));
            }
            ss = next;
        }
        None
    }

    /// Takes `k` contiguous slabs (never slab 0) starting at an index that
    /// is a multiple of `step`, within the limit. Marks them as a span. A
    /// SuperSlab added for them is huge-paged if `dense` (see
    /// [`DENSE_SPAN`]).
    pub(crate) fn take_span(
        &mut self,
        k: usize,
        step: usize,
        dense: bool,
    ) -> Option<(*const SuperSlab, usize)> {
        if !self.fits(k * SLAB_SIZE) {
            return None;
        }
        let found = self.find_span(k, step);
        let fit = |mask: u16| span_start(mask, k, step);
        let (ss, idx) = match found {
            Some(f) => f,
            None => {
                let ss = self.grow(dense && k >= DENSE_SPAN)?;
                (ss, fit(ALL_FREE)?)
            }
        };
        let bits = ((((1u32 << k) - 1) as u16) as u32) << idx;
        // SAFETY: `fit` checked every bit.
        unsafe { self.claim(ss, bits as u16) };
        for i in idx..idx + k {
            let use_ = if i == idx {
                Use::SpanHead(k as u8)
            } else {
                Use::SpanTail
            };
            // SAFETY: pool lock held; these slabs are now ours.
            unsafe { (*ss).slabs[i].with(|s| s.use_ = use_) };
        }
        Some((ss, idx))
    }

    /// Gives back a span; returns its length in slabs.
    ///
    /// # Safety
    /// Slab `idx` of `ss` heads a span of this arena that is no longer used.
    /// `emptied`: freed while the arena lives (not by a reset), so counted
    /// resident (see the module docs).
    pub(crate) unsafe fn release_span(
        &mut self,
        ss: *const SuperSlab,
        idx: usize,
        emptied: bool,
    ) -> usize {
        // SAFETY: pool lock held.
        let k = match unsafe { (*ss).slabs[idx].with(|s| s.use_) } {
            Use::SpanHead(k) => k as usize,
            other => panic!("smallmid: freeing a large block whose slab is {other:?}: wrong layout or double free"),
        };
        for i in idx..idx + k {
            // SAFETY: pool lock held.
            unsafe { (*ss).slabs[i].with(|s| s.use_ = Use::Free) };
        }
        let bits = ((((1u32 << k) - 1) as u16) as u32).wrapping_shl(idx as u32) as u16;
        self.span_hint[k] = ss;
        // SAFETY: forwarded contract.
        unsafe {
            let kept = self.unclaim(ss, bits);
            if emptied {
                self.emptied(ss, bits, kept);
            }
        }
        k
    }

    /// All SuperSlabs, for release when the arena is dropped.
    pub(crate) fn all_superslabs(&self) -> smallvec::SmallVec<[NonNull<u8>; 8]> {
        let mut out = smallvec::SmallVec::new();
        let mut ss = self.all;
        while let Some(p) = NonNull::new(ss as *mut u8) {
            out.push(p);
            // SAFETY: pool lock held; list members are live.
            ss = unsafe { SuperSlab::links(ss, |l| l.all_next) };
        }
        debug_assert_eq!(out.len(), self.superslabs);
        out
    }
}

/// The first slab index, a multiple of `step` and never 0, at which `k`
/// slabs free in `mask` start, if any. Bit operations, no search loop:
/// this runs for every SuperSlab a span allocation looks at.
fn span_start(mask: u16, k: usize, step: usize) -> Option<usize> {
    debug_assert!((1..SLABS).contains(&k) && step >= 1);
    if (mask.count_ones() as usize) < k {
        return None;
    }
    let mask = mask as u32;
    // Bit `i` of `runs`: slabs `i..i + k` are all free (bits past slab 15
    // shift in as zeros, so no run passes the end).
    let mut runs = mask;
    for j in 1..k {
        runs &= mask >> j;
    }
    runs &= STARTS[step.min(SLABS)];
    (runs != 0).then(|| runs.trailing_zeros() as usize)
}

/// `STARTS[step]`: the slab indexes a span may start at: multiples of
/// `step`, never slab 0 (the header's).
const STARTS: [u32; SLABS + 1] = {
    let mut t = [0u32; SLABS + 1];
    let mut step = 1;
    while step <= SLABS {
        let mut i = step;
        while i < SLABS {
            t[step] |= 1 << i;
            i += step;
        }
        step += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_start_finds_the_first_fitting_run() {
        let stride = if cfg!(miri) { 4099 } else { 1 };
        for mask in (0..=u16::MAX).step_by(stride) {
            for k in 1..SLABS {
                for step in 1..SLABS {
                    let want = ((1u32 << k) - 1) as u16;
                    // The search this replaced.
                    let search = (step..=SLABS - k)
                        .step_by(step)
                        .find(|&i| (mask >> i) & want == want);
                    assert_eq!(
                        span_start(mask, k, step),
                        search,
                        "mask {mask:#x} k {k} step {step}"
                    );
                }
            }
        }
    }
}
