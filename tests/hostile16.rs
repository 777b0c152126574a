//! Hostile review of the seeds (commit 22ce951): an arena made with no
//! spare of its own thread starts as a 256-byte seed in a SuperSlab of
//! seeds shared by all arenas, and grows its full state when a block does
//! not fit.
//!
//! Every test holds `common::serial()`: several count SuperSlabs in use
//! process-wide, and seeds are shared by every arena of the process.
//!
//! The `miri_*` tests are small enough for Miri:
//! `MIRIFLAGS="-Zmiri-permissive-provenance -Zmiri-ignore-leaks"
//!  cargo +nightly miri test --test hostile16 -- miri_`

#![cfg(not(feature = "checked"))] // under `checked` arenas start whole

mod common;
use common::*;

use allocator_api2::alloc::Allocator;
use core::ptr::NonNull;
use smallmid::{global_stats, trim_warm_cache, SmallMidArena};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

fn nn(p: *mut u8) -> NonNull<u8> {
    NonNull::new(p).unwrap()
}

/// Threads with an index now, this one included (it gets one first, so
/// `settle` does not wait for it to exit).
fn base_threads() -> usize {
    let a = SmallMidArena::new();
    drop(a.alloc([0u8; 300]));
    drop(a);
    global_stats().threads
}

// ---------------------------------------------------------------------
// Lifetime: a thread's exit flush racing the arena's drop.
// ---------------------------------------------------------------------

/// Runs the `#[ignore]`d test `name` of this binary in a child process
/// and fails if it does not exit cleanly: a crash there (SIGSEGV) is a
/// failure here, and the rest of this file still runs.
fn in_child(name: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--test-threads", "1"])
        .output()
        .unwrap();
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b).into_owned();
        s[s.len().saturating_sub(1500)..].to_string()
    };
    assert!(
        out.status.success(),
        "{name} in a child process: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    );
}

/// On another thread than `s1`'s maker: fills and frees the classes
/// flushed before 160 B's, then frees 160 B blocks around seed block `s1`
/// (whose flush order is the point) and the block `big` that grew the arena.
fn flush_classes_then_160(a: &SmallMidArena, s1: usize, big: usize) {
    let lay160 = l(160, 8);
    for size in [8usize, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128] {
        let cap = ((32 << 10) / size).min(1024) - 1;
        let v: Vec<usize> = (0..cap).map(|_| alloc(a, l(size, 8)) as usize).collect();
        for p in v {
            free(a, p as *mut u8, l(size, 8));
        }
    }
    let n: Vec<usize> = (0..40).map(|_| alloc(a, lay160) as usize).collect();
    let m: Vec<usize> = (0..150).map(|_| alloc(a, lay160) as usize).collect();
    for p in n {
        free(a, p as *mut u8, lay160);
    }
    free(a, s1 as *mut u8, lay160);
    for p in m {
        free(a, p as *mut u8, lay160);
    }
    free(a, big as *mut u8, l(300, 8));
}

/// A seed block freed after the arena grew goes to the freeing thread's
/// cache; that thread's exit flush walks the cache's list, reading each
/// block's link, seed blocks included (`Heap::flush`). The arena's drop
/// (and its reset) frees the seed *first* (`drop_seed` at the top of
/// `reset_all` and `destroy`), before `detach` takes the members lock that
/// the exiting thread holds while it flushes. So the exit walks seed
/// blocks after their seed went back to its run; another arena takes the
/// seed at once and writes its room, and the exit follows a link that
/// arena wrote (here zeros: a null link, SIGSEGV in `Heap::flush`; with
/// another value it would free a foreign block into this arena).
///
/// Shape: the thread B that frees the seed block frees, after growth and
/// in this order, 40 normal blocks of the 160-byte class, the seed block,
/// 150 more; then one block of a second arena Y. Its exit returns Y's
/// cache first, then X's, whose flush walks ~5,000 blocks of smaller
/// classes before the 160-byte list. The test thread sees Y's cache
/// retired (`thread_caches` 0) and drops X at once: X's seed goes back
/// while B walks X's cache. Two reusers on fresh threads (the seed shard
/// of `seeded()`'s fresh threads) take freed seeds and zero their rooms.
#[test]
fn exit_flush_of_seed_blocks_races_the_arenas_drop() {
    let _serial = serial();
    in_child("exit_flush_race_child");
}

#[test]
#[ignore = "run in a child process by exit_flush_of_seed_blocks_races_the_arenas_drop"]
fn exit_flush_race_child() {
    let _serial = serial();
    trim_warm_cache();
    let stop = AtomicBool::new(false);
    let reused = AtomicUsize::new(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(3000);
    let y = SmallMidArena::new();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (stop, reused) = (&stop, &reused);
            // Fresh threads: no thread index, so the same seed shard as
            // the arenas `seeded()` makes.
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let a = SmallMidArena::new();
                    for _ in 0..24 {
                        let p = a.allocate_zeroed(l(8, 8)).unwrap();
                        assert_eq!(p.len(), 8);
                    }
                    reused.fetch_add(1, Ordering::Relaxed);
                    drop(a);
                }
            });
        }
        let lay160 = l(160, 8);
        let y = &y;
        while std::time::Instant::now() < deadline {
            let x = Arc::new(seeded());
            // A seed block of the 160-byte class (room 64..224).
            let s1 = alloc(&x, lay160) as usize;
            assert_eq!(x.audit().seed_blocks, 1);
            let big = alloc(&x, l(300, 8)) as usize; // grows
            assert_eq!(x.stats().superslabs, 1);
            let x2 = x.clone();
            std::thread::scope(|s2| {
                s2.spawn(move || {
                    let a = &*x2;
                    flush_classes_then_160(a, s1, big);
                    // Y last: its cache is the first the exit returns.
                    free(y, alloc(y, l(8, 8)), l(8, 8));
                    drop(x2); // the exit flush follows
                });
            });
            // Joined: B's exit may still be under way.
            while y.stats().thread_caches != 0 {
                std::hint::spin_loop();
            }
            // B's exit is at X now: drop it (its seed goes first).
            drop(Arc::try_unwrap(x).unwrap());
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(reused.load(Ordering::Relaxed) > 0);
}

