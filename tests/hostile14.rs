//! Hostile review 14: front caches of up to 1,024 blocks (3ff3405) and
//! flushes returning runs of one slab as a chain (01aad78). Stats and audit
//! exactness with big lists, interleaved runs, mixed-slab runs, slabs
//! emptying mid-flush, cross-thread frees, limits, exits, resets, misuse.
#![cfg(not(miri))]

mod common;
use common::*;

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::SmallMidArena;
use std::sync::{mpsc, Barrier};

/// Per-class sanity of a stats snapshot: allocs - frees == blocks_in_use,
/// and the arena-wide sums match.
#[track_caller]
fn exact(a: &SmallMidArena, blocks: u64, bytes: u64, what: &str) {
    exact_(a, blocks, bytes, what, true)
}

#[track_caller]
fn exact_(a: &SmallMidArena, blocks: u64, bytes: u64, what: &str, cross: bool) {
    let s = a.stats();
    assert_eq!(s.blocks_in_use, blocks, "{what}: blocks_in_use\n{s}");
    assert_eq!(s.bytes_in_use, bytes, "{what}: bytes_in_use\n{s}");
    let mut sum = 0;
    for c in &s.classes {
        assert_eq!(
            c.allocs - c.frees,
            c.blocks_in_use,
            "{what}: class {} allocs/frees/in use\n{s}",
            c.size
        );
        assert!(
            !cross || c.cross_thread_frees <= c.frees,
            "{what}: class {} cross {} > frees {}",
            c.size,
            c.cross_thread_frees,
            c.frees
        );
        sum += c.blocks_in_use;
    }
    assert_eq!(
        sum + s.large_allocs,
        blocks + s.large_frees,
        "{what}: class sum\n{s}"
    );
}

/// Class size of a layout as the arena reports it.
fn class_len(a: &SmallMidArena, lay: Layout) -> usize {
    let b = a.allocate(lay).unwrap();
    let n = b.len();
    // SAFETY: just allocated with `lay`.
    unsafe { a.deallocate(b.cast(), lay) };
    n
}

/// Many rounds in a long-lived arena: small blocks freed in allocation
/// order, in reverse, and shuffled; 2% survive each round. Every survivor's
/// bytes stay intact, no two live blocks overlap, the stats are exact and
/// the audit counts exactly the survivors once the cache is flushed.
#[test]
fn survivors_rounds_exact() {
    let a = SmallMidArena::new();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut live = Live::default();
    let mut survivors: Vec<(*mut u8, Layout, usize, u8)> = Vec::new();
    let (mut blocks, mut bytes) = (0u64, 0u64);
    for round in 0..60 {
        let n = 3000 + rng.below(3000);
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let size = 1 + rng.below(if round % 3 == 0 { 32 } else { 128 });
            let lay = l(size, 1 << rng.below(4));
            let b = a.allocate(lay).unwrap();
            let p = b.cast::<u8>().as_ptr();
            live.add(p, b.len(), "survivors round");
            let tag = (round * 7 + i) as u8;
            stamp(p, size, tag);
            blocks += 1;
            bytes += b.len() as u64;
            v.push((p, lay, b.len(), tag));
        }
        match round % 3 {
            0 => {}
            1 => v.reverse(),
            _ => {
                for i in (1..v.len()).rev() {
                    v.swap(i, rng.below(i + 1));
                }
            }
        }
        for (p, lay, len, tag) in v {
            if rng.below(50) == 0 {
                survivors.push((p, lay, len, tag));
                continue;
            }
            check(p, lay.size(), tag, "round block");
            live.remove(p);
            free(&a, p, lay);
            blocks -= 1;
            bytes -= len as u64;
        }
        for &(p, lay, _, tag) in &survivors {
            check(p, lay.size(), tag, "survivor");
        }
        exact(&a, blocks, bytes, "after a round");
        if round % 10 == 9 {
            a.audit();
            // Some survivors die too.
            let keep = survivors.split_off(survivors.len() / 2);
            for (p, lay, len, tag) in survivors {
                check(p, lay.size(), tag, "dying survivor");
                live.remove(p);
                free(&a, p, lay);
                blocks -= 1;
                bytes -= len as u64;
            }
            survivors = keep;
        }
    }
    a.flush_thread_cache();
    let au = a.audit();
    assert_eq!(
        au.blocks_out as u64, blocks,
        "audit counts exactly the survivors"
    );
    exact(&a, blocks, bytes, "end");
    for (p, lay, _, tag) in survivors {
        check(p, lay.size(), tag, "final survivor");
        free(&a, p, lay);
    }
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
    exact(&a, 0, 0, "all freed");
    assert_eq!(a.audit().class_slabs, 0, "every class slab went back");
}

