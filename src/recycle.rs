//! A thread's spare arena: per-request arenas without per-request setup.
//!
//! When the handle of a small arena is dropped on the thread whose cache is
//! the arena's only one (the per-request pattern), the arena is not torn
//! down: every block becomes free, each size class keeps one slab whose
//! whole range goes back into that cache as a bump range, other slabs and
//! spans return to the pool, huge blocks are unmapped, and the arena is kept
//! as the thread's spare. The next [`crate::SmallMidArena::new`] on the same
//! thread takes it: no lock, no header to write, and the first allocation of
//! each class is a bump, not a refill. A thread holds at most one spare;
//! arenas of more than [`MAX_SUPERSLABS`] SuperSlabs, or used by several
//! threads, go to the warm cache as usual. The spare is destroyed when its
//! thread exits.
//!
//! Reset runs with the arena exclusively owned: its handle is gone and its
//! only cache belongs to the calling thread, so no other thread can reach a
//! slab (an exiting thread visiting it only reads its own empty slot).

use crate::arena::ArenaState;
use crate::cache;
use crate::large;
use crate::size_class::NUM_CLASSES;
use crate::slab::{Use, SLAB_SIZE};
use crate::superslab::{SuperSlab, SLABS};
use crate::sync::{lock, Ordering};
use core::ptr::{null_mut, NonNull};
use smallvec::SmallVec;

/// Largest arena kept as a spare, in SuperSlabs.
const MAX_SUPERSLABS: usize = 4;

/// Keeps a dropped arena as this thread's spare if it qualifies.
///
/// # Safety
/// The arena's handle is being dropped: none of its blocks is used again.
pub(crate) unsafe fn keep(state: *mut ArenaState) -> bool {
    // SAFETY: the state is live until destroyed.
    let a = unsafe { &*state };
    // Metadata blocks (slot chunks) live in class slabs that reset reuses.
    if !a.used_by_this_thread_only() || a.meta_blocks.load(Ordering::Relaxed) != 0 {
        return false;
    }
    // A clean arena took one fresh slab per class at most: it is small.
    let dirty = a.dirty.load(Ordering::Relaxed);
    if dirty && lock(&a.pool).superslabs > MAX_SUPERSLABS {
        return false;
    }
    // SAFETY: exclusive, as checked above and per contract.
    unsafe {
        if dirty {
            reset(a);
            a.dirty.store(false, Ordering::Relaxed);
        } else {
            a.rewind_first_cache();
        }
        a.reset_counters(dirty);
    }
    a.checked.clear();
    let old = cache::swap_spare(state);
    if old == state {
        return false; // this thread cannot hold a spare; destroy it
    }
    if !old.is_null() {
        // SAFETY: the old spare has no handle and was only in the slot.
        unsafe { ArenaState::destroy(old) };
    }
    true
}

/// Takes this thread's spare arena, set to `limit`, if it has one that
/// fits under it.
///
/// # Safety
/// The caller makes the returned state its handle's.
pub(crate) unsafe fn take(limit: usize) -> Option<NonNull<ArenaState>> {
    let p = NonNull::new(cache::swap_spare(null_mut()))?;
    // SAFETY: spares are live until destroyed.
    let a = unsafe { p.as_ref() };
    let unlimited = limit == usize::MAX && a.limit.load(Ordering::Relaxed) == u64::MAX;
    if !unlimited {
        let pool = lock(&a.pool);
        if pool.held_bytes() > limit {
            drop(pool);
            // SAFETY: the spare has no handle.
            unsafe { ArenaState::destroy(p.as_ptr()) };
            return None;
        }
        a.limit.store(limit as u64, Ordering::Relaxed);
    }
    Some(p)
}

/// Frees every block of an exclusively owned arena (see the module docs).
///
/// # Safety
/// The calling thread owns the arena's only cache and nothing else can
/// reach it; none of its blocks is used again.
unsafe fn reset(a: &ArenaState) {
    let mut ranges: [Option<(*mut u8, *mut u8)>; NUM_CLASSES] = [None; NUM_CLASSES];
    let mut release: SmallVec<[(*const SuperSlab, usize, bool); 16]> = SmallVec::new();
    let mut pool = lock(&a.pool);
    // SAFETY: no huge block is used again (contract).
    unsafe { large::unmap_all_huge(&mut pool) };
    for ss in pool.all_superslabs() {
        let ss = ss.as_ptr() as *const SuperSlab;
        for idx in 0..SLABS {
            // SAFETY: exclusive ownership stands in for the class locks.
            unsafe {
                (*ss).slabs[idx].with(|s| match s.use_ {
                    Use::Class(c) if ranges[c as usize].is_none() => {
                        // As right after `fresh_slab`: all of it in the cache.
                        let start = s.end.wrapping_sub(s.capacity as usize * s.size as usize);
                        crate::asan::poison(start, s.end as usize - start as usize);
                        s.used = s.capacity;
                        s.free = null_mut();
                        s.free_count = 0;
                        s.bump = s.end;
                        s.in_partial = false;
                        ranges[c as usize] = Some((start, s.end));
                    }
                    Use::Class(_) => {
                        let start = s.end.wrapping_sub(s.capacity as usize * s.size as usize);
                        crate::asan::poison(start, s.end as usize - start as usize);
                        s.use_ = Use::Free;
                        s.in_partial = false;
                        release.push((ss, idx, false));
                    }
                    Use::SpanHead(k) => {
                        crate::asan::poison(SuperSlab::slab_start(ss, idx), k as usize * SLAB_SIZE);
                        release.push((ss, idx, true));
                    }
                    Use::Free | Use::SpanTail => {}
                })
            };
        }
    }
    for (ss, idx, span) in release {
        // SAFETY: every block is free; the slab or span is unused.
        unsafe {
            if span {
                pool.release_span(ss, idx);
            } else {
                pool.release_slab(ss, idx);
            }
        }
    }
    drop(pool);
    for (class, hint) in a.nonempty.iter().enumerate() {
        if hint.load(Ordering::Relaxed) {
            lock(&a.classes[class]).clear();
            hint.store(false, Ordering::Relaxed);
        }
    }
    // SAFETY: the calling thread owns the cache (contract).
    unsafe { a.reset_first_cache(|class| ranges[class]) };
}
