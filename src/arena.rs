//! `SmallMidArena`: the handle users hold, and the state it points to.

use crate::cache::{SlotChunk, ThreadCache, CHUNKS, INLINE_SLOTS};
use crate::central::ClassList;
use crate::checked::Checked;
use crate::large;
use crate::pool::Pool;
use crate::recycle;
use crate::registry::{self, RegLinks};
use crate::size_class::NUM_CLASSES;
use crate::superslab::{SuperSlab, META, SUPERSLAB_SIZE};
use crate::sync::{lock, AtomicBool, AtomicPtr, AtomicU64, Mutex, Ordering, UnsafeCell};
use crate::warm;
use allocator_api2::alloc::AllocError;
use core::fmt;
use core::ptr::{null_mut, NonNull};

/// Everything an arena owns, at a fixed address inside its home SuperSlab.
///
/// Invariants: it is registered in [`crate::registry`] from creation until
/// the handle is dropped; every SuperSlab of its pool names it as owner;
/// the cache slot of thread index `t` is used only by the thread holding
/// `t` (see [`crate::cache`]).
#[repr(C)]
pub(crate) struct ArenaState {
    pub(crate) slots: [AtomicPtr<ThreadCache>; INLINE_SLOTS],
    pub(crate) chunks: [AtomicPtr<SlotChunk>; CHUNKS],
    pub(crate) classes: [Mutex<ClassList>; NUM_CLASSES],
    /// Per class: does its list (probably) have slabs with blocks?
    pub(crate) nonempty: [AtomicBool; NUM_CLASSES],
    /// The first thread's cache, so a one-thread arena allocates none.
    pub(crate) first_cache: ThreadCache,
    pub(crate) first_cache_taken: AtomicBool,
    /// Set once any thread but the first made a cache here.
    pub(crate) shared: AtomicBool,
    /// Set when slabs changed other than by a cache's first fresh slab of a
    /// class (see [`crate::recycle`]): reset must then visit every slab.
    pub(crate) dirty: AtomicBool,
    /// Live blocks, under the `checked` feature (else nothing).
    pub(crate) checked: Checked,
    /// The memory limit in bytes (`u64::MAX`: none); read under the pool lock.
    pub(crate) limit: AtomicU64,
    /// Blocks of this arena holding its own metadata (caches, slot chunks).
    pub(crate) meta_blocks: AtomicU64,
    /// Allocations and frees by threads without a front cache.
    pub(crate) orphan_allocs: [AtomicU64; NUM_CLASSES],
    pub(crate) orphan_frees: [AtomicU64; NUM_CLASSES],
    /// Large blocks (spans and huge): allocations, frees, bytes in use.
    pub(crate) large_allocs: AtomicU64,
    pub(crate) large_frees: AtomicU64,
    pub(crate) large_bytes: AtomicU64,
    pub(crate) pool: Mutex<Pool>,
    pub(crate) reg: UnsafeCell<RegLinks>,
}

/// Offset of the arena state in its home SuperSlab.
const STATE_OFFSET: usize = core::mem::size_of::<SuperSlab>().next_multiple_of(64);
const _: () = assert!(STATE_OFFSET + core::mem::size_of::<ArenaState>() <= META);
const _: () = assert!(core::mem::align_of::<ArenaState>() <= 64);

/// A memory arena for small and mid-sized objects, usable from any thread.
///
/// `SmallMidArena` implements [`allocator_api2::alloc::Allocator`] (and with
/// the `nightly` feature, `core::alloc::Allocator`), so collections take
/// `&arena` as their allocator. Any thread may allocate from a shared
/// `&SmallMidArena` and free any block; each thread is served from its own
/// front cache, with no atomic operation and no lock on the fast path.
/// Memory freed inside the arena is reused at once. Dropping the arena
/// releases everything still allocated in it, at once, into a process-wide
/// warm cache that the next arena takes from.
///
/// The handle is one pointer; the state it points to never moves, so the
/// handle may be moved (into an `Arc`, across threads) while blocks are live.
///
/// # Example
/// ```
/// use allocator_api2::vec::Vec;
/// use smallmid::SmallMidArena;
///
/// let arena = SmallMidArena::new();
/// let mut v = Vec::new_in(&arena);
/// v.extend_from_slice(&[1u32, 2, 3]);
/// assert_eq!(v.iter().sum::<u32>(), 6);
/// ```
pub struct SmallMidArena {
    state: NonNull<ArenaState>,
}

