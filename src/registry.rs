//! Process-wide registry of live arenas and dense thread indices.
//!
//! A thread's front caches live inside each arena it used, in the slot named
//! by the thread's index, so a thread-local holds nothing but that index and
//! never points into an arena that may be gone. When a thread exits it must
//! still return what its caches hold; it does so under this registry's lock,
//! visiting every live arena, and only then frees its index for the next
//! thread. An arena leaves the registry (under the same lock) before its
//! memory is released. Together:
//!
//! - a thread exit never touches a dropped arena (it only visits registered
//!   ones, and unregistering waits for the lock);
//! - a new thread never shares a slot with an exiting one (the index is
//!   reused only after the flush).
//!
//! Lock order across the crate: registry, then a class lock, then the pool
//! lock, then the warm cache.

use crate::arena::ArenaState;
use crate::sync::{global, lock, AtomicU64, Mutex, Ordering};
use core::ptr::null;

/// Links of an arena in the registry (registry lock).
#[derive(Debug)]
pub(crate) struct RegLinks {
    pub(crate) prev: *const ArenaState,
    pub(crate) next: *const ArenaState,
}

impl RegLinks {
    pub(crate) const fn new() -> Self {
        RegLinks {
            prev: null(),
            next: null(),
        }
    }
}

struct Registry {
    head: *const ArenaState,
    next_id: u64,
    /// Bit set: thread index in use.
    tids: Vec<u64>,
}

// SAFETY: the raw list is only touched under the global mutex.
unsafe impl Send for Registry {}

global! {
    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        head: null(),
        next_id: 1,
        tids: Vec::new(),
    });
}

/// # Safety
/// `a` is live and registered, and the registry lock is held.
unsafe fn links<R>(a: *const ArenaState, f: impl FnOnce(&mut RegLinks) -> R) -> R {
    // SAFETY: the registry lock gives exclusive access to the links.
    unsafe { (*a).reg.with_mut(|l| f(&mut *l)) }
}

/// Adds a new arena; returns its unique id.
///
/// # Safety
/// `a` is a fully initialized arena state that stays at its address until
/// [`unregister`].
pub(crate) unsafe fn register(a: *const ArenaState) -> u64 {
    let mut r = lock(&REGISTRY);
    let id = r.next_id;
    r.next_id += 1;
    let old = r.head;
    // SAFETY: lock held; `a` and `old` are live.
    unsafe {
        links(a, |l| {
            l.prev = null();
            l.next = old;
        });
        if !old.is_null() {
            links(old, |l| l.prev = a);
        }
    }
    r.head = a;
    id
}

/// Removes an arena. After this returns no thread exit will visit it.
///
/// # Safety
/// `a` was registered and is not unregistered yet.
pub(crate) unsafe fn unregister(a: *const ArenaState) {
    let mut r = lock(&REGISTRY);
    // SAFETY: lock held; registered arenas and their neighbours are live.
    unsafe {
        let (prev, next) = links(a, |l| (l.prev, l.next));
        if prev.is_null() {
            r.head = next;
        } else {
            links(prev, |l| l.next = next);
        }
        if !next.is_null() {
            links(next, |l| l.prev = prev);
        }
    }
}

global! {
    /// Arenas whose handle is alive (a recycled spare is not).
    static LIVE: AtomicU64 = AtomicU64::new(0);
}

/// Counts an arena handle made (`+1`) or dropped (`-1`).
pub(crate) fn count_live(delta: i64) {
    if delta > 0 {
        LIVE.fetch_add(delta as u64, Ordering::Relaxed);
    } else {
        LIVE.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}

/// Number of live arenas.
pub(crate) fn live_arenas() -> usize {
    LIVE.load(Ordering::Relaxed) as usize
}

/// Threads holding an index (threads that used an arena and have not
/// finished exiting).
pub(crate) fn threads() -> usize {
    lock(&REGISTRY)
        .tids
        .iter()
        .map(|w| w.count_ones() as usize)
        .sum()
}

/// Takes the lowest free thread index.
pub(crate) fn acquire_tid() -> u32 {
    let mut r = lock(&REGISTRY);
    let word = match r.tids.iter().position(|w| *w != u64::MAX) {
        Some(i) => i,
        None => {
            r.tids.push(0);
            r.tids.len() - 1
        }
    };
    let bit = r.tids[word].trailing_ones() as usize;
    r.tids[word] |= 1 << bit;
    (word * 64 + bit) as u32
}

/// Returns a thread's cached blocks in every live arena, then frees its
/// index. Called once, from the exiting thread.
pub(crate) fn release_thread(tid: u32) {
    let mut r = lock(&REGISTRY);
    let mut a = r.head;
    while !a.is_null() {
        // SAFETY: registered arenas stay live while we hold the lock.
        unsafe {
            (*a).flush_thread(tid);
            a = links(a, |l| l.next);
        }
    }
    let (word, bit) = (tid as usize / 64, tid as usize % 64);
    debug_assert!(
        r.tids[word] & (1 << bit) != 0,
        "thread index released twice"
    );
    r.tids[word] &= !(1 << bit);
}
