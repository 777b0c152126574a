//! `SmallMidArena`: the handle users hold, the state it points to, and the
//! arena's whole life in one place: create, reset, recycle, destroy here;
//! the threads that use it, their caches and the paths that start at them
//! in [`members`]; thread exit in [`threads`].
//!
//! The arena composes the lower layers, which know nothing of it: its
//! [`Heap`] (central lists, pool, large blocks), and per thread a
//! [`ThreadCache`]. Dependencies run one way: `arena` -> `cache` -> `heap`
//! -> `central`, `large`, `pool` -> `superslab`, `slab`, `os`.
//!
//! # Recycling
//! Dropping a handle frees every block at once. An arena of at most
//! [`MAX_SPARE_SUPERSLABS`] SuperSlabs is then reset in place (whichever
//! threads used it: their caches are detached, see [`threads`]) and
//! kept as the dropping thread's spare; the next `SmallMidArena::new()` on
//! that thread takes it with no lock and no system call. Reset keeps one
//! slab per size class the dropping thread's cache used, whole, as that
//! cache's bump range, so the next arena's first allocation of each class
//! is a bump. A spare a thread replaces goes to the shared spares, which
//! a new arena of any thread takes when its thread has none (a new arena
//! with no spare at hand starts in a [`seed`], and takes one when it
//! grows). Larger arenas are
//! destroyed: huge blocks unmapped, SuperSlabs to the warm cache.

use crate::cache::ThreadCache;
use crate::checked::Checked;
use crate::heap::Heap;
use crate::large;
use crate::slab::{Use, SLAB_SIZE};
use crate::superslab::{SuperSlab, META, STATE_OFFSET, SUPERSLAB_SIZE};
use crate::sync::{global, lock, try_lock, AtomicPtr, AtomicU64, Mutex, Ordering};
use crate::thread;
use crate::warm;
use allocator_api2::alloc::AllocError;
use core::fmt;
use core::ptr::{null_mut, NonNull};
use smallvec::SmallVec;

mod members;
mod seed;
mod threads;
pub(crate) use members::Front;
pub(crate) use members::{Link, Member, MembersLock, MAX_TIDS};
pub(crate) use seed::{trim as trim_seeds, Seed};
use threads::ThreadRecord;

/// Largest arena kept as a spare, in SuperSlabs.
const MAX_SPARE_SUPERSLABS: usize = 4;

/// Everything an arena owns, at a fixed address inside its home SuperSlab.
///
/// Invariants: every heap lives in an arena state, at its `heap` field;
/// every SuperSlab of its pool names the heap as owner; the cache
/// slot of thread index `t` is used only by the thread holding `t` (see
/// [`members`]); a thread whose record lists the arena has a cache in
/// it (see [`threads`]).
#[repr(C)]
pub(crate) struct ArenaState {
    /// The slot table: first, so that a handle names a state or a seed by
    /// its front (see [`SmallMidArena`]).
    pub(crate) front: Front,
    /// What the arena's threads share behind their caches (a heap finds
    /// its arena by its offset: [`ArenaState::of_heap`]).
    pub(crate) heap: Heap,
    pub(crate) members: MembersLock,
    /// The first thread's membership, so a one-thread arena allocates none.
    pub(crate) first: Member,
    /// Live blocks, under the `checked` feature (else nothing).
    pub(crate) checked: Checked,
    /// The seed the arena started in, while its blocks may live (see
    /// [`seed`]); null for an arena made whole.
    seed: AtomicPtr<Seed>,
}

// The state sits in its home SuperSlab's slab 0, after the header.
const _: () = assert!(STATE_OFFSET + core::mem::size_of::<ArenaState>() <= META);
const _: () = assert!(core::mem::align_of::<ArenaState>() <= 64);

/// A memory arena for small and mid-sized objects, usable from any thread.
///
/// `SmallMidArena` implements [`allocator_api2::alloc::Allocator`] (and with
/// the `nightly` feature, `core::alloc::Allocator`), so collections take
/// `&arena` as their allocator. Any thread may allocate from a shared
/// `&SmallMidArena` and free any block; each thread is served from its own
/// front cache, with no atomic operation and no lock on the fast path.
/// Memory freed inside the arena is reused at once. Dropping the arena
/// releases everything still allocated in it, at once; its memory stays
/// warm for the next arena.
///
/// The handle is one pointer; the state it points to never moves, so the
/// handle may be moved (into an `Arc`, across threads) while blocks are live.
///
/// A new arena with no warm spare at hand starts as a 512-byte seed,
/// shared with other arenas' seeds, that serves its first few small
/// blocks; it grows its full state (and its first SuperSlab) when a block
/// does not fit. So many small arenas cost what they hold.
///
/// # Example
/// ```
/// use allocator_api2::vec::Vec;
/// use smallmid::SmallMidArena;
///
/// let arena = SmallMidArena::new();
/// let mut v = Vec::new_in(&arena);
/// v.extend_from_slice(&[1u32, 2, 3]);
/// assert_eq!(v.iter().sum::<u32>(), 6);
/// ```
pub struct SmallMidArena {
    /// The front of the arena's state, or of its seed until the arena
    /// grows: then of the state, for good. The fast path reads only the
    /// front (a seed's slots are null: it misses).
    state: AtomicPtr<Front>,
}

