//! `SharedArena`: a clonable, `'static` handle that owns an arena.

use crate::api::forward_allocator;
use crate::arena::{Builder, SmallMidArena};
use crate::sync::Arc;
use allocator_api2::alloc::AllocError;
use core::alloc::Layout;
use core::ops::Deref;
use core::ptr::NonNull;

/// A reference-counted, `'static`, `Send + Sync` handle to an arena: what
/// `tokio::spawn`ed tasks and other `'static` code hold. Clones share the
/// arena; it is dropped (its memory recycled) when the last handle goes.
///
/// It is an `Allocator` itself, so collections can own their allocator:
/// `Vec<T, SharedArena>` is `'static` and may move into a spawned task.
/// Every `SmallMidArena` method is available through `Deref`.
///
/// # Example
/// ```
/// use smallmid::{allocator_api2::vec::Vec, SharedArena};
///
/// let arena = SharedArena::new();
/// let mut v: Vec<u64, SharedArena> = Vec::new_in(arena.clone());
/// v.extend(0..10);
/// let t = std::thread::spawn(move || v.iter().sum::<u64>()); // 'static
/// assert_eq!(t.join().unwrap(), 45);
/// assert_eq!(arena.stats().blocks_in_use, 0); // freed on the other thread
/// ```
#[derive(Clone, Debug)]
pub struct SharedArena(Arc<SmallMidArena>);

impl SharedArena {
    /// A new arena behind a shared handle.
    ///
    /// # Panics
    /// If the OS refuses memory; see [`Self::try_new`].
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SharedArena::new();
    /// let b = smallmid::allocator_api2::boxed::Box::new_in(5u8, arena.clone());
    /// assert_eq!(*b, 5);
    /// ```
    pub fn new() -> Self {
        SmallMidArena::new().into_shared()
    }

    /// A new arena behind a shared handle, or `AllocError`.
    ///
    /// # Errors
    /// When no memory can be had for the arena.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SharedArena::try_new()?;
    /// # Ok::<(), smallmid::AllocError>(())
    /// ```
    pub fn try_new() -> Result<Self, AllocError> {
        Ok(SmallMidArena::try_new()?.into_shared())
    }

    /// Handles sharing this arena (this one included).
    ///
    /// # Example
    /// ```
    /// let a = smallmid::SharedArena::new();
    /// let b = a.clone();
    /// assert_eq!(a.handles(), 2);
    /// drop(b);
    /// assert_eq!(a.handles(), 1);
    /// ```
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl Default for SharedArena {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for SharedArena {
    type Target = SmallMidArena;
    #[inline(always)]
    fn deref(&self) -> &SmallMidArena {
        &self.0
    }
}

impl SmallMidArena {
    /// Moves the arena behind a [`SharedArena`] handle.
    ///
    /// # Example
    /// ```
    /// let shared = smallmid::SmallMidArena::builder().memory_limit(8 << 20).build().into_shared();
    /// assert_eq!(shared.memory_limit(), 8 << 20);
    /// ```
    pub fn into_shared(self) -> SharedArena {
        SharedArena(Arc::new(self))
    }
}

impl Builder {
    /// Builds the arena behind a [`SharedArena`] handle.
    ///
    /// # Panics
    /// As [`Builder::build`].
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::builder().memory_limit(4 << 20).build_shared();
    /// assert_eq!(arena.memory_limit(), 4 << 20);
    /// ```
    pub fn build_shared(self) -> SharedArena {
        self.build().into_shared()
    }
}

forward_allocator!(
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError,
    SharedArena,
    |s| &**s
);

#[cfg(feature = "nightly")]
forward_allocator!(
    core::alloc::Allocator,
    core::alloc::AllocError,
    SharedArena,
    |s| &**s
);
