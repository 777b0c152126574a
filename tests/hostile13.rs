//! Hostile review 13: the layering refactor (Heap inside ArenaState, owners
//! naming the heap, per-SuperSlab `blocks_from`, members/threads split,
//! kept spans moved to api.rs).

mod common;
use common::*;

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::{ArenaBox, SmallMidArena};
use std::sync::{mpsc, Arc, Barrier};

#[derive(Clone, Copy, Debug)]
struct P(*mut u8);
// SAFETY: a plain pointer wrapper, used only while the block is live.
unsafe impl Send for P {}

fn pat(seed: usize, i: usize) -> u8 {
    (seed.wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 8)) as u8
}

fn fill(p: *mut u8, n: usize, seed: usize) {
    let step = if n > 4096 { 509 } else { 1 };
    let mut i = 0;
    while i < n {
        // SAFETY: inside a live block the test owns.
        unsafe { p.add(i).write(pat(seed, i)) };
        i += step;
    }
    // SAFETY: as above.
    unsafe { p.add(n - 1).write(pat(seed, n - 1)) };
}

#[track_caller]
fn verify(p: *const u8, n: usize, seed: usize, what: &str) {
    let step = if n > 4096 { 509 } else { 1 };
    let mut i = 0;
    while i < n {
        // SAFETY: inside a live block the test owns.
        let v = unsafe { p.add(i).read() };
        assert_eq!(v, pat(seed, i), "{what}: byte {i} of {n} at {p:p} changed");
        i += step;
    }
    // SAFETY: as above.
    let v = unsafe { p.add(n - 1).read() };
    assert_eq!(v, pat(seed, n - 1), "{what}: last byte of {n} at {p:p}");
}

fn ss_base(p: *const u8) -> usize {
    p as usize & !(MIB - 1)
}

// ---------------------------------------------------------------------------
// Owner pointers: ArenaBox drops find the arena from the block.

/// Small, span and huge ArenaBoxes, leaked to raw pointers, the arena
/// handle moved (into a Box, then back), the boxes rebuilt and dropped on
/// other threads. Audit and stats must be exact afterwards.
#[test]
fn boxes_of_every_kind_dropped_on_other_threads_after_move() {
    let _g = serial();
    let arena = SmallMidArena::new();
    let sizes = [
        24usize,
        300,
        3000,
        40 * KIB,
        200 * KIB,
        900 * KIB,
        1200 * KIB,
        3 * MIB,
    ];
    let mut raws = Vec::new();
    for (seed, &n) in sizes.iter().enumerate() {
        let b: ArenaBox<'_, [u8]> = arena.alloc_slice_fill_with(n, |i| pat(seed, i));
        raws.push((P(ArenaBox::into_raw(b).cast::<u8>()), n, seed));
    }
    // Move the handle (the state does not move).
    let boxed = Box::new(arena);
    let arena = *boxed;
    let base_threads = smallmid::global_stats().threads;
    std::thread::scope(|s| {
        for &(p, n, seed) in &raws {
            let a = &arena;
            s.spawn(move || {
                let p = p;
                verify(p.0, n, seed, "before drop");
                // SAFETY: from into_raw above, of this arena; a slice of n bytes.
                let b: ArenaBox<'_, [u8]> =
                    unsafe { ArenaBox::from_raw(core::ptr::slice_from_raw_parts_mut(p.0, n)) };
                let _ = a;
                drop(b);
            });
        }
    });
    // The threads keep the spans they freed until their exit returns them.
    settle(base_threads);
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!(
        au.span_slabs, 0,
        "spans left after cross-thread drops: {au:?}"
    );
    let s = arena.stats();
    assert_eq!(s.huge_bytes, 0, "{s}");
    assert_eq!(s.large_allocs, s.large_frees, "{s}");
    assert_eq!(s.blocks_in_use, 0, "{s}");
    assert_eq!(s.bytes_in_use, 0, "{s}");
}

