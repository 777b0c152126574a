//! The process-wide warm cache of empty SuperSlabs.
//!
//! Arenas take SuperSlabs from here before asking the OS and give them back
//! here when dropped, so a server that creates an arena per request maps
//! nothing and takes no page fault in steady state. Cached SuperSlabs keep
//! their pages (no `madvise`): reuse is the point.
//!
//! # Bound
//! A fixed small cap would send a workload that fills and drops 128 MiB per
//! round back to the OS every round (the seed's failure). Instead the cache
//! keeps what recent demand shows is needed, and decays like jemalloc's
//! dirty-page decay: it remembers the peak number of SuperSlabs in use in
//! the current and the previous [`DECAY`] epoch, and keeps cached at most
//!
//! `min(limit, max(FLOOR, recent_peak - in_use))`
//!
//! SuperSlabs; the excess is unmapped when memory is given back. When load
//! goes away, two epochs later the cache shrinks to `FLOOR` at the next
//! release, or at once through [`crate::trim_warm_cache`].
//!
//! Invariant: `cached` equals the length of the list at `head`, and every
//! SuperSlab is either in one arena's pool, in this list, or unmapped.

use crate::os;
use crate::superslab::SUPERSLAB_SIZE;
use crate::sync::{global, lock, Mutex};
use core::ptr::NonNull;
use smallvec::SmallVec;
use std::time::{Duration, Instant};

/// Length of one decay epoch.
pub(crate) const DECAY: Duration = Duration::from_secs(1);
/// SuperSlabs kept warm regardless of demand (8 MiB).
pub(crate) const FLOOR: usize = 8;
/// Default hard cap on cached SuperSlabs (1 GiB).
pub(crate) const DEFAULT_LIMIT: usize = 1024;

struct Warm {
    /// Cached SuperSlabs, linked through their first word.
    head: *mut u8,
    cached: usize,
    /// SuperSlabs held by live arenas.
    in_use: usize,
    peak_cur: usize,
    peak_prev: usize,
    epoch: Option<Instant>,
    /// Hard cap on `cached`, in SuperSlabs.
    limit: usize,
}

// SAFETY: the raw list is only touched under the global mutex.
unsafe impl Send for Warm {}

global! {
    static WARM: Mutex<Warm> = Mutex::new(Warm {
        head: core::ptr::null_mut(),
        cached: 0,
        in_use: 0,
        peak_cur: 0,
        peak_prev: 0,
        epoch: None,
        limit: DEFAULT_LIMIT,
    });
}

type Excess = SmallVec<[NonNull<u8>; 8]>;

impl Warm {
    fn allowed(&self) -> usize {
        let recent = self.peak_cur.max(self.peak_prev);
        recent
            .saturating_sub(self.in_use)
            .max(FLOOR)
            .min(self.limit)
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let start = *self.epoch.get_or_insert(now);
        let age = now.saturating_duration_since(start);
        if age >= DECAY {
            self.peak_prev = if age >= 2 * DECAY {
                self.in_use
            } else {
                self.peak_cur
            };
            self.peak_cur = self.in_use;
            self.epoch = Some(now);
        }
    }

    fn pop(&mut self) -> Option<NonNull<u8>> {
        let p = NonNull::new(self.head)?;
        // SAFETY: cached SuperSlabs store the next link in their first word.
        self.head = unsafe { p.as_ptr().cast::<*mut u8>().read() };
        self.cached -= 1;
        Some(p)
    }

    fn push(&mut self, p: NonNull<u8>) {
        // SAFETY: the SuperSlab is unused; its first word becomes the link.
        unsafe { p.as_ptr().cast::<*mut u8>().write(self.head) };
        self.head = p.as_ptr();
        self.cached += 1;
    }

    fn take_excess(&mut self, keep: usize) -> Excess {
        let mut out = Excess::new();
        while self.cached > keep {
            out.extend(self.pop());
        }
        out
    }
}

fn unmap_all(list: Excess) {
    for p in list {
        // SAFETY: every cached SuperSlab came from `os::map(SUPERSLAB_SIZE,
        // SUPERSLAB_SIZE)` and was removed from the cache, so it is unused.
        unsafe { os::unmap(p, SUPERSLAB_SIZE, SUPERSLAB_SIZE) };
    }
}

/// Takes a SuperSlab: a warm one if cached, else a fresh mapping.
pub(crate) fn acquire() -> Option<NonNull<u8>> {
    {
        let mut w = lock(&WARM);
        w.in_use += 1;
        w.peak_cur = w.peak_cur.max(w.in_use);
        if let Some(p) = w.pop() {
            return Some(p);
        }
    }
    let fresh = os::map(SUPERSLAB_SIZE, SUPERSLAB_SIZE);
    if fresh.is_none() {
        lock(&WARM).in_use -= 1;
    }
    fresh
}

/// Gives SuperSlabs back; unmaps what exceeds the bound.
///
/// # Safety
/// Each pointer came from [`acquire`], is given back once, and its memory is
/// not used afterwards.
pub(crate) unsafe fn release(superslabs: &[NonNull<u8>]) {
    let excess = {
        let mut w = lock(&WARM);
        w.in_use -= superslabs.len();
        for &p in superslabs {
            w.push(p);
        }
        if w.cached > FLOOR {
            // Only now can the bound bite; reading the clock costs ~20 ns.
            w.tick();
        }
        let keep = w.allowed();
        w.take_excess(keep)
    };
    unmap_all(excess);
}

/// Unmaps every cached SuperSlab now.
pub(crate) fn trim() -> usize {
    let excess = lock(&WARM).take_excess(0);
    let n = excess.len();
    unmap_all(excess);
    n
}

/// Sets the hard cap on cached SuperSlabs (rounded down to whole ones).
pub(crate) fn set_limit_bytes(bytes: usize) {
    let excess = {
        let mut w = lock(&WARM);
        w.limit = bytes / SUPERSLAB_SIZE;
        let keep = w.allowed();
        w.take_excess(keep)
    };
    unmap_all(excess);
}

/// (cached, in use by arenas, hard cap) in SuperSlabs.
pub(crate) fn counts() -> (usize, usize, usize) {
    let w = lock(&WARM);
    (w.cached, w.in_use, w.limit)
}
