//! An arena's members: the threads that use it, each through its own
//! front cache, found through the thread's dense index in the arena's
//! slot table; attaching a cache, retiring it (its thread exits, or the
//! arena is reset or dropped), and the allocation and free paths that
//! start at the slot.
//!
//! A thread-local holds only the thread's index, never a pointer into an
//! arena, so nothing dangles when an arena is dropped. The arena keeps a
//! table of member pointers indexed by thread index: 16 inline slots, then
//! chunks of 64 made on demand (their table too, so an arena used by a few
//! threads carries 128 bytes of slots, not 1 KiB), up to [`MAX_TIDS`]
//! threads alive at once;
//! threads past that (and threads whose thread-locals are already gone)
//! use the central lists directly, correct but slower.
//!
//! Invariant: a member's cache is touched only by the thread whose index
//! names its slot, or by whoever owns the arena exclusively (reset, drop).
//! A slot changes (a member attached or retired) only under the arena's
//! members lock.

use super::threads::{self, ThreadRecord};
use super::ArenaState;
use crate::cache::{ClassCounters, Counts, ThreadCache};
use crate::size_class::NUM_CLASSES;
use crate::sync::{lock, AtomicBool, AtomicPtr, Mutex, MutexGuard, Ordering, UnsafeCell};
use crate::thread;
use core::ptr::{null_mut, NonNull};
use smallvec::SmallVec;

/// Cache slots stored inline in the arena state.
pub(crate) const INLINE_SLOTS: usize = 16;
/// Slots per chunk past the inline ones.
const CHUNK_SLOTS: usize = 64;
/// Threads alive at once that get a front cache.
pub(crate) const MAX_TIDS: usize = 4096;
/// Chunks of slots, made on demand.
const CHUNKS: usize = (MAX_TIDS - INLINE_SLOTS).div_ceil(CHUNK_SLOTS);

/// A chunk of member slots.
type SlotChunk = [AtomicPtr<Member>; CHUNK_SLOTS];
/// The table of chunks, made with the first chunk.
pub(crate) type ChunkTable = [AtomicPtr<SlotChunk>; CHUNKS];

/// Links of a member in its owner thread's record (see [`super::threads`]).
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) prev: *const Member,
    pub(crate) next: *const Member,
    pub(crate) linked: bool,
}

/// One thread's membership in one arena: its front cache, and what ties
/// it to the thread and the arena.
///
/// Lives as long as its arena: attached to a thread's slot, or idle in the
/// arena's members for the next thread; freed when the arena is destroyed.
/// So a thread record may link it and a detach may reach it while the
/// arena lives, whatever its thread does meanwhile.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Member {
    /// First: the fast path reaches it at the slot's address.
    pub(crate) cache: ThreadCache,
    /// The owning thread's record; set when attached (members lock).
    pub(crate) owner: AtomicPtr<ThreadRecord>,
    /// The arena (fixed).
    pub(crate) arena: *const ArenaState,
    /// Links in the owner's record list (that record's lock).
    link: UnsafeCell<Link>,
}

impl Member {
    pub(crate) fn new(arena: *const ArenaState) -> Self {
        Member {
            cache: ThreadCache::new(),
            owner: AtomicPtr::new(null_mut()),
            arena,
            link: UnsafeCell::new(Link {
                prev: core::ptr::null(),
                next: core::ptr::null(),
                linked: false,
            }),
        }
    }

    /// Runs `f` on the record links.
    ///
    /// # Safety
    /// The caller holds the lock of the record this member is (or is about
    /// to be) linked in.
    pub(crate) unsafe fn link<R>(&self, f: impl FnOnce(&mut Link) -> R) -> R {
        // SAFETY: the record lock gives exclusive access (contract).
        self.link.with_mut(|l| f(unsafe { &mut *l }))
    }
}