/// A cache list whose blocks come from several slabs interleaved (A A B A
/// B B C A ...): runs of one, two and many; slabs emptying in the middle of
/// a flush. Then everything is allocated again: no block handed out twice.
#[test]
fn interleaved_slab_runs() {
    for &size in &[8usize, 16, 24, 48, 128] {
        let a = SmallMidArena::new();
        let lay = l(size, 8);
        let per_slab = SLAB / class_len(&a, lay);
        // Enough for 4+ class slabs past any mixed range.
        let n = per_slab * 4 + 500;
        let ps: Vec<*mut u8> = (0..n).map(|_| alloc(&a, lay)).collect();
        // Group by slab, then interleave: take from slab groups in a
        // pattern of run lengths 2,1,1,3,1,7,...
        let mut groups: std::collections::BTreeMap<usize, Vec<*mut u8>> = Default::default();
        for &p in &ps {
            groups.entry(p as usize & !(SLAB - 1)).or_default().push(p);
        }
        let mut gs: Vec<Vec<*mut u8>> = groups.into_values().collect();
        let mut rng = Rng(size as u64 * 77 + 1);
        let mut order = Vec::with_capacity(n);
        while gs.iter().any(|g| !g.is_empty()) {
            let gi = rng.below(gs.len());
            let run = [1, 1, 2, 3, 7, 40][rng.below(6)];
            for _ in 0..run {
                if let Some(p) = gs[gi].pop() {
                    order.push(p);
                }
            }
        }
        assert_eq!(order.len(), n);
        for (i, &p) in order.iter().enumerate() {
            free(&a, p, lay);
            if i % 997 == 0 {
                a.audit();
            }
        }
        exact(&a, 0, 0, "all freed");
        a.flush_thread_cache();
        let au = a.audit();
        assert_eq!(au.blocks_out, 0, "size {size}");
        assert_eq!(
            au.class_slabs, 0,
            "size {size}: every class slab emptied and released"
        );
        // Allocate them all again: distinct blocks.
        let mut live = Live::default();
        let ps: Vec<*mut u8> = (0..n)
            .map(|_| {
                let p = alloc(&a, lay);
                live.add(p, size, "realloc after interleaved flush");
                stamp(p, size, 0x5a);
                p
            })
            .collect();
        for &p in &ps {
            check(p, size, 0x5a, "realloc");
        }
        a.audit();
        for p in ps {
            free(&a, p, lay);
        }
        a.flush_thread_cache();
        assert_eq!(a.audit().blocks_out, 0);
    }
}

/// Blocks of many classes carved from mixed slabs, freed so that a class's
/// cache list holds runs of one mixed slab (flushed as `bytes = size * n`,
/// `blocks = -n`), with mixed slabs emptying mid-flush.
#[test]
fn mixed_slab_runs() {
    let a = SmallMidArena::new();
    let sizes = [8usize, 16, 24, 32, 40, 48, 64, 96, 128, 200, 320, 500];
    for round in 0..20 {
        let mut v = Vec::new();
        // Interleave sizes: a mixed range serves them in carve order.
        for i in 0..6000 {
            let s = sizes[(i * 7 + round) % sizes.len()];
            let lay = l(s, 8);
            let p = alloc(&a, lay);
            stamp(p, s, i as u8);
            v.push((p, lay, i as u8));
        }
        // Free class by class: each class's list gets long runs of the
        // same mixed slab.
        v.sort_by_key(|&(p, lay, _)| (lay.size(), p as usize));
        if round % 2 == 1 {
            v.reverse();
        }
        for (p, lay, t) in v {
            check(p, lay.size(), t, "mixed block");
            free(&a, p, lay);
        }
        exact(&a, 0, 0, "mixed round");
        a.flush_thread_cache();
        let au = a.audit();
        assert_eq!(au.blocks_out, 0, "round {round}");
        assert_eq!(au.mixed_slabs + au.class_slabs, 0, "round {round}: {au:?}");
    }
}

