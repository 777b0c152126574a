//! Hostile review 11: the arena's life across threads, and memory coming
//! back: recycled spares (own and shared) carrying nothing of their past
//! life, stats exactness after resets, recycling, exits and cross-thread
//! frees, memory limits holding exactly and being fully usable again,
//! decommit never touching live blocks, many threads exiting while an
//! arena goes, huge blocks resized and freed across threads.
#![cfg(not(miri))]

mod common;
use common::*;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::{global_stats, SharedArena, SmallMidArena};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};

fn pat(seed: usize, i: usize) -> u8 {
    (seed.wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 8)) as u8
}

fn fill(p: *mut u8, n: usize, seed: usize) {
    for i in 0..n {
        // SAFETY: the range is inside a live block the test owns.
        unsafe { p.add(i).write(pat(seed, i)) };
    }
}

#[track_caller]
fn verify(p: *const u8, n: usize, seed: usize, what: &str) {
    for i in 0..n {
        // SAFETY: the range is inside a live block the test owns.
        let v = unsafe { p.add(i).read() };
        assert_eq!(v, pat(seed, i), "{what}: byte {i} of {n} at {p:p} changed");
    }
}

/// A pointer that may cross threads (tests only).
#[derive(Clone, Copy)]
struct P(*mut u8);
// SAFETY: a plain pointer wrapper; the pointee is only used while live (the test joins its threads first).
unsafe impl Send for P {}
impl P {
    fn g(self) -> *mut u8 {
        self.0
    }
}

/// An arena reference that may cross to threads that outlive no use of it.
#[derive(Clone, Copy)]
struct R(*const SmallMidArena);
// SAFETY: a plain pointer wrapper; the pointee is only used while live (the test joins its threads first).
unsafe impl Send for R {}
impl R {
    fn get(&self) -> &SmallMidArena {
        // SAFETY: the arena outlives every thread that uses this pointer (joined before it drops).
        unsafe { &*self.0 }
    }
}