/// Which caches an arena has, and what retired ones counted (members lock).
///
/// Invariants: `caches` equals the number of non-null slots, `inline` has
/// bit `t` set iff inline slot `t` is, `chunked` counts the rest; every
/// cache the arena made and has not freed is attached or in `idle`
/// (retired: empty, counters zeroed); `retired[c]` is zero (or not there)
/// unless bit `c` of `touched` is set.
#[derive(Debug)]
pub(crate) struct Members {
    pub(crate) caches: usize,
    pub(crate) inline: u64,
    pub(crate) chunked: usize,
    /// Retired caches, for the next thread that needs one.
    pub(crate) idle: SmallVec<[*mut Member; 2]>,
    /// On the heap, made when first needed: the arena state must fit the
    /// home SuperSlab's header area, and most arenas (one thread, dropped
    /// or reset whole) never retire a cache with counts (2 KiB saved per
    /// arena: 100,000 small arenas hold 200 MB less).
    retired: Option<Box<[Counts; NUM_CLASSES]>>,
    touched: u64,
}

impl Members {
    pub(crate) fn new() -> Self {
        Members {
            caches: 0,
            inline: 0,
            chunked: 0,
            idle: SmallVec::new(),
            retired: None,
            touched: 0,
        }
    }

    /// Notes the slot of `tid` gaining (`true`) or losing a cache.
    pub(crate) fn attached(&mut self, tid: usize, on: bool) {
        if on {
            self.caches += 1;
        } else {
            self.caches -= 1;
        }
        if tid < INLINE_SLOTS {
            self.inline ^= 1 << tid;
        } else if on {
            self.chunked += 1;
        } else {
            self.chunked -= 1;
        }
    }

    /// The retired counts, made on first use.
    fn retired_mut(&mut self) -> &mut [Counts; NUM_CLASSES] {
        self.retired
            .get_or_insert_with(|| Box::new([Counts::default(); NUM_CLASSES]))
    }

    /// Moves a retiring cache's counters (classes in `touched`) here.
    pub(crate) fn fold(&mut self, counters: &[ClassCounters; NUM_CLASSES], mut touched: u64) {
        if touched == 0 {
            return;
        }
        self.touched |= touched;
        let retired = self.retired_mut();
        while touched != 0 {
            let c = touched.trailing_zeros() as usize;
            touched &= touched - 1;
            retired[c].add(counters[c].take());
        }
    }

    /// Counts what a thread without a cache did.
    pub(crate) fn count_orphan(&mut self, class: usize, allocs: u64, frees: u64) {
        self.touched |= 1 << class;
        let r = &mut self.retired_mut()[class];
        r.allocs += allocs;
        r.frees += frees;
        r.refills += allocs; // each one missed a cache
    }

    /// What retired caches and cacheless threads counted for `class`.
    pub(crate) fn retired(&self, class: usize) -> Counts {
        self.retired
            .as_ref()
            .map_or_else(Counts::default, |r| r[class])
    }

    pub(crate) fn zero(&mut self) {
        let Some(retired) = self.retired.as_mut() else {
            return;
        };
        while self.touched != 0 {
            retired[self.touched.trailing_zeros() as usize] = Counts::default();
            self.touched &= self.touched - 1;
        }
    }
}

// SAFETY: the raw cache pointers are only used under the members lock.
unsafe impl Send for Members {}

/// [`Members`] behind their lock, and whether they are *solo*: one cache
/// attached and no retired counts. Every guard publishes that as it
/// unlocks, so a reset of an arena owned exclusively can skip the lock
/// when it holds (an uncontended lock and unlock were half of a reset's
/// cost): an exiting thread's flush and fold happen before its guard's
/// store, which the reset's load acquires.
///
/// Invariant: outside a guard, `solo == (caches == 1 && touched == 0)`.
#[derive(Debug)]
pub(crate) struct MembersLock {
    members: Mutex<Members>,
    solo: AtomicBool,
}

impl MembersLock {
    pub(crate) fn new() -> Self {
        MembersLock {
            members: Mutex::new(Members::new()),
            solo: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) -> MembersGuard<'_> {
        MembersGuard {
            m: lock(&self.members),
            solo: &self.solo,
        }
    }

    /// One cache attached and no retired counts, as of the last unlock.
    pub(crate) fn solo(&self) -> bool {
        // Acquire: pairs with the guards' release, after their changes.
        self.solo.load(Ordering::Acquire)
    }
}

/// The members, locked; publishes [`MembersLock`]'s `solo` when dropped.
pub(crate) struct MembersGuard<'a> {
    m: MutexGuard<'a, Members>,
    solo: &'a AtomicBool,
}