/// Producer/consumer: one thread allocates, another frees (cross-thread
/// frees flushed in runs). Stats exact and the cross count bounded.
#[test]
fn producer_consumer_runs() {
    let a = SmallMidArena::new();
    let (tx, rx) = mpsc::sync_channel::<Vec<(usize, usize)>>(4);
    let total = 200_000usize;
    std::thread::scope(|s| {
        let a = &a;
        s.spawn(move || {
            let mut rng = Rng(99);
            let mut batch = Vec::new();
            for i in 0..total {
                let size = 1 + rng.below(64);
                let p = alloc(a, l(size, 1));
                stamp(p, size, size as u8);
                batch.push((p as usize, size));
                if batch.len() == 3000 || i == total - 1 {
                    tx.send(std::mem::take(&mut batch)).unwrap();
                }
            }
        });
        s.spawn(move || {
            let mut rng = Rng(7);
            for mut b in rx {
                if rng.below(2) == 0 {
                    for i in (1..b.len()).rev() {
                        b.swap(i, rng.below(i + 1));
                    }
                }
                for (p, size) in b {
                    check(p as *const u8, size, size as u8, "consumer");
                    free(a, p as *mut u8, l(size, 1));
                }
            }
        });
    });
    wait_caches(&a, 0);
    exact(&a, 0, 0, "after producer/consumer");
    let s = a.stats();
    let allocs: u64 = s.classes.iter().map(|c| c.allocs).sum();
    let frees: u64 = s.classes.iter().map(|c| c.frees).sum();
    let cross: u64 = s.classes.iter().map(|c| c.cross_thread_frees).sum();
    assert_eq!(allocs, total as u64);
    assert_eq!(frees, total as u64);
    assert!(
        cross > 0,
        "frees by the consumer went to the producer's slabs: {s}"
    );
    let au = a.audit();
    assert_eq!(au.blocks_out, 0);
}

