//! Hostile review 12: spans kept by front caches (a4c4a0b) and the warm
//! cache's decay on arena drops (10d33d4). Stats exactness with spans freed
//! across threads, exits, resets, recycled spares, alignment, resizes,
//! limits, data integrity, decommit interplay, many threads, and the decay
//! tick under concurrent drops.
#![cfg(not(miri))]

mod common;
use common::*;

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::{global_stats, SharedArena, SmallMidArena};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// A layout of a span of `k` slabs (32 KiB + 1 ..= 256 KiB for k <= 4).
fn span(k: usize) -> Layout {
    l(k * SLAB - 1000, 8)
}

fn pat(seed: usize, i: usize) -> u8 {
    (seed.wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 8)) as u8
}

/// Writes a pattern every 512 bytes and at both ends (fast for 256 KiB).
fn fill(p: *mut u8, n: usize, seed: usize) {
    let mut i = 0;
    while i < n {
        // SAFETY: the range is inside a live block the test owns.
        unsafe { p.add(i).write(pat(seed, i)) };
        i += 512;
    }
    // SAFETY: the range is inside a live block the test owns.
    unsafe { p.add(n - 1).write(pat(seed, n - 1)) };
}

#[track_caller]
fn verify(p: *const u8, n: usize, seed: usize, what: &str) {
    let mut i = 0;
    while i < n {
        // SAFETY: the range is inside a live block the test owns.
        let v = unsafe { p.add(i).read() };
        assert_eq!(v, pat(seed, i), "{what}: byte {i} of {n} at {p:p} changed");
        i += 512;
    }
    // SAFETY: the range is inside a live block the test owns.
    let v = unsafe { p.add(n - 1).read() };
    assert_eq!(
        v,
        pat(seed, n - 1),
        "{what}: last byte of {n} at {p:p} changed"
    );
}

/// A pointer that may cross threads (tests only).
#[derive(Clone, Copy, Debug)]
struct P(*mut u8);
// SAFETY: a plain pointer wrapper; the pointee is only used while live (the test joins its threads first).
unsafe impl Send for P {}

/// An arena reference that may cross to threads that use it only while the
/// test keeps it alive and unborrowed mutably.
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

fn settled(threads: usize) -> smallmid::GlobalStats {
    for _ in 0..400 {
        let g = global_stats();
        if g.threads <= threads {
            return g;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    global_stats()
}

#[track_caller]
fn expect_stats(a: &SmallMidArena, blocks: u64, bytes: u64, allocs: u64, frees: u64, what: &str) {
    let s = a.stats();
    assert_eq!(
        (
            s.blocks_in_use,
            s.bytes_in_use,
            s.large_allocs,
            s.large_frees
        ),
        (blocks, bytes, allocs, frees),
        "{what}: (blocks_in_use, bytes_in_use, large_allocs, large_frees) {s}"
    );
}

// ---------------------------------------------------------------------------
// Stats exactness

/// Spans the main thread allocated, freed on another (live) thread: kept
/// there; stats exact at every step, also after that thread takes them
/// again, frees them again and exits.
#[test]
fn stats_exact_spans_freed_on_other_thread_then_exit() {
    let _g = serial();
    let a = SmallMidArena::new();
    let ks = [1usize, 2, 3, 4, 1, 2, 3, 4];
    let bytes: u64 = ks.iter().map(|&k| (k * SLAB) as u64).sum();
    let blocks: Vec<P> = ks
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let b = a.allocate(span(k)).unwrap();
            assert_eq!(b.len(), k * SLAB);
            fill(b.cast::<u8>().as_ptr(), k * SLAB, i);
            P(b.cast::<u8>().as_ptr())
        })
        .collect();
    expect_stats(&a, 8, bytes, 8, 0, "allocated");
    let r = R(&a);
    let (to_t, from_main) = mpsc::channel::<u32>();
    let (to_main, from_t) = mpsc::channel::<u32>();
    let h = std::thread::spawn(move || {
        let a = r.get();
        for (i, (p, &k)) in blocks.iter().zip(&ks).enumerate() {
            verify(p.0, k * SLAB, i, "cross");
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(NonNull::new(p.0).unwrap(), span(k)) };
        }
        to_main.send(1).unwrap();
        from_main.recv().unwrap();
        // Take them again (same lengths) and hold them.
        let again: Vec<P> = ks
            .iter()
            .map(|&k| P(a.allocate(span(k)).unwrap().cast::<u8>().as_ptr()))
            .collect();
        to_main.send(2).unwrap();
        from_main.recv().unwrap();
        for (p, &k) in again.iter().zip(&ks) {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(NonNull::new(p.0).unwrap(), span(k)) };
        }
        to_main.send(3).unwrap();
        from_main.recv().unwrap();
    });
    assert_eq!(from_t.recv().unwrap(), 1);
    expect_stats(&a, 0, 0, 8, 8, "freed on the other thread (kept there)");
    to_t.send(0).unwrap();
    assert_eq!(from_t.recv().unwrap(), 2);
    expect_stats(&a, 8, bytes, 16, 8, "taken again on the other thread");
    to_t.send(0).unwrap();
    assert_eq!(from_t.recv().unwrap(), 3);
    expect_stats(&a, 0, 0, 16, 16, "freed again");
    assert!(a.allocated_bytes() >= bytes as usize, "kept spans are held");
    to_t.send(0).unwrap();
    h.join().unwrap();
    expect_stats(&a, 0, 0, 16, 16, "after the thread exited");
    assert_eq!(a.allocated_bytes(), 0, "an exit gives kept spans back");
    assert_eq!(a.audit().span_slabs, 0);
    assert_eq!(a.stats().thread_caches, 0);
}

