//! The arena's per-class central lists: where front caches refill from and
//! flush to. This is also how cross-thread frees work.
//!
//! A block freed on any thread goes into *that* thread's front cache for the
//! arena (no atomic, no lock); when the cache is full it flushes a batch
//! here, under the class lock, each block returning to its own slab's free
//! list. The thread that allocated the block never needs to hear about it.
//! A producer/consumer pair therefore costs one lock per batch on each side,
//! not one atomic per block.
//!
//! Invariant (class lock): the class list holds exactly the slabs of that
//! class with a block available (`SlabState::available`). A slab whose last
//! block comes back leaves the class and returns to the pool at once.

use crate::heap::Heap;
use crate::pool::{Pool, MAX_MIXED};
use crate::size_class::{CLASS_ALIGN, CLASS_SIZE};
use crate::slab::{next_of, set_next, Batch, Slab, SlabState, Use, SLAB_SIZE};
use crate::superslab::{SuperSlab, META};
use crate::sync::lock;
use core::ptr::{null, null_mut};

/// Head of one class's list of slabs with blocks available.
#[derive(Debug)]
pub(crate) struct ClassList {
    head: *const Slab,
}

// SAFETY: the raw list is only followed under the class mutex.
unsafe impl Send for ClassList {}

impl ClassList {
    pub(crate) const fn new() -> Self {
        ClassList { head: null() }
    }

    #[cfg(feature = "test-hooks")]
    pub(crate) fn head(&self) -> *const Slab {
        self.head
    }

    /// Forgets every slab on the list (their states are reset elsewhere).
    pub(crate) fn clear(&mut self) {
        self.head = null();
    }

    /// # Safety
    /// Class lock held; `s` is the state of `slab`, not on the list.
    unsafe fn push(&mut self, slab: *const Slab, s: &mut SlabState) {
        debug_assert!(!s.in_partial);
        s.in_partial = true;
        s.prev = null();
        s.next = self.head;
        if !self.head.is_null() {
            // SAFETY: list members are live; `head != slab`.
            unsafe { (*self.head).with(|h| h.prev = slab) };
        }
        self.head = slab;
    }

    /// # Safety
    /// Class lock held; `s` is the state of a slab on the list.
    unsafe fn remove(&mut self, s: &mut SlabState) {
        debug_assert!(s.in_partial);
        s.in_partial = false;
        let (prev, next) = (s.prev, s.next);
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: neighbours are live, distinct from the slab itself.
            unsafe { (*prev).with(|p| p.next = next) };
        }
        if !next.is_null() {
            // SAFETY: as above.
            unsafe { (*next).with(|n| n.prev = prev) };
        }
    }
}

/// Consecutive blocks of one slab being flushed: `n` blocks linked from
/// `head` to `tail` (the cache's own links).
struct Run {
    slab: *const Slab,
    head: *mut u8,
    tail: *mut u8,
    n: u32,
}

/// The slab record of block `b`.
#[inline]
pub(crate) fn slab_of(b: *mut u8) -> (*const SuperSlab, usize, *const Slab) {
    let ss = SuperSlab::of(b as usize);
    let idx = SuperSlab::slab_index(b as usize);
    // SAFETY: `b` lies in a live SuperSlab, so its header is live.
    let slab = unsafe { &(*ss).slabs[idx] as *const Slab };
    (ss, idx, slab)
}

impl Heap {
    /// Gets a slab with blocks for `class` on the list, from the pool if
    /// needed. Class lock held by the caller (`list`).
    fn class_slab(&self, list: &mut ClassList, class: usize) -> Option<*const Slab> {
        if list.head.is_null() {
            let slab = self.new_class_slab(class)?;
            // SAFETY: class lock held; a fresh class slab is on no list.
            unsafe { (*slab).with(|s| list.push(slab, s)) };
        }
        Some(list.head)
    }

    /// Takes a free slab from the pool and lays it out for `class`.
    ///
    /// The caller holds `class`'s lock: from here on the slab's state is
    /// that lock's (see [`crate::slab::SlabState`]), and every reader that
    /// walks slabs (`audit`, reset) holds it too.
    fn new_class_slab(&self, class: usize) -> Option<*const Slab> {
        let (ss, idx) = lock(&self.pool).take_slab()?;
        // SAFETY: the slab is ours now; the class lock protects its state.
        let slab = unsafe { &(*ss).slabs[idx] as *const Slab };
        // SAFETY: class lock held (contract); the slab was free, on no list.
        unsafe { (*slab).with(|s| init_slab(s, ss, idx, class)) };
        Some(slab)
    }