/// The same race through `reset()`, the usual shape: threads of a scope
/// free seed blocks, the scope joins (their exits may still run), the
/// owner resets the arena and goes on.
#[test]
fn exit_flush_of_seed_blocks_races_the_arenas_reset() {
    let _serial = serial();
    in_child("exit_flush_reset_race_child");
}

#[test]
#[ignore = "run in a child process by exit_flush_of_seed_blocks_races_the_arenas_reset"]
fn exit_flush_reset_race_child() {
    let _serial = serial();
    trim_warm_cache();
    let stop = AtomicBool::new(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(3000);
    let y = SmallMidArena::new();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let stop = &stop;
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let a = SmallMidArena::new();
                    for _ in 0..24 {
                        a.allocate_zeroed(l(8, 8)).unwrap();
                    }
                }
            });
        }
        let lay160 = l(160, 8);
        let y = &y;
        while std::time::Instant::now() < deadline {
            let mut x = seeded();
            let s1 = alloc(&x, lay160) as usize;
            let big = alloc(&x, l(300, 8)) as usize; // grows
            std::thread::scope(|s2| {
                let a = &x;
                s2.spawn(move || {
                    flush_classes_then_160(a, s1, big);
                    free(y, alloc(y, l(8, 8)), l(8, 8));
                });
            });
            while y.stats().thread_caches != 0 {
                std::hint::spin_loop();
            }
            x.reset(); // frees the seed first
            let p = alloc(&x, l(64, 8));
            stamp(p, 64, 7);
            check(p, 64, 7, "after reset");
            free(&x, p, l(64, 8));
        }
        stop.store(true, Ordering::Relaxed);
    });
}

// ---------------------------------------------------------------------
// Miri: small lifecycles of a seed.
// ---------------------------------------------------------------------

/// An arena that never grew is dropped: its seed is released. Under Miri
/// (Stacked Borrows) `Drop` hands `seed::release` a pointer made from a
/// shared `&Seed` (`NonNull::from(seed)`), and `release` drops the seed in
/// place and writes its free-list link through it: UB.
#[test]
fn miri_a_seed_arena_dropped_without_growing() {
    let _serial = serial();
    let a = seeded();
    let p = alloc(&a, l(8, 8));
    stamp(p, 8, 1);
    let q = alloc(&a, l(24, 8));
    stamp(q, 24, 2);
    check(p, 8, 1, "seed block");
    free(&a, p, l(8, 8));
    assert_eq!(a.stats().blocks_in_use, 1);
    drop(a);
}

/// Grows, frees seed blocks into the cache, reuses one, resets (the seed
/// released through the state's pointer), drops.
#[test]
fn miri_a_seed_arena_grows_resets_and_drops() {
    let _serial = serial();
    let mut a = seeded();
    let s1 = alloc(&a, l(16, 8));
    stamp(s1, 16, 3);
    let s2 = alloc(&a, l(16, 8));
    let big = alloc(&a, l(500, 8)); // grows
    check(s1, 16, 3, "seed block after growth");
    free(&a, s2, l(16, 8));
    let again = alloc(&a, l(16, 8));
    assert_eq!(again, s2, "a seed block freed after growth is reused");
    free(&a, again, l(16, 8));
    free(&a, s1, l(16, 8));
    free(&a, big, l(500, 8));
    a.flush_thread_cache();
    assert_eq!(a.stats().blocks_in_use, 0);
    a.reset();
    let p = alloc(&a, l(16, 8));
    free(&a, p, l(16, 8));
    drop(a);
}

/// A box's clone grows the arena; the handle still names the seed when it
/// is reset and dropped.
#[test]
fn miri_boxes_grow_a_seed_and_the_handle_resets() {
    let _serial = serial();
    let mut a = seeded();
    {
        let b = a.alloc([7u64; 3]);
        let clones: Vec<_> = (0..12).map(|_| b.clone()).collect();
        assert!(clones.iter().all(|c| **c == [7; 3]));
    }
    a.reset();
    let b = a.alloc(1u8);
    assert_eq!(*b, 1);
}

// ---------------------------------------------------------------------
// Counts stay exact across growth, cross-thread frees, exits, flushes.
// ---------------------------------------------------------------------

