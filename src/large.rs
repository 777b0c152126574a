//! Blocks too big (or too aligned) for a size class.
//!
//! - **Spans**: up to 15 contiguous 64 KiB slabs of one SuperSlab, taken
//!   from the arena's pool (so they reuse warm memory and count against the
//!   limit like everything else). The block starts at a slab boundary, so
//!   any alignment up to 512 KiB is served; its header is its SuperSlab's,
//!   found by masking like any small block.
//! - **Huge**: anything larger gets its own mapping, with a [`HugeHeader`]
//!   just below the block. The arena keeps huge blocks on a list, so
//!   dropping the arena unmaps them too. A mapping of [`HUGE_PAGE`] or more
//!   (or a block of 1 to 2 MiB about twice the arena's last large one:
//!   rounded up to one) is aligned to it and asks for transparent huge
//!   pages: a 256 MiB block then faults 128 times, not 65,536, and a
//!   1.1 MiB hash table grown from a 557 KiB one once, not 272 times. A freed huge block's mapping is
//!   kept for a while for the next one of about its size, process-wide
//!   (see [`crate::huge_cache`]).
//!
//! Which kind serves a layout depends only on the layout (see [`kind`]),
//! and every size between a request and the returned length gives the same
//! kind, so `deallocate` with any fitting layout finds the block.

use crate::heap::Heap;
use crate::huge_cache;
use crate::os::{self, HUGE_PAGE, PAGE};
use crate::pool::Pool;
use crate::slab::SLAB_SIZE;
use crate::superslab::{SuperSlab, SLABS};
use crate::sync::lock;
use allocator_api2::alloc::AllocError;
use core::alloc::Layout;
use core::ptr::{null_mut, NonNull};

/// Whether huge blocks can be resized without a copy (`mremap`).
pub(crate) const CAN_RESIZE: bool = cfg!(all(
    any(target_os = "linux", target_os = "android"),
    not(miri),
    not(loom)
));

/// How a large layout is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `slabs` contiguous slabs starting at a multiple of `step`.
    Span {
        slabs: usize,
        step: usize,
    },
    Huge,
}

/// The kind serving a layout that no size class serves.
pub(crate) fn kind(size: usize, align: usize) -> Kind {
    let slabs = size.div_ceil(SLAB_SIZE).max(1);
    let step = (align / SLAB_SIZE).max(1);
    // Spans never start at slab 0 (it holds the header).
    if step < SLABS && step + slabs <= SLABS {
        Kind::Span { slabs, step }
    } else {
        Kind::Huge
    }
}

/// Header of a huge block, at `block - HEADER_GAP`.
#[derive(Debug)]
pub(crate) struct HugeHeader {
    /// The heap the block belongs to.
    pub(crate) owner: *const Heap,
    /// The mapping: `[base, base + len)`, aligned to `map_align`; the block
    /// starts at `base + align`.
    base: NonNull<u8>,
    pub(crate) len: usize,
    pub(crate) align: usize,
    map_align: usize,
    prev: *mut HugeHeader,
    next: *mut HugeHeader,
}

impl HugeHeader {
    /// Bytes usable from the block's start to the mapping's end.
    pub(crate) fn usable(&self) -> usize {
        self.len - self.align
    }
}

/// Distance from a huge block down to its header.
const HEADER_GAP: usize = 64;
const _: () = assert!(core::mem::size_of::<HugeHeader>() <= HEADER_GAP);

/// The header of a huge block.
///
/// # Safety
/// `block` was returned by the huge path and is live.
pub(crate) unsafe fn huge_header(block: *mut u8) -> *mut HugeHeader {
    core::ptr::with_exposed_provenance_mut(block as usize - HEADER_GAP)
}

impl Heap {
    /// Allocates a block that no size class serves, of kind `k`
    /// (`kind(layout)`).
    pub(crate) fn alloc_large(&self, layout: Layout, k: Kind) -> Result<NonNull<[u8]>, AllocError> {
        self.mark_dirty();
        match k {
            Kind::Span { slabs, step } => {
                let mut pool = lock(&self.pool);
                let dense = pool.doubles(layout.size());
                pool.last_large = layout.size();
                let (ss, idx) = pool.take_span(slabs, step, dense).ok_or(AllocError)?;
                self.count_large(&mut pool, 1, 0, (slabs * SLAB_SIZE) as i64);
                drop(pool);
                let p = SuperSlab::slab_start(ss, idx);
                // SAFETY: `p` is the start of a slab, never null.
                let p = unsafe { NonNull::new_unchecked(p) };
                Ok(NonNull::slice_from_raw_parts(p, slabs * SLAB_SIZE))
            }
            Kind::Huge => self.alloc_huge(layout),
        }
    }