/// What a handle points to.
pub(crate) enum View<'a> {
    Full(&'a ArenaState),
    Seed(&'a Seed),
}

// SAFETY: all shared state behind the handle is synchronized: per-thread
// caches by thread index, the rest by the class, pool and members locks.
unsafe impl Send for SmallMidArena {}
// SAFETY: as above; `&SmallMidArena` is meant to be shared across threads.
unsafe impl Sync for SmallMidArena {}

impl SmallMidArena {
    /// Creates an arena with default settings.
    ///
    /// Takes this thread's recycled spare arena (no lock, no system call),
    /// else a shared spare another thread dropped (a shard's lock), else a
    /// 512-byte seed shared with other arenas' seeds, which serves the
    /// first small blocks; the arena grows its state (a shared spare, or a
    /// SuperSlab) when a block does not fit.
    ///
    /// # Panics
    /// If the OS refuses memory; see [`Self::try_new`].
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let b = allocator_api2::boxed::Box::new_in(7u64, &arena);
    /// assert_eq!(*b, 7);
    /// ```
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Creates an arena with default settings, or `AllocError` if the OS
    /// refuses memory.
    ///
    /// # Errors
    /// `AllocError` when no SuperSlab can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::try_new()?;
    /// # Ok::<(), allocator_api2::alloc::AllocError>(())
    /// ```
    pub fn try_new() -> Result<Self, AllocError> {
        Self::builder().try_build()
    }

    /// A builder for arenas with non-default settings.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::builder()
    ///     .memory_limit(8 << 20)
    ///     .build();
    /// # drop(arena);
    /// ```
    pub fn builder() -> Builder {
        Builder {
            memory_limit: usize::MAX,
        }
    }

    fn with(state: *mut Front) -> Self {
        thread::count_live(1);
        SmallMidArena {
            state: AtomicPtr::new(state),
        }
    }

    /// The front the handle names (see the type), with the provenance of
    /// the whole state or seed. Live until the handle is dropped.
    #[inline(always)]
    pub(crate) fn front(&self) -> *const Front {
        // Acquire: a state grown by another thread is read through it.
        self.state.load(Ordering::Acquire)
    }

    /// The state, or the seed of an arena that has not grown (as far as
    /// this thread has seen: the seed then names the state).
    #[inline(always)]
    pub(crate) fn view(&self) -> View<'_> {
        // SAFETY: the handle's front, live while `self` is.
        unsafe { View::of(self.front()) }
    }

    /// The full state, if the arena grew one.
    pub(crate) fn full(&self) -> Option<&ArenaState> {
        match self.view() {
            View::Full(st) => Some(st),
            View::Seed(seed) => seed.full(),
        }
    }

    /// The full state, grown now if the arena has none.
    ///
    /// # Errors
    /// `AllocError` if no memory can be had for it.
    #[inline]
    pub(crate) fn grown(&self) -> Result<&ArenaState, AllocError> {
        match self.view() {
            View::Full(st) => Ok(st),
            View::Seed(seed) => self.grow(seed),
        }
    }

    #[cold]
    #[inline(never)]
    fn grow<'a>(&'a self, seed: &'a Seed) -> Result<&'a ArenaState, AllocError> {
        let st = seed.grow().ok_or(AllocError)?;
        self.grown_to(st);
        Ok(st)
    }

    /// Points the handle at the state its seed grew (it may still point
    /// to the seed when another thread, or an `ArenaBox`, grew it).
    #[cold]
    pub(crate) fn grown_to(&self, st: &ArenaState) {
        // Release: the state's fields before its address (see `front`).
        self.state.store(st.front_ptr(), Ordering::Release);
    }

    /// The seed the arena started in, while its blocks may live.
    pub(crate) fn seed(&self) -> Option<&Seed> {
        match self.view() {
            View::Seed(seed) => Some(seed),
            // SAFETY: a state's seed lives until its reset or drop, which
            // take the handle exclusively.
            View::Full(st) => unsafe { st.seed.load(Ordering::Relaxed).as_ref() },
        }
    }

    /// Frees every block of the arena at once and keeps its memory warm for
    /// what comes next, like `bumpalo::Bump::reset`.
    ///
    /// Whichever threads used the arena, their front caches are detached
    /// (each costs that thread's record lock, uncontended unless the thread
    /// is exiting); then every slab is reset in place: per size class the
    /// calling thread's cache used, one slab goes back to that cache whole,
    /// as its bump range, so the next allocation of the class is a bump;
    /// other slabs and spans return to the arena's pool, huge blocks are
    /// unmapped. Nothing is unmapped but huge blocks, and no memory is
    /// written but the slab headers. Cost: O(SuperSlabs + threads that used
    /// the arena), about what dropping and re-creating it costs, minus the
    /// create.
    ///
    /// `&mut self` guarantees that no collection or `ArenaBox` borrowing
    /// the arena is alive.
    ///
    /// # Example
    /// ```
    /// use allocator_api2::vec::Vec;
    /// let mut arena = smallmid::SmallMidArena::new();
    /// for request in 0..3u64 {
    ///     let mut v = Vec::new_in(&arena);
    ///     v.extend(0..100 * request);
    ///     drop(v);
    ///     arena.reset();
    ///     assert_eq!(arena.stats().blocks_in_use, 0);
    /// }
    /// ```
    pub fn reset(&mut self) {
        match self.view() {
            View::Seed(seed) if seed.full().is_none() => seed.rewind(),
            _ => {
                let st = self.full().expect("grown");
                // The reset frees the seed: the handle must not name it.
                self.grown_to(st);
                // SAFETY: `&mut self` proves no borrow of the arena is
                // alive, so no other thread allocates or frees here and no
                // block is used again.
                unsafe { st.reset_all() }
            }
        }
    }

    /// Returns the blocks the calling thread's front cache holds for this
    /// arena, so that other threads can reuse them (a thread's cache is
    /// also returned when the thread exits), and the slabs a reset kept for
    /// other threads' next use. Useful before a thread goes idle for a long
    /// time. An allocation that would fail does this first.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// drop(arena.alloc([0u8; 300]));
    /// arena.flush_thread_cache();
    /// ```
    pub fn flush_thread_cache(&self) {
        if let Some(st) = self.full() {
            st.flush_current_thread();
        }
    }

    /// The memory limit this arena was built with (`usize::MAX` if none).
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::builder().memory_limit(4 << 20).build();
    /// assert_eq!(arena.memory_limit(), 4 << 20);
    /// assert_eq!(smallmid::SmallMidArena::new().memory_limit(), usize::MAX);
    /// ```
    pub fn memory_limit(&self) -> usize {
        let st = match self.view() {
            View::Full(st) => st,
            View::Seed(seed) => match seed.limit() {
                Ok(limit) => return limit,
                Err(st) => st,
            },
        };
        st.heap.limit.load(Ordering::Relaxed) as usize
    }
}

