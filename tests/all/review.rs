//! Regression tests for the review's engine defects (issue 10): each shape
//! failed before its fix.

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::SmallMidArena;
use std::sync::{Arc, Barrier};

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Defect 1: `audit()` (every lock of the arena) while another thread
/// takes fresh slabs for new classes. Under miri this was a data race
/// (`.ci/run` runs it with several seeds).
#[test]
fn audit_races_fresh_slabs() {
    let rounds = if cfg!(miri) { 1 } else { 50 };
    for _ in 0..rounds {
        let arena = Arc::new(SmallMidArena::new());
        let a2 = arena.clone();
        let t = std::thread::spawn(move || {
            let blocks: Vec<_> = [24, 200, 700, 1500, 3000, 9000]
                .iter()
                .map(|&s| (a2.allocate(layout(s)).unwrap(), layout(s)))
                .collect();
            for (b, l) in blocks {
                // SAFETY: allocated just above with `l`.
                unsafe { a2.deallocate(b.cast(), l) };
            }
        });
        for _ in 0..3 {
            let _ = arena.audit();
            let _ = arena.stats();
        }
        t.join().unwrap();
        assert_eq!(arena.audit().blocks_out, 0);
    }
}

/// Defect 2a: a block freed into this thread's cache must not keep a
/// limited arena from serving a large block: freeing makes room again.
#[test]
fn freed_blocks_in_the_cache_do_not_defeat_the_limit() {
    let arena = SmallMidArena::builder().memory_limit(1 << 20).build();
    let b = arena.allocate(layout(8)).unwrap();
    // SAFETY: allocated just above.
    unsafe { arena.deallocate(b.cast(), layout(8)) };
    let big = layout(960 << 10);
    let p = arena
        .allocate(big)
        .expect("no live block, yet 960 KiB refused in a 1 MiB arena");
    // SAFETY: allocated just above.
    unsafe { arena.deallocate(p.cast(), big) };
}

/// Defect 2b: live threads each holding one small block must not use up a
/// limited arena's free slabs between them.
#[test]
fn threads_holding_one_block_each_fit_a_small_limit() {
    const THREADS: usize = 8;
    let arena = Arc::new(SmallMidArena::builder().memory_limit(1 << 20).build());
    let hold = Arc::new(Barrier::new(THREADS + 1));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (a, hold) = (arena.clone(), hold.clone());
            std::thread::spawn(move || {
                let b = a.allocate(layout(8));
                hold.wait(); // everyone holds a block at once
                hold.wait();
                if let Ok(b) = b {
                    // SAFETY: allocated above.
                    unsafe { a.deallocate(b.cast(), layout(8)) };
                }
                b.is_ok()
            })
        })
        .collect();
    hold.wait();
    hold.wait();
    let ok = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&ok| ok)
        .count();
    assert_eq!(ok, THREADS, "a thread's first 8-byte block was refused");
}

/// Defect 3: caches of exited threads must not pin slabs: held memory
/// follows the live set, not peak threads x arenas.
#[test]
fn exited_threads_do_not_pin_memory() {
    let arenas: Vec<_> = (0..if cfg!(miri) { 2 } else { 8 })
        .map(|_| SmallMidArena::builder().memory_limit(4 << 20).build())
        .collect();
    let floor: Vec<u64> = arenas.iter().map(|a| a.stats().bytes_held).collect();
    let arenas = Arc::new(arenas);
    // Spawned and joined (not scoped): std's join waits for the thread's
    // thread-local destructors, which retire its caches.
    let threads: Vec<_> = (0..if cfg!(miri) { 2 } else { 8 })
        .map(|_| {
            let arenas = arenas.clone();
            std::thread::spawn(move || {
                for a in arenas.iter() {
                    for size in [16, 64, 256, 512, 1024, 2048, 4000, 8000, 16000, 30000] {
                        let b = a.allocate(layout(size)).unwrap();
                        // SAFETY: allocated just above.
                        unsafe { a.deallocate(b.cast(), layout(size)) };
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for (a, floor) in arenas.iter().zip(floor) {
        let s = a.stats();
        assert_eq!(s.blocks_in_use, 0);
        assert_eq!(a.audit().blocks_out, 0, "blocks stranded in exited caches");
        assert!(
            s.bytes_held <= floor + (1 << 20),
            "{} bytes held after every thread exited (floor {floor})",
            s.bytes_held
        );
        let big = layout(960 << 10);
        let p = a
            .allocate(big)
            .expect("exited threads' caches pin the limit");
        // SAFETY: allocated just above.
        unsafe { a.deallocate(p.cast(), big) };
    }
}

/// Defect 4: blocks allocated through the orphan path (a thread whose
/// thread-locals are being destroyed) must not show up as live in the
/// arenas recycled after it.
#[test]
fn orphan_blocks_do_not_survive_recycling() {
    struct Late(Arc<SmallMidArena>, Arc<std::sync::Mutex<Vec<usize>>>);
    impl Drop for Late {
        fn drop(&mut self) {
            // Runs after the engine's own thread-local is gone: orphan path.
            let mut out = self.1.lock().unwrap();
            for i in 0..50 {
                let size = [24, 200, 700][i % 3];
                out.push(self.0.allocate(layout(size)).unwrap().cast::<u8>().as_ptr() as usize);
            }
        }
    }
    std::thread_local! { static LATE: std::cell::RefCell<Option<Late>> = const { std::cell::RefCell::new(None) }; }
    let arena = Arc::new(SmallMidArena::new());
    let blocks = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let (a, b) = (arena.clone(), blocks.clone());
        std::thread::spawn(move || {
            // Registered before the engine's guard, so destroyed after it.
            LATE.with(|l| *l.borrow_mut() = Some(Late(a, b)));
            // Another arena registers the engine's thread-local guard.
            let other = SmallMidArena::new();
            other.allocate(layout(8)).unwrap();
        })
        .join()
        .unwrap();
    }
    // The blocks stay live in the arena; it is dropped with them.
    assert_eq!(blocks.lock().unwrap().len(), 50);
    let arena = Arc::into_inner(arena).unwrap();
    let _ = arena.allocate(layout(24)).unwrap(); // this thread uses it too
    drop(arena);
    for _ in 0..2 {
        let a = SmallMidArena::new();
        let _ = a.allocate(layout(200)).unwrap();
        drop(a);
    }
    let fresh = SmallMidArena::new();
    assert_eq!(fresh.stats().blocks_in_use, 0, "{}", fresh.stats());
    fresh.flush_thread_cache(); // its whole-slab bump ranges count as out
    assert_eq!(fresh.audit().blocks_out, 0);
}