    /// Takes a slab's reusable blocks of `class` for a front cache: the
    /// whole free list of a slab on the class list, else the whole uncarved
    /// range of a fresh slab. `None` when the pool is out of memory.
    ///
    /// `had_range`: the cache already took a whole slab of this class, so
    /// a second one makes the heap dirty (see [`Heap::dirty`]).
    pub(crate) fn refill(&self, class: usize, taker: u32, had_range: bool) -> Option<Batch> {
        let mut list = lock(&self.classes[class]);
        let slab = if list.head.is_null() {
            if had_range {
                self.mark_dirty();
            }
            self.new_class_slab(class)?
        } else {
            self.mark_dirty();
            list.head
        };
        // SAFETY: class lock held; the slab serves this class.
        let batch = unsafe {
            (*slab).with(|s| {
                let b = s.take();
                s.taker = taker;
                if s.in_partial && !s.available() {
                    list.remove(s);
                }
                b
            })
        };
        Some(batch)
    }

    /// Takes a single block of `class` (threads without a cache).
    pub(crate) fn alloc_one(&self, class: usize) -> Option<*mut u8> {
        self.mark_dirty();
        let mut list = lock(&self.classes[class]);
        let slab = self.class_slab(&mut list, class)?;
        // SAFETY: class lock held; the slab serves this class and has a block.
        let b = unsafe {
            (*slab).with(|s| {
                let b = if s.free_count > 0 {
                    let b = s.free;
                    s.free = next_of(b);
                    s.free_count -= 1;
                    b
                } else {
                    let b = s.bump;
                    s.bump = b.wrapping_add(s.size as usize);
                    b
                };
                s.used += 1;
                s.debug_check();
                if !s.available() {
                    list.remove(s);
                }
                b
            })
        };
        Some(b)
    }

    /// Returns the first `count` blocks of `class` linked from `head`, each
    /// to its slab. Returns how many went to slabs last taken from by a
    /// thread other than `flusher` (cross-thread frees), and the rest of
    /// the chain after them (read before each block is reused, so a cache
    /// splitting its list needs no walk of its own).
    ///
    /// Consecutive blocks of one slab (a cache's blocks mostly come in runs
    /// of one slab: a refill takes a slab's whole list or range) go back as
    /// the chain they already form: per block a load of its link, a mask
    /// and a compare; per run one visit of the slab's state and one store.
    /// The loads are a dependent chain through freed blocks: most of a
    /// flush's time.
    ///
    /// # Safety
    /// The first `count` blocks on the chain are live blocks of `class`
    /// from this arena, not used afterwards, each appearing once.
    pub(crate) unsafe fn flush(
        &self,
        class: usize,
        mut head: *mut u8,
        count: u32,
        flusher: u32,
    ) -> (u32, *mut u8) {
        let mut cross = 0;
        self.mark_dirty();
        let mut list = lock(&self.classes[class]);
        let mut run = Run {
            slab: null(),
            head: null_mut(),
            tail: null_mut(),
            n: 0,
        };
        for _ in 0..count {
            debug_assert!(!head.is_null());
            let b = head;
            // SAFETY: chain members are ours; read the link before reuse.
            head = unsafe { next_of(b) };
            let (ss, _, slab) = slab_of(b);
            if slab == run.slab {
                // Linked from the run's last block already.
                run.tail = b;
                run.n += 1;
                continue;
            }
            // SAFETY: class lock held; the run's blocks are ours (contract).
            cross += unsafe { self.put_run(&mut list, class, &run, flusher) };
            // SAFETY: `b` lies in a live SuperSlab.
            if unsafe { SuperSlab::is_seeds(ss) } {
                // A seed's block, freed after its arena grew: it belongs to
                // no slab and stays in the seed until the arena's reset or
                // drop (the free was counted when the cache took it).
                run.slab = null();
                continue;
            }
            run = Run {
                slab,
                head: b,
                tail: b,
                n: 1,
            };
        }
        // SAFETY: as above.
        cross += unsafe { self.put_run(&mut list, class, &run, flusher) };
        (cross, head)
    }