impl Default for SmallMidArena {
    fn default() -> Self {
        Self::new()
    }
}

/// Cheap: no lock, no walk over thread caches (use [`SmallMidArena::stats`]).
impl fmt::Debug for SmallMidArena {
    /// Cheap: no lock, no walk (see [`SmallMidArena::stats`] for counters).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The grown state if any, else the seed.
        let state = self
            .full()
            .map_or(self.state.load(Ordering::Relaxed), ArenaState::front_ptr);
        f.debug_struct("SmallMidArena")
            .field("state", &state)
            .field("memory_limit", &self.memory_limit())
            .finish()
    }
}

impl Drop for SmallMidArena {
    fn drop(&mut self) {
        thread::count_live(-1);
        let state = match self.view() {
            View::Full(st) => st.as_mut_ptr(),
            // SAFETY: we hold the only handle: the seed and its blocks are
            // dead from now on.
            View::Seed(seed) => match unsafe { drop_seeded(seed as *const Seed) } {
                Some(st) => st,
                None => return,
            },
        };
        // SAFETY: we hold the only handle, so no allocation or free of ours
        // is in flight and every block is dead from now on.
        unsafe { ArenaState::recycle_or_destroy(state) }
        crate::huge_cache::tick();
        crate::warm::tick();
    }
}

/// Drops an arena still named by its seed: the seed if the arena never
/// grew, else the grown state is returned for the caller to release.
///
/// # Safety
/// The caller holds the arena's only handle, which is being dropped, and
/// `seed` is its seed (a pointer: no reference may live across the
/// release).
#[cold]
unsafe fn drop_seeded(seed: *const Seed) -> Option<*mut ArenaState> {
    // SAFETY: per contract live until released below.
    match unsafe { (*seed).full() } {
        Some(st) => Some(st.as_mut_ptr()),
        None => {
            // SAFETY: per contract the seed and its blocks are dead.
            unsafe { seed::release(NonNull::new(seed.cast_mut()).expect("a seed")) };
            None
        }
    }
}

impl<'a> View<'a> {
    /// What `front` is the first field of.
    ///
    /// # Safety
    /// `front` is a handle's front: live for `'a`, with the provenance of
    /// the whole state or seed.
    #[inline(always)]
    pub(crate) unsafe fn of(front: *const Front) -> View<'a> {
        // SAFETY: per contract; a front is the first field of a `repr(C)`
        // state or seed (see `Front`), which `seed` tells apart.
        unsafe {
            if (*front).seed {
                View::Seed(&*front.cast::<Seed>())
            } else {
                View::Full(&*front.cast::<ArenaState>())
            }
        }
    }
}

impl ArenaState {
    /// A pointer to the state to release it by, with its SuperSlab's
    /// provenance (exposed by `os::map`): `self` may come from a shared
    /// reference, which grants no write.
    fn as_mut_ptr(&self) -> *mut ArenaState {
        core::ptr::with_exposed_provenance_mut(self as *const ArenaState as usize)
    }

    /// The state whose front `front` is.
    ///
    /// # Safety
    /// `front` is a state's (not a seed's), with the whole state's
    /// provenance (as from a handle).
    #[inline(always)]
    pub(crate) unsafe fn of_front<'a>(front: *const Front) -> &'a ArenaState {
        // SAFETY: per contract; the front is the state's first field.
        unsafe {
            debug_assert!(!(*front).seed);
            &*front.cast::<ArenaState>()
        }
    }

