//! Decommit: free SuperSlabs past the warm cache's bound give their pages
//! back but stay reserved, so RSS falls and the next peak maps nothing.
//! Its own binary: it reads process-wide counters and RSS.
#![cfg(all(target_os = "linux", not(miri)))]

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::{global_stats, trim_warm_cache, SmallMidArena};
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

/// Resident set size of this process, from /proc/self/statm.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// `arenas` arenas, each holding `mib` MiB of 16 KiB blocks, every page
/// written.
fn load(arenas: usize, mib: usize) -> Vec<SmallMidArena> {
    let l = Layout::from_size_align(16 << 10, 8).unwrap();
    (0..arenas)
        .map(|i| {
            let a = SmallMidArena::new();
            for _ in 0..(mib << 20) / l.size() {
                let p = a.allocate(l).unwrap().cast::<u8>();
                // SAFETY: a fresh block of `l.size()` bytes.
                unsafe { p.as_ptr().write_bytes(i as u8 | 1, l.size()) };
            }
            a
        })
        .collect()
}

#[test]
fn trim_after_a_1gib_peak_returns_memory_and_reuse_maps_nothing() {
    let _g = SERIAL.lock().unwrap();
    // Mappings other tests made (and unmapped under smaller caps) before.
    let before = global_stats().mmaps;
    drop(load(16, 64)); // 1 GiB peak, all dropped
    let peak = rss_bytes();
    assert!(
        peak > 900 << 20,
        "the load did not touch its memory: {peak}"
    );
    let n = trim_warm_cache();
    let g = global_stats();
    let rss = rss_bytes();
    assert!(n > 900, "only {n} SuperSlabs decommitted: {g}");
    assert!(rss < 64 << 20, "RSS {} MiB after trim: {g}", rss >> 20);
    assert_eq!(g.warm_superslabs, 0, "{g}");
    assert!(g.decommitted_superslabs >= n, "{g}");
    // Tens of mappings for a thousand SuperSlabs.
    assert!(g.regions <= 20 && g.mmaps - before <= 40, "{g}");

    let again = load(16, 64);
    let g2 = global_stats();
    assert_eq!(
        g2.mmaps, g.mmaps,
        "the second peak mapped memory: {g} -> {g2}"
    );
    assert_eq!(g2.munmaps, g.munmaps, "{g} -> {g2}");
    drop(again);
    trim_warm_cache();
    assert!(rss_bytes() < 64 << 20);
}

/// With no `trim_warm_cache()`: after a 1 GiB peak, a light load of
/// per-request arenas (recycled as this thread's spare: nothing is
/// released to the warm cache) brings RSS back under 64 MiB within the
/// decay period (two 1 s epochs; 6 s allowed on a busy machine).
#[test]
fn rss_follows_the_load_down_within_the_decay_period() {
    let _g = SERIAL.lock().unwrap();
    smallmid::set_warm_cache_limit(1 << 30);
    drop(load(16, 64));
    let peak = rss_bytes();
    assert!(
        peak > 900 << 20,
        "the load did not touch its memory: {peak}"
    );
    let start = std::time::Instant::now();
    let mut rss = peak;
    while start.elapsed() < std::time::Duration::from_secs(6) {
        for _ in 0..100 {
            let a = SmallMidArena::new();
            let mut v = allocator_api2::vec::Vec::new_in(&a);
            v.extend(0..200u64);
            assert_eq!(v.iter().sum::<u64>(), 199 * 100);
        }
        rss = rss_bytes();
        if rss < 64 << 20 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let g = global_stats();
    assert!(
        rss < 64 << 20,
        "RSS {} MiB {:?} after the peak: {g}",
        rss >> 20,
        start.elapsed()
    );
    assert!(g.warm_superslabs <= 16, "{g}");
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(900),
        "decayed before an epoch passed"
    );
    // This thread's spare goes now, not at its exit during the next test.
    trim_warm_cache();
}

