//! The only module that maps, unmaps and advises memory.
//!
//! On unix, anonymous `mmap`; elsewhere, and under miri or loom (which cannot
//! run `mmap` or `madvise`), `std::alloc` with the same size and alignment.
//! Every mapping exposes its provenance, so a block's SuperSlab header can be
//! found from the block's address alone (see
//! [`crate::superslab::SuperSlab::of`]).
//!
//! Besides mapping, the OS layer offers what the memory hierarchy needs:
//! [`reserve`] (address space for a region, committed on first touch),
//! [`decommit`] (give pages back but keep the range mapped),
//! [`advise_huge`] (transparent huge pages) and [`remap`] (resize a mapping
//! without copying). Each is a no-op or `None` where the platform lacks it;
//! callers check [`CAN_DECOMMIT`] or the result and fall back.

use crate::sync::{global, AtomicU64, Ordering};
use core::ptr::NonNull;

/// The page size assumed for layout decisions (huge-block headers).
pub(crate) const PAGE: usize = 4096;

/// The transparent huge page size mappings are aligned to (x86-64, arm64
/// with 4 KiB pages).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Whether [`advise_huge`] can have an effect: worth aligning for.
pub(crate) const HUGE_PAGES: bool = cfg!(all(
    any(target_os = "linux", target_os = "android"),
    not(miri),
    not(loom)
));

/// Whether [`decommit`] gives pages back. Where it cannot (the `std::alloc`
/// backend), memory is returned by unmapping whole regions instead.
pub(crate) const CAN_DECOMMIT: bool = imp::CAN_DECOMMIT;

global! {
    /// Successful calls to [`map`] and [`reserve`] since the process started.
    static MAPS: AtomicU64 = AtomicU64::new(0);
}
global! {
    /// Calls to [`unmap`] since the process started.
    static UNMAPS: AtomicU64 = AtomicU64::new(0);
}
global! {
    /// Calls to [`decommit`] that reached the OS since the process started.
    static DECOMMITS: AtomicU64 = AtomicU64::new(0);
}
global! {
    /// Test hook: number of upcoming OS requests that fail on purpose.
    static FAIL_NEXT: AtomicU64 = AtomicU64::new(0);
}

/// (maps, unmaps) since the process started.
pub(crate) fn counters() -> (u64, u64, u64) {
    (
        MAPS.load(Ordering::Relaxed),
        UNMAPS.load(Ordering::Relaxed),
        DECOMMITS.load(Ordering::Relaxed),
    )
}

/// Makes the next `n` requests for memory from the OS fail, as if it were
/// out of memory: mappings ([`map`], [`reserve`], growing [`remap`]) and commits of
/// decommitted SuperSlabs (see [`refused`]). A test hook (feature `test-hooks`).
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub fn fail_next_maps(n: u64) {
    FAIL_NEXT.store(n, Ordering::Relaxed);
}

/// Consumes one pending failure of `fail_next_maps` (test hooks): `true` means "treat
/// this request as refused by the OS".
///
/// Taking a decommitted SuperSlab back is such a request: its pages come
/// from the OS again on first touch, so the hook refuses it too.
pub(crate) fn refused() -> bool {
    FAIL_NEXT
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// Maps `len` bytes of zeroed-or-dirty, read-write memory aligned to `align`.
/// `len` must be a non-zero multiple of [`PAGE`]; `align` a power of two.
/// Returns `None` when the OS refuses or the arithmetic overflows.
pub(crate) fn map(len: usize, align: usize) -> Option<NonNull<u8>> {
    map_with(len, align, false)
}

/// Reserves `len` bytes of address space aligned to `align`, read-write but
/// committed only page by page on first touch (no swap reservation), with
/// transparent huge pages asked for if `huge`. For regions of SuperSlabs.
pub(crate) fn reserve(len: usize, align: usize, huge: bool) -> Option<NonNull<u8>> {
    let p = map_with(len, align, true)?;
    if huge {
        advise_huge(p, len);
    }
    Some(p)
}

fn map_with(len: usize, align: usize, noreserve: bool) -> Option<NonNull<u8>> {
    debug_assert!(len > 0 && len % PAGE == 0 && align.is_power_of_two());
    if refused() {
        return None;
    }
    let p = imp::map(len, align, noreserve)?;
    MAPS.fetch_add(1, Ordering::Relaxed);
    let _ = p.as_ptr().expose_provenance();
    crate::asan::register_root(p.as_ptr(), len);
    Some(p)
}

/// Returns a mapping made by [`map`] or [`reserve`].
///
/// # Safety
/// `ptr`, `len`, `align` are exactly those of one earlier [`map`] or
/// [`reserve`] call (or of its last successful [`remap`]) whose memory is not
/// used afterwards and not unmapped before.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize, align: usize) {
    UNMAPS.fetch_add(1, Ordering::Relaxed);
    crate::asan::unregister_root(ptr.as_ptr(), len);
    // SAFETY: forwarded contract.
    unsafe { imp::unmap(ptr, len, align) }
}

