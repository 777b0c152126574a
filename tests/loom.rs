//! Loom models of every cross-thread protocol, over the real engine.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom
//! ```
//!
//! Under `cfg(loom)` the engine's `sync` facade hands out loom's mutexes,
//! atomics, cells and thread-locals, so each model explores the real
//! code's interleavings (bounded by `LOOM_MAX_PREEMPTIONS`, default 4
//! here). Slab, cache and pool state live in loom cells: an access not
//! ordered by the protocol fails the model. Each model also asserts the
//! arena's accounting afterwards through `audit()`, which checks every
//! invariant and counts the blocks out of their slabs.
#![cfg(loom)]

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use loom::sync::Arc;
use loom::thread;
use smallmid::test_hooks::{cacheless, first_thread_index};
use smallmid::{global_stats, SmallMidArena};

/// Runs `f` as a loom model. The body runs on a spawned thread: loom runs
/// the main thread's thread-local destructors after its globals are gone,
/// so the main thread must never touch the engine.
fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(4, f)
}

/// As [`model`], with at most `bound` preemptions (for models whose
/// threads take many locks).
fn model_bounded(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(bound);
    }
    // `audit()` takes every lock of the arena (51), and exits waited for in
    // `eventually` loops take several more: far past loom's default 1,000.
    b.max_branches = 100_000;
    let f = std::sync::Arc::new(f);
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    let start = std::time::Instant::now();
    b.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = f.clone();
        thread::spawn(move || f()).join().unwrap();
        // Let every thread's exit finish (caches returned, spare arenas
        // destroyed) before the model's globals go; then give back the
        // SuperSlab of seeds each shard keeps for its next arena.
        eventually(|| global_stats().threads == 0);
        thread::spawn(smallmid::trim_warm_cache).join().unwrap();
        eventually(|| {
            let g = global_stats();
            g.threads == 0 && g.superslabs_in_use == 0
        });
    });
    let name = std::thread::current().name().unwrap_or("?").to_string();
    let n = runs.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "loom model {name}: {n} interleavings in {:.1?}",
        start.elapsed()
    );
}

const L16: Layout = match Layout::from_size_align(16, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};
const L256: Layout = match Layout::from_size_align(256, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};
const L1K: Layout = match Layout::from_size_align(1000, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};
/// Past the mixed slabs' classes: served by slabs of its own class.
const L2K: Layout = match Layout::from_size_align(2000, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};

/// A live block, with its layout and fill byte. Plain data: `Send`.
#[derive(Debug)]
struct Block(usize, Layout, u8);

fn alloc(a: &SmallMidArena, l: Layout, fill: u8) -> Block {
    let p = a
        .allocate(l)
        .expect("allocation failed")
        .cast::<u8>()
        .as_ptr();
    // SAFETY: a fresh block of `l.size()` bytes.
    unsafe { p.write_bytes(fill, l.size()) };
    Block(p as usize, l, fill)
}

fn free(a: &SmallMidArena, b: Block) {
    let p = b.0 as *mut u8;
    // SAFETY: a live block of `b.1.size()` bytes, freed once below.
    let bytes = unsafe { core::slice::from_raw_parts(p, b.1.size()) };
    assert!(bytes.iter().all(|&x| x == b.2), "block contents changed");
    // SAFETY: allocated from `a` with `b.1`.
    unsafe { a.deallocate(core::ptr::NonNull::new_unchecked(p), b.1) };
}

/// Waits until `done` holds. Loom's `join` returns when a thread's closure
/// does, before its thread-locals' destructors (our exit flush) finish,
/// unlike std's; so what an exit returns is awaited, not assumed.
fn eventually(mut done: impl FnMut() -> bool) {
    while !done() {
        thread::yield_now();
    }
}

/// Blocks out of their slabs once the caller's cache is flushed.
fn out(a: &SmallMidArena) -> usize {
    a.flush_thread_cache();
    a.audit().blocks_out
}