/// `stats()` while threads that keep spans exit: the arena's live set does
/// not change (every thread frees what it allocated before it exits), so
/// every snapshot must be within [0, live bound]. stats() reads the kept
/// spans' counters under the members lock, then the arena's large counters
/// after releasing it: an exit folding its counters in between counts them
/// twice.
#[test]
fn stats_consistent_while_threads_with_kept_spans_exit() {
    let _g = serial();
    let a = Arc::new(SmallMidArena::new());
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(Mutex::new(None::<String>));
    let snaps = Arc::new(AtomicU64::new(0));
    let watchers: Vec<_> = (0..2)
        .map(|_| {
            let (a, stop, bad, snaps) = (a.clone(), stop.clone(), bad.clone(), snaps.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let s = a.stats();
                    snaps.fetch_add(1, Ordering::Relaxed);
                    // At most 8 workers, each holding one 4-slab span.
                    // (large_allocs and large_frees are two relaxed loads
                    // racing live frees: not compared.)
                    if s.bytes_in_use > 8 * 4 * SLAB as u64 || s.blocks_in_use > 8 {
                        *bad.lock().unwrap() = Some(format!("{s}"));
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut rounds = 0;
    while t0.elapsed() < Duration::from_millis(2500) && !stop.load(Ordering::Relaxed) {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    let b = a.allocate(span(4)).unwrap();
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(b.cast(), span(4)) }; // kept
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in watchers {
        w.join().unwrap();
    }
    let found = bad.lock().unwrap().take();
    assert!(
        found.is_none(),
        "a stats() snapshot during exits (round {rounds}, {} snapshots) was inconsistent: {}",
        snaps.load(Ordering::Relaxed),
        found.unwrap()
    );
    let s = a.stats();
    assert_eq!((s.blocks_in_use, s.bytes_in_use), (0, 0), "{s}");
    assert_eq!(s.large_allocs, s.large_frees, "{s}");
}

/// A thread frees spans it allocated (kept), allocates them again, frees
/// them on its way; many threads, each joined: the arena's counters after
/// all exits are exact and the pool holds no span.
#[test]
fn many_threads_keep_spans_then_exit() {
    let _g = serial();
    let before = global_stats();
    let a = SharedArena::new();
    let n = 80; // past the 64 inline slots
    let hs: Vec<_> = (0..n)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || {
                let mut v = Vec::new();
                for i in 0..8 {
                    let k = 1 + (i + t) % 4;
                    let b = a.allocate(span(k)).unwrap();
                    fill(b.cast::<u8>().as_ptr(), k * SLAB, t * 8 + i);
                    v.push((b, k, t * 8 + i));
                }
                for &(b, k, seed) in &v {
                    verify(b.cast::<u8>().as_ptr(), k * SLAB, seed, "own");
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(b.cast(), span(k)) };
                }
                // Again: served from the kept spans.
                for &(_, k, _) in &v {
                    let b = a.allocate(span(k)).unwrap();
                    fill(b.cast::<u8>().as_ptr(), k * SLAB, 1);
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(b.cast(), span(k)) };
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let s = a.stats();
    assert_eq!((s.blocks_in_use, s.bytes_in_use), (0, 0), "{s}");
    assert_eq!(
        (s.large_allocs, s.large_frees),
        (n as u64 * 16, n as u64 * 16),
        "{s}"
    );
    assert_eq!(s.thread_caches, 0, "{s}");
    assert_eq!(a.allocated_bytes(), 0, "exits gave every kept span back");
    assert_eq!(a.audit().span_slabs, 0);
    drop(a);
    let after = settled(before.threads);
    assert!(after.threads <= before.threads, "{after}");
}

// ---------------------------------------------------------------------------
// Reset, drop, recycling

/// Another thread keeps spans; the owner resets the arena: stats zero, no
/// span held; that thread's next spans are fresh (not its forgotten kept
/// ones, which the reset gave to the pool), and no two live spans overlap.
#[test]
fn reset_while_other_thread_holds_kept_spans() {
    let _g = serial();
    let mut a = SmallMidArena::new();
    let r = R(&a);
    let (to_t, from_main) = mpsc::channel::<u32>();
    let (to_main, from_t) = mpsc::channel::<Vec<P>>();
    let h = std::thread::spawn(move || {
        let mut v = Vec::new();
        for i in 0..8 {
            let k = 1 + i % 4;
            let b = r.get().allocate(span(k)).unwrap();
            v.push((b.cast::<u8>().as_ptr(), k));
        }
        for &(p, k) in &v {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { r.get().deallocate(NonNull::new(p).unwrap(), span(k)) };
        }
        to_main.send(v.iter().map(|x| P(x.0)).collect()).unwrap();
        from_main.recv().unwrap(); // the reset happens here
        let mut out = Vec::new();
        for i in 0..8 {
            let k = 1 + i % 4;
            let b = r.get().allocate(span(k)).unwrap();
            fill(b.cast::<u8>().as_ptr(), k * SLAB, 100 + i);
            out.push(P(b.cast::<u8>().as_ptr()));
        }
        to_main.send(out).unwrap();
        from_main.recv().unwrap();
    });
    let kept = from_t.recv().unwrap();
    assert_eq!(kept.len(), 8);
    expect_stats(&a, 0, 0, 8, 8, "kept on the other thread");
    a.reset();
    expect_stats(&a, 0, 0, 0, 0, "after reset");
    assert_eq!(
        a.allocated_bytes(),
        0,
        "reset gave the kept spans to the pool"
    );
    assert_eq!(a.audit().span_slabs, 0);
    // The main thread takes spans now: likely the very slabs the other
    // thread's cache kept before the reset.
    let mut live = Live::default();
    let mut mine = Vec::new();
    for i in 0..8 {
        let k = 1 + i % 4;
        let b = a.allocate(span(k)).unwrap();
        let p = b.cast::<u8>().as_ptr();
        fill(p, k * SLAB, 200 + i);
        live.add(p, k * SLAB, "main after reset");
        mine.push((p, k));
    }
    to_t.send(0).unwrap();
    let theirs = from_t.recv().unwrap();
    for (i, p) in theirs.iter().enumerate() {
        live.add(p.0, (1 + i % 4) * SLAB, "other thread after reset");
    }
    for (i, &(p, k)) in mine.iter().enumerate() {
        verify(p, k * SLAB, 200 + i, "main's span");
    }
    for (i, p) in theirs.iter().enumerate() {
        verify(p.0, (1 + i % 4) * SLAB, 100 + i, "other thread's span");
    }
    let bytes: u64 = (0..8).map(|i| ((1 + i % 4) * SLAB) as u64).sum::<u64>() * 2;
    expect_stats(&a, 16, bytes, 16, 0, "16 live spans");
    to_t.send(0).unwrap();
    h.join().unwrap();
    for (p, k) in mine {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(NonNull::new(p).unwrap(), span(k)) };
    }
    for (i, p) in theirs.iter().enumerate() {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(NonNull::new(p.0).unwrap(), span(1 + i % 4)) };
    }
    expect_stats(&a, 0, 0, 16, 16, "all freed");
    a.flush_thread_cache();
    assert_eq!(a.allocated_bytes(), 0);
    a.audit();
}

/// The arena is dropped on another thread while a live thread keeps spans
/// in it, then recycled: the recycled arena starts empty, and its spans are
/// handed out once each.
#[test]
fn arena_dropped_elsewhere_while_thread_keeps_spans_recycled_clean() {
    let _g = serial();
    let a = SmallMidArena::new();
    let addr = a.stats(); // touch
    let _ = addr;
    let r = R(&a);
    let (to_t, from_main) = mpsc::channel::<u32>();
    let (to_main, from_t) = mpsc::channel::<u32>();
    let keeper = std::thread::spawn(move || {
        for i in 0..8 {
            let k = 1 + i % 4;
            let b = r.get().allocate(span(k)).unwrap();
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { r.get().deallocate(b.cast(), span(k)) };
        }
        to_main.send(0).unwrap();
        from_main.recv().unwrap();
        // The arena is gone; this thread lives on and uses a new one.
        let b = SmallMidArena::new();
        for i in 0..8 {
            let k = 1 + i % 4;
            let x = b.allocate(span(k)).unwrap();
            fill(x.cast::<u8>().as_ptr(), k * SLAB, i);
            verify(x.cast::<u8>().as_ptr(), k * SLAB, i, "new arena");
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { b.deallocate(x.cast(), span(k)) };
        }
        to_main.send(1).unwrap();
        from_main.recv().unwrap();
    });
    from_t.recv().unwrap();
    let state_of = |a: &SmallMidArena| format!("{a:?}");
    let name = state_of(&a);
    // Dropped on a third thread, twice over so that this arena reaches
    // the shared spares.
    std::thread::spawn(move || {
        let other = SmallMidArena::new();
        drop(a);
        drop(other);
    })
    .join()
    .unwrap();
    to_t.send(0).unwrap();
    from_t.recv().unwrap();
    // Take spares until ours comes back (or give up: then nothing to check).
    let mut held = Vec::new();
    let mut found = None;
    for _ in 0..40 {
        let b = SmallMidArena::new();
        if state_of(&b) == name {
            found = Some(b);
            break;
        }
        held.push(b);
    }
    if let Some(b) = found {
        expect_stats(&b, 0, 0, 0, 0, "recycled arena");
        assert_eq!(b.allocated_bytes(), 0);
        let mut live = Live::default();
        let mut v = Vec::new();
        for i in 0..16 {
            let k = 1 + i % 4;
            let x = b.allocate(span(k)).unwrap();
            let p = x.cast::<u8>().as_ptr();
            live.add(p, k * SLAB, "recycled");
            fill(p, k * SLAB, i);
            v.push((p, k));
        }
        for (i, &(p, k)) in v.iter().enumerate() {
            verify(p, k * SLAB, i, "recycled");
        }
        assert_eq!(b.audit().span_slabs, 40);
        for (p, k) in v {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { b.deallocate(NonNull::new(p).unwrap(), span(k)) };
        }
        expect_stats(&b, 0, 0, 16, 16, "recycled, freed");
    }
    drop(held);
    to_t.send(0).unwrap();
    keeper.join().unwrap();
}

/// This thread's arena with kept spans dropped into its own spare and taken
/// again by `new()`: nothing kept survives (the same span handed out twice
/// would overlap), counters zero.
#[test]
fn own_spare_with_kept_spans_recycled() {
    let _g = serial();
    for round in 0..20 {
        let a = SmallMidArena::new();
        let mut live = Live::default();
        let mut v = Vec::new();
        for i in 0..8 {
            let k = 1 + (i + round) % 4;
            let b = a.allocate(span(k)).unwrap();
            v.push((b.cast::<u8>().as_ptr(), k));
        }
        // Half freed (kept), half leaked into the drop.
        for &(p, k) in &v[..4] {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(NonNull::new(p).unwrap(), span(k)) };
        }
        drop(a);
        let b = SmallMidArena::new();
        expect_stats(&b, 0, 0, 0, 0, "recycled spare");
        assert_eq!(b.allocated_bytes(), 0, "round {round}");
        let mut w = Vec::new();
        for i in 0..12 {
            let k = 1 + (i + round) % 4;
            let x = b.allocate(span(k)).unwrap();
            let p = x.cast::<u8>().as_ptr();
            live.add(p, k * SLAB, "after recycling");
            fill(p, k * SLAB, i);
            w.push((p, k));
        }
        for (i, &(p, k)) in w.iter().enumerate() {
            verify(p, k * SLAB, i, "after recycling");
        }
        let slabs: usize = w.iter().map(|x| x.1).sum();
        assert_eq!(b.audit().span_slabs, slabs);
        drop(b);
    }
}

/// An unlimited arena whose caches kept spans (this thread's and another
/// live thread's) recycled as a limited one: the whole limit is usable by
/// spans at once; then back to unlimited.
#[test]
fn spare_with_kept_spans_switches_to_limited_and_back() {
    let _g = serial();
    let a = SmallMidArena::new();
    let r = R(&a);
    let (to_t, from_main) = mpsc::channel::<u32>();
    let (to_main, from_t) = mpsc::channel::<u32>();
    let other = std::thread::spawn(move || {
        let v: Vec<_> = (0..4).map(|_| r.get().allocate(span(4)).unwrap()).collect();
        for b in v {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { r.get().deallocate(b.cast(), span(4)) };
        }
        to_main.send(0).unwrap();
        from_main.recv().unwrap();
    });
    from_t.recv().unwrap();
    let v: Vec<_> = (0..4).map(|_| a.allocate(span(4)).unwrap()).collect();
    for b in v {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(b.cast(), span(4)) };
    }
    assert!(a.stats().superslabs <= 4);
    let name = format!("{a:?}");
    drop(a); // this thread's spare
    let lim = SmallMidArena::builder().memory_limit(MIB).build();
    assert_eq!(
        format!("{lim:?}").split(',').next(),
        name.split(',').next(),
        "the spare"
    );
    assert_eq!(lim.allocated_bytes(), 0);
    let mut v = Vec::new();
    for _ in 0..4 {
        v.push(
            lim.allocate(span(4))
                .expect("1 MiB limit: four 256 KiB spans fit"),
        );
    }
    assert!(lim.allocate(span(1)).is_err(), "limit full");
    assert_eq!(lim.allocated_bytes(), MIB);
    for b in v.drain(..) {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { lim.deallocate(b.cast(), span(4)) };
    }
    assert_eq!(lim.allocated_bytes(), 0, "a limited arena keeps no span");
    drop(lim);
    let free = SmallMidArena::new();
    assert_eq!(free.memory_limit(), usize::MAX);
    expect_stats(&free, 0, 0, 0, 0, "unlimited again");
    for _ in 0..6 {
        v.push(free.allocate(span(4)).unwrap());
    }
    assert_eq!(free.audit().span_slabs, 24);
    for b in v.drain(..) {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { free.deallocate(b.cast(), span(4)) };
    }
    to_t.send(0).unwrap();
    other.join().unwrap();
}

