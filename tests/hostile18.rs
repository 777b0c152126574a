//! Hostile review 18 (commit 260fc0f): `reset()` of a *solo* arena (one
//! cache attached, nothing retired, published by every unlock of the
//! members lock) rewinds the calling thread's cache without taking the
//! lock; `Allocator::grow` of a small block goes through the handle's
//! member (`ArenaState::grow_in`): in place when the class stays or the
//! block is the mixed range's last carve, else allocate, copy and free
//! through the cache.
//!
//! What is attacked: a reset while another thread's cache is attached but
//! idle (alive, clean arena), while another thread's exit flushes into the
//! arena, after a cacheless thread, after `flush_thread_cache`, by a thread
//! with no cache; the counters and `audit()` right after each; grow of seed
//! blocks, reused blocks, other threads' blocks, across the 32 KiB
//! boundary, with alignment going up and down, `grow_zeroed` in and out of
//! place, under an exhausted memory limit, from two threads at once, and
//! with a wrong old layout under `checked`.
#![cfg(not(miri))]
#![cfg_attr(feature = "checked", allow(dead_code, unused_imports))]

mod common;
use common::*;

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::vec::Vec as AVec;
use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use smallmid::test_hooks::cacheless;
use smallmid::SmallMidArena;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

fn nn(p: *mut u8) -> NonNull<u8> {
    NonNull::new(p).expect("non-null")
}

/// `a.grow(p, old, new)`: the new block's address and length.
fn grow(
    a: &SmallMidArena,
    p: *mut u8,
    old: Layout,
    new: Layout,
) -> Result<(*mut u8, usize), AllocError> {
    // SAFETY: callers pass a live block of `a` allocated with a layout
    // `old` fits, and do not use `p` again unless this fails.
    unsafe { a.grow(nn(p), old, new) }.map(|b| (b.cast::<u8>().as_ptr(), b.len()))
}

/// As [`grow`], through `grow_zeroed`.
fn grow_zeroed(
    a: &SmallMidArena,
    p: *mut u8,
    old: Layout,
    new: Layout,
) -> Result<(*mut u8, usize), AllocError> {
    // SAFETY: as in `grow`.
    unsafe { a.grow_zeroed(nn(p), old, new) }.map(|b| (b.cast::<u8>().as_ptr(), b.len()))
}

/// `a.shrink(p, old, new)`: the new block's address and length.
fn shrink(a: &SmallMidArena, p: *mut u8, old: Layout, new: Layout) -> (*mut u8, usize) {
    // SAFETY: as in `grow`.
    let b = unsafe { a.shrink(nn(p), old, new) }.expect("a shrink refused");
    (b.cast::<u8>().as_ptr(), b.len())
}

/// A block of `lay` and its length.
fn alloc_len(a: &SmallMidArena, lay: Layout) -> (*mut u8, usize) {
    let b = a.allocate(lay).expect("allocation refused");
    (b.cast::<u8>().as_ptr(), b.len())
}

/// An arena past its seed (so the handle names its state and this thread
/// gets a member), reset once with only this thread's cache in it: clean,
/// solo, nothing counted. Built under a limit and then unlimited: a spare
/// taken under a limit is reset keeping no slab in any cache, so whatever
/// arena this is, this thread's cache starts with no class range, and its
/// small blocks are carved from a mixed range.
fn solo_arena() -> SmallMidArena {
    let mut a = SmallMidArena::builder().memory_limit(1 << 30).build();
    a.reserve(1).unwrap();
    a.set_memory_limit(usize::MAX).unwrap();
    let p = alloc(&a, l(64, 8));
    free(&a, p, l(64, 8));
    a.reset();
    assert_reset_counts(&a, 1, "a solo arena");
    a
}

/// What any reset must leave: nothing in use, nothing counted, `caches`
/// caches attached.
#[track_caller]
fn assert_reset_counts(a: &SmallMidArena, caches: u64, what: &str) {
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 0, "{what}\n{s}");
    assert_eq!(s.bytes_in_use, 0, "{what}\n{s}");
    assert_eq!((s.large_allocs, s.large_frees), (0, 0), "{what}\n{s}");
    assert!(s.classes.is_empty(), "{what}: counters survived\n{s}");
    assert_eq!(s.huge_bytes, 0, "{what}\n{s}");
    assert_eq!(s.thread_caches, caches, "{what}\n{s}");
}

/// Allocates `n` blocks of each layout, stamps them, checks none overlaps
/// another or anything in `live`, checks the stamps, frees them; the exact
/// (allocs, frees) per class it caused are then `(n, n)`.
fn churn_disjoint(a: &SmallMidArena, layouts: &[Layout], n: usize, live: &mut Live, tag: u8) {
    let mut mine = Vec::new();
    for (k, &lay) in layouts.iter().enumerate() {
        for i in 0..n {
            let (p, len) = alloc_len(a, lay);
            assert_eq!(p as usize % lay.align(), 0);
            live.add(p, len, "churn");
            let v = tag ^ (k as u8).wrapping_mul(31) ^ i as u8;
            stamp(p, lay.size(), v);
            mine.push((p, lay, v));
        }
    }
    for &(p, lay, v) in &mine {
        check(p, lay.size(), v, "a churned block");
    }
    for (p, lay, _) in mine {
        live.remove(p);
        free(a, p, lay);
    }
}

// ---------------------------------------------------------------------
// reset: who else may be in the arena.
// ---------------------------------------------------------------------