/// global_stats once `threads` is back to at most `threads` (test threads
/// of earlier tests may still be running their TLS destructors).
fn settled(threads: usize) -> smallmid::GlobalStats {
    for _ in 0..200 {
        let g = global_stats();
        if g.threads <= threads {
            return g;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    global_stats()
}

fn fresh_stats_are_zero(a: &SmallMidArena, what: &str) {
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 0, "{what}: blocks_in_use {s}");
    assert_eq!(s.bytes_in_use, 0, "{what}: bytes_in_use {s}");
    assert_eq!(s.huge_bytes, 0, "{what}: huge_bytes {s}");
    assert_eq!(s.large_allocs, 0, "{what}: large_allocs {s}");
    assert_eq!(s.large_frees, 0, "{what}: large_frees {s}");
    for c in &s.classes {
        assert_eq!(
            (c.allocs, c.frees, c.flushes, c.cross_thread_frees),
            (0, 0, 0, 0),
            "{what}: class {} carries counters {c:?}",
            c.size
        );
    }
    assert!(s.classes.is_empty(), "{what}: classes {:?}", s.classes);
}

/// A busy past life: many classes, spans, a huge block, other threads.
fn busy_life(a: &SmallMidArena) {
    let sizes = [8, 24, 48, 100, 200, 300, 500, 700, 1000, 2000, 5000, 20000];
    std::thread::scope(|s| {
        for t in 0..3 {
            s.spawn(move || {
                let mut v = Vec::new();
                for i in 0..400 {
                    let lay = l(sizes[(i + t) % sizes.len()], 8);
                    let b = a.allocate(lay).unwrap();
                    fill(b.cast::<u8>().as_ptr(), lay.size(), i);
                    v.push((b, lay));
                }
                for (k, (b, lay)) in v.into_iter().enumerate() {
                    if k % 3 != 0 {
                        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                        unsafe { a.deallocate(b.cast(), lay) };
                    }
                }
            });
        }
    });
    let span = a.allocate(l(200 * KIB, 8)).unwrap();
    let huge = a.allocate(l(3 * MIB, 8)).unwrap();
    fill(huge.cast::<u8>().as_ptr(), 4096, 1);
    let _ = (span, huge);
    for i in 0..200 {
        let _ = a.allocate(l(16 + i % 900, 8)).unwrap();
    }
}

fn count_fill(a: &SmallMidArena, lay: Layout) -> Vec<NonNull<u8>> {
    let mut v = Vec::new();
    while let Ok(b) = a.allocate(lay) {
        assert!(
            a.allocated_bytes() <= a.memory_limit(),
            "allocated {} > limit {}",
            a.allocated_bytes(),
            a.memory_limit()
        );
        v.push(b.cast());
        if v.len() > 1_000_000 {
            panic!("no limit");
        }
    }
    v
}

// ---------------------------------------------------------------------------
// Recycling

/// A limited arena dropped into this thread's spare, then taken by an
/// unlimited `new()`: no limit, no counters, no huge blocks carried over.
#[test]
fn limited_spare_recycled_unlimited_carries_nothing() {
    let _g = serial();
    std::thread::spawn(|| {
        let a = SmallMidArena::builder().memory_limit(256 * KIB).build();
        busy_life_limited(&a);
        drop(a);
        let b = SmallMidArena::new();
        assert_eq!(b.memory_limit(), usize::MAX);
        fresh_stats_are_zero(&b, "recycled limited->unlimited");
        b.audit();
        // No limit any more: 8 MiB of spans and a big huge block.
        let mut v = Vec::new();
        for _ in 0..40 {
            v.push(
                b.allocate(l(200 * KIB, 8))
                    .expect("unlimited after recycle"),
            );
        }
        let h = b.allocate(l(16 * MIB, 8)).expect("huge in unlimited");
        assert!(b.allocated_bytes() > 16 * MIB);
        let _ = (v, h);
        b.audit();
    })
    .join()
    .unwrap();
}

fn busy_life_limited(a: &SmallMidArena) {
    let mut v = Vec::new();
    for i in 0..2000 {
        match a.allocate(l(8 + (i * 37) % 1500, 8)) {
            Ok(b) => v.push(b),
            Err(_) => break,
        }
    }
    assert!(a.allocated_bytes() <= a.memory_limit());
}

/// An unlimited busy arena (threads, spans, huge) dropped on a thread,
/// recycled as a limited one: the whole limit is usable and stats are zero.
#[test]
fn busy_spare_recycled_limited_has_whole_limit() {
    let _g = serial();
    std::thread::spawn(|| {
        let a = SmallMidArena::new();
        busy_life(&a);
        drop(a);
        let b = SmallMidArena::builder().memory_limit(SLAB).build();
        assert_eq!(b.memory_limit(), SLAB);
        assert_eq!(
            b.allocated_bytes(),
            0,
            "recycled limited arena starts holding memory"
        );
        fresh_stats_are_zero(&b, "recycled unlimited->limited(64K)");
        b.audit();
        let v = count_fill(&b, l(500, 8));
        assert!(
            v.len() > 100,
            "only {} blocks of 512 B in a 64 KiB limit",
            v.len()
        );
        assert_eq!(b.stats().bytes_held, SLAB as u64);
        drop(v);
        drop(b);
        // And again at 1 MiB, counting 1-slab spans: exactly 16.
        let c = SmallMidArena::builder().memory_limit(MIB).build();
        assert_eq!(c.allocated_bytes(), 0);
        let v = count_fill(&c, l(40 * KIB, 8));
        assert_eq!(v.len(), 16, "1 MiB limit should hold 16 single-slab spans");
        c.audit();
    })
    .join()
    .unwrap();
}

/// Arenas dropped on a thread that already has a spare go to the shared
/// spares; other threads take them with and without limits.
#[test]
fn shared_spares_recycled_with_and_without_limits() {
    let _g = serial();
    smallmid::trim_warm_cache();
    let (tx, rx) = mpsc::channel::<SmallMidArena>();
    // Producer: busy arenas, some limited.
    let prod = std::thread::spawn(move || {
        for k in 0..24 {
            let a = if k % 2 == 0 {
                SmallMidArena::new()
            } else {
                SmallMidArena::builder().memory_limit(512 * KIB).build()
            };
            if k % 2 == 0 {
                busy_life(&a);
            } else {
                busy_life_limited(&a);
            }
            tx.send(a).unwrap();
        }
    });
    // Dropper: a thread that holds its own spare, so the rest go shared.
    let dropper = std::thread::spawn(move || {
        for a in rx {
            drop(a);
        }
    });
    prod.join().unwrap();
    dropper.join().unwrap();
    let errors = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|t| {
                s.spawn(move || -> Vec<String> {
                    let mut errs = Vec::new();
                    for k in 0..4 {
                        let limited = (t + k) % 2 == 0;
                        let a = if limited {
                            SmallMidArena::builder().memory_limit(2 * SLAB).build()
                        } else {
                            SmallMidArena::new()
                        };
                        // Grown (new() takes a shared spare; a seed would grow into one).
                        a.reserve(1).unwrap();
                        let s = a.stats();
                        if s.blocks_in_use != 0 || s.large_allocs != 0 || s.huge_bytes != 0 {
                            errs.push(format!("t{t} k{k}: carried {s}"));
                        }
                        if limited {
                            if a.allocated_bytes() != 0 {
                                errs.push(format!(
                                    "t{t} k{k}: limited starts at {}",
                                    a.allocated_bytes()
                                ));
                            }
                            let n = count_fill(&a, l(40 * KIB, 8)).len();
                            if n != 2 {
                                errs.push(format!("t{t} k{k}: {n} spans in a 2-slab limit"));
                            }
                        } else {
                            if a.memory_limit() != usize::MAX {
                                errs.push(format!(
                                    "t{t} k{k}: unlimited new() has limit {}",
                                    a.memory_limit()
                                ));
                            }
                            let h = a.allocate(l(4 * MIB, 8));
                            if h.is_err() {
                                errs.push(format!("t{t} k{k}: 4 MiB refused in unlimited"));
                            }
                        }
                        a.audit();
                    }
                    errs
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(errors.is_empty(), "{errors:#?}");
}

/// stats().classes after a recycle by `new()` must be empty even when the
/// old life's class counters were bumped by a thread whose cache went idle.
#[test]
fn recycled_arena_stats_after_hopping_life() {
    let _g = serial();
    std::thread::spawn(|| {
        let a = SmallMidArena::new();
        // Another thread allocates and frees (its cache retires on exit).
        std::thread::scope(|s| {
            s.spawn(|| {
                let v: Vec<_> = (0..300)
                    .map(|i| a.allocate(l(64 + i, 8)).unwrap())
                    .collect();
                for (i, b) in v.into_iter().enumerate() {
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(b.cast(), l(64 + i, 8)) };
                }
            })
            .join()
            .unwrap();
        });
        let st = a.stats();
        assert_eq!(st.blocks_in_use, 0);
        assert_eq!(st.thread_caches, 0, "exited thread still has a cache: {st}");
        drop(a);
        let b = SmallMidArena::new();
        fresh_stats_are_zero(&b, "recycled after hop");
        let x = b.allocate(l(100, 8)).unwrap();
        let s = b.stats();
        assert_eq!(s.blocks_in_use, 1);
        assert_eq!(s.classes.len(), 1, "{s}");
        assert_eq!((s.classes[0].allocs, s.classes[0].frees), (1, 0));
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { b.deallocate(x.cast(), l(100, 8)) };
        b.audit();
    })
    .join()
    .unwrap();
}

// ---------------------------------------------------------------------------
// Stats exactness

/// An arena made on main, used by 8 threads, half the blocks freed by
/// other threads, threads exit: every counter adds up.
#[test]
fn stats_exact_after_cross_thread_frees_and_exits() {
    let _g = serial();
    let a = SmallMidArena::new();
    let sizes = [16usize, 40, 96, 256, 640, 1024, 3000, 12000];
    let (tx, rx) = mpsc::channel::<Vec<(P, usize)>>();
    let rx = Arc::new(Mutex::new(rx));
    let kept = std::thread::scope(|s| {
        let mut hs = Vec::new();
        let mut producers = Vec::new();
        for t in 0..8usize {
            let tx = tx.clone();
            let a = &a;
            producers.push(s.spawn(move || {
                let v: Vec<(P, usize)> = (0..500)
                    .map(|i| {
                        let sz = sizes[(i + t) % sizes.len()];
                        let b = a.allocate(l(sz, 8)).unwrap();
                        fill(b.cast::<u8>().as_ptr(), sz.min(64), i);
                        (P(b.cast::<u8>().as_ptr()), sz)
                    })
                    .collect();
                tx.send(v).unwrap();
            }));
        }
        drop(tx);
        for _ in 0..4 {
            let rx = rx.clone();
            let a = &a;
            hs.push(s.spawn(move || {
                let mut kept = Vec::new();
                loop {
                    let Ok(v) = rx.lock().unwrap().recv() else {
                        break;
                    };
                    for (i, (p, sz)) in v.into_iter().enumerate() {
                        if i % 2 == 0 {
                            verify(p.0, sz.min(64), i, "cross-thread");
                            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                            unsafe { a.deallocate(NonNull::new(p.0).unwrap(), l(sz, 8)) };
                        } else {
                            kept.push((p, sz));
                        }
                    }
                }
                kept
            }));
        }
        for p in producers {
            p.join().unwrap();
        }
        hs.into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let s = a.stats();
    assert_eq!(s.thread_caches, 0, "all threads exited: {s}");
    assert_eq!(s.blocks_in_use, kept.len() as u64, "{s}");
    let want_bytes: u64 = kept
        .iter()
        .map(|&(_, sz)| {
            let b = a.allocate(l(sz, 8)).unwrap();
            let n = b.len() as u64;
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(b.cast(), l(sz, 8)) };
            n
        })
        .sum();
    let s = a.stats();
    assert_eq!(s.bytes_in_use, want_bytes, "{s}");
    let allocs: u64 = s.classes.iter().map(|c| c.allocs).sum::<u64>() + s.large_allocs;
    let frees: u64 = s.classes.iter().map(|c| c.frees).sum::<u64>() + s.large_frees;
    assert_eq!(allocs, 4000 + kept.len() as u64, "{s}");
    assert_eq!(frees, 2000 + kept.len() as u64, "{s}");
    for (p, sz) in kept {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(NonNull::new(p.0).unwrap(), l(sz, 8)) };
    }
    assert_eq!(a.stats().blocks_in_use, 0);
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

/// `arenas_alive` and `threads` return to their baseline after arenas made
/// on one thread are dropped on others (some while threads exit).
#[test]
fn global_counts_return_after_cross_thread_drops() {
    let _g = serial();
    let before = global_stats();
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<SmallMidArena>();
        let maker = s.spawn(move || {
            for _ in 0..40 {
                let a = SmallMidArena::new();
                let _ = a.allocate(l(100, 8)).unwrap(); // leaked until the drop
                tx.send(a).unwrap();
            }
        });
        let rx = Arc::new(Mutex::new(rx));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let rx = rx.clone();
                s.spawn(move || loop {
                    let Ok(a) = rx.lock().unwrap().recv() else {
                        break;
                    };
                    let _ = a.allocate(l(300, 8)).unwrap();
                    drop(a);
                })
            })
            .collect();
        maker.join().unwrap();
        for h in hs {
            h.join().unwrap();
        }
    });
    let after = settled(before.threads);
    assert_eq!(after.arenas_alive, before.arenas_alive, "{after}");
    assert!(after.threads <= before.threads, "{before} -> {after}");
}