/// Gives the pages of `[ptr, ptr + len)` back to the OS; the range stays
/// mapped and reads as zeros (or, after an `MADV_FREE`, as its old bytes)
/// until written. Does nothing where [`CAN_DECOMMIT`] is false.
///
/// # Safety
/// The range is page-aligned, inside one mapping of ours, and holds nothing
/// anyone will read.
pub(crate) unsafe fn decommit(ptr: NonNull<u8>, len: usize) {
    if CAN_DECOMMIT {
        DECOMMITS.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: forwarded contract.
    unsafe { imp::decommit(ptr, len) }
}

/// Asks for transparent huge pages on `[ptr, ptr + len)`, a range of our
/// mappings. Advice only: an error (no THP support, THP disabled) is
/// ignored and small pages serve.
pub(crate) fn advise_huge(ptr: NonNull<u8>, len: usize) {
    imp::advise_huge(ptr, len);
}

/// Resizes a mapping made by [`map`] from `old_len` to `new_len` bytes,
/// keeping its contents; it may move only if `may_move`. `None` when the OS
/// refuses or cannot (every platform but Linux): the old mapping is intact.
///
/// # Safety
/// `ptr`, `old_len` describe one whole live mapping of ours; if it moves
/// (the result differs from `ptr`), nothing uses the old addresses again.
pub(crate) unsafe fn remap(
    ptr: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    may_move: bool,
) -> Option<NonNull<u8>> {
    debug_assert!(new_len > 0 && new_len % PAGE == 0);
    if new_len > old_len && refused() {
        return None;
    }
    // SAFETY: forwarded contract.
    let p = unsafe { imp::remap(ptr, old_len, new_len, may_move)? };
    let _ = p.as_ptr().expose_provenance();
    crate::asan::unregister_root(ptr.as_ptr(), old_len);
    crate::asan::register_root(p.as_ptr(), new_len);
    Some(p)
}

#[cfg(all(unix, not(miri), not(loom)))]
mod imp {
    use super::PAGE;
    use core::ptr::{null_mut, NonNull};

    pub(super) const CAN_DECOMMIT: bool = true;

    fn mmap(len: usize, noreserve: bool) -> Option<NonNull<u8>> {
        let extra = if noreserve { libc::MAP_NORESERVE } else { 0 };
        // SAFETY: an anonymous private mapping at no fixed address touches no
        // existing memory.
        let p = unsafe {
            libc::mmap(
                null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            None
        } else {
            NonNull::new(p.cast())
        }
    }

    fn munmap(p: *mut u8, len: usize) {
        // SAFETY: callers pass whole pages inside a mapping they own.
        let rc = unsafe { libc::munmap(p.cast(), len) };
        debug_assert_eq!(rc, 0, "munmap failed");
    }

    pub(super) fn map(len: usize, align: usize, noreserve: bool) -> Option<NonNull<u8>> {
        let p = mmap(len, noreserve)?;
        if align <= PAGE || p.as_ptr() as usize % align == 0 {
            return Some(p);
        }
        // Not aligned: over-map and trim. Linux places successive mappings
        // next to each other, so the first try above usually succeeds.
        munmap(p.as_ptr(), len);
        let big = len.checked_add(align)?;
        let base = mmap(big, noreserve)?.as_ptr();
        let head = base.align_offset(align);
        if head > 0 {
            munmap(base, head);
        }
        let tail = big - head - len;
        // SAFETY: base + head + len stays inside the `big` mapping.
        let aligned = unsafe { base.add(head) };
        if tail > 0 {
            // SAFETY: as above; the tail is the last `tail` bytes of it.
            munmap(unsafe { aligned.add(len) }, tail);
        }
        NonNull::new(aligned)
    }

    /// # Safety
    /// See [`super::unmap`].
    pub(super) unsafe fn unmap(ptr: NonNull<u8>, len: usize, _align: usize) {
        munmap(ptr.as_ptr(), len);
    }

    /// # Safety
    /// See [`super::decommit`].
    pub(super) unsafe fn decommit(ptr: NonNull<u8>, len: usize) {
        // MADV_DONTNEED, not MADV_FREE: the pages leave RSS at once. MADV_FREE
        // leaves them counted until memory pressure (256 MiB stayed
        // resident), which defeats trim and the bound; its cheaper reuse is
        // what the warm cache is for.
        // SAFETY: per contract the range is ours and holds nothing needed.
        let _ = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED) };
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn advise_huge(ptr: NonNull<u8>, len: usize) {
        // SAFETY: advice on our own mapping; it changes no contents.
        let _ = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn advise_huge(_: NonNull<u8>, _: usize) {}

    /// # Safety
    /// See [`super::remap`].
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) unsafe fn remap(
        ptr: NonNull<u8>,
        old_len: usize,
        new_len: usize,
        may_move: bool,
    ) -> Option<NonNull<u8>> {
        let flags = if may_move { libc::MREMAP_MAYMOVE } else { 0 };
        // SAFETY: per contract `ptr`/`old_len` is one whole mapping of ours.
        let p = unsafe { libc::mremap(ptr.as_ptr().cast(), old_len, new_len, flags) };
        if p == libc::MAP_FAILED {
            None
        } else {
            NonNull::new(p.cast())
        }
    }

    /// # Safety
    /// See [`super::remap`].
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) unsafe fn remap(_: NonNull<u8>, _: usize, _: usize, _: bool) -> Option<NonNull<u8>> {
        None
    }
}