/// Threads exit with every small class's list full (1,024 blocks of the
/// small classes): retiring flushes all of it, stats stay exact.
#[test]
fn exits_with_full_caches() {
    let a = SmallMidArena::new();
    a.reserve(1).unwrap(); // grown: past its seed (audit counts slab blocks)
    let keep: Vec<(usize, Layout)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let a = &a;
                s.spawn(move || {
                    let mut kept = Vec::new();
                    for size in [8usize, 16, 24, 32, 48, 64, 128, 256] {
                        let lay = l(size, 8);
                        let ps: Vec<_> = (0..2500).map(|_| alloc(a, lay)).collect();
                        for (i, p) in ps.into_iter().enumerate() {
                            if i % 97 == t {
                                kept.push((p as usize, lay));
                            } else {
                                free(a, p, lay);
                            }
                        }
                    }
                    kept
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    wait_caches(&a, 0);
    let bytes: u64 = keep
        .iter()
        .map(|&(_, lay)| class_len_const(lay) as u64)
        .sum();
    exact(&a, keep.len() as u64, bytes, "after exits");
    let au = a.audit();
    assert_eq!(
        au.blocks_out,
        keep.len(),
        "retired caches returned every block"
    );
    for (p, lay) in keep {
        free(&a, p as *mut u8, lay);
    }
    a.flush_thread_cache();
    exact(&a, 0, 0, "end");
    assert_eq!(a.audit().blocks_out, 0);
}

fn class_len_const(lay: Layout) -> usize {
    let a = SmallMidArena::new();
    class_len(&a, lay)
}

/// A reset with full front caches (this thread's and an idle retired
/// one's): nothing handed out twice afterwards, stats zero.
#[test]
fn reset_with_full_caches() {
    let mut a = SmallMidArena::new();
    for round in 0..5 {
        std::thread::scope(|s| {
            let a = &a;
            s.spawn(move || {
                for size in [8usize, 16, 32, 64] {
                    let lay = l(size, 8);
                    let ps: Vec<_> = (0..1500).map(|_| alloc(a, lay)).collect();
                    for p in ps {
                        free(a, p, lay);
                    }
                }
                // Some live blocks at the reset.
                for _ in 0..100 {
                    alloc(a, l(16, 8));
                }
            });
        });
        for size in [8usize, 16, 32, 64] {
            let lay = l(size, 8);
            let ps: Vec<_> = (0..3000).map(|_| alloc(&a, lay)).collect();
            for p in ps.into_iter().rev() {
                free(&a, p, lay);
            }
        }
        let _ = alloc(&a, l(24, 8));
        a.reset();
        exact(&a, 0, 0, "after reset");
        a.audit();
        // Ranges a reset gives caches count as out until flushed.
        a.flush_thread_cache();
        assert_eq!(a.audit().blocks_out, 0, "round {round}");
        let mut live = Live::default();
        let mut ps = Vec::new();
        for i in 0..12000 {
            let size = [8usize, 16, 32, 64][i % 4];
            let p = alloc(&a, l(size, 8));
            live.add(p, size, "after reset");
            stamp(p, size, i as u8);
            ps.push((p, size, i as u8));
        }
        for &(p, size, t) in &ps {
            check(p, size, t, "after reset");
        }
        a.audit();
        exact(&a, 12000, ps.iter().map(|x| x.1 as u64).sum(), "refilled");
        for (p, size, _) in ps {
            free(&a, p, l(size, 8));
        }
    }
}

/// Under a limit, blocks freed into the allocating thread's own cache are
/// reclaimed before a refusal: the docs' promise, with 1,024-block lists of
/// several small classes.
#[test]
fn limit_own_cache_reclaimed() {
    for limit in [128 * KIB, 256 * KIB] {
        let a = SmallMidArena::builder().memory_limit(limit).build();
        // Fill the limit with small blocks of several classes.
        let mut ps = Vec::new();
        let sizes = [8usize, 16, 24, 32];
        let mut i = 0;
        loop {
            let lay = l(sizes[i % 4], 8);
            match a.allocate(lay) {
                Ok(b) => ps.push((b.cast::<u8>().as_ptr(), lay)),
                Err(_) => break,
            }
            i += 1;
        }
        let n = ps.len();
        assert!(n > 1000, "limit {limit}: only {n} blocks");
        for (p, lay) in ps {
            free(&a, p, lay);
        }
        // All freed, some still in this thread's cache: a large block as
        // large as the limit's room must still come.
        let big = l(limit - 64 * KIB - 1000, 8);
        let b = a
            .allocate(big)
            .unwrap_or_else(|_| panic!("limit {limit}: refused after freeing all: {}", a.stats()));
        // SAFETY: just allocated.
        unsafe { a.deallocate(b.cast(), big) };
        // And a class the cache never held, filling the limit again.
        let lay = l(40, 8);
        let mut m = 0;
        let mut qs = Vec::new();
        while let Ok(b) = a.allocate(lay) {
            qs.push(b.cast::<u8>().as_ptr());
            m += 1;
        }
        assert!(
            m * 40 >= n * 20 * 8 / 10,
            "limit {limit}: {m} blocks of 40 B after {n} mixed blocks were freed"
        );
        for p in qs {
            free(&a, p, lay);
        }
        a.flush_thread_cache();
        assert_eq!(a.audit().blocks_out, 0);
        exact(&a, 0, 0, "limit end");
    }
}

/// A 256 KiB arena shared by 4 threads freeing each other's blocks: every
/// allocation either succeeds or is refused cleanly, nothing overlaps, and
/// once the threads are gone the whole limit is usable again.
#[test]
fn limited_shared_cross_frees() {
    let limit = 256 * KIB;
    let a = SmallMidArena::builder().memory_limit(limit).build();
    let threads = 4;
    let bar = Barrier::new(threads);
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads)
        .map(|_| mpsc::channel::<Vec<(usize, usize)>>())
        .unzip();
    let refused = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (t, rx) in rxs.into_iter().enumerate() {
            let txs = txs.clone();
            let (a, bar, refused) = (&a, &bar, &refused);
            s.spawn(move || {
                let mut rng = Rng(t as u64 + 11);
                for round in 0..40 {
                    let mut mine = Vec::new();
                    for _ in 0..3000 {
                        let size = 1 + rng.below(48);
                        match a.allocate(l(size, 1)) {
                            Ok(b) => {
                                let p = b.cast::<u8>().as_ptr();
                                stamp(p, size, (size ^ t) as u8);
                                mine.push((p as usize, size));
                            }
                            Err(_) => {
                                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                    txs[(t + 1 + round) % threads].send(mine).unwrap();
                    bar.wait();
                    while let Ok(v) = rx.try_recv() {
                        for (p, size) in v {
                            let p = p as *mut u8;
                            // SAFETY: a live block another thread stamped.
                            let tag = unsafe { p.read() };
                            let owner = tag as usize ^ size;
                            assert!(owner < threads, "block {p:p} of {size} overwritten: {tag}");
                            check(p, size, tag, "cross freed");
                            free(a, p, l(size, 1));
                        }
                    }
                    bar.wait();
                }
            });
        }
        drop(txs);
    });
    wait_caches(&a, 0);
    exact_(&a, 0, 0, "after the threads", false);
    let au = a.audit();
    assert_eq!(au.blocks_out, 0);
    assert_eq!(a.stats().bytes_held, 0, "{}", a.stats());
    // The whole limit usable again, by one big block.
    let big = l(limit - 64 * KIB - 4096, 8);
    let b = a.allocate(big).unwrap_or_else(|_| panic!("{}", a.stats()));
    // SAFETY: just allocated.
    unsafe { a.deallocate(b.cast(), big) };
    let r = refused.into_inner();
    eprintln!("refused {r}");
    assert!(r > 0, "the test did not reach the limit");
}

/// A block freed with a layout of another class: the flush that meets it
/// panics with a clear message; the arena stays consistent (audit) and
/// usable afterwards.
#[cfg(not(feature = "checked"))]
#[test]
fn wrong_class_in_a_run_panics_cleanly() {
    let a = SmallMidArena::new();
    let l16 = l(16, 8);
    let l48 = l(48, 8);
    // Past any mixed range: class slabs of 16 B.
    let ps16: Vec<_> = (0..9000).map(|_| alloc(&a, l16)).collect();
    let ps48: Vec<_> = (0..3000).map(|_| alloc(&a, l48)).collect();
    a.flush_thread_cache();
    let victim = ps16[8000];
    // Free 48s so the bad block lands between runs of 48 B slabs.
    for &p in &ps48[..1000] {
        free(&a, p, l48);
    }
    free(&a, victim, l48); // wrong layout: a 16 B block as 48 B
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for &p in &ps48[1000..] {
            free(&a, p, l48);
        }
        a.flush_thread_cache();
    }));
    let e = r.expect_err("a 16 B block freed as 48 B went unnoticed");
    let msg = panic_message(&*e);
    assert!(msg.contains("wrong layout"), "unclear message: {msg}");
    // Consistent after the panic.
    a.audit();
    let mut live = Live::default();
    for (i, &p) in ps16.iter().enumerate() {
        if p != victim {
            live.add(p, 16, "16 live");
            stamp(p, 16, i as u8);
        }
    }
    // New blocks do not overlap live ones.
    let fresh: Vec<_> = (0..5000)
        .map(|_| {
            let p = alloc(&a, l16);
            live.add(p, 16, "after panic");
            p
        })
        .collect();
    for (i, &p) in ps16.iter().enumerate() {
        if p != victim {
            check(p, 16, i as u8, "16 live after panic");
        }
    }
    a.audit();
    let _ = fresh;
}