/// Seed blocks freed by a thread that exits (its flush drops them), by a
/// cacheless thread (flush of one) and by the owner (cache, reused), and
/// slab blocks interleaved with seed blocks in one cache list (a flush's
/// runs split by seed blocks): every class's allocs and frees stay exact,
/// nothing is handed out twice, and nothing stays counted.
#[test]
fn counts_stay_exact_as_seed_blocks_leave_through_every_path() {
    let _serial = serial();
    let base = base_threads();
    let a = seeded();
    let l16 = l(16, 8);
    let l32 = l(32, 8);
    let seeds16: Vec<usize> = (0..6).map(|_| alloc(&a, l16) as usize).collect();
    let seeds32: Vec<usize> = (0..2).map(|_| alloc(&a, l32) as usize).collect();
    assert_eq!(a.audit().seed_blocks, 8);
    assert_eq!(a.stats().superslabs, 0);
    let big = alloc(&a, l(300, 8)); // grows
    assert_eq!(a.stats().superslabs, 1);
    let normal16: Vec<usize> = (0..10).map(|_| alloc(&a, l16) as usize).collect();
    let mut live = Live::default();
    for &p in seeds16.iter().chain(&normal16) {
        live.add(p as *mut u8, 16, "before");
        stamp(p as *mut u8, 16, 0x16);
    }
    // Another thread frees seed and slab blocks interleaved, takes three
    // blocks back (from its cache: seed blocks among them), frees one,
    // keeps two, and exits: its flush walks a list mixing both.
    let kept: Vec<usize> = std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..3 {
                free(&a, seeds16[i] as *mut u8, l16);
                free(&a, normal16[i] as *mut u8, l16);
            }
            free(&a, seeds32[0] as *mut u8, l32);
            let got: Vec<usize> = (0..3).map(|_| alloc(&a, l16) as usize).collect();
            free(&a, got[0] as *mut u8, l16);
            got[1..].to_vec()
        })
        .join()
        .unwrap()
    });
    settle(base);
    wait_caches(&a, 1); // this thread's
    for i in 0..3 {
        live.remove(seeds16[i] as *mut u8);
        live.remove(normal16[i] as *mut u8);
    }
    for &p in &kept {
        live.add(p as *mut u8, 16, "kept by the exited thread");
        stamp(p as *mut u8, 16, 0x61);
    }
    // A cacheless thread frees a seed block (a flush of one).
    smallmid::test_hooks::cacheless(|| free(&a, seeds16[3] as *mut u8, l16));
    live.remove(seeds16[3] as *mut u8);
    // The owner frees the rest, seed and slab blocks interleaved, and
    // allocates again: nothing overlaps a live block.
    for i in 3..10 {
        if i < 6 && i != 3 {
            free(&a, seeds16[i] as *mut u8, l16);
            live.remove(seeds16[i] as *mut u8);
        }
        free(&a, normal16[i] as *mut u8, l16);
        live.remove(normal16[i] as *mut u8);
    }
    let again: Vec<usize> = (0..20).map(|_| alloc(&a, l16) as usize).collect();
    for &p in &again {
        live.add(p as *mut u8, 16, "after the frees");
    }
    for &p in &kept {
        check(p as *const u8, 16, 0x61, "kept block");
    }
    let s = a.stats();
    // 6 seed + 10 slab + 3 on the thread + 20 now = 39 allocations.
    assert_eq!(class_counts(&a, 16), (39, 39 - 22), "{s}");
    assert_eq!(class_counts(&a, 32), (2, 1), "{s}");
    assert_eq!(s.blocks_in_use, 22 + 1 + 1, "{s}");
    for p in again.into_iter().chain(kept) {
        free(&a, p as *mut u8, l16);
    }
    free(&a, seeds32[1] as *mut u8, l32);
    free(&a, big, l(300, 8));
    a.flush_thread_cache();
    let s = a.stats();
    assert_eq!((s.blocks_in_use, s.bytes_in_use), (0, 0), "{s}");
    assert_eq!(class_counts(&a, 16), (39, 39), "{s}");
    assert_eq!(a.audit().blocks_out, 0);
}

/// A full cache list of a seed block's class flushes half of it on a free
/// (`free_slow`): seed blocks among the flushed are dropped, the rest keep
/// their counts, and the seed blocks still in the list are reused.
#[test]
fn a_half_flush_through_seed_blocks_keeps_counts() {
    let _serial = serial();
    let a = seeded();
    let lay = l(8, 8);
    let seeds: Vec<usize> = (0..24).map(|_| alloc(&a, lay) as usize).collect();
    assert_eq!(a.audit().seed_blocks, 24);
    assert_eq!(a.stats().superslabs, 0, "24 blocks of 8 B fill the room");
    let normal: Vec<usize> = (0..3000).map(|_| alloc(&a, lay) as usize).collect();
    assert_eq!(a.stats().superslabs, 1, "the 25th grew the arena");
    // Interleave seed and slab blocks on the list, well past its capacity
    // (1,024): several half flushes walk seed blocks.
    let mut it = normal.iter();
    for &s in &seeds {
        free(&a, s as *mut u8, lay);
        for &p in it.by_ref().take(100) {
            free(&a, p as *mut u8, lay);
        }
    }
    for &p in it {
        free(&a, p as *mut u8, lay);
    }
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 0, "{s}");
    assert_eq!(class_counts(&a, 8), (3024, 3024), "{s}");
    // Reuse: nothing handed out twice.
    let mut live = Live::default();
    let again: Vec<usize> = (0..3000).map(|_| alloc(&a, lay) as usize).collect();
    for &p in &again {
        live.add(p as *mut u8, 8, "reuse after half flushes");
    }
    for p in again {
        free(&a, p as *mut u8, lay);
    }
    a.flush_thread_cache();
    assert_eq!(a.stats().blocks_in_use, 0);
    assert_eq!(a.audit().blocks_out, 0);
}

// ---------------------------------------------------------------------
// The room: its bound, alignment, exact fits.
// ---------------------------------------------------------------------

/// The room (192 bytes, 24 log entries): 24 blocks of 8 bytes fill it,
/// back to back, and the 25th grows the arena; a block of exactly 192
/// bytes fits a fresh seed; a 128-aligned block is placed aligned.
#[test]
fn the_room_holds_24_smallest_blocks_or_one_of_192_bytes() {
    let _serial = serial();
    let a = seeded();
    let ps: Vec<usize> = (0..24).map(|_| alloc(&a, l(8, 8)) as usize).collect();
    for (i, &p) in ps.iter().enumerate() {
        assert_eq!(p, ps[0] + 8 * i, "block {i} of the room");
        assert!(a.contains(p as *const u8));
        stamp(p as *mut u8, 8, i as u8);
    }
    assert_eq!(a.audit().seed_blocks, 24);
    assert_eq!(a.stats().superslabs, 0);
    let p25 = alloc(&a, l(8, 8)) as usize;
    assert!(
        p25 < ps[0] || p25 >= ps[23] + 8,
        "the 25th block is not in the room"
    );
    assert_eq!(a.stats().superslabs, 1);
    assert_eq!(a.stats().blocks_in_use, 25);
    for (i, &p) in ps.iter().enumerate() {
        check(p as *const u8, 8, i as u8, "room block after growth");
    }

    // Exactly the room: one block of 192 bytes.
    let b = seeded();
    let p = alloc(&b, l(192, 8)) as usize;
    stamp(p as *mut u8, 192, 0xAB);
    assert_eq!(b.stats().superslabs, 0, "192 bytes fit the room");
    let q = alloc(&b, l(8, 8)) as usize; // no room left
    assert_eq!(b.stats().superslabs, 1);
    check(p as *const u8, 192, 0xAB, "the 192-byte seed block");
    free(&b, q as *mut u8, l(8, 8));
    free(&b, p as *mut u8, l(192, 8));
    assert_eq!(b.stats().blocks_in_use, 0);

    // 128-aligned blocks after an 8-byte one: aligned wherever they land.
    let c = seeded();
    let x = alloc(&c, l(8, 8)) as usize;
    let y = alloc(&c, l(100, 128)) as usize;
    let z = alloc(&c, l(8, 128)) as usize;
    assert_eq!((y % 128, z % 128), (0, 0));
    stamp(x as *mut u8, 8, 1);
    stamp(y as *mut u8, 100, 2);
    stamp(z as *mut u8, 8, 3);
    check(x as *const u8, 8, 1, "x");
    check(y as *const u8, 100, 2, "y");
    for (p, lay) in [(x, l(8, 8)), (y, l(100, 128)), (z, l(8, 128))] {
        free(&c, p as *mut u8, lay);
    }
    assert_eq!(c.stats().blocks_in_use, 0);
}