/// reset() after other threads (now exited) allocated: stats are zero, and
/// the classes list is empty.
#[test]
fn reset_after_exited_threads_zeroes_stats() {
    let _g = serial();
    let mut a = SmallMidArena::new();
    for round in 0..3 {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let a = &a;
                    s.spawn(move || {
                        for i in 0..200 {
                            let _ = a.allocate(l(8 + (i * 13 + t) % 2000, 8)).unwrap();
                        }
                        let _ = a.allocate(l(100 * KIB, 8)).unwrap();
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
        let _ = a.allocate(l(2 * MIB, 8)).unwrap();
        a.reset();
        let s = a.stats();
        fresh_stats_are_zero(&a, &format!("round {round} after reset"));
        assert_eq!(s.bytes_held, 0, "round {round}: reset keeps {s}");
        a.audit();
    }
}

// ---------------------------------------------------------------------------
// Memory limits

/// 8 threads under a 1 MiB limit, random sizes including spans: never above
/// the limit, errors not panics; after the threads exit and everything is
/// freed, the whole limit is usable (16 single-slab spans).
#[test]
fn limit_exact_after_threads_exit() {
    let _g = serial();
    let a = SmallMidArena::builder().memory_limit(MIB).build();
    let over = AtomicBool::new(false);
    let blocks = Mutex::new(Vec::<(P, Layout)>::new());
    std::thread::scope(|s| {
        let mut hs = Vec::new();
        for t in 0..8u64 {
            let (a, over, blocks) = (&a, &over, &blocks);
            hs.push(s.spawn(move || {
                let mut rng = Rng(t * 7919 + 17);
                let mut mine: Vec<(P, Layout)> = Vec::new();
                for i in 0..3000 {
                    let sz = match rng.below(10) {
                        0 => 33 * KIB + rng.below(200 * KIB),
                        _ => 8 + rng.below(4000),
                    };
                    let lay = l(sz, 8);
                    // Refusals are expected near the limit.
                    if let Ok(b) = a.allocate(lay) {
                        fill(b.cast::<u8>().as_ptr(), 16, i);
                        mine.push((P(b.cast::<u8>().as_ptr()), lay));
                    }
                    if a.allocated_bytes() > MIB {
                        over.store(true, Ordering::Relaxed);
                    }
                    if rng.below(3) == 0 && !mine.is_empty() {
                        let k = rng.below(mine.len());
                        let (p, lay) = mine.swap_remove(k);
                        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                        unsafe { a.deallocate(NonNull::new(p.0).unwrap(), lay) };
                    }
                }
                // Hand half to the main thread (freed after the exit).
                let half = mine.split_off(mine.len() / 2);
                blocks.lock().unwrap().extend(half);
                for (p, lay) in mine {
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(NonNull::new(p.0).unwrap(), lay) };
                }
            }));
        }
        // Explicit joins: the scope's end does not wait for TLS destructors.
        for h in hs {
            h.join().unwrap();
        }
    });
    assert!(
        !over.load(Ordering::Relaxed),
        "allocated_bytes passed the limit"
    );
    for (p, lay) in blocks.into_inner().unwrap() {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(NonNull::new(p.0).unwrap(), lay) };
    }
    assert_eq!(a.stats().blocks_in_use, 0);
    a.flush_thread_cache();
    let v = count_fill(&a, l(40 * KIB, 8));
    assert_eq!(
        v.len(),
        16,
        "1 MiB limit after exits: {} spans; {}",
        v.len(),
        a.stats()
    );
    a.audit();
}

/// Limited arena, threads still alive (parked) that used it: reset on the
/// main thread gives the whole limit back.
#[test]
fn limit_whole_after_reset_with_live_threads() {
    let _g = serial();
    let mut a = SmallMidArena::builder().memory_limit(512 * KIB).build();
    let r = R(&a);
    let go = Arc::new(Barrier::new(5));
    let done = Arc::new(Barrier::new(5));
    let hs: Vec<_> = (0..4)
        .map(|t| {
            let (go, done) = (go.clone(), done.clone());
            std::thread::spawn(move || {
                {
                    let a = r.get();
                    let mut v = Vec::new();
                    for i in 0..300 {
                        if let Ok(b) = a.allocate(l(8 + (i * 31 + t * 5) % 1000, 8)) {
                            v.push((b, l(8 + (i * 31 + t * 5) % 1000, 8)));
                        }
                    }
                    // Free half: the cache holds free blocks and ranges.
                    for (b, lay) in v.into_iter().step_by(2) {
                        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                        unsafe { a.deallocate(b.cast(), lay) };
                    }
                }
                go.wait(); // done with the arena
                done.wait(); // stay alive until main is done
            })
        })
        .collect();
    go.wait();
    a.reset();
    assert_eq!(
        a.allocated_bytes(),
        0,
        "reset left {} held",
        a.allocated_bytes()
    );
    let v = count_fill(&a, l(40 * KIB, 8));
    assert_eq!(v.len(), 8, "512 KiB limit after reset: {} spans", v.len());
    drop(v);
    a.reset();
    let v = count_fill(&a, l(500, 8));
    assert!(v.len() >= 8 * 100, "small blocks after reset: {}", v.len());
    drop(v);
    done.wait();
    // Drop while they exit.
    drop(a);
    for h in hs {
        h.join().unwrap();
    }
}