/// 1. A remote free (and its flush into the slab) races the owner
///    returning its cache and refilling from the same slab.
#[test]
fn remote_free_races_owner_refill() {
    model(|| {
        let arena = Arc::new(SmallMidArena::new());
        let (b1, b2) = (alloc(&arena, L2K, 1), alloc(&arena, L2K, 2));
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            free(&a2, b1);
            a2.flush_thread_cache();
        });
        free(&arena, b2);
        arena.flush_thread_cache();
        let b3 = alloc(&arena, L2K, 3); // from the slab's list, or fresh
        t.join().unwrap();
        assert_eq!(out(&arena), 1, "only b3 is out");
        free(&arena, b3);
        assert_eq!(out(&arena), 0);
        assert_eq!(
            arena.audit().slabs_for(L2K),
            0,
            "the empty slab went back to the pool"
        );
    });
}

/// 2. Two remote freers flush into the same (mixed) slab at once: the one
///    that gives its last byte back frees it, exactly once.
#[test]
fn two_remote_freers_same_slab() {
    model(|| {
        let arena = Arc::new(SmallMidArena::new());
        let (b1, b2) = (alloc(&arena, L256, 1), alloc(&arena, L256, 2));
        arena.flush_thread_cache(); // the slab now holds just b1 and b2 out
        let ts: Vec<_> = [b1, b2]
            .into_iter()
            .map(|b| {
                let a = arena.clone();
                thread::spawn(move || {
                    free(&a, b);
                    a.flush_thread_cache();
                })
            })
            .collect();
        ts.into_iter().for_each(|t| t.join().unwrap());
        let audit = arena.audit();
        assert_eq!((audit.blocks_out, audit.mixed_slabs), (0, 0), "{audit:?}");
    });
}

/// 3. One thread's batch flush races another's refill of the same class.
#[test]
fn flush_races_refill() {
    model(|| {
        let arena = Arc::new(SmallMidArena::new());
        let held = vec![alloc(&arena, L2K, 1), alloc(&arena, L2K, 2)];
        arena.flush_thread_cache();
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            let b = alloc(&a2, L2K, 9); // refill: list or fresh slab
            let addr = b.0;
            free(&a2, b);
            addr
        });
        for b in held {
            free(&arena, b);
        }
        arena.flush_thread_cache();
        let _ = t.join().unwrap();
        eventually(|| out(&arena) == 0); // the thread's exit returns its cache
        let s = arena.stats();
        let c = s.classes.iter().find(|c| c.size >= 2000).expect("class 2K");
        assert_eq!((c.allocs, c.frees, s.thread_caches), (3, 3, 1), "{s}");
        assert_eq!(arena.audit().slabs_for(L2K), 0, "the empty slab retired");
    });
}

/// 4a. A thread exiting (returning its cache) races the arena's drop.
#[test]
fn thread_exit_races_arena_drop() {
    model(|| {
        let arena = Arc::new(SmallMidArena::new());
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            let b = alloc(&a2, L256, 1);
            free(&a2, b);
            drop(a2); // maybe the last handle; then exit flushes
        });
        drop(arena);
        t.join().unwrap();
        // Whoever dropped last reset it and kept it as a spare: the next
        // arena on this thread may be it, and must be empty.
        let next = SmallMidArena::new();
        let s = next.stats();
        assert_eq!((s.blocks_in_use, s.thread_caches <= 1), (0, true), "{s}");
        next.flush_thread_cache();
        assert_eq!(next.audit().blocks_out, 0);
        drop(next);
        smallmid::trim_warm_cache(); // releases this thread's spare
        eventually(|| global_stats().superslabs_in_use == 0); // a spare dies with its thread
        let g = global_stats();
        assert_eq!(g.arenas_alive, 0, "{g}");
        assert_eq!(
            g.mmaps - g.munmaps,
            g.warm_superslabs as u64,
            "a SuperSlab was lost: {g}"
        );
    });
}