#[test]
fn superslabs_past_the_bound_are_decommitted_not_unmapped() {
    let _g = SERIAL.lock().unwrap();
    // Kept huge mappings (other tests') expire by unmapping: not here.
    trim_warm_cache();
    smallmid::set_warm_cache_limit(32 << 20);
    let l = Layout::from_size_align(60 << 10, 8).unwrap();
    // One round first: regions other tests left reserved (cold, within
    // twice the previous cap) are unmapped under the new cap.
    let a = SmallMidArena::new();
    for _ in 0..1000 {
        a.allocate(l).unwrap();
    }
    drop(a);
    let a = SmallMidArena::new();
    let before = global_stats();
    for _ in 0..1000 {
        let p = a.allocate(l).unwrap().cast::<u8>();
        // SAFETY: a fresh block of `l.size()` bytes.
        unsafe { p.as_ptr().write_bytes(7, l.size()) };
    }
    let held = a.stats().superslabs;
    let rss_held = rss_bytes();
    drop(a);
    let g = global_stats();
    assert!(
        g.warm_superslabs <= 32,
        "bound of 32 SuperSlabs broken: {g}"
    );
    assert_eq!(g.munmaps, before.munmaps, "SuperSlabs were unmapped: {g}");
    assert!(
        g.decommitted_superslabs as u64 >= held - 32,
        "{held} SuperSlabs held, only {} decommitted: {g}",
        g.decommitted_superslabs
    );
    let rss = rss_bytes();
    assert!(
        rss + ((held as usize - 40) << 20) < rss_held,
        "RSS {} MiB -> {} MiB: pages not returned",
        rss_held >> 20,
        rss >> 20
    );
    // Fully cold regions within twice the cap stay reserved: reuse maps
    // nothing.
    let again = SmallMidArena::new();
    for _ in 0..1000 {
        again.allocate(l).unwrap();
    }
    assert_eq!(global_stats().mmaps, g.mmaps, "{g}");
    drop(again);
    smallmid::set_warm_cache_limit(1 << 30);
}

/// Minor page faults taken by the calling thread so far.
fn thread_faults() -> i64 {
    // SAFETY: getrusage writes only the struct we pass.
    unsafe {
        let mut u: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u.ru_minflt
    }
}

#[test]
fn regions_and_huge_blocks_get_huge_pages() {
    let _g = SERIAL.lock().unwrap();
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    if !thp.is_ok_and(|m| m.contains("[madvise]") || m.contains("[always]")) {
        eprintln!("transparent huge pages unavailable: nothing to check");
        return;
    }
    trim_warm_cache(); // so the load below touches fresh pages
    let f0 = thread_faults();
    let arenas = load(1, 64);
    let small = thread_faults() - f0;
    drop(arenas);
    // Decommitted whole, huge pages come back as huge pages.
    trim_warm_cache();
    let f0 = thread_faults();
    drop(load(1, 64));
    let again = thread_faults() - f0;
    let a = SmallMidArena::new();
    let l = Layout::from_size_align(64 << 20, 8).unwrap();
    let f0 = thread_faults();
    let p = a.allocate(l).unwrap().cast::<u8>();
    // SAFETY: a fresh block of `l.size()` bytes.
    unsafe { p.as_ptr().write_bytes(3, l.size()) };
    let huge = thread_faults() - f0;
    // 64 MiB is 16,384 small pages and 32 huge ones; allow for huge pages
    // the kernel could not find.
    assert!(small < 4096, "{small} faults filling 64 MiB of SuperSlabs");
    assert!(again < 4096, "{again} faults refilling them after a trim");
    assert!(huge < 4096, "{huge} faults filling a 64 MiB huge block");
}

