//! Many threads per arena, many arenas per thread, threads and arenas ending
//! in every order.

use crate::shadow::Shadow;
use crate::{scaled, Rng};
use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::SmallMidArena;
use std::sync::{mpsc, Arc, Barrier, Mutex};

/// A block to send to another thread.
struct Block(NonNull<u8>, Layout, u8);
// SAFETY: a block is plain memory owned by whoever holds this value.
unsafe impl Send for Block {}

fn fill(arena: &SmallMidArena, layout: Layout, v: u8) -> Block {
    let p = arena.allocate(layout).unwrap().cast::<u8>();
    // SAFETY: fresh block of `layout.size()` bytes.
    unsafe { p.as_ptr().write_bytes(v, layout.size()) };
    Block(p, layout, v)
}

fn check_and_free(arena: &SmallMidArena, b: Block) {
    // SAFETY: the block is live, owned by us, `b.1.size()` long.
    let bytes = unsafe { core::slice::from_raw_parts(b.0.as_ptr(), b.1.size()) };
    // Miri interprets every byte compared: check both ends there.
    let n = bytes.len();
    let ends = if cfg!(miri) && n > 64 {
        [&bytes[..32], &bytes[n - 32..]]
    } else {
        [bytes, &[][..]]
    };
    assert!(
        ends.iter().all(|e| e.iter().all(|&x| x == b.2)),
        "block contents changed across threads"
    );
    // SAFETY: allocated from `arena` with `b.1`.
    unsafe { arena.deallocate(b.0, b.1) };
}

#[test]
fn shared_arena_cross_frees() {
    let arena = Arc::new(SmallMidArena::new());
    let threads = 4;
    let pools: Vec<_> = (0..threads)
        .map(|_| Mutex::new(Vec::<Block>::new()))
        .collect();
    let pools = Arc::new(pools);
    let barrier = Arc::new(Barrier::new(threads));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (arena, pools, barrier) = (arena.clone(), pools.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(t as u64 + 100);
                barrier.wait();
                for i in 0..scaled(20_000) {
                    let size = rng.range(1, 2048);
                    let b = fill(
                        &arena,
                        Layout::from_size_align(size, 8).unwrap(),
                        (i % 251) as u8,
                    );
                    pools[rng.range(0, threads - 1)].lock().unwrap().push(b);
                    if let Some(b) = pools[t].lock().unwrap().pop() {
                        check_and_free(&arena, b);
                    }
                }
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    for p in pools.iter() {
        for b in p.lock().unwrap().drain(..) {
            check_and_free(&arena, b);
        }
    }
}

#[test]
fn producer_consumer_handoff() {
    let arena = Arc::new(SmallMidArena::new());
    let (tx, rx) = mpsc::sync_channel::<Vec<Block>>(16);
    let producer = {
        let arena = arena.clone();
        std::thread::spawn(move || {
            let mut rng = Rng::new(5);
            for batch in 0..scaled(2_000) {
                let v = (0..64)
                    .map(|_| {
                        fill(
                            &arena,
                            Layout::from_size_align(rng.range(256, 1024), 8).unwrap(),
                            batch as u8,
                        )
                    })
                    .collect();
                tx.send(v).unwrap();
            }
        })
    };
    let consumer = {
        let arena = arena.clone();
        std::thread::spawn(move || {
            for v in rx {
                v.into_iter().for_each(|b| check_and_free(&arena, b));
            }
        })
    };
    producer.join().unwrap();
    consumer.join().unwrap();
    // Everything came back: a long run must not keep growing.
    assert!(arena.stats().superslabs <= 8, "{}", arena.stats());
}

#[test]
fn threads_exit_while_arena_lives() {
    let arena = Arc::new(SmallMidArena::new());
    let mut kept = Vec::new();
    for round in 0..scaled(50) {
        let a = arena.clone();
        let h = std::thread::spawn(move || {
            let mut shadow = Shadow::default();
            let mut rng = Rng::new(round as u64);
            for _ in 0..200 {
                let l = Layout::from_size_align(rng.range(1, 4096), 8).unwrap();
                shadow.insert(a.allocate(l).unwrap(), l, round as u8);
            }
            let keep = Block(
                a.allocate(Layout::new::<u64>()).unwrap().cast(),
                Layout::new::<u64>(),
                0,
            );
            shadow.free_all(&*a); // fills this thread's cache; exit returns it
            keep
        });
        let b = h.join().unwrap();
        // SAFETY: a live u64 block.
        unsafe { b.0.as_ptr().write_bytes(0, 8) };
        kept.push(b);
    }
    // The exited threads' caches went back: the arena did not grow per thread.
    assert!(arena.stats().superslabs <= 4, "{}", arena.stats());
    kept.into_iter().for_each(|b| check_and_free(&arena, b));
}

#[test]
fn arenas_dropped_while_threads_live() {
    let (tx, rx) = mpsc::channel::<Arc<SmallMidArena>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        for a in rx {
            let v = allocator_api2::vec::Vec::<u8, _>::with_capacity_in(300, &*a);
            drop(v);
            drop(a);
            done_tx.send(()).unwrap();
        }
        // Still alive after the arenas it used are gone: use a new one.
        let fresh = SmallMidArena::new();
        let v = allocator_api2::vec::Vec::<u8, _>::with_capacity_in(300, &fresh);
        assert!(v.capacity() >= 300);
    });
    for _ in 0..scaled(100) {
        let a = Arc::new(SmallMidArena::new());
        tx.send(a.clone()).unwrap();
        done_rx.recv().unwrap();
        drop(a); // the worker's cache slot lives in this arena; it goes too
    }
    drop(tx);
    worker.join().unwrap();
}

#[test]
fn many_arenas_per_thread() {
    let arenas: Vec<_> = (0..20).map(|_| SmallMidArena::new()).collect();
    let mut rng = Rng::new(3);
    let mut live: Vec<(usize, Block)> = Vec::new();
    for i in 0..scaled(20_000) {
        let a = rng.range(0, arenas.len() - 1);
        live.push((
            a,
            fill(
                &arenas[a],
                Layout::from_size_align(rng.range(1, 1500), 8).unwrap(),
                i as u8,
            ),
        ));
        if rng.range(0, 2) == 0 {
            let (a, b) = live.swap_remove(rng.range(0, live.len() - 1));
            check_and_free(&arenas[a], b);
        }
    }
    for (a, b) in live {
        check_and_free(&arenas[a], b);
    }
}