impl core::ops::Deref for MembersGuard<'_> {
    type Target = Members;
    fn deref(&self) -> &Members {
        &self.m
    }
}

impl core::ops::DerefMut for MembersGuard<'_> {
    fn deref_mut(&mut self) -> &mut Members {
        &mut self.m
    }
}

impl Drop for MembersGuard<'_> {
    fn drop(&mut self) {
        // Still under the lock: the mutex guard drops after this.
        let solo = self.m.caches == 1 && self.m.touched == 0;
        self.solo.store(solo, Ordering::Release);
    }
}

/// What the allocation fast path reads through a handle: the slot table.
/// The first field of an arena's state and of a seed (whose slots stay
/// null, so every call on a seed misses and takes the slow path, which
/// tells the two apart by `seed`).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Front {
    pub(crate) slots: [AtomicPtr<Member>; INLINE_SLOTS],
    /// Slots past the inline ones (see the module docs), made on demand.
    pub(crate) chunks: AtomicPtr<ChunkTable>,
    /// A seed's front (fixed).
    pub(crate) seed: bool,
}

impl Front {
    pub(crate) fn new(seed: bool) -> Front {
        Front {
            slots: core::array::from_fn(|_| AtomicPtr::new(null_mut())),
            chunks: AtomicPtr::new(null_mut()),
            seed,
        }
    }

    /// The slot of thread `tid`, creating its chunk (and the chunk table)
    /// if asked.
    pub(crate) fn slot(&self, tid: usize, create: bool) -> Option<&AtomicPtr<Member>> {
        if tid < INLINE_SLOTS {
            return Some(&self.slots[tid]);
        }
        if tid >= MAX_TIDS {
            return None;
        }
        let k = tid - INLINE_SLOTS;
        let table = publish(&self.chunks, create, || {
            core::array::from_fn(|_| AtomicPtr::new(null_mut()))
        })?;
        let chunk = publish(&table[k / CHUNK_SLOTS], create, || {
            core::array::from_fn(|_| AtomicPtr::new(null_mut()))
        })?;
        Some(&chunk[k % CHUNK_SLOTS])
    }

    /// This thread's membership (and cache) in this arena, if it has one
    /// (never in a seed).
    #[inline(always)]
    pub(crate) fn member(&self) -> Option<&Member> {
        let tid = thread::current_tid() as usize;
        let slot = if tid < INLINE_SLOTS {
            &self.slots[tid]
        } else {
            self.slot(tid, false)?
        };
        // Relaxed: only this thread, or an exclusive owner of the arena
        // (ordered with us by whatever handed the arena back), writes it.
        let p = slot.load(Ordering::Relaxed);
        // SAFETY: an attached cache lives until retired, which only this
        // thread or an exclusive owner does.
        (!p.is_null()).then(|| unsafe { &*p })
    }
}

impl ArenaState {
    /// The slot of thread `tid`, creating its chunk if asked.
    pub(crate) fn slot(&self, tid: usize, create: bool) -> Option<&AtomicPtr<Member>> {
        self.front.slot(tid, create)
    }

    /// This thread's membership (and cache) in this arena, if it has one.
    #[inline(always)]
    pub(crate) fn member(&self) -> Option<&Member> {
        self.front.member()
    }

    /// Attaches a cache for this thread, unless it cannot have one.
    #[cold]
    fn member_or_attach(&self) -> Option<&Member> {
        let rec_ptr = threads::current()?;
        // SAFETY: the thread's own reference keeps its record alive.
        let rec = unsafe { &*rec_ptr };
        let tid = rec.tid as usize;
        let slot = self.slot(tid, true)?;
        let p = slot.load(Ordering::Relaxed);
        if !p.is_null() {
            // SAFETY: as in `member`.
            return Some(unsafe { &*p });
        }
        let mem = {
            let mut m = self.members.lock();
            let mem = m
                .idle
                .pop()
                .unwrap_or_else(|| Box::into_raw(Box::new(Member::new(self))));
            // SAFETY: an idle (retired: empty, zeroed) or fresh cache.
            unsafe { &*mem }
                .owner
                .store(rec_ptr as *mut ThreadRecord, Ordering::Relaxed);
            m.attached(tid, true);
            slot.store(mem, Ordering::Release);
            mem
        };
        // SAFETY: caches live as long as the arena.
        let c = unsafe { &*mem };
        // Listed after the members lock is released (lock order: record,
        // then members). Until then only this thread can reach the cache.
        rec.attach(c);
        Some(c)
    }

