//! The arenas a thread uses: its [`ThreadRecord`] (the members it has, one
//! per arena), what its exit returns, and its spare arena. A thread
//! exit walks only those, so it costs O(arenas this thread used) and takes
//! no process-wide lock across the walk. An arena being dropped or reset
//! detaches other threads' caches through the same records.
//!
//! The protocol, by lock order (record, then the arena's members lock):
//!
//! - **Exit**: under its record lock the thread pops one cache, takes its
//!   arena's members lock, releases the record lock (hand over hand), then
//!   retires the cache: its blocks go back, it goes idle in the arena. So
//!   the arena stays alive meanwhile: its detach must first take the record
//!   lock to unlist the cache.
//! - **Detach** (arena drop or reset, the arena exclusively owned): under
//!   the members lock, pin each cache's owner record (a reference count);
//!   then, with no arena lock held, take each record's lock and unlist the
//!   cache (caches live as long as their arena, so this is safe whatever
//!   the thread does); then, under the members lock again, retire whatever
//!   cache is still attached; then unpin. An exit already under way holds
//!   the members lock until its cache is retired, so detach never sees half
//!   of it; an exit that comes later does not find the arena in its record.
//!
//! So an arena create or drop never waits for a thread's exit work in other
//! arenas, and an exit never visits a dropped arena. An index is released
//! only after every cache of its thread is retired, so a new thread given
//! the index finds every slot of it empty.

use super::{ArenaState, Link, Member, MAX_TIDS};
use crate::sync::{lock, thread_local_const, AtomicU64, Mutex, Ordering};
use crate::thread::{self, DEAD};
use core::cell::Cell;
use core::ptr::null_mut;

/// The caches one thread has, one per arena it used: an intrusive list
/// through the caches' links, so unlisting one is O(1).
///
/// Invariant: a cache is listed iff it is attached to this thread's slot
/// and its arena has not unlisted it (detach) nor this thread's exit popped
/// it. Lives on the heap; freed when `refs` (the thread itself, each
/// attached cache, each pin) reaches zero.
#[derive(Debug)]
pub(crate) struct ThreadRecord {
    pub(crate) tid: u32,
    head: Mutex<Head>,
    refs: AtomicU64,
}

#[derive(Debug)]
struct Head(*const Member);
// SAFETY: only followed under the record's mutex.
unsafe impl Send for Head {}

// SAFETY: the list is only followed under its mutex; the caches in it are
// kept alive by their arenas, which unlist them before they go (module docs).
unsafe impl Send for ThreadRecord {}
// SAFETY: as above.
unsafe impl Sync for ThreadRecord {}

impl ThreadRecord {
    /// Lists `c`, just attached to this thread's slot in its arena. Called
    /// by the record's thread only.
    pub(crate) fn attach(&self, c: &Member) {
        self.refs.fetch_add(1, Ordering::Relaxed);
        let mut head = lock(&self.head);
        let old = head.0;
        // SAFETY: record lock held; listed caches are alive.
        unsafe {
            c.link(|l| {
                debug_assert!(!l.linked);
                *l = Link {
                    prev: core::ptr::null(),
                    next: old,
                    linked: true,
                };
            });
            if !old.is_null() {
                (*old).link(|l| l.prev = c);
            }
        }
        head.0 = c;
    }

    /// Pins the record so it outlives a detach in progress.
    pub(crate) fn pin(&self) {
        self.refs.fetch_add(1, Ordering::Relaxed);
    }

    /// Unlists `c` if listed. Afterwards this thread's exit will not visit
    /// it.
    pub(crate) fn forget(&self, c: &Member) {
        let mut head = lock(&self.head);
        // SAFETY: record lock held; `c` is alive (its arena is).
        unsafe { unlink(&mut head, c) };
    }

    /// Drops one reference; the last frees the record.
    ///
    /// # Safety
    /// The caller holds a reference (its own, a cache's or a pin) that it
    /// does not use again.
    pub(crate) unsafe fn unref(rec: *const ThreadRecord) {
        // SAFETY: the caller's reference keeps it alive until here.
        if unsafe { (*rec).refs.fetch_sub(1, Ordering::AcqRel) } == 1 {
            // SAFETY: last reference; it came from `Box::into_raw`.
            drop(unsafe { Box::from_raw(rec as *mut ThreadRecord) });
        }
    }
}