    /// Returns a run of blocks of one slab (none if `run.slab` is null);
    /// how many went to a slab another thread last took from.
    ///
    /// # Safety
    /// `list` is `class`'s locked list; the run's blocks are live blocks of
    /// `class` from this arena, in `run.slab`, not used afterwards.
    unsafe fn put_run(&self, list: &mut ClassList, class: usize, run: &Run, flusher: u32) -> u32 {
        let slab = run.slab;
        if slab.is_null() {
            return 0;
        }
        let (ss, idx, _) = slab_of(run.head);
        // SAFETY: the blocks lie in a live SuperSlab.
        if unsafe { (*slab).is_mixed() } {
            // SAFETY: as above; the blocks are out of that mixed slab.
            unsafe { self.mixed_put(ss, idx, CLASS_SIZE[class] * run.n, -(run.n as i32)) };
            return 0;
        }
        // SAFETY: class lock held; the blocks' slab serves this class
        // (asserted: else a misused block).
        let (empty, cross) = unsafe {
            (*slab).with(|s| {
                assert!(
                    s.use_ == Use::Class(class as u8),
                    "smallmid: block {:p} freed as class {class} but its slab is {:?}: wrong layout, \
                     foreign pointer or double free",
                    run.head,
                    s.use_
                );
                let cross = if s.taker != flusher { run.n } else { 0 };
                if s.put_chain(run.head, run.tail, run.n) {
                    list.push(slab, s);
                }
                (leave_class(list, s), cross)
            })
        };
        if empty {
            // SAFETY: the slab is empty and marked free.
            unsafe { lock(&self.pool).release_emptied_slab(ss, idx) };
        }
        cross
    }

    /// Frees one block straight to its slab (threads without a cache).
    ///
    /// # Safety
    /// As for [`Self::flush`] with a chain of one.
    pub(crate) unsafe fn free_one(&self, class: usize, b: *mut u8) {
        // SAFETY: a chain of one block, terminated.
        unsafe {
            set_next(b, null_mut());
            self.flush(class, b, 1, u32::MAX);
        }
    }

    /// Returns a cache's unused bump range.
    ///
    /// # Safety
    /// The range came from [`Self::refill`] of `class` and is unused.
    pub(crate) unsafe fn put_range(&self, class: usize, start: *mut u8, end: *mut u8) {
        if start >= end {
            return;
        }
        self.mark_dirty();
        let mut list = lock(&self.classes[class]);
        let (ss, idx, slab) = slab_of(start);
        // SAFETY: class lock held; the range belongs to this class's slab.
        let empty = unsafe {
            (*slab).with(|s| {
                if s.put_range(start, end) {
                    list.push(slab, s);
                }
                leave_class(&mut list, s)
            })
        };
        if empty {
            // SAFETY: the slab is empty and marked free.
            unsafe { lock(&self.pool).release_emptied_slab(ss, idx) };
        }
    }
}

impl Heap {
    /// A mixed range for a front cache: a remainder another cache gave
    /// back, else (with `fresh`) a free slab laid out as a mixed slab,
    /// whole. `None` when there is no remainder and no fresh slab may be
    /// taken: not asked, [`MAX_MIXED`] held, or the pool out of memory.
    pub(crate) fn take_mixed(&self, fresh: bool) -> Option<(*mut u8, *mut u8)> {
        let mut pool = lock(&self.pool);
        for &(ss, idx) in pool.mixed_slabs() {
            // SAFETY: a mixed slab of ours; its state is the pool lock's.
            let slab = unsafe { &(*ss).slabs[idx] };
            // SAFETY: as above.
            let (bump, end) = unsafe { slab.with(|s| (s.bump, s.end)) };
            let len = end as usize - bump as usize;
            if len >= MIN_PARKED && slab.mixed_hold(len as u32) {
                // SAFETY: as above.
                unsafe { slab.with(|s| s.bump = s.end) };
                return Some((bump, end));
            }
        }
        if !fresh || pool.mixed_slabs().len() >= MAX_MIXED {
            return None;
        }
        let (ss, idx) = pool.take_slab()?;
        pool.add_mixed(ss, idx);
        // SAFETY: the slab is ours now; a mixed slab's state is the pool
        // lock's, which we hold.
        let range = unsafe { (*ss).slabs[idx].with(|s| init_mixed(s, ss, idx)) };
        // SAFETY: as above.
        unsafe { (*ss).slabs[idx].mixed_init((range.1 as usize - range.0 as usize) as u32) };
        Some(range)
    }

    /// Gives `bytes` back to mixed slab `idx` of `ss`, reporting `blocks`
    /// carved (see [`Slab::mixed_put`]); the slab goes to the pool when all
    /// is back.
    ///
    /// # Safety
    /// The bytes and blocks are out of that mixed slab and unused from now.
    pub(crate) unsafe fn mixed_put(
        &self,
        ss: *const SuperSlab,
        idx: usize,
        bytes: u32,
        blocks: i32,
    ) {
        // SAFETY: the slab is live while something of it is out.
        if unsafe { (*ss).slabs[idx].mixed_put(bytes, blocks) } {
            // SAFETY: nothing of it is out; we emptied it.
            unsafe { free_mixed(&mut lock(&self.pool), ss, idx) };
        }
    }

