//! Hostile: thread indices in the slot chunks and past the table.

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::SmallMidArena;
use std::sync::{Arc, Barrier};

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

#[test]
fn chunks_and_past_table_churn() {
    smallmid::test_hooks::first_thread_index(4096 - 6);
    for round in 0..60 {
        let mut arena = SmallMidArena::new();
        // SAFETY: the arena outlives the spawned thread, which is joined before the arena is dropped.
        let aref: &'static SmallMidArena = unsafe { &*(&arena as *const SmallMidArena) };
        let n = 10; // 6 with caches (chunk 63), 4 past the table
        let bar = Arc::new(Barrier::new(n + 1));
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let bar = bar.clone();
                std::thread::spawn(move || {
                    let other = SmallMidArena::new();
                    let mut v = Vec::new();
                    for j in 0..40 {
                        let s = [24, 200, 700, 3000][(i + j) % 4];
                        v.push((aref.allocate(layout(s)).unwrap(), s));
                        let q = other.allocate(layout(s)).unwrap();
                        // SAFETY: a live block of this arena, allocated with this layout, freed once.
                        unsafe { other.deallocate(q.cast(), layout(s)) };
                    }
                    for (p, s) in v.drain(..20) {
                        // SAFETY: a live block of this arena, allocated with this layout, freed once.
                        unsafe { aref.deallocate(p.cast(), layout(s)) };
                    }
                    let keep: Vec<(usize, usize)> = v
                        .into_iter()
                        .map(|(p, s)| (p.cast::<u8>().as_ptr() as usize, s))
                        .collect();
                    bar.wait();
                    drop(other);
                    keep
                })
            })
            .collect();
        bar.wait();
        if round % 2 == 0 {
            // reset while threads exit
            arena.reset();
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(arena.stats().blocks_in_use, 0, "{}", arena.stats());
        } else {
            let mut all = Vec::new();
            for h in hs {
                all.extend(h.join().unwrap());
            }
            let s = arena.stats();
            assert_eq!(s.blocks_in_use, all.len() as u64, "{s}");
            for (p, s) in all {
                // SAFETY: a live block of this arena, allocated with this layout, freed once.
                unsafe {
                    arena.deallocate(core::ptr::NonNull::new(p as *mut u8).unwrap(), layout(s))
                };
            }
            assert_eq!(arena.stats().blocks_in_use, 0, "{}", arena.stats());
            arena.flush_thread_cache();
            assert_eq!(arena.audit().blocks_out, 0);
        }
        let _ = arena.audit();
        drop(arena);
    }
    assert!(
        smallmid::global_stats().threads <= 1,
        "{}",
        smallmid::global_stats()
    );
}
