//! Counters: per arena ([`Stats`]) and process-wide ([`GlobalStats`]).

use crate::arena::SmallMidArena;
use crate::superslab::SUPERSLAB_SIZE;
use crate::sync::lock;
use crate::{os, registry, warm};
use core::fmt;

/// A snapshot of one arena's memory.
///
/// # Example
/// ```
/// let arena = smallmid::SmallMidArena::new();
/// let s = arena.stats();
/// assert_eq!(s.superslabs, 1); // the home SuperSlab
/// assert_eq!(s.bytes_held, 1 << 20);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// SuperSlabs (1 MiB each) the arena holds.
    pub superslabs: usize,
    /// Bytes held from the OS: SuperSlabs plus huge blocks' mappings.
    pub bytes_held: usize,
    /// Bytes of huge blocks' mappings (blocks over 960 KiB).
    pub huge_bytes: usize,
}

impl SmallMidArena {
    /// A snapshot of this arena's memory.
    pub fn stats(&self) -> Stats {
        let pool = lock(&self.state().pool);
        Stats {
            superslabs: pool.superslabs,
            bytes_held: pool.held_bytes(),
            huge_bytes: pool.huge_bytes,
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arena: {} SuperSlabs, {:.1} MiB held ({:.1} MiB huge)",
            self.superslabs,
            self.bytes_held as f64 / (1 << 20) as f64,
            self.huge_bytes as f64 / (1 << 20) as f64
        )
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
#[non_exhaustive]
pub struct GlobalStats {
    /// Mappings made since the process started (SuperSlabs and huge blocks).
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
    GlobalStats {
        mmaps,
        munmaps,
        warm_superslabs: cached,
        warm_bytes: cached * SUPERSLAB_SIZE,
        warm_limit_bytes: limit * SUPERSLAB_SIZE,
        superslabs_in_use: in_use,
        arenas_alive: registry::live_arenas(),
        threads: registry::threads(),
    }
}

/// Returns every warm cached SuperSlab to the OS now; returns how many.
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
            "smallmid: {} arenas, {} threads, {} SuperSlabs in use, {} warm ({:.1} MiB, cap {:.0} MiB), {} mmaps, {} munmaps",
            self.arenas_alive,
            self.threads,
            self.superslabs_in_use,
            self.warm_superslabs,
            self.warm_bytes as f64 / (1 << 20) as f64,
            self.warm_limit_bytes as f64 / (1 << 20) as f64,
            self.mmaps,
            self.munmaps
        )
    }
}