/// A worker thread that stays alive, uses the arena through an `Arc` clone
/// it drops after each round, and keeps its cache attached meanwhile. Its
/// blocks come from a fresh class slab handed whole and a fresh mixed
/// range, which leave the arena *clean* (`dirty` false): the owner's reset
/// then sees a clean arena with two caches attached. Only `solo` (false:
/// two caches) stops a rewind of the owner's cache alone, which would leave
/// the worker's cache attached with its ranges and counters.
///
/// Checked: right after each reset nothing is counted and one cache is
/// attached; the worker's next round (its cache detached, then attached
/// again) does not overlap the owner's live blocks nor change their bytes.
#[test]
fn reset_detaches_an_idle_live_threads_cache_in_a_clean_arena() {
    let mut arena = Arc::new(solo_arena());
    type Round = (Vec<usize>, Vec<usize>);
    let (to_worker, rx) = mpsc::channel::<Option<(Arc<SmallMidArena>, Vec<(usize, usize)>)>>();
    let (tx, from_worker) = mpsc::channel::<Round>();
    let worker = std::thread::spawn(move || {
        while let Ok(Some((a, owners))) = rx.recv() {
            // 20 blocks of 2,048 B: one class slab, handed whole.
            let big: Vec<usize> = (0..20)
                .map(|i| {
                    let p = alloc(&a, l(2048, 8));
                    stamp(p, 2048, 0xB0 ^ i as u8);
                    p as usize
                })
                .collect();
            // 30 of 48 B, carved from a fresh mixed range; 10 freed again
            // (into the cache: no flush).
            let mut small: Vec<usize> = (0..30)
                .map(|i| {
                    let p = alloc(&a, l(48, 8));
                    stamp(p, 48, 0xC0 ^ i as u8);
                    p as usize
                })
                .collect();
            for p in small.drain(20..) {
                free(&a, p as *mut u8, l(48, 8));
            }
            // The owner's live blocks (if any) kept their bytes and none
            // of ours overlaps them.
            let mut live = Live::default();
            for &(p, v) in &owners {
                check(
                    p as *const u8,
                    512,
                    v as u8,
                    "an owner's block, seen by the worker",
                );
                live.add(p as *mut u8, 512, "owner");
            }
            for &p in &big {
                live.add(p as *mut u8, 2048, "worker 2048");
            }
            for &p in &small {
                live.add(p as *mut u8, 48, "worker 48");
            }
            for (i, &p) in big.iter().enumerate() {
                check(p as *const u8, 2048, 0xB0 ^ i as u8, "worker 2048");
            }
            drop(a); // the cache stays attached: this thread lives on
            tx.send((big, small)).unwrap();
        }
    });
    let mut owners: Vec<(usize, usize)> = Vec::new();
    for round in 0..6 {
        to_worker
            .send(Some((arena.clone(), owners.clone())))
            .unwrap();
        let (big, small) = from_worker.recv().unwrap();
        assert_eq!((big.len(), small.len()), (20, 20));
        // The worker dropped its clone before it answered.
        let a = Arc::get_mut(&mut arena).expect("the worker's clone is gone");
        let s = a.stats();
        assert_eq!(s.thread_caches, 2, "round {round}: the worker's cache\n{s}");
        assert_eq!(
            s.blocks_in_use,
            40 + owners.len() as u64,
            "round {round}\n{s}"
        );
        a.reset();
        assert_reset_counts(a, 1, &format!("round {round}: right after the reset"));
        // The owner allocates again, from whatever the reset left it; its
        // blocks stay live across the worker's next round.
        owners.clear();
        let mut live = Live::default();
        for i in 0..24 {
            let p = alloc(a, l(512, 8));
            live.add(p, 512, "owner");
            stamp(p, 512, (round * 24 + i) as u8);
            owners.push((p as usize, (round * 24 + i) % 256));
        }
        assert_eq!(a.stats().blocks_in_use, 24);
    }
    to_worker.send(None).unwrap();
    worker.join().unwrap();
    let a = Arc::get_mut(&mut arena).unwrap();
    for &(p, v) in &owners {
        check(p as *const u8, 512, v as u8, "an owner's block at the end");
        free(a, p as *mut u8, l(512, 8));
    }
    a.reset();
    assert_reset_counts(a, 1, "after the worker exited");
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

/// The same worker, but the resetting thread never used the arena: the
/// only cache attached is the worker's (caches == 1, and from the second
/// round on nothing retired: the arena is solo) and the resetting thread
/// has none. The reset must not take that for "the only cache is ours".
#[test]
fn reset_by_a_thread_without_a_cache_while_another_threads_is_the_only_one() {
    // Made on another thread and handed over: this thread never touches
    // the arena before the reset.
    let mut arena = Arc::new(std::thread::spawn(solo_arena).join().unwrap());
    // Its maker exited: its cache was retired (flushed, counted).
    let (to_worker, rx) = mpsc::channel::<Option<Arc<SmallMidArena>>>();
    let (tx, from_worker) = mpsc::channel::<Vec<usize>>();
    let worker = std::thread::spawn(move || {
        while let Ok(Some(a)) = rx.recv() {
            let v: Vec<usize> = (0..16)
                .map(|i| {
                    let p = alloc(&a, l(96, 8));
                    stamp(p, 96, i as u8);
                    p as usize
                })
                .collect();
            drop(a);
            tx.send(v).unwrap();
        }
    });
    for round in 0..4 {
        to_worker.send(Some(arena.clone())).unwrap();
        let v = from_worker.recv().unwrap();
        let a = Arc::get_mut(&mut arena).unwrap();
        // The maker's retired counts are there only before the first reset.
        let s = a.stats();
        assert_eq!(s.thread_caches, 1, "round {round}: the worker's only\n{s}");
        assert_eq!(s.blocks_in_use, 16, "round {round}\n{s}");
        a.reset();
        assert_reset_counts(a, 0, &format!("round {round}: the worker's cache detached"));
        assert_eq!(v.len(), 16);
        // The worker's next round counts only its own 16 blocks (checked
        // at the top): what it held before died in this reset.
    }
    to_worker.send(None).unwrap();
    worker.join().unwrap();
    let a = Arc::get_mut(&mut arena).unwrap();
    assert_eq!(a.stats().thread_caches, 0, "the worker exited");
    a.reset();
    assert_reset_counts(a, 0, "the end");
    // This thread's first blocks, after all of it.
    let mut live = Live::default();
    churn_disjoint(a, &[l(96, 8), l(700, 8)], 40, &mut live, 0x96);
    assert_eq!(class_counts(a, 96), (40, 40));
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

thread_local! {
    /// Spins for the given microseconds when the thread's locals are
    /// destroyed: registered after the arena's own thread-local, it runs
    /// around that one's exit flush, spreading the flush over the owner's
    /// reset.
    static DELAY: Delay = const { Delay(Cell::new(0)) };
}

struct Delay(Cell<u64>);

impl Drop for Delay {
    fn drop(&mut self) {
        let until = Instant::now() + Duration::from_micros(self.0.get());
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}

/// A thread uses the arena through its `Arc` clone, drops the clone and
/// exits; the owner takes the arena back with `Arc::get_mut` at once and
/// resets it, while the thread's exit may be flushing and retiring its
/// cache (before, during or after the reset). Four shapes of what the
/// thread did: blocks of many classes (one kept live, so it dies in the
/// reset), a span the owner allocated freed and kept in the thread's
/// cache, a block of the owner's freed into the thread's cache, 1,500
/// blocks freed (a long list for the exit to flush), a `Vec` grown
/// through its cache (and leaked).
///
/// Checked every time: nothing counted right after the reset; once the
/// thread is joined (its exit done), the counters hold exactly the owner's
/// own traffic since the reset (an exit that folded its counts after the
/// reset, or a rewind that left the thread's cache attached, shows here),
/// and after a flush `audit()` finds no block out (a block the exit left
/// counted in its slab would).
#[test]
fn a_threads_exit_flush_races_the_owners_reset() {
    let mut arena = Arc::new(solo_arena());
    let mut rng = Rng(0x5eed_0018);
    let deadline = Instant::now() + Duration::from_millis(2000);
    let mut iters = 0u32;
    while iters < 500 || (Instant::now() < deadline && iters < 10_000) {
        let shape = iters % 5;
        let spin = rng.below(120) as u64;
        let wait = rng.below(150) as u64;
        let a = Arc::get_mut(&mut arena).unwrap();
        // What the owner hands over for the thread to free.
        let span = (shape == 1).then(|| alloc(a, l(64 * KIB, 8)) as usize);
        let small = (shape == 2).then(|| {
            let p = alloc(a, l(48, 8));
            stamp(p, 48, 0x48);
            p as usize
        });
        let a2 = arena.clone();
        let t = std::thread::spawn(move || {
            let a: &SmallMidArena = &a2;
            let mut keep = 0usize;
            match shape {
                0 => {
                    for (i, size) in [8usize, 24, 48, 200, 700, 2000, 5000, 20000]
                        .into_iter()
                        .enumerate()
                    {
                        let p = alloc(a, l(size, 8));
                        stamp(p, size, i as u8);
                        check(p, size, i as u8, "exiting thread");
                        free(a, p, l(size, 8));
                    }
                    keep = alloc(a, l(96, 8)) as usize;
                }
                1 => free(a, span.unwrap() as *mut u8, l(64 * KIB, 8)),
                2 => {
                    check(small.unwrap() as *const u8, 48, 0x48, "the owner's block");
                    free(a, small.unwrap() as *mut u8, l(48, 8));
                }
                3 => {
                    // A long exit flush: ~1,000 blocks on the cache's list.
                    let v: Vec<*mut u8> = (0..1500).map(|_| alloc(a, l(16, 8))).collect();
                    for p in v {
                        free(a, p, l(16, 8));
                    }
                    keep = alloc(a, l(16, 8)) as usize;
                }
                _ => {
                    let mut v: AVec<u8, &SmallMidArena> = AVec::new_in(a);
                    for i in 0..3000u32 {
                        v.push(i as u8);
                    }
                    assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
                    keep = v.as_ptr() as usize;
                    core::mem::forget(v);
                }
            }
            DELAY.with(|d| d.0.set(spin));
            drop(a2);
            keep
        });
        let a = loop {
            if let Some(a) = Arc::get_mut(&mut arena) {
                break a;
            }
            std::hint::spin_loop();
        };
        // Lands the reset anywhere in the thread's exit.
        let until = Instant::now() + Duration::from_micros(wait);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        a.reset();
        assert_reset_counts(
            a,
            1,
            &format!("iteration {iters} (shape {shape}): after reset"),
        );
        // The owner's traffic after the reset: 10 blocks of 64 B.
        let mut live = Live::default();
        churn_disjoint(a, &[l(64, 8)], 10, &mut live, iters as u8);
        let _dead = t.join().unwrap(); // freed by the reset
        let s = a.stats();
        assert_eq!(s.thread_caches, 1, "iteration {iters} (shape {shape})\n{s}");
        assert_eq!(s.blocks_in_use, 0, "iteration {iters} (shape {shape})\n{s}");
        assert_eq!(
            (s.large_allocs, s.large_frees),
            (0, 0),
            "iteration {iters}\n{s}"
        );
        assert_eq!(s.classes.len(), 1, "iteration {iters} (shape {shape})\n{s}");
        assert_eq!(
            (s.classes[0].size, s.classes[0].allocs, s.classes[0].frees),
            (64, 10, 10),
            "iteration {iters} (shape {shape})\n{s}"
        );
        a.flush_thread_cache();
        assert_eq!(
            a.audit().blocks_out,
            0,
            "iteration {iters} (shape {shape}): a block stayed out"
        );
        iters += 1;
    }
}

/// A cacheless thread (one whose thread-locals are gone) allocates and
/// frees straight in the central lists and counts as retired: the arena is
/// not solo until a full reset zeroes those counts. Each of: an allocation
/// left live, a free of the owner's block, both; then reset: nothing
/// counted, and the owner's blocks never collide with the cacheless ones.
#[test]
fn reset_after_a_cacheless_thread_allocated_or_freed() {
    let mut a = solo_arena();
    for round in 0..3 {
        let mine = alloc(&a, l(48, 8));
        stamp(mine, 48, 1);
        let theirs = cacheless(|| {
            let p = alloc(&a, l(48, 8));
            stamp(p, 48, 2);
            if round != 0 {
                free(&a, mine, l(48, 8));
            }
            p
        });
        check(theirs, 48, 2, "a cacheless block");
        if round == 0 {
            check(mine, 48, 1, "the owner's block");
        }
        let s = a.stats();
        assert_eq!(s.blocks_in_use, 1 + u64::from(round == 0), "{s}");
        assert_eq!(class_counts(&a, 48).0, 2, "{s}");
        if round == 2 {
            // And the owner's own traffic after: still counted.
            cacheless(|| free(&a, theirs, l(48, 8)));
            assert_eq!(a.stats().blocks_in_use, 0);
        }
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}"));
        // A second reset at once (solo again, clean or not) stays exact.
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}, reset twice"));
        let mut live = Live::default();
        let keep: Vec<*mut u8> = (0..200)
            .map(|_| {
                let p = alloc(&a, l(48, 8));
                live.add(p, 48, "after a cacheless round");
                p
            })
            .collect();
        // A cacheless allocation now must not return one of those.
        let c = cacheless(|| alloc(&a, l(48, 8)));
        live.add(c, 48, "cacheless after reset");
        cacheless(|| free(&a, c, l(48, 8)));
        for p in keep {
            free(&a, p, l(48, 8));
        }
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}: after the churn"));
    }
}

