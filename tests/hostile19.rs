//! Hostile review 19 (commit a92e415): `ThreadCache::clear_counters` is
//! `unsafe` (the arena owned exclusively) and, for more than 8 classes,
//! zeroes the cache's whole counter table with one `write_bytes` (plain
//! stores into the atomics) instead of atomic stores class by class.
//!
//! What is attacked: every caller (the clean rewind, the slow reset's own
//! cache, a detach without flush for a reset or a drop) with more and
//! fewer than 8 classes counted; the counts right after each reset and
//! after the next round (nothing lost that should be counted, nothing left
//! that should be gone); a reset and a drop racing another thread's exit
//! (its thread-local destructor flushing its cache); a thread whose cache
//! was detached coming back; a dropped arena recycled as a spare and taken
//! by other threads; resets inside thread-local destructors before and
//! after the crate's own; and (under miri) the plain stores through the
//! shared borrow.
#![cfg_attr(feature = "checked", allow(dead_code, unused_imports))]

mod common;
use common::*;

use allocator_api2::alloc::Allocator;
use smallmid::{SmallMidArena, Stats};
use std::cell::RefCell;
use std::sync::{mpsc, Arc, Mutex};

/// Sizes of 14 distinct small classes (more than 8: the one-pass path).
const MANY: [usize; 14] = [
    8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
];
/// Sizes of 3 classes (the class-by-class path).
const FEW: [usize; 3] = [24, 80, 320];

fn alloc(a: &SmallMidArena, size: usize, tag: u8) -> *mut u8 {
    let p = a
        .allocate(l(size, 8))
        .expect("small allocation")
        .cast::<u8>()
        .as_ptr();
    // SAFETY: a fresh block of `size` bytes.
    unsafe { p.write_bytes(tag, size) };
    p
}

fn free(a: &SmallMidArena, p: *mut u8, size: usize) {
    // SAFETY: callers pass a live block of `a` of `size` bytes, align 8.
    unsafe { a.deallocate(core::ptr::NonNull::new(p).unwrap(), l(size, 8)) };
}

/// `n` blocks of each size; the first `freed` of each freed again. Returns
/// the blocks still live (they die at the next reset).
fn round(a: &SmallMidArena, sizes: &[usize], n: usize, freed: usize) -> Vec<(*mut u8, usize)> {
    let mut live = Vec::new();
    for (k, &s) in sizes.iter().enumerate() {
        let ps: Vec<_> = (0..n).map(|i| alloc(a, s, (k + i) as u8)).collect();
        for (i, &p) in ps.iter().enumerate() {
            if i < freed {
                free(a, p, s);
            } else {
                live.push((p, s));
            }
        }
    }
    live
}

/// (classes with counts, allocs, frees, refills+flushes+cross) summed.
fn totals(s: &Stats) -> (usize, u64, u64, u64) {
    let counted = s
        .classes
        .iter()
        .filter(|c| c.allocs | c.frees | c.refills | c.flushes | c.cross_thread_frees != 0)
        .count();
    let allocs = s.classes.iter().map(|c| c.allocs).sum();
    let frees = s.classes.iter().map(|c| c.frees).sum();
    let rest = s
        .classes
        .iter()
        .map(|c| c.refills + c.flushes + c.cross_thread_frees)
        .sum();
    (counted, allocs, frees, rest)
}

#[track_caller]
fn assert_zero(a: &SmallMidArena, what: &str) {
    let s = a.stats();
    assert_eq!(totals(&s), (0, 0, 0, 0), "{what}: {s}");
    assert_eq!(
        (
            s.blocks_in_use,
            s.bytes_in_use,
            s.large_allocs,
            s.large_frees
        ),
        (0, 0, 0, 0),
        "{what}: {s}"
    );
}

#[track_caller]
fn assert_counts(a: &SmallMidArena, classes: usize, allocs: u64, frees: u64, what: &str) {
    let s = a.stats();
    let (c, al, fr, _) = totals(&s);
    assert_eq!((c, al, fr), (classes, allocs, frees), "{what}: {s}");
    assert_eq!(s.blocks_in_use, allocs - frees, "{what}: {s}");
}

