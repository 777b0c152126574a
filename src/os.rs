//! The only module that maps and unmaps memory.
//!
//! On unix, anonymous `mmap`; elsewhere, and under miri or loom (which cannot
//! run `mmap`), `std::alloc` with the same size and alignment. Every mapping
//! exposes its provenance, so a block's SuperSlab header can be found from
//! the block's address alone (see [`crate::superslab::SuperSlab::of`]).

use crate::sync::{global, AtomicU64, Ordering};
use core::ptr::NonNull;

/// The page size assumed for layout decisions (huge-block headers).
pub(crate) const PAGE: usize = 4096;

global! {
    /// Successful calls to [`map`] since the process started.
    static MAPS: AtomicU64 = AtomicU64::new(0);
}
global! {
    /// Calls to [`unmap`] since the process started.
    static UNMAPS: AtomicU64 = AtomicU64::new(0);
}
global! {
    /// Test hook: number of upcoming [`map`] calls that fail on purpose.
    static FAIL_NEXT: AtomicU64 = AtomicU64::new(0);
}

/// (maps, unmaps) since the process started.
pub(crate) fn counters() -> (u64, u64) {
    (MAPS.load(Ordering::Relaxed), UNMAPS.load(Ordering::Relaxed))
}

/// Makes the next `n` calls to [`map`] fail, as if the OS were out of memory.
/// A test hook (feature `test-hooks`).
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub fn fail_next_maps(n: u64) {
    FAIL_NEXT.store(n, Ordering::Relaxed);
}

/// Maps `len` bytes of zeroed-or-dirty, read-write memory aligned to `align`.
/// `len` must be a non-zero multiple of [`PAGE`]; `align` a power of two.
/// Returns `None` when the OS refuses or the arithmetic overflows.
pub(crate) fn map(len: usize, align: usize) -> Option<NonNull<u8>> {
    debug_assert!(len > 0 && len % PAGE == 0 && align.is_power_of_two());
    if cfg!(feature = "test-hooks") && FAIL_NEXT.load(Ordering::Relaxed) > 0 {
        let n = FAIL_NEXT.load(Ordering::Relaxed);
        FAIL_NEXT.store(n - 1, Ordering::Relaxed);
        return None;
    }
    let p = imp::map(len, align)?;
    MAPS.fetch_add(1, Ordering::Relaxed);
    let _ = p.as_ptr().expose_provenance();
    Some(p)
}

/// Returns a mapping made by [`map`].
///
/// # Safety
/// `ptr`, `len`, `align` are exactly those of one earlier [`map`] call whose
/// memory is not used afterwards and not unmapped before.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize, align: usize) {
    UNMAPS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: forwarded contract.
    unsafe { imp::unmap(ptr, len, align) }
}

#[cfg(all(unix, not(miri), not(loom)))]
mod imp {
    use super::PAGE;
    use core::ptr::{null_mut, NonNull};

    fn mmap(len: usize) -> Option<NonNull<u8>> {
        // SAFETY: an anonymous private mapping at no fixed address touches no
        // existing memory.
        let p = unsafe {
            libc::mmap(
                null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
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

    pub(super) fn map(len: usize, align: usize) -> Option<NonNull<u8>> {
        let p = mmap(len)?;
        if align <= PAGE || p.as_ptr() as usize % align == 0 {
            return Some(p);
        }
        // Not aligned: over-map and trim. Linux places successive mappings
        // next to each other, so the first try above usually succeeds.
        munmap(p.as_ptr(), len);
        let big = len.checked_add(align)?;
        let base = mmap(big)?.as_ptr();
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
}

#[cfg(not(all(unix, not(miri), not(loom))))]
mod imp {
    use core::ptr::NonNull;
    use std::alloc::Layout;

    pub(super) fn map(len: usize, align: usize) -> Option<NonNull<u8>> {
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
}