    fn alloc_huge(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let usable = layout
            .size()
            .checked_next_multiple_of(PAGE)
            .ok_or(AllocError)?;
        let lead = layout.align().max(PAGE);
        let len = usable.checked_add(lead).ok_or(AllocError)?;
        if len > isize::MAX as usize {
            return Err(AllocError);
        }
        let mut pool = lock(&self.pool);
        if !pool.fits(len) {
            return Err(AllocError);
        }
        // Only whole huge pages inside a mapping get one: rounded up to a
        // whole number of them, the tail does not fault 4 KiB at a time
        // (a 17 MiB table: 266 faults -> 9). Only where that adds at most a
        // quarter, or, for a block of 1 MiB or more that about doubles the
        // last large one (a table or buffer growing, which will grow
        // again), at most the block's own size: a 1.1 MiB table faults
        // once, not 272 times, a 4.5 MiB one 3 times, not 117; a lone
        // block, or one like the last, stays as it is. The block's length
        // says how much it got. Not under a limit: the rounding would spend
        // it (a limited arena takes no huge-paged SuperSlab either).
        let doubles = pool.doubles(layout.size());
        pool.last_large = layout.size();
        let len = match len.checked_next_multiple_of(HUGE_PAGE) {
            Some(r)
                if os::HUGE_PAGES
                    && !self.limited()
                    && (r - len <= len / 4
                        || (doubles && layout.size() >= HUGE_PAGE / 2 && r - len <= len)) =>
            {
                r
            }
            _ => len,
        };
        let map_align = if os::HUGE_PAGES && len >= HUGE_PAGE {
            lead.max(HUGE_PAGE)
        } else {
            lead
        };
        // A kept mapping of about this size first (see `huge_cache`).
        let cached = huge_cache::take(len, map_align).and_then(|m| {
            if pool.fits(m.len) {
                Some(m)
            } else {
                // SAFETY: just taken from the cache, reachable from nothing.
                unsafe { huge_cache::put(m) };
                None
            }
        });
        let (base, len, map_align) = match cached {
            Some(m) => {
                // The cache poisoned it all; the header goes below the block.
                crate::asan::unpoison(m.base.as_ptr(), lead);
                (m.base, m.len, m.map_align)
            }
            None => {
                let base = os::map(len, map_align).ok_or(AllocError)?;
                if map_align >= HUGE_PAGE {
                    os::advise_huge(base, len);
                }
                (base, len, map_align)
            }
        };
        let usable = len - lead;
        // SAFETY: `lead < len`, so the block and its header are inside the
        // mapping; the header slot is below the block and 8-aligned.
        let (block, header) = unsafe {
            let block = base.as_ptr().add(lead);
            (block, huge_header(block))
        };
        let old = pool.huge;
        // SAFETY: `header` is in our mapping (fresh, or from the huge cache:
        // unused, unpoisoned below the block); `old` is a live header on
        // the pool's list (pool lock held).
        unsafe {
            header.write(HugeHeader {
                owner: pool.heap(),
                base,
                len,
                align: lead,
                map_align,
                prev: null_mut(),
                next: old,
            });
            if !old.is_null() {
                (*old).prev = header;
            }
        }
        pool.huge = header;
        pool.huge_bytes += len;
        self.count_large(&mut pool, 1, 0, usable as i64);
        // SAFETY: inside a successful mapping.
        let block = unsafe { NonNull::new_unchecked(block) };
        Ok(NonNull::slice_from_raw_parts(block, usable))
    }

