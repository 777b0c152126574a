//! The `Allocator` implementation: a thin adapter over the engine.

use crate::arena::{ArenaState, Front, Member, Seed, SmallMidArena, View};
use crate::asan;
use crate::large::{self, huge_header, Kind};
use crate::os::{HUGE_PAGE, PAGE};
use crate::size_class::{class_for, CLASS_SIZE};
use crate::slab::SLAB_SIZE;
use crate::sync::lock;
use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::{self, NonNull};

/// Implements an `Allocator` trait (allocator-api2 0.2's, or 0.4's) for a
/// handle type by forwarding every method to the arena it reaches
/// (`|s| expr` turns `&Self` into `&SmallMidArena`).
macro_rules! forward_allocator {
    ($tr:path, $err:path, $ty:ty, |$s:ident| $arena:expr) => {
        // SAFETY: every method forwards to the arena's allocator-api2 0.2
        // implementation, whose contract (blocks valid until freed or the
        // arena dropped, aligned, at least the size) is this trait's.
        unsafe impl $tr for $ty {
            #[inline(always)]
            fn allocate(&self, l: Layout) -> Result<NonNull<[u8]>, $err> {
                let $s = self;
                allocator_api2::alloc::Allocator::allocate($arena, l).map_err(|_| $err)
            }
            fn allocate_zeroed(&self, l: Layout) -> Result<NonNull<[u8]>, $err> {
                let $s = self;
                allocator_api2::alloc::Allocator::allocate_zeroed($arena, l).map_err(|_| $err)
            }
            #[inline(always)]
            unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
                let $s = self;
                // SAFETY: forwarded trait contract.
                unsafe { allocator_api2::alloc::Allocator::deallocate($arena, p, l) }
            }
            unsafe fn grow(
                &self,
                p: NonNull<u8>,
                o: Layout,
                n: Layout,
            ) -> Result<NonNull<[u8]>, $err> {
                let $s = self;
                // SAFETY: forwarded trait contract.
                unsafe { allocator_api2::alloc::Allocator::grow($arena, p, o, n) }.map_err(|_| $err)
            }
            unsafe fn grow_zeroed(
                &self,
                p: NonNull<u8>,
                o: Layout,
                n: Layout,
            ) -> Result<NonNull<[u8]>, $err> {
                let $s = self;
                // SAFETY: forwarded trait contract.
                unsafe { allocator_api2::alloc::Allocator::grow_zeroed($arena, p, o, n) }
                    .map_err(|_| $err)
            }
            unsafe fn shrink(
                &self,
                p: NonNull<u8>,
                o: Layout,
                n: Layout,
            ) -> Result<NonNull<[u8]>, $err> {
                let $s = self;
                // SAFETY: forwarded trait contract.
                unsafe { allocator_api2::alloc::Allocator::shrink($arena, p, o, n) }
                    .map_err(|_| $err)
            }
        }
    };
}
pub(crate) use forward_allocator;

// With `nightly`, std's own trait too (allocator-api2 stays stable, so
// crates built on it, hashbrown included, are unaffected).
#[cfg(feature = "nightly")]
forward_allocator!(
    core::alloc::Allocator,
    core::alloc::AllocError,
    SmallMidArena,
    |s| s
);

#[inline(always)]
fn dangling(align: usize) -> NonNull<[u8]> {
    // SAFETY: an alignment is never zero.
    let p = unsafe { NonNull::new_unchecked(ptr::without_provenance_mut::<u8>(align)) };
    NonNull::slice_from_raw_parts(p, 0)
}