/// `flush_thread_cache` returns the cache's ranges: the arena is dirty and
/// the reset walks it; then clean again, and the next reset rewinds. Over
/// many rounds: counters exact after each reset, no SuperSlab added (the
/// memory is reused), no block handed out twice.
#[test]
fn reset_after_flush_thread_cache_round_after_round() {
    let mut a = solo_arena();
    let layouts = [
        l(8, 8),
        l(48, 8),
        l(256, 8),
        l(1000, 8),
        l(3000, 8),
        l(9000, 16),
    ];
    let base = a.stats().superslabs;
    for round in 0..60u32 {
        let mut live = Live::default();
        let kept: Vec<(*mut u8, Layout)> = layouts
            .iter()
            .flat_map(|&lay| (0..8).map(move |_| lay))
            .map(|lay| {
                let (p, len) = alloc_len(&a, lay);
                live.add(p, len, "round block");
                stamp(p, lay.size(), round as u8);
                (p, lay)
            })
            .collect();
        for &(p, lay) in &kept {
            check(p, lay.size(), round as u8, "before the flush");
        }
        if round % 3 != 2 {
            a.flush_thread_cache();
        }
        if round % 2 == 0 {
            // Half of them freed before the reset, half die in it.
            for &(p, lay) in kept.iter().step_by(2) {
                free(&a, p, lay);
            }
        }
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}"));
        assert_eq!(
            a.stats().superslabs,
            base,
            "round {round}: memory not reused"
        );
    }
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

/// Two threads use the arena, one exits (its exit retires its cache:
/// flushed, counts folded: not solo); the reset walks everything; the next
/// reset (solo again) rewinds. The counters are exact after each, and the
/// owner's blocks after them never collide.
#[test]
fn reset_after_two_threads_used_it_and_one_exited() {
    let mut a = solo_arena();
    for round in 0..20u8 {
        let mine: Vec<usize> = (0..50).map(|_| alloc(&a, l(160, 8)) as usize).collect();
        for &p in &mine {
            stamp(p as *mut u8, 160, round);
        }
        std::thread::scope(|s| {
            let (a, mine) = (&a, &mine);
            s.spawn(move || {
                let v: Vec<*mut u8> = (0..50).map(|_| alloc(a, l(160, 8))).collect();
                for &p in &v {
                    stamp(p, 160, !round);
                }
                // Half of the owner's blocks freed here (cross-thread).
                for &p in mine.iter().step_by(2) {
                    check(p as *const u8, 160, round, "an owner's block");
                    free(a, p as *mut u8, l(160, 8));
                }
                for &p in &v[..25] {
                    free(a, p, l(160, 8));
                }
            });
        });
        // A scoped join may return before the thread's exit: wait for it
        // (the arena's counters then include the folded cache).
        wait_caches(&a, 1);
        let s = a.stats();
        assert_eq!(s.blocks_in_use, 50, "{s}");
        assert_eq!(class_counts(&a, 160), (100, 50), "{s}");
        for &p in mine.iter().skip(1).step_by(2) {
            check(
                p as *const u8,
                160,
                round,
                "an owner's block after the exit",
            );
        }
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}: after the exit"));
        let mut live = Live::default();
        churn_disjoint(&a, &[l(160, 8), l(24, 8)], 60, &mut live, round);
        assert_eq!(class_counts(&a, 160), (60, 60));
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}: solo again"));
    }
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

/// A solo rewind clears every class the cache counted, classes a block
/// was resized to in place included (a `Vec` growing at the mixed range's
/// end counts a free of its old class and an allocation of its new one):
/// right after it nothing is counted, and one allocation then counts one.
#[test]
fn stats_and_audit_right_after_a_solo_rewind() {
    let mut a = solo_arena();
    for round in 0..30u32 {
        {
            let mut v: AVec<u8, &SmallMidArena> = AVec::new_in(&a);
            for i in 0..(200 + round * 30) {
                v.push(i as u8);
            }
            let mut w: AVec<u64, &SmallMidArena> = AVec::new_in(&a);
            w.extend(0..u64::from(round) * 40);
            assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
            assert!(w.iter().enumerate().all(|(i, &x)| x == i as u64));
            let s = a.stats();
            assert_eq!(s.blocks_in_use, 1 + u64::from(round > 0), "{s}");
            // v and w leak into the reset half the time.
            if round % 2 == 0 {
                core::mem::forget(v);
                core::mem::forget(w);
            }
        }
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}"));
        let p = alloc(&a, l(40, 8));
        let s = a.stats();
        assert_eq!(s.classes.len(), 1, "round {round}\n{s}");
        assert_eq!((s.classes[0].size, s.classes[0].allocs), (40, 1), "{s}");
        free(&a, p, l(40, 8));
        let au = a.audit();
        assert_eq!(au.seed_blocks, 0);
        a.reset();
    }
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

// ---------------------------------------------------------------------
// grow: the handle's fast path.
// ---------------------------------------------------------------------

/// Grows within a class stay put and count nothing; grows across classes
/// count one free of the old class and one allocation of the new one,
/// whether in place (the mixed range's last carve) or moved; a move frees
/// the old block (it is handed out again) and copies exactly its bytes.
#[test]
fn grow_counts_and_moves_exactly() {
    let a = solo_arena();
    // Same class (17..=24 B all the 24-byte class): in place, no count.
    let p = alloc(&a, l(17, 1));
    stamp(p, 17, 0x17);
    let before = a.stats();
    let (q, len) = grow(&a, p, l(17, 1), l(24, 1)).unwrap();
    assert_eq!((q, len), (p, 24));
    assert_eq!(a.stats(), before, "a grow within the class counted");
    check(q, 17, 0x17, "same-class grow");
    // Across classes, at the mixed range's end if it is there: in place.
    // The 24-byte blocks stay live (so each is carved, not reused), the
    // grown ones are freed at once.
    let mut in_place = 0;
    let mut moved = 0;
    let mut held = vec![(q, l(24, 1))];
    let mut live = Live::default();
    live.add(q, 24, "first");
    for i in 0..150u32 {
        let (p, plen) = alloc_len(&a, l(24, 8));
        live.add(p, plen, "24");
        stamp(p, 24, i as u8);
        // Every third time a neighbour comes after it: not the last carve.
        let neighbour = (i % 3 == 0).then(|| {
            let n = alloc(&a, l(24, 8));
            live.add(n, 24, "neighbour");
            held.push((n, l(24, 8)));
            n
        });
        let c24 = class_counts(&a, 24);
        let c112 = class_counts(&a, 112);
        let (q, len) = grow(&a, p, l(24, 8), l(100, 8)).unwrap();
        assert_eq!(len, 112);
        check(q, 24, i as u8, "a grown block's bytes");
        assert_eq!(class_counts(&a, 24), (c24.0, c24.1 + 1), "i {i}");
        assert_eq!(class_counts(&a, 112), (c112.0 + 1, c112.1), "i {i}");
        live.remove(p);
        live.add(q, len, "grown");
        if q == p {
            in_place += 1;
            assert!(neighbour.is_none(), "grew in place over a neighbour");
            if let Some(&(prev, _)) = held.last() {
                check(prev, 24, prev_tag(&held, prev), "the block before");
            }
        } else {
            moved += 1;
            // The old block went back to this thread's cache: the next
            // 24-byte block is it (kept: the next one is carved again).
            let r = alloc(&a, l(24, 8));
            assert_eq!(r, p, "the moved block's old place was not freed");
            stamp(r, 24, 0xAB);
            live.add(r, 24, "reused");
            held.push((r, l(24, 8)));
        }
        stamp(q, 100, 0xEE);
        if let Some(n) = neighbour {
            stamp(n, 24, 0xAB);
        }
        live.remove(q);
        free(&a, q, l(100, 8));
    }
    assert!(
        in_place > 0 && moved > 0,
        "in place {in_place}, moved {moved}"
    );
    for &(p, lay) in &held[1..] {
        check(p, 24, 0xAB, "a neighbour");
        free(&a, p, lay);
    }
    check(held[0].0, 17, 0x17, "the first block");
    free(&a, held[0].0, l(24, 1));
    assert_eq!(a.stats().blocks_in_use, 0);
}

