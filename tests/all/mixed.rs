//! Mixed slabs: an arena's first small blocks of many sizes share one slab
//! (bump order), freed blocks return from any thread, and the slab goes
//! back to the pool once every byte of it is back.

use crate::shadow::Shadow;
use crate::{scaled, Rng};
use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::SmallMidArena;

const SLAB: usize = 64 << 10;

#[test]
fn small_blocks_of_many_sizes_share_one_slab() {
    let arena = SmallMidArena::new();
    arena.reserve(1).unwrap(); // grown: past its seed
    let mut rng = Rng::new(1);
    let mut shadow = Shadow::default();
    for _ in 0..32 {
        let l = Layout::from_size_align(rng.range(16, 1024), 8).unwrap();
        shadow.insert(arena.allocate(l).unwrap(), l, 7);
    }
    let slabs: std::collections::BTreeSet<usize> =
        shadow.addresses().iter().map(|a| a / SLAB).collect();
    assert_eq!(slabs.len(), 1, "32 mixed-size blocks spread over {slabs:?}");
    let au = arena.audit();
    assert_eq!((au.mixed_slabs, au.class_slabs), (1, 0), "{au:?}");
    shadow.verify_all();
    arena.flush_thread_cache();
    assert_eq!(arena.audit().blocks_out, 32);
    shadow.free_all(&arena);
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
}

#[test]
fn carved_blocks_keep_every_alignment() {
    let arena = SmallMidArena::new();
    let mut rng = Rng::new(2);
    let mut shadow = Shadow::default();
    for _ in 0..scaled(2000).max(50) {
        let align = 1 << rng.range(0, 10);
        let l = Layout::from_size_align(rng.range(1, 1024), align).unwrap();
        let p = arena.allocate(l).unwrap();
        assert_eq!(p.cast::<u8>().as_ptr() as usize % align, 0, "{l:?}");
        shadow.insert(p, l, rng.next_u64() as u8);
        if rng.range(0, 2) == 0 {
            let b = shadow.take_nth(rng.range(0, shadow.len() - 1)).unwrap();
            // SAFETY: allocated from `arena` with this layout.
            unsafe { arena.deallocate(b.ptr, b.layout) };
        }
    }
    shadow.verify_all();
    shadow.free_all(&arena);
    arena.flush_thread_cache();
    assert_eq!(arena.audit().blocks_out, 0);
}

#[test]
fn mixed_blocks_freed_on_other_threads_return_the_slab() {
    let arena = SmallMidArena::new();
    let mut rng = Rng::new(3);
    let blocks: Vec<(usize, Layout)> = (0..scaled(200_000).min(200))
        .map(|_| {
            let l = Layout::from_size_align(rng.range(8, 1024), 8).unwrap();
            (arena.allocate(l).unwrap().cast::<u8>().as_ptr() as usize, l)
        })
        .collect();
    let held = arena.stats().superslabs;
    // Half freed by one thread, half by another; both exit (their caches
    // flush to the mixed slab).
    std::thread::scope(|s| {
        for half in blocks.chunks(blocks.len().div_ceil(2)) {
            let a = &arena;
            s.spawn(move || {
                for &(p, l) in half {
                    let p = core::ptr::NonNull::new(p as *mut u8).unwrap();
                    // SAFETY: allocated from `a` with `l`, freed once.
                    unsafe { a.deallocate(p, l) };
                }
                a.flush_thread_cache();
            });
        }
    });
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
    // The memory serves again, and the arena did not grow.
    let l = Layout::new::<[u8; 512]>();
    let p = arena.allocate(l).unwrap();
    assert_eq!(arena.stats().superslabs, held);
    // SAFETY: allocated just above.
    unsafe { arena.deallocate(p.cast(), l) };
}

