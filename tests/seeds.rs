//! Seeds: an arena made with no warm spare at hand starts in a 256-byte
//! seed, carved with other arenas' seeds from shared SuperSlabs, and grows
//! its full state when a block does not fit. These tests check that
//! nothing is lost across the growth: contents, counts, limits, frees from
//! any thread, boxes that outlive the handle's view of the seed.
//!
//! Every test holds `common::serial()`: one counts the SuperSlabs in use
//! process-wide.

#![cfg(not(feature = "checked"))] // under `checked` arenas start whole

mod common;
use common::*;

use allocator_api2::alloc::Allocator;
use smallmid::{global_stats, trim_warm_cache, SmallMidArena};
use std::sync::Mutex;

#[test]
fn a_tiny_arena_holds_its_blocks_in_its_seed() {
    let _serial = serial();
    let a = seeded();
    let b = a.alloc(7u64);
    let s = a.stats();
    assert_eq!(
        (s.blocks_in_use, s.bytes_in_use, s.bytes_held, s.superslabs),
        (1, 8, 0, 0)
    );
    assert_eq!(a.allocated_bytes(), 0);
    assert!(a.contains(&*b as *const u64 as *const u8));
    assert!(!a.contains(&0u8 as *const u8));
    assert_eq!(a.audit().seed_blocks, 1);
    assert_eq!(*b, 7);
    drop(b);
    assert_eq!(a.stats().blocks_in_use, 0);
    assert_eq!(a.audit().seed_blocks, 0);
    assert_eq!(
        a.stats().superslabs,
        0,
        "a seed block's free grew the arena"
    );
}

#[test]
fn seed_blocks_keep_their_contents_when_the_arena_grows() {
    let _serial = serial();
    let a = seeded();
    let mut live = Live::default();
    let mut held = vec![];
    let mut rng = Rng(5);
    for i in 0..200u32 {
        let lay = l(8 * (1 + rng.below(8)), 8);
        let p = alloc(&a, lay);
        live.add(p, lay.size(), "seed, then grown");
        stamp(p, lay.size(), i as u8);
        held.push((p, lay, i as u8));
        if i == 0 {
            assert_eq!(a.stats().superslabs, 0);
        }
    }
    assert_eq!(a.stats().superslabs, 1, "grew once");
    let in_seed = a.audit().seed_blocks;
    assert!((2..=24).contains(&in_seed), "{in_seed} blocks in the seed");
    for &(p, lay, v) in &held {
        check(p, lay.size(), v, "after growth");
    }
    assert_eq!(a.stats().blocks_in_use, 200);
    // Seed blocks freed now go through this thread's cache like any
    // block, are reused from there, and a flush drops them.
    for (p, lay, _) in held.drain(..100) {
        free(&a, p, lay);
    }
    for i in 0..100u32 {
        let lay = l(8 * (1 + rng.below(8)), 8);
        let p = alloc(&a, lay);
        live.0.retain(|&s, _| s != p as usize);
        live.add(p, lay.size(), "reused");
        stamp(p, lay.size(), 200 + i as u8 % 50);
        held.push((p, lay, 200 + i as u8 % 50));
    }
    for &(p, lay, v) in &held {
        check(p, lay.size(), v, "after reuse");
    }
    for (p, lay, _) in held.drain(..) {
        free(&a, p, lay);
    }
    a.flush_thread_cache();
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 0, "{s}");
    assert_eq!(a.audit().blocks_out, 0);
}

#[test]
fn seed_blocks_freed_on_other_threads_before_and_after_growth() {
    let _serial = serial();
    let base = global_threads();
    let a = seeded();
    let lay = l(16, 8);
    let (p, q) = (alloc(&a, lay) as usize, alloc(&a, lay) as usize);
    stamp(q as *mut u8, 16, 3);
    std::thread::scope(|s| {
        s.spawn(|| free(&a, p as *mut u8, lay));
    });
    assert_eq!(a.stats().blocks_in_use, 1);
    assert_eq!(a.stats().superslabs, 0);
    let big = alloc(&a, l(300, 8)); // does not fit: the arena grows
    assert_eq!(a.stats().superslabs, 1);
    check(q as *const u8, 16, 3, "seed block after growth");
    std::thread::scope(|s| {
        s.spawn(|| free(&a, q as *mut u8, lay));
    });
    settle(base);
    wait_caches(&a, 1);
    free(&a, big, l(300, 8));
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 0, "{s}");
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

fn global_threads() -> usize {
    smallmid::global_stats().threads
}