/// Layouts aligned 1..4096 with sizes 1..200 in fresh seeds: each block
/// is aligned, inside its seed's room or the grown arena, disjoint from
/// the others, and keeps its bytes; zero-size ones take no memory.
#[test]
fn over_aligned_and_zero_size_layouts_in_a_seed() {
    let _serial = serial();
    let mut rng = Rng(16);
    for round in 0..30 {
        let a = seeded();
        let mut live = Live::default();
        let mut held = vec![];
        for i in 0..12u8 {
            let align = 1usize << rng.below(13);
            let size = rng.below(201);
            let lay = l(size, align);
            let b = a.allocate(lay).unwrap();
            let p = b.cast::<u8>().as_ptr();
            assert_eq!(p as usize % align, 0, "round {round}: {lay:?} at {p:p}");
            assert!(b.len() >= size);
            if size == 0 {
                assert_eq!(b.len(), 0);
                held.push((p, lay, i));
                continue;
            }
            assert!(
                a.contains(p),
                "round {round}: {lay:?} at {p:p} not in the arena"
            );
            live.add(p, size, "aligned");
            stamp(p, size, i);
            held.push((p, lay, i));
        }
        for &(p, lay, v) in &held {
            check(p, lay.size(), v, "aligned block");
        }
        for (p, lay, _) in held {
            free(&a, p, lay);
        }
        let s = a.stats();
        assert_eq!(s.blocks_in_use, 0, "round {round}: {s}");
    }
}

/// Blocks freed before growth are never reused by the seed (it only bumps)
/// and after growth come back zeroed from `allocate_zeroed` even though
/// they held data.
#[test]
fn allocate_zeroed_hands_out_dirty_seed_blocks_zeroed() {
    let _serial = serial();
    let a = seeded();
    let lay = l(48, 8);
    let s = alloc(&a, lay);
    stamp(s, 48, 0xEE);
    let _grow = alloc(&a, l(4000, 8));
    free(&a, s, lay);
    let z = a.allocate_zeroed(lay).unwrap();
    assert_eq!(
        z.cast::<u8>().as_ptr(),
        s,
        "the seed block comes back first"
    );
    check(s, z.len(), 0, "zeroed seed block");
}

// ---------------------------------------------------------------------
// grow / shrink of seed blocks.
// ---------------------------------------------------------------------

#[test]
fn resizing_seed_blocks_across_classes_keeps_bytes_and_counts() {
    let _serial = serial();
    let a = seeded();
    let mut p = nn(alloc(&a, l(9, 8)));
    stamp(p.as_ptr(), 9, 0x5A);
    let mut cur = l(9, 8);
    // Up through seed classes, past the room, past a slab class, then
    // down again to a single byte and to zero.
    for size in [16usize, 24, 40, 96, 190, 500, 4000, 40_000] {
        let new = l(size, 8);
        // SAFETY: `p` is live with `cur`.
        let g = unsafe { a.grow(p, cur, new) }.unwrap();
        assert!(g.len() >= size);
        p = g.cast();
        check(p.as_ptr(), 9, 0x5A, "grown");
        cur = new;
        assert_eq!(a.stats().blocks_in_use, 1, "at {size}");
    }
    for size in [3000usize, 100, 17, 1] {
        let new = l(size, 8);
        // SAFETY: `p` is live with `cur`.
        let g = unsafe { a.shrink(p, cur, new) }.unwrap();
        p = g.cast();
        check(p.as_ptr(), size.min(9), 0x5A, "shrunk");
        cur = new;
        assert_eq!(a.stats().blocks_in_use, 1, "at {size}");
    }
    // SAFETY: as above.
    let z = unsafe { a.shrink(p, cur, l(0, 8)) }.unwrap();
    assert_eq!(z.len(), 0);
    assert_eq!(a.stats().blocks_in_use, 0);
    // From zero size back into a seed-sized block (a fresh seed).
    let b = seeded();
    let d = b.allocate(l(0, 16)).unwrap().cast::<u8>();
    // SAFETY: a zero-size block of `b` with l(0, 16).
    let g = unsafe { b.grow_zeroed(d, l(0, 16), l(64, 16)) }.unwrap();
    check(g.cast::<u8>().as_ptr(), 64, 0, "grow_zeroed from zero size");
    assert_eq!(b.stats().superslabs, 0, "served by the seed");
    // SAFETY: live with l(64, 16).
    unsafe { b.deallocate(g.cast(), l(64, 16)) };
    assert_eq!(b.stats().blocks_in_use, 0);
}

/// grow_zeroed in place within a seed block's class zeroes the tail.
#[test]
fn grow_zeroed_in_place_in_a_seed_zeroes_the_tail() {
    let _serial = serial();
    let a = seeded();
    let b = a.allocate(l(17, 8)).unwrap(); // the 24-byte class
    let p = b.cast::<u8>();
    stamp(p.as_ptr(), b.len(), 0xFF);
    // SAFETY: live with l(17, 8).
    let g = unsafe { a.grow_zeroed(p, l(17, 8), l(24, 8)) }.unwrap();
    assert_eq!(g.cast::<u8>(), p, "in place");
    check(p.as_ptr(), 17, 0xFF, "kept");
    check(p.as_ptr().wrapping_add(17), 7, 0, "zeroed tail");
}