#[test]
fn long_lived_blocks_pin_a_bounded_number_of_mixed_slabs() {
    let arena = SmallMidArena::new();
    let mut kept = Vec::new();
    for t in 0..scaled(16_000).min(16) as u64 {
        // Each thread takes a mixed range, keeps one block of it, exits.
        let (p, l) = std::thread::scope(|s| {
            s.spawn(|| {
                let l = Layout::new::<u64>();
                let mut rng = Rng::new(t);
                let tmp: Vec<_> = (0..scaled(50_000).min(50))
                    .map(|_| {
                        let l = Layout::from_size_align(rng.range(8, 1024), 8).unwrap();
                        (arena.allocate(l).unwrap(), l)
                    })
                    .collect();
                let p = arena.allocate(l).unwrap().cast::<u8>().as_ptr() as usize;
                for (b, l) in tmp {
                    // SAFETY: allocated above with `l`.
                    unsafe { arena.deallocate(b.cast(), l) };
                }
                arena.flush_thread_cache();
                (p, l)
            })
            .join()
            .unwrap()
        });
        kept.push((p, l));
    }
    let au = arena.audit();
    assert!(au.mixed_slabs <= 8, "{au:?}"); // the pool's bound (MAX_MIXED)
    for (p, l) in kept {
        // SAFETY: allocated by a thread above with `l`, freed once.
        unsafe { arena.deallocate(core::ptr::NonNull::new(p as *mut u8).unwrap(), l) };
    }
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
}

/// Freed huge blocks' mappings go to the process-wide huge cache and come
/// back to the next arena: every byte usable, the header rewritten (ASan
/// checks the poisoning in CI), limits still exact.
#[test]
fn huge_mappings_come_back_to_other_arenas() {
    for round in 0..scaled(4000).min(4) as u8 {
        let a = SmallMidArena::new();
        let l = Layout::from_size_align((3 << 20) + round as usize * 4096, 4096).unwrap();
        let p = a.allocate(l).unwrap();
        assert!(p.len() >= l.size());
        // SAFETY: a fresh block of at least `l.size()` bytes.
        unsafe {
            let b = p.cast::<u8>().as_ptr();
            // The whole block natively; its ends under miri (slow there).
            if cfg!(miri) {
                b.write_bytes(round, 4096);
                b.add(l.size() - 4096).write_bytes(round, 4096);
            } else {
                b.write_bytes(round, l.size());
            }
            assert_eq!(*b.add(l.size() - 1), round);
            a.deallocate(p.cast(), l);
        }
        // Under a 2 MiB limit no cached 3 MiB mapping is handed out.
        let small = SmallMidArena::builder().memory_limit(2 << 20).build();
        assert!(small.allocate(l).is_err());
    }
}

#[test]
fn the_last_carved_block_grows_and_shrinks_in_place() {
    // Classes of 40, 56 and 80 bytes need 8, 8 and 16-byte alignment: a
    // block at the carve point grows in place while its address has the
    // new class's alignment, and moves (contents kept) when it has not.
    let arena = SmallMidArena::new();
    arena.reserve(1).unwrap(); // grown: past its seed
    let l = |n| Layout::from_size_align(n, 8).unwrap();
    let keep = arena.allocate(l(8)).unwrap(); // the range's first block
    let b = arena.allocate(l(40)).unwrap().cast::<u8>();
    // SAFETY: a live 40-byte block.
    unsafe { b.as_ptr().write_bytes(9, 40) };
    // SAFETY: live with layout l(40).
    let g = unsafe { arena.grow(b, l(40), l(56)) }.unwrap();
    assert_eq!(g.cast::<u8>(), b, "40 -> 56 at the tail moved");
    assert_eq!(g.len(), 56);
    // SAFETY: live with layout l(56).
    let s = unsafe { arena.shrink(b, l(56), l(40)) }.unwrap();
    assert_eq!(s.cast::<u8>(), b, "56 -> 40 at the tail moved");
    let next = arena.allocate(l(8)).unwrap().cast::<u8>();
    assert_eq!(
        next.as_ptr() as usize,
        b.as_ptr() as usize + 40,
        "shrunk bytes not back"
    );
    // No longer at the tail: growing copies.
    // SAFETY: live with layout l(40).
    let m = unsafe { arena.grow(b, l(40), l(80)) }.unwrap().cast::<u8>();
    assert_ne!(m, b);
    // SAFETY: the moved block keeps the first 40 bytes.
    assert!(unsafe { core::slice::from_raw_parts(m.as_ptr(), 40) }
        .iter()
        .all(|&x| x == 9));
    let aligned16 = m.as_ptr() as usize % 16 == 0;
    // At the tail again: grows in place iff aligned for 112 (16).
    // SAFETY: live with layout l(80).
    let g = unsafe { arena.grow(m, l(80), l(112)) }
        .unwrap()
        .cast::<u8>();
    assert_eq!(g == m, aligned16);
    assert_eq!(arena.stats().blocks_in_use, 3);
    // SAFETY: live blocks with these layouts.
    unsafe {
        arena.deallocate(g, l(112));
        arena.deallocate(next, l(8));
        arena.deallocate(keep.cast(), l(8));
    }
    // A growing Vec keeps its contents whether it moves or not.
    let mut v = allocator_api2::vec::Vec::<u64, _>::new_in(&arena);
    v.extend(0..300);
    assert!(v.iter().copied().eq(0..300));
    drop(v);
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
}

