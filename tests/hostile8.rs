//! Hostile review 8 of e6f6c6d / c100fc9 / 66499fc: sizes up to 1 KiB
//! rounded to a multiple of 8 (`BY_8`) and the `ALIGNED` table; span runs
//! found with bit operations and the `span_hint` SuperSlabs tried first;
//! large-block counters written with a relaxed load and store under the
//! pool lock. Nothing found against those; found one older bug, fixed:
//! under `checked`, a huge block moved by `mremap` kept its record until
//! after the move, so another thread's fresh mapping at the old address
//! panicked "handed out twice" (`huge_moves_race_fresh_huge_maps`).
#![cfg(not(miri))]

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::{SharedArena, SmallMidArena};
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
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

/// A live block: address, layout it was last given, returned length, fill.
#[derive(Clone, Copy, Debug)]
struct Blk {
    addr: usize,
    layout: Layout,
    len: usize,
    fill: u8,
}

// SAFETY: plain data (an address).
unsafe impl Send for Blk {}

fn fill_of(addr: usize, salt: u8) -> u8 {
    ((addr >> 3) as u8).wrapping_mul(31).wrapping_add(salt) | 1
}

fn l(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn alloc_blk(a: &SmallMidArena, layout: Layout, salt: u8) -> Option<Blk> {
    let p = a.allocate(layout).ok()?;
    assert!(p.len() >= layout.size(), "{layout:?} got {}", p.len());
    let addr = p.cast::<u8>().as_ptr() as usize;
    assert_eq!(addr % layout.align(), 0, "misaligned {layout:?}");
    let fill = fill_of(addr, salt);
    // SAFETY: a fresh block of at least `size` bytes.
    unsafe { (addr as *mut u8).write_bytes(fill, layout.size()) };
    Some(Blk {
        addr,
        layout,
        len: p.len(),
        fill,
    })
}

/// Checks the first and last 64 bytes and every 4 KiB in between (large
/// blocks), or every byte (small ones).
fn verify(b: &Blk) {
    let n = b.layout.size();
    // SAFETY: a live block of `size` bytes.
    let s = unsafe { core::slice::from_raw_parts(b.addr as *const u8, n) };
    let bad = if n <= 64 * KIB {
        s.iter().position(|&x| x != b.fill)
    } else {
        (0..64)
            .chain(n - 64..n)
            .chain((0..n).step_by(4096))
            .find(|&i| s[i] != b.fill)
    };
    if let Some(i) = bad {
        panic!(
            "block {:#x} ({:?}) byte {i} is {:#x}, want {:#x}",
            b.addr, b.layout, s[i], b.fill
        );
    }
}

/// Frees with a layout that fits: same alignment, any size between the
/// request and the returned length.
fn free_fit(a: &SmallMidArena, b: Blk, rng: &mut Rng) {
    verify(&b);
    let size = rng.range(b.layout.size(), b.len);
    let layout = l(size, b.layout.align());
    // SAFETY: allocated from `a`; `layout` fits it; freed once.
    unsafe { a.deallocate(NonNull::new(b.addr as *mut u8).unwrap(), layout) };
}

fn free_blk(a: &SmallMidArena, b: Blk) {
    verify(&b);
    // SAFETY: allocated from `a` with this layout, freed once.
    unsafe { a.deallocate(NonNull::new(b.addr as *mut u8).unwrap(), b.layout) };
}

/// Every block verified and no two overlapping (over their returned lengths).
fn check_all(blocks: &[Blk]) {
    let mut m: BTreeMap<usize, usize> = BTreeMap::new();
    for b in blocks {
        verify(b);
        assert!(
            m.insert(b.addr, b.len).is_none(),
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

fn check_empty(a: &SmallMidArena) {
    a.flush_thread_cache();
    let st = a.stats();
    assert_eq!((st.blocks_in_use, st.bytes_in_use), (0, 0), "{st:?}");
    assert_eq!(st.large_allocs, st.large_frees, "{st:?}");
    let au = a.audit();
    assert_eq!(au.blocks_out, 0, "{au:?}");
    assert_eq!(au.span_slabs, 0, "{au:?}");
}

// ---------------------------------------------------------------- classes

/// Every (size, alignment) up to 2 KiB and alignments up to 4 KiB: the
/// block is aligned and long enough, and a free with ANY fitting size (all
/// of request..=len tried over successive blocks) lands in the same class:
/// per-class stats balance and the block comes back for the same layout.
#[test]
fn every_fitting_free_size_balances_its_class() {
    let a = SmallMidArena::new();
    a.reserve(1).unwrap(); // grown: past its seed (seed blocks are not reused)
    let mut rng = Rng(0x1234_5678);
    for s in 0..=12 {
        let align = 1usize << s;
        for size in (1..=2048).chain((2049..=32 * KIB).step_by(97)) {
            let b = alloc_blk(&a, l(size, align), 1).unwrap();
            let len = b.len;
            // Each size in between, at the edges and a random one.
            for (n, other) in [size, len, rng.range(size, len)].into_iter().enumerate() {
                let b2 = if n == 0 {
                    b
                } else {
                    alloc_blk(&a, l(size, align), 2).unwrap()
                };
                assert_eq!(b2.len, len, "size {size} align {align}");
                verify(&b2);
                // SAFETY: allocated with l(size, align); `other` fits.
                unsafe { a.deallocate(NonNull::new(b2.addr as *mut u8).unwrap(), l(other, align)) };
                // LIFO: the same block comes back for the same layout.
                let b3 = alloc_blk(&a, l(size, align), 3).unwrap();
                assert_eq!(b3.addr, b2.addr, "size {size}/{other} align {align}");
                free_blk(&a, b3);
            }
        }
        let st = a.stats();
        assert_eq!(st.blocks_in_use, 0, "align {align}: {st:?}");
        for c in &st.classes {
            assert_eq!(c.allocs, c.frees, "align {align} class {}: {c:?}", c.size);
        }
    }
    check_empty(&a);
}

/// Returned lengths: up to 1 KiB a multiple of 8 (>= size, < size + 8 or
/// the class above by alignment), never the 10/12/14/20/28 classes.
#[test]
fn small_lengths_are_multiples_of_eight_and_tight() {
    let a = SmallMidArena::new();
    for size in 1..=1024usize {
        for s in 0..=3 {
            let b = alloc_blk(&a, l(size, 1 << s), 0).unwrap();
            assert_eq!(b.len % 8, 0, "size {size} align {}", 1 << s);
            assert!(b.len >= size);
            // Waste bound of the class scheme (< 20%) plus the 8 rounding.
            assert!(
                b.len < size.next_multiple_of(8) * 5 / 4 + 8,
                "size {size}: {}",
                b.len
            );
            free_blk(&a, b);
        }
    }
    let st = a.stats();
    for c in &st.classes {
        assert!(![10, 12, 14, 20, 28].contains(&c.size), "{c:?}");
    }
    check_empty(&a);
}

/// Many live blocks of random (size, alignment) with shadow contents:
/// no overlap, every byte intact, each freed with a random fitting size;
/// exact per-class in-use counts along the way.
#[test]
fn random_layouts_live_together_free_with_fitting_sizes() {
    let a = SmallMidArena::new();
    let mut rng = Rng(0xdead_beef);
    let mut live: Vec<Blk> = Vec::new();
    for round in 0..6 {
        for _ in 0..3000 {
            let size = if rng.range(0, 3) == 0 {
                rng.range(1, 32 * KIB)
            } else {
                rng.range(1, 1100)
            };
            let align = 1 << rng.range(0, 13);
            live.push(alloc_blk(&a, l(size, align), round as u8).unwrap());
        }
        check_all(&live);
        let st = a.stats();
        assert_eq!(st.blocks_in_use as usize, live.len(), "{st:?}");
        let want_bytes: usize = live.iter().map(|b| b.len).sum();
        assert_eq!(st.bytes_in_use as usize, want_bytes, "{st:?}");
        // Free two thirds at random.
        let mut keep = Vec::new();
        for b in live.drain(..) {
            if rng.range(0, 2) != 0 {
                free_fit(&a, b, &mut rng);
            } else {
                keep.push(b);
            }
        }
        live = keep;
    }
    for b in live.drain(..) {
        free_fit(&a, b, &mut rng);
    }
    check_empty(&a);
}

/// grow/shrink between layouts of different sizes AND alignments (small,
/// span and back): contents kept, the result aligned and long enough, the
/// final free (with any size fitting the last result) balances.
#[test]
fn grow_shrink_across_alignments_keeps_contents_and_counts() {
    let a = SmallMidArena::new();
    let mut rng = Rng(0xfeed_f00d);
    let mut live: Vec<Blk> = Vec::new();
    for i in 0..4000 {
        if live.len() < 64 || rng.range(0, 3) == 0 {
            let lay = l(rng.range(1, 1100), 1 << rng.range(0, 6));
            live.push(alloc_blk(&a, lay, i as u8).unwrap());
            continue;
        }
        let k = rng.range(0, live.len() - 1);
        let b = live[k];
        verify(&b);
        let new_align = 1 << rng.range(0, 7);
        let new_size = match rng.range(0, 9) {
            0 => rng.range(32 * KIB + 1, 200 * KIB),
            1..=4 => rng.range(1, 64),
            _ => rng.range(1, 2048),
        };
        let old = b.layout;
        // Old layout passed as any fitting one.
        let old_pass = l(rng.range(old.size(), b.len), old.align());
        let new = l(new_size, new_align);
        // SAFETY: live with a layout `old_pass` fits.
        let r = unsafe {
            if new_size >= old_pass.size() {
                a.grow(NonNull::new(b.addr as *mut u8).unwrap(), old_pass, new)
            } else {
                a.shrink(NonNull::new(b.addr as *mut u8).unwrap(), old_pass, new)
            }
        }
        .unwrap();
        assert!(r.len() >= new_size, "{old:?} -> {new:?}: {}", r.len());
        let addr = r.cast::<u8>().as_ptr() as usize;
        assert_eq!(addr % new_align, 0, "{old:?} -> {new:?} misaligned");
        let keep = old.size().min(new_size);
        // SAFETY: live, at least `new_size` bytes.
        let s = unsafe { core::slice::from_raw_parts(addr as *const u8, keep) };
        assert!(
            s.iter().all(|&x| x == b.fill),
            "{old:?} -> {new:?}: contents lost"
        );
        let fill = fill_of(addr, i as u8);
        // SAFETY: as above.
        unsafe { (addr as *mut u8).write_bytes(fill, new_size) };
        live[k] = Blk {
            addr,
            layout: new,
            len: r.len(),
            fill,
        };
        if i % 500 == 0 {
            check_all(&live);
            let st = a.stats();
            assert_eq!(st.blocks_in_use as usize, live.len(), "{st:?}");
            let want: usize = live.iter().map(|b| b.len).sum();
            assert_eq!(st.bytes_in_use as usize, want, "{st:?}");
        }
    }
    check_all(&live);
    for b in live.drain(..) {
        free_fit(&a, b, &mut rng);
    }
    check_empty(&a);
}

// ------------------------------------------------------------------ spans

fn span_layout(rng: &mut Rng) -> Layout {
    let size = rng.range(32 * KIB + 1, 960 * KIB);
    let align = match rng.range(0, 9) {
        0 => 64 * KIB,
        1 => 128 * KIB,
        2 => 256 * KIB,
        3 => 512 * KIB,
        _ => 1 << rng.range(0, 12),
    };
    l(size, align)
}

fn span_slabs(layout: Layout) -> Option<usize> {
    let slabs = layout.size().div_ceil(SLAB).max(1);
    let step = (layout.align() / SLAB).max(1);
    (step < 16 && step + slabs <= 16).then_some(slabs)
}

/// Random spans of every length and alignment churned with shadow
/// contents: no overlap, alignment held, exact large counters and bytes.
#[test]
fn span_churn_no_overlap_exact_counters() {
    let a = SmallMidArena::new();
    let mut rng = Rng(0x5eed_0001);
    let mut live: Vec<Blk> = Vec::new();
    let (mut allocs, mut frees) = (0u64, 0u64);
    for i in 0..3000 {
        if live.len() < 40 && (live.is_empty() || rng.range(0, 2) != 0) {
            let lay = span_layout(&mut rng);
            let b = alloc_blk(&a, lay, i as u8).unwrap();
            if let Some(k) = span_slabs(lay) {
                assert_eq!(b.len, k * SLAB, "{lay:?}");
            }
            live.push(b);
            allocs += 1;
        } else {
            let k = rng.range(0, live.len() - 1);
            let b = live.swap_remove(k);
            free_fit(&a, b, &mut rng);
            frees += 1;
        }
        if i % 100 == 0 {
            check_all(&live);
            let st = a.stats();
            assert_eq!((st.large_allocs, st.large_frees), (allocs, frees));
            let want: usize = live.iter().map(|b| b.len).sum();
            assert_eq!(st.bytes_in_use as usize, want, "{st:?}");
            assert_eq!(st.blocks_in_use as usize, live.len());
            let span_bytes: usize = live
                .iter()
                .filter(|b| span_slabs(b.layout).is_some())
                .map(|b| b.len)
                .sum();
            // Spans this thread freed and keeps are still held.
            a.flush_thread_cache();
            assert_eq!(
                a.allocated_bytes() - st.huge_bytes as usize,
                span_bytes,
                "{st:?}"
            );
        }
    }
    for b in live.drain(..) {
        free_fit(&a, b, &mut rng);
    }
    check_empty(&a);
    assert_eq!(a.allocated_bytes(), 0);
}

/// A hint for a long span freed in one SuperSlab; then short spans with
/// large alignment must start at a multiple of their step in it, never at
/// slab 0, and never overlap the small blocks sharing the SuperSlab.
#[test]
fn hints_with_large_alignment_and_small_neighbours() {
    let a = SmallMidArena::new();
    let mut rng = Rng(77);
    let mut small: Vec<Blk> = Vec::new();
    for r in 0..200 {
        // Small blocks interleaved so spans share SuperSlabs with classes.
        for _ in 0..20 {
            small.push(alloc_blk(&a, l(rng.range(1, 32 * KIB), 8), r as u8).unwrap());
        }
        let long = alloc_blk(&a, l(rng.range(8, 14) * SLAB, 8), 1).unwrap();
        free_blk(&a, long); // span_hint[k] = its SuperSlab
        let mut spans = Vec::new();
        for align in [64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB, 8] {
            let lay = l(rng.range(1, 3) * SLAB - rng.range(0, 100), align);
            let b = alloc_blk(&a, lay, 2).unwrap();
            let off = b.addr % MIB;
            assert_ne!(off / SLAB, 0, "span at slab 0: {lay:?}");
            assert_eq!(off % align.max(SLAB), 0, "{lay:?} at {off:#x}");
            spans.push(b);
        }
        let mut all = small.clone();
        all.extend(spans.iter().copied());
        check_all(&all);
        for b in spans {
            free_fit(&a, b, &mut rng);
        }
        if small.len() > 400 {
            for b in small.drain(..300) {
                free_fit(&a, b, &mut rng);
            }
        }
    }
    for b in small.drain(..) {
        free_fit(&a, b, &mut rng);
    }
    check_empty(&a);
}

/// Spans freed so that their SuperSlabs go to the warm cache (hints must
/// be forgotten), another arena takes those SuperSlabs and fills them, and
/// the first arena allocates spans again: they must be its own memory,
/// and the other arena's blocks must stay intact.
#[test]
fn hints_forgotten_when_superslabs_leave() {
    for round in 0..6 {
        let a = SmallMidArena::new();
        let mut rng = Rng(0xa11c_e000 + round);
        // Fill several SuperSlabs with spans of every length.
        let mut spans: Vec<Blk> = Vec::new();
        for k in (1..=15).rev().chain(1..=15) {
            spans.push(alloc_blk(&a, l(k * SLAB, 8), 1).unwrap());
        }
        check_all(&spans);
        // Free them all: each length gets a hint, and SuperSlabs past the
        // spare go to the warm cache.
        for b in spans.drain(..) {
            free_fit(&a, b, &mut rng);
        }
        if round % 2 == 1 {
            smallmid::trim_warm_cache();
        }
        // Another arena grabs SuperSlabs (from the warm cache, likely the
        // ones just released) and fills them entirely with spans.
        let b_arena = SmallMidArena::new();
        let mut other: Vec<Blk> = Vec::new();
        for _ in 0..10 {
            for k in [15, 7, 7, 1] {
                other.push(alloc_blk(&b_arena, l(k * SLAB, 8), 9).unwrap());
            }
        }
        // The first arena asks for spans of every length again.
        let mut mine: Vec<Blk> = Vec::new();
        for k in (1..=15).chain((1..=15).rev()) {
            let b = alloc_blk(&a, l(k * SLAB - 1, 8), 3).unwrap();
            assert!(a.contains(b.addr as *const u8), "span not ours");
            assert!(
                !b_arena.contains(b.addr as *const u8),
                "round {round}: a span of {k} slabs in another arena's SuperSlab"
            );
            mine.push(b);
        }
        let mut all = mine.clone();
        all.extend(other.iter().copied());
        check_all(&all);
        let st = a.stats();
        assert_eq!(st.large_allocs, 60);
        assert_eq!(st.large_frees, 30);
        for b in mine.drain(..) {
            free_fit(&a, b, &mut rng);
        }
        for b in other.drain(..) {
            verify(&b);
            free_blk(&b_arena, b);
        }
        check_empty(&a);
        check_empty(&b_arena);
    }
}

/// Spans across reset, drop (the arena recycled as a spare) and reuse:
/// the recycled arena's spans never overlap a live arena's blocks, and
/// the counters restart from zero.
#[test]
fn hints_across_reset_and_recycled_arenas() {
    let keeper = SmallMidArena::new();
    let mut kept: Vec<Blk> = Vec::new();
    let mut rng = Rng(4242);
    for round in 0..30 {
        let mut a = SmallMidArena::new();
        assert_eq!(a.stats().large_allocs, 0, "recycled arena keeps counts");
        for _ in 0..3 {
            let mut v = Vec::new();
            for _ in 0..8 {
                v.push(alloc_blk(&a, span_layout(&mut rng), round as u8).unwrap());
            }
            // Free half: hints set in this arena's SuperSlabs.
            for b in v.drain(..4) {
                free_fit(&a, b, &mut rng);
            }
            check_all(&v);
            a.reset(); // the rest dies with the reset
            let st = a.stats();
            assert_eq!(
                (st.large_allocs, st.large_frees, st.bytes_in_use),
                (0, 0, 0),
                "{st:?}"
            );
            assert_eq!(a.audit().span_slabs, 0);
        }
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(alloc_blk(&a, span_layout(&mut rng), 5).unwrap());
        }
        // The keeper takes spans meanwhile (maybe in SuperSlabs the
        // dropped arenas gave back).
        kept.push(alloc_blk(&keeper, span_layout(&mut rng), 6).unwrap());
        let mut all = v.clone();
        all.extend(kept.iter().copied());
        check_all(&all);
        for b in &v {
            assert!(!keeper.contains(b.addr as *const u8));
        }
        // Half freed, half dropped with the arena.
        for b in v.drain(..3) {
            free_fit(&a, b, &mut rng);
        }
        drop(a);
        if round % 5 == 4 {
            smallmid::trim_warm_cache();
        }
        check_all(&kept);
    }
    for b in kept.drain(..) {
        free_fit(&keeper, b, &mut rng);
    }
    check_empty(&keeper);
}

/// Under a memory limit: spans never take the arena past it, a failure
/// changes no counter, and after freeing, the whole limit is usable again.
#[test]
fn spans_under_a_limit() {
    let limit = 3 * MIB;
    let a = SmallMidArena::builder().memory_limit(limit).build();
    let mut rng = Rng(999);
    let mut live: Vec<Blk> = Vec::new();
    let (mut allocs, mut frees) = (0u64, 0u64);
    for i in 0..3000 {
        if rng.range(0, 2) != 0 || live.is_empty() {
            let lay = span_layout(&mut rng);
            let before = a.stats();
            match alloc_blk(&a, lay, i as u8) {
                Some(b) => {
                    live.push(b);
                    allocs += 1;
                }
                None => {
                    let after = a.stats();
                    assert_eq!(
                        (before.large_allocs, before.bytes_in_use),
                        (after.large_allocs, after.bytes_in_use)
                    );
                }
            }
        } else {
            let k = rng.range(0, live.len() - 1);
            free_fit(&a, live.swap_remove(k), &mut rng);
            frees += 1;
        }
        assert!(a.allocated_bytes() <= limit, "{}", a.allocated_bytes());
        if i % 50 == 0 {
            check_all(&live);
            let st = a.stats();
            assert_eq!((st.large_allocs, st.large_frees), (allocs, frees));
        }
    }
    for b in live.drain(..) {
        free_fit(&a, b, &mut rng);
    }
    check_empty(&a);
    // 15-slab spans: as many as the limit allows (the limit counts slabs).
    let mut big = Vec::new();
    while let Some(b) = alloc_blk(&a, l(15 * SLAB, 8), 1) {
        big.push(b);
    }
    assert_eq!(big.len(), limit / (15 * SLAB), "limit not reusable");
    let mut one = Vec::new();
    while let Some(b) = alloc_blk(&a, l(SLAB, 8), 1) {
        one.push(b);
    }
    assert_eq!(
        big.len() * 15 + one.len(),
        limit / SLAB,
        "slabs under the limit"
    );
    big.extend(one);
    check_all(&big);
    for b in big {
        free_blk(&a, b);
    }
    check_empty(&a);
}

// --------------------------------------------------------------- counters

/// Several threads allocate and free spans and huge blocks (and resize
/// huge ones) in one shared arena at once: the large counters must be
/// exact at the end (a lost update shows as a wrong count), and with all
/// freed, nothing is in use.
#[test]
fn large_counters_exact_under_concurrency() {
    const T: usize = 8;
    let arena = SharedArena::new();
    let barrier = Arc::new(Barrier::new(T));
    let iters = if cfg!(debug_assertions) { 1500 } else { 6000 };
    let hs: Vec<_> = (0..T)
        .map(|t| {
            let (arena, barrier) = (arena.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x1111 * (t as u64 + 1));
                let mut live: Vec<Blk> = Vec::new();
                barrier.wait();
                for i in 0..iters {
                    let op = rng.range(0, 9);
                    if live.len() < 6 && op < 6 {
                        let lay = if op == 0 {
                            l(rng.range(MIB, 3 * MIB), 8)
                        } else {
                            l(rng.range(32 * KIB + 1, 400 * KIB), 8)
                        };
                        live.push(alloc_blk(&arena, lay, i as u8).unwrap());
                    } else if !live.is_empty() && op == 9 {
                        // Resize a block (huge: mremap; span: copy).
                        let k = rng.range(0, live.len() - 1);
                        let b = live[k];
                        verify(&b);
                        let new = l(rng.range(33 * KIB, 3 * MIB), 8);
                        let p = NonNull::new(b.addr as *mut u8).unwrap();
                        // SAFETY: live with `b.layout`.
                        let r = unsafe {
                            if new.size() >= b.layout.size() {
                                arena.grow(p, b.layout, new)
                            } else {
                                arena.shrink(p, b.layout, new)
                            }
                        }
                        .unwrap();
                        let addr = r.cast::<u8>().as_ptr() as usize;
                        let keep = new.size().min(b.layout.size());
                        // SAFETY: live, `keep` bytes kept.
                        let s = unsafe { core::slice::from_raw_parts(addr as *const u8, keep) };
                        assert!(s[..64.min(keep)].iter().all(|&x| x == b.fill));
                        assert!(s[keep - 64..].iter().all(|&x| x == b.fill));
                        let fill = fill_of(addr, 0x55);
                        // SAFETY: live, `new.size()` bytes.
                        unsafe { (addr as *mut u8).write_bytes(fill, new.size()) };
                        live[k] = Blk {
                            addr,
                            layout: new,
                            len: r.len(),
                            fill,
                        };
                    } else if !live.is_empty() {
                        let k = rng.range(0, live.len() - 1);
                        free_blk(&arena, live.swap_remove(k));
                    }
                }
                let held: usize = live.iter().map(|b| b.len).sum();
                (live, held)
            })
        })
        .collect();
    let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let all: Vec<Blk> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    check_all(&all);
    let st = arena.stats();
    let held: usize = results.iter().map(|r| r.1).sum();
    assert_eq!(st.bytes_in_use as usize, held, "{st:?}");
    assert_eq!(st.blocks_in_use as usize, all.len(), "{st:?}");
    assert_eq!(
        (st.large_allocs - st.large_frees) as usize,
        all.len(),
        "{st:?}"
    );
    for b in all {
        free_blk(&arena, b);
    }
    let st = arena.stats();
    assert_eq!((st.bytes_in_use, st.blocks_in_use), (0, 0), "{st:?}");
    assert_eq!(st.large_allocs, st.large_frees, "{st:?}");
    // Spans this thread freed and keeps are still held.
    arena.flush_thread_cache();
    assert_eq!(arena.allocated_bytes(), 0);
}

/// Pure alloc/free races (no resizes): allocs and frees counted exactly.
#[test]
fn large_alloc_free_counts_exact_many_threads() {
    const T: usize = 12;
    let arena = SharedArena::new();
    let barrier = Arc::new(Barrier::new(T));
    let iters = if cfg!(debug_assertions) { 3000 } else { 20000 };
    let hs: Vec<_> = (0..T)
        .map(|t| {
            let (arena, barrier) = (arena.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x2222 * (t as u64 + 3));
                let mut live: Vec<Blk> = Vec::new();
                barrier.wait();
                for i in 0..iters {
                    if live.len() < 4 && rng.range(0, 1) == 0 {
                        let lay = if i % 64 == 0 {
                            l(rng.range(MIB, 2 * MIB), 8)
                        } else {
                            l(rng.range(32 * KIB + 1, 200 * KIB), 8)
                        };
                        live.push(alloc_blk(&arena, lay, i as u8).unwrap());
                    } else if let Some(b) = live.pop() {
                        free_blk(&arena, b);
                    }
                }
                for b in live {
                    free_blk(&arena, b);
                }
            })
        })
        .collect();
    // Concurrent readers must never see more frees than allocations by
    // much more than a race (and must not crash).
    for _ in 0..50 {
        let st = arena.stats();
        assert!(st.large_frees <= st.large_allocs + T as u64, "{st:?}");
        std::thread::yield_now();
    }
    for h in hs {
        h.join().unwrap();
    }
    let st = arena.stats();
    assert_eq!((st.bytes_in_use, st.blocks_in_use), (0, 0), "{st:?}");
    assert_eq!(st.large_allocs, st.large_frees, "{st:?}");
    assert!(st.large_allocs > 0);
    assert_eq!(arena.allocated_bytes(), 0);
}

