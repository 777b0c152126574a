//! Hostile review 17 (commit 10f2a55): `new()` takes this thread's spare,
//! else a shared spare (a mask of held shards says with one load whether
//! any is held), and only then starts in a seed; spares and seeds shard by
//! a round-robin thread number.
//!
//! Every test holds `common::serial()`: they count the shared spares and
//! the SuperSlabs in use process-wide.
#![cfg(not(miri))]
#![cfg_attr(feature = "checked", allow(dead_code))]

mod common;
use common::*;

use allocator_api2::alloc::Allocator;
use smallmid::test_hooks::cacheless;
use smallmid::{global_stats, trim_warm_cache, SmallMidArena};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

fn on_fresh_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// Puts the arenas (grown) in the shared spares: each dropped while this
/// thread's spare slot is taken is pushed out of it. Made before any is
/// dropped: a `new()` here would take one back.
fn park_all(v: Vec<SmallMidArena>) {
    let pusher = SmallMidArena::new();
    pusher.reserve(1).unwrap(); // past a seed (a seed's drop recycles nothing)
    for a in v {
        assert!(a.stats().superslabs >= 1, "a seed is never parked");
        drop(a);
    }
    drop(pusher); // pushes the last one out of this thread's slot
}

fn park(a: SmallMidArena) {
    park_all(vec![a]);
}