// ---------------------------------------------------------------------
// Races with growth.
// ---------------------------------------------------------------------

/// Eight threads allocate, check and free in a fresh seeded arena while it
/// grows; four readers call stats, audit, contains, memory_limit,
/// allocated_bytes and Debug meanwhile. Nothing overlaps or changes,
/// counts never exceed what was handed out, and everything comes back.
#[test]
fn readers_and_writers_race_growth() {
    let _serial = serial();
    for round in 0..20u64 {
        let a = seeded();
        let stop = AtomicBool::new(false);
        let live: Mutex<Live> = Mutex::new(Live::default());
        let go = Barrier::new(12);
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..8u64)
                .map(|t| {
                    let (a, live, go) = (&a, &live, &go);
                    s.spawn(move || {
                        let mut rng = Rng(round * 64 + t + 1);
                        let mut mine = vec![];
                        go.wait();
                        for i in 0..60 {
                            let lay = l(1 + rng.below(if i < 4 { 48 } else { 600 }), 8);
                            let p = alloc(a, lay);
                            live.lock().unwrap().add(p, lay.size(), "racing growth");
                            stamp(p, lay.size(), t as u8);
                            mine.push((p as usize, lay));
                            if rng.below(3) == 0 {
                                let (q, ql) = mine.swap_remove(rng.below(mine.len()));
                                check(q as *const u8, ql.size(), t as u8, "before free");
                                live.lock().unwrap().remove(q as *mut u8);
                                free(a, q as *mut u8, ql);
                            }
                        }
                        for (q, ql) in mine {
                            check(q as *const u8, ql.size(), t as u8, "at the end");
                            live.lock().unwrap().remove(q as *mut u8);
                            free(a, q as *mut u8, ql);
                        }
                    })
                })
                .collect();
            for _ in 0..4 {
                let (a, stop, live, go) = (&a, &stop, &live, &go);
                s.spawn(move || {
                    go.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let st = a.stats();
                        assert!(st.blocks_in_use <= 8 * 60, "{st}");
                        let au = a.audit();
                        assert!(au.seed_blocks <= 24);
                        assert_eq!(a.memory_limit(), usize::MAX);
                        let _ = a.allocated_bytes();
                        let _ = format!("{a:?}");
                        // A block seen live is in the arena (it stays live
                        // while we hold the lock).
                        let g = live.lock().unwrap();
                        if let Some((&p, _)) = g.0.iter().next() {
                            assert!(a.contains(p as *const u8), "live block {p:#x}");
                        }
                    }
                });
            }
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
        let st = a.stats();
        assert_eq!(st.blocks_in_use, 0, "round {round}: {st}");
        assert_eq!(st.superslabs, 1, "round {round}: grew once");
    }
}

/// Frees of seed blocks on two threads race the growth a third thread
/// triggers: each free lands either in the seed's log (before) or in a
/// cache (after), never both, never lost.
#[test]
fn frees_of_seed_blocks_race_growth() {
    let _serial = serial();
    let base = base_threads();
    let l16 = l(16, 8);
    for round in 0..40 {
        let a = seeded();
        let ps: Vec<usize> = (0..10).map(|_| alloc(&a, l16) as usize).collect();
        assert_eq!(a.stats().superslabs, 0);
        let go = Barrier::new(3);
        let big = std::thread::scope(|s| {
            let (a, go, ps) = (&a, &go, &ps);
            s.spawn(move || {
                go.wait();
                for &p in &ps[..5] {
                    free(a, p as *mut u8, l16);
                }
            });
            s.spawn(move || {
                go.wait();
                for &p in &ps[5..] {
                    free(a, p as *mut u8, l16);
                }
            });
            let t = s.spawn(move || {
                go.wait();
                alloc(a, l(300, 8)) as usize
            });
            t.join().unwrap()
        });
        assert_eq!(a.stats().superslabs, 1, "round {round}");
        free(&a, big as *mut u8, l(300, 8));
        let s = a.stats();
        assert_eq!(class_counts(&a, 16), (10, 10), "round {round}: {s}");
        assert_eq!(s.blocks_in_use, 0, "round {round}: {s}");
        settle(base);
        a.flush_thread_cache();
        assert_eq!(a.audit().blocks_out, 0, "round {round}");
        assert_eq!(a.stats().blocks_in_use, 0, "round {round}");
    }
}

// ---------------------------------------------------------------------
// Limits.
// ---------------------------------------------------------------------

/// `set_memory_limit` on one thread races the growth another triggers,
/// while a third reads `memory_limit()`: the limit set is the state's,
/// whichever came first, and it holds.
#[test]
fn set_memory_limit_races_growth() {
    let _serial = serial();
    const LIMIT: usize = 256 << 10;
    for round in 0..40 {
        let a = seeded();
        let go = Barrier::new(3);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let (a, go, done) = (&a, &go, &done);
            let setter = s.spawn(move || {
                go.wait();
                a.set_memory_limit(LIMIT).unwrap();
            });
            let grower = s.spawn(move || {
                go.wait();
                let v: Vec<usize> = (0..20).map(|_| alloc(a, l(1024, 8)) as usize).collect();
                for p in v {
                    free(a, p as *mut u8, l(1024, 8));
                }
            });
            s.spawn(move || {
                go.wait();
                while !done.load(Ordering::Relaxed) {
                    let m = a.memory_limit();
                    assert!(m == usize::MAX || m == LIMIT, "round {round}: limit {m}");
                }
            });
            setter.join().unwrap();
            grower.join().unwrap();
            done.store(true, Ordering::Relaxed);
        });
        assert_eq!(a.memory_limit(), LIMIT, "round {round}");
        assert_eq!(a.stats().superslabs, 1);
        let mut n = 0;
        while a.allocate(l(1024, 8)).is_ok() {
            n += 1;
            assert!(n < 2000, "round {round}: the limit did not hold");
        }
        let s = a.stats();
        assert!(s.bytes_held <= LIMIT as u64, "round {round}: {s}");
        assert!(n >= 150, "round {round}: only {n} KiB under 256 KiB");
    }
}