#[test]
fn threads_racing_through_a_seed_get_distinct_blocks() {
    let _serial = serial();
    for round in 0..20u64 {
        let a = seeded();
        let out = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (a, out) = (&a, &out);
                s.spawn(move || {
                    let mut rng = Rng(round * 8 + t + 1);
                    for _ in 0..50 {
                        let lay = l(8 + rng.below(256), 8);
                        let p = alloc(a, lay);
                        stamp(p, lay.size(), t as u8);
                        out.lock().unwrap().push((p as usize, lay, t as u8));
                    }
                });
            }
        });
        let out = out.into_inner().unwrap();
        let mut live = Live::default();
        for &(p, lay, v) in &out {
            live.add(p as *mut u8, lay.size(), "racing threads");
            check(p as *const u8, lay.size(), v, "racing threads");
        }
        assert_eq!(a.stats().blocks_in_use, 200);
        for (p, lay, _) in out {
            free(&a, p as *mut u8, lay);
        }
        assert_eq!(a.stats().blocks_in_use, 0);
    }
}

#[test]
fn boxes_in_a_seed_drop_clone_and_grow_the_arena() {
    let _serial = serial();
    let a = seeded();
    let b = a.alloc([1u64, 2]);
    let c = b.clone();
    assert_eq!(*c, [1, 2]);
    assert_eq!(a.stats().superslabs, 0);
    // Clones past the seed's room grow the arena from a box: the handle
    // still names the seed until it next looks.
    let many: Vec<_> = (0..40).map(|_| b.clone()).collect();
    assert!(many.iter().all(|x| **x == [1, 2]));
    assert_eq!(a.stats().superslabs, 1);
    let x = a.alloc(5u32);
    assert_eq!(a.stats().blocks_in_use, 43);
    drop((b, c, many, x));
    assert_eq!(a.stats().blocks_in_use, 0);
}

#[test]
fn reset_rewinds_a_seed_and_drops_it_once_grown() {
    let _serial = serial();
    let mut a = seeded();
    let p = alloc(&a, l(32, 8));
    a.reset();
    assert_eq!(a.stats().blocks_in_use, 0);
    assert_eq!(alloc(&a, l(32, 8)), p, "the seed rewound");
    let _ = alloc(&a, l(4096, 8)); // grows
    a.reset();
    let s = a.stats();
    assert_eq!((s.blocks_in_use, s.classes.len()), (0, 0), "{s}");
    assert_eq!(a.audit().seed_blocks, 0);
    let q = alloc(&a, l(32, 8));
    assert_ne!(q, p, "a grown arena's blocks come from its slabs");
    assert_eq!(a.stats().blocks_in_use, 1);
}

#[test]
#[should_panic(expected = "freed twice")]
fn a_double_free_in_a_seed_panics() {
    let _serial = serial();
    let a = seeded();
    let p = alloc(&a, l(8, 8));
    free(&a, p, l(8, 8));
    free(&a, p, l(8, 8));
}

#[test]
#[should_panic(expected = "did not hand out")]
fn a_foreign_pointer_freed_into_a_seed_panics() {
    let _serial = serial();
    let a = seeded();
    let _p = alloc(&a, l(8, 8));
    let other = seeded();
    let q = alloc(&other, l(8, 8));
    free(&a, q, l(8, 8));
}

#[test]
fn a_limit_set_on_a_seed_holds_once_it_grows() {
    let _serial = serial();
    let a = seeded_with(SmallMidArena::builder().memory_limit(128 << 10));
    assert_eq!(a.memory_limit(), 128 << 10);
    assert!(a.set_memory_limit(1000).is_err());
    a.set_memory_limit(64 << 10).unwrap();
    assert_eq!(a.memory_limit(), 64 << 10);
    let mut n = 0;
    while a.allocate(l(1024, 8)).is_ok() {
        n += 1;
        assert!(n < 1000, "the limit did not hold");
    }
    assert!(n >= 50, "only {n} KiB under a 64 KiB limit");
    assert_eq!(a.memory_limit(), 64 << 10);
    assert!(a.stats().bytes_held <= 64 << 10);
}

