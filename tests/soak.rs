//! Soak: 10,000 short-lived threads, at most 32 alive at a time, each
//! allocating and freeing in a shared arena and in an arena of its own.
//! Afterwards every counter must balance and the memory must be back.
//! Its own binary: it reads process-wide counters.

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::{global_stats, trim_warm_cache, SmallMidArena};
use std::sync::Arc;

const THREADS: usize = if cfg!(miri) { 40 } else { 10_000 };
const ALIVE: usize = 32;

fn work(shared: &SmallMidArena, seed: usize) {
    let own = SmallMidArena::new();
    let mut x = seed as u64 * 0x9E37_79B9 + 1;
    let mut live = Vec::new();
    for i in 0..64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let l = Layout::from_size_align(16 + (x % 2000) as usize, 8).unwrap();
        let arena = if i % 2 == 0 { shared } else { &own };
        let p = arena.allocate(l).unwrap().cast::<u8>();
        // SAFETY: a fresh block of `l.size()` bytes.
        unsafe { p.as_ptr().write_bytes(i as u8, l.size()) };
        live.push((i % 2 == 0, p, l));
    }
    // Free all but a few of the shared ones; those go to the next thread.
    for (is_shared, p, l) in live {
        let arena = if is_shared { shared } else { &own };
        // SAFETY: allocated above from `arena` with `l`.
        unsafe { arena.deallocate(p, l) };
    }
    let v = allocator_api2::vec::Vec::<u64, _>::with_capacity_in(100, &own);
    drop(v);
    drop(own); // the thread's spare; destroyed when the thread exits
}

#[test]
fn ten_thousand_short_lived_threads_balance() {
    let base = global_stats();
    let shared = Arc::new(SmallMidArena::new());
    let mut running = std::collections::VecDeque::new();
    let mut max_caches = 0;
    for t in 0..THREADS {
        if running.len() == ALIVE {
            let h: std::thread::JoinHandle<()> = running.pop_front().unwrap();
            h.join().unwrap();
        }
        let a = shared.clone();
        running.push_back(std::thread::spawn(move || work(&a, t)));
        if t % 1000 == 0 {
            max_caches = max_caches.max(shared.stats().thread_caches);
        }
    }
    running.into_iter().for_each(|h| h.join().unwrap());

    // Exited threads returned their caches: nothing is out of its slab.
    let s = shared.stats();
    assert_eq!((s.blocks_in_use, s.bytes_in_use), (0, 0), "{s}");
    assert_eq!(shared.audit().blocks_out, 0, "a thread cache leaked blocks");
    let allocs: u64 = s.classes.iter().map(|c| c.allocs).sum();
    let frees: u64 = s.classes.iter().map(|c| c.frees).sum();
    assert_eq!(
        (allocs, frees),
        (32 * THREADS as u64, 32 * THREADS as u64),
        "{s}"
    );
    // Thread indices were reused: caches are bounded by threads alive at once.
    assert!(
        s.thread_caches <= ALIVE as u64 + 1,
        "{} caches for {ALIVE} threads alive",
        s.thread_caches
    );
    assert!(max_caches <= ALIVE as u64 + 1);
    println!("soak: {THREADS} threads, {ALIVE} alive at a time\n{s}");

    drop(shared);
    trim_warm_cache(); // also releases this thread's spare: the shared arena
    let g = global_stats();
    assert_eq!(g.arenas_alive, base.arenas_alive, "{g}");
    assert_eq!(
        g.threads, base.threads,
        "exited threads still hold indices: {g}"
    );
    assert_eq!(
        g.superslabs_in_use, base.superslabs_in_use,
        "spares or arenas not released: {g}"
    );
    // Everything mapped is a region; its SuperSlabs are in use, warm or
    // decommitted; trimming decommits the warm part.
    trim_warm_cache();
    let g = global_stats();
    assert_eq!(g.warm_superslabs, 0);
    assert_eq!(g.mmaps - g.munmaps, g.regions as u64, "{g}");
    assert_eq!(
        g.reserved_bytes,
        (g.superslabs_in_use + g.decommitted_superslabs) << 20,
        "{g}"
    );
    println!("{g}");
}