    /// The front of this state, as a handle names it.
    pub(crate) fn front_ptr(&self) -> *mut Front {
        (self as *const ArenaState).cast::<Front>().cast_mut()
    }

    /// The arena whose heap `heap` is (the owner a SuperSlab or a huge
    /// block names).
    ///
    /// # Safety
    /// `heap` is the owner pointer of a live arena's SuperSlab or huge
    /// block (so it carries the whole state's provenance); the arena stays
    /// live while the result is used.
    #[inline(always)]
    pub(crate) unsafe fn of_heap<'a>(heap: *const Heap) -> &'a ArenaState {
        let offset = core::mem::offset_of!(ArenaState, heap);
        // SAFETY: every heap is the `heap` field of a `repr(C)` arena state
        // (type invariant); per contract live, with the whole state's
        // provenance.
        unsafe { &*heap.byte_sub(offset).cast::<ArenaState>() }
    }

    /// Keeps a handle-less arena as this thread's spare (reset), or
    /// destroys it.
    ///
    /// # Safety
    /// No handle to the arena remains and none of its blocks is used again.
    unsafe fn recycle_or_destroy(state: *mut ArenaState) {
        // SAFETY: the state is live until destroyed (contract).
        let a = unsafe { &*state };
        let small = lock(&a.heap.pool).superslabs <= MAX_SPARE_SUPERSLABS;
        if small && thread::current_tid() != thread::DEAD {
            // SAFETY: exclusive (contract).
            unsafe { a.reset_all() };
            let left = match threads::swap_spare(state) {
                Ok(old) => old,
                Err(_) => state,
            };
            if left.is_null() {
                return;
            }
            // The thread's previous spare (or this arena) goes to the
            // shared spares, where other threads' `new()`s (and seeds that
            // grow) find it: with no thread's cache attached.
            // SAFETY: a spare: reset, no handle, nobody else holds it.
            unsafe { (*left).park_own() };
            // SAFETY: as above.
            unsafe { (*left).shed_caches(&mut (*left).members.lock()) };
            // Spares wait there without decay (unlike the warm cache), so
            // they go with no free SuperSlab and within a budget.
            let superslabs = {
                // SAFETY: as above.
                let mut pool = lock(unsafe { &(*left).heap.pool });
                pool.release_free_superslabs();
                pool.superslabs
            };
            if Spares::give(left, superslabs) {
                return;
            }
            // SAFETY: a spare has no handle; nobody else holds it.
            return unsafe { ArenaState::destroy(left) };
        }
        // SAFETY: forwarded contract.
        unsafe { ArenaState::destroy(state) }
    }

    /// Detaches the front caches of every thread but `keep`'s (see
    /// [`threads`] for the protocol).
    ///
    /// # Safety
    /// The arena is owned exclusively: no thread allocates or frees in it.
    unsafe fn detach(&self, keep: u32) {
        type Owner = (usize, *const Member, *const ThreadRecord);
        let mut owners: SmallVec<[Owner; 8]> = SmallVec::new();
        {
            let m = self.members.lock();
            let own = self.attached_at(&m, keep as usize).is_some();
            if m.caches == own as usize {
                return; // nobody else's
            }
            self.for_each_cache(&m, |tid, c| {
                if tid != keep as usize {
                    let (_, rec) = self.attached_at(&m, tid).expect("attached");
                    // SAFETY: an attached cache holds a reference to its
                    // owner, so the record is alive while we pin it.
                    unsafe { (*rec).pin() };
                    owners.push((tid, c as *const Member, rec));
                }
            });
        }
        for &(_, c, rec) in &owners {
            // SAFETY: pinned above; caches live as long as the arena.
            unsafe { (*rec).forget(&*c) };
        }
        let mut m = self.members.lock();
        for &(tid, c, rec) in &owners {
            // Still attached (its thread did not retire it meanwhile) and
            // unlisted: retire it for its thread.
            if self.attached_at(&m, tid) == Some((c, rec)) {
                let slot = self.slot(tid, false).expect("slot of an attached cache");
                // SAFETY: exclusive arena; the owner's exit no longer
                // visits it (unlisted above). Its blocks are freed wholesale
                // by the caller, so no flush.
                if let Some(o) = unsafe { self.retire(&mut m, slot, tid as u32, false) } {
                    // SAFETY: the retired cache's reference.
                    unsafe { ThreadRecord::unref(o) };
                }
            }
        }
        drop(m);
        for (_, _, rec) in owners {
            // SAFETY: our pin.
            unsafe { ThreadRecord::unref(rec) };
        }
    }