impl ArenaState {
    /// Allocates, recording the block under the `checked` feature.
    #[inline(always)]
    pub(crate) fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let block = self.allocate_block(layout)?;
        self.checked.allocated(block, layout);
        asan::unpoison(block.cast::<u8>().as_ptr(), block.len());
        Ok(block)
    }

    /// Frees, checked first under the `checked` feature.
    ///
    /// # Safety
    /// As for [`Self::deallocate_block`].
    #[inline(always)]
    pub(crate) unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.checked.freed(ptr, layout);
        // SAFETY: forwarded contract.
        unsafe { self.deallocate_block(ptr, layout) }
    }

    /// Allocates through this thread's member here: the handle's fast
    /// path, one member lookup for the whole call (see [`Self::alloc_small`]
    /// for the cost).
    #[inline(always)]
    fn allocate_in(&self, m: &Member, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let block = match class_for(layout.size(), layout.align()) {
            // SAFETY: this thread owns its cache.
            Some(class) if layout.size() != 0 => match unsafe { m.cache.alloc(class) } {
                Some(b) => NonNull::slice_from_raw_parts(b, CLASS_SIZE[class] as usize),
                None => self.allocate_missed(class, layout)?,
            },
            _ => self.allocate_block(layout)?,
        };
        self.checked.allocated(block, layout);
        asan::unpoison(block.cast::<u8>().as_ptr(), block.len());
        Ok(block)
    }

    /// A small block this thread's cache had none of.
    #[cold]
    #[inline(never)]
    fn allocate_missed(&self, class: usize, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        match self.alloc_small_slow(class) {
            Some(b) => Ok(NonNull::slice_from_raw_parts(b, CLASS_SIZE[class] as usize)),
            None => self.allocate_after_reclaim(layout),
        }
    }

    /// Frees through this thread's member here (see [`Self::allocate_in`]).
    ///
    /// # Safety
    /// As for [`Self::deallocate`].
    #[inline(always)]
    unsafe fn deallocate_in(&self, m: &Member, ptr: NonNull<u8>, layout: Layout) {
        self.checked.freed(ptr, layout);
        match class_for(layout.size(), layout.align()) {
            Some(class) if layout.size() != 0 => {
                asan::free_block(ptr.as_ptr(), CLASS_SIZE[class] as usize);
                // SAFETY: this thread owns its cache; `ptr` per contract.
                if !unsafe { m.cache.free(class, ptr.as_ptr()) } {
                    // SAFETY: as above.
                    unsafe { self.free_small_slow(class, ptr.as_ptr()) }
                }
            }
            // SAFETY: forwarded contract.
            _ => unsafe { self.deallocate_block(ptr, layout) },
        }
    }

    #[inline(always)]
    fn allocate_block(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        match self.allocate_once(layout) {
            Ok(b) => Ok(b),
            Err(_) => self.allocate_after_reclaim(layout),
        }
    }

    /// Out of memory (the limit or the OS): what this thread's cache holds
    /// may be all that stands in the way, so return it and try once more.
    #[cold]
    #[inline(never)]
    fn allocate_after_reclaim(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.flush_current_thread();
        self.reclaim_kept_spans();
        self.allocate_once(layout)
    }

    #[inline(always)]
    fn allocate_once(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let size = layout.size();
        if let Some(class) = class_for(size, layout.align()) {
            if size == 0 {
                return Ok(dangling(layout.align()));
            }
            let b = self.alloc_small(class).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(b, CLASS_SIZE[class] as usize));
        }
        if size == 0 {
            return Ok(dangling(layout.align())); // any alignment: no memory
        }
        self.alloc_large(layout, large::kind(size, layout.align()))
    }

    /// # Safety
    /// `ptr` is a block of this arena allocated with a layout that `layout`
    /// fits (same alignment, size between the request and the returned
    /// length), not used afterwards.
    #[inline(always)]
    unsafe fn deallocate_block(&self, ptr: NonNull<u8>, layout: Layout) {
        let size = layout.size();
        if let Some(class) = class_for(size, layout.align()) {
            if size != 0 {
                asan::free_block(ptr.as_ptr(), CLASS_SIZE[class] as usize);
                // SAFETY: forwarded contract.
                unsafe { self.free_small(class, ptr.as_ptr()) };
            }
            return;
        }
        if size == 0 {
            return; // a dangling pointer: nothing to poison or free
        }
        let k = large::kind(size, layout.align());
        if let Kind::Span { slabs, .. } = k {
            asan::poison(ptr.as_ptr(), slabs * SLAB_SIZE);
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_large(ptr, k) }
    }

    /// Resizes small block `ptr` of class `a` to class `b` in place, if it
    /// is the last block carved from `m`'s mixed range (see
    /// [`crate::cache::ThreadCache::resize_in_place`]); its new length if so.
    ///
    /// # Safety
    /// `m` is this thread's member here; `ptr` a live block of class `a`
    /// of this arena (the cache checks it is aligned for class `b`).
    #[inline(always)]
    unsafe fn resize_tail(m: &Member, ptr: NonNull<u8>, a: usize, b: usize) -> Option<usize> {
        // SAFETY: this thread owns its cache; `ptr` per contract.
        if !unsafe { m.cache.resize_in_place(ptr.as_ptr(), a, b) } {
            return None;
        }
        let (old_len, len) = (CLASS_SIZE[a] as usize, CLASS_SIZE[b] as usize);
        if len > old_len {
            asan::unpoison(ptr.as_ptr(), len);
        } else {
            asan::poison(ptr.as_ptr().wrapping_add(len), old_len - len);
        }
        Some(len)
    }

    /// Grows small block `ptr` into a small class through this thread's
    /// member: the handle's fast path for a `Vec` growing. In place when the
    /// class stays or the block ends the mixed range (as a bump allocator
    /// extends its last block), else a block of the new class, a copy and
    /// a free, all through the cache. `None` when either layout is not
    /// small, or the old one is empty (the caller takes
    /// [`Self::relocate`]).
    ///
    /// # Safety
    /// As for [`Allocator::grow`], with `m` this thread's member here.
    #[inline(always)]
    unsafe fn grow_in(
        &self,
        m: &Member,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<Result<NonNull<[u8]>, AllocError>> {
        if old.size() == 0 {
            return None;
        }
        let a = class_for(old.size(), old.align())?;
        let b = class_for(new.size(), new.align())?;
        self.checked.verify(ptr, old);
        if ptr.as_ptr() as usize & (new.align() - 1) == 0 {
            let len = if a == b {
                Some(CLASS_SIZE[a] as usize)
            } else {
                // SAFETY: forwarded contract (the layout's alignment is
                // checked above, the class's by the cache).
                unsafe { Self::resize_tail(m, ptr, a, b) }
            };
            if let Some(len) = len {
                let block = NonNull::slice_from_raw_parts(ptr, len);
                self.checked.freed(ptr, old);
                self.checked.allocated(block, new);
                return Some(Ok(block));
            }
        }
        Some(self.allocate_in(m, new).inspect(|fresh| {
            // SAFETY: both blocks are live and distinct, and at least
            // `old.size()` long (`new.size() >= old.size()`); then the old
            // one is freed (forwarded contract).
            unsafe {
                ptr::copy_nonoverlapping(ptr.as_ptr(), fresh.as_ptr().cast::<u8>(), old.size());
                self.deallocate_in(m, ptr, old);
            }
        }))
    }

    /// The block length if `ptr` (allocated with `old`) can serve `new` in
    /// place; the caller then passes `new` when freeing it.
    ///
    /// # Safety
    /// As for [`Self::deallocate`] with `old`, but the block stays live.
    unsafe fn in_place(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Option<usize> {
        if old.size() == 0 || new.size() == 0 || ptr.as_ptr() as usize & (new.align() - 1) != 0 {
            return None;
        }
        match (
            class_for(old.size(), old.align()),
            class_for(new.size(), new.align()),
        ) {
            (Some(a), Some(b)) if a == b => Some(CLASS_SIZE[a] as usize),
            (Some(a), Some(b)) => {
                let m = self.member()?;
                // SAFETY: per contract a live block of class `a`.
                unsafe { Self::resize_tail(m, ptr, a, b) }
            }
            (None, None) => match (
                large::kind(old.size(), old.align()),
                large::kind(new.size(), new.align()),
            ) {
                (Kind::Span { slabs: a, .. }, Kind::Span { slabs: b, .. }) => {
                    (a == b).then_some(a * crate::slab::SLAB_SIZE)
                }
                (Kind::Huge, Kind::Huge) => {
                    // SAFETY: per contract `ptr` is a live huge block.
                    let len = unsafe { (*huge_header(ptr.as_ptr())).usable() };
                    // A shrink resizes the mapping instead, where it can
                    // (see `relocate`), to give memory back.
                    let shrink = new.size() < old.size() && large::CAN_RESIZE;
                    (new.size() <= len && !shrink).then_some(len)
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Allocates a block that no size class serves, of kind `k`: a span
    /// this thread freed and its cache kept (no pool lock; even under a
    /// limit set after it was kept: it is held already), else from the heap.
    fn alloc_large(&self, layout: Layout, k: Kind) -> Result<NonNull<[u8]>, AllocError> {
        if let Kind::Span { slabs, step: 1 } = k {
            if let Some(p) = self.take_kept_span(slabs) {
                self.heap.mark_dirty();
                return Ok(NonNull::slice_from_raw_parts(p, slabs * SLAB_SIZE));
            }
        }
        self.heap.alloc_large(layout, k)
    }

    /// Frees a block from [`Self::alloc_large`]: a span into this thread's
    /// cache if it keeps it (only spans a later request can take: not
    /// those aligned past a slab; never under a limit), else to the heap.
    ///
    /// # Safety
    /// `ptr` was allocated by this arena with a layout of kind `k`, and is
    /// not used afterwards.
    unsafe fn free_large(&self, ptr: NonNull<u8>, k: Kind) {
        if let Kind::Span { slabs, step: 1 } = k {
            // SAFETY: per contract a live span of ours, unused now.
            if !self.heap.limited() && unsafe { self.keep_span(ptr.as_ptr(), slabs) } {
                return;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.heap.free_large(ptr, k) }
    }

    /// Shrinks a huge block into a smaller kind of block when the limit
    /// has no room for the copy: the block's own mapping is the room. The
    /// mapping is shrunk in place to `keep` bytes, the freed room held for
    /// this thread, `new` allocated; if that still fails, the mapping gets
    /// its whole length back in place (the room was held) and the block is
    /// as before. The tail goes only once the new block surely fits: the
    /// room it may take is checked, and a SuperSlab with room for it added
    /// first (address space, which the limit does not count), so no system
    /// call comes between (barring another thread taking that room
    /// meanwhile). `None`: not a huge block, no `mremap`, or no room anyway.
    ///
    /// # Safety
    /// `ptr` is a live huge block of this arena allocated with `old`;
    /// `keep <= new.size()`, and the caller copies `keep` bytes and frees
    /// `ptr` (with `old`) when a block is returned.
    pub(crate) unsafe fn shrink_into_own_room(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        keep: usize,
    ) -> Option<NonNull<[u8]>> {
        if !large::CAN_RESIZE
            || large::kind(old.size(), old.align()) != Kind::Huge
            || new.size() >= old.size()
            || keep >= HUGE_PAGE
        {
            return None;
        }
        // The most the new block may take from the limit: a slab for a size
        // class, its run for a span (a huge one would need a mapping).
        let (cost, span) = match class_for(new.size(), new.align()) {
            Some(_) => (SLAB_SIZE, None),
            None => match large::kind(new.size(), new.align()) {
                Kind::Span { slabs, step } => (slabs * SLAB_SIZE, Some((slabs, step))),
                Kind::Huge => return None,
            },
        };
        let small = Layout::from_size_align(keep.max(1), old.align()).ok()?;
        let whole = {
            let mut pool = lock(&self.heap.pool);
            // SAFETY: per contract a live huge block; pool lock held.
            let (len, lead) = unsafe {
                let h = huge_header(ptr.as_ptr());
                ((*h).len, (*h).align)
            };
            let freed = len.checked_sub(keep.max(1).next_multiple_of(PAGE) + lead)?;
            if cost > freed && !pool.fits(cost - freed) {
                return None;
            }
            let room = match span {
                Some((slabs, step)) => pool.find_span(slabs, step).is_some(),
                None => pool.has_free_slab(),
            };
            if !room {
                pool.grow(false)?;
            }
            if !pool.reserve_room(freed) {
                return None;
            }
            // What the caller was given: all of it stays mapped on failure.
            Layout::from_size_align(len - lead, old.align()).ok()?
        };
        // SAFETY: forwarded contract; a shrink stays in place.
        let shrunk = unsafe { self.heap.resize_huge_with(ptr, small, false) };
        let fresh = match shrunk {
            Ok(Some(_)) => self.allocate(new).ok(),
            _ => None,
        };
        if fresh.is_none() && matches!(shrunk, Ok(Some(_))) {
            // SAFETY: as above; the room is still held for this thread, so
            // only the address space could refuse (nothing maps there: it
            // was ours a moment ago).
            let back = unsafe { self.heap.resize_huge_with(ptr, whole, false) };
            debug_assert!(matches!(back, Ok(Some(_))), "a huge block lost its tail");
        }
        lock(&self.heap.pool).release_room();
        fresh
    }

    /// Moves a block to a new layout, copying `keep` bytes.
    ///
    /// # Safety
    /// As for [`Self::deallocate`] with `old`; `keep <= min(old, new size)`.
    pub(crate) unsafe fn relocate(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        keep: usize,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // Misuse panics before anything changes (an in-place resize moves
        // a carve point; a copy would read a block that is not live).
        self.checked.verify(ptr, old);
        // SAFETY: forwarded contract.
        if let Some(len) = unsafe { self.in_place(ptr, old, new) } {
            let block = NonNull::slice_from_raw_parts(ptr, len);
            self.checked.freed(ptr, old);
            self.checked.allocated(block, new);
            return Ok(block);
        }
        if old.align() == new.align()
            && class_for(old.size(), old.align()).is_none()
            && class_for(new.size(), new.align()).is_none()
            && large::kind(old.size(), old.align()) == Kind::Huge
            && large::kind(new.size(), new.align()) == Kind::Huge
        {
            // The record goes first: once `mremap` moved the block, another
            // thread's fresh mapping may get the old address at once.
            let record = self.checked.take(ptr, old);
            // SAFETY: per contract a live huge block of ours, allocated
            // with `old`, whose alignment `new` shares.
            match unsafe { self.heap.resize_huge(ptr, new) } {
                Ok(Some(block)) => {
                    self.checked.allocated(block, new);
                    asan::unpoison(block.cast::<u8>().as_ptr(), block.len());
                    return Ok(block);
                }
                Ok(None) => self.checked.restore(ptr, record),
                Err(e) => {
                    self.checked.restore(ptr, record);
                    return Err(e);
                }
            }
        }
        let fresh = match self.allocate(new) {
            Ok(f) => f,
            // A huge block shrinking under a full limit: its own mapping is
            // the room (a `Vec::shrink_to_fit` that fails aborts).
            // SAFETY: forwarded contract; `keep <= new.size()`.
            Err(e) => unsafe { self.shrink_into_own_room(ptr, old, new, keep) }.ok_or(e)?,
        };
        // SAFETY: both blocks are live, distinct, and at least `keep` long.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), fresh.as_ptr().cast::<u8>(), keep);
            self.deallocate(ptr, old);
        }
        Ok(fresh)
    }
}

// SAFETY: blocks stay valid until deallocated or the arena is dropped, and
// moving the handle does not move them (the state and the seed have fixed
// addresses). Every returned block is aligned to its layout and at least
// its size.
unsafe impl Allocator for SmallMidArena {
    /// The fast path: the front's slot names this thread's member (only a
    /// state has members), whose cache pops or bumps a block. Whatever
    /// misses (no member yet, or a seed) takes `allocate_slow`.
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let front = self.front();
        // SAFETY: the handle's front is live while `self` is.
        match unsafe { &*front }.member() {
            // SAFETY: a member lives in a state's slots, never a seed's.
            Some(m) => unsafe { ArenaState::of_front(front) }.allocate_in(m, layout),
            None => self.allocate_slow(front, layout),
        }
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let b = self.allocate(layout)?;
        // SAFETY: the block is ours and `len` bytes long.
        unsafe { b.as_ptr().cast::<u8>().write_bytes(0, b.len()) };
        Ok(b)
    }

    #[inline(always)]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        let front = self.front();
        // SAFETY: the handle's front is live while `self` is.
        match unsafe { &*front }.member() {
            // SAFETY: as in `allocate`; forwarded trait contract.
            Some(m) => unsafe { ArenaState::of_front(front).deallocate_in(m, ptr, layout) },
            // SAFETY: forwarded trait contract.
            None => unsafe { self.deallocate_slow(front, ptr, layout) },
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        debug_assert!(new.size() >= old.size());
        let front = self.front();
        // SAFETY: the handle's front is live while `self` is.
        if let Some(m) = unsafe { &*front }.member() {
            // SAFETY: as in `allocate`; forwarded trait contract.
            if let Some(r) = unsafe { ArenaState::of_front(front).grow_in(m, ptr, old, new) } {
                return r;
            }
        }
        // SAFETY: forwarded trait contract.
        unsafe { self.relocate(ptr, old, new, old.size()) }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded trait contract.
        let b = unsafe { self.grow(ptr, old, new)? };
        // SAFETY: bytes `old.size()..len` of the block are ours to zero,
        // whether it moved or not (they may hold a previous user's data).
        unsafe {
            b.as_ptr()
                .cast::<u8>()
                .add(old.size())
                .write_bytes(0, b.len() - old.size())
        };
        Ok(b)
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        debug_assert!(new.size() <= old.size());
        // SAFETY: forwarded trait contract.
        unsafe { self.relocate(ptr, old, new, new.size()) }
    }
}

impl Seed {
    /// Allocates in the seed's arena: from the room while blocks fit, else
    /// from the arena's state, grown now if it has none. Also returns the
    /// state if the arena has one now.
    pub(crate) fn allocate(
        &self,
        layout: Layout,
    ) -> (Result<NonNull<[u8]>, AllocError>, Option<&ArenaState>) {
        if layout.size() == 0 {
            return (Ok(dangling(layout.align())), None);
        }
        let grown = match class_for(layout.size(), layout.align()) {
            Some(class) => match self.alloc(class) {
                Ok(b) => {
                    let len = CLASS_SIZE[class] as usize;
                    return (Ok(NonNull::slice_from_raw_parts(b, len)), None);
                }
                Err(grown) => grown,
            },
            None => None,
        };
        match grown.or_else(|| self.grow()) {
            Some(st) => (st.allocate(layout), Some(st)),
            None => (Err(AllocError), None),
        }
    }
}

/// An arena still in its seed (see `arena::seed`): small blocks from the
/// seed while they fit, else the arena grows its state and serves there.
impl SmallMidArena {
    /// An allocation with no member of this thread at the front: a state's
    /// first on this thread, or a seed's.
    #[inline(never)]
    fn allocate_slow(
        &self,
        front: *const Front,
        layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the handle's front.
        match unsafe { View::of(front) } {
            View::Full(st) => st.allocate(layout),
            View::Seed(seed) => self.allocate_seeded(seed, layout),
        }
    }

    /// # Safety
    /// As for [`Allocator::deallocate`].
    #[inline(never)]
    unsafe fn deallocate_slow(&self, front: *const Front, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the handle's front.
        match unsafe { View::of(front) } {
            // SAFETY: forwarded contract.
            View::Full(st) => unsafe { st.deallocate(ptr, layout) },
            // SAFETY: forwarded contract.
            View::Seed(seed) => unsafe { self.deallocate_seeded(seed, ptr, layout) },
        }
    }

    #[cold]
    #[inline(never)]
    fn allocate_seeded(&self, seed: &Seed, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let (block, st) = seed.allocate(layout);
        if let Some(st) = st {
            self.grown_to(st);
        }
        block
    }

    /// # Safety
    /// As for [`Allocator::deallocate`].
    #[cold]
    #[inline(never)]
    unsafe fn deallocate_seeded(&self, seed: &Seed, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        let st = match class_for(layout.size(), layout.align()) {
            Some(class) => seed.free(ptr.as_ptr(), class),
            // Only a grown arena hands out large blocks.
            None => seed.full(),
        };
        if let Some(st) = st {
            self.grown_to(st);
            // SAFETY: forwarded contract: a block of this arena.
            unsafe { st.deallocate(ptr, layout) }
        }
    }

    /// Moves a block to a new layout, copying `keep` bytes.
    ///
    /// # Safety
    /// As for [`ArenaState::relocate`].
    #[inline(always)]
    unsafe fn relocate(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        keep: usize,
    ) -> Result<NonNull<[u8]>, AllocError> {
        match self.view() {
            // SAFETY: forwarded contract.
            View::Full(st) => unsafe { st.relocate(ptr, old, new, keep) },
            // SAFETY: forwarded contract.
            View::Seed(seed) => unsafe { self.relocate_seeded(seed, ptr, old, new, keep) },
        }
    }

    /// [`Self::relocate`] for an arena the handle names by its seed.
    ///
    /// # Safety
    /// As for [`ArenaState::relocate`].
    #[cold]
    #[inline(never)]
    unsafe fn relocate_seeded(
        &self,
        seed: &Seed,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        keep: usize,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if let Some(st) = seed.full() {
            self.grown_to(st);
            // SAFETY: forwarded contract.
            return unsafe { st.relocate(ptr, old, new, keep) };
        }
        // A block of the seed (or none): it keeps its class.
        let class = |l: Layout| class_for(l.size(), l.align()).filter(|_| l.size() != 0);
        if let (Some(a), Some(b)) = (class(old), class(new)) {
            if a == b && ptr.as_ptr() as usize & (new.align() - 1) == 0 {
                return Ok(NonNull::slice_from_raw_parts(ptr, CLASS_SIZE[a] as usize));
            }
        }
        let fresh = self.allocate(new)?;
        // SAFETY: both blocks are live, distinct, and at least `keep` long;
        // `ptr` per contract.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), fresh.as_ptr().cast::<u8>(), keep);
            self.deallocate(ptr, old);
        }
        Ok(fresh)
    }
}

// A panic leaves the arena consistent: the engine calls no user code, and
// its one panic inside a critical section (a block freed with another
// class's layout, caught when its batch is flushed) fires before that
// block is touched, after the blocks before it were returned whole; the
// rest of that batch, and the part of the cache's list the flush was to
// keep, stay counted as in use (leaked until reset or drop).
// `checked` misuse panics fire before any state changes; locks ignore
// poison (see `sync::lock`). So `catch_unwind(|| arena.alloc(1))` is as
// sound as with `&Vec`.
impl core::panic::UnwindSafe for SmallMidArena {}
impl core::panic::RefUnwindSafe for SmallMidArena {}
