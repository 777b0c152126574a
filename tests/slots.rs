//! The slot table: 16 inline slots, then chunks of 64 (and their table)
//! made on demand. Many threads alive at once in one arena get indices
//! across all three; each keeps its own cache, blocks cross threads, and
//! everything is accounted for afterwards.

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::SmallMidArena;
use std::sync::Barrier;

mod common;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

struct Sent(Vec<(usize, usize)>);

#[test]
fn threads_past_the_inline_slots_and_a_chunk() {
    let _g = common::serial();
    // 100 threads at once: indices 0..=100 or so, past the 16 inline slots
    // and the first chunk of 64 (whatever indices other tests hold).
    const N: usize = 100;
    let arena = SmallMidArena::new();
    drop(arena.alloc(0u64)); // this thread holds an index from here on
    let base_threads = smallmid::global_stats().threads;
    let bar = Barrier::new(N + 1);
    let sent: Vec<Sent> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..N)
            .map(|i| {
                let (a, bar) = (&arena, &bar);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for j in 0..60 {
                        let size = [16, 100, 300, 700, 1024, 5000][(i + j) % 6];
                        let p = a.allocate(layout(size)).unwrap().cast::<u8>().as_ptr();
                        // SAFETY: a fresh block of `size` bytes.
                        unsafe { p.write_bytes(i as u8, size) };
                        mine.push((p as usize, size));
                    }
                    bar.wait(); // every thread holds a cache now
                    bar.wait(); // the main thread counted them
                    for &(p, size) in &mine {
                        // SAFETY: written above; nobody else writes it.
                        let ok = unsafe {
                            core::slice::from_raw_parts(p as *const u8, size)
                                .iter()
                                .all(|&b| b == i as u8)
                        };
                        assert!(ok, "block of thread {i} overwritten");
                    }
                    let other = mine.split_off(30);
                    for (p, size) in mine {
                        // SAFETY: a live block of `a` with this layout, freed once.
                        unsafe {
                            a.deallocate(
                                core::ptr::NonNull::new(p as *mut u8).unwrap(),
                                layout(size),
                            )
                        };
                    }
                    Sent(other)
                })
            })
            .collect();
        bar.wait();
        let caches = arena.stats().thread_caches;
        assert!(caches >= N as u64, "{caches} caches for {N} threads");
        bar.wait();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(arena.stats().blocks_in_use, (N * 30) as u64);
    for Sent(v) in sent {
        for (p, size) in v {
            // SAFETY: live blocks of `arena` with this layout, freed once.
            unsafe {
                arena.deallocate(core::ptr::NonNull::new(p as *mut u8).unwrap(), layout(size))
            };
        }
    }
    let s = arena.stats();
    assert_eq!((s.blocks_in_use, s.bytes_in_use), (0, 0));
    // Blocks the threads freed stay in their caches until their exit
    // (after the scope's joins) returns them.
    common::settle(base_threads);
    arena.flush_thread_cache();
    assert_eq!(arena.audit().blocks_out, 0);
}

/// Arenas that hop threads go through the shared spares with only their
/// inline cache: the hopping thread's cache is freed there, after what it
/// held went back to the arena (nothing of it lost: every slab comes back
/// and the arenas keep no more SuperSlabs than they need).
#[test]
fn hopping_arenas_shed_their_second_cache_and_lose_nothing() {
    let _g = common::serial();
    struct Sent(SmallMidArena, Vec<(usize, usize)>);
    drop(SmallMidArena::new().alloc(0u64)); // this thread holds an index
    let before = smallmid::global_stats().superslabs_in_use;
    let base_threads = smallmid::global_stats().threads;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Sent>(64);
    std::thread::scope(|s| {
        s.spawn(move || {
            for Sent(a, first) in rx {
                let mut v = allocator_api2::vec::Vec::new_in(&a);
                v.extend(0..300u64);
                let more: Vec<_> = (0..16)
                    .map(|j| (a.allocate(layout(40 + 61 * j)).unwrap(), 40 + 61 * j))
                    .collect();
                for (p, size) in first.into_iter().take(8) {
                    // SAFETY: live blocks of `a` with this layout, freed once.
                    unsafe {
                        a.deallocate(core::ptr::NonNull::new(p as *mut u8).unwrap(), layout(size))
                    };
                }
                for (p, size) in more.into_iter().take(8) {
                    // SAFETY: as above.
                    unsafe { a.deallocate(p.cast(), layout(size)) };
                }
                assert_eq!(a.stats().blocks_in_use, 8 + 8 + 1);
                drop(v);
                drop(a);
            }
        });
        for i in 0..400 {
            let a = SmallMidArena::new();
            let first = (0..16)
                .map(|j| {
                    let size = 16 + (i * 7 + j * 97) % 1000;
                    (
                        a.allocate(layout(size)).unwrap().cast::<u8>().as_ptr() as usize,
                        size,
                    )
                })
                .collect();
            tx.send(Sent(a, first)).unwrap();
        }
        drop(tx);
    });
    common::settle(base_threads);
    // Arenas from the spares: whatever their caches held went back (an
    // idle cache freed with its ranges would leave them out for good).
    let arenas: Vec<_> = (0..80)
        .map(|_| {
            let a = SmallMidArena::new();
            a.reserve(1).unwrap(); // grown (new() takes a shared spare; a seed would grow into one)
            a
        })
        .collect();
    for a in &arenas {
        let s = a.stats();
        assert_eq!(s.blocks_in_use, 0);
        assert_eq!(a.audit().blocks_out, 0, "{s}");
        assert_eq!(s.superslabs, 1, "{s}");
    }
    drop(arenas);
    let after = smallmid::global_stats().superslabs_in_use;
    assert!(
        after <= before + 200,
        "{before} -> {after} SuperSlabs in use"
    );
}