/// The tag a held block of [`grow_counts_and_moves_exactly`] carries.
fn prev_tag(held: &[(*mut u8, Layout)], p: *mut u8) -> u8 {
    if held[0].0 == p {
        0x17
    } else {
        0xAB
    }
}

/// A "grow" whose new alignment is smaller may map to a *smaller* class
/// (64 B at alignment 64 to 16 B at alignment 8): at the mixed range's end
/// it resizes down in place. The block handed back must still hold the new
/// size, and what the range carves next must not overlap it.
#[test]
fn grow_to_a_smaller_alignment_and_class() {
    let a = solo_arena();
    let mut seen_in_place = false;
    for i in 0..100u8 {
        let (p, len) = alloc_len(&a, l(8, 64));
        assert_eq!((p as usize % 64, len), (0, 64));
        stamp(p, 8, i);
        let (q, len) = grow(&a, p, l(8, 64), l(16, 8)).unwrap();
        assert!(len >= 16);
        check(q, 8, i, "bytes kept");
        stamp(q, 16, i);
        seen_in_place |= q == p;
        // What comes next, from the same range, stays clear of it.
        let mut live = Live::default();
        live.add(q, len, "grown");
        let next: Vec<*mut u8> = (0..8)
            .map(|k| {
                let (n, nl) = alloc_len(&a, l(8 + 8 * k, 8));
                live.add(n, nl, "next");
                stamp(n, 8 + 8 * k, 0xAA);
                n
            })
            .collect();
        check(
            q,
            16,
            i,
            "the grown block after its neighbours were written",
        );
        for (k, n) in next.into_iter().enumerate() {
            free(&a, n, l(8 + 8 * k, 8));
        }
        free(&a, q, l(16, 8));
    }
    assert!(seen_in_place, "never at the mixed range's end");
    assert_eq!(a.stats().blocks_in_use, 0);
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

/// Alignment going up: 64 at 64 to 128 at 128, 48 at 16 to 64 at 64,
/// 100 at 8 to 200 at 4,096 (a class past the mixed ones), with padding
/// blocks between so the old block is 128-aligned or not. Every result is
/// aligned, holds the old bytes, and overlaps nothing live.
#[test]
fn grow_with_alignment_going_up() {
    let a = solo_arena();
    let cases = [
        (l(64, 64), l(128, 128)),
        (l(48, 16), l(64, 64)),
        (l(100, 8), l(200, 4096)),
        (l(8, 8), l(1024, 128)),
        (l(1000, 8), l(1100, 256)),
        (l(24, 8), l(24, 32)),
    ];
    let mut live = Live::default();
    let mut held = Vec::new();
    for round in 0..40usize {
        for (k, &(old, new)) in cases.iter().enumerate() {
            if round % 2 == 1 {
                // A padding block shifts what comes next.
                let (pad, len) = alloc_len(&a, l(64, 64));
                live.add(pad, len, "padding");
                held.push((pad, l(64, 64)));
            }
            let (p, len) = alloc_len(&a, old);
            live.add(p, len, "old");
            let v = (round * 7 + k) as u8;
            stamp(p, old.size(), v);
            let (q, qlen) = grow(&a, p, old, new).unwrap();
            live.remove(p);
            live.add(q, qlen, "grown");
            assert_eq!(
                q as usize % new.align(),
                0,
                "{old:?} -> {new:?}: misaligned"
            );
            assert!(qlen >= new.size());
            check(q, old.size(), v, "bytes kept across an alignment change");
            stamp(q, new.size(), v);
            held.push((q, new));
        }
        if round % 5 == 4 {
            for (p, lay) in held.drain(..) {
                live.remove(p);
                free(&a, p, lay);
            }
        }
    }
    for (p, lay) in held {
        free(&a, p, lay);
    }
    assert_eq!(a.stats().blocks_in_use, 0);
}

/// Across the small/large boundary (32 KiB): 16 KiB -> 32 KiB (two classes
/// past the mixed ones) -> 32 KiB + 1 (a span) -> 200 KiB -> 2 MiB (huge),
/// and 8 B -> 40 KiB in one step. Bytes kept at every step, one block
/// counted all along, the large counters move exactly.
#[test]
fn grow_across_the_small_large_boundary() {
    let a = solo_arena();
    let steps = [
        l(16 * KIB, 8),
        l(32 * KIB, 8),
        l(32 * KIB + 1, 8),
        l(200 * KIB, 8),
        l(2 * MIB, 8),
    ];
    let mut large = 0;
    for round in 0..4u8 {
        let (mut p, _) = alloc_len(&a, l(100, 8));
        stamp(p, 100, round);
        let mut old = l(100, 8);
        for &new in &steps {
            let (q, len) = grow(&a, p, old, new).unwrap();
            assert!(len >= new.size());
            check(q, old.size(), round, "across the boundary");
            stamp(q, new.size(), round);
            let s = a.stats();
            assert_eq!(s.blocks_in_use, 1, "{old:?} -> {new:?}\n{s}");
            if new.size() > 32 * KIB {
                large += 1;
                assert_eq!(s.large_allocs, large, "{s}");
            }
            p = q;
            old = new;
        }
        free(&a, p, old);
        // And in one step.
        let p = alloc(&a, l(8, 8));
        stamp(p, 8, 9);
        let (q, len) = grow(&a, p, l(8, 8), l(40 * KIB, 8)).unwrap();
        assert!(len >= 40 * KIB);
        check(q, 8, 9, "8 B -> 40 KiB");
        large += 1;
        assert_eq!(
            (a.stats().blocks_in_use, a.stats().large_allocs),
            (1, large)
        );
        free(&a, q, l(40 * KIB, 8));
        assert_eq!(a.stats().blocks_in_use, 0);
    }
    // A Vec<u8> pushed through all of it.
    let mut v: AVec<u8, &SmallMidArena> = AVec::new_in(&a);
    for i in 0..300_000u32 {
        v.push((i % 251) as u8);
    }
    assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    drop(v);
    assert_eq!(a.stats().blocks_in_use, 0);
}

/// Blocks freed and handed out again (from the cache's list, not carved)
/// grow like any other: moved, bytes kept, the old one free again.
#[test]
fn grow_of_freed_and_reused_blocks() {
    let a = solo_arena();
    let lay = l(48, 8);
    let first: Vec<*mut u8> = (0..64).map(|_| alloc(&a, lay)).collect();
    for &p in &first {
        stamp(p, 48, 0xDD);
        free(&a, p, lay);
    }
    let mut live = Live::default();
    let mut grown = Vec::new();
    for i in 0..64u8 {
        let p = alloc(&a, lay);
        assert!(first.contains(&p), "not reused from the list");
        stamp(p, 48, i);
        let (q, len) = grow(&a, p, lay, l(72 + i as usize, 8)).unwrap();
        check(q, 48, i, "a reused block grown");
        live.add(q, len, "grown");
        grown.push((q, l(72 + i as usize, 8), i));
    }
    for &(q, new, i) in &grown {
        check(q, 48, i, "after all grew");
        stamp(q, new.size(), i);
    }
    for (q, new, i) in grown {
        check(q, new.size(), i, "before the free");
        free(&a, q, new);
    }
    assert_eq!(a.stats().blocks_in_use, 0);
}

/// Blocks another thread allocated (the last carve of *its* mixed range)
/// grown on this thread, and this thread's grown there: never "in place"
/// over the other thread's range; bytes kept; what the other thread
/// carves next does not overlap the grown block.
#[test]
fn grow_of_blocks_another_thread_allocated() {
    let a = solo_arena();
    for round in 0..20u8 {
        let (theirs, tail) = std::thread::scope(|s| {
            s.spawn(|| {
                let v: Vec<usize> = (0..8)
                    .map(|i| {
                        let p = alloc(&a, l(40, 8));
                        stamp(p, 40, round ^ i);
                        p as usize
                    })
                    .collect();
                // Its last carve: what a grow in place would extend.
                let tail = alloc(&a, l(16, 8));
                stamp(tail, 16, 0x77);
                (v, tail as usize)
            })
            .join()
            .unwrap()
        });
        let mut live = Live::default();
        let mut mine = Vec::new();
        for (i, &p) in theirs.iter().enumerate() {
            let (q, len) = grow(&a, p as *mut u8, l(40, 8), l(300, 8)).unwrap();
            check(q, 40, round ^ i as u8, "another thread's block grown here");
            stamp(q, 300, 0x30 ^ i as u8);
            live.add(q, len, "grown here");
            mine.push(q);
        }
        // Its last carve, grown here: the other thread's range is not ours.
        let (t, tlen) = grow(&a, tail as *mut u8, l(16, 8), l(200, 8)).unwrap();
        check(t, 16, 0x77, "the other thread's last carve");
        assert_ne!(t as usize, tail, "grew in place in another thread's range");
        live.add(t, tlen, "tail grown here");
        stamp(t, 200, 0x78);
        // And the other way: a block of this thread grown there, while this
        // thread holds its blocks.
        let p = alloc(&a, l(24, 8));
        stamp(p, 24, 0x24);
        let pu = p as usize;
        let moved = std::thread::scope(|s| {
            s.spawn(|| {
                let (q, len) = grow(&a, pu as *mut u8, l(24, 8), l(500, 8)).unwrap();
                check(q, 24, 0x24, "this thread's block grown there");
                let more: Vec<(usize, usize)> = (0..16)
                    .map(|_| {
                        let (n, nl) = alloc_len(&a, l(24, 8));
                        (n as usize, nl)
                    })
                    .collect();
                (q as usize, len, more)
            })
            .join()
            .unwrap()
        });
        live.add(moved.0 as *mut u8, moved.1, "grown there");
        for &(n, nl) in &moved.2 {
            live.add(n as *mut u8, nl, "allocated there after");
        }
        for (i, &q) in mine.iter().enumerate() {
            check(
                q,
                300,
                0x30 ^ i as u8,
                "grown blocks after the other thread ran",
            );
            free(&a, q, l(300, 8));
        }
        check(t, 200, 0x78, "the grown tail");
        free(&a, t, l(200, 8));
        free(&a, moved.0 as *mut u8, l(500, 8));
        for (n, _) in moved.2 {
            free(&a, n as *mut u8, l(24, 8));
        }
        wait_caches(&a, 1);
        assert_eq!(a.stats().blocks_in_use, 0, "round {round}");
    }
}

/// `grow_zeroed` zeroes bytes `old.size()..len` whether the block stays
/// (same class; the mixed range's last carve, over bytes a rewound reset
/// left dirty) or moves (into a block another use left dirty).
#[test]
fn grow_zeroed_zeroes_the_tail_in_place_and_moved() {
    let mut a = solo_arena();
    let mut in_place = 0;
    let mut moved = 0;
    for round in 0..30u8 {
        // Dirty the start of the mixed range, then rewind it.
        let mut v: AVec<u8, &SmallMidArena> = AVec::new_in(&a);
        v.resize(1000, 0xEE);
        core::mem::forget(v);
        let junk: Vec<*mut u8> = (0..40).map(|_| alloc(&a, l(900, 8))).collect();
        for &p in &junk {
            stamp(p, 900, 0xEF);
        }
        a.reset();
        // The first carve after the rewind, grown zeroed in place (to the
        // 448-byte class, aligned 64 as the range's start is) or not.
        let (p, _) = alloc_len(&a, l(8, 1));
        stamp(p, 8, round);
        let (q, len) = grow_zeroed(&a, p, l(8, 1), l(440, 1)).unwrap();
        check(q, 8, round, "bytes kept");
        check(q.wrapping_add(8), len - 8, 0, "the zeroed tail");
        if q == p {
            in_place += 1;
        } else {
            moved += 1;
        }
        stamp(q, 440, round);
        // And on to the 1,024-byte class (aligned 128: in place or not).
        let (q2, len) = grow_zeroed(&a, q, l(440, 1), l(1000, 1)).unwrap();
        check(q2, 440, round, "bytes kept");
        check(q2.wrapping_add(440), len - 440, 0, "the zeroed tail");
        // Same class: 20 -> 24 B, over a block that held junk.
        let r = alloc(&a, l(24, 8));
        stamp(r, 24, 0xCC);
        free(&a, r, l(24, 8));
        let r2 = alloc(&a, l(20, 8));
        stamp(r2, 20, round);
        let (r3, len3) = grow_zeroed(&a, r2, l(20, 8), l(24, 8)).unwrap();
        assert_eq!((r3, len3), (r2, 24));
        check(r3, 20, round, "same class: bytes kept");
        check(r3.wrapping_add(20), 4, 0, "same class: the tail zeroed");
        // Moved: not the last carve, into a reused block of junk.
        let s = alloc(&a, l(100, 8));
        stamp(s, 100, round ^ 0x55);
        let _neighbour = alloc(&a, l(8, 8));
        let (s2, len2) = grow_zeroed(&a, s, l(100, 8), l(900, 8)).unwrap();
        assert_ne!(s2, s);
        moved += 1;
        check(s2, 100, round ^ 0x55, "moved: bytes kept");
        check(
            s2.wrapping_add(100),
            len2 - 100,
            0,
            "moved: the tail zeroed",
        );
        a.reset();
    }
    assert!(in_place > 0, "never in place (moved {moved})");
}

/// Grow in an arena whose memory limit is used up: `AllocError`, the old
/// block intact, readable and freeable with its old layout (under
/// `checked` too: its record stays), and nothing counted. Once blocks are
/// freed the same grow succeeds.
#[test]
fn grow_under_an_exhausted_memory_limit() {
    for (blk, new) in [
        (l(1024, 8), l(2048, 8)),
        (l(512, 8), l(1000, 8)),
        (l(2048, 8), l(40 * KIB, 8)),
        (l(300, 8), l(700, 64)),
    ] {
        let a = SmallMidArena::builder().memory_limit(4 * SLAB).build();
        let mut blocks = Vec::new();
        while let Ok(b) = a.allocate(blk) {
            let p = b.cast::<u8>().as_ptr();
            stamp(p, blk.size(), blocks.len() as u8);
            blocks.push(p);
            assert!(blocks.len() < 10_000);
        }
        assert!(blocks.len() > 8, "{blk:?}: {} blocks", blocks.len());
        let before = a.stats();
        let mut refused = 0;
        for (i, &p) in blocks.iter().enumerate().rev().take(6) {
            match grow(&a, p, blk, new) {
                Err(AllocError) => {
                    refused += 1;
                    check(p, blk.size(), i as u8, "a refused grow kept the block");
                }
                Ok((q, _)) => panic!("{blk:?} -> {new:?}: grew to {q:p} past the limit"),
            }
            match grow_zeroed(&a, p, blk, new) {
                Err(AllocError) => check(p, blk.size(), i as u8, "a refused grow_zeroed"),
                Ok((q, _)) => panic!("{blk:?} -> {new:?}: grew zeroed to {q:p} past the limit"),
            }
        }
        assert_eq!(refused, 6);
        let after = a.stats();
        assert_eq!(after.blocks_in_use, before.blocks_in_use, "{after}");
        assert_eq!(after.classes, before.classes, "a refused grow counted");
        for (i, &p) in blocks.iter().enumerate() {
            check(p, blk.size(), i as u8, "every block after the refusals");
        }
        // Free all but the last: now it grows.
        let tag = (blocks.len() - 1) as u8;
        let last = blocks.pop().unwrap();
        for p in blocks.drain(..) {
            free(&a, p, blk);
        }
        assert_eq!(a.stats().blocks_in_use, 1);
        let (q, len) = grow(&a, last, blk, new).expect("room after the frees");
        assert!(len >= new.size() && q as usize % new.align() == 0);
        check(q, blk.size(), tag, "grown once there was room");
        free(&a, q, new);
        assert_eq!(a.stats().blocks_in_use, 0);
    }
}

/// Two threads grow their own `Vec`s in one arena at once (pushes,
/// `reserve`s, `extend_from_slice`s, `shrink_to_fit`s, hash maps), then
/// hand their `Vec`s to each other to grow on: every element survives,
/// and after the threads are done and the arena is reset nothing is
/// counted.
#[test]
fn two_threads_grow_their_vecs_in_one_arena() {
    let mut a = solo_arena();
    for round in 0..6u64 {
        let arena = &a;
        let (tx0, rx1) = mpsc::channel::<Vec<AVec<u64, &SmallMidArena>>>();
        let (tx1, rx0) = mpsc::channel::<Vec<AVec<u64, &SmallMidArena>>>();
        std::thread::scope(|s| {
            for (t, tx, rx) in [(0u64, tx0, rx0), (1u64, tx1, rx1)] {
                s.spawn(move || {
                    let tag = |v: u64, k: u64| (round << 48) | (t << 40) | (v << 24) | k;
                    let mut rng = Rng(0x9e37_79b9 ^ (round << 8) ^ t);
                    let mut vs: Vec<AVec<u64, &SmallMidArena>> =
                        (0..12).map(|_| AVec::new_in(arena)).collect();
                    let mut bytes: Vec<AVec<u8, &SmallMidArena>> =
                        (0..6).map(|_| AVec::new_in(arena)).collect();
                    for _ in 0..6000 {
                        let i = rng.below(vs.len());
                        match rng.below(20) {
                            0 => {
                                let n = rng.below(300);
                                vs[i].reserve(n);
                                assert!(vs[i].capacity() >= vs[i].len() + n);
                            }
                            1 => vs[i].shrink_to_fit(),
                            2 => {
                                let j = rng.below(bytes.len());
                                let n = rng.below(2000);
                                let from = bytes[j].len();
                                let chunk: Vec<u8> =
                                    (0..n).map(|k| (from + k) as u8 ^ j as u8).collect();
                                bytes[j].extend_from_slice(&chunk);
                                if bytes[j].len() > 60_000 {
                                    bytes[j] = AVec::new_in(arena);
                                }
                            }
                            _ => {
                                let k = vs[i].len() as u64;
                                vs[i].push(tag(i as u64, k));
                            }
                        }
                    }
                    let mut map = hashbrown::HashMap::new_in(arena);
                    for k in 0..3000u64 {
                        map.insert(k, tag(99, k));
                    }
                    for (i, v) in vs.iter().enumerate() {
                        for (k, &x) in v.iter().enumerate() {
                            assert_eq!(x, tag(i as u64, k as u64), "thread {t} vec {i}");
                        }
                    }
                    for (j, b) in bytes.iter().enumerate() {
                        for (k, &x) in b.iter().enumerate() {
                            assert_eq!(x, k as u8 ^ j as u8, "thread {t} bytes {j}");
                        }
                    }
                    assert!((0..3000u64).all(|k| map[&k] == tag(99, k)));
                    // Swap: grow the other thread's vecs here.
                    tx.send(vs).unwrap();
                    let mut theirs = rx.recv().unwrap();
                    let other = 1 - t;
                    let otag = |v: u64, k: u64| (round << 48) | (other << 40) | (v << 24) | k;
                    for (i, v) in theirs.iter_mut().enumerate() {
                        let n = v.len() as u64;
                        v.extend((n..n + 500).map(|k| otag(i as u64, k)));
                    }
                    for (i, v) in theirs.iter().enumerate() {
                        for (k, &x) in v.iter().enumerate() {
                            assert_eq!(
                                x,
                                otag(i as u64, k as u64),
                                "thread {t}: {other}'s vec {i}"
                            );
                        }
                    }
                });
            }
        });
        wait_caches(&a, 1);
        assert_eq!(a.stats().blocks_in_use, 0, "round {round}");
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}"));
    }
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

/// Random allocations, grows (up and down in alignment, across classes
/// and kinds), `grow_zeroed`s, shrinks and frees on the raw `Allocator`,
/// with occasional flushes and resets: no two live blocks overlap, bytes
/// survive every resize, zeroed tails are zero, and `blocks_in_use` is
/// exactly the live count.
#[test]
fn random_grows_keep_bytes_and_counts() {
    let mut a = solo_arena();
    let mut rng = Rng(0x0bad_5eed_1818);
    const ALIGNS: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 4096];
    fn size(rng: &mut Rng) -> usize {
        match rng.below(20) {
            0 => 0,
            1..=13 => 1 + rng.below(1024),
            14..=18 => 1025 + rng.below(32 * KIB - 1024),
            _ => 32 * KIB + 1 + rng.below(200 * KIB),
        }
    }
    fn align(rng: &mut Rng) -> usize {
        if rng.below(4) == 0 {
            ALIGNS[rng.below(ALIGNS.len())]
        } else {
            8
        }
    }
    struct B {
        p: *mut u8,
        lay: Layout,
        tag: u8,
    }
    let mut live = Live::default();
    let mut blocks: Vec<B> = Vec::new();
    let mut in_use = 0u64;
    let track = |live: &mut Live, b: &B, len: usize| {
        if b.lay.size() != 0 {
            live.add(b.p, len, "random");
        }
    };
    for op in 0..30_000u32 {
        match rng.below(16) {
            0..=4 => {
                let lay = l(size(&mut rng), align(&mut rng));
                let (p, len) = alloc_len(&a, lay);
                assert_eq!(p as usize % lay.align(), 0);
                let b = B {
                    p,
                    lay,
                    tag: op as u8,
                };
                track(&mut live, &b, len);
                stamp(p, lay.size(), b.tag);
                in_use += u64::from(lay.size() != 0);
                blocks.push(b);
            }
            5..=9 if !blocks.is_empty() => {
                let i = rng.below(blocks.len());
                let old = blocks[i].lay;
                let grow_by = match rng.below(4) {
                    0 => rng.below(8),
                    1 => rng.below(256),
                    2 => rng.below(4 * KIB),
                    _ => rng.below(64 * KIB),
                };
                let new = l(old.size() + grow_by, align(&mut rng));
                let zeroed = rng.below(3) == 0;
                let b = &mut blocks[i];
                if old.size() != 0 {
                    live.remove(b.p);
                }
                let (q, len) = if zeroed {
                    grow_zeroed(&a, b.p, old, new).unwrap()
                } else {
                    grow(&a, b.p, old, new).unwrap()
                };
                assert_eq!(q as usize % new.align(), 0, "{old:?} -> {new:?}");
                assert!(len >= new.size(), "{old:?} -> {new:?}: {len}");
                check(q, old.size(), b.tag, "grown");
                if zeroed {
                    check(
                        q.wrapping_add(old.size()),
                        len - old.size(),
                        0,
                        "zeroed tail",
                    );
                }
                in_use += u64::from(old.size() == 0 && new.size() != 0);
                b.p = q;
                b.lay = new;
                b.tag = b.tag.wrapping_add(1);
                let b = &blocks[i];
                track(&mut live, b, len);
                stamp(b.p, new.size(), b.tag);
            }
            10 if !blocks.is_empty() => {
                let i = rng.below(blocks.len());
                let b = &mut blocks[i];
                let old = b.lay;
                let new = l(rng.below(old.size() + 1), old.align());
                if old.size() != 0 {
                    live.remove(b.p);
                }
                let (q, len) = shrink(&a, b.p, old, new);
                check(q, new.size(), b.tag, "shrunk");
                in_use -= u64::from(old.size() != 0 && new.size() == 0);
                b.p = q;
                b.lay = new;
                let b = &blocks[i];
                track(&mut live, b, len);
            }
            11..=14 if !blocks.is_empty() => {
                let b = blocks.swap_remove(rng.below(blocks.len()));
                check(b.p, b.lay.size(), b.tag, "before its free");
                if b.lay.size() != 0 {
                    live.remove(b.p);
                    in_use -= 1;
                }
                free(&a, b.p, b.lay);
            }
            15 => match rng.below(40) {
                0 => {
                    a.reset();
                    blocks.clear();
                    live = Live::default();
                    in_use = 0;
                    assert_reset_counts(&a, 1, &format!("op {op}"));
                }
                1..=4 => a.flush_thread_cache(),
                _ => {}
            },
            _ => {}
        }
        if op % 500 == 0 {
            let s = a.stats();
            assert_eq!(s.blocks_in_use, in_use, "op {op}\n{s}");
        }
    }
    for b in &blocks {
        check(b.p, b.lay.size(), b.tag, "at the end");
    }
    assert_eq!(a.stats().blocks_in_use, in_use);
    for b in blocks {
        free(&a, b.p, b.lay);
    }
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 0, "{s}");
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