    /// Frees every block: other threads' caches are detached, every slab is
    /// reset, and the calling thread's cache keeps one whole slab per class
    /// it used (see the module docs).
    ///
    /// # Safety
    /// The arena is owned exclusively and none of its blocks is used again.
    pub(crate) unsafe fn reset_all(&self) {
        // The seed goes only once no other thread's cache can hold its
        // blocks: an exiting thread flushing them (under the members lock)
        // would follow links that the seed's next arena wrote.
        // SAFETY: forwarded contract.
        if unsafe { self.rewind_clean() } {
            // SAFETY: as above; the only cache is ours (the arena was
            // solo, which an exit's unlock publishes after its flush).
            unsafe { self.drop_seed() };
            return;
        }
        let own = thread::current_tid();
        // SAFETY: forwarded contract.
        unsafe { self.detach(own) };
        // SAFETY: as above: other caches are detached, exits done with us.
        unsafe { self.drop_seed() };
        // Caches that keep one whole slab per class they used: the calling
        // thread's, and idle ones whose threads may come back (a request
        // hopping threads); each with the classes it still wants.
        // Each also gets a mixed slab back if it had one.
        let mut takers: SmallVec<[(&ThreadCache, u64, bool); 4]> = SmallVec::new();
        if let Some(c) = self.own_cache() {
            // SAFETY: our own cache.
            let (mix, want, used) = unsafe { c.with(|i| (i.had_mixed(), i.ranged(), i.clear())) };
            // SAFETY: the arena is ours alone (contract).
            unsafe { c.clear_counters(used) };
            c.spans.read(true);
            c.forget_kept();
            takers.push((c, want, mix));
        }
        {
            let mut m = self.members.lock();
            m.zero();
            for &p in &m.idle {
                // SAFETY: idle caches are the arena's, used by nobody.
                let c = unsafe { &(*p).cache };
                // SAFETY: as above.
                let (want, mix) = unsafe {
                    c.with(|i| {
                        let mix = i.had_mixed() | core::mem::take(&mut i.want_mix);
                        let want = i.ranged() | core::mem::take(&mut i.want);
                        i.clear();
                        (want, mix)
                    })
                };
                if want != 0 || mix {
                    takers.push((c, want, mix));
                }
            }
        }
        if self.heap.limited() {
            // Under a limit, slabs kept in a cache could refuse another
            // thread's allocation (only the holder can return them): keep
            // none.
            takers.clear();
        }
        let mut wanted = takers.iter().fold(0, |w, t| w | t.1);
        let mut listed: u64 = 0;
        let mut release: SmallVec<[(*const SuperSlab, usize, bool); 16]> = SmallVec::new();
        let mut pool = lock(&self.heap.pool);
        // SAFETY: no huge block is used again (contract).
        unsafe { large::unmap_all_huge(&mut pool) };
        pool.clear_mixed();
        for ss in pool.all_superslabs() {
            let ss = ss.as_ptr() as *const SuperSlab;
            // SAFETY: pool lock held.
            let mut busy = !unsafe { SuperSlab::links(ss, |l| l.free_mask) };
            while busy != 0 {
                let idx = busy.trailing_zeros() as usize;
                busy &= busy - 1;
                // SAFETY: exclusive ownership stands in for the class locks
                // (nobody else can reach a slab); the pool lock is held.
                let give = unsafe {
                    (*ss).slabs[idx].with(|s| match s.use_ {
                        Use::Class(c) => {
                            let c = c as usize;
                            listed |= (s.in_partial as u64) << c;
                            s.in_partial = false;
                            let start = s.end.wrapping_sub(s.capacity as usize * s.size as usize);
                            crate::asan::poison(start, s.end as usize - start as usize);
                            if wanted & (1 << c) != 0 {
                                // As right after a fresh refill: all of it
                                // in a cache.
                                s.used = s.capacity;
                                s.free = null_mut();
                                s.free_count = 0;
                                s.bump = s.end;
                                Some((c, start, s.end))
                            } else {
                                s.use_ = Use::Free;
                                release.push((ss, idx, false));
                                None
                            }
                        }
                        Use::SpanHead(k) => {
                            crate::asan::poison(
                                SuperSlab::slab_start(ss, idx),
                                k as usize * SLAB_SIZE,
                            );
                            release.push((ss, idx, true));
                            None
                        }
                        Use::Mixed => {
                            let (start, end) = crate::central::mixed_range(ss, idx);
                            crate::asan::poison(start, end as usize - start as usize);
                            match takers.iter_mut().find(|t| t.2) {
                                Some(t) => {
                                    t.2 = false;
                                    s.bump = s.end; // nothing parked
                                    pool.add_mixed(ss, idx);
                                    (*ss).slabs[idx]
                                        .mixed_init((end as usize - start as usize) as u32);
                                    // SAFETY: as for the classes' ranges.
                                    t.0.with(|i| i.set_mixed(start, end));
                                }
                                None => {
                                    s.use_ = Use::Free;
                                    (*ss).slabs[idx].mixed_clear();
                                    release.push((ss, idx, false));
                                }
                            }
                            None
                        }
                        Use::Free | Use::SpanTail => None,
                    })
                };
                if let Some((c, start, end)) = give {
                    let t = takers.iter_mut().find(|t| t.1 & (1 << c) != 0);
                    let (cache, want, _) = t.expect("a cache wants the class");
                    *want &= !(1 << c);
                    // SAFETY: the calling thread's cache or an idle one.
                    unsafe { cache.with(|i| i.set_range(c, start, end)) };
                    if !takers.iter().any(|t| t.1 & (1 << c) != 0) {
                        wanted &= !(1 << c);
                    }
                }
            }
        }
        for (ss, idx, span) in release {
            // SAFETY: every block is free; the slab or span is unused.
            unsafe {
                if span {
                    pool.release_span(ss, idx, false);
                } else {
                    pool.release_slab(ss, idx);
                }
            }
        }
        drop(pool);
        while listed != 0 {
            lock(&self.heap.classes[listed.trailing_zeros() as usize]).clear();
            listed &= listed - 1;
        }
        self.heap.zero_large();
        self.checked.clear();
        // Clean again unless idle caches hold slabs too.
        let own = self.own_cache();
        let others = takers
            .iter()
            .any(|t| own.is_none_or(|o| !core::ptr::eq(t.0, o)));
        self.heap.dirty.store(others, Ordering::Relaxed);
    }

