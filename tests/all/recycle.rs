//! Per-request arenas on one thread: a dropped arena is recycled as the
//! thread's spare. Every block of the next arena must be fresh, aligned,
//! and disjoint from the others, whatever the previous one did.

use crate::shadow::Shadow;
use crate::{scaled, Rng};
use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::SmallMidArena;

fn request(rng: &mut Rng, blocks: usize, max: usize, free_some: bool) {
    let arena = SmallMidArena::new();
    let mut shadow = Shadow::default();
    for i in 0..blocks {
        let l = Layout::from_size_align(rng.range(1, max), 1 << rng.range(0, 6)).unwrap();
        shadow.insert(arena.allocate(l).unwrap(), l, i as u8);
        if free_some && rng.range(0, 2) == 0 {
            let live = shadow.take_nth(rng.range(0, shadow.len() - 1)).unwrap();
            // SAFETY: allocated from `arena` with this layout.
            unsafe { arena.deallocate(live.ptr, live.layout) };
        }
    }
    if free_some {
        // Overflow one class's cache: flushes, then a second slab.
        let l = Layout::from_size_align(100, 4).unwrap();
        let many: Vec<_> = (0..rng.range(300, 1500))
            .map(|_| arena.allocate(l).unwrap())
            .collect();
        for b in many {
            // SAFETY: allocated just above with `l`.
            unsafe { arena.deallocate(b.cast(), l) };
        }
    }
    let mut v = allocator_api2::vec::Vec::new_in(&arena);
    v.extend(0..rng.range(0, 500) as u64);
    shadow.verify_all();
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
}

#[test]
fn clean_requests_reuse_the_spare() {
    let mut rng = Rng::new(1);
    for _ in 0..scaled(2000) {
        request(&mut rng, 32, 1024, false);
    }
}

#[test]
fn dirty_requests_reset_fully() {
    let mut rng = Rng::new(2);
    for round in 0..if cfg!(miri) { 3 } else { 500 } {
        // Many blocks of one class overflow the cache (flushes), big ones
        // take spans and huge mappings, frees reuse blocks.
        let (max, n) = [
            (1024, if cfg!(miri) { 40 } else { 600 }),
            (64 << 10, 40),
            (crate::cap(2 << 20), 4),
        ][round % 3];
        let n = rng.range(1, n);
        request(&mut rng, n, max, true);
    }
}

#[test]
fn arena_dropped_on_another_thread_is_not_recycled_there() {
    let mut rng = Rng::new(3);
    for _ in 0..scaled(100) {
        let arena = SmallMidArena::new();
        let l = Layout::from_size_align(rng.range(1, 1024), 8).unwrap();
        let b = arena.allocate(l).unwrap();
        // SAFETY: a fresh block of `l.size()` bytes.
        unsafe { b.cast::<u8>().as_ptr().write_bytes(1, l.size()) };
        std::thread::spawn(move || drop(arena)).join().unwrap();
        request(&mut rng, 16, 1024, false);
    }
}
