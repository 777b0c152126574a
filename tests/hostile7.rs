//! Hostile review 7 of f4c5c45: a thread cache whose mixed range was used
//! up by an allocation burst (nothing flushed back to its slab) returns it
//! and takes a fresh mixed range, up to MAX_MIXED (8) mixed slabs per arena;
//! the process-wide bound of emptied resident slabs 256 -> 128.
//! Found two regressions, both fixed: a limited arena refused half its
//! limit after a burst (mixed slabs held by a few live blocks), and a burst
//! of one class held 8 such slabs; now no swap under a limit, nor for a
//! range that served fewer than 4 classes.
#![cfg(not(miri))]

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::{SharedArena, SmallMidArena};
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

const KIB: usize = 1 << 10;
const SLAB: usize = 64 * KIB;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// In `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// A live block: address, layout, fill byte.
#[derive(Clone, Copy, Debug)]
struct Blk {
    addr: usize,
    layout: Layout,
    fill: u8,
}

// SAFETY: plain data (an address).
unsafe impl Send for Blk {}

fn fill_of(addr: usize, salt: u8) -> u8 {
    ((addr >> 3) as u8).wrapping_mul(31).wrapping_add(salt) | 1
}

fn alloc_blk(a: &SmallMidArena, layout: Layout, salt: u8) -> Option<Blk> {
    let p = a.allocate(layout).ok()?;
    assert!(p.len() >= layout.size());
    let addr = p.cast::<u8>().as_ptr() as usize;
    assert_eq!(addr % layout.align(), 0, "misaligned {layout:?}");
    let fill = fill_of(addr, salt);
    // SAFETY: a fresh block of at least `size` bytes.
    unsafe { (addr as *mut u8).write_bytes(fill, layout.size()) };
    Some(Blk { addr, layout, fill })
}

fn verify(b: &Blk) {
    // SAFETY: a live block of `size` bytes.
    let s = unsafe { core::slice::from_raw_parts(b.addr as *const u8, b.layout.size()) };
    if let Some(i) = s.iter().position(|&x| x != b.fill) {
        panic!(
            "block {:#x} ({:?}) byte {i} is {:#x}, want {:#x}",
            b.addr, b.layout, s[i], b.fill
        );
    }
}

fn free_blk(a: &SmallMidArena, b: Blk) {
    verify(&b);
    // SAFETY: allocated from `a` with this layout, freed once.
    unsafe { a.deallocate(NonNull::new(b.addr as *mut u8).unwrap(), b.layout) };
}

/// Every block verified and no two overlapping.
fn check_all(blocks: &[Blk]) {
    let mut m: BTreeMap<usize, usize> = BTreeMap::new();
    for b in blocks {
        verify(b);
        assert!(
            m.insert(b.addr, b.layout.size()).is_none(),
            "block {:#x} handed out twice",
            b.addr
        );
    }
    let mut end = 0;
    for (&s, &n) in &m {
        assert!(s >= end, "overlap at {s:#x} (previous ends at {end:#x})");
        end = s + n;
    }
}