    /// Retires the cache in `slot`: with `flush`, its blocks and ranges go
    /// back to their slabs and its counters are folded into the arena's
    /// (else the caller resets every slab and every counter); it goes idle
    /// for the next thread.
    /// Returns its owner, whose reference the cache held.
    ///
    /// # Safety
    /// `m` is this arena's members lock; the cache's owner is the calling
    /// thread, or the arena is owned exclusively and its owner cannot run
    /// its exit for this arena (see [`super::threads`]); without `flush`,
    /// the latter.
    pub(crate) unsafe fn retire(
        &self,
        m: &mut Members,
        slot: &AtomicPtr<Member>,
        tid: u32,
        flush: bool,
    ) -> Option<*const ThreadRecord> {
        let p = slot.load(Ordering::Relaxed);
        if p.is_null() {
            return None;
        }
        // SAFETY: attached caches are live; per contract nobody else uses it.
        let c = unsafe { &*p };
        // SAFETY: as above (without `flush`, the arena is ours alone); the
        // cache is this arena's.
        let touched = unsafe { c.cache.empty(&self.heap, tid, flush) };
        if flush {
            m.fold(&c.cache.counters, touched);
        }
        slot.store(null_mut(), Ordering::Release);
        m.attached(tid as usize, false);
        m.idle.push(p);
        Some(c.owner.swap(null_mut(), Ordering::Relaxed))
    }

    /// Moves the calling thread's cache, ranges and all, to the idle list:
    /// the arena then holds no thread's cache, on its way to the shared
    /// spares. If it is the inline cache, the next thread to use the arena
    /// takes it, warm; any other is shed there ([`Self::shed_caches`]).
    ///
    /// # Safety
    /// The arena is owned exclusively and was just reset (zero counters).
    pub(crate) unsafe fn park_own(&self) {
        let tid = thread::current_tid() as usize;
        let Some((c, rec)) = self.attached_at(&self.members.lock(), tid) else {
            return;
        };
        // SAFETY: our own record (alive: we run) and cache (alive with the
        // arena); lock order record, then members.
        unsafe { (*rec).forget(&*c) };
        let mut m = self.members.lock();
        let slot = self.slot(tid, false).expect("slot of an attached cache");
        slot.store(null_mut(), Ordering::Release);
        m.attached(tid, false);
        // SAFETY: as above.
        unsafe { (*c).owner.store(null_mut(), Ordering::Relaxed) };
        m.idle.push(c as *mut Member);
        drop(m);
        // SAFETY: the reference the attached cache held.
        unsafe { ThreadRecord::unref(rec) };
    }

    /// Retires the calling (exiting) thread's cache; whether there was one.
    ///
    /// # Safety
    /// `m` is this arena's members lock; `tid` is the caller's index.
    pub(crate) unsafe fn retire_own(&self, m: &mut Members, tid: u32) -> bool {
        match self.slot(tid as usize, false) {
            Some(slot) => {
                lock(&self.heap.pool).begin_retire();
                // SAFETY: the caller owns the cache in its own slot.
                let had = unsafe { self.retire(m, slot, tid, true) }.is_some();
                lock(&self.heap.pool).end_retire();
                had
            }
            None => false,
        }
    }

