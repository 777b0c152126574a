//! Counters: per arena ([`Stats`]) and process-wide ([`GlobalStats`]).

use crate::arena::SmallMidArena;
use crate::cache::Counts;
use crate::size_class::{CLASS_SIZE, NUM_CLASSES};
use crate::superslab::SUPERSLAB_SIZE;
use crate::sync::{lock, Ordering};
use crate::{os, thread, warm};
use core::fmt;

/// A snapshot of one arena's counters.
///
/// Counters live in each thread's front cache, next to what the fast path
/// already writes, and are only read here: summing them costs a walk over
/// the arena's threads, and counting costs the fast path a plain increment.
/// Taken while other threads run, the sums are a recent view, not an atomic
/// one.
///
/// # Example
/// ```
/// let arena = smallmid::SmallMidArena::new();
/// let b = arena.alloc([0u8; 300]);
/// let s = arena.stats();
/// assert_eq!(s.blocks_in_use, 1);
/// assert_eq!(s.bytes_in_use, 320); // the 320-byte size class
/// assert_eq!(s.superslabs, 1);     // the home SuperSlab
/// assert_eq!(s.bytes_held, 64 << 10);  // the slab it came from
/// assert!(s.to_string().starts_with("arena: 320 B in 1 blocks in use, 64.00 KiB held"));
/// drop(b);
/// assert_eq!(arena.stats().blocks_in_use, 0);
/// println!("{}", arena.stats());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Stats {
    /// Bytes of live blocks, at their block size (class size or large
    /// block length).
    pub bytes_in_use: u64,
    /// Live blocks, small and large.
    pub blocks_in_use: u64,
    /// Bytes in use at slab granularity, what the memory limit counts:
    /// slabs holding blocks (64 KiB each) plus huge blocks' mappings.
    pub bytes_held: u64,
    /// SuperSlabs (1 MiB each) the arena holds.
    pub superslabs: u64,
    /// Bytes of huge blocks' mappings (blocks over 960 KiB).
    pub huge_bytes: u64,
    /// Threads with a front cache in this arena (their exit retires it).
    pub thread_caches: u64,
    /// Large-path (over 32 KiB) allocations.
    pub large_allocs: u64,
    /// Large-path frees.
    pub large_frees: u64,
    /// Per size class with any traffic, smallest first.
    pub classes: Vec<ClassStats>,
}

/// One size class's counters in [`Stats`].
///
/// # Example
/// ```
/// let arena = smallmid::SmallMidArena::new();
/// drop(arena.alloc([0u8; 300]));
/// let c = arena.stats().classes[0];
/// assert_eq!((c.size, c.allocs, c.frees, c.blocks_in_use), (320, 1, 1, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct ClassStats {
    /// Block size of the class.
    pub size: u64,
    /// Allocations of the class.
    pub allocs: u64,
    /// Frees of the class.
    pub frees: u64,
    /// Allocations served by a front cache without a refill.
    pub cache_hits: u64,
    /// Allocations that refilled the cache, or had no cache.
    pub cache_misses: u64,
    /// Refills of a front cache from the arena.
    pub refills: u64,
    /// Flushes of half a full front cache to the arena.
    pub flushes: u64,
    /// Blocks flushed into a slab that another thread's cache last took
    /// blocks from: frees that crossed threads. At most `frees` (a flush
    /// also returns blocks a refill brought that were never allocated;
    /// those are not counted past the frees).
    pub cross_thread_frees: u64,
    /// Live blocks (`allocs - frees`).
    pub blocks_in_use: u64,
}