// ---------------------------------------------------------------------------
// Alignment and resizing

/// Spans aligned past a slab (step 2 and 4) freed into the cache, then
/// requested with and without alignment: every block aligned as asked, no
/// overlap, data intact, stats exact, audit's span slabs match.
#[test]
fn aligned_spans_kept_and_requested_again() {
    let _g = serial();
    let a = SmallMidArena::new();
    let mut live = Live::default();
    let mut rng = Rng(0x1234_5678);
    let mut v: Vec<(*mut u8, Layout, usize, usize)> = Vec::new();
    let (mut allocs, mut frees) = (0u64, 0u64);
    for round in 0..3000 {
        if v.len() < 12 && (v.is_empty() || rng.below(2) == 0) {
            let k = 1 + rng.below(4);
            let align = [8, SLAB, 128 * KIB, 256 * KIB][rng.below(4)];
            let lay = l(k * SLAB - rng.below(30 * KIB), align);
            let b = a.allocate(lay).unwrap();
            let p = b.cast::<u8>().as_ptr();
            assert_eq!(p as usize % align, 0, "round {round}: {lay:?} at {p:p}");
            assert_eq!(b.len(), k * SLAB);
            live.add(p, k * SLAB, "aligned");
            fill(p, k * SLAB, round);
            v.push((p, lay, k, round));
            allocs += 1;
        } else {
            let (p, lay, k, seed) = v.swap_remove(rng.below(v.len()));
            verify(p, k * SLAB, seed, "aligned");
            live.remove(p);
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(NonNull::new(p).unwrap(), lay) };
            frees += 1;
        }
    }
    let bytes: u64 = v.iter().map(|x| (x.2 * SLAB) as u64).sum();
    expect_stats(&a, v.len() as u64, bytes, allocs, frees, "aligned churn");
    a.flush_thread_cache();
    let slabs: usize = v.iter().map(|x| x.2).sum();
    assert_eq!(a.audit().span_slabs, slabs, "after a flush only live spans");
    assert_eq!(a.allocated_bytes(), slabs * SLAB);
    for (p, lay, _, _) in v {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(NonNull::new(p).unwrap(), lay) };
    }
    expect_stats(&a, 0, 0, allocs, allocs, "all freed");
}