/// Huge blocks grown and shrunk (mremap in place or moved, and shrunk
/// into their own room under a limit): `bytes_in_use` equals the sum of
/// the returned lengths after every step; counts exact.
#[test]
fn huge_resize_keeps_bytes_in_use_exact() {
    for limit in [usize::MAX, 12 * MIB] {
        let a = SmallMidArena::builder().memory_limit(limit).build();
        let mut rng = Rng(31337);
        let mut b = alloc_blk(&a, l(2 * MIB, 8), 1).unwrap();
        for i in 0..200 {
            let new_size = match rng.range(0, 5) {
                0 => rng.range(33 * KIB, 900 * KIB),
                _ => rng.range(MIB, 8 * MIB),
            };
            let new = l(new_size, 8);
            let p = NonNull::new(b.addr as *mut u8).unwrap();
            // SAFETY: live with `b.layout`.
            let r = unsafe {
                if new_size >= b.layout.size() {
                    a.grow(p, b.layout, new)
                } else {
                    a.shrink(p, b.layout, new)
                }
            };
            let Ok(r) = r else {
                assert!(limit != usize::MAX, "refused without a limit");
                continue;
            };
            let addr = r.cast::<u8>().as_ptr() as usize;
            let keep = new_size.min(b.layout.size());
            // SAFETY: live, `keep` bytes kept.
            let s = unsafe { core::slice::from_raw_parts(addr as *const u8, keep) };
            assert!(s.iter().step_by(4093).all(|&x| x == b.fill), "step {i}");
            assert_eq!(s[keep - 1], b.fill);
            let fill = fill_of(addr, i as u8);
            // SAFETY: live, `new_size` bytes.
            unsafe { (addr as *mut u8).write_bytes(fill, new_size) };
            b = Blk {
                addr,
                layout: new,
                len: r.len(),
                fill,
            };
            let st = a.stats();
            assert_eq!(st.bytes_in_use as usize, b.len, "step {i}: {st:?}");
            assert_eq!(st.blocks_in_use, 1, "step {i}: {st:?}");
            assert_eq!(st.large_allocs - st.large_frees, 1);
            assert!(a.allocated_bytes() <= limit);
        }
        free_blk(&a, b);
        check_empty(&a);
        assert_eq!(a.allocated_bytes(), 0);
    }
}