impl SmallMidArena {
    /// A snapshot of this arena's counters (a walk over its threads' caches
    /// and the pool lock: not for a hot path).
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let v = arena.alloc_slice_fill_with(100, |i| i as u64);
    /// let s = arena.stats();
    /// assert_eq!((s.blocks_in_use, s.bytes_in_use), (1, 896)); // 800 B in the 896 B class
    /// # drop(v);
    /// ```
    pub fn stats(&self) -> Stats {
        let mut classes: Vec<ClassStats> = (0..NUM_CLASSES)
            .map(|c| ClassStats {
                size: CLASS_SIZE[c] as u64,
                ..ClassStats::default()
            })
            .collect();
        let mut add = |c: usize, k: Counts| {
            let s = &mut classes[c];
            s.allocs += k.allocs;
            s.frees += k.frees;
            s.refills += k.refills;
            s.flushes += k.flushes;
            s.cross_thread_frees += k.cross;
        };
        // The seed's blocks: each missed a cache.
        if let Some(seed) = self.seed() {
            seed.for_each_block(|c, freed| {
                let k = Counts {
                    allocs: 1,
                    frees: freed as u64,
                    refills: 1,
                    ..Counts::default()
                };
                add(c, k)
            });
        }
        // What threads' kept spans counted (see `crate::cache`).
        let mut kept = (0u64, 0u64, 0u64);
        let mut large = (0, 0, 0);
        let full = self.full();
        let thread_caches = full.map_or(0, |st| {
            let m = st.members.lock();
            for c in 0..NUM_CLASSES {
                // Retired caches' refills and cacheless threads' allocations
                // both missed a cache.
                let r = m.retired(c);
                add(c, r);
            }
            st.for_each_cache(&m, |_, cache| {
                for (c, k) in cache.cache.counters.iter().enumerate() {
                    add(c, k.read());
                }
                let (a, f, b) = cache.cache.spans.read(false);
                kept = (kept.0 + a, kept.1 + f, kept.2.wrapping_add(b));
            });
            // Under the same lock: a retiring cache folds its span counts
            // into these under it, so they are counted once.
            large = (
                st.heap.large_allocs.load(Ordering::Relaxed),
                st.heap.large_frees.load(Ordering::Relaxed),
                st.heap.large_bytes.load(Ordering::Relaxed),
            );
            m.caches as u64
        });
        for s in &mut classes {
            s.cache_misses = s.refills;
        }
        let (mut bytes_in_use, mut blocks_in_use) = (0, 0);
        for s in &mut classes {
            // Racing readers may see a free before its allocation.
            s.blocks_in_use = s.allocs.saturating_sub(s.frees);
            s.cache_hits = s.allocs.saturating_sub(s.cache_misses);
            blocks_in_use += s.blocks_in_use;
            bytes_in_use += s.blocks_in_use * s.size;
        }
        classes.retain(|s| s.allocs > 0 || s.frees > 0);
        let (large_allocs, large_frees) = (large.0 + kept.0, large.1 + kept.1);
        let large_bytes = large.2.wrapping_add(kept.2);
        let (bytes_held, superslabs, huge_bytes) = full.map_or((0, 0, 0), |st| {
            let pool = lock(&st.heap.pool);
            (pool.held_bytes(), pool.superslabs, pool.huge_bytes)
        });
        Stats {
            bytes_in_use: bytes_in_use + large_bytes,
            blocks_in_use: blocks_in_use + large_allocs.saturating_sub(large_frees),
            bytes_held: bytes_held as u64,
            superslabs: superslabs as u64,
            huge_bytes: huge_bytes as u64,
            thread_caches,
            large_allocs,
            large_frees,
            classes,
        }
    }
}

/// A byte count in the largest unit (B, KiB, MiB, GiB) it reaches.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut v = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while v >= 1024.0 && unit + 1 < UNITS.len() {
            v /= 1024.0;
            unit += 1;
        }
        write!(f, "{v:.2} {}", UNITS[unit])
    }
}

impl fmt::Display for Stats {
    /// A compact table: totals, then one row per active size class.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "arena: {} in {} blocks in use, {} held ({} SuperSlabs, {} huge), {} thread caches, \
             large: {} allocs / {} frees",
            Bytes(self.bytes_in_use),
            self.blocks_in_use,
            Bytes(self.bytes_held),
            self.superslabs,
            Bytes(self.huge_bytes),
            self.thread_caches,
            self.large_allocs,
            self.large_frees
        )?;
        if !self.classes.is_empty() {
            writeln!(
                f,
                "{:>7} {:>10} {:>10} {:>8} {:>9} {:>8} {:>8} {:>8}",
                "class", "allocs", "frees", "in use", "hit %", "refills", "flushes", "xthread"
            )?;
        }
        for c in &self.classes {
            let hit = if c.allocs == 0 {
                100.0
            } else {
                100.0 * c.cache_hits as f64 / c.allocs as f64
            };
            writeln!(
                f,
                "{:>7} {:>10} {:>10} {:>8} {:>8.1}% {:>8} {:>8} {:>8}",
                c.size,
                c.allocs,
                c.frees,
                c.blocks_in_use,
                hit,
                c.refills,
                c.flushes,
                c.cross_thread_frees
            )?;
        }
        Ok(())
    }
}

/// A snapshot of process-wide counters.
///
/// # Example
/// ```
/// let before = smallmid::global_stats();
/// drop(smallmid::SmallMidArena::new());
/// let after = smallmid::global_stats();
/// assert!(after.mmaps >= before.mmaps);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct GlobalStats {
    /// Mappings made since the process started (regions of SuperSlabs and
    /// huge blocks).
    pub mmaps: u64,
    /// Mappings returned since the process started.
    pub munmaps: u64,
    /// Decommit calls (`madvise(MADV_DONTNEED)`, one per run of adjacent
    /// slabs or SuperSlabs) since the process started: each is a TLB
    /// shootdown on every core running the process.
    pub decommits: u64,
    /// Empty SuperSlabs in the warm cache.
    pub warm_superslabs: usize,
    /// Bytes in the warm cache.
    pub warm_bytes: usize,
    /// The warm cache's hard cap, in bytes.
    pub warm_limit_bytes: usize,
    /// SuperSlabs held by live arenas.
    pub superslabs_in_use: usize,
    /// Regions of address space reserved for SuperSlabs (one mapping each).
    pub regions: usize,
    /// Bytes reserved by those regions. Every SuperSlab in them is in use,
    /// warm, or decommitted (or, for an instant, being decommitted).
    pub reserved_bytes: usize,
    /// Free SuperSlabs in the regions without pages (never touched, or
    /// decommitted): they cost address space, not memory.
    pub decommitted_superslabs: usize,
    /// Slabs emptied inside live arenas and kept resident for reuse; past
    /// 256 (16 MiB) an arena emptying one decommits its own down to 4.
    pub resident_free_slabs: u64,
    /// Freed huge blocks' mappings kept for reuse (at most 8 and 128 MiB,
    /// each for at most the decay period).
    pub huge_cached: usize,
    /// Their bytes.
    pub huge_cached_bytes: usize,
    /// Live arenas.
    pub arenas_alive: usize,
    /// Threads with a front-cache index: threads that used an arena and
    /// have not finished exiting.
    pub threads: usize,
}