/// A grow from a zero-size layout (a dangling pointer) allocates; the
/// block counts once.
#[test]
fn grow_from_zero_size() {
    let a = solo_arena();
    for align in [1usize, 8, 64, 4096] {
        let z = a.allocate(l(0, align)).unwrap().cast::<u8>().as_ptr();
        for new in [l(8, align), l(1000, align), l(40 * KIB, align)] {
            let (q, len) = grow(&a, z, l(0, align), new).unwrap();
            assert!(len >= new.size() && q as usize % align == 0);
            stamp(q, new.size(), 3);
            assert_eq!(a.stats().blocks_in_use, 1);
            free(&a, q, new);
            assert_eq!(a.stats().blocks_in_use, 0);
        }
    }
}

// ---------------------------------------------------------------------
// Seeds (an arena starts whole under `checked`).
// ---------------------------------------------------------------------

/// Blocks of an arena's seed, grown after the arena grew its state (the
/// handle names the state now, so the grow takes the member's fast path):
/// a cross-class grow moves the block and frees the seed block into the
/// cache, a same-class grow stays in the seed; bytes kept, counts exact,
/// the freed seed block reused without overlap, and the reset after
/// counts nothing.
#[cfg(not(feature = "checked"))]
#[test]
fn grow_of_seed_blocks_after_the_arena_grew() {
    let _serial = serial();
    for round in 0..8u8 {
        let mut a = seeded();
        let s1 = alloc(&a, l(16, 8));
        let s2 = alloc(&a, l(48, 8));
        let s3 = alloc(&a, l(40, 8));
        stamp(s1, 16, 0x11 ^ round);
        stamp(s2, 48, 0x22 ^ round);
        stamp(s3, 40, 0x33 ^ round);
        assert_eq!((a.audit().seed_blocks, a.stats().superslabs), (3, 0));
        // In the seed still: the seed's own grow path.
        let (s3b, _) = grow(&a, s3, l(40, 8), l(40, 8)).unwrap();
        assert_eq!(s3b, s3);
        let big = alloc(&a, l(300, 8)); // grows the state
        assert!(a.stats().superslabs >= 1);
        stamp(big, 300, 0x44);
        let b0 = a.stats().blocks_in_use;
        assert_eq!(b0, 4);
        // Same class (41..=48 B): stays in the seed.
        let (q2, len2) = grow(&a, s2, l(41, 8), l(48, 16)).unwrap();
        assert_eq!((q2, len2), (s2, 48));
        // Across classes: moves; the seed block goes to this cache.
        let (q1, len1) = grow(&a, s1, l(16, 8), l(100, 8)).unwrap();
        assert_ne!(q1, s1);
        check(q1, 16, 0x11 ^ round, "a seed block grown");
        assert_eq!(a.stats().blocks_in_use, b0);
        let mut live = Live::default();
        live.add(q1, len1, "grown seed block");
        live.add(q2, len2, "seed block");
        live.add(s3, 40, "seed block");
        live.add(big, 320, "big");
        // The seed block comes back from the cache, and nothing overlaps.
        let again: Vec<*mut u8> = (0..20)
            .map(|_| {
                let p = alloc(&a, l(16, 8));
                live.add(p, 16, "16 B after");
                stamp(p, 16, 0x55);
                p
            })
            .collect();
        assert!(again.contains(&s1), "the freed seed block was not reused");
        check(q2, 48, 0x22 ^ round, "the seed block grown in place");
        check(s3, 40, 0x33 ^ round, "a seed block untouched");
        check(big, 300, 0x44, "big");
        // A Vec that starts in a seed block and grows through the cache.
        let mut v: AVec<u8, &SmallMidArena> = AVec::with_capacity_in(8, &a);
        v.extend_from_slice(&[round; 8]);
        for i in 0..2000u32 {
            v.push(i as u8);
        }
        assert!(v[..8].iter().all(|&b| b == round));
        assert!(v[8..].iter().enumerate().all(|(i, &b)| b == i as u8));
        drop(v);
        assert_eq!(a.stats().blocks_in_use, b0 + 20);
        for p in again {
            free(&a, p, l(16, 8));
        }
        free(&a, q1, l(100, 8));
        free(&a, q2, l(48, 16));
        free(&a, s3, l(40, 8));
        free(&a, big, l(300, 8));
        assert_eq!(a.stats().blocks_in_use, 0);
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}"));
        assert_eq!(a.audit().seed_blocks, 0);
    }
}