    /// The reset of a clean arena whose only cache is the calling thread's:
    /// rewind that cache's ranges. Whether it applied.
    ///
    /// # Safety
    /// As for [`Self::reset_all`].
    unsafe fn rewind_clean(&self) -> bool {
        if self.heap.dirty.load(Ordering::Relaxed) || self.heap.limited() {
            return false;
        }
        let Some(c) = self.own_cache() else {
            return false;
        };
        // Solo: ours is the only cache, and nothing retired counts. An
        // exiting thread flushes (and marks the arena dirty) before its
        // guard publishes that, so `dirty` is read again after.
        if !self.members.solo() || self.heap.dirty.load(Ordering::Relaxed) {
            return false;
        }
        // SAFETY: our own cache; clean, so its ranges are whole slabs.
        let counted = unsafe { c.with(|i| i.rewind()) };
        // SAFETY: the arena is ours alone (contract).
        unsafe { c.clear_counters(counted) };
        self.heap.zero_large();
        self.checked.clear();
        true
    }

    /// Names `seed` as the one this fresh state grew from.
    fn adopt_seed(&self, seed: &Seed) {
        let p = seed as *const Seed as *mut Seed;
        self.seed.store(p, Ordering::Relaxed);
    }

    /// Frees the seed the arena started in: its blocks are dead.
    ///
    /// # Safety
    /// The arena is owned exclusively and none of its blocks is used again.
    unsafe fn drop_seed(&self) {
        // A load and a store, not a swap: the arena is ours alone (and a
        // swap on every recycle cost a locked instruction per request).
        if let Some(seed) = NonNull::new(self.seed.load(Ordering::Relaxed)) {
            self.seed.store(null_mut(), Ordering::Relaxed);
            // SAFETY: forwarded contract; the handle names the state now.
            unsafe { seed::release(seed) };
        }
    }

    /// A state for a new arena limited to `limit` bytes: a spare (this
    /// thread's, else a shared one) if one fits, else made in a SuperSlab
    /// from the warm cache (or mapped); `None` if the OS refuses memory.
    pub(crate) fn create(limit: usize) -> Option<NonNull<ArenaState>> {
        take_spare(limit, true).or_else(|| ArenaState::make(limit))
    }

    /// A state made in a fresh SuperSlab (see [`Self::create`]).
    fn make(limit: usize) -> Option<NonNull<ArenaState>> {
        // An arena's first SuperSlab: sparse (not huge-paged).
        let base = warm::acquire(false)?.as_ptr();
        // SAFETY: the SuperSlab is ours; the state fits in its META area
        // (asserted above) right after the header.
        unsafe {
            let state = base.add(STATE_OFFSET).cast::<ArenaState>();
            // Raw projections: the owner pointers keep the provenance of
            // the whole state, so `of_heap` may reach past the heap.
            let heap = core::ptr::addr_of_mut!((*state).heap);
            let home = SuperSlab::init(base, heap, core::mem::size_of::<ArenaState>());
            state.write(ArenaState {
                front: Front::new(false),
                heap: Heap::new(heap, home, limit),
                members: MembersLock::new(),
                first: Member::new(state),
                checked: Checked::new(),
                seed: AtomicPtr::new(null_mut()),
            });
            let first = &(*state).first as *const Member as *mut Member;
            (*state).members.lock().idle.push(first);
            Some(NonNull::new_unchecked(state))
        }
    }

    /// The calling thread's cache here, if attached.
    fn own_cache(&self) -> Option<&ThreadCache> {
        self.member().map(|m| &m.cache)
    }

    /// Releases an arena: caches detached, huge blocks to the OS,
    /// SuperSlabs to the warm cache.
    ///
    /// # Safety
    /// No handle to the arena remains and none of its blocks is used again.
    pub(crate) unsafe fn destroy(state: *mut ArenaState) {
        // SAFETY: live until here; exclusive (contract).
        unsafe {
            let a = &*state;
            a.detach(u32::MAX); // every cache, the calling thread's too
            a.drop_seed(); // after: see `reset_all`
            a.free_caches(&mut a.members.lock());
            let superslabs = {
                let mut pool = lock(&a.heap.pool);
                large::unmap_all_huge(&mut pool);
                pool.forget_all_resident();
                pool.all_superslabs()
            };
            core::ptr::drop_in_place(state);
            for ss in &superslabs {
                // Everything but the headers: a block used after the drop is caught.
                let from = (*ss.as_ptr().cast::<SuperSlab>()).blocks_from;
                crate::asan::poison(ss.as_ptr().add(from), SUPERSLAB_SIZE - from);
            }
            warm::release(&superslabs);
        }
    }
}