fn lay(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn rand_lay(rng: &mut Rng) -> Layout {
    let size = rng.range(1, 1024);
    let align = 1 << rng.range(0, 4);
    Layout::from_size_align(size, align).unwrap()
}

/// 24 threads burst at once in one arena (more than MAX_MIXED want a
/// fresh range each, then more); then every block is freed by another
/// thread. No overlap, nothing lost, the arena empties.
#[test]
fn many_threads_burst_at_once_then_free_crosswise() {
    const T: usize = 24;
    let arena = SmallMidArena::new();
    let barrier = Barrier::new(T);
    let per: Vec<Vec<Blk>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..T)
            .map(|t| {
                let (arena, barrier) = (&arena, &barrier);
                s.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9 + t as u64 * 77);
                    barrier.wait();
                    let v: Vec<Blk> = (0..600)
                        .map(|_| alloc_blk(arena, rand_lay(&mut rng), t as u8).unwrap())
                        .collect();
                    v
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<Blk> = per.iter().flatten().copied().collect();
    check_all(&all);
    let au = arena.audit();
    assert!(au.mixed_slabs <= 8, "{au:?}");
    // Free each thread's blocks on another thread (spawned and joined:
    // a scoped thread's cache may still be flushing after the scope ends).
    let arena = Arc::new(arena);
    let hs: Vec<_> = (0..T)
        .map(|t| {
            let mine = per[(t + 1) % T].clone();
            let arena = arena.clone();
            std::thread::spawn(move || {
                for b in mine {
                    free_blk(&arena, b);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!(
        (au.blocks_out, au.mixed_slabs, au.class_slabs),
        (0, 0, 0),
        "{au:?}"
    );
    assert_eq!(arena.stats().blocks_in_use, 0);
}

/// The owner bursts while another thread frees (and flushes) blocks it
/// carved, so the range's slab is touched at random points of the burst.
#[test]
fn cross_thread_frees_while_owner_bursts_and_swaps() {
    let arena = SharedArena::new();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Blk>(64);
    let a2 = arena.clone();
    let freer = std::thread::spawn(move || {
        let mut n = 0;
        for b in rx {
            free_blk(&a2, b);
            n += 1;
            if n % 37 == 0 {
                a2.flush_thread_cache();
            }
        }
        a2.flush_thread_cache();
    });
    let mut rng = Rng(12345);
    let mut kept = Vec::new();
    for i in 0..20_000 {
        let b = alloc_blk(&arena, rand_lay(&mut rng), 3).unwrap();
        if i % 3 == 0 {
            tx.send(b).unwrap();
        } else {
            kept.push(b);
        }
        if i % 1000 == 999 {
            check_all(&kept);
        }
    }
    drop(tx);
    freer.join().unwrap();
    check_all(&kept);
    for b in kept {
        free_blk(&arena, b);
    }
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
}

/// A limited arena fills to its limit with a burst: the limit is never
/// passed, and once everything is freed the same burst fits again (no
/// slab lost to the swaps).
#[test]
fn limited_arena_burst_respects_limit_and_refills() {
    for limit in [64 * KIB, 128 * KIB, 200 * KIB, 512 * KIB, 1024 * KIB] {
        let arena = SmallMidArena::builder().memory_limit(limit).build();
        let mut first = 0;
        for round in 0..4 {
            let mut rng = Rng(777);
            let mut v = Vec::new();
            while let Some(b) = alloc_blk(&arena, rand_lay(&mut rng), round) {
                v.push(b);
                assert!(arena.allocated_bytes() <= limit);
                if v.len() > 100_000 {
                    panic!("no refusal");
                }
            }
            check_all(&v);
            let au = arena.audit();
            assert!(au.mixed_slabs <= 8, "{au:?}");
            if round == 0 {
                first = v.len();
                // At least 3/4 of the limit in block bytes (requests).
                let bytes: usize = v.iter().map(|b| b.layout.size()).sum();
                assert!(
                    bytes * 2 >= limit.min(64 * KIB - 8 * KIB),
                    "limit {limit}: only {bytes} B fit ({au:?})"
                );
            } else {
                assert_eq!(v.len(), first, "limit {limit} round {round}: {au:?}");
            }
            for b in v {
                free_blk(&arena, b);
            }
            arena.flush_thread_cache();
            let au = arena.audit();
            assert_eq!(au.blocks_out, 0, "{au:?}");
        }
    }
}

/// Under a limit: a burst of 64-byte blocks, then 98% of them freed. The
/// same number of 64-byte blocks must fit again: the freed bytes are
/// there. (Blocks freed to a mixed slab wait for the whole slab, so
/// every extra mixed slab a burst takes is space a limited arena cannot
/// reuse while one block of it lives.)
#[test]
fn limited_arena_reuses_space_freed_after_a_burst() {
    let limit = 1024 * KIB;
    let arena = SmallMidArena::builder().memory_limit(limit).build();
    let l = lay(64);
    let mut v = Vec::new();
    while let Some(b) = alloc_blk(&arena, l, 1) {
        v.push(b);
    }
    let n = v.len();
    let au = arena.audit();
    let mut kept = Vec::new();
    for (i, b) in v.into_iter().enumerate() {
        if i % 50 == 0 {
            kept.push(b);
        } else {
            free_blk(&arena, b);
        }
    }
    arena.flush_thread_cache();
    let mut again = Vec::new();
    while let Some(b) = alloc_blk(&arena, l, 2) {
        again.push(b);
        if again.len() >= n - kept.len() {
            break;
        }
    }
    let au2 = arena.audit();
    let got = again.len();
    kept.extend(again);
    check_all(&kept);
    for b in kept {
        free_blk(&arena, b);
    }
    assert!(
        got >= (n - n / 50 - 1) * 9 / 10,
        "burst of {n} 64 B blocks under a {limit} B limit, 98% freed: only {got} fit again \
         (after burst {au:?}, now {au2:?})"
    );
}

/// reset() right after a burst that swapped ranges, many rounds: memory
/// held stays flat, stats are zero after each reset, blocks sound.
#[test]
fn reset_after_bursts_keeps_memory_flat() {
    let mut arena = SmallMidArena::new();
    let mut held = Vec::new();
    for round in 0..40u8 {
        let mut rng = Rng(round as u64 + 1);
        let v: Vec<Blk> = (0..1500)
            .map(|_| alloc_blk(&arena, rand_lay(&mut rng), round).unwrap())
            .collect();
        check_all(&v);
        assert!(arena.audit().mixed_slabs <= 8);
        arena.reset();
        let st = arena.stats();
        assert_eq!(
            (st.blocks_in_use, st.bytes_in_use),
            (0, 0),
            "round {round}: {st:?}"
        );
        let au = arena.audit();
        assert!(au.mixed_slabs <= 1, "round {round}: {au:?}");
        held.push(arena.allocated_bytes());
    }
    assert!(held[39] <= held[5] + SLAB, "held grows: {held:?}");
}

/// Other threads burst in an arena, the owner resets (dirty path), then
/// the others come back and burst again: no block of the new epoch
/// overlaps, the number of mixed slabs stays bounded.
#[test]
fn reset_after_multi_thread_burst_then_again() {
    let mut arena = SmallMidArena::new();
    for round in 0..10u8 {
        let per: Vec<Vec<Blk>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..6)
                .map(|t| {
                    let arena = &arena;
                    s.spawn(move || {
                        let mut rng = Rng(t as u64 * 1000 + round as u64 + 1);
                        (0..500)
                            .map(|_| alloc_blk(arena, rand_lay(&mut rng), round).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut mine: Vec<Blk> = per.into_iter().flatten().collect();
        let mut rng = Rng(round as u64 + 99);
        mine.extend((0..500).map(|_| alloc_blk(&arena, rand_lay(&mut rng), round).unwrap()));
        check_all(&mine);
        arena.reset();
        assert_eq!(arena.stats().blocks_in_use, 0);
        let au = arena.audit();
        assert_eq!(
            au.class_slabs + au.mixed_slabs,
            au.class_slabs + au.mixed_slabs.min(8)
        );
    }
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!(au.blocks_out, 0, "{au:?}");
}

/// Vecs grown at the carve point interleaved with small allocations, so
/// that ranges are used up and swapped under them.
#[test]
fn vec_growth_at_carve_point_across_swaps() {
    use allocator_api2::vec::Vec as AVec;
    let arena = SmallMidArena::new();
    let mut rng = Rng(4242);
    let mut small = Vec::new();
    for round in 0..200u32 {
        let mut v: AVec<u32, &SmallMidArena> = AVec::new_in(&arena);
        let mut w: AVec<u8, &SmallMidArena> = AVec::new_in(&arena);
        for i in 0..rng.range(1, 300) as u32 {
            v.push(i ^ round);
            w.push(i as u8);
            if i % 7 == 0 {
                small.push(alloc_blk(&arena, rand_lay(&mut rng), 9).unwrap());
            }
        }
        for (i, x) in v.iter().enumerate() {
            assert_eq!(*x, i as u32 ^ round);
        }
        for (i, x) in w.iter().enumerate() {
            assert_eq!(*x, i as u8);
        }
        v.shrink_to_fit();
        w.truncate(3);
        w.shrink_to_fit();
        if round % 3 == 0 {
            drop(v);
        } else {
            core::mem::forget(v); // leaked into the arena: stays live
        }
    }
    check_all(&small);
    for b in small {
        free_blk(&arena, b);
    }
}

/// Threads burst and exit (their caches flushed at exit, ranges
/// returned mid-range); the main thread frees everything later.
#[test]
fn threads_exit_mid_burst_blocks_freed_later() {
    let arena = SharedArena::new();
    let mut all = Vec::new();
    for round in 0..6u8 {
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let a = arena.clone();
                std::thread::spawn(move || {
                    let mut rng = Rng(t * 31 + round as u64 + 1);
                    let n = rng.range(50, 900);
                    (0..n)
                        .map(|_| alloc_blk(&a, rand_lay(&mut rng), round).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in hs {
            all.extend(h.join().unwrap());
        }
        check_all(&all);
        // Free half now, on this thread.
        let keep = all.split_off(all.len() / 2);
        for b in all.drain(..) {
            free_blk(&arena, b);
        }
        all = keep;
        let au = arena.audit();
        assert!(au.mixed_slabs <= 8, "{au:?}");
    }
    for b in all.drain(..) {
        free_blk(&arena, b);
    }
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
}

/// Huge numbers of 8-byte blocks: a mixed slab's block count goes past
/// 8000 per range, many swaps, then class slabs.
#[test]
fn huge_numbers_of_tiny_blocks() {
    let arena = SmallMidArena::new();
    let l = Layout::from_size_align(1, 1).unwrap();
    let n = 200_000;
    let mut v: Vec<Blk> = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(alloc_blk(&arena, l, 0).unwrap());
    }
    check_all(&v);
    let au = arena.audit();
    assert!(au.mixed_slabs <= 8, "{au:?}");
    // Free out of order, some on another thread.
    let (a, b): (Vec<Blk>, Vec<Blk>) = v.into_iter().partition(|b| (b.addr >> 3) % 3 == 0);
    let arena = Arc::new(arena);
    let a2 = arena.clone();
    std::thread::spawn(move || {
        for x in a.into_iter().rev() {
            free_blk(&a2, x);
        }
    })
    .join()
    .unwrap();
    for x in b {
        free_blk(&arena, x);
    }
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!(
        (au.blocks_out, au.mixed_slabs, au.class_slabs),
        (0, 0, 0),
        "{au:?}"
    );
    assert_eq!(arena.stats().blocks_in_use, 0);
}

/// Bursts in arenas dropped on other threads and recycled by `new()`:
/// a recycled arena's cache (parked with a range) bursts again soundly.
#[test]
fn recycled_and_cross_thread_dropped_arenas_after_bursts() {
    for round in 0..30u8 {
        let arena = SmallMidArena::new();
        let mut rng = Rng(round as u64 * 7 + 1);
        let v: Vec<Blk> = (0..1200)
            .map(|_| alloc_blk(&arena, rand_lay(&mut rng), round).unwrap())
            .collect();
        check_all(&v);
        assert_eq!(arena.stats().blocks_in_use, 1200);
        if round % 2 == 0 {
            std::thread::spawn(move || drop(arena)).join().unwrap();
        } else {
            drop(arena);
        }
        let fresh = SmallMidArena::new();
        let st = fresh.stats();
        assert_eq!(st.blocks_in_use, 0, "recycled arena: {st:?}");
        let w: Vec<Blk> = (0..300)
            .map(|_| alloc_blk(&fresh, rand_lay(&mut rng), round).unwrap())
            .collect();
        check_all(&w);
        assert_eq!(fresh.stats().blocks_in_use, 300);
        for b in w {
            free_blk(&fresh, b);
        }
        fresh.flush_thread_cache();
        let au = fresh.audit();
        assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
    }
}

/// Memory held by a burst then a free of all but a few long-lived
/// blocks, repeated: the arena must not keep taking new slabs each round
/// (freed space is reused, pinned mixed slabs stay bounded).
#[test]
fn burst_keep_few_repeat_memory_bounded() {
    let arena = SmallMidArena::new();
    let mut rng = Rng(31337);
    let mut long = Vec::new();
    let mut held = Vec::new();
    for round in 0..60u8 {
        let v: Vec<Blk> = (0..800)
            .map(|_| alloc_blk(&arena, rand_lay(&mut rng), round).unwrap())
            .collect();
        for (i, b) in v.into_iter().enumerate() {
            if i % 200 == 0 {
                long.push(b);
            } else {
                free_blk(&arena, b);
            }
        }
        if round % 4 == 0 {
            arena.flush_thread_cache();
        }
        held.push(arena.allocated_bytes());
    }
    check_all(&long);
    let au = arena.audit();
    assert!(au.mixed_slabs <= 8, "{au:?}");
    // 240 live blocks of <= 1 KiB: a few MiB at most.
    assert!(*held.last().unwrap() <= 4 << 20, "held: {held:?} {au:?}");
    for b in long {
        free_blk(&arena, b);
    }
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
}

/// flush_thread_cache between bursts on several threads while another
/// thread holds blocks of the swapped-out ranges; then an arena-wide
/// count check with allocated_bytes and stats.
#[test]
fn flush_between_bursts_stats_agree() {
    let arena = Arc::new(SmallMidArena::new());
    let hs: Vec<_> = (0..4)
        .map(|t| {
            let a = arena.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(t + 5);
                let mut v = Vec::new();
                for k in 0..6 {
                    for _ in 0..400 {
                        v.push(alloc_blk(&a, rand_lay(&mut rng), k).unwrap());
                    }
                    a.flush_thread_cache();
                }
                v
            })
        })
        .collect();
    let all: Vec<Blk> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    check_all(&all);
    let st = arena.stats();
    assert_eq!(st.blocks_in_use as usize, all.len(), "{st:?}");
    arena.flush_thread_cache();
    assert_eq!(arena.audit().blocks_out, all.len());
    for b in all {
        free_blk(&arena, b);
    }
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!(
        (au.blocks_out, au.mixed_slabs, au.class_slabs),
        (0, 0, 0),
        "{au:?}"
    );
    assert_eq!(arena.stats().blocks_in_use, 0);
}

/// A limit set at run time after a burst (fresh ranges whenever needed
/// from then on), then bursts on two threads up to the limit.
#[test]
fn runtime_limit_after_burst_two_threads() {
    let arena = SmallMidArena::new();
    let mut rng = Rng(8);
    let mut v: Vec<Blk> = (0..400)
        .map(|_| alloc_blk(&arena, rand_lay(&mut rng), 1).unwrap())
        .collect();
    let limit = (arena.allocated_bytes() + 256 * KIB).max(640 * KIB);
    arena.set_memory_limit(limit).unwrap();
    let arena = Arc::new(arena);
    let hs: Vec<_> = (0..2)
        .map(|t| {
            let arena = arena.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(t + 100);
                let mut v = Vec::new();
                while let Some(b) = alloc_blk(&arena, rand_lay(&mut rng), 2) {
                    v.push(b);
                    assert!(arena.allocated_bytes() <= limit);
                }
                v
            })
        })
        .collect();
    let more: Vec<Vec<Blk>> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    v.extend(more.into_iter().flatten());
    check_all(&v);
    assert!(arena.allocated_bytes() <= limit);
    for b in v {
        free_blk(&arena, b);
    }
    arena.flush_thread_cache();
    let au = arena.audit();
    assert_eq!(au.blocks_out, 0, "{au:?}");
}

/// Without a limit: a burst of 64-byte blocks, 98% freed (and flushed),
/// then the same burst again. The freed space should serve it: memory
/// held may not grow by much more than a slab.
#[test]
fn burst_free_most_reburst_reuses_memory() {
    let arena = SmallMidArena::new();
    let l = lay(64);
    let n = 16_000;
    let v: Vec<Blk> = (0..n).map(|_| alloc_blk(&arena, l, 1).unwrap()).collect();
    let held1 = arena.allocated_bytes();
    let au1 = arena.audit();
    let mut kept = Vec::new();
    for (i, b) in v.into_iter().enumerate() {
        if i % 50 == 0 {
            kept.push(b);
        } else {
            free_blk(&arena, b);
        }
    }
    arena.flush_thread_cache();
    let again = n - kept.len();
    kept.extend((0..again).map(|_| alloc_blk(&arena, l, 2).unwrap()));
    check_all(&kept);
    let held2 = arena.allocated_bytes();
    let au2 = arena.audit();
    for b in kept {
        free_blk(&arena, b);
    }
    assert!(
        held2 <= held1 + SLAB,
        "held {held1} B after the burst, {held2} B after the same burst again \
         ({au1:?} -> {au2:?})"
    );
}
