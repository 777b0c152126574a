#![doc = include_str!("../README.md")]
#![cfg_attr(feature = "nightly", feature(allocator_api, coerce_unsized, unsize))]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod api;
#[cfg(feature = "allocator-api2-04")]
mod api04;
mod arena;
mod asan;
#[cfg(feature = "test-hooks")]
mod audit;
mod boxed;
mod bumpalo_api;
mod cache;
mod central;
mod checked;
pub mod collections;
mod extras;
mod heap;
mod huge_cache;
mod large;
mod os;
mod pool;
mod shared;
mod size_class;
mod slab;
mod stats;
mod superslab;
mod sync;
mod thread;
mod warm;

/// The allocator-api2 crate (0.2) whose `Allocator` the arena implements:
/// use its collections through this path so the version always matches.
///
/// # Example
/// ```
/// use smallmid::allocator_api2::vec::Vec;
/// let arena = smallmid::SmallMidArena::new();
/// let mut v = Vec::new_in(&arena);
/// v.push(1u8);
/// assert_eq!(v, [1]);
/// ```
pub use allocator_api2;
pub use allocator_api2::alloc::{AllocError, Allocator};
/// allocator-api2 0.4, whose `Allocator` the arena also implements with the
/// feature `allocator-api2-04`.
#[cfg(feature = "allocator-api2-04")]
pub use allocator_api2_04;
pub use arena::{Builder, SmallMidArena};
pub use boxed::ArenaBox;
pub use collections::String;
pub use extras::MAX_RESERVE;
pub use shared::SharedArena;
pub use stats::{
    global_stats, set_warm_cache_limit, trim_warm_cache, ClassStats, GlobalStats, Stats,
};

#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_hooks;