/// Grow and shrink across slab counts (and into and out of size classes
/// and huge blocks): contents follow, stats exact after every step.
#[test]
fn realloc_spans_across_slab_counts() {
    let _g = serial();
    let a = SmallMidArena::new();
    let sizes = [
        40 * KIB,
        100 * KIB,
        150 * KIB,
        250 * KIB,
        2 * SLAB,
        SLAB,
        33 * KIB,
        20 * KIB,
        300 * KIB,
        1200 * KIB,
        200 * KIB,
        64 * KIB,
        250 * KIB,
    ];
    for round in 0..40 {
        let mut lay = l(sizes[0], 8);
        let b = a.allocate(lay).unwrap();
        let mut p = b.cast::<u8>();
        for i in 0..lay.size() {
            // SAFETY: the range is inside a live block the test owns.
            unsafe { p.as_ptr().add(i).write(pat(round, i)) };
        }
        for &s in &sizes[1..] {
            let new = l(s, 8);
            // SAFETY: the range is inside a live block the test owns.
            let nb = unsafe {
                if s > lay.size() {
                    a.grow(p, lay, new).unwrap()
                } else {
                    a.shrink(p, lay, new).unwrap()
                }
            };
            let keep = s.min(lay.size());
            p = nb.cast();
            let mut i = 0;
            while i < keep {
                assert_eq!(
                    // SAFETY: the range is inside a live block the test owns.
                    unsafe { p.as_ptr().add(i).read() },
                    pat(round, i),
                    "round {round}: {} -> {s}: byte {i}",
                    lay.size()
                );
                i += 97;
            }
            for i in keep..s {
                // SAFETY: the range is inside a live block the test owns.
                unsafe { p.as_ptr().add(i).write(pat(round, i)) };
            }
            lay = new;
            let st = a.stats();
            assert_eq!(st.blocks_in_use, 1, "round {round} at {s}: {st}");
        }
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(p, lay) };
        let st = a.stats();
        assert_eq!(
            (st.blocks_in_use, st.bytes_in_use),
            (0, 0),
            "round {round}: {st}"
        );
        assert_eq!(st.large_allocs, st.large_frees, "{st}");
    }
    a.flush_thread_cache();
    assert_eq!(a.audit().span_slabs, 0);
}