/// Settings for a [`SmallMidArena`].
///
/// # Example
/// ```
/// use allocator_api2::vec::Vec;
/// let arena = smallmid::SmallMidArena::builder().memory_limit(2 << 20).build();
/// let mut v: Vec<u8, _> = Vec::new_in(&arena);
/// assert!(v.try_reserve(64 << 20).is_err()); // over the limit: an error, not an abort
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Builder {
    memory_limit: usize,
}

impl Builder {
    /// Caps the memory this arena uses: the 64 KiB slabs holding its
    /// blocks (a size class's slab, a mixed slab, a large block's run of
    /// slabs) and its huge blocks at their mapped size
    /// ([`crate::Stats::bytes_held`]). Past it, allocation returns
    /// `AllocError`; freeing makes room again (a slab counts until its
    /// last block is back; blocks freed into the allocating thread's front
    /// cache are reclaimed before an allocation is refused). At least one
    /// slab (64 KiB) is needed to build the arena; 64 KiB serve about
    /// 57 KiB of blocks up to 1 KiB (the arena's state takes the rest of
    /// its first slab), and a larger block needs a slab of its own.
    ///
    /// Not counted: the arena's state (and its seed, whose 192 bytes hold
    /// its first small blocks) and the address space of its
    /// SuperSlabs (free slabs are not used memory; a limited arena takes
    /// no new huge-paged SuperSlab, and emptied slabs of small-paged ones
    /// are decommitted past a process-wide bound, see the README's Design).
    ///
    /// # Example
    /// ```
    /// use smallmid::Allocator;
    /// use std::alloc::Layout;
    /// let arena = smallmid::SmallMidArena::builder().memory_limit(1 << 20).build();
    /// assert!(arena.allocate(Layout::new::<[u8; 2 << 20]>()).is_err()); // over the limit
    /// assert!(arena.try_alloc([0u8; 1024]).is_ok());
    ///
    /// let tiny = smallmid::SmallMidArena::builder().memory_limit(64 << 10).build();
    /// let v: Vec<_> = std::iter::from_fn(|| tiny.try_alloc([0u8; 500]).ok()).collect();
    /// assert!(v.len() > 100); // 512-byte blocks fill the slab's 57 KiB
    /// assert_eq!(tiny.stats().bytes_held, 64 << 10);
    /// # drop(v);
    /// ```
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Builds the arena.
    ///
    /// # Panics
    /// If the OS refuses memory or the memory limit is below 64 KiB.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::builder().memory_limit(16 << 20).build();
    /// assert_eq!(*arena.alloc(5), 5);
    /// ```
    pub fn build(self) -> SmallMidArena {
        match self.try_build() {
            Ok(a) => a,
            Err(_) => panic!(
                "smallmid: cannot create an arena: out of memory or memory limit below 64 KiB"
            ),
        }
    }

    /// Builds the arena.
    ///
    /// # Errors
    /// `AllocError` if the OS refuses memory or the memory limit is below
    /// one slab (64 KiB).
    ///
    /// # Example
    /// ```
    /// use smallmid::SmallMidArena;
    /// assert!(SmallMidArena::builder().memory_limit(1000).try_build().is_err());
    /// let arena = SmallMidArena::builder().memory_limit(2 << 20).try_build()?;
    /// # drop(arena);
    /// # Ok::<(), smallmid::AllocError>(())
    /// ```
    pub fn try_build(self) -> Result<SmallMidArena, AllocError> {
        let limit = self.memory_limit;
        if limit < SLAB_SIZE {
            return Err(AllocError);
        }
        // This thread's spare (warm, no lock), else a shared one (warm,
        // a shard's lock). Else a seed (under `checked`, whose records
        // live in the state, a state made whole).
        if let Some(state) = take_spare(limit, true) {
            return Ok(SmallMidArena::with(state.as_ptr().cast()));
        }
        if cfg!(feature = "checked") {
            let state = ArenaState::create(limit).ok_or(AllocError)?;
            return Ok(SmallMidArena::with(state.as_ptr().cast()));
        }
        let seed = seed::new_seed(limit).ok_or(AllocError)?;
        // A seed's front is its first field.
        Ok(SmallMidArena::with(seed.as_ptr().cast()))
    }
}

/// Spare arenas any thread may take, for flows where arenas are made on
/// one thread and dropped on another (requests hopping threads): sharded
/// by a round-robin thread number ([`thread::shard`]); a drop waits for its
/// own shard's lock, then tries the others; a take tries each shard's lock
/// and waits only if all were busy, and reads the [`HELD`] mask first, so
/// a `new()` with no spare anywhere takes no lock. Each shard holds at
/// most [`SHARD_SUPERSLABS`] SuperSlabs, so the spares hold at most 256 MiB
/// of address space (and the pages those arenas touched) until
/// `trim_warm_cache()`.
///
/// Invariant: each entry is a reset arena with no handle, held nowhere else.
struct Spares {
    arenas: [*mut ArenaState; PER_SHARD],
    n: usize,
    /// SuperSlabs the arenas hold.
    superslabs: [usize; PER_SHARD],
    total: usize,
}

// SAFETY: the raw pointers are only used under the shard's mutex.
unsafe impl Send for Spares {}

const SHARDS: usize = 8;
const PER_SHARD: usize = 16;
/// SuperSlabs one shard's spares may hold between them.
const SHARD_SUPERSLABS: usize = 32;

