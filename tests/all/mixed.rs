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
    assert!(au.mixed_slabs <= 4, "{au:?}");
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