/// An arena built with a limit after this thread's spare came from a
/// huge-paged busy life: never above the limit, exhaustion is an error.
#[test]
fn limit_64k_exhaustion_is_error_in_all_shapes() {
    let _g = serial();
    let a = SmallMidArena::builder().memory_limit(SLAB).build();
    let shapes = [
        l(8, 8),
        l(1024, 8),
        l(2048, 8),
        l(32 * KIB, 8),
        l(33 * KIB, 8),
        l(64 * KIB, 8),
        l(65 * KIB, 8),
        l(MIB, 8),
        l(100, 4096),
        l(100, 64 * KIB),
    ];
    for _ in 0..3 {
        for lay in shapes {
            let v = count_fill(&a, lay);
            assert!(a.allocated_bytes() <= SLAB);
            for p in v {
                // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                unsafe { a.deallocate(p, lay) };
            }
            a.flush_thread_cache();
        }
    }
    // Blocks of 64 KiB: the slab they need is the limit. The first must fit.
    let st = a.stats();
    assert!(
        a.allocate(l(64 * KIB, 8)).is_ok(),
        "a one-slab span in an empty 64 KiB limit: held {} {st} {:?}",
        a.allocated_bytes(),
        a.audit()
    );
}

/// A full limit, blocks freed on another thread that then exits: the
/// limit is usable again on the main thread.
#[test]
fn limit_usable_after_cross_thread_frees_and_exit() {
    let _g = serial();
    let a = SmallMidArena::builder().memory_limit(256 * KIB).build();
    a.reserve(1).unwrap(); // grown: past its seed (seed blocks are not reused)
    for round in 0..4 {
        let lay = l(100 + round * 300, 8);
        let v: Vec<P> = count_fill(&a, lay)
            .into_iter()
            .map(|p| P(p.as_ptr()))
            .collect();
        let n = v.len();
        assert!(n > 0);
        std::thread::scope(|s| {
            let a = &a;
            s.spawn(move || {
                for p in v {
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(NonNull::new(p.0).unwrap(), lay) };
                }
            })
            .join()
            .unwrap();
        });
        a.flush_thread_cache();
        assert_eq!(a.stats().blocks_in_use, 0);
        let v2 = count_fill(&a, lay);
        assert!(
            v2.len() >= n,
            "round {round}: {} blocks after cross-thread free vs {n} before",
            v2.len()
        );
        for p in v2 {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(p, lay) };
        }
        a.flush_thread_cache();
        let spans = count_fill(&a, l(40 * KIB, 8));
        assert_eq!(spans.len(), 4, "round {round}: spans after frees");
        for p in spans {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(p, l(40 * KIB, 8)) };
        }
    }
}

// ---------------------------------------------------------------------------
// Decommit and data integrity

fn rss_kib() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Live blocks in many arenas keep their data while other threads empty
/// slabs everywhere (pushing the resident bound), trim the warm cache, and
/// lower its limit.
#[test]
fn live_blocks_survive_decommits_from_other_threads() {
    let _g = serial();
    let before = global_stats().decommits;
    let arenas: Vec<SmallMidArena> = (0..8).map(|_| SmallMidArena::new()).collect();
    // Live blocks: one every 40 in each arena, the rest freed (slabs empty
    // partially; many slabs empty whole).
    let mut live: Vec<(usize, P, usize, usize)> = Vec::new();
    for (k, a) in arenas.iter().enumerate() {
        let mut all = Vec::new();
        for i in 0..6000 {
            let sz = [48usize, 200, 700, 2000, 9000][i % 5];
            let b = a.allocate(l(sz, 8)).unwrap();
            let p = b.cast::<u8>().as_ptr();
            fill(p, sz, i + k * 10000);
            all.push((P(p), sz, i + k * 10000));
        }
        for (j, (p, sz, seed)) in all.into_iter().enumerate() {
            if j % 40 == 0 {
                live.push((k, p, sz, seed));
            } else {
                // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                unsafe { a.deallocate(NonNull::new(p.0).unwrap(), l(sz, 8)) };
            }
        }
    }
    let refs: Vec<R> = arenas.iter().map(|a| R(a)).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let refs = refs.clone();
            s.spawn(move || {
                for (k, r) in refs.iter().enumerate() {
                    let a = r.get();
                    if k % 4 != t {
                        continue;
                    }
                    // Fill and empty: slabs emptied in this arena on an
                    // exiting thread.
                    let v: Vec<_> = (0..3000)
                        .map(|i| a.allocate(l(300 + i % 500, 8)).unwrap())
                        .collect();
                    for (i, b) in v.into_iter().enumerate() {
                        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                        unsafe { a.deallocate(b.cast(), l(300 + i % 500, 8)) };
                    }
                }
                // Independent arenas dropping, and trims.
                for _ in 0..20 {
                    let x = SmallMidArena::new();
                    let v: Vec<_> = (0..2000)
                        .map(|i| x.allocate(l(1000 + i % 20, 8)).unwrap())
                        .collect();
                    drop(v);
                    drop(x);
                }
                smallmid::trim_warm_cache();
            });
        }
        s.spawn(|| {
            smallmid::set_warm_cache_limit(0);
            smallmid::trim_warm_cache();
            smallmid::set_warm_cache_limit(1 << 30);
        });
    });
    for a in &arenas {
        a.flush_thread_cache();
        a.audit();
    }
    let after = global_stats().decommits;
    for &(_, p, sz, seed) in &live {
        verify(p.0, sz, seed, "live block after decommits");
    }
    // New memory after decommits is usable in full.
    for a in &arenas {
        let v: Vec<_> = (0..1000)
            .map(|i| (a.allocate(l(700, 8)).unwrap(), i))
            .collect();
        for &(b, i) in &v {
            fill(b.cast::<u8>().as_ptr(), b.len(), i);
        }
        for &(b, i) in &v {
            verify(b.cast::<u8>().as_ptr(), b.len(), i, "new after decommit");
        }
    }
    for &(_, p, sz, seed) in &live {
        verify(p.0, sz, seed, "live block after reuse");
    }
    assert!(after > before, "the test should have triggered a decommit");
}

/// A limited arena's own emptied slabs, decommitted past the process-wide
/// bound, come back zero-filled or with data: either way usable; live
/// blocks next to them keep their data.
#[test]
fn limited_arena_decommit_keeps_neighbours() {
    let _g = serial();
    // Push the resident count over the bound with many arenas holding
    // emptied slabs.
    let holders: Vec<SmallMidArena> = (0..40).map(|_| SmallMidArena::new()).collect();
    for a in &holders {
        let v: Vec<_> = (0..400)
            .map(|i| a.allocate(l(1024 + (i % 4) * 2048, 8)).unwrap())
            .collect();
        for (i, b) in v.into_iter().enumerate() {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(b.cast(), l(1024 + (i % 4) * 2048, 8)) };
        }
        a.flush_thread_cache();
    }
    let a = SmallMidArena::builder().memory_limit(2 * MIB).build();
    for round in 0..5 {
        let mut v = Vec::new();
        for i in 0..2000 {
            let lay = l(900 + (i % 3) * 3000, 8);
            if let Ok(b) = a.allocate(lay) {
                fill(b.cast::<u8>().as_ptr(), lay.size(), i + round);
                v.push((b, lay, i + round));
            }
        }
        // Free all but every 50th: most slabs empty.
        let mut keep = Vec::new();
        for (j, x) in v.into_iter().enumerate() {
            if j % 50 == 0 {
                keep.push(x);
            } else {
                // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                unsafe { a.deallocate(x.0.cast(), x.1) };
            }
        }
        a.flush_thread_cache();
        for &(b, lay, seed) in &keep {
            verify(
                b.cast::<u8>().as_ptr(),
                lay.size(),
                seed,
                "kept in limited arena",
            );
        }
        for (b, lay, _) in keep {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(b.cast(), lay) };
        }
        a.audit();
    }
    drop(holders);
}