#[cfg(not(all(unix, not(miri), not(loom))))]
mod imp {
    use core::ptr::NonNull;
    use std::alloc::Layout;

    pub(super) const CAN_DECOMMIT: bool = false;

    pub(super) fn map(len: usize, align: usize, _noreserve: bool) -> Option<NonNull<u8>> {
        let layout = Layout::from_size_align(len, align).ok()?;
        // SAFETY: layout has non-zero size (len > 0 is map's precondition).
        NonNull::new(unsafe { std::alloc::alloc(layout) })
    }

    /// # Safety
    /// See [`super::unmap`].
    pub(super) unsafe fn unmap(ptr: NonNull<u8>, len: usize, align: usize) {
        // SAFETY: same layout as the `alloc` in `map`, per the contract.
        unsafe { std::alloc::dealloc(ptr.as_ptr(), Layout::from_size_align_unchecked(len, align)) }
    }

    /// # Safety
    /// See [`super::decommit`].
    pub(super) unsafe fn decommit(_: NonNull<u8>, _: usize) {}

    pub(super) fn advise_huge(_: NonNull<u8>, _: usize) {}

    /// # Safety
    /// See [`super::remap`].
    pub(super) unsafe fn remap(_: NonNull<u8>, _: usize, _: usize, _: bool) -> Option<NonNull<u8>> {
        None
    }
}