    /// Frees a block from [`Self::alloc_large`].
    ///
    /// # Safety
    /// `ptr` was allocated from this heap with a layout of kind `k`, and
    /// is not used afterwards.
    pub(crate) unsafe fn free_large(&self, ptr: NonNull<u8>, k: Kind) {
        let addr = ptr.as_ptr() as usize;
        match k {
            Kind::Span { .. } => {
                let (ss, idx) = (SuperSlab::of(addr), SuperSlab::slab_index(addr));
                let mut pool = lock(&self.pool);
                // SAFETY: per contract the span is ours and unused now.
                let slabs = unsafe { pool.release_span(ss, idx, true) };
                self.count_large(&mut pool, 0, 1, -((slabs * SLAB_SIZE) as i64));
            }
            Kind::Huge => {
                // SAFETY: per contract `ptr` is a live huge block of ours.
                let h = unsafe { huge_header(ptr.as_ptr()) };
                // SAFETY: as above, the header is live.
                let owner = unsafe { (*h).owner };
                assert!(
                    core::ptr::eq(owner, self),
                    "smallmid: huge block {ptr:p} freed into an arena that does not own it"
                );
                let (base, len, map_align) = {
                    let mut pool = lock(&self.pool);
                    // SAFETY: pool lock held; list members are live.
                    unsafe {
                        let (prev, next) = ((*h).prev, (*h).next);
                        if prev.is_null() {
                            pool.huge = next;
                        } else {
                            (*prev).next = next;
                        }
                        if !next.is_null() {
                            (*next).prev = prev;
                        }
                        pool.huge_bytes -= (*h).len;
                        self.count_large(&mut pool, 0, 1, -((*h).usable() as i64));
                        ((*h).base, (*h).len, (*h).map_align)
                    }
                };
                // SAFETY: the mapping was made with exactly these values;
                // off the arena's list, nothing reaches it.
                unsafe {
                    huge_cache::put(huge_cache::Mapping {
                        base,
                        len,
                        map_align,
                    })
                };
            }
        }
    }

    /// Resizes a live huge block of this arena to `new` (same alignment as
    /// it was allocated with) by resizing its mapping: in place if the
    /// address space allows, else by moving it (`mremap`, no copy). Counts
    /// against the memory limit exactly like a fresh block.
    ///
    /// `Ok(None)`: not possible here (no `mremap`, or a move would break an
    /// alignment over a page); the block is untouched and the caller
    /// copies. `Err`: past the memory limit; the block is untouched.
    ///
    /// # Safety
    /// `ptr` is a live huge block of this arena whose alignment is
    /// `new.align()`; if the result is a block, it replaces `ptr`.
    pub(crate) unsafe fn resize_huge(
        &self,
        ptr: NonNull<u8>,
        new: Layout,
    ) -> Result<Option<NonNull<[u8]>>, AllocError> {
        // SAFETY: forwarded contract.
        unsafe { self.resize_huge_with(ptr, new, true) }
    }

    /// [`Self::resize_huge`], moving the mapping only if `may_move`.
    ///
    /// # Safety
    /// As for [`Self::resize_huge`].
    pub(crate) unsafe fn resize_huge_with(
        &self,
        ptr: NonNull<u8>,
        new: Layout,
        may_move: bool,
    ) -> Result<Option<NonNull<[u8]>>, AllocError> {
        // SAFETY: per contract `ptr` is a live huge block.
        let h = unsafe { huge_header(ptr.as_ptr()) };
        // SAFETY: as above, the header is live.
        let owner = unsafe { (*h).owner };
        assert!(
            core::ptr::eq(owner, self),
            "smallmid: huge block {ptr:p} resized through an arena that does not own it"
        );
        let usable = new
            .size()
            .checked_next_multiple_of(PAGE)
            .ok_or(AllocError)?;
        let mut pool = lock(&self.pool);
        // SAFETY: pool lock held: the header is ours to read and rewrite.
        let (base, len, lead, prev, next) =
            unsafe { ((*h).base, (*h).len, (*h).align, (*h).prev, (*h).next) };
        let mut new_len = usable.checked_add(lead).ok_or(AllocError)?;
        if new_len > isize::MAX as usize {
            return Err(AllocError);
        }
        if new_len > len && !pool.fits(new_len - len) {
            return Err(AllocError);
        }
        // Past a huge page, a mapping is resized to a whole number of them.
        // Only whole huge pages inside the mapping get one (a vector grown
        // 4 KiB at a time would otherwise fault every 4 KiB page), and the
        // next small grows fit in place with no system call. Not under a
        // limit (the rounding would spend it, as in `alloc_huge`), and a
        // shrink never grows.
        if os::HUGE_PAGES && new_len >= HUGE_PAGE && !self.limited() {
            let round = new_len
                .checked_next_multiple_of(HUGE_PAGE)
                .filter(|&r| r <= isize::MAX as usize && (r <= len || pool.fits(r - len)));
            new_len = round.map_or(new_len, |r| if new_len <= len { r.min(len) } else { r });
        }
        if new_len == len {
            // SAFETY: the block is live and unchanged.
            return Ok(Some(NonNull::slice_from_raw_parts(ptr, len - lead)));
        }
        // In place keeps any alignment; a move keeps only page alignment.
        // SAFETY: `[base, base + len)` is the block's whole mapping, and on
        // success the old addresses are no longer used: the block and the
        // header are re-derived from the result below.
        let moved = unsafe {
            match os::remap(base, len, new_len, false) {
                Some(p) => Some(p),
                None if lead == PAGE && may_move => os::remap(base, len, new_len, true),
                None => None,
            }
        };
        let Some(new_base) = moved else {
            return Ok(None);
        };
        if len < HUGE_PAGE && new_len >= HUGE_PAGE {
            os::advise_huge(new_base, new_len);
        }
        // SAFETY: `lead < new_len`: block and header are in the mapping,
        // which moved with its contents (the header included).
        let (block, nh) = unsafe {
            let block = new_base.as_ptr().add(lead);
            (block, huge_header(block))
        };
        // SAFETY: pool lock held; `nh` is the live header, and `prev` and
        // `next` are live members of the pool's list.
        unsafe {
            (*nh).base = new_base;
            (*nh).len = new_len;
            if new_base != base {
                (*nh).map_align = PAGE; // all a moved mapping is known to keep
            }
            if prev.is_null() {
                pool.huge = nh;
            } else {
                (*prev).next = nh;
            }
            if !next.is_null() {
                (*next).prev = nh;
            }
        }
        pool.huge_bytes = pool.huge_bytes - len + new_len;
        let (old_usable, usable) = (len - lead, new_len - lead);
        self.count_large(&mut pool, 0, 0, usable as i64 - old_usable as i64);
        drop(pool);
        // SAFETY: inside a successful mapping.
        let block = unsafe { NonNull::new_unchecked(block) };
        Ok(Some(NonNull::slice_from_raw_parts(block, usable)))
    }