// SAFETY: all shared state behind the handle is synchronized: per-thread
// caches by thread index, the rest by the class, pool and registry locks.
unsafe impl Send for SmallMidArena {}
// SAFETY: as above; `&SmallMidArena` is meant to be shared across threads.
unsafe impl Sync for SmallMidArena {}

impl SmallMidArena {
    /// Creates an arena with default settings.
    ///
    /// Takes one SuperSlab from the warm cache (no system call when one is
    /// cached), or maps one.
    ///
    /// # Panics
    /// If the OS refuses memory; see [`Self::try_new`].
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let b = allocator_api2::boxed::Box::new_in(7u64, &arena);
    /// assert_eq!(*b, 7);
    /// ```
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Creates an arena with default settings, or `AllocError` if the OS
    /// refuses memory.
    ///
    /// # Errors
    /// `AllocError` when no SuperSlab can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::try_new()?;
    /// # Ok::<(), allocator_api2::alloc::AllocError>(())
    /// ```
    pub fn try_new() -> Result<Self, AllocError> {
        Self::builder().try_build()
    }

    /// A builder for arenas with non-default settings.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::builder()
    ///     .memory_limit(8 << 20)
    ///     .build();
    /// # drop(arena);
    /// ```
    pub fn builder() -> Builder {
        Builder {
            memory_limit: usize::MAX,
        }
    }

    #[inline(always)]
    pub(crate) fn state(&self) -> &ArenaState {
        // SAFETY: the state lives until this handle is dropped.
        unsafe { self.state.as_ref() }
    }

    /// Returns the blocks the calling thread's front cache holds for this
    /// arena, so that other threads can reuse them (a thread's cache is
    /// also returned when the thread exits). Useful before a thread goes
    /// idle for a long time.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// drop(arena.alloc([0u8; 300]));
    /// arena.flush_thread_cache();
    /// ```
    pub fn flush_thread_cache(&self) {
        self.state().flush_current_thread();
    }

    /// The memory limit this arena was built with (`usize::MAX` if none).
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::builder().memory_limit(4 << 20).build();
    /// assert_eq!(arena.memory_limit(), 4 << 20);
    /// assert_eq!(smallmid::SmallMidArena::new().memory_limit(), usize::MAX);
    /// ```
    pub fn memory_limit(&self) -> usize {
        self.state().limit.load(Ordering::Relaxed) as usize
    }
}

impl Default for SmallMidArena {
    fn default() -> Self {
        Self::new()
    }
}

/// Cheap: no lock, no walk over thread caches (use [`SmallMidArena::stats`]).
impl fmt::Debug for SmallMidArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmallMidArena")
            .field("state", &self.state)
            .field("memory_limit", &self.memory_limit())
            .finish()
    }
}

impl Drop for SmallMidArena {
    fn drop(&mut self) {
        registry::count_live(-1);
        // SAFETY: we hold the only handle, so no allocation or free of ours
        // is in flight and every block is dead from now on.
        unsafe {
            if !recycle::keep(self.state.as_ptr()) {
                ArenaState::destroy(self.state.as_ptr());
            }
        }
    }
}

impl ArenaState {
    /// Releases an arena: huge blocks to the OS, SuperSlabs to the warm cache.
    ///
    /// # Safety
    /// No handle to the arena remains and none of its blocks is used again.
    pub(crate) unsafe fn destroy(state: *mut ArenaState) {
        // SAFETY: after `unregister` no exiting thread visits the state, so
        // it may be destroyed and its memory handed on.
        unsafe {
            registry::unregister(state);
            let superslabs = {
                let mut pool = lock(&(*state).pool);
                large::unmap_all_huge(&mut pool);
                pool.all_superslabs()
            };
            // Any access racing the destroy now races this write, which
            // loom reports (the memory itself outlives the model).
            (*state).reg.with_mut(|l| *l = RegLinks::new());
            core::ptr::drop_in_place(state);
            for ss in &superslabs {
                // Everything but the headers: a block used after the drop is caught.
                crate::asan::poison(ss.as_ptr().add(META), SUPERSLAB_SIZE - META);
            }
            warm::release(&superslabs);
        }
    }
}