/// A `Vec` that starts in a seed and grows past it (the seed's grow path,
/// then the arena's state: its handle switches mid-`Vec`), interleaved
/// with a second `Vec`; then a reset right after, with both leaked.
#[cfg(not(feature = "checked"))]
#[test]
fn vecs_grow_out_of_a_seed_and_the_arena_resets() {
    let _serial = serial();
    for round in 0..8u32 {
        let mut a = seeded();
        {
            let mut v: AVec<u16, &SmallMidArena> = AVec::new_in(&a);
            let mut w: AVec<u8, &SmallMidArena> = AVec::new_in(&a);
            for i in 0..(500 + 100 * round) {
                v.push(i as u16);
                if i % 3 == 0 {
                    w.push(i as u8);
                }
            }
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u16));
            assert!(w.iter().enumerate().all(|(i, &x)| x == (3 * i) as u8));
            assert!(a.stats().superslabs >= 1);
            assert_eq!(a.stats().blocks_in_use, 2);
            core::mem::forget(v);
            core::mem::forget(w);
        }
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}"));
        assert_eq!(a.audit().seed_blocks, 0);
        let mut live = Live::default();
        churn_disjoint(&a, &[l(16, 8), l(1000, 8)], 30, &mut live, round as u8);
    }
}

// ---------------------------------------------------------------------
// `checked`: a wrong old layout panics before anything changes.
// ---------------------------------------------------------------------

