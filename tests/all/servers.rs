//! Servers at scale: `reset()` whichever threads used the arena, arenas
//! that hop threads, `SharedArena` in `'static` threads, thread exits
//! beside many live arenas.

use crate::shadow::Shadow;
use crate::{scaled, Rng};
use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;
use core::alloc::Layout;
use smallmid::{SharedArena, SmallMidArena};
use std::sync::mpsc;

fn layout(rng: &mut Rng) -> Layout {
    Layout::from_size_align(rng.range(1, 1500), 1 << rng.range(0, 5)).unwrap()
}

/// Blocks as plain addresses, to move between threads.
type Sent = Vec<(usize, Layout)>;

#[test]
fn reset_after_many_threads_frees_everything_and_serves_again() {
    let mut arena = SmallMidArena::new();
    let mut rng = Rng::new(11);
    for round in 0..scaled(20) {
        // Four threads allocate (some blocks stay live), free some, exit.
        let live: Vec<Sent> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4u64)
                .map(|t| {
                    let a = &arena;
                    s.spawn(move || {
                        let mut rng = Rng::new(round as u64 * 10 + t);
                        let mut kept = Vec::new();
                        for i in 0..200 {
                            let l = layout(&mut rng);
                            let p = a.allocate(l).unwrap().cast::<u8>();
                            if i % 3 == 0 {
                                // SAFETY: allocated just above with `l`.
                                unsafe { a.deallocate(p, l) };
                            } else {
                                kept.push((p.as_ptr() as usize, l));
                            }
                        }
                        kept
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(arena.stats().blocks_in_use > 0);
        // The threads' exits may still be returning their caches: reset
        // detaches them either way.
        drop(live);
        arena.reset();
        let s = arena.stats();
        assert_eq!((s.blocks_in_use, s.bytes_in_use), (0, 0), "{s}");
        assert!(s.thread_caches <= 1, "{s}");
        arena.flush_thread_cache();
        assert_eq!(arena.audit().blocks_out, 0);
        // Serves again, on this thread and others, with no overlap.
        let mut shadow = Shadow::default();
        for i in 0..100 {
            let l = layout(&mut rng);
            shadow.insert(arena.allocate(l).unwrap(), l, i as u8);
        }
        shadow.verify_all();
        shadow.free_all(&arena);
    }
}

#[test]
fn reset_keeps_memory_warm() {
    let mut arena = SmallMidArena::new();
    let mut v = AVec::new_in(&arena);
    v.extend(0..10_000u64);
    drop(v);
    let (held, superslabs) = (arena.stats().bytes_held, arena.stats().superslabs);
    for _ in 0..scaled(1000) {
        let mut v = AVec::new_in(&arena);
        v.extend(0..100u64);
        drop(v);
        arena.reset();
        // Arena-local counts: other tests in this binary map memory too.
        let s = arena.stats();
        assert!(s.bytes_held <= held && s.superslabs <= superslabs, "{s}");
    }
}

#[test]
fn arenas_hopping_threads_are_recycled() {
    let (tx, rx) = mpsc::sync_channel::<(SmallMidArena, Sent, u8)>(64);
    let n = scaled(4000);
    let consumer = std::thread::spawn(move || {
        let mut rng = Rng::new(5);
        for (arena, blocks, fill) in rx {
            for &(p, l) in &blocks {
                // SAFETY: live blocks of `l.size()` bytes filled with `fill`.
                let bytes = unsafe { core::slice::from_raw_parts(p as *const u8, l.size()) };
                assert!(bytes.iter().all(|&b| b == fill), "block changed in transit");
            }
            let mut shadow = Shadow::default();
            for i in 0..16 {
                let l = layout(&mut rng);
                shadow.insert(arena.allocate(l).unwrap(), l, i);
            }
            for &(p, l) in &blocks {
                // SAFETY: as above: still intact after the new blocks.
                let bytes = unsafe { core::slice::from_raw_parts(p as *const u8, l.size()) };
                assert!(bytes.iter().all(|&b| b == fill), "a new block overlapped");
            }
            let mut v = AVec::new_in(&arena);
            v.extend(0..100u64);
            drop((v, shadow));
            drop(arena); // on this thread: reset and kept for any thread
        }
    });
    let mut rng = Rng::new(6);
    for r in 0..n {
        let arena = SmallMidArena::new();
        let fill = r as u8;
        let blocks: Sent = (0..16)
            .map(|_| {
                let l = layout(&mut rng);
                let p = arena.allocate(l).unwrap().cast::<u8>();
                // SAFETY: a fresh block of `l.size()` bytes.
                unsafe { p.as_ptr().write_bytes(fill, l.size()) };
                (p.as_ptr() as usize, l)
            })
            .collect();
        tx.send((arena, blocks, fill)).unwrap();
    }
    drop(tx);
    consumer.join().unwrap();
}

#[test]
fn shared_arena_in_static_threads() {
    let arena = SharedArena::new();
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let a = arena.clone();
            std::thread::spawn(move || {
                let mut v: AVec<u64, SharedArena> = AVec::new_in(a.clone());
                v.extend(0..1000 * (t + 1));
                v // 'static: outlives the thread, owns a handle
            })
        })
        .collect();
    let vecs: Vec<AVec<u64, SharedArena>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(arena.handles(), 5);
    for (t, v) in vecs.iter().enumerate() {
        assert_eq!(v.len() as u64, 1000 * (t as u64 + 1));
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    }
    assert_eq!(arena.stats().blocks_in_use, 4);
    drop(vecs);
    assert_eq!(arena.stats().blocks_in_use, 0);
    // The last handle may go on another thread, which recycles the arena
    // as its spare: its next `new()` is the same arena (Debug shows the
    // state's address).
    let before = format!("{:?}", *arena);
    let same = std::thread::spawn(move || {
        drop(arena);
        format!("{:?}", SmallMidArena::new()) == before
    })
    .join()
    .unwrap();
    assert!(same, "the last handle's drop did not recycle the arena");
}

#[test]
fn thread_exits_beside_many_live_arenas() {
    let arenas: Vec<SmallMidArena> = (0..scaled(500))
        .map(|_| {
            let a = SmallMidArena::new();
            a.reserve(1).unwrap(); // grown: past its seed (the held block is in a cache)
            a
        })
        .collect();
    let held: Vec<_> = arenas
        .iter()
        .map(|a| a.allocate(Layout::new::<[u64; 4]>()).unwrap())
        .collect();
    for t in 0..scaled(200) {
        let a = &arenas[t * 7 % arenas.len()];
        std::thread::scope(|s| {
            s.spawn(|| {
                let l = Layout::from_size_align(300, 8).unwrap();
                let blocks: Vec<_> = (0..50).map(|_| a.allocate(l).unwrap()).collect();
                for b in blocks {
                    // SAFETY: allocated just above with `l`.
                    unsafe { a.deallocate(b.cast(), l) };
                }
            });
        });
    }
    for (a, b) in arenas.iter().zip(held) {
        assert_eq!(a.stats().blocks_in_use, 1);
        // Scoped threads may still be running their exits: wait (bounded).
        let t0 = std::time::Instant::now();
        while a.stats().thread_caches > 1 && t0.elapsed().as_secs() < 20 {
            std::thread::yield_now();
        }
        assert_eq!(
            a.stats().thread_caches,
            1,
            "an exited thread's cache stayed"
        );
        // SAFETY: allocated above with this layout.
        unsafe { a.deallocate(b.cast(), Layout::new::<[u64; 4]>()) };
    }
}

/// A clean reset after blocks of many sizes zeroes every class's counters
/// at once (one pass over the table, not class by class): nothing stays
/// counted, and the next round counts from zero.
#[test]
fn reset_after_many_sizes_zeroes_every_count() {
    let mut arena = SmallMidArena::new();
    arena.reserve(1).unwrap(); // past the seed: this thread's cache serves
    for round in 1..=3u64 {
        let sizes: Vec<usize> = (1..=24).map(|k| k * 40).collect();
        for &s in &sizes {
            for _ in 0..round {
                let l = Layout::from_size_align(s, 8).unwrap();
                let p = arena.allocate(l).unwrap().cast::<u8>();
                // SAFETY: a fresh block of `s` bytes.
                unsafe { p.as_ptr().write_bytes(round as u8, s) };
            }
        }
        let s = arena.stats();
        let allocs: u64 = s.classes.iter().map(|c| c.allocs).sum();
        assert_eq!((s.blocks_in_use, allocs), (24 * round, 24 * round), "{s}");
        arena.reset();
        let s = arena.stats();
        assert!(
            s.classes
                .iter()
                .all(|c| c.allocs == 0 && c.frees == 0 && c.refills == 0),
            "{s}"
        );
        assert_eq!(s.blocks_in_use, 0, "{s}");
    }
}
