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
use core::alloc::Layout;
use core::ptr::NonNull;

crate::api::forward_allocator!(
    allocator_api2_04::alloc::Allocator,
    allocator_api2_04::alloc::AllocError,
    SmallMidArena,
    |s| s
);
crate::api::forward_allocator!(
    allocator_api2_04::alloc::Allocator,
    allocator_api2_04::alloc::AllocError,
    crate::SharedArena,
    |s| &**s
);