/// 4b. A thread exits while another thread starts and may take over its
///     index, and so its cache slot, in the same arena.
#[test]
fn thread_exit_races_slot_takeover() {
    model(|| {
        let arena = Arc::new(SmallMidArena::new());
        let ts: Vec<_> = (0..2u8)
            .map(|i| {
                let a = arena.clone();
                thread::spawn(move || {
                    let b = alloc(&a, if i == 0 { L256 } else { L1K }, i);
                    free(&a, b); // stays in this thread's cache until it exits
                })
            })
            .collect();
        ts.into_iter().for_each(|t| t.join().unwrap());
        // Each audit also checks every invariant while exits may be flushing.
        eventually(|| arena.audit().blocks_out == 0);
        eventually(|| arena.stats().thread_caches == 0);
        let s = arena.stats();
        let total = |f: fn(&smallmid::ClassStats) -> u64| s.classes.iter().map(f).sum::<u64>();
        assert_eq!((total(|c| c.allocs), total(|c| c.frees)), (2, 2), "{s}");
        let audit = arena.audit();
        assert_eq!(
            (
                audit.slabs_for(L256),
                audit.slabs_for(L1K),
                audit.mixed_slabs
            ),
            (0, 0, 0),
            "{audit:?}"
        );
    });
}

/// 5. Two arenas drop while a third is created: the warm cache's bound
///    holds and no SuperSlab is lost or handed out twice.
#[test]
fn warm_cache_two_drops_one_create() {
    model(|| {
        smallmid::set_warm_cache_limit(1 << 20);
        // Grown (a SuperSlab each), past their seeds; a3's seed holds the
        // SuperSlab of seeds in use to the end.
        let a1 = SmallMidArena::new();
        a1.reserve(1).unwrap();
        let a2 = SmallMidArena::new();
        a2.reserve(1).unwrap();
        let t1 = thread::spawn(move || drop(a1));
        let t2 = thread::spawn(move || drop(a2));
        let a3 = SmallMidArena::new();
        let b = alloc(&a3, L256, 3);
        t1.join().unwrap();
        t2.join().unwrap();
        // The dropped arenas are the exiting threads' spares until their
        // exits destroy them (loom's join does not wait for that).
        eventually(|| {
            let g = global_stats();
            g.superslabs_in_use == 2
                && g.mmaps - g.munmaps == (g.warm_superslabs + g.superslabs_in_use) as u64
        });
        let g = global_stats();
        assert!(g.warm_superslabs <= 1, "bound of one SuperSlab broken: {g}");
        free(&a3, b);
    });
}

/// 6. The last block of a slab is freed remotely (retiring the slab to the
///    pool) while the owner takes a slab for another class.
#[test]
fn slab_reassigned_while_last_block_freed() {
    model(|| {
        let arena = Arc::new(SmallMidArena::new());
        let b = alloc(&arena, L256, 1);
        arena.flush_thread_cache(); // its slab: one block out, on no cache
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            free(&a2, b);
            a2.flush_thread_cache(); // the slab empties and retires
        });
        let c = alloc(&arena, L2K, 2); // may get the retired slab
        t.join().unwrap();
        assert_eq!(out(&arena), 1);
        free(&arena, c);
        assert_eq!(out(&arena), 0);
        let audit = arena.audit();
        assert_eq!(
            (audit.slabs_for(L2K), audit.mixed_slabs),
            (0, 0),
            "{audit:?}"
        );
    });
}