#[test]
fn live_arenas_that_free_most_blocks_give_pages_back() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // 16 arenas of 3.5 MiB of 2 KiB blocks (32 per class slab), every page
    // written: small-paged SuperSlabs only (an arena's first four).
    let l = Layout::from_size_align(2000, 8).unwrap();
    let per = (7 << 19) / 2048;
    let arenas: Vec<_> = (0..16)
        .map(|_| {
            let a = SmallMidArena::new();
            let blocks: Vec<_> = (0..per)
                .map(|_| {
                    let p = a.allocate(l).unwrap().cast::<u8>();
                    // SAFETY: a fresh block of `l.size()` bytes.
                    unsafe { p.as_ptr().write_bytes(7, l.size()) };
                    p
                })
                .collect();
            (a, blocks)
        })
        .collect();
    let peak = rss_bytes();
    let before = global_stats();
    // Free all but one block in every other slab: half the slabs empty
    // while every SuperSlab stays in use (nothing goes to the warm cache).
    for (a, blocks) in &arenas {
        for (i, &p) in blocks.iter().enumerate() {
            if i % 64 != 0 {
                // SAFETY: allocated above with `l`, freed once.
                unsafe { a.deallocate(p, l) };
            }
        }
        a.flush_thread_cache();
    }
    let after = rss_bytes();
    let g = global_stats();
    assert_eq!(g.superslabs_in_use, before.superslabs_in_use, "{g}");
    assert!(
        after + (12 << 20) < peak,
        "RSS {} MiB after freeing most blocks, {} MiB at the peak: {g}",
        after >> 20,
        peak >> 20,
    );
    assert!(g.resident_free_slabs <= 256 + 16, "{g}");
    assert_eq!(g.mmaps, before.mmaps, "decommit unmaps nothing: {g}");
    // The same load again reuses the arenas' own slabs: no new mapping.
    for (a, blocks) in arenas {
        let again: Vec<_> = (0..per / 2).map(|_| a.allocate(l).unwrap()).collect();
        for p in again
            .into_iter()
            .map(|p| p.cast())
            .chain(blocks.into_iter().step_by(64))
        {
            // SAFETY: allocated above with `l`, freed once.
            unsafe { a.deallocate(p, l) };
        }
    }
    assert_eq!(global_stats().mmaps, before.mmaps);
}

#[test]
fn freed_huge_blocks_are_reused_without_a_mapping() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    trim_warm_cache();
    let arena = SmallMidArena::new();
    let l = Layout::from_size_align(6 << 20, 8).unwrap();
    let first = arena.allocate(l).unwrap();
    // SAFETY: a fresh block of `l.size()` bytes.
    unsafe { first.cast::<u8>().as_ptr().write_bytes(1, l.size()) };
    // SAFETY: allocated just above with `l`.
    unsafe { arena.deallocate(first.cast(), l) };
    let g = global_stats();
    assert_eq!(g.huge_cached, 1, "{g}");
    // A table growing again, in another arena: the same mapping, no mmap,
    // every page already there.
    let other = SmallMidArena::new();
    let l2 = Layout::from_size_align((6 << 20) - 4096, 8).unwrap();
    let again = other.allocate(l2).unwrap();
    let g2 = global_stats();
    assert_eq!((g2.mmaps, g2.huge_cached), (g.mmaps, 0), "{g2}");
    assert!(again.len() >= l2.size());
    // SAFETY: a block of at least `l2.size()` bytes.
    unsafe { again.cast::<u8>().as_ptr().write_bytes(2, l2.size()) };
    drop(other); // its huge block goes to the cache too
    assert_eq!(global_stats().huge_cached, 1);
    // Far larger or smaller requests do not take it.
    let big = Layout::from_size_align(32 << 20, 8).unwrap();
    let b = arena.allocate(big).unwrap();
    assert!(global_stats().mmaps > g.mmaps);
    // SAFETY: allocated just above.
    unsafe { arena.deallocate(b.cast(), big) };
    // Bounded: 8 mappings, 128 MiB.
    let many: Vec<_> = (0..12)
        .map(|i| {
            let l = Layout::from_size_align((2 + 2 * i) << 20, 8).unwrap();
            (arena.allocate(l).unwrap(), l)
        })
        .collect();
    for (p, l) in many {
        // SAFETY: allocated above with `l`.
        unsafe { arena.deallocate(p.cast(), l) };
    }
    let g3 = global_stats();
    assert!(
        g3.huge_cached <= 8 && g3.huge_cached_bytes <= 128 << 20,
        "{g3}"
    );
    trim_warm_cache();
    let g4 = global_stats();
    assert_eq!((g4.huge_cached, g4.huge_cached_bytes), (0, 0), "{g4}");
}