/// RSS falls when a big arena frees most of its memory and the warm cache
/// is trimmed (the README's promise); and trim returns the huge cache.
#[test]
fn trim_returns_rss_and_huge_cache() {
    let _g = serial();
    smallmid::trim_warm_cache();
    let base = rss_kib();
    {
        let a = SmallMidArena::new();
        let v: Vec<_> = (0..64)
            .map(|_| {
                let b = a.allocate(l(900 * KIB, 8)).unwrap();
                // SAFETY: the range is inside a live block the test owns.
                unsafe { b.cast::<u8>().as_ptr().write_bytes(1, b.len()) };
                b
            })
            .collect();
        let h = a.allocate(l(8 * MIB, 8)).unwrap();
        // SAFETY: the range is inside a live block the test owns.
        unsafe { h.cast::<u8>().as_ptr().write_bytes(1, h.len()) };
        let _ = v;
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(h.cast(), l(8 * MIB, 8)) };
        assert!(global_stats().huge_cached >= 1);
    }
    let n = smallmid::trim_warm_cache();
    let g = global_stats();
    assert_eq!(g.huge_cached, 0, "{g}");
    assert_eq!(g.warm_superslabs, 0, "{g}");
    let _ = n;
    let after = rss_kib();
    assert!(
        after < base + 16 * 1024,
        "RSS {after} KiB after trim vs {base} KiB before a 64 MiB arena"
    );
}

// ---------------------------------------------------------------------------
// Many threads, arena dropped while they exit

/// 100 threads (past the 64 inline slots) allocate in one SharedArena and
/// exit at random times; the main handle goes midway; the last clone drops
/// on a thread that never allocated.
#[test]
fn hundred_threads_exit_while_shared_arena_goes() {
    let _g = serial();
    let before = global_stats();
    let shared = SharedArena::new();
    let start = Arc::new(Barrier::new(101));
    let live_count = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<SharedArena>();
    let hs: Vec<_> = (0..100u64)
        .map(|t| {
            let a = shared.clone();
            let start = start.clone();
            let live_count = live_count.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut rng = Rng(t + 1);
                let mut v = AVec::new_in(a.clone());
                let n = 50 + rng.below(400);
                for i in 0..n {
                    v.push(t << 32 | i as u64);
                    let lay = l(8 + rng.below(3000), 8);
                    let b = a.allocate(lay).unwrap();
                    fill(b.cast::<u8>().as_ptr(), 8, i);
                    if rng.below(2) == 0 {
                        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                        unsafe { a.deallocate(b.cast(), lay) };
                    }
                }
                for (i, x) in v.iter().enumerate() {
                    assert_eq!(*x, t << 32 | i as u64);
                }
                live_count.fetch_add(1, Ordering::Relaxed);
                drop(v);
                tx.send(a).unwrap();
            })
        })
        .collect();
    drop(tx);
    start.wait();
    drop(shared);
    // A thread that never allocated collects every clone and drops them last.
    let collector = std::thread::spawn(move || {
        let all: Vec<SharedArena> = rx.iter().collect();
        assert_eq!(all.len(), 100);
        drop(all);
    });
    for h in hs {
        h.join().unwrap();
    }
    collector.join().unwrap();
    let after = settled(before.threads);
    assert_eq!(after.arenas_alive, before.arenas_alive, "{after}");
    assert!(after.threads <= before.threads, "{before} -> {after}");
}

/// The same shape, with `SmallMidArena` borrowed by 80 threads that are
/// released into exiting at random while the main thread flushes and, at
/// the end, the arena is dropped on a thread that never allocated.
#[test]
fn eighty_threads_exit_then_arena_dropped_elsewhere() {
    let _g = serial();
    let a = SmallMidArena::new();
    let r = R(&a);
    let done = Arc::new(AtomicUsize::new(0));
    let used = Arc::new(Barrier::new(81));
    let hs: Vec<_> = (0..80u64)
        .map(|t| {
            let used = used.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let a = r.get();
                let mut rng = Rng(t * 31 + 3);
                let v: Vec<(NonNull<[u8]>, Layout)> = (0..200)
                    .map(|_| {
                        let lay = l(8 + rng.below(2000), 8);
                        (a.allocate(lay).unwrap(), lay)
                    })
                    .collect();
                for (b, lay) in v.into_iter().step_by(2) {
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(b.cast(), lay) };
                }
                a.flush_thread_cache();
                used.wait();
                std::thread::sleep(std::time::Duration::from_micros(rng.below(2000) as u64));
                done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    used.wait();
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 80 * 100, "{s}");
    // Drop on a fresh thread while the 80 exit.
    let arena = a;
    let dropper = std::thread::spawn(move || {
        let s = arena.stats();
        assert!(s.thread_caches <= 80);
        drop(arena);
    });
    dropper.join().unwrap();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), 80);
    let g = global_stats();
    assert!(g.threads < 80, "{g}");
}

// ---------------------------------------------------------------------------
// Huge blocks across threads

/// A huge block grown on one thread, shrunk on another, freed on a third:
/// data kept, returned lengths usable in full.
#[test]
fn huge_grow_shrink_free_across_threads() {
    let _g = serial();
    let a = SmallMidArena::new();
    let r = R(&a);
    let lay0 = l(MIB + 123, 8);
    let b = a.allocate(lay0).unwrap();
    let n0 = b.len();
    fill(b.cast::<u8>().as_ptr(), n0, 1);
    let bp = P(b.cast::<u8>().as_ptr());
    let (p, n) = std::thread::spawn(move || {
        let a = r.get();
        let newl = l(5 * MIB + 7, 8);
        // SAFETY: a live block of this arena, allocated with the old layout.
        let g = unsafe { a.grow(NonNull::new(bp.g()).unwrap(), lay0, newl) }.unwrap();
        verify(g.cast::<u8>().as_ptr(), lay0.size(), 1, "after grow");
        fill(g.cast::<u8>().as_ptr(), g.len(), 2);
        (P(g.cast::<u8>().as_ptr()), g.len())
    })
    .join()
    .unwrap();
    let (p2, n2) = std::thread::spawn(move || {
        let a = r.get();
        let oldl = l(5 * MIB + 7, 8);
        let p = p.g();
        verify(p, n, 2, "grown block on another thread");
        let newl = l(MIB + 5, 8);
        // SAFETY: a live block of this arena, allocated with the old layout.
        let s = unsafe { a.shrink(NonNull::new(p).unwrap(), oldl, newl) }.unwrap();
        verify(s.cast::<u8>().as_ptr(), newl.size(), 2, "after shrink");
        fill(s.cast::<u8>().as_ptr(), s.len(), 3);
        (P(s.cast::<u8>().as_ptr()), s.len())
    })
    .join()
    .unwrap();
    verify(p2.0, n2, 3, "shrunk block");
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 1, "{s}");
    std::thread::spawn(move || {
        let a = r.get();
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(NonNull::new(p2.g()).unwrap(), l(MIB + 5, 8)) };
    })
    .join()
    .unwrap();
    let s = a.stats();
    assert_eq!(
        (s.blocks_in_use, s.bytes_in_use, s.huge_bytes),
        (0, 0, 0),
        "{s}"
    );
    assert_eq!(s.bytes_held, 0, "{s}");
    a.audit();
    let _ = n2;
}