/// 7. Grow and shrink of a block while another thread frees its neighbour.
#[test]
fn realloc_races_neighbour_free() {
    model(|| {
        let arena = Arc::new(SmallMidArena::new());
        let small = Layout::from_size_align(100, 8).unwrap();
        let (b1, b2) = (alloc(&arena, small, 1), alloc(&arena, small, 2));
        arena.flush_thread_cache();
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            free(&a2, b2);
            a2.flush_thread_cache();
        });
        let p = core::ptr::NonNull::new(b1.0 as *mut u8).unwrap();
        let bigger = Layout::from_size_align(110, 8).unwrap();
        let big = Layout::from_size_align(3000, 8).unwrap();
        // SAFETY: b1 was allocated with `small`; each step uses the last
        // layout and pointer.
        unsafe {
            let g = arena.grow(p, small, bigger).unwrap().cast::<u8>();
            assert_eq!(g, p, "same class: in place");
            let g2 = arena.grow(g, bigger, big).unwrap().cast::<u8>();
            let s = arena.shrink(g2, big, small).unwrap().cast::<u8>();
            let bytes = core::slice::from_raw_parts(s.as_ptr(), 100);
            assert!(bytes.iter().all(|&x| x == 1), "contents lost");
            arena.deallocate(s, small);
        }
        t.join().unwrap();
        assert_eq!(out(&arena), 0);
    });
}

/// 8. A cacheless thread (the orphan path: straight to the class lists)
///    allocates and frees while a cached thread does, then the arena is
///    dropped (reset and kept as a spare by whoever drops last).
#[test]
fn orphan_path_races_recycle() {
    model(|| {
        let arena = Arc::new(SmallMidArena::new());
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            let kept = cacheless(|| {
                let b = alloc(&a2, L256, 1);
                let kept = alloc(&a2, L256, 2);
                free(&a2, b);
                kept
            });
            drop(a2);
            kept // still live: the drop of the arena frees it
        });
        let c = alloc(&arena, L256, 3);
        free(&arena, c);
        let kept = t.join().unwrap();
        assert_eq!(arena_blocks(&arena), 1, "only the orphan's kept block");
        let _ = kept;
        drop(arena);
        let next = SmallMidArena::new();
        assert_eq!(next.stats().blocks_in_use, 0, "{}", next.stats());
        next.flush_thread_cache();
        assert_eq!(
            next.audit().blocks_out,
            0,
            "orphan blocks survived the reset"
        );
    });
}

fn arena_blocks(a: &SmallMidArena) -> u64 {
    a.stats().blocks_in_use
}

/// 9. Threads with indices past the inline slots race to publish the chunk
///    table and the slot chunk (a CAS each) and their caches in them.
#[test]
fn slot_chunk_publication() {
    model(|| {
        first_thread_index(64);
        let arena = Arc::new(SmallMidArena::new());
        arena.reserve(1).unwrap(); // grown: the race is the slots'
        let ts: Vec<_> = (0..2u8)
            .map(|i| {
                let a = arena.clone();
                thread::spawn(move || alloc(&a, L256, 10 + i))
            })
            .collect();
        let blocks: Vec<Block> = ts.into_iter().map(|t| t.join().unwrap()).collect();
        assert_ne!(blocks[0].0, blocks[1].0, "one block handed out twice");
        for b in blocks {
            free(&arena, b); // checks each thread's fill survived
        }
        eventually(|| arena.stats().thread_caches == 1); // only this thread's
        assert_eq!(out(&arena), 0);
    });
}

/// 10. `audit()` and `stats()` (every lock) while another thread lays out
///     fresh slabs for new classes (the review's data race).
#[test]
fn audit_races_new_class_slabs() {
    model_bounded(2, || {
        let arena = Arc::new(SmallMidArena::new());
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            let x = alloc(&a2, L2K, 1); // a fresh slab, laid out now
            free(&a2, x);
            a2.flush_thread_cache();
        });
        let a = arena.audit(); // every lock: sees the slab free or laid out
        assert!(a.class_slabs <= 1 && a.span_slabs == 0, "{a:?}");
        t.join().unwrap();
        assert_eq!(arena.audit().blocks_out, 0);
    });
}