/// Every caller on this thread: the clean rewind and the slow reset (made
/// dirty by a flush), each after many classes and after few, alternating
/// so that a path leaving counts of a class outside its mask shows up in
/// the next round's totals.
#[test]
#[cfg_attr(miri, ignore)]
fn own_cache_resets_many_and_few_classes() {
    let mut a = SmallMidArena::new();
    a.reserve(1).unwrap(); // grown: the thread's cache serves
    let plans: [(&[usize], bool); 8] = [
        (&MANY, false),
        (&FEW, false),
        (&MANY, true),
        (&FEW, true),
        (&MANY, false),
        (&MANY, true),
        (&FEW, false),
        (&MANY, false),
    ];
    for (r, &(sizes, dirty)) in plans.iter().enumerate() {
        let n = 3 + r % 3;
        let live = round(&a, sizes, n, 1);
        let what = format!("round {r} ({} classes, dirty {dirty})", sizes.len());
        assert_counts(
            &a,
            sizes.len(),
            (sizes.len() * n) as u64,
            sizes.len() as u64,
            &what,
        );
        if dirty {
            a.flush_thread_cache();
        }
        drop(live);
        a.reset();
        assert_zero(&a, &format!("after the reset of {what}"));
    }
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

/// The one-pass zeroing through a shared borrow of the atomics, under
/// miri (Stacked/Tree Borrows and the data-race detector): a clean rewind
/// and a slow reset after 10 classes, each followed by a round that must
/// count from zero.
#[test]
fn one_pass_zeroing_is_sound() {
    let sizes = &MANY[..10];
    let mut a = SmallMidArena::new();
    a.reserve(1).unwrap();
    for dirty in [false, true] {
        let live = round(&a, sizes, 2, 1);
        assert_counts(&a, 10, 20, 10, "before");
        if dirty {
            a.flush_thread_cache();
        }
        drop(live);
        a.reset();
        assert_zero(&a, "after the reset");
    }
    let live = round(&a, &sizes[..3], 1, 0);
    assert_counts(&a, 3, 3, 0, "the next round");
    drop(live);
}

/// A worker thread that lives on across resets: it uses the arena (14
/// classes, its cache attached), hands the arena back, the owner resets
/// (detaching the worker's cache without a flush: the one-pass zeroing
/// of another thread's table), and the worker comes back, taking its
/// idle cache with the slabs the reset kept for it. Each round counts only
/// what happened since the reset.
#[test]
#[cfg_attr(miri, ignore)]
fn detached_worker_comes_back_and_counts_from_zero() {
    let mut arena = Arc::new(SmallMidArena::new());
    arena.reserve(1).unwrap();
    let (to_worker, work) = mpsc::channel::<Option<(Arc<SmallMidArena>, usize)>>();
    let (done, from_worker) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        while let Some((a, n)) = work.recv().unwrap() {
            let live = round(&a, &MANY, n, 2);
            drop(live); // dead at the owner's reset
            drop(a);
            done.send(()).unwrap();
        }
    });
    for r in 0..6usize {
        let n = 3 + r;
        // The owner's own cache counts too (few classes: its path differs).
        let own = round(&arena, &FEW, 2, 0);
        to_worker.send(Some((arena.clone(), n))).unwrap();
        from_worker.recv().unwrap();
        let a = Arc::get_mut(&mut arena).expect("the worker let go");
        let what = format!("round {r}");
        assert_counts(
            a,
            MANY.len() + FEW.len(),
            (MANY.len() * n + FEW.len() * 2) as u64,
            (MANY.len() * 2) as u64,
            &what,
        );
        assert_eq!(a.stats().thread_caches, 2, "{what}");
        drop(own);
        a.reset();
        assert_zero(a, &format!("after the reset of {what}"));
        assert_eq!(a.stats().thread_caches, 1, "{what}: the worker's detached");
    }
    to_worker.send(None).unwrap();
    worker.join().unwrap();
    let a = Arc::get_mut(&mut arena).unwrap();
    assert_zero(a, "after the worker exited");
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

/// A reset racing another thread's exit: the thread lets go of its handle
/// as its closure ends, the owner resets at once, while the thread's
/// thread-local destructor flushes its cache (14 classes, many of its
/// blocks on free lists) into the arena. Whichever comes first, the reset
/// leaves nothing counted, and the exit afterwards adds nothing.
#[test]
#[cfg_attr(miri, ignore)]
fn reset_races_a_thread_exit() {
    for r in 0..40usize {
        let mut arena = Arc::new(SmallMidArena::new());
        arena.reserve(1).unwrap();
        let own = round(&arena, &MANY[..(r % 12) + 1], 2, 1);
        let theirs = arena.clone();
        let t = std::thread::spawn(move || {
            let live = round(&theirs, &MANY, 5, 4);
            drop(live);
            drop(theirs);
        });
        let a = loop {
            if let Some(a) = Arc::get_mut(&mut arena) {
                break a;
            }
            std::hint::spin_loop();
        };
        drop(own);
        a.reset();
        let what = format!("race {r}");
        assert_zero(a, &format!("{what}, right after the reset"));
        let live = round(a, &MANY[..9], 1, 0);
        assert_counts(a, 9, 9, 0, &format!("{what}, the next round"));
        t.join().unwrap();
        assert_counts(a, 9, 9, 0, &format!("{what}, after the join"));
        drop(live);
        a.reset();
        assert_zero(a, &format!("{what}, after the second reset"));
        a.flush_thread_cache();
        assert_eq!(a.audit().blocks_out, 0, "{what}");
    }
    settle(1);
}