// ---------------------------------------------------------------------------
// Kept spans: handed out once, held, flushed

/// Freed spans come back to the same thread, each at most once, and never
/// while live; a flush returns them to the pool without changing stats.
#[test]
fn kept_spans_handed_out_once_and_flushed() {
    let _g = serial();
    let a = SmallMidArena::new();
    let mut first = Vec::new();
    for i in 0..8 {
        let k = 1 + i % 4;
        first.push((a.allocate(span(k)).unwrap().cast::<u8>().as_ptr(), k));
    }
    let slabs: usize = first.iter().map(|x| x.1).sum();
    for &(p, k) in &first {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(NonNull::new(p).unwrap(), span(k)) };
    }
    assert_eq!(
        a.audit().span_slabs,
        slabs,
        "kept spans stay in use for the pool"
    );
    assert_eq!(a.allocated_bytes(), slabs * SLAB);
    expect_stats(&a, 0, 0, 8, 8, "kept");
    let mut again = Vec::new();
    let mut seen = HashSet::new();
    let mut live = Live::default();
    for i in 0..16 {
        let k = 1 + i % 4;
        let p = a.allocate(span(k)).unwrap().cast::<u8>().as_ptr();
        assert!(seen.insert(p as usize), "span {p:p} handed out twice");
        live.add(p, k * SLAB, "again");
        fill(p, k * SLAB, i);
        again.push((p, k));
    }
    let reused = again
        .iter()
        .filter(|(p, _)| first.iter().any(|f| f.0 == *p))
        .count();
    assert_eq!(reused, 8, "every kept span served its thread again");
    for (i, &(p, k)) in again.iter().enumerate() {
        verify(p, k * SLAB, i, "again");
    }
    for &(p, k) in &again {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(NonNull::new(p).unwrap(), span(k)) };
    }
    let s0 = a.stats();
    a.flush_thread_cache();
    let s1 = a.stats();
    assert_eq!(
        (
            s0.blocks_in_use,
            s0.bytes_in_use,
            s0.large_allocs,
            s0.large_frees
        ),
        (
            s1.blocks_in_use,
            s1.bytes_in_use,
            s1.large_allocs,
            s1.large_frees
        ),
        "a flush changes no counter"
    );
    assert_eq!(a.allocated_bytes(), 0, "flush returned every kept span");
    assert_eq!(a.audit().span_slabs, 0);
    // At most 8 spans and 32 slabs are kept: 9 four-slab spans leave one.
    let v: Vec<_> = (0..9).map(|_| a.allocate(span(4)).unwrap()).collect();
    for b in v {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(b.cast(), span(4)) };
    }
    assert!(a.allocated_bytes() <= 32 * SLAB, "{}", a.allocated_bytes());
    a.flush_thread_cache();
    assert_eq!(a.allocated_bytes(), 0);
}

/// Four threads churn spans of 1..=4 slabs (and larger, and small blocks),
/// handing a third of them to a neighbour to free: no two live blocks
/// overlap, data intact, stats exact at the end.
#[test]
fn cross_thread_span_churn_integrity() {
    let _g = serial();
    let a = SharedArena::new();
    let live = Arc::new(Mutex::new(Live::default()));
    let n = 4;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel::<(P, usize, usize)>()).unzip();
    let barrier = Arc::new(Barrier::new(n));
    let allocs = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let (a, live, barrier, allocs) =
                (a.clone(), live.clone(), barrier.clone(), allocs.clone());
            let next = txs[(t + 1) % n].clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9 + t as u64);
                let mut mine: Vec<(P, usize, usize)> = Vec::new();
                let free = |p: P, size: usize, seed: usize| {
                    verify(p.0, size, seed, "churn");
                    live.lock().unwrap().remove(p.0);
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(NonNull::new(p.0).unwrap(), l(size, 8)) };
                };
                for i in 0..3000 {
                    while let Ok((p, size, seed)) = rx.try_recv() {
                        free(p, size, seed);
                    }
                    if mine.len() < 16 && rng.below(3) != 0 {
                        let size = match rng.below(10) {
                            0 => 500 + rng.below(3000),
                            1 => 300 * KIB + rng.below(200 * KIB),
                            _ => 33 * KIB + rng.below(4 * SLAB - 33 * KIB),
                        };
                        let b = a.allocate(l(size, 8)).unwrap();
                        allocs.fetch_add(1, Ordering::Relaxed);
                        let p = b.cast::<u8>().as_ptr();
                        let seed = t * 100_000 + i;
                        live.lock().unwrap().add(p, size, "churn");
                        fill(p, size, seed);
                        mine.push((P(p), size, seed));
                    } else if !mine.is_empty() {
                        let (p, size, seed) = mine.swap_remove(rng.below(mine.len()));
                        if rng.below(3) == 0 {
                            let _ = next.send((p, size, seed));
                        } else {
                            free(p, size, seed);
                        }
                    }
                }
                for (p, size, seed) in mine.drain(..) {
                    free(p, size, seed);
                }
                drop(next);
                barrier.wait();
                while let Ok((p, size, seed)) = rx.recv_timeout(Duration::from_millis(50)) {
                    free(p, size, seed);
                }
            })
        })
        .collect();
    drop(txs);
    for h in hs {
        h.join().unwrap();
    }
    assert!(live.lock().unwrap().0.is_empty());
    let s = a.stats();
    assert_eq!((s.blocks_in_use, s.bytes_in_use), (0, 0), "{s}");
    assert_eq!(s.large_allocs, s.large_frees, "{s}");
    assert!(allocs.load(Ordering::Relaxed) > 1000);
    a.flush_thread_cache();
    assert_eq!(a.allocated_bytes(), 0, "{s}");
    assert_eq!(a.audit().span_slabs, 0);
}