/// 11. A limited arena: a block freed on another thread and flushed races
///     this thread reclaiming its own cache for a large allocation.
#[test]
fn memory_limit_reclaim_races_remote_flush() {
    model(|| {
        // 15 slabs: the span takes them all, so the class slab of b1 and
        // b2 (slab 0, which no span uses) must be back first.
        let big = Layout::from_size_align(960 << 10, 8).unwrap();
        let arena = Arc::new(SmallMidArena::builder().memory_limit(960 << 10).build());
        let (b1, b2) = (alloc(&arena, L2K, 1), alloc(&arena, L2K, 2));
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            free(&a2, b2);
            a2.flush_thread_cache();
        });
        free(&arena, b1); // into this thread's cache
        let early = arena.allocate(big).ok(); // succeeds iff b2 is back
        assert!(arena.stats().bytes_held <= 960 << 10, "limit exceeded");
        t.join().unwrap();
        let p = match early {
            Some(p) => p,
            None => arena.allocate(big).expect("no live block, yet refused"),
        };
        // SAFETY: allocated above with `big`.
        unsafe { arena.deallocate(p.cast(), big) };
        assert_eq!(out(&arena), 0);
    });
}

/// 12. Trimming the warm cache (and a thread's spare) races arenas being
///     created and dropped: no SuperSlab lost or handed out twice.
#[test]
fn warm_trim_races_create_and_drop() {
    model(|| {
        let a = SmallMidArena::new();
        let t = thread::spawn(|| {
            let b = SmallMidArena::new();
            let x = alloc(&b, L256, 1);
            free(&b, x);
            drop(b); // this thread's spare
            smallmid::trim_warm_cache(); // spare released, then unmapped
        });
        let x = alloc(&a, L256, 2);
        free(&a, x);
        drop(a);
        let c = SmallMidArena::new(); // this thread's spare, or warm, or fresh
        let y = alloc(&c, L1K, 3);
        t.join().unwrap();
        let g = global_stats();
        assert_eq!(
            g.mmaps - g.munmaps,
            (g.warm_superslabs + g.superslabs_in_use) as u64,
            "{g}"
        );
        free(&c, y);
    });
}

/// 14. A cache returning its mixed range races another thread flushing a
///     block of that range, and an audit: the slab's count reaches zero
///     once, and whoever brings it there frees the slab.
#[test]
fn mixed_range_return_races_remote_flush() {
    model_bounded(3, || {
        let arena = Arc::new(SmallMidArena::new());
        let (b1, b2) = (alloc(&arena, L256, 1), alloc(&arena, L1K, 2));
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            free(&a2, b1);
            a2.flush_thread_cache();
        });
        free(&arena, b2);
        arena.flush_thread_cache(); // the range goes back
        let mid = arena.audit();
        assert!(mid.mixed_slabs <= 1 && mid.blocks_out <= 1, "{mid:?}");
        t.join().unwrap();
        let audit = arena.audit();
        assert_eq!((audit.blocks_out, audit.mixed_slabs), (0, 0), "{audit:?}");
        assert_eq!(arena.stats().superslabs, 1);
    });
}

/// 15. A cache parks the rest of its mixed range and takes it back (or a
///     fresh slab) while another thread flushes the range's other block:
///     the parked rest is taken only from a slab that is not being freed.
#[test]
fn parked_mixed_rest_races_remote_flush() {
    model_bounded(3, || {
        let arena = Arc::new(SmallMidArena::new());
        let b1 = alloc(&arena, L256, 1);
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            free(&a2, b1);
            a2.flush_thread_cache();
        });
        arena.flush_thread_cache(); // parks the rest, or frees the slab
        let b2 = alloc(&arena, L1K, 2); // the parked rest, or a fresh slab
        t.join().unwrap();
        free(&arena, b2);
        assert_eq!(out(&arena), 0);
        let audit = arena.audit();
        assert_eq!((audit.blocks_out, audit.mixed_slabs), (0, 0), "{audit:?}");
        assert_eq!(arena.stats().superslabs, 1);
    });
}