/// Huge and span ArenaBoxes of a SharedArena dropped on another thread
/// after every other handle is gone (the box's thread holds the last one).
#[test]
fn shared_arena_boxes_dropped_by_last_handle_thread() {
    let _g = serial();
    for round in 0..20 {
        let shared = SmallMidArena::new().into_shared();
        let s2 = shared.clone();
        let (tx, rx) = mpsc::channel::<(P, usize)>();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Ok(x) = rx.recv() {
                got.push(x);
            }
            for (p, n) in got {
                verify(p.0, n, round, "other thread");
                // SAFETY: from into_raw on s2's arena, which this thread keeps alive.
                drop(unsafe {
                    ArenaBox::<[u8]>::from_raw(core::ptr::slice_from_raw_parts_mut(p.0, n))
                });
            }
            let st = s2.stats();
            assert_eq!(
                (st.huge_bytes, st.large_allocs, st.bytes_in_use),
                (0, st.large_frees, 0),
                "{st}"
            );
            s2.flush_thread_cache(); // kept spans go back
            let au = s2.audit();
            assert_eq!(au.span_slabs, 0, "{au:?}");
            let st = s2.stats();
            assert_eq!(
                (st.huge_bytes, st.large_allocs),
                (0, st.large_frees),
                "{st}"
            );
            drop(s2);
        });
        for n in [100 * KIB, 2 * MIB + 7, 64, 5 * MIB] {
            let b = shared.alloc_slice_fill_with(n, |i| pat(round, i));
            tx.send((P(ArenaBox::into_raw(b).cast()), n)).unwrap();
        }
        drop(shared);
        drop(tx);
        t.join().unwrap();
    }
}

// ---------------------------------------------------------------------------
// Non-home SuperSlabs: slab 0 starts right after the header.