// ---------------------------------------------------------------------------
// Limits

/// A limited arena never keeps a span: memory comes back at the free.
#[test]
fn limited_arena_keeps_no_span() {
    let _g = serial();
    let a = SmallMidArena::builder().memory_limit(MIB).build();
    for _ in 0..50 {
        let v: Vec<_> = (0..4).map(|_| a.allocate(span(4)).unwrap()).collect();
        assert!(a.allocate(span(1)).is_err());
        for b in v {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(b.cast(), span(4)) };
        }
        assert_eq!(a.allocated_bytes(), 0);
        // The whole limit again, as other lengths, from another thread.
        std::thread::scope(|s| {
            s.spawn(|| {
                let v: Vec<_> = (0..16).map(|_| a.allocate(span(1)).unwrap()).collect();
                for b in v {
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(b.cast(), span(1)) };
                }
                assert_eq!(a.allocated_bytes(), 0);
            });
        });
    }
    expect_stats(&a, 0, 0, 50 * 20, 50 * 20, "limited");
}

/// A limit set at run time while another live thread's cache keeps spans
/// it freed: "if the arena's live memory does not fit in bytes" is the only
/// documented refusal; nothing is live here.
#[test]
fn runtime_limit_with_spans_kept_by_another_thread() {
    let _g = serial();
    let a = SmallMidArena::new();
    let r = R(&a);
    let (to_t, from_main) = mpsc::channel::<u32>();
    let (to_main, from_t) = mpsc::channel::<u32>();
    let h = std::thread::spawn(move || {
        let v: Vec<_> = (0..8).map(|_| r.get().allocate(span(4)).unwrap()).collect();
        for b in v {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { r.get().deallocate(b.cast(), span(4)) };
        }
        to_main.send(0).unwrap();
        from_main.recv().unwrap();
    });
    from_t.recv().unwrap();
    expect_stats(&a, 0, 0, 8, 8, "nothing live");
    let held = a.allocated_bytes();
    let set = a.set_memory_limit(MIB);
    let alloc_ok = set.is_ok() && a.allocate(span(4)).is_ok();
    to_t.send(0).unwrap();
    h.join().unwrap();
    assert!(
        set.is_ok(),
        "set_memory_limit(1 MiB) refused with no live block: {held} bytes held by \
         spans another live thread's cache kept"
    );
    assert!(
        alloc_ok,
        "a 256 KiB span refused under a 1 MiB limit with nothing live"
    );
}

/// An unlimited arena whose own cache keeps spans, then limited at run
/// time (under the holdings, so no flush happens): a span request under the
/// limit succeeds (the refused attempt reclaims the kept spans), and the
/// limit is never exceeded.
#[test]
fn runtime_limit_own_kept_spans_reclaimed() {
    let _g = serial();
    let a = SmallMidArena::new();
    let v: Vec<_> = (0..8).map(|_| a.allocate(span(4)).unwrap()).collect();
    for b in v {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(b.cast(), span(4)) };
    }
    assert_eq!(a.allocated_bytes(), 2 * MIB);
    a.set_memory_limit(2 * MIB).unwrap();
    // Different lengths than kept: the pool is full of kept spans.
    let w: Vec<_> = (0..10)
        .map(|_| a.allocate(span(3)).expect("kept spans reclaimed"))
        .collect();
    assert!(a.allocated_bytes() <= 2 * MIB);
    for b in w {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(b.cast(), span(3)) };
    }
    assert_eq!(a.allocated_bytes(), 0, "limited now: no span kept");
    a.set_memory_limit(usize::MAX).unwrap();
    let s = a.stats();
    assert_eq!((s.blocks_in_use, s.bytes_in_use), (0, 0), "{s}");
    assert_eq!(s.large_allocs, 18, "{s}");
    assert_eq!(s.large_frees, 18, "{s}");
}

// ---------------------------------------------------------------------------
// OS refusal, decommit

/// The OS refuses memory: a span request reclaims this thread's kept spans
/// (of other lengths) before failing, and succeeds from them.
#[test]
fn os_refusal_reclaims_kept_spans() {
    let _g = serial();
    let a = SmallMidArena::new();
    // Fill the first SuperSlab (15 slabs) with kept spans: 3 x 4 + 1 x 3.
    let v: Vec<_> = [4, 4, 4, 3]
        .iter()
        .map(|&k| (a.allocate(span(k)).unwrap(), k))
        .collect();
    let superslabs = a.stats().superslabs;
    for &(b, k) in &v {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(b.cast(), span(k)) };
    }
    // Threads of earlier tests may still be exiting: what they release
    // would refill the warm cache after the trim.
    settle(1);
    smallmid::trim_warm_cache();
    smallmid::test_hooks::fail_next_maps(u64::MAX);
    let r = a.allocate(span(2));
    let s = a.stats();
    smallmid::test_hooks::fail_next_maps(0);
    let b = r.expect("kept spans given back before refusing");
    assert_eq!(s.superslabs, superslabs, "no new SuperSlab: {s}");
    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
    unsafe { a.deallocate(b.cast(), span(2)) };
    expect_stats(&a, 0, 0, 5, 5, "after");
}

