//! The heap: what every thread of one arena shares behind its front
//! caches. The central lists of each size class ([`crate::central`]), the
//! pool of SuperSlabs and spans ([`crate::pool`]), large blocks
//! ([`crate::large`]), the memory limit, and the counters of large blocks.
//!
//! The lower layers work on a `Heap` they are given and know nothing of
//! the arena that embeds it: a SuperSlab, a huge block's header and the
//! pool name their heap as owner, and only the arena layer turns a heap
//! back into its arena ([`crate::arena`]).

use crate::central::ClassList;
use crate::pool::Pool;
use crate::size_class::NUM_CLASSES;
use crate::superslab::SuperSlab;
use crate::sync::{bump, AtomicBool, AtomicU64, Mutex, Ordering};

/// See the module docs.
///
/// Invariants: every SuperSlab of `pool` names this heap as owner; a slab
/// is on `classes[c]` iff it is a slab of class `c` with a block available
/// (see [`crate::central`]); `large_*` count exactly the spans and huge
/// blocks handed out and freed (a span a front cache keeps counts as freed).
#[derive(Debug)]
pub(crate) struct Heap {
    pub(crate) classes: [Mutex<ClassList>; NUM_CLASSES],
    /// Set when slabs changed other than by a fresh slab handed whole to a
    /// cache as the first of its class there: a reset must then visit every
    /// slab; else rewinding the one cache's ranges frees everything.
    pub(crate) dirty: AtomicBool,
    /// The memory limit in bytes (`u64::MAX`: none); read under the pool lock.
    pub(crate) limit: AtomicU64,
    /// Large blocks (spans and huge): allocations, frees, bytes in use.
    /// Written under the pool lock (or with the heap owned exclusively),
    /// read by anyone.
    pub(crate) large_allocs: AtomicU64,
    pub(crate) large_frees: AtomicU64,
    pub(crate) large_bytes: AtomicU64,
    pub(crate) pool: Mutex<Pool>,
}

impl Heap {
    /// A heap at `this` whose first SuperSlab is `home`.
    ///
    /// # Safety
    /// `this` is where the heap is written and stays until it is dropped;
    /// `home` is a SuperSlab initialized with `this` as owner, held by
    /// nothing else.
    pub(crate) unsafe fn new(this: *const Heap, home: *const SuperSlab, limit: usize) -> Heap {
        Heap {
            classes: core::array::from_fn(|_| Mutex::new(ClassList::new())),
            dirty: AtomicBool::new(false),
            limit: AtomicU64::new(limit as u64),
            large_allocs: AtomicU64::new(0),
            large_frees: AtomicU64::new(0),
            large_bytes: AtomicU64::new(0),
            // SAFETY: forwarded contract.
            pool: Mutex::new(unsafe { Pool::new(this, home) }),
        }
    }

    /// Whether the heap has a memory limit.
    pub(crate) fn limited(&self) -> bool {
        self.limit.load(Ordering::Relaxed) != u64::MAX
    }

    /// Notes that slabs changed other than by handing a fresh slab whole to
    /// a cache: the next reset must visit every slab.
    #[inline]
    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Counts large allocations, frees and the change in bytes in use.
    /// The pool lock (`_held`) serializes every writer, so each counter is
    /// a load and a store, not an atomic read-modify-write (4 of which
    /// were a sixth of a span's allocation and free).
    pub(crate) fn count_large(&self, _held: &mut Pool, allocs: u64, frees: u64, bytes: i64) {
        bump(&self.large_allocs, allocs);
        bump(&self.large_frees, frees);
        bump(&self.large_bytes, bytes as u64);
    }

    /// Zeroes the large counters (the heap owned exclusively: a reset).
    pub(crate) fn zero_large(&self) {
        for a in [&self.large_allocs, &self.large_frees, &self.large_bytes] {
            a.store(0, Ordering::Relaxed);
        }
    }
}
