//! Counters: per arena ([`Stats`]) and process-wide ([`GlobalStats`]).

use crate::arena::SmallMidArena;
use crate::size_class::{CLASS_SIZE, NUM_CLASSES};
use crate::superslab::SUPERSLAB_SIZE;
use crate::sync::{lock, Ordering};
use crate::{os, registry, warm};
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
    /// Bytes held from the OS: SuperSlabs plus huge blocks' mappings.
    pub bytes_held: u64,
    /// SuperSlabs (1 MiB each) the arena holds.
    pub superslabs: u64,
    /// Bytes of huge blocks' mappings (blocks over 960 KiB).
    pub huge_bytes: u64,
    /// Threads with a front cache in this arena (alive or exited).
    pub thread_caches: u64,
    /// Large-path (over 32 KiB) allocations.
    pub large_allocs: u64,
    /// Large-path frees.
    pub large_frees: u64,
    /// Per size class with any traffic, smallest first.
    pub classes: Vec<ClassStats>,
}

/// One size class's counters in [`Stats`].
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
    /// blocks from: frees that crossed threads.
    pub cross_thread_frees: u64,
    /// Live blocks (`allocs - frees`).
    pub blocks_in_use: u64,
}

impl SmallMidArena {
    /// A snapshot of this arena's counters.
    pub fn stats(&self) -> Stats {
        let st = self.state();
        let mut classes: Vec<ClassStats> = (0..NUM_CLASSES)
            .map(|c| ClassStats {
                size: CLASS_SIZE[c] as u64,
                allocs: st.orphan_allocs[c].load(Ordering::Relaxed),
                frees: st.orphan_frees[c].load(Ordering::Relaxed),
                cache_misses: st.orphan_allocs[c].load(Ordering::Relaxed),
                ..ClassStats::default()
            })
            .collect();
        let mut thread_caches = 0;
        st.for_each_cache(|cache| {
            thread_caches += 1;
            for (c, k) in cache.counters.iter().enumerate() {
                let s = &mut classes[c];
                s.allocs += k.allocs.load(Ordering::Relaxed);
                s.frees += k.frees.load(Ordering::Relaxed);
                s.refills += k.refills.load(Ordering::Relaxed);
                s.cache_misses += k.refills.load(Ordering::Relaxed);
                s.flushes += k.flushes.load(Ordering::Relaxed);
                s.cross_thread_frees += k.cross.load(Ordering::Relaxed);
            }
        });
        let (mut bytes_in_use, mut blocks_in_use) = (0, 0);
        for s in &mut classes {
            // Racing readers may see a free before its allocation.
            s.blocks_in_use = s.allocs.saturating_sub(s.frees);
            s.cache_hits = s.allocs.saturating_sub(s.cache_misses);
            blocks_in_use += s.blocks_in_use;
            bytes_in_use += s.blocks_in_use * s.size;
        }
        classes.retain(|s| s.allocs > 0 || s.frees > 0);
        let (large_allocs, large_frees) = (
            st.large_allocs.load(Ordering::Relaxed),
            st.large_frees.load(Ordering::Relaxed),
        );
        let pool = lock(&st.pool);
        Stats {
            bytes_in_use: bytes_in_use + st.large_bytes.load(Ordering::Relaxed),
            blocks_in_use: blocks_in_use + large_allocs.saturating_sub(large_frees),
            bytes_held: pool.held_bytes() as u64,
            superslabs: pool.superslabs as u64,
            huge_bytes: pool.huge_bytes as u64,
            thread_caches,
            large_allocs,
            large_frees,
            classes,
        }
    }
}

impl fmt::Display for Stats {
    /// A compact table: totals, then one row per active size class.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        writeln!(
            f,
            "arena: {:.2} MiB in {} blocks in use, {:.1} MiB held ({} SuperSlabs, {:.1} MiB huge), {} thread caches, \
             large: {} allocs / {} frees",
            mib(self.bytes_in_use),
            self.blocks_in_use,
            mib(self.bytes_held),
            self.superslabs,
            mib(self.huge_bytes),
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
    /// Live arenas.
    pub arenas_alive: usize,
    /// Threads with a front-cache index: threads that used an arena and
    /// have not finished exiting.
    pub threads: usize,
}

/// Process-wide counters: mappings, the warm cache, live arenas.
pub fn global_stats() -> GlobalStats {
    let (mmaps, munmaps) = os::counters();
    let (cached, in_use, limit) = warm::counts();
    let (regions, cold) = warm::region_counts();
    GlobalStats {
        mmaps,
        munmaps,
        warm_superslabs: cached,
        warm_bytes: cached * SUPERSLAB_SIZE,
        warm_limit_bytes: limit * SUPERSLAB_SIZE,
        superslabs_in_use: in_use,
        regions,
        reserved_bytes: regions * warm::REGION_SIZE,
        decommitted_superslabs: cold,
        arenas_alive: registry::live_arenas(),
        threads: registry::threads(),
    }
}

/// Returns the pages of every warm cached SuperSlab to the OS now
/// (decommits them; they stay reserved for reuse without a new mapping);
/// returns how many.
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
    warm::trim()
}

impl fmt::Display for GlobalStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "smallmid: {} arenas, {} threads, {} SuperSlabs in use, {} warm ({:.1} MiB, cap {:.0} MiB), {} decommitted, {} regions ({:.0} MiB), {} mmaps, {} munmaps",
            self.arenas_alive,
            self.threads,
            self.superslabs_in_use,
            self.warm_superslabs,
            self.warm_bytes as f64 / (1 << 20) as f64,
            self.warm_limit_bytes as f64 / (1 << 20) as f64,
            self.decommitted_superslabs,
            self.regions,
            self.reserved_bytes as f64 / (1 << 20) as f64,
            self.mmaps,
            self.munmaps
        )
    }
}