/// A span kept in a huge-paged SuperSlab whose other slabs all emptied:
/// the SuperSlab stays with the arena while kept, goes back once the
/// thread flushes; live blocks elsewhere keep their data.
#[test]
fn kept_span_pins_superslab_until_flush() {
    let _g = serial();
    let a = SmallMidArena::new();
    // Past the first 4 SuperSlabs: 4-slab spans fill 3 per SuperSlab.
    let mut v = Vec::new();
    for i in 0..24 {
        let b = a.allocate(span(4)).unwrap();
        fill(b.cast::<u8>().as_ptr(), 4 * SLAB, i);
        v.push((b.cast::<u8>().as_ptr(), i));
    }
    let peak = a.stats().superslabs;
    assert!(peak >= 6, "{}", a.stats());
    // Keep the first three alive; free the rest (8 go to the cache).
    let keep: Vec<_> = v.drain(..3).collect();
    for &(p, _) in &v {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(NonNull::new(p).unwrap(), span(4)) };
    }
    let held = a.stats().superslabs;
    a.flush_thread_cache();
    let after = a.stats().superslabs;
    assert!(
        after < held,
        "flush freed the SuperSlabs kept spans pinned: {held} -> {after}"
    );
    for &(p, i) in &keep {
        verify(p, 4 * SLAB, i, "live span beside emptied SuperSlabs");
    }
    // Memory reusable: 21 spans again.
    let w: Vec<_> = (0..21).map(|_| a.allocate(span(4)).unwrap()).collect();
    for b in w {
        fill(b.cast::<u8>().as_ptr(), 4 * SLAB, 9);
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(b.cast(), span(4)) };
    }
    for (p, _) in keep {
        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
        unsafe { a.deallocate(NonNull::new(p).unwrap(), span(4)) };
    }
    expect_stats(&a, 0, 0, 45, 45, "after");
    a.flush_thread_cache();
    assert_eq!(a.allocated_bytes(), 0);
}

/// Threads with kept spans exit while the arena is reset and dropped on
/// other threads: no deadlock, no span lost or handed out twice.
#[test]
fn exits_race_with_reset_and_drop() {
    let _g = serial();
    for round in 0..30 {
        let mut a = Box::new(SmallMidArena::new());
        let r = R(&*a);
        let go = Arc::new(Barrier::new(5));
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let go = go.clone();
                std::thread::spawn(move || {
                    for i in 0..6 {
                        let k = 1 + (i + t) % 4;
                        let b = r.get().allocate(span(k)).unwrap();
                        // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                        unsafe { r.get().deallocate(b.cast(), span(k)) };
                    }
                    go.wait();
                    // exit now, racing the reset below
                })
            })
            .collect();
        go.wait();
        a.reset();
        let s = a.stats();
        assert_eq!(
            (s.blocks_in_use, s.bytes_in_use),
            (0, 0),
            "round {round}: {s}"
        );
        // Spans after the reset: distinct and complete.
        let mut live = Live::default();
        let v: Vec<_> = (0..12)
            .map(|i| {
                let k = 1 + i % 4;
                let p = a.allocate(span(k)).unwrap().cast::<u8>().as_ptr();
                live.add(p, k * SLAB, "after reset");
                (p, k)
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let s = a.stats();
        assert_eq!(s.blocks_in_use, 12, "round {round}: {s}");
        assert!(s.large_frees <= s.large_allocs, "round {round}: {s}");
        for (p, k) in v {
            // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
            unsafe { a.deallocate(NonNull::new(p).unwrap(), span(k)) };
        }
        let s = a.stats();
        assert_eq!(
            (s.blocks_in_use, s.bytes_in_use),
            (0, 0),
            "round {round}: {s}"
        );
        a.flush_thread_cache();
        assert_eq!(a.allocated_bytes(), 0, "round {round}");
        // Dropped on another thread.
        std::thread::spawn(move || drop(a)).join().unwrap();
    }
}

// ---------------------------------------------------------------------------
// The warm cache's decay on drops