/// Runs `f`, which must panic with a `checked` message containing `what`.
#[cfg(feature = "checked")]
#[track_caller]
fn must_panic(what: &str, f: impl FnOnce()) {
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err("a misuse did not panic");
    let m = panic_message(&*e);
    assert!(m.contains("smallmid(checked)") && m.contains(what), "{m}");
}

/// A wrong old layout, in each of `grow_in`'s three branches: the same
/// class (in place), the mixed range's last carve (resized in place), and
/// a move (allocate, copy, free). Each panics before any change: the
/// counters, the live blocks and the carve point are as before, the block
/// keeps its bytes, and the right layout then grows and frees it.
#[cfg(feature = "checked")]
#[test]
fn checked_grow_with_a_wrong_old_layout_changes_nothing() {
    let a = solo_arena();
    // 1. Same class: allocated (40, 8); "old" (33, 8) is smaller than asked.
    let p1 = alloc(&a, l(40, 8));
    stamp(p1, 40, 1);
    let before = a.stats();
    must_panic("allocated with", || {
        let _ = grow(&a, p1, l(33, 8), l(40, 8));
    });
    assert_eq!(a.stats(), before);
    check(p1, 40, 1, "same class");

    // 2. The mixed range's last carve: find one (a right grow stays put).
    let mut tail = None;
    for _ in 0..200 {
        let p = alloc(&a, l(64, 8));
        match grow(&a, p, l(64, 8), l(128, 8)) {
            Ok((q, _)) if q == p => {
                tail = Some(q);
                break;
            }
            Ok((q, _)) => free(&a, q, l(128, 8)),
            Err(e) => panic!("{e:?}"),
        }
    }
    let t = tail.expect("no block at the mixed range's end");
    stamp(t, 128, 2);
    let before = a.stats();
    // Alignment 16 for a block allocated at 8: same 128-byte class.
    must_panic("allocated with", || {
        let _ = grow(&a, t, l(128, 16), l(256, 8));
    });
    assert_eq!(a.stats(), before, "the panicking grow counted");
    check(t, 128, 2, "the last carve");
    // The carve point did not move: the right grow is still in place.
    let (t2, len) = grow(&a, t, l(128, 8), l(256, 8)).unwrap();
    assert_eq!((t2, len), (t, 256), "the carve point moved under a panic");
    check(t2, 128, 2, "the last carve, grown");

    // 3. A move: a neighbour follows the block, the class changes.
    let p = alloc(&a, l(40, 8));
    let n = alloc(&a, l(40, 8));
    stamp(p, 40, 3);
    let before = a.stats();
    must_panic("allocated with", || {
        let _ = grow(&a, p, l(40, 16), l(300, 8));
    });
    assert_eq!(a.stats(), before, "a block was allocated before the panic");
    check(p, 40, 3, "a move's source");
    // Freed, then grown: not handed out (checked), nothing changes.
    free(&a, n, l(40, 8));
    let before = a.stats();
    must_panic("did not hand out", || {
        let _ = grow(&a, n, l(40, 8), l(300, 8));
    });
    assert_eq!(a.stats(), before);
    // The right layouts still work, and every record is exact: each block
    // frees once with its layout.
    let (q, _) = grow(&a, p, l(40, 8), l(300, 8)).unwrap();
    check(q, 40, 3, "moved");
    free(&a, q, l(300, 8));
    free(&a, t2, l(256, 8));
    check(p1, 40, 1, "same class, at the end");
    assert_eq!(a.stats().blocks_in_use, 1, "only the first block is live");
    free(&a, p1, l(40, 8));
    assert_eq!(a.stats().blocks_in_use, 0);
}