/// Fills the home SuperSlab's slabs 1..16 with a 15-slab span, and a
/// second SuperSlab's too, so that the only free slabs left are slab 0 of
/// non-home SuperSlabs; then new threads take mixed slabs there. Every
/// small block must stay clear of the header, not overlap others, keep its
/// data across other threads' work, be `contains`-ed, and the audit must
/// pass; the same after a reset, flush, and re-use.
#[test]
fn mixed_slab_zero_of_non_home_superslabs() {
    let _g = serial();
    let mut arena = SmallMidArena::new();
    let _ = arena.alloc(1u8);
    let base_threads = smallmid::global_stats().threads;
    let home = {
        let b = arena.alloc(0u8);
        let base = ss_base(&*b);
        drop(b);
        base
    };
    let big = l(15 * SLAB - 4096, 8);
    for round in 0..3 {
        let mut spans = Vec::new();
        for _ in 0..6 {
            let p = arena.allocate(big).unwrap().cast::<u8>().as_ptr();
            spans.push(p);
        }
        let mut live = Live::default();
        for &p in &spans {
            live.add(p, big.size(), "span");
            fill(p, big.size(), 99);
        }
        let (tx, rx) = mpsc::channel::<Vec<(P, usize, usize)>>();
        let a = &arena;
        std::thread::scope(|s| {
            for t in 0..8usize {
                let tx = tx.clone();
                s.spawn(move || {
                    let mut v = Vec::new();
                    for i in 0..400usize {
                        let n = [8usize, 24, 48, 100, 200, 500, 1000][(i + t) % 7];
                        let p = a.allocate(l(n, 8)).unwrap().cast::<u8>().as_ptr();
                        fill(p, n, t * 1000 + i);
                        v.push((P(p), n, t * 1000 + i));
                    }
                    tx.send(v).unwrap();
                });
            }
        });
        drop(tx);
        let mut all = Vec::new();
        for v in rx {
            all.extend(v);
        }
        let mut in_slab0_nonhome = 0;
        for &(p, n, seed) in &all {
            verify(p.0, n, seed, "small block");
            live.add(p.0, n, "small");
            let base = ss_base(p.0);
            let off = p.0 as usize - base;
            assert!(
                off >= 1024,
                "block {:p} at offset {off} of its SuperSlab: in the header",
                p.0
            );
            assert!(arena.contains(p.0), "contains({:p}) at offset {off}", p.0);
            assert!(arena.contains(p.0.wrapping_add(n - 1)));
            if base != home && off < SLAB {
                in_slab0_nonhome += 1;
            }
        }
        for &p in &spans {
            verify(p, big.size(), 99, "span");
        }
        eprintln!("round {round}: {in_slab0_nonhome} blocks in a non-home slab 0");
        let au = arena.audit();
        assert!(au.superslabs >= 3, "{au:?}");
        // Headers of every SuperSlab: not contained.
        for &p in &spans {
            assert!(!arena.contains(ss_base(p) as *const u8));
            assert!(!arena.contains((ss_base(p) + 512) as *const u8));
        }
        // Free half on other threads, half here.
        let (mine, theirs) = all.split_at(all.len() / 2);
        let theirs = theirs.to_vec();
        std::thread::scope(|s| {
            s.spawn(move || {
                for (p, n, _) in theirs {
                    // SAFETY: allocated above with this layout, not used again.
                    unsafe { a.deallocate(core::ptr::NonNull::new(p.0).unwrap(), l(n, 8)) };
                }
            });
        });
        for &(p, n, _) in mine {
            // SAFETY: as above.
            unsafe { arena.deallocate(core::ptr::NonNull::new(p.0).unwrap(), l(n, 8)) };
        }
        for &p in &spans {
            // SAFETY: allocated above with `big`.
            unsafe { arena.deallocate(core::ptr::NonNull::new(p).unwrap(), big) };
        }
        settle(base_threads);
        arena.flush_thread_cache();
        let au = arena.audit();
        assert_eq!(au.blocks_out, 0, "round {round}: {au:?}");
        assert_eq!(au.span_slabs, 0, "round {round}: {au:?}");
        let st = arena.stats();
        assert_eq!((st.blocks_in_use, st.bytes_in_use), (0, 0), "{st}");
        if round == 1 {
            // Leave blocks out and reset.
            for _ in 0..2000 {
                core::mem::forget(arena.alloc([1u8; 40]));
            }
        }
        arena.reset();
        arena.audit();
    }
}

/// A mixed slab 0 of a non-home SuperSlab, its blocks left out, then a
/// reset by the owning thread: the cache's mixed range is handed back and
/// carved again; blocks must not overlap the header.
#[test]
fn reset_hands_back_non_home_mixed_slab_zero() {
    let _g = serial();
    let mut arena = SmallMidArena::new();
    let big = l(15 * SLAB - 4096, 8);
    for _ in 0..4 {
        let sp: Vec<_> = (0..3)
            .map(|_| arena.allocate(big).unwrap().cast::<u8>().as_ptr())
            .collect();
        // A fresh thread takes a mixed slab (the only free slabs are slab 0s).
        let a = &arena;
        let got: Vec<(P, usize)> = std::thread::scope(|s| {
            s.spawn(move || {
                (0..3000usize)
                    .map(|i| {
                        let n = 16 + (i % 13) * 8;
                        let p = a.allocate(l(n, 8)).unwrap().cast::<u8>().as_ptr();
                        fill(p, n, i);
                        (P(p), n)
                    })
                    .collect()
            })
            .join()
            .unwrap()
        });
        for (i, &(p, n)) in got.iter().enumerate() {
            verify(p.0, n, i, "before reset");
            assert!(p.0 as usize - ss_base(p.0) >= 1024);
        }
        for &p in &sp {
            // SAFETY: allocated above with `big`.
            unsafe { arena.deallocate(core::ptr::NonNull::new(p).unwrap(), big) };
        }
        arena.reset();
        arena.audit();
        let mut live = Live::default();
        let mut v = Vec::new();
        for i in 0..5000usize {
            let n = 16 + (i % 13) * 8;
            let p = arena.allocate(l(n, 8)).unwrap().cast::<u8>().as_ptr();
            assert!(p as usize - ss_base(p) >= 1024, "{p:p} in a header");
            live.add(p, n, "after reset");
            fill(p, n, i);
            v.push((p, n, i));
        }
        for &(p, n, i) in &v {
            verify(p, n, i, "after reset");
        }
        arena.flush_thread_cache();
        let au = arena.audit();
        assert!(au.blocks_out >= 5000, "{au:?}");
        arena.reset();
    }
}