    /// Gives a span a cache kept (counted as freed then) back to the pool.
    ///
    /// # Safety
    /// `p` starts a span of this heap that no one uses.
    pub(crate) unsafe fn release_kept_span(&self, p: *mut u8) {
        let addr = p as usize;
        let mut pool = lock(&self.pool);
        // SAFETY: per contract.
        unsafe { pool.release_span(SuperSlab::of(addr), SuperSlab::slab_index(addr), true) };
    }

    /// Adds what a retiring cache's kept spans counted (allocations, frees,
    /// change of bytes in use, wrapping) to the large counters.
    pub(crate) fn fold_large(&self, allocs: u64, frees: u64, bytes: u64) {
        if allocs | frees | bytes != 0 {
            let mut pool = lock(&self.pool);
            self.count_large(&mut pool, allocs, frees, bytes as i64);
        }
    }
}

/// Whether `addr` lies in the usable bytes of one of `pool`'s huge blocks.
/// Compares addresses only; O(huge blocks).
pub(crate) fn huge_contains(pool: &Pool, addr: usize) -> bool {
    let mut h = pool.huge;
    while !h.is_null() {
        // SAFETY: a `&Pool` is only reached through its lock; the list's
        // headers are live while they are on it.
        let (base, len, align, next) =
            unsafe { ((*h).base.as_ptr() as usize, (*h).len, (*h).align, (*h).next) };
        if addr >= base + align && addr < base + len {
            return true;
        }
        h = next;
    }
    false
}

/// Unmaps every huge block of a pool; used when its arena is dropped.
///
/// # Safety
/// No huge block of the pool is used afterwards.
pub(crate) unsafe fn unmap_all_huge(pool: &mut Pool) {
    let mut h = core::mem::replace(&mut pool.huge, null_mut());
    pool.huge_bytes = 0;
    while !h.is_null() {
        // SAFETY: list members are live until unmapped here.
        let (base, len, map_align, next) =
            unsafe { ((*h).base, (*h).len, (*h).map_align, (*h).next) };
        // SAFETY: the mapping was made with these values and is unused.
        unsafe {
            huge_cache::put(huge_cache::Mapping {
                base,
                len,
                map_align,
            })
        };
        h = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind(40 << 10, 8), Kind::Span { slabs: 1, step: 1 });
        assert_eq!(kind(15 * SLAB_SIZE, 8), Kind::Span { slabs: 15, step: 1 });
        assert_eq!(kind(15 * SLAB_SIZE + 1, 8), Kind::Huge);
        assert_eq!(kind(100, 256 << 10), Kind::Span { slabs: 1, step: 4 });
        assert_eq!(kind(9 * SLAB_SIZE, 512 << 10), Kind::Huge);
        assert_eq!(kind(100, 1 << 20), Kind::Huge);
    }
}
