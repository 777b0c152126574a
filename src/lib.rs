#![doc = include_str!("../README.md")]
#![cfg_attr(feature = "nightly", feature(allocator_api, coerce_unsized, unsize))]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod api;
mod arena;
mod asan;
#[cfg(feature = "test-hooks")]
mod audit;
mod boxed;
mod cache;
mod central;
mod checked;
mod large;
mod os;
mod pool;
mod size_class;
mod slab;
mod stats;
mod superslab;
mod sync;
mod thread;
mod warm;

pub use allocator_api2::alloc::{AllocError, Allocator};
pub use arena::{Builder, SmallMidArena};
pub use boxed::ArenaBox;
pub use stats::{global_stats, trim_warm_cache, ClassStats, GlobalStats, Stats};

#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_hooks;