/// Unlinks `c` from the list at `head` if it is on it.
///
/// # Safety
/// `head` is the record's locked list; `c` and its neighbours are alive.
unsafe fn unlink(head: &mut Head, c: &Member) {
    // SAFETY: record lock held (contract).
    unsafe {
        let Some((prev, next)) = c.link(|l| {
            let was = l.linked;
            l.linked = false;
            was.then_some((l.prev, l.next))
        }) else {
            return;
        };
        if prev.is_null() {
            head.0 = next;
        } else {
            (*prev).link(|l| l.next = next);
        }
        if !next.is_null() {
            (*next).link(|l| l.prev = prev);
        }
    }
}

struct Guard {
    record: Cell<*const ThreadRecord>,
    /// This thread's recycled arena, if any (see [`crate::arena`]).
    spare: Cell<*mut ArenaState>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        thread::set_current(DEAD);
        let spare = self.spare.replace(null_mut());
        if !spare.is_null() {
            // SAFETY: a spare has no handle; only this slot held it.
            unsafe { ArenaState::destroy(spare) };
        }
        let rec = self.record.replace(core::ptr::null());
        if rec.is_null() {
            return;
        }
        // SAFETY: our own reference keeps the record alive.
        let r = unsafe { &*rec };
        loop {
            let mut head = lock(&r.head);
            let c = head.0;
            if c.is_null() {
                break;
            }
            // SAFETY: listed caches and their arenas are alive: a detach
            // must take the record lock we hold to unlist them; we take the
            // arena's members lock before releasing ours (hand over hand).
            unsafe {
                unlink(&mut head, &*c);
                let a = (*c).arena;
                let mut members = (*a).members.lock();
                drop(head);
                if (*a).retire_own(&mut members, r.tid) {
                    ThreadRecord::unref(rec);
                }
            }
        }
        thread::release_tid(r.tid);
        // SAFETY: the thread's own reference, not used again.
        unsafe { ThreadRecord::unref(rec) };
    }
}

thread_local_const! {
    /// Registered on first use; its destructor returns the thread's caches.
    static GUARD: Guard = Guard { record: Cell::new(core::ptr::null()), spare: Cell::new(null_mut()) };
}

/// This thread's record (the pointer `Box::into_raw` made, so whoever drops
/// the last reference may free it through it), assigning an index and
/// record on first use; `None` for threads that cannot have caches
/// (exiting, or past [`MAX_TIDS`]).
#[cold]
pub(crate) fn current() -> Option<*const ThreadRecord> {
    let tid = thread::current_tid();
    if tid == DEAD {
        return None;
    }
    let rec = GUARD.try_with(|g| g.record.get()).ok()?;
    if !rec.is_null() {
        // SAFETY: the thread's own reference keeps it alive while it runs.
        let r = unsafe { &*rec };
        return ((r.tid as usize) < MAX_TIDS).then_some(rec);
    }
    let tid = thread::acquire_tid();
    let rec = Box::into_raw(Box::new(ThreadRecord {
        tid,
        head: Mutex::new(Head(core::ptr::null())),
        refs: AtomicU64::new(1),
    }));
    if GUARD.try_with(|g| g.record.set(rec)).is_err() {
        thread::release_tid(tid);
        // SAFETY: never shared.
        drop(unsafe { Box::from_raw(rec) });
        thread::set_current(DEAD);
        return None;
    }
    thread::set_current(tid);
    ((tid as usize) < MAX_TIDS).then_some(rec)
}

/// Swaps this thread's spare arena for `new` (null to take it). Returns
/// the old one, or `Err(new)` when this thread cannot hold a spare.
pub(crate) fn swap_spare(new: *mut ArenaState) -> Result<*mut ArenaState, *mut ArenaState> {
    if thread::current_tid() == DEAD {
        return Err(new);
    }
    GUARD.try_with(|g| g.spare.replace(new)).map_err(|_| new)
}
