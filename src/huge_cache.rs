//! Freed huge-block mappings kept for reuse, process-wide.
//!
//! A hash table that grows by doubling, or a request's large buffer, frees
//! a huge block and soon asks for one of about the same size again. Kept
//! mapped (pages and huge pages resident), the next one costs no `mmap`
//! and no page faults. Bounded: at most [`ENTRIES`] mappings and [`BYTES`]
//! together, the oldest going first; one unused for [`DECAY`] is unmapped
//! at the next put, take or arena drop ([`tick`]); `trim_warm_cache()`
//! unmaps them all.
//!
//! Invariant (cache lock): `bytes` is the sum of the entries' lengths, and
//! no entry's mapping is reachable from any arena.

use crate::os;
use crate::sync::{global, lock, AtomicU64, Mutex, Ordering};
use crate::warm::DECAY;
use core::ptr::NonNull;
use std::time::Instant;

/// Mappings kept at most.
const ENTRIES: usize = 8;
/// Bytes kept at most (also the largest mapping kept).
const BYTES: usize = 128 << 20;

/// A kept mapping, as [`os::map`] made it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mapping {
    pub(crate) base: NonNull<u8>,
    pub(crate) len: usize,
    pub(crate) map_align: usize,
}

#[derive(Debug)]
struct Cache {
    entries: [Option<(Mapping, Instant)>; ENTRIES],
    bytes: usize,
}

// SAFETY: the mappings are only reached under the cache's mutex, and no
// arena reaches them while they are here.
unsafe impl Send for Cache {}

global! {
    static CACHE: Mutex<Cache> = Mutex::new(Cache {
        entries: [None; ENTRIES],
        bytes: 0,
    });
}

global! {
    /// Entries kept, for [`tick`]'s lock-free look (written under the lock).
    static KEPT: AtomicU64 = AtomicU64::new(0);
}

type Doomed = smallvec::SmallVec<[Mapping; ENTRIES]>;

impl Cache {
    /// Takes out the entries unused for [`DECAY`] (all with `all`).
    fn expire(&mut self, now: Instant, all: bool, out: &mut Doomed) {
        for e in &mut self.entries {
            if let Some((m, at)) = *e {
                if all || now.saturating_duration_since(at) >= DECAY {
                    *e = None;
                    self.bytes -= m.len;
                    out.push(m);
                }
            }
        }
        self.publish();
    }

    fn publish(&self) {
        KEPT.store(
            self.entries.iter().flatten().count() as u64,
            Ordering::Relaxed,
        );
    }
}

fn unmap_all(doomed: Doomed) {
    for m in doomed {
        // SAFETY: a mapping made by `os::map` with these values, reachable
        // from nothing (cache invariant), taken off the cache.
        unsafe { os::unmap(m.base, m.len, m.map_align) };
    }
}

/// A kept mapping of at least `len` bytes (at most a quarter, or a huge
/// page, more), whose base is aligned to `map_align`.
pub(crate) fn take(len: usize, map_align: usize) -> Option<Mapping> {
    let now = Instant::now();
    let mut doomed = Doomed::new();
    let found = {
        let mut c = lock(&CACHE);
        c.expire(now, false, &mut doomed);
        let slack = (len / 4).max(os::HUGE_PAGE);
        let best = c
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.map(|(m, _)| (i, m)))
            .filter(|(_, m)| {
                m.len >= len && m.len - len <= slack && m.base.as_ptr() as usize % map_align == 0
            })
            .min_by_key(|(_, m)| m.len);
        best.map(|(i, m)| {
            c.entries[i] = None;
            c.bytes -= m.len;
            c.publish();
            m
        })
    };
    unmap_all(doomed);
    found
}

/// Keeps `m` (evicting the oldest entries to stay within the bounds), or
/// unmaps it if it alone is over them.
///
/// # Safety
/// `m` was made by [`os::map`] with these values, and nothing uses or
/// reaches it from now on.
pub(crate) unsafe fn put(m: Mapping) {
    let mut doomed = Doomed::new();
    if m.len > BYTES {
        doomed.push(m);
    } else {
        let now = Instant::now();
        let mut c = lock(&CACHE);
        c.expire(now, false, &mut doomed);
        while c.bytes + m.len > BYTES || c.entries.iter().all(Option::is_some) {
            let oldest = c
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.map(|(_, at)| (i, at)))
                .min_by_key(|&(_, at)| at)
                .map(|(i, _)| i)
                .expect("a full cache has entries");
            let (old, _) = c.entries[oldest].take().expect("an entry");
            c.bytes -= old.len;
            doomed.push(old);
        }
        let slot = c
            .entries
            .iter()
            .position(Option::is_none)
            .expect("room made");
        c.entries[slot] = Some((m, now));
        c.bytes += m.len;
        c.publish();
        crate::asan::poison(m.base.as_ptr(), m.len);
    }
    unmap_all(doomed);
}

/// Unmaps the mappings unused for [`DECAY`]: an arena drop's look, free
/// when nothing is kept.
pub(crate) fn tick() {
    if KEPT.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut doomed = Doomed::new();
    lock(&CACHE).expire(Instant::now(), false, &mut doomed);
    unmap_all(doomed);
}

/// Unmaps every kept mapping; returns how many.
pub(crate) fn trim() -> usize {
    let mut doomed = Doomed::new();
    lock(&CACHE).expire(Instant::now(), true, &mut doomed);
    let n = doomed.len();
    unmap_all(doomed);
    n
}

/// Mappings and bytes kept now.
pub(crate) fn counts() -> (usize, usize) {
    let c = lock(&CACHE);
    (c.entries.iter().flatten().count(), c.bytes)
}