/// The smallest limit builds a seed; it grows under the limit as an arena
/// made whole does.
#[test]
fn the_smallest_limit_builds_a_seed_that_grows_under_it() {
    let _serial = serial();
    assert!(SmallMidArena::builder()
        .memory_limit(SLAB - 1)
        .try_build()
        .is_err());
    let a = seeded_with(SmallMidArena::builder().memory_limit(SLAB));
    assert_eq!(a.memory_limit(), SLAB);
    let first = alloc(&a, l(16, 8));
    stamp(first, 16, 9);
    let mut n = 0;
    while a.allocate(l(1000, 8)).is_ok() {
        n += 1;
        assert!(n < 200);
    }
    let s = a.stats();
    assert!(s.bytes_held <= SLAB as u64, "{s}");
    assert!(n >= 50, "only {n} KiB of blocks under a 64 KiB limit");
    check(first, 16, 9, "the seed block under the limit");
    assert!(a.reserve(2 * MIB).is_err(), "reserve past the limit");
    // A large block does not fit either.
    assert!(a.allocate(l(100 << 10, 8)).is_err());
}

/// `reserve()` grows a seed; the seed's blocks stay.
#[test]
fn reserve_grows_a_seed_and_keeps_its_blocks() {
    let _serial = serial();
    let a = seeded();
    let p = alloc(&a, l(40, 8));
    stamp(p, 40, 4);
    a.reserve(3 * MIB).unwrap();
    let s = a.stats();
    assert!(s.superslabs >= 3, "{s}");
    assert!(a.contains(p));
    check(p, 40, 4, "seed block after reserve");
    assert_eq!(s.blocks_in_use, 1);
    free(&a, p, l(40, 8));
    assert_eq!(a.stats().blocks_in_use, 0);
}

/// The OS refusing the state's SuperSlab leaves the seed as it was: its
/// blocks, counts and further growth.
#[test]
fn a_refused_growth_leaves_the_seed_usable() {
    let _serial = serial();
    let a = seeded();
    let p = alloc(&a, l(16, 8));
    stamp(p, 16, 6);
    trim_warm_cache(); // no spare, no warm SuperSlab
    smallmid::test_hooks::fail_next_maps(1_000);
    let refused = a.allocate(l(300, 8));
    smallmid::test_hooks::fail_next_maps(0);
    assert!(refused.is_err(), "grew with every map refused");
    assert!(a.try_alloc([0u8; 400]).is_ok() || a.stats().superslabs == 1);
    check(p, 16, 6, "seed block after a refused growth");
    let q = alloc(&a, l(300, 8));
    assert_eq!(a.stats().superslabs, 1);
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 2, "{s}");
    free(&a, q, l(300, 8));
    free(&a, p, l(16, 8));
    assert_eq!(a.stats().blocks_in_use, 0);
}

// ---------------------------------------------------------------------
// Handles: boxes, shared handles, drops on other threads.
// ---------------------------------------------------------------------

/// Clones of a box grow the arena on another thread while the handle
/// still names the seed, and the owner allocates meanwhile: then limit,
/// contains, stats and reset see the grown state.
#[test]
fn box_clones_grow_the_arena_on_another_thread() {
    let _serial = serial();
    for round in 0..20 {
        let mut a = seeded();
        {
            let b = a.alloc([round as u64; 2]);
            let go = Barrier::new(2);
            let (clones, mine) = std::thread::scope(|s| {
                let (b, go, a) = (&b, &go, &a);
                let t = s.spawn(move || {
                    go.wait();
                    (0..40).map(|_| b.clone()).collect::<Vec<_>>()
                });
                go.wait();
                let mine: Vec<usize> = (0..30).map(|_| alloc(a, l(8, 8)) as usize).collect();
                (t.join().unwrap(), mine)
            });
            assert!(clones.iter().all(|c| **c == [round as u64; 2]));
            assert_eq!(a.stats().superslabs, 1, "round {round}: one state");
            a.set_memory_limit(8 * MIB).unwrap();
            assert_eq!(a.memory_limit(), 8 * MIB);
            assert!(clones
                .iter()
                .all(|c| a.contains(&**c as *const _ as *const u8)));
            assert_eq!(a.stats().blocks_in_use, 1 + 40 + 30);
            for p in mine {
                free(&a, p as *mut u8, l(8, 8));
            }
            drop((b, clones));
            assert_eq!(a.stats().blocks_in_use, 0, "round {round}");
        }
        a.reset();
        assert_eq!(a.memory_limit(), 8 * MIB, "the limit survives a reset");
        let x = a.alloc(1u32);
        assert_eq!(a.stats().blocks_in_use, 1);
        drop(x);
    }
}

/// A seeded arena shared across threads; its last handle drops on another
/// thread; the arena count and the seeds' SuperSlabs come back.
#[test]
fn a_shared_seed_arena_dropped_last_on_another_thread() {
    let _serial = serial();
    let base = base_threads();
    let before = trimmed_stats(base);
    for round in 0..50u64 {
        let shared = seeded().into_shared();
        let go = Arc::new(Barrier::new(4));
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let (s, go) = (shared.clone(), go.clone());
                std::thread::spawn(move || {
                    let b = s.allocate(l(8 + 8 * t as usize, 8)).unwrap();
                    stamp(b.cast::<u8>().as_ptr(), 8, t as u8);
                    go.wait();
                    check(b.cast::<u8>().as_ptr(), 8, t as u8, "shared seed block");
                    // SAFETY: allocated just above with this layout.
                    unsafe { s.deallocate(b.cast(), l(8 + 8 * t as usize, 8)) };
                    if t == round % 4 {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                    drop(s);
                })
            })
            .collect();
        drop(shared);
        for h in hs {
            h.join().unwrap();
        }
    }
    let after = trimmed_stats(base);
    assert_eq!(after.arenas_alive, before.arenas_alive, "{after}");
    assert!(
        after.superslabs_in_use <= before.superslabs_in_use,
        "{} -> {}",
        before.superslabs_in_use,
        after.superslabs_in_use
    );
}