/// The huge cache hands a previous owner's mapping to another arena:
/// allocate_zeroed and grow_zeroed see zeros; the returned length is usable.
#[test]
fn huge_cache_reuse_zeroed_and_full_length() {
    let _g = serial();
    smallmid::trim_warm_cache();
    for size in [MIB, 3 * MIB / 2, 3 * MIB, 5 * MIB + 4096] {
        let x = SmallMidArena::new();
        let b = x.allocate(l(size, 8)).unwrap();
        // SAFETY: the range is inside a live block the test owns.
        unsafe { b.cast::<u8>().as_ptr().write_bytes(0xAB, b.len()) };
        unsafe { x.deallocate(b.cast(), l(size, 8)) };
        drop(x);
        let cached = global_stats().huge_cached;
        assert!(cached >= 1, "size {size}: not cached");
        let y = std::thread::spawn(move || {
            let y = SmallMidArena::new();
            let z = y.allocate_zeroed(l(size - 4096, 8)).unwrap();
            // SAFETY: the range is inside a live block the test owns.
            let s = unsafe { core::slice::from_raw_parts(z.cast::<u8>().as_ptr(), z.len()) };
            assert!(
                s.iter().all(|&x| x == 0),
                "size {size}: zeroed block has old data"
            );
            // SAFETY: the range is inside a live block the test owns.
            unsafe { z.cast::<u8>().as_ptr().write_bytes(0x11, z.len()) };
            // grow_zeroed: the new bytes are zero.
            let gl = l(z.len() + MIB, 8);
            // SAFETY: a live block of this arena, allocated with the old layout.
            let g = unsafe { y.grow_zeroed(z.cast(), l(size - 4096, 8), gl) }.unwrap();
            let s = unsafe { core::slice::from_raw_parts(g.cast::<u8>().as_ptr(), g.len()) };
            assert!(s[..size - 4096].iter().all(|&x| x == 0x11));
            assert!(
                s[z.len()..].iter().all(|&x| x == 0),
                "size {size}: grow_zeroed tail"
            );
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { y.deallocate(g.cast(), gl) };
            let st = y.stats();
            assert_eq!((st.huge_bytes, st.blocks_in_use), (0, 0), "{st}");
        });
        y.join().unwrap();
    }
    smallmid::trim_warm_cache();
}

/// A limited arena taking a cached huge mapping (rounded up by an unlimited
/// arena): never above the limit; the returned length fits the accounting.
#[test]
fn huge_cache_reuse_under_limit() {
    let _g = serial();
    smallmid::trim_warm_cache();
    let x = SmallMidArena::new();
    let b = x.allocate(l(3 * MIB, 8)).unwrap();
    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
    unsafe { x.deallocate(b.cast(), l(3 * MIB, 8)) };
    drop(x);
    let y = SmallMidArena::builder()
        .memory_limit(3 * MIB + 64 * KIB)
        .build();
    let h = y.allocate(l(3 * MIB - 8192, 8)).expect("fits in the limit");
    assert!(
        y.allocated_bytes() <= y.memory_limit(),
        "{} > {}",
        y.allocated_bytes(),
        y.memory_limit()
    );
    assert!(h.len() >= 3 * MIB - 8192);
    // SAFETY: the range is inside a live block the test owns.
    unsafe { h.cast::<u8>().as_ptr().write_bytes(5, h.len()) };
    let st = y.stats();
    assert_eq!(st.bytes_in_use as usize, h.len(), "{st}");
    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
    unsafe { y.deallocate(h.cast(), l(3 * MIB - 8192, 8)) };
    assert_eq!(y.allocated_bytes(), 0);
    // The whole limit again: a fresh block of the limit's size minus a slab.
    let h = y.allocate(l(3 * MIB, 8)).expect("whole limit after free");
    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
    unsafe { y.deallocate(h.cast(), l(3 * MIB, 8)) };
    smallmid::trim_warm_cache();
}

/// Huge blocks allocated by several threads, each grown repeatedly by
/// another thread, under a limit: never above it, refused grows keep data.
#[test]
fn huge_grows_under_limit_across_threads() {
    let _g = serial();
    let a = SmallMidArena::builder().memory_limit(24 * MIB).build();
    let over = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..4usize {
            let (a, over) = (&a, &over);
            s.spawn(move || {
                let mut lay = l(MIB + t * 4096, 8);
                let mut b = a.allocate(lay).unwrap();
                fill(b.cast::<u8>().as_ptr(), lay.size(), t);
                for step in 0..12 {
                    let newl = l(lay.size() + MIB / 2 + step * 777, 8);
                    let bp = P(b.cast::<u8>().as_ptr());
                    let r = std::thread::scope(|s2| {
                        s2.spawn(move || {
                            // SAFETY: a live block of this arena, allocated with the old layout.
                            unsafe { a.grow(NonNull::new(bp.g()).unwrap(), lay, newl) }
                                .map(|g| (P(g.cast::<u8>().as_ptr()), g.len()))
                        })
                        .join()
                        .unwrap()
                    })
                    .map(|(p, n)| NonNull::slice_from_raw_parts(NonNull::new(p.g()).unwrap(), n));
                    if a.allocated_bytes() > 24 * MIB {
                        over.store(true, Ordering::Relaxed);
                    }
                    match r {
                        Ok(g) => {
                            verify(g.cast::<u8>().as_ptr(), lay.size(), t, "grown");
                            fill(g.cast::<u8>().as_ptr(), newl.size(), t);
                            b = g;
                            lay = newl;
                        }
                        Err(_) => {
                            verify(b.cast::<u8>().as_ptr(), lay.size(), t, "refused grow");
                        }
                    }
                }
                // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                unsafe { a.deallocate(b.cast(), lay) };
            });
        }
    });
    assert!(!over.load(Ordering::Relaxed));
    assert_eq!(a.allocated_bytes(), 0);
    let s = a.stats();
    assert_eq!((s.blocks_in_use, s.huge_bytes), (0, 0), "{s}");
}