/// Process-wide counters: mappings, the warm cache, live arenas.
///
/// # Example
/// ```
/// let arena = smallmid::SmallMidArena::new();
/// let g = smallmid::global_stats();
/// assert!(g.arenas_alive >= 1 && g.superslabs_in_use >= 1);
/// println!("{g}");
/// # drop(arena);
/// ```
pub fn global_stats() -> GlobalStats {
    let (mmaps, munmaps, decommits) = os::counters();
    let (cached, in_use, limit) = warm::counts();
    let (regions, cold) = warm::region_counts();
    let (huge_cached, huge_cached_bytes) = crate::huge_cache::counts();
    GlobalStats {
        mmaps,
        munmaps,
        decommits,
        warm_superslabs: cached,
        warm_bytes: cached * SUPERSLAB_SIZE,
        warm_limit_bytes: limit * SUPERSLAB_SIZE,
        superslabs_in_use: in_use,
        regions,
        reserved_bytes: regions * warm::REGION_SIZE,
        decommitted_superslabs: cold,
        resident_free_slabs: crate::pool::resident_free_slabs(),
        huge_cached,
        huge_cached_bytes,
        arenas_alive: thread::live_arenas(),
        threads: thread::threads(),
    }
}

/// Returns the pages of every warm cached SuperSlab to the OS now
/// (decommits them; they stay reserved for reuse without a new mapping);
/// returns how many. The calling thread's recycled spare arena and the
/// shared spares are released first, so their memory goes too (other
/// threads' own spares go when those threads exit), and the kept mappings
/// of freed huge blocks are unmapped.
///
/// The cache also shrinks by itself two decay epochs (about 2 s) after
/// demand falls, at the next arena drop.
///
/// # Example
/// ```
/// drop(smallmid::SmallMidArena::new());
/// smallmid::trim_warm_cache();
/// assert_eq!(smallmid::global_stats().warm_superslabs, 0);
/// ```
pub fn trim_warm_cache() -> usize {
    crate::arena::release_spares();
    crate::arena::trim_seeds();
    crate::huge_cache::trim();
    warm::trim()
}

/// Sets the process-wide cap on warm (cached, empty) SuperSlab memory kept
/// for future arenas, in bytes (rounded down to whole 1 MiB SuperSlabs);
/// default 1 GiB. Below the cap the cache follows recent demand and decays.
/// Lowering it returns the excess to the OS at once.
///
/// # Example
/// ```
/// smallmid::set_warm_cache_limit(4 << 20);
/// assert_eq!(smallmid::global_stats().warm_limit_bytes, 4 << 20);
/// drop(smallmid::SmallMidArena::new());
/// assert!(smallmid::global_stats().warm_bytes <= 4 << 20);
/// smallmid::set_warm_cache_limit(1 << 30);
/// ```
pub fn set_warm_cache_limit(bytes: usize) {
    warm::set_limit_bytes(bytes);
}

impl fmt::Display for GlobalStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "smallmid: {} arenas, {} threads, {} SuperSlabs in use, {} warm ({}, cap {}), {} decommitted, {} free slabs resident, {} huge mappings kept ({}), {} regions ({}), {} mmaps, {} munmaps, {} decommits",
            self.arenas_alive,
            self.threads,
            self.superslabs_in_use,
            self.warm_superslabs,
            Bytes(self.warm_bytes as u64),
            Bytes(self.warm_limit_bytes as u64),
            self.decommitted_superslabs,
            self.resident_free_slabs,
            self.huge_cached,
            Bytes(self.huge_cached_bytes as u64),
            self.regions,
            Bytes(self.reserved_bytes as u64),
            self.mmaps,
            self.munmaps,
            self.decommits
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Bytes;

    #[test]
    fn units_follow_size() {
        let show = |b: u64| Bytes(b).to_string();
        assert_eq!(show(0), "0 B");
        assert_eq!(show(1023), "1023 B");
        assert_eq!(show(1024), "1.00 KiB");
        assert_eq!(show(1536), "1.50 KiB");
        assert_eq!(show(3 << 20), "3.00 MiB");
        assert_eq!(show(5 << 30), "5.00 GiB");
        assert_eq!(show(5 << 40), "5120.00 GiB");
    }
}