#[test]
fn tiny_arenas_share_superslabs() {
    let _serial = serial();
    // Arenas that took shared spares (other tests' drops) are set aside.
    let (arenas, blocks, _spares) = std::thread::spawn(|| {
        let (arenas, spares): (Vec<SmallMidArena>, _) = (0..10_000)
            .map(|_| SmallMidArena::new())
            .partition(|a| a.stats().superslabs == 0);
        assert!(arenas.len() >= 9_000, "{} shared spares", spares.len());
        let blocks: Vec<usize> = arenas.iter().map(|a| alloc(a, l(8, 8)) as usize).collect();
        (arenas, blocks, spares)
    })
    .join()
    .unwrap();
    assert!(arenas.iter().all(|a| a.stats().superslabs == 0));
    let bases: std::collections::BTreeSet<usize> = blocks.iter().map(|b| b / MIB).collect();
    assert!(
        bases.len() <= 6,
        "10,000 seeds over {} SuperSlabs",
        bases.len()
    );
    // Dropped on another thread (the seeds go back to their runs, the
    // emptied SuperSlabs to the warm cache), then made again: the
    // SuperSlabs in use do not pile up.
    let during = global_stats().superslabs_in_use;
    std::thread::spawn(move || {
        drop(arenas);
        let again: Vec<SmallMidArena> = (0..10_000).map(|_| SmallMidArena::new()).collect();
        for a in &again {
            let p = alloc(a, l(8, 8));
            stamp(p, 8, 5);
            check(p, 8, 5, "a seed made again");
        }
        let now = global_stats().superslabs_in_use;
        assert!(now <= during + 1, "{during} SuperSlabs in use, then {now}");
    })
    .join()
    .unwrap();
}

#[test]
fn seed_blocks_resize_in_place_within_their_class_and_move_across() {
    let _serial = serial();
    let a = seeded();
    let p = alloc(&a, l(17, 8)); // the 20-byte class
    stamp(p, 17, 4);
    let nn = core::ptr::NonNull::new(p).unwrap();
    // SAFETY: live with layout l(17).
    let g = unsafe { a.grow(nn, l(17, 8), l(20, 8)) }.unwrap();
    assert_eq!(g.cast::<u8>(), nn, "within the class: in place");
    // SAFETY: live with layout l(20).
    let m = unsafe { a.grow(nn, l(20, 8), l(100, 8)) }.unwrap();
    assert_ne!(m.cast::<u8>(), nn);
    check(m.cast::<u8>().as_ptr(), 17, 4, "moved");
    // SAFETY: live with layout l(100).
    let big = unsafe { a.grow(m.cast(), l(100, 8), l(5000, 8)) }.unwrap();
    check(big.cast::<u8>().as_ptr(), 17, 4, "moved past the seed");
    assert_eq!(a.stats().superslabs, 1);
    free(&a, big.cast::<u8>().as_ptr(), l(5000, 8));
    assert_eq!(a.stats().blocks_in_use, 0);
}

#[test]
fn collections_and_shared_handles_start_in_a_seed() {
    let _serial = serial();
    let a = seeded();
    let mut m = hashbrown::HashMap::new_in(&a);
    for i in 0..1000u64 {
        m.insert(i, i * 2);
    }
    assert!((0..1000u64).all(|i| m[&i] == i * 2));
    drop(m);
    assert_eq!(a.stats().blocks_in_use, 0);
    let shared = seeded().into_shared();
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let s = shared.clone();
            std::thread::spawn(move || {
                let mut v = allocator_api2::vec::Vec::new_in(s.clone());
                v.extend(0..10 * t);
                assert_eq!(v.iter().sum::<u64>(), (0..10 * t).sum::<u64>());
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(shared.stats().blocks_in_use, 0);
}

#[test]
fn seed_superslabs_go_back_when_their_seeds_do() {
    let _serial = serial();
    settle(1); // earlier tests' threads exit (their spares go)
    trim_warm_cache();
    let before = global_stats().superslabs_in_use;
    let arenas = std::thread::spawn(|| {
        let arenas: Vec<SmallMidArena> = (0..20_000).map(|_| SmallMidArena::new()).collect();
        for a in &arenas {
            let _ = alloc(a, l(24, 8));
        }
        arenas
    })
    .join()
    .unwrap();
    let during = global_stats().superslabs_in_use;
    assert!(
        during >= before + 4,
        "20,000 seeds in {} SuperSlabs",
        during - before
    );
    drop(arenas);
    trim_warm_cache();
    let after = global_stats().superslabs_in_use;
    assert!(
        after <= before,
        "seed SuperSlabs kept: {before} -> {during} -> {after}"
    );
}

#[test]
fn reset_after_boxes_grew_the_arena_forgets_the_seed() {
    let _serial = serial();
    let mut a = seeded();
    {
        let b = a.alloc([1u64; 2]);
        // Grown by the boxes: the handle still names the seed.
        let many: Vec<_> = (0..40).map(|_| b.clone()).collect();
        drop((b, many));
    }
    a.reset(); // frees the seed, which another arena may take next
    let other = seeded();
    let y = alloc(&other, l(16, 8));
    stamp(y, 16, 9);
    let x = alloc(&a, l(16, 8));
    stamp(x, 16, 4);
    check(y, 16, 9, "the other arena's seed block");
    assert_eq!(a.stats().blocks_in_use, 1);
    assert_eq!(other.stats().blocks_in_use, 1);
    assert_eq!(a.stats().superslabs, 1);
}