// ---------------------------------------------------------------------------
// Round 2: harder shapes

/// Many threads carve mixed slabs of one shared arena, hand blocks to
/// each other, flush at random and exit at random while other arenas push
/// the process past the resident bound (decommits): no live block changes.
#[test]
fn mixed_slabs_cross_thread_churn_with_decommits() {
    let _g = serial();
    // Holders of emptied slabs, so emptied slabs here get decommitted.
    let holders: Vec<SmallMidArena> = (0..40).map(|_| SmallMidArena::new()).collect();
    for a in &holders {
        let v: Vec<_> = (0..300)
            .map(|i| a.allocate(l(2048 + (i % 4) * 2048, 8)).unwrap())
            .collect();
        for (i, b) in v.into_iter().enumerate() {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(b.cast(), l(2048 + (i % 4) * 2048, 8)) };
        }
    }
    let dec0 = global_stats().decommits;
    let shared = SharedArena::new();
    let (tx, rx) = mpsc::channel::<Vec<(P, usize, usize)>>();
    let rx = Arc::new(Mutex::new(rx));
    let bad = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut hs = Vec::new();
    for t in 0..16u64 {
        let a = shared.clone();
        let tx = tx.clone();
        let rx = rx.clone();
        let bad = bad.clone();
        hs.push(std::thread::spawn(move || {
            let mut rng = Rng(t * 101 + 7);
            for round in 0..(3 + rng.below(6)) {
                let mut v = Vec::new();
                for i in 0..(100 + rng.below(300)) {
                    let sz = 1 + rng.below(1024);
                    let b = a.allocate(l(sz, 8)).unwrap();
                    let seed = (t as usize) << 20 | round << 12 | i;
                    fill(b.cast::<u8>().as_ptr(), sz, seed);
                    v.push((P(b.cast::<u8>().as_ptr()), sz, seed));
                }
                // Keep some, send some, free some.
                let send: Vec<_> = v.iter().copied().filter(|x| x.2 % 3 == 0).collect();
                let _ = tx.send(send);
                for &(p, sz, seed) in v.iter().filter(|x| x.2 % 3 == 1) {
                    verify(p.g(), sz, seed, "own");
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(NonNull::new(p.g()).unwrap(), l(sz, 8)) };
                }
                if rng.below(2) == 0 {
                    a.flush_thread_cache();
                }
                // Take someone's batch.
                let got = rx.lock().unwrap().try_recv();
                if let Ok(batch) = got {
                    for (p, sz, seed) in batch {
                        for i in 0..sz {
                            // SAFETY: the range is inside a live block the test owns.
                            let x = unsafe { p.g().add(i).read() };
                            if x != pat(seed, i) {
                                bad.lock().unwrap().push(format!(
                                    "byte {i}/{sz} seed {seed:#x}: {x} != {}",
                                    pat(seed, i)
                                ));
                                break;
                            }
                        }
                        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                        unsafe { a.deallocate(NonNull::new(p.g()).unwrap(), l(sz, 8)) };
                    }
                }
                // The rest (x.2 % 3 == 2) leak until the arena goes; check
                // them at the end of this thread.
                for &(p, sz, seed) in v.iter().filter(|x| x.2 % 3 == 2) {
                    verify(p.g(), sz, seed, "kept");
                }
            }
        }));
    }
    drop(tx);
    for h in hs {
        h.join().unwrap();
    }
    // Drain what is left.
    let rest: Vec<_> = rx.lock().unwrap().try_iter().collect();
    for batch in rest {
        for (p, sz, seed) in batch {
            verify(p.g(), sz, seed, "leftover batch");
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { shared.deallocate(NonNull::new(p.g()).unwrap(), l(sz, 8)) };
        }
    }
    let bad = bad.lock().unwrap();
    assert!(
        bad.is_empty(),
        "{} corrupted blocks, first: {:?}",
        bad.len(),
        bad.first()
    );
    shared.audit();
    let _ = dec0;
    drop(holders);
}