#[test]
fn tail_growth_is_this_threads_only() {
    // Another thread's tail: the block is not at this thread's carve point,
    // so growing it here copies.
    let arena = SmallMidArena::new();
    let l = Layout::from_size_align(64, 8).unwrap();
    let b = std::thread::scope(|s| {
        s.spawn(|| arena.allocate(l).unwrap().cast::<u8>().as_ptr() as usize)
            .join()
            .unwrap()
    });
    let b = core::ptr::NonNull::new(b as *mut u8).unwrap();
    // SAFETY: a live 64-byte block of `arena`.
    unsafe { b.as_ptr().write_bytes(5, 64) };
    let own = arena.allocate(l).unwrap(); // this thread's range, tail here
                                          // SAFETY: `b` is live with layout `l`.
    let g = unsafe { arena.grow(b, l, Layout::from_size_align(128, 8).unwrap()) }.unwrap();
    assert_ne!(g.cast::<u8>(), b);
    assert_ne!(
        g.cast::<u8>().as_ptr() as usize,
        own.cast::<u8>().as_ptr() as usize
    );
    // SAFETY: the grown block holds the first 64 bytes.
    assert!(
        unsafe { core::slice::from_raw_parts(g.cast::<u8>().as_ptr(), 64) }
            .iter()
            .all(|&x| x == 5)
    );
    // SAFETY: live blocks with these layouts.
    unsafe {
        arena.deallocate(g.cast(), Layout::from_size_align(128, 8).unwrap());
        arena.deallocate(own.cast(), l);
    }
    arena.flush_thread_cache();
    assert_eq!(arena.audit().blocks_out, 0);
}

#[test]
fn an_allocation_burst_packs_into_mixed_slabs_not_a_slab_per_class() {
    // 500 blocks of 16..=1024 B (about 260 KB) with nothing freed: once
    // the first mixed range is used up, more mixed ranges follow instead
    // of a slab for each of ~30 classes (which held 1.5 MiB here).
    let arena = SmallMidArena::new();
    let mut rng = Rng::new(5);
    let mut shadow = Shadow::default();
    let n = scaled(500).max(12);
    let mut bytes = 0;
    for _ in 0..n {
        let l = Layout::from_size_align(rng.range(16, 1024), 8).unwrap();
        bytes += l.size();
        shadow.insert(arena.allocate(l).unwrap(), l, 3);
    }
    let au = arena.audit();
    assert_eq!(au.class_slabs, 0, "{bytes} B burst: {au:?}");
    // Class rounding and alignment cost at most half again.
    let slabs = arena.allocated_bytes() / SLAB;
    assert!(
        slabs <= (bytes * 3 / 2).div_ceil(SLAB),
        "{bytes} B burst held {slabs} slabs"
    );
    shadow.verify_all();
    shadow.free_all(&arena);
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
}

#[test]
fn a_range_whose_blocks_came_back_is_followed_by_class_slabs() {
    // Steady churn: blocks flushed back to the mixed slab mark it used, so
    // the next range is not another mixed slab (its freed blocks would
    // wait for the whole slab) but class slabs, whose blocks recycle.
    let arena = SmallMidArena::new();
    let mut rng = Rng::new(9);
    let mut live: Vec<(core::ptr::NonNull<[u8]>, Layout)> = Vec::new();
    for i in 0..scaled(4000).max(200) {
        let l = Layout::from_size_align(rng.range(16, 1024), 8).unwrap();
        live.push((arena.allocate(l).unwrap(), l));
        if i % 2 == 1 {
            let (p, l) = live.swap_remove(rng.range(0, live.len() - 1));
            // SAFETY: allocated above with `l`, freed once.
            unsafe { arena.deallocate(p.cast(), l) };
        }
        if i % 64 == 63 {
            arena.flush_thread_cache();
        }
    }
    assert!(arena.audit().mixed_slabs <= 2, "{:?}", arena.audit());
    for (p, l) in live {
        // SAFETY: as above.
        unsafe { arena.deallocate(p.cast(), l) };
    }
}