/// 16. A thread keeps a freed span and takes it again while another sets a
///     memory limit, which takes every thread's kept spans back (a swap
///     against the owner's): the span is handed out once, and the counts
///     and slabs are exact whichever side got it.
#[test]
fn kept_span_reclaim_races_owner() {
    model_bounded(3, || {
        let span = Layout::from_size_align(100 << 10, 8).unwrap(); // 2 slabs
        let arena = Arc::new(SmallMidArena::new());
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            let b = alloc(&a2, span, 3);
            free(&a2, b); // kept by this thread's cache
            alloc(&a2, span, 4) // the kept span, or one from the pool
        });
        arena.set_memory_limit(1 << 20).unwrap(); // reclaims kept spans
        let b = t.join().unwrap();
        let c = alloc(&arena, span, 5);
        assert!(
            c.0 + span.size() <= b.0 || b.0 + span.size() <= c.0,
            "a span handed out twice"
        );
        let s = arena.stats();
        assert_eq!(
            (s.large_allocs - s.large_frees, s.blocks_in_use),
            (2, 2),
            "{s:?}"
        );
        free(&arena, c);
        free(&arena, b); // limited now: not kept
                         // The other thread's exit returns what its cache still keeps (a
                         // span kept just after the reclaim). This thread has no cache:
                         // under the limit it keeps nothing.
        eventually(|| arena.stats().thread_caches == 0);
        assert_eq!(out(&arena), 0);
        let (s, audit) = (arena.stats(), arena.audit());
        assert_eq!(
            (s.large_allocs, s.large_frees, s.bytes_in_use),
            (3, 3, 0),
            "{s:?}"
        );
        assert_eq!(audit.span_slabs, 0, "{audit:?}");
        assert_eq!(arena.allocated_bytes(), 0);
    });
}

/// 17. An arena leaves its seed while another thread carves from it: one
///     thread takes a small block (from the seed, or from the state if the
///     other grew it first), the other a block too big for the seed (the
///     arena grows); each block is freed on the other thread. Nothing is
///     handed out twice, lost or left counted.
#[test]
fn seed_growth_races_a_seed_block() {
    model(|| {
        let arena = Arc::new(SmallMidArena::new());
        let a2 = arena.clone();
        let t = thread::spawn(move || alloc(&a2, L16, 1));
        let big = alloc(&arena, L1K, 2);
        let small = t.join().unwrap();
        free(&arena, small);
        let a3 = arena.clone();
        thread::spawn(move || free(&a3, big)).join().unwrap();
        let s = arena.stats();
        assert_eq!((s.blocks_in_use, s.superslabs), (0, 1), "{s}");
    });
}

/// 18. A thread's exit flush races the owner's `reset()`: the owner gets
///     the arena back exclusively (the other thread dropped its handle)
///     while that thread's exit may still be returning its cache. The
///     reset skips the members lock only when the arena is solo (one
///     cache, nothing retired), which the exit's unlock publishes; either
///     way nothing the exit returned survives the reset.
#[test]
fn thread_exit_races_reset() {
    model(|| {
        let mut arena = Arc::new(SmallMidArena::new());
        // The owner's cache first, as a per-request worker's would be.
        let mine = alloc(&arena, L256, 1);
        free(&arena, mine);
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            let b = alloc(&a2, L256, 2);
            drop(a2); // then the exit flushes `b`'s cache and retires it
            b
        });
        let a = loop {
            if let Some(a) = Arc::get_mut(&mut arena) {
                break a;
            }
            thread::yield_now();
        };
        a.reset();
        let s = a.stats();
        assert_eq!(s.blocks_in_use, 0, "{s}");
        // The reset arena serves again, and its accounting holds once the
        // other thread's exit is done.
        let b = alloc(a, L256, 3);
        free(a, b);
        let _dead = t.join().unwrap(); // freed by the reset
        eventually(|| global_stats().threads == 1);
        a.reset();
        assert_eq!(out(a), 0);
        let s = a.stats();
        assert_eq!(s.blocks_in_use, 0, "{s}");
    });
}