/// A drop racing another thread's exit (the drop resets the arena for the
/// dropping thread's spare, detaching without a flush); the next arena on
/// this thread (that spare) starts at zero, and so does one another thread
/// makes after the spare went to the shared spares.
#[test]
#[cfg_attr(miri, ignore)]
fn drop_races_a_thread_exit_and_the_spare_starts_at_zero() {
    let _g = serial();
    for r in 0..30usize {
        let mut arena = Arc::new(SmallMidArena::new());
        arena.reserve(1).unwrap();
        let own = round(&arena, &MANY, 2, 1);
        let theirs = arena.clone();
        let t = std::thread::spawn(move || {
            let live = round(&theirs, &MANY, 4, 3);
            drop(live);
            drop(theirs);
        });
        while Arc::get_mut(&mut arena).is_none() {
            std::hint::spin_loop();
        }
        drop(own);
        drop(arena);
        let next = SmallMidArena::new();
        assert_zero(&next, &format!("drop race {r}: the next arena"));
        let live = round(&next, &FEW, 2, 1);
        assert_counts(&next, 3, 6, 3, &format!("drop race {r}: its first round"));
        drop(live);
        // Pushes the first spare to the shared spares (this one becomes
        // the thread's spare).
        let other = SmallMidArena::new();
        drop(round(&other, &MANY, 1, 1));
        drop(next);
        drop(other);
        t.join().unwrap();
        // Another thread takes a shared spare (maybe ours, with our
        // parked cache idle in it).
        std::thread::spawn(move || {
            let a = SmallMidArena::new();
            assert_zero(&a, &format!("drop race {r}: a spare on another thread"));
            let live = round(&a, &MANY, 2, 1);
            assert_counts(&a, 14, 28, 14, &format!("drop race {r}: its round"));
            drop(live);
        })
        .join()
        .unwrap();
    }
    settle(1);
}

/// What resets inside thread-local destructors saw: (allocs before, the
/// totals after the reset, allocs of the next round).
type Seen = (&'static str, u64, (usize, u64, u64, u64), u64);
static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

struct Late(&'static str, RefCell<Option<SmallMidArena>>);

impl Drop for Late {
    fn drop(&mut self) {
        let Some(mut a) = self.1.borrow_mut().take() else {
            return;
        };
        let live = round(&a, &MANY, 2, 1);
        let before = totals(&a.stats()).1;
        drop(live);
        a.reset();
        let after = totals(&a.stats());
        let live = round(&a, &MANY[..10], 1, 0);
        let next = totals(&a.stats()).1;
        drop(live);
        SEEN.lock().unwrap().push((self.0, before, after, next));
    }
}

thread_local! {
    static EARLY: Late = const { Late("early", RefCell::new(None)) };
    static LATER: Late = const { Late("later", RefCell::new(None)) };
}

/// `reset` inside thread-local destructors: one registered before the
/// crate's own (so it runs after it: a cacheless thread, counts retired)
/// and one after (it runs first, with the thread's cache).
#[test]
#[cfg_attr(miri, ignore)]
fn resets_inside_thread_local_destructors() {
    let _g = serial();
    std::thread::spawn(|| {
        // Registered first: destroyed last, after the crate's guard.
        EARLY.with(|e| {
            let a = SmallMidArena::new(); // registers the crate's guard
            a.reserve(1).unwrap();
            drop(round(&a, &MANY, 3, 1));
            *e.1.borrow_mut() = Some(a);
        });
        // Registered after the guard: destroyed before it.
        LATER.with(|l| {
            let a = SmallMidArena::new();
            a.reserve(1).unwrap();
            drop(round(&a, &MANY, 3, 1));
            *l.1.borrow_mut() = Some(a);
        });
    })
    .join()
    .unwrap();
    settle(1);
    let mut seen = SEEN.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("early", 14 * 5, (0, 0, 0, 0), 10),
            ("later", 14 * 5, (0, 0, 0, 0), 10)
        ],
        "(what, allocs before, totals after the reset, next round's allocs)"
    );
}

/// Small enough for miri: a scoped thread counts 10 classes and returns;
/// the reset right after the scope races its exit (scoped joins return
/// before thread-local destructors run) and zeroes its table in one pass
/// if the exit has not retired it yet. Miri's race detector checks the
/// plain stores against the exit's and the thread's atomic ones.
#[test]
fn reset_after_a_scoped_thread_is_race_free() {
    let mut a = SmallMidArena::new();
    a.reserve(1).unwrap();
    let own = round(&a, &MANY[..9], 1, 0);
    std::thread::scope(|s| {
        s.spawn(|| drop(round(&a, &MANY[..10], 2, 1)));
    });
    assert_counts(&a, 10, 29, 10, "before the reset");
    drop(own);
    a.reset();
    assert_zero(&a, "after the reset");
    drop(round(&a, &FEW, 1, 1));
    assert_counts(&a, 3, 3, 3, "the next round");
}