global! {
    /// Bit `i` set: shard `i` holds spares (changed under its lock; read
    /// without one, where a stale bit costs a seed or a wasted look).
    static HELD: AtomicU64 = AtomicU64::new(0);
}

#[cfg(not(loom))]
static SPARES: [Mutex<Spares>; SHARDS] = [const {
    Mutex::new(Spares {
        arenas: [null_mut(); PER_SHARD],
        n: 0,
        superslabs: [0; PER_SHARD],
        total: 0,
    })
}; SHARDS];
#[cfg(loom)]
loom::lazy_static! {
    static ref SPARES: [Mutex<Spares>; SHARDS] = core::array::from_fn(|_| {
        Mutex::new(Spares { arenas: [null_mut(); PER_SHARD], n: 0, superslabs: [0; PER_SHARD], total: 0 })
    });
}

impl Spares {
    /// The `k`th shard from this thread's.
    fn shard(k: usize) -> (usize, &'static Mutex<Spares>) {
        let i = (thread::shard(SHARDS) + k) % SHARDS;
        (i, &SPARES[i])
    }

    /// Keeps `a` (holding `superslabs`) for any thread: in this thread's
    /// shard (waiting for its lock: a drop that hands its arena on is
    /// worth a short wait), else any other shard free now with room.
    /// False when there is no room.
    fn give(a: *mut ArenaState, superslabs: usize) -> bool {
        (0..SHARDS).any(|k| {
            let (i, shard) = Self::shard(k);
            let Some(mut s) = (if k == 0 {
                Some(lock(shard))
            } else {
                try_lock(shard)
            }) else {
                return false;
            };
            if s.n == PER_SHARD || s.total + superslabs > SHARD_SUPERSLABS {
                return false;
            }
            let n = s.n;
            s.arenas[n] = a;
            s.superslabs[n] = superslabs;
            s.total += superslabs;
            s.n += 1;
            if n == 0 {
                HELD.fetch_or(1 << i, Ordering::Relaxed);
            }
            true
        })
    }

    /// A spare from this thread's shard, else any shard that is free now;
    /// if every shard was busy, waits for each in turn.
    fn take() -> Option<NonNull<ArenaState>> {
        // Most `new()`s find no spare: one load says so, no lock.
        if HELD.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut busy = false;
        let from = |i: usize, s: &mut Spares| -> Option<NonNull<ArenaState>> {
            s.n = s.n.checked_sub(1)?;
            s.total -= s.superslabs[s.n];
            if s.n == 0 {
                HELD.fetch_and(!(1 << i), Ordering::Relaxed);
            }
            NonNull::new(s.arenas[s.n])
        };
        (0..SHARDS)
            .find_map(|k| {
                let (i, shard) = Self::shard(k);
                match try_lock(shard) {
                    Some(mut s) => from(i, &mut s),
                    None => {
                        busy = true;
                        None
                    }
                }
            })
            .or_else(|| {
                busy.then(|| {
                    (0..SHARDS).find_map(|k| {
                        let (i, shard) = Self::shard(k);
                        from(i, &mut lock(shard))
                    })
                })
                .flatten()
            })
    }

    /// Takes every shared spare (for trimming).
    fn drain(out: &mut SmallVec<[*mut ArenaState; 8]>) {
        for (i, shard) in SPARES.iter().enumerate() {
            let mut s = lock(shard);
            while s.n > 0 {
                s.n -= 1;
                out.push(s.arenas[s.n]);
            }
            s.total = 0;
            HELD.fetch_and(!(1 << i), Ordering::Relaxed);
        }
    }
}

/// A spare arena (this thread's, else with `shared` a shared one), set to
/// `limit`, if one fits.
fn take_spare(limit: usize, shared: bool) -> Option<NonNull<ArenaState>> {
    let own = threads::swap_spare(null_mut()).ok().and_then(NonNull::new);
    let p = own.or_else(|| shared.then(Spares::take).flatten())?;
    // SAFETY: spares are live until destroyed.
    let a = unsafe { p.as_ref() };
    let unlimited = limit == usize::MAX && a.heap.limit.load(Ordering::Relaxed) == u64::MAX;
    if !unlimited {
        a.heap.limit.store(limit as u64, Ordering::Relaxed);
        // SAFETY: a spare: no handle, nobody else holds it. Under a limit
        // the reset keeps no slab in any cache, and frees spare SuperSlabs.
        unsafe { a.reset_all() };
        let mut pool = lock(&a.heap.pool);
        pool.release_free_superslabs();
        if pool.held_bytes() > limit {
            drop(pool);
            // SAFETY: the spare has no handle.
            unsafe { ArenaState::destroy(p.as_ptr()) };
            return None;
        }
    }
    Some(p)
}

/// Destroys this thread's spare arena and the shared spares.
pub(crate) fn release_spares() {
    let mut all = SmallVec::new();
    if let Ok(p) = threads::swap_spare(null_mut()) {
        all.push(p);
    }
    Spares::drain(&mut all);
    for p in all.into_iter().filter(|p| !p.is_null()) {
        // SAFETY: a spare has no handle; we took it from its only slot.
        unsafe { ArenaState::destroy(p) };
    }
}