/// A thread leaving an arena whose slabs it emptied decommits them in runs
/// of adjacent slabs, not one `madvise` per slab (each is a TLB shootdown on
/// every core running the process: a quarter of the thread-churn time).
#[test]
fn a_thread_exit_decommits_in_runs_not_slab_by_slab() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Past the process-wide bound of resident free slabs: 100 arenas keep
    // 4 emptied slabs each (an arena keeps up to 4 past the bound).
    let sizes = [2000, 3000, 5000, 6000];
    let keep: Vec<_> = (0..100)
        .map(|_| {
            let a = SmallMidArena::new();
            for s in sizes {
                let l = Layout::from_size_align(s, 8).unwrap();
                let p = a.allocate(l).unwrap();
                // SAFETY: allocated just above with `l`.
                unsafe { a.deallocate(p.cast(), l) };
            }
            a.flush_thread_cache();
            a
        })
        .collect();
    assert!(
        global_stats().resident_free_slabs > 256,
        "{}",
        global_stats()
    );
    // One thread takes a class slab for each of 20 classes from 1.25 KiB
    // up (one block each: they stay in its cache when freed) and exits:
    // its exit empties them all at once.
    let a = SmallMidArena::new();
    let before = global_stats().decommits;
    let superslabs = std::thread::scope(|s| {
        s.spawn(|| {
            let layouts: Vec<_> = (0..20)
                .map(|i| Layout::from_size_align(1100 + i * 1400, 8).unwrap())
                .collect();
            let blocks: Vec<_> = layouts.iter().map(|&l| a.allocate(l).unwrap()).collect();
            for (p, l) in blocks.into_iter().zip(layouts) {
                // SAFETY: allocated above with `l`.
                unsafe { a.deallocate(p.cast(), l) };
            }
            a.stats().superslabs
        })
        .join()
        .unwrap()
    });
    let calls = global_stats().decommits - before;
    assert!(calls >= 1, "nothing decommitted: {}", global_stats());
    // A run per SuperSlab (its emptied slabs are adjacent), not a call
    // every few slabs.
    assert!(
        calls <= superslabs,
        "{calls} decommit calls for one thread's exit from {superslabs} SuperSlabs"
    );
    drop((a, keep));
    // Recycled spares keep their resident slabs counted: release them, so
    // the next test starts under the bound.
    trim_warm_cache();
}

/// Arenas dropped past the warm cache's bound decommit in batches: a drop
/// that passes the bound takes the cache a little under it, so the next
/// drops need no `madvise` each.
#[test]
fn drops_past_the_warm_bound_decommit_in_batches() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    trim_warm_cache();
    smallmid::set_warm_cache_limit(32 << 20);
    // Five SuperSlabs each: too big to be kept as spares, so every drop
    // gives its SuperSlabs to the warm cache.
    let arenas = load(60, 4);
    assert!(arenas.iter().all(|a| a.stats().superslabs >= 5));
    let before = global_stats().decommits;
    let drops = arenas.len() as u64;
    drop(arenas);
    let calls = global_stats().decommits - before;
    let g = global_stats();
    assert!(g.warm_superslabs <= 32, "{g}");
    assert!(calls >= 1, "nothing decommitted: {g}");
    assert!(
        calls <= drops / 2,
        "{calls} decommit calls for {drops} drops: {g}"
    );
    smallmid::set_warm_cache_limit(1 << 30);
}

/// Short-lived threads, each using one of many arenas for a burst and then
/// exiting, leave at most a quarter of the process-wide bound of emptied
/// slabs resident (32 slabs, 2 MiB): nothing revisits an arena its thread
/// left, so slabs left resident there stay so for good. Before, each
/// arena left a few until the whole bound (128) was reached.
#[test]
fn threads_leaving_many_arenas_leave_little_resident() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    trim_warm_cache();
    let start = global_stats().resident_free_slabs;
    let arenas: Vec<_> = (0..200).map(|_| SmallMidArena::new()).collect();
    let l = Layout::from_size_align(2000, 8).unwrap();
    for a in &arenas {
        std::thread::scope(|s| {
            s.spawn(|| {
                let blocks: Vec<_> = (0..96).map(|_| a.allocate(l).unwrap()).collect();
                for p in blocks {
                    // SAFETY: allocated above with `l`, freed once.
                    unsafe { a.deallocate(p.cast(), l) };
                }
            });
        });
    }
    let left = global_stats().resident_free_slabs - start;
    assert!(
        left <= 32 + 4,
        "{left} emptied slabs left resident by 200 threads that exited: {}",
        global_stats()
    );
    drop(arenas);
    trim_warm_cache();
}