/// `contains` on every 64th address of the first 8 KiB of every SuperSlab
/// the arena holds: false in the header, and no panic.
#[test]
fn contains_first_page_of_every_superslab() {
    let _g = serial();
    let arena = SmallMidArena::new();
    let big = l(15 * SLAB - 4096, 8);
    let sp: Vec<_> = (0..4)
        .map(|_| arena.allocate(big).unwrap().cast::<u8>().as_ptr())
        .collect();
    for &p in &sp {
        let base = ss_base(p);
        let mut first_true = None;
        for off in (0..8192).step_by(64) {
            let c = arena.contains((base + off) as *const u8);
            if c && first_true.is_none() {
                first_true = Some(off);
            }
            if let Some(f) = first_true {
                assert!(c, "contains not monotone: true at {f}, false at {off}");
            }
        }
        let f = first_true.expect("some of slab 0 contained");
        assert!(f >= 256, "header at offset {f} contained");
        eprintln!("SuperSlab {base:#x}: contained from {f}");
    }
    for &p in &sp {
        // SAFETY: allocated above with `big`.
        unsafe { arena.deallocate(core::ptr::NonNull::new(p).unwrap(), big) };
    }
}

// ---------------------------------------------------------------------------
// Members: idle caches from exited threads, reset, drop, limits.