// ---------------------------------------------------------------------
// Threads without a member, threads past the inline slots.
// ---------------------------------------------------------------------

/// A cacheless thread grows blocks (no member: the grow takes the
/// arena's general path, which attaches nothing) of the owner's and its
/// own; the bytes survive, the counts stay exact, and the reset after
/// counts nothing.
#[test]
fn cacheless_grows() {
    let mut a = solo_arena();
    for round in 0..10u8 {
        let mine = alloc(&a, l(24, 8));
        stamp(mine, 24, round);
        let (m2, theirs) = cacheless(|| {
            let (m2, _) = grow(&a, mine, l(24, 8), l(200, 8)).unwrap();
            check(m2, 24, round, "the owner's block grown cacheless");
            let t = alloc(&a, l(40, 8));
            stamp(t, 40, !round);
            let (t2, _) = grow(&a, t, l(40, 8), l(48, 8)).unwrap();
            let (t3, _) = grow(&a, t2, l(48, 8), l(3000, 8)).unwrap();
            check(t3, 40, !round, "a cacheless block grown");
            (m2, t3)
        });
        assert_eq!(
            a.stats().thread_caches,
            1,
            "a cacheless grow attached a cache"
        );
        assert_eq!(a.stats().blocks_in_use, 2);
        // Grown again by the owner, through its member.
        let (m3, _) = grow(&a, m2, l(200, 8), l(900, 8)).unwrap();
        check(m3, 24, round, "grown again");
        let (t4, _) = grow(&a, theirs, l(3000, 8), l(5000, 8)).unwrap();
        check(t4, 40, !round, "grown again");
        let mut live = Live::default();
        live.add(m3, 900, "m3");
        live.add(t4, 5000, "t4");
        if round % 2 == 0 {
            free(&a, m3, l(900, 8));
            cacheless(|| free(&a, t4, l(5000, 8)));
            assert_eq!(a.stats().blocks_in_use, 0);
        }
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}"));
    }
}

/// 24 threads alive at once (so some have thread indices past the 16
/// inline slots and reach their member through a slot chunk) grow `Vec`s
/// in one arena: every element survives, and the reset after counts
/// nothing.
#[test]
fn many_threads_grow_vecs_at_once() {
    let mut a = solo_arena();
    for round in 0..3u32 {
        let barrier = std::sync::Barrier::new(24);
        std::thread::scope(|s| {
            for t in 0..24u32 {
                let (a, barrier) = (&a, &barrier);
                s.spawn(move || {
                    // Everyone holds an index before anyone allocates.
                    smallmid::global_stats();
                    drop(a.alloc(0u8));
                    barrier.wait();
                    let mut vs: Vec<AVec<u32, &SmallMidArena>> =
                        (0..4).map(|_| AVec::new_in(a)).collect();
                    for k in 0..4000u32 {
                        let i = (k % 4) as usize;
                        vs[i].push(t << 20 | round << 16 | k);
                    }
                    for (i, v) in vs.iter().enumerate() {
                        for (j, &x) in v.iter().enumerate() {
                            let k = (4 * j + i) as u32;
                            assert_eq!(x, t << 20 | round << 16 | k, "thread {t} vec {i}");
                        }
                    }
                });
            }
        });
        wait_caches(&a, 1);
        assert_eq!(a.stats().blocks_in_use, 0);
        a.reset();
        assert_reset_counts(&a, 1, &format!("round {round}"));
    }
}

// ---------------------------------------------------------------------
// A reset from a thread-local destructor.
// ---------------------------------------------------------------------

/// What the destructor saw: caches attached before the reset and after
/// it, the blocks and classes counted right after it, the blocks and
/// classes counted once a block was allocated after it, and its bytes.
type Seen = ((u64, u64), u64, u64, usize, bool);
static SEEN: std::sync::Mutex<Option<Seen>> = std::sync::Mutex::new(None);

struct ResetsOnExit(std::cell::RefCell<Option<SmallMidArena>>);

impl Drop for ResetsOnExit {
    fn drop(&mut self) {
        let Some(mut a) = self.0.borrow_mut().take() else {
            return;
        };
        // No assertion here: a panic in a thread-local destructor aborts.
        let caches = a.stats().thread_caches;
        a.reset();
        let s = a.stats();
        let p = alloc(&a, l(64, 8));
        stamp(p, 64, 0x64);
        let s2 = a.stats();
        // SAFETY: a live block of 64 bytes.
        let ok = unsafe { core::slice::from_raw_parts(p, 64) }
            .iter()
            .all(|&b| b == 0x64);
        *SEEN.lock().unwrap() = Some((
            (caches, s.thread_caches),
            s.blocks_in_use + s.classes.len() as u64,
            s2.blocks_in_use,
            s2.classes.len(),
            ok,
        ));
    }
}

thread_local! {
    static RESETS_ON_EXIT: ResetsOnExit = const { ResetsOnExit(std::cell::RefCell::new(None)) };
}

/// An arena held in a thread-local whose destructor resets it, after (or
/// before: the order is the platform's) the thread's own exit returned its
/// caches: the reset by a thread that may have no index any more frees
/// everything and counts nothing; a block allocated after it is counted.
#[test]
fn a_reset_in_a_thread_local_destructor() {
    let _serial = serial();
    for _ in 0..10 {
        std::thread::spawn(|| {
            // Registered before the arena's own thread-local: destroyed
            // after it where destructors run last-in first-out.
            RESETS_ON_EXIT.with(|_| ());
            let a = solo_arena();
            let v: Vec<*mut u8> = (0..100).map(|_| alloc(&a, l(200, 8))).collect();
            for &p in &v[..50] {
                free(&a, p, l(200, 8));
            }
            let mut w: AVec<u64, &SmallMidArena> = AVec::new_in(&a);
            w.extend(0..5000);
            core::mem::forget(w);
            RESETS_ON_EXIT.with(|r| *r.0.borrow_mut() = Some(a));
        })
        .join()
        .unwrap();
        let (caches, after, blocks, classes, ok) =
            SEEN.lock().unwrap().take().expect("the destructor ran");
        // Before the thread's own exit ran: its cache, kept; after: none.
        assert!(caches.0 <= 1 && caches.1 == caches.0, "{caches:?}");
        assert_eq!(after, 0, "counted after a reset in a destructor");
        assert_eq!((blocks, classes), (1, 1));
        assert!(ok);
    }
}

/// The grow's fast path checks the block's address against the *layout's*
/// new alignment only; the class it grows into may need more (every class
/// from 128 B up to 1 KiB is aligned 128). The mixed range's last carve at
/// an address 64 but not 128 aligned, grown to `(1000, 1)` (the 1 KiB
/// class), must not become a 1 KiB block there: once freed, that block
/// would serve a `(1000, 128)` layout misaligned.
#[test]
fn grow_to_a_class_aligned_more_than_the_layout_asks() {
    let a = solo_arena();
    let mut tried = 0;
    let mut held = Vec::new();
    for _ in 0..400 {
        let (p, _) = alloc_len(&a, l(8, 64));
        if p as usize % 128 != 64 {
            held.push((p, l(8, 64)));
            continue;
        }
        tried += 1;
        stamp(p, 8, 0x5A);
        let (q, len) = grow(&a, p, l(8, 64), l(1000, 1)).unwrap();
        check(q, 8, 0x5A, "bytes kept");
        assert!(len >= 1000);
        free(&a, q, l(1000, 1));
        // Whatever the 1 KiB class hands out now is aligned 128.
        let v: Vec<*mut u8> = (0..4).map(|_| alloc(&a, l(1000, 128))).collect();
        for &r in &v {
            assert_eq!(
                r as usize % 128,
                0,
                "a 1 KiB block at {r:p} (grown from {p:p})"
            );
        }
        for r in v {
            free(&a, r, l(1000, 128));
        }
        if tried == 20 {
            break;
        }
    }
    assert!(tried > 0, "no carve at 64 mod 128");
    for (p, lay) in held {
        free(&a, p, lay);
    }
    assert_eq!(a.stats().blocks_in_use, 0);
}
