//! allocator-api2 0.4's `Allocator` (feature `allocator-api2-04`), forwarded
//! to the 0.2 implementation in [`crate::api`].
//!
//! # Example
//! ```
//! # #[cfg(feature = "allocator-api2-04")] {
//! use allocator_api2_04::vec::Vec;
//! let arena = smallmid::SmallMidArena::new();
//! let mut v = Vec::new_in(&arena);
//! v.extend_from_slice(&[1u8, 2, 3]);
//! assert_eq!(v, [1, 2, 3]);
//! # }
//! ```

use crate::arena::SmallMidArena;
use allocator_api2 as v02;
use allocator_api2_04::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;

/// The two versions' `AllocError`s are distinct unit types.
#[inline(always)]
fn conv(r: Result<NonNull<[u8]>, v02::alloc::AllocError>) -> Result<NonNull<[u8]>, AllocError> {
    r.map_err(|_| AllocError)
}

// SAFETY: every method forwards to the 0.2 implementation, whose contract
// (blocks valid until freed, aligned, at least the size) is the same; 0.4's
// method contracts are identical to 0.2's.
unsafe impl Allocator for SmallMidArena {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        conv(v02::alloc::Allocator::allocate(self, layout))
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        conv(v02::alloc::Allocator::allocate_zeroed(self, layout))
    }

    #[inline(always)]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded trait contract.
        unsafe { v02::alloc::Allocator::deallocate(self, ptr, layout) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded trait contract.
        conv(unsafe { v02::alloc::Allocator::grow(self, ptr, old, new) })
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded trait contract.
        conv(unsafe { v02::alloc::Allocator::grow_zeroed(self, ptr, old, new) })
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded trait contract.
        conv(unsafe { v02::alloc::Allocator::shrink(self, ptr, old, new) })
    }
}
