//! Hostile review 6 of: a thread's exit deferring its arena's per-slab
//! decommits to one trim in runs (48de502) and the warm cache decommitting
//! a batch under its bound when a release passes it (72266df). Its own
//! binary: every test reads process-wide counters (warm cache, resident
//! slabs, mappings, decommits), so all are serialized.
#![cfg(all(target_os = "linux", not(miri)))]

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::{global_stats, set_warm_cache_limit, trim_warm_cache, SmallMidArena};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The warm cache's floor (src/warm.rs FLOOR), in SuperSlabs.
const FLOOR: usize = 8;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    set_warm_cache_limit(1 << 30);
    trim_warm_cache();
    g
}

fn l(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn minor_faults() -> i64 {
    // SAFETY: getrusage writes the struct we pass.
    unsafe {
        let mut u: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_minflt
    }
}

/// Grows `a` to `n` SuperSlabs with 900 KiB blocks (a 15-slab span each,
/// one per SuperSlab), every page written.
fn grow_to(a: &SmallMidArena, n: u64) {
    let big = l(900 * KIB);
    while a.stats().superslabs < n {
        let p = a.allocate(big).unwrap().cast::<u8>();
        for off in (0..big.size()).step_by(4096) {
            // SAFETY: inside a fresh block of `big.size()` bytes.
            unsafe { p.as_ptr().add(off).write(1) };
        }
    }
}

fn arena_of(n: u64) -> SmallMidArena {
    let a = SmallMidArena::new();
    grow_to(&a, n);
    a
}

/// Pushes the process past the bound of 256 resident emptied slabs: 100
/// arenas keep 4 emptied slabs each (as tests/decommit.rs does).
fn over_the_resident_bound() -> Vec<SmallMidArena> {
    let keep: Vec<_> = (0..100)
        .map(|_| {
            let a = SmallMidArena::new();
            for s in [2000, 3000, 5000, 6000] {
                let p = a.allocate(l(s)).unwrap();
                // SAFETY: allocated just above with this layout.
                unsafe { a.deallocate(p.cast(), l(s)) };
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
    keep
}

// ---------------------------------------------------------------- 48de502

/// Many threads exit in one arena at once (their retires serialize on the
/// members lock, `deferring` is non-zero most of the time) while another
/// thread keeps emptying and retaking slabs there with live data. After
/// the storm: the data is intact (no live slab decommitted), the resident
/// count is bounded, and the arena still decommits slab by slab (its
/// `deferring` went back to 0).
#[test]
fn exit_storm_with_concurrent_emptying_keeps_data_and_decommit_resumes() {
    let _g = serial();
    let keep = over_the_resident_bound();
    let a = SmallMidArena::new();
    let stop = AtomicBool::new(false);
    // Classes from 1.25 KiB up: one class slab each. Few enough that the
    // arena stays within its 4 small-paged SuperSlabs (slabs of huge-paged
    // ones are never decommitted one by one, by design).
    let layouts: Vec<Layout> = (0..8).map(|i| l(1100 + i * 3500)).collect();
    std::thread::scope(|s| {
        // The churner: empties slabs (flush) while exits retire, keeping
        // one live block per class whose bytes it checks.
        s.spawn(|| {
            let mut round = 0u8;
            while !stop.load(Ordering::Relaxed) {
                round = round.wrapping_add(1) | 1;
                let live: Vec<_> = layouts
                    .iter()
                    .map(|&lay| {
                        let p = a.allocate(lay).unwrap().cast::<u8>();
                        // SAFETY: a fresh block of `lay.size()` bytes.
                        unsafe { p.as_ptr().write_bytes(round, lay.size()) };
                        (p, lay)
                    })
                    .collect();
                std::thread::yield_now();
                for &(p, lay) in &live {
                    // SAFETY: our live block.
                    let b = unsafe { core::slice::from_raw_parts(p.as_ptr(), lay.size()) };
                    assert!(b.iter().all(|&x| x == round), "live block lost its bytes");
                    // SAFETY: allocated above with `lay`.
                    unsafe { a.deallocate(p, lay) };
                }
                a.flush_thread_cache();
            }
        });
        for _ in 0..12 {
            let bar = Barrier::new(4);
            std::thread::scope(|t| {
                for k in 0..4u8 {
                    let (bar, a, layouts) = (&bar, &a, &layouts);
                    t.spawn(move || {
                        let blocks: Vec<_> = layouts
                            .iter()
                            .map(|&lay| {
                                let p = a.allocate(lay).unwrap().cast::<u8>();
                                // SAFETY: fresh block.
                                unsafe { p.as_ptr().write_bytes(k | 0x80, lay.size()) };
                                (p, lay)
                            })
                            .collect();
                        bar.wait();
                        for (p, lay) in blocks {
                            // SAFETY: our live block.
                            let b = unsafe { core::slice::from_raw_parts(p.as_ptr(), lay.size()) };
                            assert!(
                                b.iter().all(|&x| x == k | 0x80),
                                "live block lost its bytes"
                            );
                            // SAFETY: allocated above with `lay`.
                            unsafe { a.deallocate(p, lay) };
                        }
                        // Exit: retire_own empties every slab at once.
                    });
                }
            });
        }
        stop.store(true, Ordering::Relaxed);
    });
    // A scoped thread's join returns before its thread-local destructors
    // (its exit) finish: wait for them.
    for _ in 0..200 {
        if global_stats().threads <= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    a.audit();
    assert!(
        a.stats().superslabs <= 4,
        "huge-paged SuperSlabs: {:?}",
        a.stats().superslabs
    );
    let g = global_stats();
    // 100 arenas x 4 kept past the bound, plus at most what one arena keeps.
    assert!(
        g.resident_free_slabs <= 400 + 32,
        "resident slabs piled up: {g}"
    );
    // deferring back to 0: emptying more than KEEP_RESIDENT slabs past the
    // bound decommits right away, without any thread exit.
    let before = global_stats().decommits;
    let blocks: Vec<_> = layouts
        .iter()
        .map(|&lay| (a.allocate(lay).unwrap(), lay))
        .collect();
    for (p, lay) in blocks {
        // SAFETY: allocated above with `lay`.
        unsafe { a.deallocate(p.cast(), lay) };
    }
    a.flush_thread_cache();
    let g = global_stats();
    assert!(
        g.decommits > before,
        "the arena no longer decommits emptied slabs (deferring stuck?): {g}"
    );
    drop((a, keep));
    trim_warm_cache();
}

/// The resident accounting after exits that deferred their decommits:
/// once every arena is gone (spares released) nothing is counted resident.
#[test]
fn resident_count_returns_to_zero_after_exits_and_drops() {
    let _g = serial();
    let keep = over_the_resident_bound();
    let arenas: Vec<_> = (0..4).map(|_| SmallMidArena::new()).collect();
    for _ in 0..8 {
        std::thread::scope(|s| {
            for a in &arenas {
                s.spawn(move || {
                    let ls: Vec<_> = (0..12).map(|i| l(1100 + i * 1400)).collect();
                    let bs: Vec<_> = ls.iter().map(|&x| a.allocate(x).unwrap()).collect();
                    for (p, x) in bs.into_iter().zip(ls) {
                        // SAFETY: allocated above with `x`.
                        unsafe { a.deallocate(p.cast(), x) };
                    }
                });
            }
        });
    }
    for a in &arenas {
        a.audit();
    }
    drop(arenas);
    drop(keep);
    trim_warm_cache();
    let g = global_stats();
    assert_eq!(g.arenas_alive, 0, "{g}");
    assert_eq!(g.resident_free_slabs, 0, "resident count leaked: {g}");
}

/// A recycled arena (a spare, reused on another thread) whose emptied slabs
/// are trimmed at a thread's exit, then reused: its live data survives.
#[test]
fn exit_trim_in_a_recycled_arena_leaves_live_data_alone() {
    let _g = serial();
    let keep = over_the_resident_bound();
    for round in 0..20u8 {
        let a = SmallMidArena::new(); // a spare after the first round
        let live: Vec<(NonNull<u8>, Layout)> = (0..10)
            .map(|i| {
                let lay = l(1100 + i * 2800);
                let p = a.allocate(lay).unwrap().cast::<u8>();
                // SAFETY: fresh block.
                unsafe { p.as_ptr().write_bytes(round | 1, lay.size()) };
                (p, lay)
            })
            .collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                let ls: Vec<_> = (0..20).map(|i| l(1000 + i * 1500)).collect();
                let bs: Vec<_> = ls.iter().map(|&x| a.allocate(x).unwrap()).collect();
                for (p, x) in bs.into_iter().zip(ls) {
                    // SAFETY: allocated above with `x`.
                    unsafe { a.deallocate(p.cast(), x) };
                }
            });
        });
        for (p, lay) in live {
            // SAFETY: our live block.
            let b = unsafe { core::slice::from_raw_parts(p.as_ptr(), lay.size()) };
            assert!(
                b.iter().all(|&x| x == round | 1),
                "round {round}: live block decommitted"
            );
            // SAFETY: allocated with `lay`.
            unsafe { a.deallocate(p, lay) };
        }
        a.audit();
    }
    drop(keep);
    trim_warm_cache();
    assert_eq!(global_stats().resident_free_slabs, 0, "{}", global_stats());
}

// ---------------------------------------------------------------- 72266df

/// The warm cache keeps at least FLOOR (8) SuperSlabs warm "regardless of
/// demand" (src/warm.rs; README: "recent peak - in use (>= 8 MiB ...)").
/// After a peak decays, the next release passes the bound with keep = FLOOR
/// and the batch takes the cache to FLOOR - FLOOR/2 = 4.
#[test]
fn a_release_after_decay_keeps_the_floor() {
    let _g = serial();
    drop(arena_of(20));
    let g = global_stats();
    assert!(g.warm_superslabs >= 16, "{g}");
    std::thread::sleep(Duration::from_millis(2200)); // two decay epochs
    drop(arena_of(6));
    let g = global_stats();
    // Whole 2 MiB pairs may leave one fewer.
    assert!(
        g.warm_superslabs >= FLOOR - 1,
        "warm cache below its floor of {FLOOR}: {g}"
    );
    trim_warm_cache();
}

/// A loop that drops and recreates an arena a little over the warm cap.
/// Before the batch, each drop decommitted the excess (2 SuperSlabs, one
/// madvise); now each drop decommits 16 more, one madvise all the same, and
/// the next round faults them all in again.
#[test]
fn reuse_loop_just_over_the_cap_refaults_a_batch_every_round() {
    let _g = serial();
    set_warm_cache_limit(32 * MIB);
    let mut report = Vec::new();
    for round in 0..6 {
        let f0 = minor_faults();
        let d0 = global_stats().decommits;
        let a = arena_of(34);
        let built = minor_faults() - f0;
        drop(a);
        let g = global_stats();
        report.push((round, built, g.decommits - d0, g.warm_superslabs));
    }
    set_warm_cache_limit(1 << 30);
    trim_warm_cache();
    eprintln!("(round, faults building 34 MiB, decommit calls, warm after drop): {report:?}");
    for &(round, _, calls, warm) in &report[2..] {
        assert!(calls <= 2, "round {round}: {calls} calls");
        assert!(
            warm >= 30,
            "round {round}: the drop decommitted down to {warm} SuperSlabs, not to the cap of 32 \
             (same madvise count, {} MiB refaulted next round): {report:?}",
            34 - warm
        );
    }
}

/// Under a cap below 32 MiB, fully decommitted regions past twice the cap
/// are unmapped. The batch decommits the whole small-paged region of an
/// arena dropped a little over the cap, so every round unmaps it and maps
/// a new one: "reuse maps nothing" broken.
#[test]
fn reuse_loop_under_a_small_cap_maps_nothing_after_warm_up() {
    let _g = serial();
    // Also unmaps every fully cold region left by earlier tests.
    set_warm_cache_limit(24 * MIB);
    let start = global_stats();
    let mut seen = Vec::new();
    for _ in 0..6 {
        drop(arena_of(26));
        let g = global_stats();
        seen.push((g.mmaps, g.munmaps, g.warm_superslabs, g.regions));
    }
    set_warm_cache_limit(1 << 30);
    trim_warm_cache();
    eprintln!("(mmaps, munmaps, warm, regions) after each drop: {seen:?}");
    // Round 0 maps the regions; after it nothing is unmapped or mapped.
    // (Which region the batch empties depends on where the kernel placed
    // the small-paged and the huge-paged region: the higher one goes first.)
    assert_eq!(
        (seen[0].0, start.munmaps),
        (seen[5].0, seen[5].1),
        "regions unmapped and mapped again while reusing one arena's SuperSlabs: {seen:?}"
    );
}

/// The hard cap holds and nothing underflows with caps of 0, 1 and 2
/// SuperSlabs (keep 0, 1, 2: keep - min(16, keep / 2)).
#[test]
fn tiny_caps_hold_and_do_not_underflow() {
    let _g = serial();
    for cap in [0, 1, 2, 3] {
        set_warm_cache_limit(cap * MIB);
        for n in [1, 5, 9] {
            drop(arena_of(n));
            trim_warm_cache(); // spares
            drop(arena_of(n));
            let g = global_stats();
            assert!(g.warm_superslabs <= cap, "cap {cap} MiB: {g}");
        }
    }
    set_warm_cache_limit(1 << 30);
    trim_warm_cache();
}

/// Lowering the cap under load, then releases past it: the cap holds at
/// every step, and after the load goes the cache ends within the cap.
#[test]
fn cap_holds_through_set_limit_and_concurrent_drops() {
    let _g = serial();
    let arenas: Vec<_> = (0..8).map(|_| arena_of(6)).collect();
    set_warm_cache_limit(10 * MIB);
    std::thread::scope(|s| {
        for a in arenas {
            s.spawn(move || {
                drop(a);
                let g = global_stats();
                assert!(g.warm_superslabs <= 10, "{g}");
                let b = arena_of(7);
                drop(b);
                let g = global_stats();
                assert!(g.warm_superslabs <= 10, "{g}");
            });
        }
    });
    let g = global_stats();
    assert!(g.warm_superslabs <= 10, "{g}");
    set_warm_cache_limit(1 << 30);
    trim_warm_cache();
}