/// Counts a thread done when dropped, so a thread that panics counts too
/// (threads waiting on the count would otherwise spin forever).
struct Done<'a>(&'a AtomicUsize);
impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Destroys `a` rather than recycling it (dropped as a thread with no
/// cache, which keeps no spare).
fn destroy(a: SmallMidArena) {
    cacheless(|| drop(a));
}

/// Every shared spare a `new()` can reach, taken on a fresh thread (no
/// spare of its own): arenas are made until one starts in a seed.
fn take_all_shared() -> Vec<SmallMidArena> {
    on_fresh_thread(|| {
        let mut v = Vec::new();
        loop {
            let a = SmallMidArena::new();
            if a.stats().superslabs == 0 {
                return v; // the seed goes back to its run here
            }
            assert!(v.len() <= 128, "more shared spares than 8 shards of 16");
            v.push(a);
        }
    })
}

/// A fresh-looking arena: nothing counted, nothing attached, nothing out.
#[track_caller]
fn assert_clean(a: &SmallMidArena, what: &str) {
    assert_fresh_counts(a, what);
    assert_eq!(a.audit().seed_blocks, 0, "{what}");
}

/// An arena that held many classes, a mixed slab, spans kept by a second
/// thread and a huge block, with blocks still live at its drop.
fn busy_arena(salt: usize) -> SmallMidArena {
    let a = SmallMidArena::new();
    let mut v = Vec::new();
    for j in 0..1500usize {
        let size = 8 + (j * 37 + salt * 11) % 3000;
        v.push((alloc(&a, l(size, 8)), size));
    }
    for &(p, s) in v.iter().step_by(2) {
        free(&a, p, l(s, 8));
    }
    let spans: Vec<usize> = [40 * KIB, 100 * KIB, 200 * KIB]
        .iter()
        .map(|&s| alloc(&a, l(s, 8)) as usize)
        .collect();
    on_fresh_thread(|| {
        for (&p, s) in spans.iter().zip([40 * KIB, 100 * KIB, 200 * KIB]) {
            free(&a, p as *mut u8, l(s, 8)); // kept by this thread's cache
        }
        let _ = alloc(&a, l(500, 8)); // live in this thread's cache's slab
    });
    let _huge = alloc(&a, l(3 * MIB, 8)); // live at the drop
    let s = a.stats();
    assert!(s.superslabs <= 4, "too big to be kept as a spare: {s}");
    a
}

/// `new()` on a thread with no spare of its own takes a shared spare (not
/// a seed), which starts clean: zero counts, no cache, no huge block, no
/// seed, the default limit; its idle cache's slabs go back on a flush,
/// so a 64 KiB limit can be set at once; blocks are distinct and keep
/// their contents; and the mask lets the next `new()` start in a seed
/// once the spares are all taken.
#[cfg(not(feature = "checked"))] // under `checked` no arena starts in a seed
#[test]
fn new_takes_a_parked_arena_clean() {
    let _g = serial();
    trim_warm_cache();
    assert!(take_all_shared().is_empty(), "trim left shared spares");
    let busy: Vec<SmallMidArena> = (0..3).map(busy_arena).collect();
    let mut ids: Vec<String> = busy.iter().map(state_of).collect();
    park_all(busy);
    let (a, next) = on_fresh_thread(|| {
        let a = SmallMidArena::new();
        let b = SmallMidArena::new();
        let c = SmallMidArena::new();
        let d = SmallMidArena::new();
        for (i, x) in [&a, &b, &c].into_iter().enumerate() {
            assert!(x.stats().superslabs >= 1, "arena {i}: a seed, not a spare");
        }
        (a, (b, c, d))
    });
    assert_eq!(next.2.stats().superslabs, 0, "4th: no spare left, a seed");
    let mut took: Vec<String> = [&a, &next.0, &next.1].map(state_of).to_vec();
    ids.sort();
    took.sort();
    assert_eq!(took, ids, "the parked arenas, not fresh ones");
    for x in [&a, &next.0, &next.1] {
        assert_clean(x, "parked busy arena");
        assert_eq!(x.memory_limit(), usize::MAX);
    }
    a.set_memory_limit(SLAB)
        .expect("a fresh arena fits in one slab");
    assert_eq!(a.allocated_bytes(), 0, "{}", a.stats());
    let mut live = Live::default();
    let mut v = Vec::new();
    while let Ok(p) = a.allocate(l(700, 8)) {
        let p = p.cast::<u8>().as_ptr();
        live.add(p, 700, "under 64 KiB");
        stamp(p, 700, v.len() as u8);
        v.push(p);
        assert!(a.allocated_bytes() <= SLAB, "{}", a.stats());
    }
    assert!(v.len() >= 60, "only {} blocks of 700 B in 64 KiB", v.len());
    for (i, &p) in v.iter().enumerate() {
        check(p, 700, i as u8, "block of a recycled arena");
    }
    assert_eq!(a.stats().blocks_in_use, v.len() as u64);
    for p in v {
        free(&a, p, l(700, 8));
    }
    assert_eq!(a.stats().blocks_in_use, 0);
    drop((a, next));
}

/// `Builder::memory_limit` on an arena taken from the shared spares: the
/// spare is reset under the new limit, so nothing it kept (slabs of the
/// caches it shed, kept spans, SuperSlabs past its home) counts or stays,
/// and the limit holds from the first allocation. One parked arena only,
/// so the build must take it.
#[test]
fn a_limited_new_from_a_shared_spare_holds_the_limit() {
    let _g = serial();
    for limit in [SLAB, 2 * SLAB, 5 * SLAB] {
        trim_warm_cache();
        park(busy_arena(limit));
        let a = on_fresh_thread(|| SmallMidArena::builder().memory_limit(limit).build());
        let s = a.stats();
        assert_eq!(
            s.superslabs, 1,
            "limit {limit}: took the spare, home only\n{s}"
        );
        assert_eq!(a.memory_limit(), limit);
        assert_clean(&a, "limited");
        assert_eq!(a.allocated_bytes(), 0, "limit {limit}: {s}");
        let mut v = Vec::new();
        for size in [24usize, 500, 1000, 3000, 40 * KIB] {
            while let Ok(p) = a.allocate(l(size, 8)) {
                v.push((p.cast::<u8>().as_ptr(), size));
                assert!(a.allocated_bytes() <= limit, "{}", a.stats());
            }
        }
        assert!(
            a.allocate(l(3 * MIB, 8)).is_err(),
            "a huge block past the limit"
        );
        let held: usize = v.iter().map(|&(_, s)| s).sum();
        assert!(held <= limit, "limit {limit}: {held} bytes of blocks");
        assert!(
            held >= limit * 3 / 4,
            "limit {limit}: only {held} bytes of blocks"
        );
        for (p, s) in v {
            free(&a, p, l(s, 8));
        }
        // And the spare taken by an unlimited arena after a limited life
        // loses the limit.
        park(a);
        let b = on_fresh_thread(SmallMidArena::new);
        assert!(b.stats().superslabs >= 1, "took the spare");
        assert_eq!(b.memory_limit(), usize::MAX);
        let big = alloc(&b, l(2 * limit, 8));
        free(&b, big, l(2 * limit, 8));
        destroy(b);
    }
}

/// The mask of held shards after threads parked and took spares (and a
/// trim drained them) concurrently: once `new()` finds no spare, parking
/// exactly one more makes exactly one reachable. A shard left holding
/// spares with its bit clear would surface here as more than one (a `take`
/// with any bit set looks at every shard, and the taking thread's shard is
/// the one after the parking thread's, so the parked one is looked at
/// last).
#[cfg(not(feature = "checked"))] // under `checked` no arena starts in a seed
#[test]
fn the_held_mask_hides_no_spare_after_concurrent_parks_takes_and_trims() {
    let _g = serial();
    trim_warm_cache();
    let base = global_stats().threads;
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4usize {
            let done = &done;
            s.spawn(move || {
                let _done = Done(done);
                for round in 0..150usize {
                    // Short-lived threads: their own spares die with them.
                    std::thread::scope(|s2| {
                        s2.spawn(|| {
                            let x = SmallMidArena::new();
                            let y = SmallMidArena::new();
                            let px = alloc(&x, l(300, 8));
                            let py = alloc(&y, l(300, 8));
                            stamp(px, 300, 1);
                            stamp(py, 300, 2);
                            check(px, 300, 1, "x");
                            drop(x);
                            check(py, 300, 2, "y");
                            drop(y); // x pushed to the shared spares
                            if (t + round) % 3 == 0 {
                                let z = SmallMidArena::new(); // own spare
                                let w = SmallMidArena::new(); // shared, or a seed
                                let _ = alloc(&w, l(24, 8));
                                destroy(z);
                                destroy(w);
                            }
                        });
                    });
                }
            });
        }
        let done = &done;
        // Trims while the first half runs; the second half fills the
        // spares again, so several shards end up holding several.
        s.spawn(move || {
            while done.load(Ordering::Relaxed) < 2 {
                trim_warm_cache();
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
        });
    });
    // Then many parks at once beside a few takes: several shards end up
    // holding several spares, some taken from.
    let made = std::sync::Barrier::new(10);
    std::thread::scope(|s| {
        for t in 0..10usize {
            let made = &made;
            s.spawn(move || {
                if t < 8 {
                    let v: Vec<SmallMidArena> = (0..6)
                        .map(|_| {
                            let a = SmallMidArena::new();
                            a.reserve(1).unwrap();
                            a
                        })
                        .collect();
                    made.wait();
                    drop(v); // 5 of them to the shared spares
                } else {
                    made.wait();
                    for _ in 0..5 {
                        destroy(SmallMidArena::new());
                        std::thread::yield_now();
                    }
                }
            });
        }
    });
    settle(base);
    let held = take_all_shared();
    assert!(
        held.len() >= 16,
        "the churn left only {} spares",
        held.len()
    );
    for a in held {
        destroy(a);
    }
    // Exactly one parked now, on a fresh thread (whose own spare dies with it).
    on_fresh_thread(|| {
        let a = SmallMidArena::new();
        assert_eq!(a.stats().superslabs, 0, "no spare should be held");
        a.reserve(1).unwrap();
        park(a);
    });
    let v = take_all_shared();
    assert_eq!(v.len(), 1, "spares hidden by a clear bit surfaced");
    for a in v {
        destroy(a);
    }
}