/// Arenas and collections living in thread-locals: dropped during the
/// thread's TLS destruction, before or after the crate's own guard; an
/// arena created there too. Counts come back; nothing crashes.
#[test]
fn arenas_in_thread_locals_dropped_at_exit() {
    use std::cell::RefCell;
    let _g = serial();
    struct Holder {
        arena: Option<SharedArena>,
        v: Option<AVec<u64, SharedArena>>,
    }
    impl Drop for Holder {
        fn drop(&mut self) {
            if let Some(v) = self.v.take() {
                assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
                drop(v);
            }
            // A new arena during TLS destruction, used and dropped.
            let b = SmallMidArena::new();
            let x = b.alloc([7u8; 300]);
            assert_eq!(x[299], 7);
            drop(x);
            let s = b.stats();
            assert_eq!(s.blocks_in_use, 0, "{s}");
            drop(b);
            drop(self.arena.take());
        }
    }
    thread_local! {
        static EARLY: RefCell<Option<Holder>> = const { RefCell::new(None) };
    }
    let before = global_stats();
    let shared = SharedArena::new();
    let hs: Vec<_> = (0..8)
        .map(|t| {
            let a = shared.clone();
            std::thread::spawn(move || {
                // Registered before the crate's guard (first TLS touched).
                EARLY.with(|e| {
                    let mut v = AVec::new_in(a.clone());
                    v.extend(0..1000u64 + t);
                    *e.borrow_mut() = Some(Holder {
                        arena: Some(a.clone()),
                        v: Some(v),
                    });
                });
                let own = SmallMidArena::new();
                let _ = own.allocate(l(100, 8)).unwrap();
                drop(own);
                drop(a);
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(shared.handles(), 1);
    let s = shared.stats();
    assert_eq!(s.blocks_in_use, 0, "{s}");
    drop(shared);
    let after = settled(before.threads);
    assert_eq!(after.arenas_alive, before.arenas_alive, "{after}");
}

/// A huge block under a full limit shrunk on another thread into a span
/// and into a small class (its own mapping is the room): data kept, never
/// above the limit, the limit whole again after.
#[test]
fn huge_shrink_into_own_room_on_other_thread() {
    let _g = serial();
    for target in [100usize, 900, 40 * KIB, 200 * KIB] {
        let a = SmallMidArena::builder().memory_limit(2 * MIB).build();
        let r = R(&a);
        let big = l(2 * MIB - 8 * KIB, 8);
        let b = a.allocate(big).expect("fits the limit");
        fill(b.cast::<u8>().as_ptr(), big.size(), 9);
        assert!(a.allocated_bytes() <= 2 * MIB);
        let bp = P(b.cast::<u8>().as_ptr());
        let res = std::thread::spawn(move || {
            let a = r.get();
            let newl = l(target, 8);
            // SAFETY: a live block of this arena, allocated with the old layout.
            let s = unsafe { a.shrink(NonNull::new(bp.g()).unwrap(), big, newl) };
            s.map(|s| (P(s.cast::<u8>().as_ptr()), s.len()))
        })
        .join()
        .unwrap();
        let (p, n) =
            res.unwrap_or_else(|_| panic!("shrink to {target} under a full limit refused"));
        assert!(n >= target);
        verify(p.g(), target, 9, "shrunk into own room");
        assert!(a.allocated_bytes() <= 2 * MIB);
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(NonNull::new(p.g()).unwrap(), l(target, 8)) };
        a.flush_thread_cache();
        let st = a.stats();
        assert_eq!((st.blocks_in_use, st.huge_bytes), (0, 0), "{st}");
        // Whole limit again.
        let v = count_fill(&a, l(40 * KIB, 8));
        assert_eq!(
            v.len(),
            32,
            "target {target}: 2 MiB limit after shrink: {}",
            v.len()
        );
        a.audit();
    }
}

/// A limited arena reset while it holds huge blocks, spans and small
/// blocks of other (exited) threads: the whole limit is usable at once as
/// a huge block.
#[test]
fn limited_reset_then_whole_limit_as_huge() {
    let _g = serial();
    let mut a = SmallMidArena::builder().memory_limit(4 * MIB).build();
    for round in 0..3 {
        std::thread::scope(|s| {
            let a = &a;
            let hs: Vec<_> = (0..3)
                .map(|t| {
                    s.spawn(move || {
                        let _ = a.allocate(l(MIB + t * 4096, 8));
                        let _ = a.allocate(l(100 * KIB, 8));
                        for i in 0..200 {
                            let _ = a.allocate(l(8 + i * 5, 8));
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
        assert!(a.allocated_bytes() <= 4 * MIB);
        a.reset();
        assert_eq!(a.allocated_bytes(), 0, "round {round}");
        let lay = l(4 * MIB - 2 * 4096, 8);
        let h = a.allocate(lay).unwrap_or_else(|_| {
            panic!("round {round}: whole limit as huge refused; {}", a.stats())
        });
        // SAFETY: the range is inside a live block the test owns.
        unsafe { h.cast::<u8>().as_ptr().write_bytes(3, h.len()) };
        unsafe { a.deallocate(h.cast(), lay) };
        a.reset();
    }
}

/// set_memory_limit while other live threads' caches hold slabs, then
/// those threads exit: the limit is whole again for the setter.
#[test]
fn set_limit_then_other_threads_exit_frees_room() {
    let _g = serial();
    let a = SmallMidArena::new();
    let r = R(&a);
    let go = Arc::new(Barrier::new(5));
    let hs: Vec<_> = (0..4)
        .map(|t| {
            let go = go.clone();
            std::thread::spawn(move || {
                let a = r.get();
                let v: Vec<_> = (0..100)
                    .map(|i| {
                        (
                            a.allocate(l(64 + (i + t) % 900, 8)).unwrap(),
                            l(64 + (i + t) % 900, 8),
                        )
                    })
                    .collect();
                for (b, lay) in v {
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(b.cast(), lay) };
                }
                go.wait();
            })
        })
        .collect();
    go.wait();
    for h in hs {
        h.join().unwrap();
    }
    a.set_memory_limit(MIB).expect("nothing is live");
    let v = count_fill(&a, l(40 * KIB, 8));
    assert_eq!(v.len(), 16, "after exits: {}; {}", v.len(), a.stats());
    for p in v {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(p, l(40 * KIB, 8)) };
    }
    a.audit();
}

/// reset() and drop racing other threads' exits (each thread signals it
/// is done with the arena, then exits at once): stats and audit are clean,
/// thread caches of exited threads are gone, counts come back.
#[test]
fn reset_and_drop_race_thread_exits() {
    let _g = serial();
    let before = global_stats();
    for iter in 0..40 {
        let mut a = if iter % 3 == 0 {
            SmallMidArena::builder().memory_limit(2 * MIB).build()
        } else {
            SmallMidArena::new()
        };
        let r = R(&a);
        let (tx, rx) = mpsc::channel::<()>();
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    {
                        let a = r.get();
                        let mut v = Vec::new();
                        for i in 0..150 {
                            let lay = l(8 + (i * 29 + t * 3) % 1500, 8);
                            if let Ok(b) = a.allocate(lay) {
                                v.push((b, lay));
                            }
                        }
                        for (b, lay) in v.into_iter().skip(t % 2).step_by(2) {
                            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                            unsafe { a.deallocate(b.cast(), lay) };
                        }
                    }
                    tx.send(()).unwrap();
                })
            })
            .collect();
        drop(tx);
        for _ in rx.iter() {}
        if iter % 2 == 0 {
            a.reset();
            let s = a.stats();
            assert_eq!(s.blocks_in_use, 0, "iter {iter}: {s}");
            assert!(s.thread_caches <= 1, "iter {iter}: after reset {s}");
            a.audit();
            for h in hs {
                h.join().unwrap();
            }
            let s = a.stats();
            assert_eq!(s.thread_caches, 0, "iter {iter}: after exits {s}");
            if a.memory_limit() != usize::MAX {
                let v = count_fill(&a, l(40 * KIB, 8));
                assert_eq!(v.len(), 32, "iter {iter}: limit after reset and exits");
            }
            drop(a);
        } else {
            let d = std::thread::spawn(move || drop(a));
            d.join().unwrap();
            for h in hs {
                h.join().unwrap();
            }
        }
    }
    let after = settled(before.threads);
    assert_eq!(after.arenas_alive, before.arenas_alive, "{after}");
}

/// Slabs a reset kept for other (live, then exited) threads' idle caches
/// count against a limit set afterwards, but an allocation that would fail
/// takes them back: the whole limit is usable.
#[test]
fn idle_cache_slabs_from_reset_yield_to_later_limit() {
    let _g = serial();
    let mut a = SmallMidArena::new();
    let r = R(&a);
    let go = Arc::new(Barrier::new(5));
    let done = Arc::new(Barrier::new(5));
    let hs: Vec<_> = (0..4)
        .map(|t| {
            let (go, done) = (go.clone(), done.clone());
            std::thread::spawn(move || {
                {
                    let a = r.get();
                    for i in 0..400 {
                        let _ = a.allocate(l(8 + (i * 41 + t * 7) % 4000, 8)).unwrap();
                    }
                }
                go.wait();
                done.wait();
            })
        })
        .collect();
    go.wait();
    a.reset();
    let held = a.allocated_bytes();
    done.wait();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(a.stats().thread_caches, 0);
    a.set_memory_limit(MIB.max(held))
        .expect("only cached slabs held");
    let lim = a.memory_limit();
    let v = count_fill(&a, l(40 * KIB, 8));
    assert_eq!(
        v.len(),
        lim / SLAB,
        "held {held} after reset; {} spans",
        v.len()
    );
    for p in v {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(p, l(40 * KIB, 8)) };
    }
    // Dropped and recycled limited by another thread.
    let t = std::thread::spawn(move || {
        drop(a);
        let b = SmallMidArena::builder().memory_limit(MIB).build();
        assert_eq!(b.allocated_bytes(), 0);
        let v = count_fill(&b, l(40 * KIB, 8));
        assert_eq!(v.len(), 16);
    });
    t.join().unwrap();
}