/// Under `checked`, a double free of a block sitting in a long cache list
/// panics at the free, naming it.
#[cfg(feature = "checked")]
#[test]
fn checked_double_free_in_big_list() {
    let a = SmallMidArena::new();
    let lay = l(16, 8);
    let ps: Vec<_> = (0..3000).map(|_| alloc(&a, lay)).collect();
    for &p in &ps[..1500] {
        free(&a, p, lay);
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| free(&a, ps[700], lay)));
    let e = r.expect_err("double free unnoticed");
    let msg = panic_message(&*e);
    assert!(
        msg.contains("double free") || msg.contains("not live"),
        "{msg}"
    );
    for &p in &ps[1500..] {
        free(&a, p, lay);
    }
    a.flush_thread_cache();
    a.audit();
    exact(&a, 0, 0, "checked end");
}

/// Slab-wide refills (a slab's whole free list of 8 B blocks: thousands,
/// past the cache's 1,024) then frees: the list over capacity flushes
/// down to half; counts stay exact.
#[test]
fn whole_slab_refill_over_capacity() {
    let a = SmallMidArena::new();
    let lay = l(8, 8);
    for round in 0..6 {
        let ps: Vec<_> = (0..30000).map(|_| alloc(&a, lay)).collect();
        // Keep one per 4096 (pins each slab), free the rest from another
        // thread so the slabs get long free lists.
        let (keep, give): (Vec<_>, Vec<_>) = ps
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % 4096 == 17);
        let give: Vec<usize> = give.into_iter().map(|(_, p)| p as usize).collect();
        std::thread::scope(|s| {
            let a = &a;
            s.spawn(move || {
                for p in give {
                    free(a, p as *mut u8, lay);
                }
            });
        });
        wait_caches(&a, 1);
        // Refill whole lists into this cache, then free them back.
        let again: Vec<_> = (0..20000).map(|_| alloc(&a, lay)).collect();
        let mut live = Live::default();
        for &(_, p) in &keep {
            live.add(p, 8, "kept");
        }
        for &p in &again {
            live.add(p, 8, "again");
        }
        exact(
            &a,
            (keep.len() + again.len()) as u64,
            8 * (keep.len() + again.len()) as u64,
            "again",
        );
        for p in again {
            free(&a, p, lay);
        }
        for (_, p) in keep {
            free(&a, p, lay);
        }
        exact(&a, 0, 0, "round");
        a.flush_thread_cache();
        assert_eq!(a.audit().blocks_out, 0, "round {round}");
    }
}