/// SuperSlabs of the arena when made (0: a seed), and whether it had no
/// limit.
type Outcome = (u64, bool);

/// Runs `f` in a thread-local destructor that runs after the engine's own
/// (no index, no cache, no spare slot: a thread past its exit work), and
/// returns what it returned.
fn after_exit(carrier: &SmallMidArena, f: fn() -> Outcome) -> Outcome {
    static F: Mutex<Option<fn() -> Outcome>> = Mutex::new(None);
    static OUT: Mutex<Option<Result<Outcome, String>>> = Mutex::new(None);
    struct Late;
    impl Drop for Late {
        fn drop(&mut self) {
            let f = F.lock().unwrap().take().expect("a function to run");
            let r = std::panic::catch_unwind(f).map_err(|e| panic_message(&*e));
            *OUT.lock().unwrap() = Some(r);
        }
    }
    thread_local! {
        static LATE: std::cell::RefCell<Option<Late>> = const { std::cell::RefCell::new(None) };
    }
    *F.lock().unwrap() = Some(f);
    *OUT.lock().unwrap() = None;
    std::thread::scope(|s| {
        s.spawn(|| {
            // Registered before the engine's thread-local: destroyed after it.
            LATE.with(|l| *l.borrow_mut() = Some(Late));
            // A cache in a grown arena registers the engine's thread-locals
            // (a `new()` here would take the spare the caller parked).
            free(carrier, alloc(carrier, l(500, 8)), l(500, 8));
        });
    });
    for _ in 0..5000 {
        if let Some(r) = OUT.lock().unwrap().take() {
            return r.unwrap_or_else(|e| panic!("in the destructor: {e}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("the destructor did not run");
}

/// Counts and contents of an arena used by a thread with no cache.
fn use_cacheless_arena() -> Outcome {
    let a = SmallMidArena::new();
    let took = a.stats().superslabs;
    let v: Vec<usize> = (0..50)
        .map(|i| alloc(&a, l(16 + i * 40, 8)) as usize)
        .collect();
    for (i, &p) in v.iter().enumerate() {
        stamp(p as *mut u8, 16 + i * 40, i as u8);
    }
    let big = alloc(&a, l(100 * KIB, 8));
    stamp(big, 100 * KIB, 0xee);
    for (i, &p) in v.iter().enumerate() {
        check(p as *const u8, 16 + i * 40, i as u8, "cacheless block");
    }
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 51, "{s}");
    assert_eq!(s.thread_caches, 0, "{s}");
    for (i, p) in v.into_iter().enumerate() {
        free(&a, p as *mut u8, l(16 + i * 40, 8));
    }
    check(big, 100 * KIB, 0xee, "span");
    free(&a, big, l(100 * KIB, 8));
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 0, "{s}");
    (took, a.memory_limit() == usize::MAX)
}

/// A thread past its exit work (a thread-local destructor) has no spare
/// slot: its `new()` takes a shared spare now (before, only a seed's growth
/// did), uses it without a cache, and its drop destroys it (no thread to
/// keep it): the spare is neither kept nor leaked. With no spare held it
/// starts in a seed. (hostile16's
/// `a_seed_arena_lives_and_dies_in_a_thread_local_destructor` trims nothing
/// and checks neither: since 10f2a55 its arena is a seed or a spare
/// depending on what earlier tests left in the shared spares.)
#[cfg(not(feature = "checked"))] // under `checked` no arena starts in a seed
#[test]
fn a_thread_past_its_exit_takes_a_shared_spare_and_destroys_it() {
    let _g = serial();
    trim_warm_cache();
    let carrier = SmallMidArena::new();
    carrier.reserve(1).unwrap();
    let (took, unlimited) = after_exit(&carrier, use_cacheless_arena);
    assert_eq!(took, 0, "no spare held: a seed");
    assert!(unlimited);
    trim_warm_cache();
    let before = global_stats().superslabs_in_use;
    park(busy_arena(7));
    let parked = global_stats().superslabs_in_use;
    assert!(parked > before, "{before} -> {parked}");
    let (took, unlimited) = after_exit(&carrier, use_cacheless_arena);
    assert!(took >= 1, "a spare held: taken, not a seed");
    assert!(unlimited);
    assert!(
        take_all_shared().is_empty(),
        "the spare taken past the exit was parked again, not destroyed"
    );
    trim_warm_cache();
    let after = global_stats().superslabs_in_use;
    assert!(
        after <= before,
        "SuperSlabs in use {before} -> {parked} -> {after}"
    );
    assert_eq!(
        global_stats().arenas_alive,
        1,
        "the carrier: {}",
        global_stats()
    );
    destroy(carrier);
}

/// Requests hopping threads at full speed: producers (short-lived threads
/// that never drop an arena, so every `new()` after the first takes a
/// shared spare or a seed) make arenas, limited or not, and send them with
/// live blocks to consumers, which check, use and drop them (their drops
/// feed the shared spares); a trimmer drains the spares meanwhile. Every
/// arena a producer gets starts clean with the limit it asked for, holds
/// it, counts exactly, and nothing is left afterwards.
#[test]
fn hopping_arenas_with_limits_trims_and_exits() {
    let _g = serial();
    trim_warm_cache();
    let base = global_stats().threads;
    let before = global_stats();
    type Sent = (SmallMidArena, usize, Vec<(usize, usize, u8)>);
    let done = AtomicUsize::new(0);
    let from_spares = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let mut txs = Vec::new();
        for c in 0..2usize {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Sent>(4);
            txs.push(tx);
            s.spawn(move || {
                for (n, (a, limit, blocks)) in rx.into_iter().enumerate() {
                    assert_eq!(a.memory_limit(), limit);
                    assert!(a.allocated_bytes() <= limit, "{}", a.stats());
                    assert_eq!(
                        a.stats().blocks_in_use,
                        blocks.len() as u64,
                        "{}",
                        a.stats()
                    );
                    for &(p, size, v) in &blocks {
                        check(p as *const u8, size, v, "sent block");
                    }
                    let mine: Vec<_> = (0..20)
                        .filter_map(|j| {
                            let size = [40, 200, 1000, 5000, 40 * KIB][(n + j + c) % 5];
                            let p = a.allocate(l(size, 8)).ok()?.cast::<u8>().as_ptr();
                            stamp(p, size, 0x5a);
                            Some((p, size))
                        })
                        .collect();
                    assert!(limit != usize::MAX || mine.len() == 20);
                    assert!(a.allocated_bytes() <= limit, "{}", a.stats());
                    for &(p, size, _) in blocks.iter().step_by(2) {
                        free(&a, p as *mut u8, l(size, 8));
                    }
                    for &(p, size) in &mine {
                        check(p, size, 0x5a, "consumer block");
                    }
                    drop(a); // live blocks freed wholesale
                }
            });
        }
        for t in 0..2usize {
            let txs = txs.clone();
            let (done, from_spares) = (&done, &from_spares);
            s.spawn(move || {
                let _done = Done(done);
                for batch in 0..20usize {
                    let txs = txs.clone();
                    std::thread::scope(|s2| {
                        s2.spawn(|| {
                            for i in 0..15usize {
                                let k = batch * 15 + i;
                                let limit = match k % 3 {
                                    0 => usize::MAX,
                                    1 => 2 * SLAB,
                                    _ => 8 * SLAB,
                                };
                                let a = SmallMidArena::builder().memory_limit(limit).build();
                                let st = a.stats();
                                if st.superslabs > 0 {
                                    from_spares.fetch_add(1, Ordering::Relaxed);
                                }
                                assert_eq!(st.blocks_in_use, 0, "{st}");
                                assert_eq!(st.thread_caches, 0, "{st}");
                                assert!(st.classes.is_empty(), "{st}");
                                assert_eq!(a.memory_limit(), limit);
                                if limit != usize::MAX {
                                    assert_eq!(st.bytes_held, 0, "limited: {st}");
                                }
                                let blocks: Vec<_> = (0..12usize)
                                    .map(|j| {
                                        let size = [16, 100, 700, 3000][(j + k + t) % 4];
                                        let p = alloc(&a, l(size, 8)) as usize;
                                        stamp(p as *mut u8, size, (j + k) as u8);
                                        (p, size, (j + k) as u8)
                                    })
                                    .collect();
                                txs[(k + t) % 2].send((a, limit, blocks)).unwrap();
                            }
                        });
                    });
                }
            });
        }
        drop(txs);
        let done = &done;
        s.spawn(move || {
            while done.load(Ordering::Relaxed) < 2 {
                trim_warm_cache();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
    });
    assert!(
        from_spares.load(Ordering::Relaxed) > 100,
        "the hop never took a spare"
    );
    let after = trimmed_stats(base);
    assert_eq!(after.arenas_alive, before.arenas_alive, "{after}");
    assert!(
        after.superslabs_in_use <= before.superslabs_in_use,
        "{before}\n{after}"
    );
}

/// Under `checked` (records of live blocks in the state), `new()` takes a
/// parked arena directly: its records start empty, so the same addresses
/// are handed out again without a "handed out twice" panic, and a pointer
/// from its previous life is refused.
#[cfg(feature = "checked")]
#[test]
fn checked_records_start_empty_in_an_arena_from_the_shared_spares() {
    let _g = serial();
    trim_warm_cache();
    let old = SmallMidArena::new();
    let stale: Vec<usize> = (0..40)
        .map(|i| alloc(&old, l(24 + i * 50, 8)) as usize)
        .collect();
    let id = state_of(&old);
    park(old);
    let (a, again) = on_fresh_thread(|| {
        let a = SmallMidArena::new();
        let again: Vec<usize> = (0..20)
            .map(|i| alloc(&a, l(24 + i * 50, 8)) as usize)
            .collect();
        (a, again)
    });
    assert_eq!(state_of(&a), id, "took the parked arena");
    assert!(
        again.iter().any(|p| stale.contains(p)),
        "no address handed out again: the test shows nothing"
    );
    assert_eq!(a.stats().blocks_in_use, 20);
    let a = std::sync::Arc::new(a);
    let a2 = a.clone();
    let (i, foreign) = (20..40)
        .map(|i| (i, stale[i]))
        .find(|(_, p)| !again.contains(p))
        .expect("a stale pointer");
    let r = std::panic::catch_unwind(move || free(&a2, foreign as *mut u8, l(24 + i * 50, 8)));
    assert!(
        r.is_err(),
        "a pointer of the arena's previous life was freed"
    );
    for (i, p) in again.into_iter().enumerate() {
        free(&a, p as *mut u8, l(24 + i * 50, 8));
    }
    assert_eq!(a.stats().blocks_in_use, 0);
}

/// A seed that grows while a shared spare is held takes it (reset under
/// the seed's limit when it has one): its seed blocks keep their contents
/// and counts, are freed after the growth into the spare's caches, and
/// the limit holds. Since `new()` takes spares itself, only an arena made
/// while none was held and grown after one was parked goes this way; the
/// seed tests reach it only when `seeded()` happened to put spares back.
#[cfg(not(feature = "checked"))]
#[test]
fn a_seed_grows_into_a_spare_parked_after_it_was_made() {
    let _g = serial();
    for limit in [usize::MAX, 2 * SLAB] {
        trim_warm_cache();
        let busy = busy_arena(limit % 97);
        let id = state_of(&busy);
        let a = on_fresh_thread(|| SmallMidArena::builder().memory_limit(limit).build());
        assert_eq!(a.stats().superslabs, 0, "no spare held: a seed");
        let seeds: Vec<(usize, usize)> = [8usize, 24, 40, 64]
            .iter()
            .map(|&n| (alloc(&a, l(n, 8)) as usize, n))
            .collect();
        for &(p, n) in &seeds {
            stamp(p as *mut u8, n, n as u8);
        }
        assert_eq!(a.audit().seed_blocks, 4);
        park(busy);
        // Grown on another thread, which has no spare of its own.
        let (mine, grew): (Vec<(usize, usize)>, String) = on_fresh_thread(|| {
            let v: Vec<_> = (0..30usize)
                .map(|i| {
                    let n = [300, 900, 2000][i % 3];
                    let p = alloc(&a, l(n, 8)) as usize;
                    stamp(p as *mut u8, n, 0x33);
                    (p, n)
                })
                .collect();
            // Before this thread's exit returns its cache: what the cache
            // it was given holds counts too.
            assert!(a.allocated_bytes() <= limit, "{}", a.stats());
            (v, state_of(&a))
        });
        assert_eq!(
            grew, id,
            "limit {limit}: the seed grew into the parked arena"
        );
        assert_eq!(a.memory_limit(), limit);
        let s = a.stats();
        assert_eq!(s.blocks_in_use, 34, "{s}");
        assert!(a.allocated_bytes() <= limit, "{s}");
        if limit != usize::MAX {
            // Nothing the spare kept counts: the limit's room is all there,
            // as in an arena grown into a fresh SuperSlab.
            let filled = fill_1000(&a, limit);
            let fresh = on_fresh_thread(|| SmallMidArena::builder().memory_limit(limit).build());
            assert_eq!(fresh.stats().superslabs, 0, "a seed");
            on_fresh_thread(|| {
                for i in 0..30usize {
                    let _ = alloc(&fresh, l([300, 900, 2000][i % 3], 8));
                }
            });
            let expected = fill_1000(&fresh, limit);
            destroy(fresh);
            assert!(
                filled >= expected,
                "limit {limit}: {filled} blocks of 1000 B beside the grown ones, {expected} in a fresh arena"
            );
        }
        for &(p, n) in &seeds {
            check(p as *const u8, n, n as u8, "seed block after growth");
        }
        for &(p, n) in &mine {
            check(p as *const u8, n, 0x33, "grown block");
        }
        on_fresh_thread(|| {
            for &(p, n) in seeds.iter().chain(&mine) {
                free(&a, p as *mut u8, l(n, 8));
            }
        });
        let s = a.stats();
        assert_eq!(s.blocks_in_use, 0, "{s}");
        destroy(a);
    }
}

/// Allocates 1000-byte blocks until refused, checking the limit on the way,
/// frees them, and returns how many fit.
fn fill_1000(a: &SmallMidArena, limit: usize) -> usize {
    let mut v = Vec::new();
    while let Ok(p) = a.allocate(l(1000, 8)) {
        v.push(p.cast::<u8>().as_ptr());
        assert!(a.allocated_bytes() <= limit, "{}", a.stats());
    }
    let n = v.len();
    for p in v {
        free(a, p, l(1000, 8));
    }
    n
}
