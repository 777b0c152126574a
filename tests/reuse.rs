//! Reuse: memory freed in an arena is reused, and dropped arenas' memory
//! goes to the next arena instead of the OS. Checked through counters.
//! A separate binary, run serially, so other tests' mappings don't count.

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::{global_stats, SmallMidArena};
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn long_churn_stays_within_a_bounded_number_of_superslabs() {
    let _g = SERIAL.lock().unwrap();
    let arena = SmallMidArena::new();
    let mut ring = vec![None; 4096];
    let mut x = 12345u64;
    let mut max_superslabs = 0;
    for i in 0..if cfg!(miri) { 10_000 } else { 2_000_000 } {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let slot = i % ring.len();
        if let Some((p, l)) = ring[slot].take() {
            // SAFETY: allocated below with `l`.
            unsafe { arena.deallocate(p, l) };
        }
        let l = Layout::from_size_align(256 + (x % 769) as usize, 8).unwrap();
        ring[slot] = Some((arena.allocate(l).unwrap().cast::<u8>(), l));
        if i % 65536 == 0 {
            max_superslabs = max_superslabs.max(arena.stats().superslabs);
        }
    }
    // 4096 live blocks of at most 1 KiB is 4 MiB; caches and slack aside,
    // the arena must not creep upwards.
    let end = arena.stats().superslabs;
    assert!(end <= 8, "churn grew to {end} SuperSlabs");
    assert!(
        max_superslabs <= 8,
        "churn peaked at {max_superslabs} SuperSlabs"
    );
    for (p, l) in ring.into_iter().flatten() {
        // SAFETY: allocated above with `l`.
        unsafe { arena.deallocate(p, l) };
    }
}

#[test]
fn ten_thousand_arenas_map_nothing_after_warm_up() {
    let _g = SERIAL.lock().unwrap();
    let round = |i: usize| {
        let arena = SmallMidArena::new();
        let mut v = allocator_api2::vec::Vec::new_in(&arena);
        for j in 0..100u64 {
            v.push(j);
        }
        let mut bytes = allocator_api2::vec::Vec::<u8, _>::new_in(&arena);
        bytes.resize(16 + (i * 37) % 1000, 1);
        // A few sizes across many classes, like a request would.
        let blocks: std::vec::Vec<_> = (0..32)
            .map(|k| {
                let l = Layout::from_size_align(16 + (i * 31 + k * 97) % 1009, 8).unwrap();
                (arena.allocate(l).unwrap(), l)
            })
            .collect();
        assert_eq!(blocks.len(), 32);
        drop((v, bytes)); // the blocks are released with the arena
    };
    for i in 0..10 {
        round(i);
    }
    let before = global_stats();
    for i in 0..if cfg!(miri) { 50 } else { 10_000 } {
        round(i);
    }
    let after = global_stats();
    assert_eq!(
        after.mmaps, before.mmaps,
        "arenas after warm-up mapped memory: {before} -> {after}"
    );
    assert_eq!(
        after.munmaps, before.munmaps,
        "arenas after warm-up unmapped memory"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "fills 8 MiB a round: a capacity test, its code paths run in the others"
)]
fn emptied_slabs_serve_other_classes() {
    let _g = SERIAL.lock().unwrap();
    let arena = SmallMidArena::new();
    let sizes = [24usize, 300, 1000, 4000, 20_000];
    let mut peak = 0;
    for round in 0..20 {
        let l = Layout::from_size_align(sizes[round % sizes.len()], 8).unwrap();
        let blocks: Vec<_> = (0..(8 << 20) / l.size())
            .map(|_| arena.allocate(l).unwrap())
            .collect();
        peak = peak.max(arena.stats().superslabs);
        for b in blocks {
            // SAFETY: allocated above with `l`.
            unsafe { arena.deallocate(b.cast(), l) };
        }
    }
    // Each round fills 8 MiB of one class; if slabs did not move between
    // classes the arena would need 5 × that.
    assert!(
        peak <= 14,
        "peak {peak} SuperSlabs: slabs are not reused across classes"
    );
}

/// Arenas made on one thread and dropped on another (requests hopping
/// threads) are recycled through the shared spares: no mapping after
/// warm-up.
#[test]
fn arenas_hopping_threads_map_nothing_after_warmup() {
    let _g = SERIAL.lock().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<SmallMidArena>(if cfg!(miri) { 4 } else { 64 });
    let consumer = std::thread::spawn(move || {
        let l = Layout::from_size_align(700, 8).unwrap();
        for arena in rx {
            let b = arena.allocate(l).unwrap();
            // SAFETY: allocated just above with `l`.
            unsafe { arena.deallocate(b.cast(), l) };
        }
    });
    let n = if cfg!(miri) { 200 } else { 20_000 };
    let mut maps = 0;
    for r in 0..n {
        let arena = SmallMidArena::new();
        arena
            .allocate(Layout::from_size_align(300, 8).unwrap())
            .unwrap();
        tx.send(arena).unwrap();
        if r == n / 2 {
            maps = global_stats().mmaps;
        }
    }
    drop(tx);
    consumer.join().unwrap();
    let grew = global_stats().mmaps - maps;
    assert!(
        grew <= 2,
        "hopping arenas mapped {grew} SuperSlabs after warm-up: {}",
        global_stats()
    );
}
