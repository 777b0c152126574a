//! The SuperSlab: a 1 MiB-aligned region of 16 slabs of 64 KiB.
//!
//! Its header sits at the region's first bytes, inside slab 0, so the header
//! of any block is found by masking the block's address. The header holds
//! the owning heap (fixed while the heap holds the SuperSlab), the pool's
//! bookkeeping (protected by the heap's pool lock) and the 16 slab records.
//! The first [`META`] bytes of slab 0 are reserved for the header and, in an
//! arena's first ("home") SuperSlab, the arena's own state (at
//! [`STATE_OFFSET`]); slab 0 serves small classes after that, and never
//! large spans.

use crate::heap::Heap;
use crate::slab::{Slab, SLAB_SIZE};
use crate::sync::UnsafeCell;
use core::ptr::null;

/// Size and alignment of a SuperSlab.
pub(crate) const SUPERSLAB_SIZE: usize = 1 << 20;
/// Slabs per SuperSlab.
pub(crate) const SLABS: usize = SUPERSLAB_SIZE / SLAB_SIZE;
/// Bytes at the start of slab 0 reserved for metadata.
pub(crate) const META: usize = if cfg!(loom) { 32 << 10 } else { 8 << 10 };
/// A free-slab mask with every slab free.
pub(crate) const ALL_FREE: u16 = u16::MAX;

/// The pool's bookkeeping for one SuperSlab (pool lock).
#[derive(Debug)]
pub(crate) struct PoolLinks {
    /// Bit `i` set: slab `i` is free.
    pub(crate) free_mask: u16,
    /// Bit `i` set: slab `i` is free, emptied while the arena lived, and
    /// maybe still resident (counted in the pool's `resident`).
    pub(crate) resident: u16,
    /// From a region advised for transparent huge pages: its free slabs
    /// are never decommitted one by one (that would split a 2 MiB page).
    pub(crate) huge_paged: bool,
    /// Links in the arena's list of all its SuperSlabs.
    pub(crate) all_prev: *const SuperSlab,
    pub(crate) all_next: *const SuperSlab,
    /// Links in the arena's list of SuperSlabs with a free slab.
    pub(crate) in_avail: bool,
    pub(crate) avail_prev: *const SuperSlab,
    pub(crate) avail_next: *const SuperSlab,
}

/// Header of a SuperSlab. Lives at the SuperSlab's base address.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SuperSlab {
    /// The owning heap; written before the SuperSlab is shared, then fixed.
    pub(crate) owner: *const Heap,
    /// Where a mixed slab 0 starts: past the header and whatever state the
    /// owner keeps here (see [`Self::init`]). Fixed.
    pub(crate) blocks_from: usize,
    pub(crate) links: UnsafeCell<PoolLinks>,
    pub(crate) slabs: [Slab; SLABS],
}

impl SuperSlab {
    /// The owner a SuperSlab of arenas' seeds names: no heap (never
    /// followed; see [`Self::is_seeds`]).
    pub(crate) const SEEDS: *const Heap = core::ptr::without_provenance(1);

    /// Whether the SuperSlab at `ss` holds seeds, not a heap's slabs: its
    /// blocks belong to no slab (see `arena::seed`).
    ///
    /// # Safety
    /// `ss` is a live header.
    #[inline]
    pub(crate) unsafe fn is_seeds(ss: *const SuperSlab) -> bool {
        // SAFETY: per contract.
        unsafe { (*ss).owner == Self::SEEDS }
    }

    /// Writes a fresh header for `owner` at `base`, every slab free, with
    /// room for `state` bytes of the owner's at [`STATE_OFFSET`]: blocks
    /// of a mixed slab 0 start right after them, so an arena's first
    /// blocks share its state's last page.
    ///
    /// # Panics
    /// If the state does not fit in [`META`].
    ///
    /// # Safety
    /// `base` is a SuperSlab-aligned mapping of [`SUPERSLAB_SIZE`] bytes that
    /// nothing else uses.
    pub(crate) unsafe fn init(base: *mut u8, owner: *const Heap, state: usize) -> *const SuperSlab {
        let blocks_from = (STATE_OFFSET + state).next_multiple_of(64);
        assert!(blocks_from <= META, "an owner's state fits in META");
        // A SuperSlab released by another arena is poisoned past its own
        // `blocks_from`, which may be less: this owner's state goes there.
        crate::asan::unpoison(base, blocks_from);
        let ss = base.cast::<SuperSlab>();
        let header = SuperSlab {
            owner,
            blocks_from,
            links: UnsafeCell::new(PoolLinks {
                free_mask: ALL_FREE,
                resident: 0,
                huge_paged: false,
                all_prev: null(),
                all_next: null(),
                in_avail: false,
                avail_prev: null(),
                avail_next: null(),
            }),
            slabs: core::array::from_fn(|_| Slab::new_free()),
        };
        // SAFETY: per contract the memory is ours, aligned and large enough.
        unsafe { ss.write(header) };
        ss
    }

    /// The header of the SuperSlab containing address `addr`.
    ///
    /// Uses the provenance that [`crate::os::map`] exposed, so it works for
    /// any pointer into the region, whatever reference it was derived from.
    #[inline(always)]
    pub(crate) fn of(addr: usize) -> *const SuperSlab {
        core::ptr::with_exposed_provenance(addr & !(SUPERSLAB_SIZE - 1))
    }

    /// Index of the slab containing `addr` within its SuperSlab.
    #[inline(always)]
    pub(crate) fn slab_index(addr: usize) -> usize {
        (addr / SLAB_SIZE) % SLABS
    }

    /// Start of slab `idx` of the SuperSlab at `ss`.
    #[inline(always)]
    pub(crate) fn slab_start(ss: *const SuperSlab, idx: usize) -> *mut u8 {
        core::ptr::with_exposed_provenance_mut(ss as usize + idx * SLAB_SIZE)
    }

    /// Runs `f` on the pool bookkeeping.
    ///
    /// # Safety
    /// `ss` is a live header and the caller holds its arena's pool lock.
    #[inline]
    pub(crate) unsafe fn links<R>(ss: *const SuperSlab, f: impl FnOnce(&mut PoolLinks) -> R) -> R {
        // SAFETY: the pool lock gives exclusive access to the links.
        unsafe { (*ss).links.with_mut(|l| f(&mut *l)) }
    }
}

/// Where an owner's state may sit in slab 0 (see [`SuperSlab::init`]).
pub(crate) const STATE_OFFSET: usize = core::mem::size_of::<SuperSlab>().next_multiple_of(64);

const _: () = assert!(core::mem::size_of::<SuperSlab>() <= META / 2);