/// Threads allocate (small, mixed, spans kept), free some, exit; the
/// arena is reset with their idle caches; then new threads reuse those
/// caches. Audit and stats exact at each step.
#[test]
fn reset_and_drop_with_idle_caches_of_exited_threads() {
    let _g = serial();
    let base_threads = smallmid::global_stats().threads.max(1);
    for round in 0..6 {
        let mut arena = SmallMidArena::new();
        let a = &arena;
        let out: Vec<(P, usize)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4usize)
                .map(|t| {
                    s.spawn(move || {
                        let mut keep = Vec::new();
                        for i in 0..300usize {
                            let n = [16usize, 72, 400, 3000, 20000][(i + t) % 5];
                            let p = a.allocate(l(n, 8)).unwrap().cast::<u8>().as_ptr();
                            fill(p, n, i);
                            if i % 3 == 0 {
                                keep.push((P(p), n));
                            } else {
                                // SAFETY: just allocated.
                                unsafe {
                                    a.deallocate(core::ptr::NonNull::new(p).unwrap(), l(n, 8))
                                };
                            }
                        }
                        // Spans freed: kept by this thread's cache, then it exits.
                        for k in 1..=4usize {
                            let sl = l(k * SLAB - 100, 8);
                            let p = a.allocate(sl).unwrap();
                            // SAFETY: just allocated.
                            unsafe { a.deallocate(p.cast(), sl) };
                        }
                        keep
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        settle(base_threads);
        let st = arena.stats();
        assert_eq!(st.large_allocs, st.large_frees, "round {round}: {st}");
        assert_eq!(st.blocks_in_use, out.len() as u64, "round {round}: {st}");
        arena.flush_thread_cache();
        arena.audit();
        if round % 2 == 0 {
            arena.reset();
            let au = arena.audit();
            assert_eq!(au.span_slabs, 0, "{au:?}");
            let st = arena.stats();
            assert_eq!(
                (st.blocks_in_use, st.bytes_in_use, st.large_allocs),
                (0, 0, 0),
                "{st}"
            );
            // Threads come back and take the idle caches.
            let a = &arena;
            std::thread::scope(|s| {
                for t in 0..4usize {
                    s.spawn(move || {
                        let mut live = Vec::new();
                        for i in 0..500usize {
                            let n = [16usize, 72, 400, 3000][(i + t) % 4];
                            let p = a.allocate(l(n, 8)).unwrap().cast::<u8>().as_ptr();
                            fill(p, n, i + t);
                            live.push((p, n, i + t));
                        }
                        for (p, n, seed) in live {
                            verify(p, n, seed, "after reset");
                            // SAFETY: allocated above.
                            unsafe { a.deallocate(core::ptr::NonNull::new(p).unwrap(), l(n, 8)) };
                        }
                    });
                }
            });
            settle(base_threads);
            arena.flush_thread_cache();
            let au = arena.audit();
            assert_eq!(au.blocks_out, 0, "{au:?}");
            let st = arena.stats();
            assert_eq!((st.blocks_in_use, st.bytes_in_use), (0, 0), "{st}");
        } else {
            for (p, n) in out {
                // SAFETY: allocated above.
                unsafe { arena.deallocate(core::ptr::NonNull::new(p.0).unwrap(), l(n, 8)) };
            }
            arena.flush_thread_cache();
            let au = arena.audit();
            assert_eq!(au.blocks_out, 0, "{au:?}");
        }
        drop(arena);
    }
}

/// A live thread keeps spans in its cache; the main thread lowers the
/// limit to what it needs and then allocates up to it: the kept spans must
/// be reclaimed (they are freed memory).
#[test]
fn limit_with_spans_kept_by_a_live_thread() {
    let _g = serial();
    let arena = Arc::new(SmallMidArena::new());
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let a2 = arena.clone();
    let t = std::thread::spawn(move || {
        for k in [4usize, 4, 3, 2] {
            let sl = l(k * SLAB - 100, 8);
            let ps: Vec<_> = (0..3).map(|_| a2.allocate(sl).unwrap()).collect();
            for p in ps {
                // SAFETY: just allocated.
                unsafe { a2.deallocate(p.cast(), sl) };
            }
        }
        drop(a2);
        done_tx.send(()).unwrap();
        go_rx.recv().unwrap();
    });
    done_rx.recv().unwrap();
    let st = arena.stats();
    assert_eq!(st.large_allocs, st.large_frees, "{st}");
    assert_eq!(st.bytes_in_use, 0, "{st}");
    // 1 MiB + one slab: the home SuperSlab's slab 0 is a slab too.
    arena
        .set_memory_limit(2 * MIB)
        .expect("kept spans are free memory");
    let sl = l(4 * SLAB - 100, 8);
    let mut got = Vec::new();
    while let Ok(p) = arena.allocate(sl) {
        got.push(p);
        assert!(got.len() < 100);
    }
    let held = arena.stats().bytes_held;
    assert!(
        got.len() >= 7,
        "only {} spans of 4 slabs under a 2 MiB limit (held {held})",
        got.len()
    );
    for p in got {
        // SAFETY: allocated above.
        unsafe { arena.deallocate(p.cast(), sl) };
    }
    let st = arena.stats();
    assert_eq!(
        (st.large_allocs, st.bytes_in_use),
        (st.large_frees, 0),
        "{st}"
    );
    go_tx.send(()).unwrap();
    t.join().unwrap();
    let st = arena.stats();
    assert_eq!(
        (st.large_allocs, st.bytes_in_use),
        (st.large_frees, 0),
        "{st}"
    );
    arena.audit();
}

/// Under a limit, a freed span is not kept; with the limit lifted it is,
/// and a limit set again then gives it back. Stats exact throughout.
#[test]
fn limit_toggled_with_kept_spans_stats_exact() {
    let _g = serial();
    let arena = SmallMidArena::builder().memory_limit(3 * MIB).build();
    let sl = l(3 * SLAB - 10, 8);
    for round in 0..20 {
        let ps: Vec<_> = (0..4).map(|_| arena.allocate(sl).unwrap()).collect();
        for p in ps {
            // SAFETY: just allocated.
            unsafe { arena.deallocate(p.cast(), sl) };
        }
        let st = arena.stats();
        assert_eq!(
            (st.large_allocs, st.bytes_in_use),
            (st.large_frees, 0),
            "round {round}: {st}"
        );
        if round % 2 == 0 {
            arena.set_memory_limit(usize::MAX).unwrap();
        } else {
            arena.set_memory_limit(3 * MIB).unwrap();
            // All the room there is: spans kept must not refuse it.
            let ps: Vec<_> = (0..8).map(|_| arena.allocate(sl).unwrap()).collect();
            for p in ps {
                // SAFETY: just allocated.
                unsafe { arena.deallocate(p.cast(), sl) };
            }
        }
        arena.audit();
    }
}

/// A thread that used the arena exits while another thread drops the
/// arena (the last Arc): the exit and the destroy race on the members.
#[test]
fn thread_exit_races_arena_drop() {
    let _g = serial();
    let base = in_use_after_trim();
    for round in 0..200 {
        let arena = Arc::new(SmallMidArena::new());
        let bar = Arc::new(Barrier::new(3));
        let (a1, b1) = (arena.clone(), bar.clone());
        let t1 = std::thread::spawn(move || {
            let b = a1.alloc([round as u8; 100]);
            let sl = l(2 * SLAB - 10, 8);
            let p = a1.allocate(sl).unwrap();
            // SAFETY: just allocated: kept in this thread's cache.
            unsafe { a1.deallocate(p.cast(), sl) };
            assert_eq!(*b, [round as u8; 100]);
            drop(b);
            drop(a1);
            b1.wait();
            // exits now
        });
        let (a2, b2) = (arena.clone(), bar.clone());
        drop(arena);
        let t2 = std::thread::spawn(move || {
            let _x = a2.alloc(5u32);
            drop(_x);
            b2.wait();
            drop(a2); // may be the last handle: destroy while t1 exits
        });
        bar.wait();
        t1.join().unwrap();
        t2.join().unwrap();
    }
    let now = in_use_after_trim();
    assert!(now <= base, "SuperSlabs in use: {base} before, {now} after");
}

/// SuperSlabs in use once exiting threads have settled and the warm cache,
/// the spares and the seeds' SuperSlabs are trimmed.
fn in_use_after_trim() -> usize {
    trimmed_stats(usize::MAX).superslabs_in_use
}

/// Arena dropped on a thread that never used it, while the threads that
/// did are still alive (parked with attached caches holding kept spans and
/// mixed ranges); those threads then use a new arena (likely the recycled
/// spare or its SuperSlabs) and exit.
#[test]
fn arena_dropped_elsewhere_while_members_live() {
    let _g = serial();
    for round in 0..30 {
        let arena = Arc::new(SmallMidArena::new());
        let bar = Arc::new(Barrier::new(4));
        let (ntx, nrx) = mpsc::channel::<Arc<SmallMidArena>>();
        let nrx = Arc::new(std::sync::Mutex::new(nrx));
        let mut hs = Vec::new();
        for t in 0..3usize {
            let (a, b, nrx) = (arena.clone(), bar.clone(), nrx.clone());
            hs.push(std::thread::spawn(move || {
                let keep: Vec<_> = (0..50).map(|i| a.alloc([(i + t) as u8; 40])).collect();
                let sl = l((t + 1) * SLAB - 10, 8);
                let p = a.allocate(sl).unwrap();
                // SAFETY: just allocated: kept here.
                unsafe { a.deallocate(p.cast(), sl) };
                drop(keep);
                drop(a);
                b.wait();
                let fresh = nrx.lock().unwrap().recv().unwrap();
                let v: Vec<_> = (0..200).map(|i| fresh.alloc([i as u8; 24])).collect();
                for (i, x) in v.iter().enumerate() {
                    assert_eq!(x[0], i as u8);
                }
                let sl2 = l(2 * SLAB - 10, 8);
                let p = fresh.allocate(sl2).unwrap();
                // SAFETY: just allocated.
                unsafe { fresh.deallocate(p.cast(), sl2) };
                drop(v);
                fresh.audit();
            }));
        }
        bar.wait();
        // Drop the last handle on yet another thread.
        std::thread::spawn(move || drop(arena)).join().unwrap();
        let fresh = Arc::new(SmallMidArena::new());
        for _ in 0..3 {
            ntx.send(fresh.clone()).unwrap();
        }
        for h in hs {
            h.join().unwrap();
        }
        let st = fresh.stats();
        assert_eq!(
            (st.large_allocs, st.bytes_in_use),
            (st.large_frees, 0),
            "round {round}: {st}"
        );
        fresh.flush_thread_cache();
        assert_eq!(fresh.audit().blocks_out, 0);
    }
}

/// Spare recycling: small arenas dropped and rebuilt on one thread, boxes
/// of the old one dropped first on another thread; the new arena's owner
/// pointers must name the new heap (audit checks every SuperSlab's owner).
#[test]
fn recycled_spares_keep_owners() {
    let _g = serial();
    for round in 0..100 {
        let arena = SmallMidArena::new();
        let (tx, rx) = mpsc::channel::<(P, usize)>();
        std::thread::scope(|s| {
            let a = &arena;
            s.spawn(move || {
                for n in [40usize, 5000, 100 * KIB, 2 * MIB] {
                    let b = a.alloc_slice_fill_with(n, |i| pat(round, i));
                    tx.send((P(ArenaBox::into_raw(b).cast()), n)).unwrap();
                }
            });
        });
        let got: Vec<_> = rx.iter().collect();
        std::thread::scope(|s| {
            s.spawn(move || {
                for (p, n) in got {
                    verify(p.0, n, round, "recycled");
                    // SAFETY: from into_raw on `arena`, alive.
                    drop(unsafe {
                        ArenaBox::<[u8]>::from_raw(core::ptr::slice_from_raw_parts_mut(p.0, n))
                    });
                }
            });
        });
        let st = arena.stats();
        assert_eq!(
            (st.large_allocs, st.huge_bytes),
            (st.large_frees, 0),
            "{st}"
        );
        arena.audit();
        drop(arena);
    }
}

/// Small miri-sized check: box of each kind, dropped on another thread.
#[test]
fn miri_small_cross_thread_boxes() {
    let _g = serial();
    let arena = SmallMidArena::new();
    let a = arena.alloc([7u8; 24]);
    let b = arena.alloc_slice_fill_with(100 * KIB, |i| i as u8);
    let c = arena.alloc_slice_fill_with(1100 * KIB, |i| (i >> 3) as u8);
    std::thread::scope(|s| {
        s.spawn(move || {
            assert_eq!(a[3], 7);
            assert_eq!(b[1000], (1000 % 256) as u8);
            assert_eq!(c[8000], ((8000 >> 3) % 256) as u8);
            drop((a, b, c));
        });
    });
    let st = arena.stats();
    assert_eq!(st.large_allocs, st.large_frees);
}

#[allow(dead_code)]
fn _unused(_: Layout) {}

/// A destroyed arena's non-home SuperSlabs go to the warm cache poisoned
/// (under `smallmid_asan`) from their `blocks_from`, now right after the
/// header; a new arena that takes one as its home writes its state there.
/// Without ASan this only checks that the reuse happens and works.
#[test]
fn non_home_superslab_reused_as_home() {
    let _g = serial();
    let a = SmallMidArena::new();
    let home = ss_base(&*a.alloc(1u8)); // the first mixed slab: home slab 0
    a.reserve(6 * MIB).unwrap();
    // Addresses of the SuperSlabs: spans of 15 slabs, one per SuperSlab.
    let big = l(15 * SLAB - 4096, 8);
    let sp: Vec<_> = (0..6).map(|_| a.allocate(big).unwrap()).collect();
    let non_home: Vec<usize> = sp
        .iter()
        .map(|p| ss_base(p.cast::<u8>().as_ptr()))
        .filter(|&b| b != home)
        .collect();
    assert!(a.stats().superslabs > 4);
    drop(sp); // the spans are freed wholesale with the arena
    drop(a); // destroyed: too many SuperSlabs to keep as a spare
    #[cfg(smallmid_asan)]
    {
        extern "C" {
            fn __asan_address_is_poisoned(addr: *const u8) -> i32;
        }
        for &b in &non_home {
            // SAFETY: ASan only looks at its shadow.
            let p = unsafe { __asan_address_is_poisoned((b + 1300) as *const u8) };
            eprintln!("after drop: {b:#x}+1300 poisoned={p}");
        }
    }
    let mut keep = Vec::new();
    let mut hit = false;
    for _ in 0..40 {
        let b = SmallMidArena::new();
        let h = ss_base(&*b.alloc(7u8));
        let x = b.alloc([3u8; 100]);
        assert_eq!(x[99], 3);
        drop(x);
        if non_home.contains(&h) {
            hit = true;
            b.audit();
            keep.push(b);
            break;
        }
        keep.push(b);
    }
    eprintln!("a former non-home SuperSlab became a home: {hit}");
}

/// Miri-sized: boxes of small blocks in a non-home SuperSlab (its slab 0,
/// or any), made on one thread and dropped on another: `owner_of` goes
/// from a grown SuperSlab's owner to the arena.
#[test]
fn miri_non_home_owner_boxes() {
    let _g = serial();
    let arena = SmallMidArena::new();
    let big = l(15 * SLAB - 4096, 8);
    let sp: Vec<_> = (0..3).map(|_| arena.allocate(big).unwrap()).collect();
    let a = &arena;
    let boxes: Vec<ArenaBox<'_, [u64; 4]>> = std::thread::scope(|s| {
        s.spawn(move || (0..8u64).map(|i| a.alloc([i; 4])).collect())
            .join()
            .unwrap()
    });
    let homes: Vec<usize> = sp
        .iter()
        .map(|p| ss_base(p.cast::<u8>().as_ptr()))
        .collect();
    let in_grown = boxes
        .iter()
        .filter(|b| homes[1..].contains(&ss_base(b.as_ptr().cast())))
        .count();
    eprintln!("{in_grown} boxes in grown SuperSlabs");
    std::thread::scope(|s| {
        s.spawn(move || {
            for (i, b) in boxes.into_iter().enumerate() {
                assert_eq!(b[3], i as u64);
                drop(b);
            }
        });
    });
    for p in sp {
        // SAFETY: allocated above with `big`.
        unsafe { arena.deallocate(p.cast(), big) };
    }
}

/// Miri-sized: a thread's exit against the arena's drop on another thread.
#[test]
fn miri_thread_exit_vs_drop() {
    let _g = serial();
    let base = in_use_after_trim();
    for _ in 0..2 {
        let arena = Arc::new(SmallMidArena::new());
        let a1 = arena.clone();
        let t1 = std::thread::spawn(move || {
            drop(a1.alloc([1u8; 100]));
            let sl = l(2 * SLAB - 10, 8);
            let p = a1.allocate(sl).unwrap();
            // SAFETY: just allocated.
            unsafe { a1.deallocate(p.cast(), sl) };
            drop(a1);
        });
        let t2 = std::thread::spawn(move || drop(arena));
        t1.join().unwrap();
        t2.join().unwrap();
    }
    let now = in_use_after_trim();
    assert!(now <= base, "SuperSlabs in use: {base} before, {now} after");
}