/// `set_memory_limit` flushes the calling thread's cache first: with
/// 1,024-block lists of four small classes freed in random order (spread
/// over many slabs), lowering the limit to one slab past the home one
/// still succeeds once everything is freed.
#[test]
fn set_limit_after_big_lists() {
    let a = SmallMidArena::new();
    let mut rng = Rng(5);
    let mut ps = Vec::new();
    for size in [8usize, 16, 24, 32] {
        for _ in 0..12000 {
            ps.push((alloc(&a, l(size, 8)), l(size, 8)));
        }
    }
    for i in (1..ps.len()).rev() {
        ps.swap(i, rng.below(i + 1));
    }
    for (p, lay) in ps {
        free(&a, p, lay);
    }
    a.set_memory_limit(128 * KIB)
        .unwrap_or_else(|_| panic!("refused with nothing live: {}", a.stats()));
    // And the arena works within it.
    let big = l(60 * KIB, 8);
    let b = a.allocate(big).unwrap_or_else(|_| panic!("{}", a.stats()));
    // SAFETY: just allocated.
    unsafe { a.deallocate(b.cast(), big) };
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

/// `cross_thread_frees` is documented as "blocks flushed into a slab that
/// another thread's cache last took blocks from: frees that crossed
/// threads", so it can never exceed `frees`. Under a limit, every refused
/// allocation flushes the whole cache, including blocks a refill brought in
/// that were never allocated; flushed into a slab another thread took from
/// since, they count as cross-thread frees. Pre-existing (also fails at
/// bfa11c5, before the two reviewed commits).
#[test]
fn cross_thread_frees_at_most_frees() {
    cross_case(256 * KIB);
}

/// The same without a limit (only exits flush whole caches).
#[test]
fn cross_thread_frees_at_most_frees_unlimited() {
    cross_case(usize::MAX);
}

fn cross_case(limit: usize) {
    let a = SmallMidArena::builder().memory_limit(limit).build();
    let threads = 4;
    let bar = Barrier::new(threads);
    let slots: Vec<std::sync::Mutex<Vec<(usize, usize)>>> =
        (0..threads).map(|_| Default::default()).collect();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (a, bar, slots) = (&a, &bar, &slots);
            s.spawn(move || {
                let mut rng = Rng(t as u64 + 5);
                for _ in 0..30 {
                    let mut mine = Vec::new();
                    for _ in 0..3000 {
                        let size = 1 + rng.below(48);
                        if let Ok(b) = a.allocate(l(size, 1)) {
                            mine.push((b.cast::<u8>().as_ptr() as usize, size));
                        }
                    }
                    *slots[t].lock().unwrap() = mine;
                    bar.wait();
                    // Each thread frees the other's blocks.
                    let theirs = std::mem::take(&mut *slots[(t + 1) % threads].lock().unwrap());
                    for (p, size) in theirs {
                        free(a, p as *mut u8, l(size, 1));
                    }
                    bar.wait();
                }
            });
        }
    });
    wait_caches(&a, 0);
    let s = a.stats();
    for c in &s.classes {
        assert_eq!(c.allocs, c.frees);
        assert!(
            c.cross_thread_frees <= c.frees,
            "class {}: cross_thread_frees {} > frees {}\n{s}",
            c.size,
            c.cross_thread_frees,
            c.frees
        );
    }
}