/// 100,000 arenas made on four threads, each with a block in its seed,
/// dropped on other threads: every arena's seed comes back, and with a
/// trim the SuperSlabs of seeds too.
#[test]
fn a_hundred_thousand_seeds_made_and_dropped_on_other_threads() {
    let _serial = serial();
    let base = base_threads();
    let before = trimmed_stats(base);
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..4)
        .map(|_| std::sync::mpsc::channel::<Vec<SmallMidArena>>())
        .unzip();
    let mut rxs: Vec<_> = rxs.into_iter().map(Some).collect();
    let peak = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (t, tx) in txs.into_iter().enumerate() {
            let rx = rxs[(t + 1) % 4].take().unwrap();
            let peak = &peak;
            s.spawn(move || {
                let mut mine = Vec::with_capacity(25_000);
                for i in 0..25_000usize {
                    let a = SmallMidArena::new();
                    let p = alloc(&a, l(8, 8));
                    // SAFETY: a fresh 8-byte block.
                    unsafe { (p as *mut u64).write((t * 25_000 + i) as u64) };
                    mine.push((a, p as usize));
                }
                for (i, (_, p)) in mine.iter().enumerate() {
                    // SAFETY: live blocks of live arenas.
                    let v = unsafe { (*p as *const u64).read() };
                    assert_eq!(v, (t * 25_000 + i) as u64, "a seed block changed");
                }
                peak.fetch_max(global_stats().superslabs_in_use, Ordering::Relaxed);
                tx.send(mine.into_iter().map(|(a, _)| a).collect()).unwrap();
                drop(rx.recv().unwrap()); // another thread's arenas
            });
        }
    });
    let during = global_stats();
    let after = trimmed_stats(base);
    assert_eq!(after.arenas_alive, before.arenas_alive, "{after}");
    // About 4,000 (256-byte) or 2,000 (512-byte) seeds to a SuperSlab:
    // not one SuperSlab per arena, nor per thousand.
    assert!(
        peak.load(Ordering::Relaxed) - before.superslabs_in_use <= 100,
        "100,000 seeds took {} SuperSlabs",
        peak.load(Ordering::Relaxed) - before.superslabs_in_use
    );
    assert!(
        after.superslabs_in_use <= before.superslabs_in_use,
        "seed SuperSlabs kept: {} -> {} -> {}",
        before.superslabs_in_use,
        during.superslabs_in_use,
        after.superslabs_in_use
    );
}

/// Arenas dropped on another thread than the one that grew them: in a
/// seed, grown (handle repointed or not); the blocks of each are exact
/// until the drop, and nothing stays counted.
#[test]
fn seed_arenas_dropped_on_other_threads() {
    let _serial = serial();
    let base = base_threads();
    let before = trimmed_stats(base);
    for kind in 0..3 {
        let mut arenas = vec![];
        for _ in 0..50 {
            let a = seeded();
            let p = alloc(&a, l(24, 8));
            stamp(p, 24, 2);
            match kind {
                0 => {}
                1 => {
                    let _ = alloc(&a, l(2000, 8)); // grown through the handle
                }
                _ => {
                    // Grown by a box: the handle still names the seed.
                    let b = a.alloc([3u64; 2]);
                    let v: Vec<_> = (0..20).map(|_| b.clone()).collect();
                    drop(v);
                    drop(b);
                }
            }
            check(p, 24, 2, "before the drop");
            arenas.push(a);
        }
        std::thread::spawn(move || drop(arenas)).join().unwrap();
    }
    let after = trimmed_stats(base);
    assert_eq!(after.arenas_alive, before.arenas_alive, "{after}");
    assert!(
        after.superslabs_in_use <= before.superslabs_in_use,
        "{} -> {}",
        before.superslabs_in_use,
        after.superslabs_in_use
    );
}

/// A panic while a value is built in a seed (a closure, a `clone`) frees
/// the block and drops what was built, before and after the arena grew
/// (the closure growing it itself).
#[test]
fn a_panic_while_building_in_a_seed_frees_the_block() {
    let _serial = serial();
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct D(#[allow(dead_code)] u64);
    impl Drop for D {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }
    let a = seeded();
    DROPS.store(0, Ordering::Relaxed);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.alloc_slice_fill_with(3, |i| {
            if i == 2 {
                panic!("building");
            }
            D(i as u64)
        })
    }));
    assert!(r.is_err());
    assert_eq!(DROPS.load(Ordering::Relaxed), 2);
    assert_eq!(a.stats().superslabs, 0, "still a seed");
    assert_eq!(a.stats().blocks_in_use, 0);
    assert_eq!(a.audit().seed_blocks, 0);
    // The closure grows the arena, then panics: the seed block is freed
    // into the grown arena.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.alloc_with(|| {
            let big = a.alloc([0u8; 3000]);
            drop(big);
            panic!("after growing");
            #[allow(unreachable_code)]
            D(0)
        })
    }));
    assert!(r.is_err());
    assert_eq!(a.stats().superslabs, 1);
    assert_eq!(a.stats().blocks_in_use, 0, "{}", a.stats());
    let e: Result<ArenaBoxU64<'_>, ()> = a.alloc_try_with(|| Err(()));
    assert!(e.is_err());
    assert_eq!(a.stats().blocks_in_use, 0);
}

type ArenaBoxU64<'a> = smallmid::ArenaBox<'a, u64>;