    /// Calls `f(tid, cache)` for every attached cache (members lock held).
    pub(crate) fn for_each_cache(&self, m: &Members, mut f: impl FnMut(usize, &Member)) {
        let mut visit = |tid: usize, slot: &AtomicPtr<Member>| {
            let p = slot.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: caches live as long as the arena.
                f(tid, unsafe { &*p });
            }
        };
        let mut inline = m.inline;
        while inline != 0 {
            let t = inline.trailing_zeros() as usize;
            inline &= inline - 1;
            visit(t, &self.front.slots[t]);
        }
        if m.chunked == 0 {
            return;
        }
        let table = self.front.chunks.load(Ordering::Acquire);
        if table.is_null() {
            return;
        }
        // SAFETY: a published table and its chunks live as long as the arena.
        for (k, chunk) in unsafe { &*table }.iter().enumerate() {
            let chunk = chunk.load(Ordering::Acquire);
            if !chunk.is_null() {
                // SAFETY: as above.
                let chunk = unsafe { &*chunk };
                for (i, s) in chunk.iter().enumerate() {
                    visit(INLINE_SLOTS + k * CHUNK_SLOTS + i, s);
                }
            }
        }
    }

    /// The cache in thread `tid`'s slot and its owner (members lock).
    pub(crate) fn attached_at(
        &self,
        _m: &Members,
        tid: usize,
    ) -> Option<(*const Member, *const ThreadRecord)> {
        let p = self.slot(tid, false)?.load(Ordering::Relaxed);
        if p.is_null() {
            return None;
        }
        // SAFETY: caches live as long as the arena.
        let owner = unsafe { (*p).owner.load(Ordering::Relaxed) };
        Some((p as *const _, owner as *const _))
    }

    /// Frees the caches and slot chunks (the arena is being destroyed, every
    /// cache retired).
    pub(crate) fn free_caches(&self, m: &mut Members) {
        debug_assert_eq!(m.caches, 0);
        for p in m.idle.drain(..) {
            if !core::ptr::eq(p, &self.first) {
                // SAFETY: came from `Box::into_raw` in `member_or_attach`;
                // retired, so no slot or record holds it.
                drop(unsafe { Box::from_raw(p) });
            }
        }
        self.free_chunks();
    }

    /// Frees every idle cache but the inline one, for an arena parked for
    /// any thread's next `new()`: the others belonged to threads that may
    /// never use it again (a request that hopped threads left a 3.7 KB
    /// cache in every arena it passed through); one that does allocates a
    /// cache again. What they hold goes back to the heap first (a mixed
    /// range's rest stays parked there for the next cache), not lost.
    ///
    /// # Safety
    /// The arena is owned exclusively, every cache retired, and it was
    /// reset (zero counters: nothing to fold).
    pub(crate) unsafe fn shed_caches(&self, m: &mut Members) {
        debug_assert_eq!(m.caches, 0);
        for p in core::mem::take(&mut m.idle) {
            if core::ptr::eq(p, &self.first) {
                m.idle.push(p);
                continue;
            }
            // SAFETY: an idle cache of this arena, used by nobody
            // (contract), from `Box::into_raw` in `member_or_attach`;
            // retired, so no slot or record holds it.
            unsafe {
                (*p).cache.empty(&self.heap, thread::current_tid(), true);
                drop(Box::from_raw(p));
            }
        }
    }

    fn free_chunks(&self) {
        let table = self.front.chunks.swap(null_mut(), Ordering::Relaxed);
        if table.is_null() {
            return;
        }
        // SAFETY: came from `Box::into_raw` in `publish`; unpublished now.
        let table = unsafe { Box::from_raw(table) };
        for cell in table.iter() {
            let p = cell.load(Ordering::Relaxed);
            if !p.is_null() {
                // SAFETY: as above.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }

    /// A span of `k` slabs this thread freed and kept, if any.
    pub(crate) fn take_kept_span(&self, k: usize) -> Option<NonNull<u8>> {
        self.member()?.cache.take_span(k)
    }

    /// Keeps freed span `p` of `k` slabs for this thread's next span of
    /// that length; `false` if the cache has no room (or the thread none).
    ///
    /// # Safety
    /// `p` is a live span of `k` slabs of this arena, not used afterwards.
    pub(crate) unsafe fn keep_span(&self, p: *mut u8, k: usize) -> bool {
        let Some(m) = self.member().or_else(|| self.member_or_attach()) else {
            return false;
        };
        // SAFETY: this thread's cache; `p` per contract.
        unsafe { m.cache.keep_span(p, k) }
    }

    /// Allocates a block of `class`.
    ///
    /// Fast path, the common case: one thread-relative load (the index), one
    /// load of the arena's slot, then [`ThreadCache::alloc`]'s pop (a load
    /// of the block's link and two stores) or bump (a compare and a store).
    /// No atomic read-modify-write, no lock, no call.
    #[inline(always)]
    pub(crate) fn alloc_small(&self, class: usize) -> Option<NonNull<u8>> {
        if let Some(m) = self.member() {
            // SAFETY: this thread owns its cache.
            if let Some(b) = unsafe { m.cache.alloc(class) } {
                return Some(b);
            }
        }
        self.alloc_small_slow(class)
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_small_slow(&self, class: usize) -> Option<NonNull<u8>> {
        let Some(m) = self.member_or_attach() else {
            let b = NonNull::new(self.heap.alloc_one(class)?);
            self.members.lock().count_orphan(class, 1, 0);
            return b;
        };
        // SAFETY: this thread owns its cache, which is this arena's.
        unsafe { m.cache.alloc_slow(&self.heap, class, thread::current_tid()) }
    }

    /// Frees a block of `class`.
    ///
    /// Fast path: the same two loads as allocation, then
    /// [`ThreadCache::free`]'s compare with the class's capacity and push
    /// (two stores and the count).
    ///
    /// # Safety
    /// `b` is a live block of `class` from this arena, not used afterwards.
    #[inline(always)]
    pub(crate) unsafe fn free_small(&self, class: usize, b: *mut u8) {
        if let Some(m) = self.member() {
            // SAFETY: this thread owns its cache; `b` per contract.
            if unsafe { m.cache.free(class, b) } {
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
    pub(crate) unsafe fn free_small_slow(&self, class: usize, b: *mut u8) {
        let Some(m) = self.member_or_attach() else {
            self.members.lock().count_orphan(class, 0, 1);
            // SAFETY: forwarded contract.
            return unsafe { self.heap.free_one(class, b) };
        };
        // SAFETY: this thread owns its cache, which is this arena's; `b`
        // per contract.
        unsafe {
            m.cache
                .free_slow(&self.heap, class, b, thread::current_tid())
        }
    }

    /// Returns what the calling thread's cache holds to the arena, and the
    /// ranges a reset left in idle caches for threads that may come back.
    pub(crate) fn flush_current_thread(&self) {
        if let Some(m) = self.member() {
            // SAFETY: this thread owns its cache, which is this arena's.
            unsafe { m.cache.flush(&self.heap, thread::current_tid()) };
        }
        let m = self.members.lock();
        for &p in &m.idle {
            // SAFETY: idle caches belong to the arena; under the members
            // lock no thread can take one meanwhile.
            unsafe { (*p).cache.flush(&self.heap, u32::MAX) };
        }
    }

    /// Gives back to the pool the spans every thread's cache keeps (a
    /// memory limit set, or an allocation refused: kept spans must not
    /// hold room that allocations need). Takes the members lock.
    pub(crate) fn reclaim_kept_spans(&self) {
        let mut spans: SmallVec<[*mut u8; 16]> = SmallVec::new();
        {
            let m = self.members.lock();
            // The members lock keeps the caches attached; their owners may
            // keep and take meanwhile (see `ThreadCache::kept`).
            self.for_each_cache(&m, |_, c| c.cache.take_kept(|p| spans.push(p)));
        }
        for p in spans {
            // SAFETY: taken from a cache: a span of ours nobody uses,
            // counted as freed when it was kept.
            unsafe { self.heap.release_kept_span(p) };
        }
    }
}

/// The value behind `cell`, made with `make` and published first if it is
/// null and `create` is set (a racing maker's value wins, ours is dropped).
/// A published value lives until the arena is destroyed.
fn publish<T>(cell: &AtomicPtr<T>, create: bool, make: impl FnOnce() -> T) -> Option<&T> {
    let mut p = cell.load(Ordering::Acquire);
    if p.is_null() {
        if !create {
            return None;
        }
        let mem = Box::into_raw(Box::new(make()));
        match cell.compare_exchange(null_mut(), mem, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => p = mem,
            Err(winner) => {
                // SAFETY: ours was never published.
                drop(unsafe { Box::from_raw(mem) });
                p = winner;
            }
        }
    }
    // SAFETY: published values live as long as the arena (see above).
    Some(unsafe { &*p })
}