/// A block carved from a mixed slab freed with a larger class's layout, in
/// a run with that class's own blocks of the same mixed slab (one
/// `mixed_put` of `size * n`): the over-returned bytes are caught when the
/// slab's count runs out, with a panic naming the misuse, not silently.
#[cfg(not(feature = "checked"))]
#[test]
fn wrong_class_in_a_mixed_run_panics() {
    let a = SmallMidArena::new();
    let (l16, l32) = (l(16, 8), l(32, 8));
    let mut v32 = Vec::new();
    let mut v16 = Vec::new();
    for _ in 0..50 {
        v16.push(alloc(&a, l16));
        v32.push(alloc(&a, l32));
    }
    assert_eq!(a.audit().class_slabs, 0, "all from the mixed range");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for (i, &p) in v32.iter().enumerate() {
            free(&a, p, l32);
            if i == 25 {
                free(&a, v16[10], l32); // wrong layout, mid-run
            }
        }
        for (i, &p) in v16.iter().enumerate() {
            if i != 10 {
                free(&a, p, l16);
            }
        }
        a.flush_thread_cache();
    }));
    let e = r.expect_err("a 16 B mixed block freed as 32 B went unnoticed after the slab emptied");
    let msg = panic_message(&*e);
    assert!(msg.starts_with("smallmid:"), "unclear message: {msg}");
    eprintln!("mixed misuse: {msg}");
}

/// A limited arena reset while this thread's and a retired thread's caches
/// hold full small lists: the whole limit is usable right after.
#[test]
fn limited_reset_with_full_caches() {
    let limit = 256 * KIB;
    let mut a = SmallMidArena::builder().memory_limit(limit).build();
    for round in 0..4 {
        std::thread::scope(|s| {
            let a = &a;
            s.spawn(move || {
                for size in [8usize, 16, 32] {
                    let lay = l(size, 8);
                    let ps: Vec<_> = (0..1500).filter_map(|_| a.allocate(lay).ok()).collect();
                    for p in ps {
                        // SAFETY: allocated above with `lay`.
                        unsafe { a.deallocate(p.cast(), lay) };
                    }
                }
            });
        });
        for size in [8usize, 16, 24] {
            let lay = l(size, 8);
            let ps: Vec<_> = (0..1500).filter_map(|_| a.allocate(lay).ok()).collect();
            for p in ps {
                // SAFETY: allocated above with `lay`.
                unsafe { a.deallocate(p.cast(), lay) };
            }
        }
        a.reset();
        exact(&a, 0, 0, "after a limited reset");
        let big = l(limit - 64 * KIB - 4096, 8);
        let b = a.allocate(big).unwrap_or_else(|_| {
            panic!(
                "round {round}: whole limit refused after reset: {}",
                a.stats()
            )
        });
        // SAFETY: just allocated.
        unsafe { a.deallocate(b.cast(), big) };
        a.flush_thread_cache();
        assert_eq!(a.audit().blocks_out, 0);
    }
}