/// Threads resizing their own huge blocks (mremap paths) while others
/// churn spans in the same arena: final counters exact.
#[test]
fn huge_resizes_race_span_churn() {
    const T: usize = 8;
    let arena = SharedArena::new();
    let barrier = Arc::new(Barrier::new(T));
    let hs: Vec<_> = (0..T)
        .map(|t| {
            let (arena, barrier) = (arena.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x3333 * (t as u64 + 7));
                barrier.wait();
                if t % 2 == 0 {
                    let mut b = alloc_blk(&arena, l(MIB, 8), 1).unwrap();
                    for _ in 0..300 {
                        let new = l(rng.range(MIB, 6 * MIB), 8);
                        let p = NonNull::new(b.addr as *mut u8).unwrap();
                        // SAFETY: live with `b.layout`.
                        let r = unsafe {
                            if new.size() >= b.layout.size() {
                                arena.grow(p, b.layout, new)
                            } else {
                                arena.shrink(p, b.layout, new)
                            }
                        }
                        .unwrap();
                        let addr = r.cast::<u8>().as_ptr() as usize;
                        b = Blk {
                            addr,
                            layout: new,
                            len: r.len(),
                            fill: 0,
                        };
                    }
                    // SAFETY: live with `b.layout`.
                    unsafe { arena.deallocate(NonNull::new(b.addr as *mut u8).unwrap(), b.layout) };
                } else {
                    let mut live = Vec::new();
                    for i in 0..3000 {
                        if live.len() < 5 && rng.range(0, 1) == 0 {
                            live.push(
                                alloc_blk(&arena, l(rng.range(40 * KIB, 500 * KIB), 8), i as u8)
                                    .unwrap(),
                            );
                        } else if let Some(b) = live.pop() {
                            free_blk(&arena, b);
                        }
                    }
                    for b in live {
                        free_blk(&arena, b);
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let st = arena.stats();
    assert_eq!((st.bytes_in_use, st.blocks_in_use), (0, 0), "{st:?}");
    assert_eq!(st.large_allocs, st.large_frees, "{st:?}");
    assert_eq!(arena.allocated_bytes(), 0);
    assert_eq!(st.huge_bytes, 0);
}

/// Huge blocks moved by `mremap` (grow) on some threads while others map
/// fresh huge blocks: the address a move vacates may be mapped again at
/// once by another thread. Contents must survive and, under the `checked`
/// feature, no "handed out twice" false alarm may fire (the record of the
/// old address must be gone before the mapping moves away).
#[test]
fn huge_moves_race_fresh_huge_maps() {
    const T: usize = 8;
    let arena = SharedArena::new();
    let barrier = Arc::new(Barrier::new(T));
    let hs: Vec<_> = (0..T)
        .map(|t| {
            let (arena, barrier) = (arena.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x4444 * (t as u64 + 5));
                barrier.wait();
                for i in 0..150 {
                    let mut b = alloc_blk(&arena, l(rng.range(MIB, 2 * MIB), 8), i as u8).unwrap();
                    if t % 2 == 0 {
                        // Grow in steps: each may move the mapping.
                        for _ in 0..4 {
                            let new = l(b.layout.size() + rng.range(MIB, 3 * MIB), 8);
                            let p = NonNull::new(b.addr as *mut u8).unwrap();
                            // SAFETY: live with `b.layout`; grows.
                            let r = unsafe { arena.grow(p, b.layout, new) }.unwrap();
                            let addr = r.cast::<u8>().as_ptr() as usize;
                            b = Blk {
                                addr,
                                layout: new,
                                len: r.len(),
                                fill: b.fill,
                            };
                            // SAFETY: live, `new.size()` bytes.
                            unsafe { (addr as *mut u8).write_bytes(b.fill, new.size()) };
                        }
                    }
                    free_blk(&arena, b);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let st = arena.stats();
    assert_eq!((st.bytes_in_use, st.blocks_in_use), (0, 0), "{st:?}");
    assert_eq!(st.large_allocs, st.large_frees, "{st:?}");
}