    /// Returns a cache's mixed range: its uncarved `[bump, end)`, the
    /// padding it carved, and how many blocks it carved. Unless that
    /// empties the slab, an uncarved rest worth it stays parked in the
    /// slab for the next cache that needs a range ([`Self::take_mixed`]).
    ///
    /// # Safety
    /// The range came from [`Self::take_mixed`] (or a reset) and its
    /// uncarved part is unused.
    pub(crate) unsafe fn put_mixed(&self, bump: *mut u8, end: *mut u8, pad: u32, carved: u32) {
        if end.is_null() {
            return;
        }
        self.mark_dirty();
        let (ss, idx, slab) = slab_of(end.wrapping_sub(1));
        let len = end as usize - bump as usize;
        // The uncarved rest, the padding, and the hold (see `mixed_init`).
        let bytes = len as u32 + pad + 1;
        // Under the pool lock: a flusher that empties the slab meanwhile
        // frees it only after the rest is parked (or not).
        let mut pool = lock(&self.pool);
        // SAFETY: the slab is live: we still hold its range.
        if unsafe { (*slab).mixed_put(bytes, carved as i32) } {
            // SAFETY: nothing of it is out; we emptied it.
            unsafe { free_mixed(&mut pool, ss, idx) };
        } else if len >= MIN_PARKED {
            // SAFETY: a mixed slab's state is the pool lock's.
            unsafe {
                (*slab).with(|s| {
                    s.bump = bump;
                    s.end = end;
                })
            };
        }
    }
}

/// Uncarved rest of a mixed range worth parking for another cache.
const MIN_PARKED: usize = 1024;

/// Gives an emptied mixed slab to the pool.
///
/// # Safety
/// `pool` is the arena's pool lock; nothing of mixed slab `idx` of `ss` is
/// out, and nobody else will find it (its count is 0).
unsafe fn free_mixed(pool: &mut Pool, ss: *const SuperSlab, idx: usize) {
    // SAFETY: per contract; its state is the pool lock's.
    unsafe {
        let slab = &(*ss).slabs[idx];
        slab.with(|s| s.use_ = Use::Free);
        slab.mixed_clear();
        pool.remove_mixed(ss, idx);
        pool.release_emptied_slab(ss, idx);
    }
}

/// If the slab is empty, takes it off its class (the caller then gives it
/// to the pool, outside the slab's borrow). Returns whether it did.
///
/// # Safety
/// Class lock held (`list`); `s` is a slab state of that class.
unsafe fn leave_class(list: &mut ClassList, s: &mut SlabState) -> bool {
    if !s.is_empty() {
        return false;
    }
    if s.in_partial {
        // SAFETY: it is on this class's list.
        unsafe { list.remove(s) };
    }
    s.use_ = Use::Free;
    true
}

/// Where the blocks of slab `idx` may start: after the metadata in slab 0.
fn blocks_start(ss: *const SuperSlab, idx: usize, align: usize) -> *mut u8 {
    let slab_start = SuperSlab::slab_start(ss, idx);
    if idx == 0 {
        slab_start.wrapping_add(META.next_multiple_of(align))
    } else {
        slab_start
    }
}

/// The whole range of mixed slab `idx` of `ss`. In slab 0 it starts right
/// after the metadata: an arena's first blocks share the arena state's
/// last page.
pub(crate) fn mixed_range(ss: *const SuperSlab, idx: usize) -> (*mut u8, *mut u8) {
    let slab = SuperSlab::slab_start(ss, idx);
    let skip = if idx == 0 {
        // SAFETY: a live header (the caller holds one of its slabs).
        unsafe { (*ss).blocks_from }
    } else {
        0
    };
    (slab.wrapping_add(skip), slab.wrapping_add(SLAB_SIZE))
}

/// Lays out slab `idx` of `ss` as a mixed slab; returns its range.
fn init_mixed(s: &mut SlabState, ss: *const SuperSlab, idx: usize) -> (*mut u8, *mut u8) {
    let (start, end) = mixed_range(ss, idx);
    s.use_ = Use::Mixed;
    // Nothing parked: the whole range goes to a cache.
    s.bump = end;
    s.end = end;
    s.in_partial = false;
    crate::asan::poison(start, end as usize - start as usize);
    (start, end)
}

/// Lays out slab `idx` of `ss` for `class`. In slab 0 the blocks start after
/// the metadata, at the class's alignment.
fn init_slab(s: &mut SlabState, ss: *const SuperSlab, idx: usize, class: usize) {
    let start = blocks_start(ss, idx, CLASS_ALIGN[class] as usize);
    let slab_end = SuperSlab::slab_start(ss, idx).wrapping_add(SLAB_SIZE);
    s.init_class(class as u8, CLASS_SIZE[class], start, slab_end);
}