/// After a peak, many threads dropping arenas concurrently: no deadlock,
/// the warm cache decays towards its floor within a few epochs, the
/// in-use count comes back, and the memory is usable again.
#[test]
fn decay_tick_under_concurrent_drops() {
    let _g = serial();
    let base = settled(usize::MAX);
    // A peak: 48 SuperSlabs in one arena, dropped (destroyed: > 4).
    {
        let big = SmallMidArena::new();
        big.reserve(48 * MIB).unwrap();
        let v: Vec<_> = (0..48 * 3)
            .map(|_| big.allocate(span(4)).unwrap())
            .collect();
        for b in &v {
            // SAFETY: the range is inside a live block the test owns.
            unsafe { b.cast::<u8>().as_ptr().write_bytes(1, 4096) };
        }
        drop(v);
    }
    let peak = global_stats();
    assert!(peak.warm_superslabs > 8, "{peak}");
    let stop = Arc::new(AtomicBool::new(false));
    let drops = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..8)
        .map(|t| {
            let (stop, drops) = (stop.clone(), drops.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let a = SmallMidArena::new();
                    let b = a.allocate(l(100 + (i + t) % 5000, 8)).unwrap();
                    // SAFETY: the range is inside a live block the test owns.
                    unsafe { b.cast::<u8>().as_ptr().write(3) };
                    // Small blocks only: the arena stays one SuperSlab and
                    // is recycled as a spare, so no SuperSlab is released
                    // (a release decays the cache by itself).
                    drop(a);
                    drops.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut low = usize::MAX;
    while t0.elapsed() < Duration::from_millis(3500) {
        std::thread::sleep(Duration::from_millis(50));
        let g = global_stats();
        low = low.min(g.warm_superslabs);
        assert!(g.warm_superslabs <= g.warm_limit_bytes / MIB, "{g}");
    }
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    assert!(
        drops.load(Ordering::Relaxed) > 1000,
        "drops {}",
        drops.load(Ordering::Relaxed)
    );
    assert!(
        low <= 8 + 16,
        "the warm cache never decayed under drops: lowest {low}, peak {peak}"
    );
    let g = settled(base.threads);
    smallmid::trim_warm_cache();
    let g2 = global_stats();
    assert_eq!(g2.warm_superslabs, 0, "{g2}");
    assert!(
        g2.superslabs_in_use <= base.superslabs_in_use + 2,
        "SuperSlabs lost: base {base}, now {g2} (before trim {g})"
    );
    // Reusable: the peak again.
    let big = SmallMidArena::new();
    big.reserve(48 * MIB).unwrap();
    let v: Vec<_> = (0..48 * 3)
        .map(|_| big.allocate(span(4)).unwrap())
        .collect();
    for (i, b) in v.iter().enumerate() {
        fill(b.cast::<u8>().as_ptr(), 4 * SLAB, i);
    }
    for (i, b) in v.iter().enumerate() {
        verify(b.cast::<u8>().as_ptr(), 4 * SLAB, i, "after decay");
    }
    drop(v);
    drop(big);
    smallmid::trim_warm_cache();
}

/// Drops of arenas on many threads while other threads allocate arenas
/// holding several SuperSlabs and trim/set the warm limit: global counts
/// stay consistent (warm within the cap, in-use back to base at the end).
#[test]
fn decay_tick_races_trim_and_limit_changes() {
    let _g = serial();
    let base = settled(usize::MAX);
    smallmid::trim_warm_cache();
    let base_in_use = global_stats().superslabs_in_use;
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..6)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let a = SmallMidArena::new();
                    if (i + t) % 3 == 0 {
                        a.reserve(10 * MIB).unwrap();
                        let v: Vec<_> = (0..12).map(|_| a.allocate(span(4)).unwrap()).collect();
                        for b in &v {
                            // SAFETY: the range is inside a live block the test owns.
                            unsafe { b.cast::<u8>().as_ptr().write(7) };
                        }
                    } else {
                        let _ = a.allocate(l(64, 8)).unwrap();
                    }
                    drop(a);
                    i += 1;
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut k = 0;
    while t0.elapsed() < Duration::from_millis(2000) {
        match k % 3 {
            0 => {
                smallmid::trim_warm_cache();
            }
            1 => smallmid::set_warm_cache_limit(12 * MIB),
            _ => smallmid::set_warm_cache_limit(1 << 30),
        }
        let g = global_stats();
        assert!(g.warm_superslabs <= 1024, "{g}");
        k += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    smallmid::set_warm_cache_limit(1 << 30);
    let _ = settled(base.threads);
    smallmid::trim_warm_cache();
    let g = global_stats();
    assert_eq!(g.warm_superslabs, 0, "{g}");
    assert!(
        g.superslabs_in_use <= base_in_use,
        "SuperSlabs in use after every arena went: base {base_in_use}, now {g}"
    );
}

/// Spans freed by thread-local destructors, both before the crate's own
/// thread-local is destroyed (kept, then returned by the exit) and after
/// it (no cache any more: straight to the pool): nothing stays held, stats
/// exact.
#[test]
fn spans_freed_in_tls_destructors_around_the_exit() {
    use std::cell::RefCell;
    let _g = serial();
    struct Holder(Vec<(P, usize)>, Option<SharedArena>);
    impl Drop for Holder {
        fn drop(&mut self) {
            let a = self.1.take().unwrap();
            for &(p, k) in &self.0 {
                verify(p.0, k * SLAB, k, "tls");
                // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                unsafe { a.deallocate(NonNull::new(p.0).unwrap(), span(k)) };
            }
        }
    }
    thread_local! {
        static EARLY: RefCell<Option<Holder>> = const { RefCell::new(None) };
        static LATE: RefCell<Option<Holder>> = const { RefCell::new(None) };
    }
    let a = SharedArena::new();
    let hs: Vec<_> = (0..6)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || {
                let mk = |a: &SharedArena| {
                    let v: Vec<_> = (1..=4)
                        .map(|k| {
                            let p = a.allocate(span(k)).unwrap().cast::<u8>().as_ptr();
                            fill(p, k * SLAB, k);
                            (P(p), k)
                        })
                        .collect();
                    Holder(v, Some(a.clone()))
                };
                if t % 2 == 0 {
                    // Registered before the crate's thread-local: destroyed after it.
                    EARLY.with(|e| *e.borrow_mut() = Some(mk(&a)));
                    let b = a.allocate(span(1)).unwrap();
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(b.cast(), span(1)) };
                } else {
                    let b = a.allocate(span(1)).unwrap();
                    // SAFETY: a live block of this arena, with the layout it was allocated with; freed once.
                    unsafe { a.deallocate(b.cast(), span(1)) };
                    LATE.with(|e| *e.borrow_mut() = Some(mk(&a)));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let s = a.stats();
    assert_eq!((s.blocks_in_use, s.bytes_in_use), (0, 0), "{s}");
    assert_eq!((s.large_allocs, s.large_frees), (30, 30), "{s}");
    assert_eq!(s.thread_caches, 0, "{s}");
    assert_eq!(a.allocated_bytes(), 0, "a span stayed held after the exits");
    assert_eq!(a.audit().span_slabs, 0);
}