/// An arena made, grown, used and dropped inside a thread-local's
/// destructor, after the thread's own exit work (no index, no cache, no
/// spare): its seed comes from the shard of exiting threads, growth takes
/// a shared spare or a fresh SuperSlab, and counts stay exact.
#[test]
fn a_seed_arena_lives_and_dies_in_a_thread_local_destructor() {
    let _serial = serial();
    static RESULT: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    struct Late;
    impl Drop for Late {
        fn drop(&mut self) {
            let r = std::panic::catch_unwind(|| {
                // Shared spares (other tests' drops) are taken first: hold
                // them until a `new()` starts in a seed.
                let mut spares = Vec::new();
                let a = loop {
                    let a = SmallMidArena::new();
                    if a.stats().superslabs == 0 {
                        break a;
                    }
                    assert!(spares.len() < 1000, "never in a seed: {a:?}");
                    spares.push(a);
                };
                let seeds: Vec<usize> = (0..6).map(|_| alloc(&a, l(16, 8)) as usize).collect();
                for &p in &seeds {
                    stamp(p as *mut u8, 16, 0x77);
                }
                let big = alloc(&a, l(5000, 8)); // grows
                let more: Vec<usize> = (0..50).map(|_| alloc(&a, l(16, 8)) as usize).collect();
                let mut live = Live::default();
                for &p in seeds.iter().chain(&more) {
                    live.add(p as *mut u8, 16, "in a destructor");
                }
                for &p in &seeds {
                    check(p as *const u8, 16, 0x77, "seed block in a destructor");
                }
                for p in seeds.into_iter().chain(more) {
                    free(&a, p as *mut u8, l(16, 8));
                }
                free(&a, big, l(5000, 8));
                let s = a.stats();
                assert_eq!(s.blocks_in_use, 0, "{s}");
                assert_eq!(class_counts(&a, 16), (56, 56), "{s}");
                drop(a);
                drop(spares);
            });
            *RESULT.lock().unwrap() = Some(r.map_err(|e| panic_message(&*e)));
        }
    }
    thread_local! {
        static LATE: std::cell::RefCell<Option<Late>> = const { std::cell::RefCell::new(None) };
    }
    *RESULT.lock().unwrap() = None;
    std::thread::spawn(|| {
        // Registered before the engine's own thread-local: destroyed after.
        LATE.with(|l| *l.borrow_mut() = Some(Late));
        let a = SmallMidArena::new();
        drop(a.alloc([1u8; 500]));
    })
    .join()
    .unwrap();
    for _ in 0..2000 {
        if RESULT.lock().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let r = RESULT.lock().unwrap().take().expect("the destructor ran");
    r.unwrap();
}

/// The README: seeds are carved "by 8 shards of threads". The shard is
/// `current_tid() % 8`, and a thread gets its index only when it first
/// takes a front cache; a thread that has only made arenas and used their
/// seeds has none (`NO_TID`, `u32::MAX`), so every such thread lands in
/// shard 7 (`u32::MAX % 8`): one lock and one SuperSlab for all of them.
/// Eight fresh threads each making 200 arenas here share one SuperSlab of
/// seeds instead of spreading over shards.
#[test]
fn fresh_threads_spread_their_seeds_over_shards() {
    let _serial = serial();
    trim_warm_cache();
    let go = Barrier::new(8);
    let bases: Vec<std::collections::BTreeSet<usize>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let go = &go;
                s.spawn(move || {
                    go.wait();
                    let arenas: Vec<SmallMidArena> =
                        (0..200).map(|_| SmallMidArena::new()).collect();
                    let set = arenas
                        .iter()
                        .map(|a| alloc(a, l(8, 8)) as usize / MIB)
                        .collect();
                    drop(arenas);
                    set
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: std::collections::BTreeSet<usize> = bases.iter().flatten().copied().collect();
    assert!(
        all.len() >= 4,
        "8 threads' 1,600 seeds in {} SuperSlab(s) of seeds: one shard for every thread \
         without an index",
        all.len()
    );
}

/// Boxes grow the arena, so the handle never left the seed; a reset then
/// frees the seed (another arena may take it at once) and the arena goes
/// on in its slabs: nothing of the two overlaps, counts are exact.
#[test]
fn a_reset_when_the_handle_never_left_the_seed() {
    let _serial = serial();
    for _ in 0..20 {
        let mut a = seeded();
        let old = {
            let b = a.alloc([5u64; 2]);
            let old = &*b as *const [u64; 2] as usize;
            let v: Vec<_> = (0..30).map(|_| b.clone()).collect();
            assert_eq!(a.stats().superslabs, 1);
            assert_eq!(a.stats().blocks_in_use, 31);
            drop(v);
            drop(b);
            old
        };
        assert!(
            a.contains(old as *const u8),
            "the seed's room is the arena's"
        );
        a.reset();
        assert!(
            !a.contains(old as *const u8),
            "the seed went with the reset"
        );
        let s = a.stats();
        assert_eq!((s.blocks_in_use, s.classes.len()), (0, 0), "{s}");
        assert_eq!(a.audit().seed_blocks, 0);
        let other = seeded(); // may take the freed seed
        let mut live = Live::default();
        let theirs: Vec<usize> = (0..10).map(|_| alloc(&other, l(16, 8)) as usize).collect();
        let ours: Vec<usize> = (0..10).map(|_| alloc(&a, l(16, 8)) as usize).collect();
        for &p in &theirs {
            live.add(p as *mut u8, 16, "other arena");
            stamp(p as *mut u8, 16, 1);
        }
        for &p in &ours {
            live.add(p as *mut u8, 16, "reset arena");
            stamp(p as *mut u8, 16, 2);
        }
        for &p in &theirs {
            check(p as *const u8, 16, 1, "other arena's block");
        }
        assert_eq!(a.stats().blocks_in_use, 10);
        assert_eq!(other.stats().blocks_in_use, 10);
        for p in ours {
            free(&a, p as *mut u8, l(16, 8));
        }
        for p in theirs {
            free(&other, p as *mut u8, l(16, 8));
        }
        assert_eq!(a.stats().blocks_in_use, 0);
        assert_eq!(other.stats().blocks_in_use, 0);
    }
}