/// Settings for a [`SmallMidArena`].
///
/// # Example
/// ```
/// use allocator_api2::vec::Vec;
/// let arena = smallmid::SmallMidArena::builder().memory_limit(2 << 20).build();
/// let mut v: Vec<u8, _> = Vec::new_in(&arena);
/// assert!(v.try_reserve(64 << 20).is_err()); // over the limit: an error, not an abort
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Builder {
    memory_limit: usize,
}

impl Builder {
    /// Caps the memory this arena holds from the OS (SuperSlabs and huge
    /// blocks at their mapped size). Past it, allocation returns
    /// `AllocError`; freeing makes room again. At least one SuperSlab
    /// (1 MiB) is needed to build the arena.
    ///
    /// # Example
    /// ```
    /// use smallmid::Allocator;
    /// use std::alloc::Layout;
    /// let arena = smallmid::SmallMidArena::builder().memory_limit(1 << 20).build();
    /// assert!(arena.allocate(Layout::new::<[u8; 2 << 20]>()).is_err()); // over the limit
    /// assert!(arena.try_alloc([0u8; 1024]).is_ok());
    /// ```
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Kept only until tests/loom.rs calls [`crate::set_warm_cache_limit`].
    #[doc(hidden)]
    pub fn warm_cache_limit(self, bytes: usize) -> Self {
        crate::set_warm_cache_limit(bytes);
        self
    }

    /// Builds the arena.
    ///
    /// # Panics
    /// If the OS refuses memory or the memory limit is below 1 MiB.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::builder().memory_limit(16 << 20).build();
    /// assert_eq!(*arena.alloc(5), 5);
    /// ```
    pub fn build(self) -> SmallMidArena {
        match self.try_build() {
            Ok(a) => a,
            Err(_) => panic!(
                "smallmid: cannot create an arena: out of memory or memory limit below 1 MiB"
            ),
        }
    }

    /// Builds the arena.
    ///
    /// # Errors
    /// `AllocError` if the OS refuses memory or the memory limit is below
    /// one SuperSlab (1 MiB).
    ///
    /// # Example
    /// ```
    /// use smallmid::SmallMidArena;
    /// assert!(SmallMidArena::builder().memory_limit(1000).try_build().is_err());
    /// let arena = SmallMidArena::builder().memory_limit(2 << 20).try_build()?;
    /// # drop(arena);
    /// # Ok::<(), smallmid::AllocError>(())
    /// ```
    pub fn try_build(self) -> Result<SmallMidArena, AllocError> {
        if self.memory_limit < SUPERSLAB_SIZE {
            return Err(AllocError);
        }
        // SAFETY: a spare has no handle; this becomes its only one.
        if let Some(state) = unsafe { recycle::take(self.memory_limit) } {
            registry::count_live(1);
            return Ok(SmallMidArena { state });
        }
        let base = warm::acquire().ok_or(AllocError)?.as_ptr();
        // SAFETY: the SuperSlab is ours; the state fits in its META area
        // (asserted above) right after the header.
        unsafe {
            let state = base.add(STATE_OFFSET).cast::<ArenaState>();
            let home = SuperSlab::init(base, state);
            state.write(ArenaState {
                slots: core::array::from_fn(|_| AtomicPtr::new(null_mut())),
                chunks: core::array::from_fn(|_| AtomicPtr::new(null_mut())),
                classes: core::array::from_fn(|_| Mutex::new(ClassList::new())),
                nonempty: core::array::from_fn(|_| AtomicBool::new(false)),
                first_cache: ThreadCache::new(),
                first_cache_taken: AtomicBool::new(false),
                shared: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
                checked: Checked::new(),
                limit: AtomicU64::new(self.memory_limit as u64),
                meta_blocks: AtomicU64::new(0),
                orphan_allocs: core::array::from_fn(|_| AtomicU64::new(0)),
                orphan_frees: core::array::from_fn(|_| AtomicU64::new(0)),
                large_allocs: AtomicU64::new(0),
                large_frees: AtomicU64::new(0),
                large_bytes: AtomicU64::new(0),
                pool: Mutex::new(Pool::new(state, home)),
                reg: UnsafeCell::new(RegLinks::new()),
            });
            registry::register(state);
            registry::count_live(1);
            Ok(SmallMidArena {
                state: NonNull::new_unchecked(state),
            })
        }
    }
}
