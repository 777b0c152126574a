//! Hostile review 10 of b6d6bbe ("Classes up to 1 KiB promise at most
//! 128-byte alignment"): every block handed out must be aligned to its
//! layout, whatever path served it (carve, class slab, free list, central
//! list, in-place resize of a mixed range's tail, copy, reset, recycled
//! spare, other threads' frees), the typed API included; stats, audit and
//! memory limits stay consistent; the huge-page rounding rules
//! (`Pool::doubles`) keep returned lengths and limits honest.
#![cfg(not(miri))]

mod common;
use common::*;

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::{SharedArena, SmallMidArena};

/// The block's alignment and length must satisfy `layout`.
#[track_caller]
fn check_block(b: NonNull<[u8]>, layout: Layout, what: &str) {
    let p = b.cast::<u8>().as_ptr() as usize;
    assert_eq!(
        p % layout.align(),
        0,
        "{what}: block {p:#x} (len {}) under-aligned for {layout:?} (off by {})",
        b.len(),
        p % layout.align()
    );
    assert!(b.len() >= layout.size(), "{what}: {} < {layout:?}", b.len());
}

/// Fills `[0, n)` of the block with a pattern derived from `seed`.
fn fill(p: *mut u8, n: usize, seed: u8) {
    for i in 0..n {
        // SAFETY: callers pass a live block of at least `n` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8).wrapping_mul(7)) };
    }
}

#[track_caller]
fn verify(p: *const u8, n: usize, seed: u8, what: &str) {
    for i in 0..n {
        // SAFETY: as in `fill`.
        let v = unsafe { p.add(i).read() };
        assert_eq!(
            v,
            seed.wrapping_add(i as u8).wrapping_mul(7),
            "{what}: byte {i} lost"
        );
    }
}

/// Every size 1..=32 KiB at every alignment 1..=4096 (and a few sizes up
/// to 1 MiB alignment), blocks kept live in a ring so free lists of every
/// class are reused by layouts of other alignments.
#[test]
fn every_size_at_every_alignment_is_aligned() {
    let a = SmallMidArena::new();
    const RING: usize = 97;
    let mut ring: Vec<Option<(NonNull<u8>, Layout)>> = vec![None; RING];
    let mut k = 0;
    for size in 1..=32 * KIB {
        for s in 0..=12 {
            let lay = l(size, 1 << s);
            let b = a.allocate(lay).unwrap();
            check_block(b, lay, "allocate");
            let p = b.cast::<u8>();
            // SAFETY: the block is at least `size` bytes.
            unsafe {
                p.as_ptr().write(0xAB);
                p.as_ptr().add(size - 1).write(0xCD);
            }
            if let Some((q, ql)) = ring[k % RING].replace((p, lay)) {
                // SAFETY: live, allocated with `ql`.
                unsafe { a.deallocate(q, ql) };
            }
            k += 1;
        }
    }
    for (q, ql) in ring.into_iter().flatten() {
        // SAFETY: as above.
        unsafe { a.deallocate(q, ql) };
    }
    for size in [1, 8, 100, 128, 256, 1000, 1024, 1025, 4096, 30000, 32768] {
        for s in 13..=20 {
            let lay = l(size, 1 << s);
            let b = a.allocate(lay).unwrap();
            check_block(b, lay, "big alignment");
            // SAFETY: just allocated with `lay`.
            unsafe { a.deallocate(b.cast(), lay) };
        }
    }
    assert_eq!(a.stats().blocks_in_use, 0);
}

/// `allocate_zeroed` over reused (dirtied) blocks: aligned and zero.
#[test]
fn allocate_zeroed_reused_blocks_are_aligned_and_zero() {
    let a = SmallMidArena::new();
    let mut rng = Rng(0x1234_5678);
    let mut live: Vec<(NonNull<u8>, Layout)> = Vec::new();
    for round in 0..40_000 {
        if live.len() > 300 || (rng.below(3) == 0 && !live.is_empty()) {
            let i = rng.below(live.len());
            let (p, lay) = live.swap_remove(i);
            // SAFETY: live, allocated with `lay`.
            unsafe { a.deallocate(p, lay) };
            continue;
        }
        let size = 1 + rng.below(if round % 2 == 0 { 1100 } else { 5000 });
        let align = 1 << rng.below(13);
        let lay = l(size, align);
        let b = a.allocate_zeroed(lay).unwrap();
        check_block(b, lay, "allocate_zeroed");
        let p = b.cast::<u8>().as_ptr();
        for i in 0..b.len() {
            // SAFETY: the block is `b.len()` bytes.
            assert_eq!(
                unsafe { p.add(i).read() },
                0,
                "byte {i} of {lay:?} not zero"
            );
        }
        // SAFETY: as above.
        unsafe { p.write_bytes(0xEE, b.len()) };
        live.push((b.cast(), lay));
    }
    for (p, lay) in live {
        // SAFETY: as above.
        unsafe { a.deallocate(p, lay) };
    }
}

/// The brief's named cases: grow and shrink to a layout with more
/// alignment than the old one, in a fresh arena (the block is the last
/// carved from the mixed range, so an in-place resize is tried) and after
/// other blocks (a copy).
#[test]
fn grow_and_shrink_to_more_alignment() {
    let cases: &[(Layout, Layout)] = &[
        (l(64, 8), l(1000, 512)),
        (l(64, 8), l(1000, 256)),
        (l(64, 8), l(1000, 128)),
        (l(64, 8), l(1024, 1024)),
        (l(8, 8), l(1024, 128)),
        (l(100, 1), l(900, 4096)),
        (l(2000, 8), l(100, 256)),
        (l(2000, 8), l(100, 128)),
        (l(1000, 8), l(40, 512)),
        (l(1024, 128), l(600, 256)),
        (l(1024, 128), l(1024, 256)),
        (l(300, 4), l(2000, 2048)),
        (l(30000, 8), l(100, 8192)),
        (l(100, 8), l(30000, 16384)),
        (l(100, 8), l(40000, 32768)),
        (l(100, 8), l(100, 65536)),
    ];
    for &(old, new) in cases {
        for prefix in 0..40usize {
            let a = SmallMidArena::new();
            // Blocks before it move the carve point to every offset mod 256.
            let mut pre = Vec::new();
            for i in 0..prefix {
                let pl = l(8 + 8 * (i % 5), 8);
                pre.push((a.allocate(pl).unwrap(), pl));
            }
            let b = a.allocate(old).unwrap();
            check_block(b, old, "old");
            let p = b.cast::<u8>();
            let keep = old.size().min(new.size());
            fill(p.as_ptr(), keep, 3);
            // SAFETY: live block allocated with `old`.
            let r = unsafe {
                if new.size() >= old.size() {
                    a.grow(p, old, new)
                } else {
                    a.shrink(p, old, new)
                }
            }
            .unwrap();
            check_block(r, new, &format!("{old:?} -> {new:?} after {prefix}"));
            verify(r.cast::<u8>().as_ptr(), keep, 3, "resized");
            // A fresh block of the new layout, then free both.
            let c = a.allocate(new).unwrap();
            check_block(c, new, "fresh new");
            // SAFETY: live blocks with these layouts.
            unsafe {
                a.deallocate(c.cast(), new);
                a.deallocate(r.cast(), new);
                for (q, ql) in pre {
                    a.deallocate(q.cast(), ql);
                }
            }
            assert_eq!(a.stats().blocks_in_use, 0);
        }
    }
}

/// A `Vec` of an over-aligned element grown one push at a time at the
/// carve point: every buffer aligned.
#[test]
fn vec_of_over_aligned_elements_grows_aligned() {
    #[derive(Clone, Copy)]
    #[repr(align(256))]
    struct A256(u8);
    #[derive(Clone, Copy)]
    #[repr(align(128))]
    struct A128(u8);
    let a = SmallMidArena::new();
    let mut v = allocator_api2::vec::Vec::new_in(&a);
    let mut w = allocator_api2::vec::Vec::new_in(&a);
    let mut bytes = allocator_api2::vec::Vec::new_in(&a);
    for i in 0..200u32 {
        v.push(A256(i as u8));
        w.push(A128(i as u8));
        bytes.push(i as u8);
        assert_eq!(v.as_ptr() as usize % 256, 0, "Vec<A256> at len {}", v.len());
        assert_eq!(w.as_ptr() as usize % 128, 0, "Vec<A128> at len {}", w.len());
    }
    for (i, x) in v.iter().enumerate() {
        assert_eq!(x.0, i as u8);
    }
    for (i, x) in w.iter().enumerate() {
        assert_eq!(x.0, i as u8);
    }
    v.shrink_to(3);
    w.shrink_to(1);
    assert_eq!(v.as_ptr() as usize % 256, 0);
    assert_eq!(w.as_ptr() as usize % 128, 0);
}

/// Random grow/shrink chains with random alignments, data kept, in a few
/// arenas at once (so in-place tails and copies interleave).
#[test]
fn random_resize_chains_keep_alignment_and_data() {
    let arenas: Vec<SmallMidArena> = (0..3).map(|_| SmallMidArena::new()).collect();
    let mut rng = Rng(0xDEAD_BEEF);
    let mut live: Vec<(usize, NonNull<u8>, Layout, u8)> = Vec::new();
    for step in 0..60_000 {
        let op = rng.below(10);
        if op < 3 || live.is_empty() {
            let ai = rng.below(arenas.len());
            let cap = if rng.below(4) == 0 { 40_000 } else { 1200 };
            let size = 1 + rng.below(cap);
            let lay = l(size, 1 << rng.below(13));
            let b = arenas[ai].allocate(lay).unwrap();
            check_block(b, lay, "alloc");
            let seed = step as u8;
            fill(b.cast::<u8>().as_ptr(), size.min(64), seed);
            live.push((ai, b.cast(), lay, seed));
        } else if op < 5 || live.len() > 400 {
            let i = rng.below(live.len());
            let (ai, p, lay, seed) = live.swap_remove(i);
            verify(p.as_ptr(), lay.size().min(64), seed, "before free");
            // SAFETY: live with `lay`.
            unsafe { arenas[ai].deallocate(p, lay) };
        } else {
            let i = rng.below(live.len());
            let (ai, p, old, seed) = live[i];
            let cap = if rng.below(4) == 0 { 40_000 } else { 1200 };
            let size = 1 + rng.below(cap);
            let new = l(size, 1 << rng.below(13));
            let keep = old.size().min(new.size()).min(64);
            // SAFETY: live with `old`.
            let r = unsafe {
                if new.size() >= old.size() {
                    arenas[ai].grow(p, old, new)
                } else {
                    arenas[ai].shrink(p, old, new)
                }
            }
            .unwrap();
            check_block(r, new, &format!("{old:?} -> {new:?}"));
            verify(r.cast::<u8>().as_ptr(), keep, seed, "resized");
            live[i] = (ai, r.cast(), new, seed);
            if keep < new.size().min(64) {
                fill(r.cast::<u8>().as_ptr(), new.size().min(64), seed);
            }
        }
    }
    for (ai, p, lay, _) in live {
        // SAFETY: live with `lay`.
        unsafe { arenas[ai].deallocate(p, lay) };
    }
    for a in &arenas {
        a.flush_thread_cache();
        assert_eq!(a.stats().blocks_in_use, 0);
        assert_eq!(a.audit().blocks_out, 0);
    }
}

/// `grow_zeroed` to more alignment: aligned, old bytes kept, the rest zero
/// (even over a reused, dirtied block).
#[test]
fn grow_zeroed_to_more_alignment() {
    let a = SmallMidArena::new();
    // Dirty every class's blocks first.
    let mut dirty = Vec::new();
    for size in (8..=4096).step_by(8) {
        let lay = l(size, 8);
        let b = a.allocate(lay).unwrap();
        // SAFETY: `b.len()` bytes are ours.
        unsafe { b.cast::<u8>().as_ptr().write_bytes(0x5A, b.len()) };
        dirty.push((b.cast::<u8>(), lay));
    }
    for (p, lay) in dirty {
        // SAFETY: live with `lay`.
        unsafe { a.deallocate(p, lay) };
    }
    for (old, new) in [
        (l(16, 8), l(1000, 256)),
        (l(16, 8), l(1000, 128)),
        (l(200, 8), l(700, 512)),
        (l(1000, 64), l(1020, 1024)),
        (l(3000, 8), l(3500, 4096)),
    ] {
        let b = a.allocate(old).unwrap();
        fill(b.cast::<u8>().as_ptr(), old.size(), 9);
        // SAFETY: live with `old`.
        let r = unsafe { a.grow_zeroed(b.cast(), old, new) }.unwrap();
        check_block(r, new, "grow_zeroed");
        let p = r.cast::<u8>().as_ptr();
        verify(p, old.size(), 9, "grow_zeroed kept");
        for i in old.size()..r.len() {
            // SAFETY: the block is `r.len()` bytes.
            assert_eq!(unsafe { p.add(i).read() }, 0, "{old:?}->{new:?}: byte {i}");
        }
        // SAFETY: live with `new`.
        unsafe { a.deallocate(r.cast(), new) };
    }
}

/// For each class up to 4 KiB: blocks freed by a layout of low alignment
/// (free list, flushed to the central list by overflow, freed by another
/// thread) serve layouts of the most alignment that class promises, and
/// layouts that need more never get them.
#[test]
fn reused_blocks_never_under_aligned() {
    let a = SmallMidArena::new();
    let sizes: Vec<usize> = (1..=4096)
        .step_by(37)
        .chain([128, 256, 512, 768, 1024])
        .collect();
    for &size in &sizes {
        // Many blocks, so caches overflow and flush to central lists.
        let lay = l(size, 1);
        let blocks: Vec<_> = (0..300).map(|_| a.allocate(lay).unwrap()).collect();
        // Half freed here, half on another thread.
        let (here, there) = blocks.split_at(150);
        for b in here {
            // SAFETY: live with `lay`.
            unsafe { a.deallocate(b.cast(), lay) };
        }
        let there: Vec<usize> = there
            .iter()
            .map(|b| b.cast::<u8>().as_ptr() as usize)
            .collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for &p in &there {
                    // SAFETY: live with `lay`; the arena is Sync.
                    unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
                }
                // Scoped threads may be joined before their thread-locals
                // (and so their cache) are destroyed: flush here.
                a.flush_thread_cache();
            });
        });
        for s in 0..=12 {
            let lay = l(size, 1 << s);
            let got: Vec<_> = (0..310).map(|_| a.allocate(lay).unwrap()).collect();
            for b in &got {
                check_block(*b, lay, "reused");
            }
            for b in got {
                // SAFETY: live with `lay`.
                unsafe { a.deallocate(b.cast(), lay) };
            }
        }
    }
    a.flush_thread_cache();
    assert_eq!(a.audit().blocks_out, 0);
}

/// After reset() and after an arena is dropped and recycled as a spare,
/// over-aligned small layouts still get aligned blocks.
#[test]
fn reset_and_recycled_spares_stay_aligned() {
    let _g = serial();
    for round in 0..6 {
        let mut a = SmallMidArena::new();
        for r in 0..4 {
            let mut v = Vec::new();
            for i in 0..2000usize {
                let size = 1 + (i * 131 + r * 17 + round) % 1200;
                let lay = l(size, 1 << (i % 13));
                let b = a.allocate(lay).unwrap();
                check_block(b, lay, &format!("round {round} reset {r} i {i}"));
                // SAFETY: `size` bytes are ours.
                unsafe { b.cast::<u8>().as_ptr().add(size - 1).write(1) };
                v.push((b, lay));
            }
            // Free half, keep half (reset takes them all back).
            for (b, lay) in v.into_iter().step_by(2) {
                // SAFETY: live with `lay`.
                unsafe { a.deallocate(b.cast(), lay) };
            }
            a.reset();
            assert_eq!(a.stats().blocks_in_use, 0, "after reset");
        }
        drop(a);
    }
}

/// Over-aligned types through the typed API.
#[test]
fn typed_handles_of_over_aligned_types() {
    #[derive(Clone, Copy, Default, Debug, PartialEq)]
    #[repr(align(128))]
    struct A128([u8; 3]);
    #[derive(Clone, Copy, Default, Debug, PartialEq)]
    #[repr(align(256))]
    struct A256([u8; 5]);
    #[derive(Clone, Copy, Default, Debug, PartialEq)]
    #[repr(align(512))]
    struct A512(u64);
    #[derive(Clone, Copy, Default, Debug, PartialEq)]
    #[repr(align(4096))]
    struct A4096(u32);
    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(align(1024))]
    struct A1024([u8; 1024]);
    impl Default for A1024 {
        fn default() -> Self {
            A1024([7; 1024])
        }
    }

    fn probe<T: Copy + Default + PartialEq + core::fmt::Debug>(a: &SmallMidArena, v: T) {
        let al = core::mem::align_of::<T>();
        let mut keep = Vec::new();
        for _ in 0..50 {
            let b = a.alloc(v);
            assert_eq!(&*b as *const T as usize % al, 0, "alloc {al}");
            assert_eq!(*b, v);
            keep.push(b);
        }
        drop(keep);
        for len in [1usize, 2, 3, 7, 8, 33] {
            let s = a.alloc_slice_fill_copy(len, v);
            assert_eq!(s.as_ptr() as usize % al, 0, "fill_copy {al} x{len}");
            let s2 = a.alloc_slice_fill_with(len, |_| v);
            assert_eq!(s2.as_ptr() as usize % al, 0, "fill_with {al} x{len}");
            let s3 = a.alloc_slice_fill_default::<T>(len);
            assert_eq!(s3.as_ptr() as usize % al, 0, "fill_default {al} x{len}");
            let s4 = a.alloc_slice_fill_clone(len, &v);
            assert_eq!(s4.as_ptr() as usize % al, 0, "fill_clone {al} x{len}");
            let s5 = a.alloc_slice_fill_iter((0..len).map(|_| v));
            assert_eq!(s5.as_ptr() as usize % al, 0, "fill_iter {al} x{len}");
            let s6 = a.alloc_slice_copy(&s[..]);
            assert_eq!(s6.as_ptr() as usize % al, 0, "slice_copy {al} x{len}");
            assert!(s6.iter().all(|x| *x == v));
        }
        let p = a.alloc_pin(v);
        assert_eq!(&*p as *const T as usize % al, 0);
    }
    let a = SmallMidArena::new();
    a.reserve(1).unwrap(); // grown: past its seed

    // Some small blocks first so the carve point is at odd offsets.
    let _pad: Vec<_> = (0..7).map(|i| a.alloc([i as u8; 24])).collect();
    probe(&a, A128([1, 2, 3]));
    probe(&a, A256([4; 5]));
    probe(&a, A512(9));
    probe(&a, A4096(5));
    probe(&a, A1024::default());
    a.flush_thread_cache();
    let au = a.audit();
    assert_eq!(au.blocks_out, 7, "only the padding blocks live");
}

/// SharedArena: over-aligned boxes made on many threads, dropped on others.
#[test]
fn shared_arena_over_aligned_across_threads() {
    #[derive(Clone, Copy)]
    #[repr(align(256))]
    struct A256(#[allow(dead_code)] u64);
    #[derive(Clone, Copy)]
    #[repr(align(128))]
    struct A128(#[allow(dead_code)] u64);
    let shared = SharedArena::new();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, usize)>();
    std::thread::scope(|s| {
        for t in 0..4 {
            let tx = tx.clone();
            let sh = shared.clone();
            s.spawn(move || {
                for i in 0..2000usize {
                    let lay = if i % 2 == 0 {
                        Layout::new::<A256>()
                    } else {
                        Layout::new::<A128>()
                    };
                    let b = sh.allocate(lay).unwrap();
                    check_block(b, lay, &format!("thread {t}"));
                    tx.send((b.cast::<u8>().as_ptr() as usize, i % 2)).unwrap();
                }
            });
        }
        drop(tx);
        let sh = shared.clone();
        s.spawn(move || {
            for (p, k) in rx {
                let lay = if k == 0 {
                    Layout::new::<A256>()
                } else {
                    Layout::new::<A128>()
                };
                // SAFETY: live with `lay`.
                unsafe { sh.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
            }
        });
    });
    for i in 0..5000 {
        let lay = l(1 + i % 300, 256);
        let b = shared.allocate(lay).unwrap();
        check_block(b, lay, "after cross-thread frees");
        // SAFETY: live with `lay`.
        unsafe { shared.deallocate(b.cast(), lay) };
    }
}

/// Stats and audit: an over-aligned small layout is counted in the class
/// that served it, with that class's size.
#[test]
fn stats_and_audit_follow_the_serving_class() {
    let a = SmallMidArena::new();
    let lay = l(100, 256);
    let bs: Vec<_> = (0..10).map(|_| a.allocate(lay).unwrap()).collect();
    let len = bs[0].len();
    assert!(len > 1024, "(100, 256) must move past 1 KiB, got {len}");
    assert_eq!(len % 256, 0);
    for b in &bs {
        assert_eq!(b.len(), len);
    }
    let st = a.stats();
    assert_eq!(st.blocks_in_use, 10);
    assert_eq!(st.bytes_in_use, 10 * len as u64);
    let c = st
        .classes
        .iter()
        .find(|c| c.size == len as u64)
        .expect("class listed");
    assert_eq!(c.blocks_in_use, 10);
    a.flush_thread_cache();
    let au = a.audit();
    assert_eq!(au.slabs_for(lay), 1);
    assert_eq!(au.blocks_out, 10);
    // Freed with any size between the request and the length.
    for (i, b) in bs.into_iter().enumerate() {
        let sz = [100, 1024, 1025, len][i % 4];
        // SAFETY: live; `sz` between the request and the returned length.
        unsafe { a.deallocate(b.cast(), l(sz, 256)) };
    }
    a.flush_thread_cache();
    assert_eq!(a.stats().blocks_in_use, 0);
    assert_eq!(a.audit().blocks_out, 0);

    // A 128-byte CachePadded-like layout keeps the 128 class.
    let cp = a.allocate(l(128, 128)).unwrap();
    assert_eq!(cp.len(), 128);
    // (1024, 128) stays at 1 KiB; (1024, 256) does not.
    let k = a.allocate(l(1024, 128)).unwrap();
    assert_eq!(k.len(), 1024);
    let k2 = a.allocate(l(1024, 256)).unwrap();
    assert!(k2.len() > 1024);
    // SAFETY: live with these layouts.
    unsafe {
        a.deallocate(cp.cast(), l(128, 128));
        a.deallocate(k.cast(), l(1024, 128));
        a.deallocate(k2.cast(), l(1024, 256));
    }
}

/// A 64 KiB limit with over-aligned small layouts: never passed, failures
/// are errors, and freeing makes room again.
#[test]
fn memory_limit_with_over_aligned_small_layouts() {
    for align in [128usize, 256, 512, 1024, 4096] {
        let a = SmallMidArena::builder().memory_limit(64 << 10).build();
        a.reserve(1).unwrap(); // grown: past its seed (seed blocks are not reused)
        let lay = l(100, align);
        let mut v = Vec::new();
        while let Ok(b) = a.allocate(lay) {
            check_block(b, lay, "limited");
            v.push(b);
            assert!(
                a.allocated_bytes() <= 64 << 10,
                "align {align}: limit passed"
            );
            assert!(v.len() < 10_000);
        }
        assert!(a.stats().bytes_held <= 64 << 10);
        let n = v.len();
        for b in v.drain(..) {
            // SAFETY: live with `lay`.
            unsafe { a.deallocate(b.cast(), lay) };
        }
        a.flush_thread_cache();
        // The same number fit again.
        for _ in 0..n {
            v.push(a.allocate(lay).expect("room after frees"));
        }
        assert!(a.allocated_bytes() <= 64 << 10);
        for b in v {
            // SAFETY: as above.
            unsafe { a.deallocate(b.cast(), lay) };
        }
    }
}

/// Under a 64 KiB limit, a small over-aligned layout must still be
/// servable once the arena holds other small blocks (before the change a
/// (100, 256) block came from the mixed slab the arena already holds).
#[test]
fn limited_arena_serves_over_aligned_next_to_small_blocks() {
    let a = SmallMidArena::builder().memory_limit(64 << 10).build();
    a.reserve(1).unwrap(); // grown: past its seed (the small block is a slab's)
    let small = a.allocate(l(24, 8)).unwrap();
    let r = a.allocate(l(100, 256));
    let held = a.allocated_bytes();
    assert!(held <= 64 << 10);
    // SAFETY: live with its layout.
    unsafe { a.deallocate(small.cast(), l(24, 8)) };
    if let Ok(b) = r {
        check_block(b, l(100, 256), "limited");
        // SAFETY: live with its layout.
        unsafe { a.deallocate(b.cast(), l(100, 256)) };
    }
}

/// `Pool::doubles` multiplies the last large size: a failed absurd huge
/// allocation (the OS refuses the address space) must be an error, not an
/// arithmetic overflow panic, and the arena must stay usable.
#[test]
fn absurd_huge_allocation_is_an_error_not_a_panic() {
    let _g = serial();
    let a = SmallMidArena::new();
    for size in [0x6000_0000_0000_0000usize, 0x7fff_ffff_ffe0_0000, 1 << 62] {
        let lay = l(size, 8);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.allocate(lay).is_err()));
        assert!(
            matches!(r, Ok(true)),
            "allocate({size:#x}) must fail with AllocError, not panic"
        );
    }
    // Still usable, spans and huge blocks included.
    for lay in [l(100, 8), l(40 * KIB, 8), l(3 * MIB, 8)] {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let b = a.allocate(lay).unwrap();
            // SAFETY: live with `lay`.
            unsafe { a.deallocate(b.cast(), lay) };
        }));
        assert!(r.is_ok(), "{lay:?} after an absurd request panicked");
    }
}

/// A failed absurd request just under `usize::MAX / 3` (its own retry
/// computes `doubles` against itself without overflow) leaves the arena's
/// large path working: spans and huge blocks still served.
#[test]
fn large_allocation_after_a_failed_absurd_one_does_not_panic() {
    let _g = serial();
    let a = SmallMidArena::new();
    let huge = l(0x5000_0000_0000_0000, 8);
    let r0 = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.allocate(huge).is_err()));
    assert!(matches!(r0, Ok(true)), "first absurd request");
    for lay in [l(40 * KIB, 8), l(900 * KIB, 8), l(3 * MIB, 8), l(100, 8)] {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let b = a.allocate(lay).unwrap();
            check_block(b, lay, "after absurd");
            // SAFETY: live with `lay`.
            unsafe { a.deallocate(b.cast(), lay) };
        }));
        assert!(r.is_ok(), "{lay:?} after an absurd request panicked");
    }
}

/// Huge blocks grown and shrunk (the doubling rule, huge-page rounding):
/// every returned length is at least the request, data is kept, stats
/// agree with the returned lengths.
#[test]
fn huge_grow_shrink_lengths_and_stats() {
    let _g = serial();
    let a = SmallMidArena::new();
    let sizes = [
        1_100 * KIB,
        2_200 * KIB,
        2 * MIB + 1,
        4_500 * KIB,
        9 * MIB,
        3 * MIB,
        1_050 * KIB,
        MIB,
        17 * MIB + 5,
        980 * KIB,
        200 * KIB,
        5000,
    ];
    for align in [8usize, 4096, 8192, 2 * MIB] {
        let mut lay = l(sizes[0], align);
        let mut b = a.allocate(lay).unwrap();
        check_block(b, lay, "first");
        fill(b.cast::<u8>().as_ptr(), 4096, 1);
        for &s in &sizes[1..] {
            let new = l(s, align);
            // SAFETY: live with `lay`.
            let r = unsafe {
                if s >= lay.size() {
                    a.grow(b.cast(), lay, new)
                } else {
                    a.shrink(b.cast(), lay, new)
                }
            }
            .unwrap();
            check_block(r, new, &format!("{lay:?} -> {new:?}"));
            verify(r.cast::<u8>().as_ptr(), 4096.min(s), 1, "huge resize");
            // The whole returned length is usable.
            // SAFETY: `r.len()` bytes are ours.
            unsafe { r.cast::<u8>().as_ptr().add(r.len() - 1).write(0x77) };
            let st = a.stats();
            assert_eq!(st.blocks_in_use, 1);
            if s > 32 * KIB {
                assert_eq!(
                    st.bytes_in_use,
                    r.len() as u64,
                    "{lay:?} -> {new:?}: stats disagree with the returned length"
                );
            }
            b = r;
            lay = new;
        }
        // SAFETY: live with `lay`.
        unsafe { a.deallocate(b.cast(), lay) };
        assert_eq!(a.stats().blocks_in_use, 0);
        assert_eq!(a.stats().huge_bytes, 0);
    }
}

/// Under a memory limit, huge growth (doubling) never passes it because
/// of rounding, and what the arena holds covers the returned lengths.
#[test]
fn huge_growth_under_limit_never_passes_it() {
    let _g = serial();
    for limit in [3 * MIB, 5 * MIB, 9 * MIB] {
        let a = SmallMidArena::builder().memory_limit(limit).build();
        let mut lay = l(1_060 * KIB, 8);
        let Ok(mut b) = a.allocate(lay) else {
            panic!("limit {limit}: first block refused");
        };
        loop {
            assert!(
                a.allocated_bytes() <= limit,
                "limit {limit} passed: {} held with {lay:?} ({} returned)",
                a.allocated_bytes(),
                b.len()
            );
            assert!(a.allocated_bytes() >= b.len(), "held < returned length");
            let new = l(lay.size() * 2 + 100 * KIB, 8);
            // SAFETY: live with `lay`.
            match unsafe { a.grow(b.cast(), lay, new) } {
                Ok(r) => {
                    check_block(r, new, "grow");
                    b = r;
                    lay = new;
                }
                Err(_) => break,
            }
        }
        // Fresh huge blocks of doubling sizes, each alone.
        let mut size = 1_060 * KIB;
        let mut last: Option<(NonNull<[u8]>, Layout)> = None;
        while size < limit {
            if let Some((p, pl)) = last.take() {
                // SAFETY: live with `pl`.
                unsafe { a.deallocate(p.cast(), pl) };
            }
            let nl = l(size, 8);
            if let Ok(p) = a.allocate(nl) {
                assert!(
                    a.allocated_bytes() <= limit,
                    "limit {limit} passed by {nl:?}"
                );
                last = Some((p, nl));
            }
            size = size * 2 + 64 * KIB;
        }
        if let Some((p, pl)) = last {
            // SAFETY: live with `pl`.
            unsafe { a.deallocate(p.cast(), pl) };
        }
        // SAFETY: live with `lay`.
        unsafe { a.deallocate(b.cast(), lay) };
    }
}

/// A limit set after unlimited growth counts the rounded mapping: a later
/// huge grow cannot pass it.
#[test]
fn limit_set_after_rounded_huge_blocks() {
    let _g = serial();
    let a = SmallMidArena::new();
    let l1 = l(1_100 * KIB, 8);
    let b1 = a.allocate(l1).unwrap();
    let l2 = l(2_300 * KIB, 8);
    // SAFETY: live with `l1`.
    let b2 = unsafe { a.grow(b1.cast(), l1, l2) }.unwrap();
    let held = a.allocated_bytes();
    assert!(held >= b2.len());
    a.set_memory_limit(held + 300 * KIB).unwrap();
    let l3 = l(b2.len() + 200 * KIB, 8);
    // SAFETY: live with `l2`.
    match unsafe { a.grow(b2.cast(), l2, l3) } {
        Ok(r) => {
            assert!(
                a.allocated_bytes() <= held + 300 * KIB,
                "limit passed by a grow"
            );
            // SAFETY: live with `l3`.
            unsafe { a.deallocate(r.cast(), l3) };
        }
        Err(_) => {
            // SAFETY: still live with `l2`.
            unsafe { a.deallocate(b2.cast(), l2) };
        }
    }
    assert!(a.allocated_bytes() <= held + 300 * KIB);
}

/// Spans with alignments up to 512 KiB, and their in-place resizes to
/// more alignment.
#[test]
fn spans_keep_alignment_across_resizes() {
    let a = SmallMidArena::new();
    for align in [1usize, 4096, 64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB] {
        for size in [33 * KIB, 64 * KIB, 100 * KIB, 300 * KIB, 500 * KIB] {
            let lay = l(size, align);
            for new_align in [64 * KIB, 128 * KIB, 256 * KIB] {
                let b = a.allocate(lay).unwrap();
                check_block(b, lay, "span");
                let new = l(size, new_align.max(align));
                // SAFETY: live with `lay`; same size.
                let r = unsafe { a.grow(b.cast(), lay, new) }.unwrap();
                check_block(r, new, &format!("span {lay:?} -> {new:?}"));
                // SAFETY: live with `new`; back to `lay`.
                let back = unsafe { a.shrink(r.cast(), new, lay) }.unwrap();
                check_block(back, lay, "span back");
                // SAFETY: live with `lay`.
                unsafe { a.deallocate(back.cast(), lay) };
            }
        }
    }
    assert_eq!(a.stats().blocks_in_use, 0);
    // Allocate alignment over what spans give: huge.
    let lay = l(100, MIB);
    let b = a.allocate(lay).unwrap();
    check_block(b, lay, "1 MiB-aligned");
    // SAFETY: live with `lay`.
    unsafe { a.deallocate(b.cast(), lay) };
}

/// With `checked`: blocks of moved-up classes may be freed with any size
/// up to their returned length, and resized to more alignment.
#[cfg(feature = "checked")]
#[test]
fn checked_over_aligned_layouts() {
    let a = SmallMidArena::new();
    for align in [128usize, 256, 512, 1024, 2048, 4096] {
        for size in [1usize, 100, 255, 256, 1000, 1024, 1025] {
            let lay = l(size, align);
            let b = a.allocate(lay).unwrap();
            check_block(b, lay, "checked");
            // SAFETY: live; the returned length is a fitting size.
            unsafe { a.deallocate(b.cast(), l(b.len(), align)) };
            let b = a.allocate(lay).unwrap();
            let new = l(size + 2000, align * 2);
            // SAFETY: live with `lay`.
            let r = unsafe { a.grow(b.cast(), lay, new) }.unwrap();
            check_block(r, new, "checked grow");
            // SAFETY: live with `new`.
            let s = unsafe { a.shrink(r.cast(), new, l(size, align)) }.unwrap();
            check_block(s, l(size, align), "checked shrink");
            // SAFETY: live with this layout.
            unsafe { a.deallocate(s.cast(), l(size, align)) };
        }
    }
    assert_eq!(a.stats().blocks_in_use, 0);
}

/// Many threads, each its own mixed ranges, over-aligned layouts mixed with
/// small ones, freed on other threads; audit after.
#[test]
fn threads_mixing_alignments_then_audit() {
    let a = SmallMidArena::new();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Layout)>();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let tx = tx.clone();
            let a = &a;
            s.spawn(move || {
                let mut rng = Rng(0x9E37_79B9 ^ (t + 1));
                for _ in 0..8000 {
                    let size = 1 + rng.below(1100);
                    let lay = l(size, 1 << rng.below(10));
                    let b = a.allocate(lay).unwrap();
                    check_block(b, lay, "thread");
                    if rng.below(2) == 0 {
                        tx.send((b.cast::<u8>().as_ptr() as usize, lay)).unwrap();
                    } else {
                        // SAFETY: live with `lay`.
                        unsafe { a.deallocate(b.cast(), lay) };
                    }
                }
                a.flush_thread_cache();
            });
        }
        drop(tx);
        let a = &a;
        s.spawn(move || {
            for (p, lay) in rx {
                // SAFETY: live with `lay`.
                unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
            }
            a.flush_thread_cache();
        });
    });
    a.flush_thread_cache();
    assert_eq!(a.stats().blocks_in_use, 0);
    assert_eq!(a.audit().blocks_out, 0);
    // And afterwards every over-aligned layout still aligned.
    for size in (1..=1100).step_by(13) {
        for s in 7..=12 {
            let lay = l(size, 1 << s);
            let b = a.allocate(lay).unwrap();
            check_block(b, lay, "after threads");
            // SAFETY: live with `lay`.
            unsafe { a.deallocate(b.cast(), lay) };
        }
    }
}

/// Slab 0 class slabs (blocks from META rounded to the class alignment):
/// a fresh arena whose first blocks are of one large class fills slab 0,
/// and every block is aligned; the range length agrees after a reset.
#[test]
fn slab_zero_class_slabs_aligned_through_resets() {
    for size in [
        1280usize, 1536, 2048, 3072, 4096, 5120, 8192, 12288, 16384, 32768,
    ] {
        let mut a = SmallMidArena::new();
        for _round in 0..3 {
            let mut v = Vec::new();
            for s in 0..=size.trailing_zeros() {
                let lay = l(size, 1 << s);
                for _ in 0..(2 * SLAB / size).max(4) {
                    let b = a.allocate(lay).unwrap();
                    check_block(b, lay, "slab 0 class");
                    // SAFETY: the block is `b.len()` bytes.
                    unsafe { b.cast::<u8>().as_ptr().write_bytes(1, b.len()) };
                    v.push(b);
                }
            }
            a.reset();
            assert_eq!(a.stats().blocks_in_use, 0);
        }
        a.flush_thread_cache();
        assert_eq!(a.audit().blocks_out, 0);
    }
}

/// The realistic way to reach an absurd huge request: a `Vec`'s
/// `try_reserve`, which must report an error (never panic).
#[test]
fn vec_try_reserve_absurd_is_an_error() {
    let _g = serial();
    let a = SmallMidArena::new();
    let mut v: allocator_api2::vec::Vec<u8, &SmallMidArena> = allocator_api2::vec::Vec::new_in(&a);
    v.push(1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        v.try_reserve(0x6000_0000_0000_0000).is_err()
    }));
    assert!(
        matches!(r, Ok(true)),
        "try_reserve of 6.9e18 bytes must be Err, got {r:?}"
    );
}

/// Without a front cache (a thread whose thread-locals are gone), blocks
/// come from the central lists directly: still aligned for every layout.
#[test]
fn cacheless_threads_get_aligned_blocks() {
    let a = SmallMidArena::new();
    // Fill central lists with blocks of low-alignment layouts first.
    let mut v = Vec::new();
    for size in (1..=2100).step_by(7) {
        let lay = l(size, 1);
        for _ in 0..3 {
            v.push((a.allocate(lay).unwrap(), lay));
        }
    }
    for (b, lay) in v.drain(..) {
        // SAFETY: live with `lay`.
        unsafe { a.deallocate(b.cast(), lay) };
    }
    a.flush_thread_cache();
    smallmid::test_hooks::cacheless(|| {
        for size in (1..=2100).step_by(7) {
            for s in 0..=12 {
                let lay = l(size, 1 << s);
                let b = a.allocate(lay).unwrap();
                check_block(b, lay, "cacheless");
                v.push((b, lay));
            }
        }
        for (b, lay) in v.drain(..) {
            // SAFETY: live with `lay`.
            unsafe { a.deallocate(b.cast(), lay) };
        }
    });
    a.flush_thread_cache();
    assert_eq!(a.stats().blocks_in_use, 0);
    assert_eq!(a.audit().blocks_out, 0);
}

/// After a caught debug panic from an absurd request, the arena's
/// `last_large` holds the absurd size: every later span or huge
/// allocation of the arena computes `doubles` against it.
#[test]
fn large_path_after_a_caught_absurd_panic_still_works() {
    let _g = serial();
    let a = SmallMidArena::new();
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.allocate(l(0x6000_0000_0000_0000, 8)).is_err()
    }));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lay = l(40 * KIB, 8);
        let b = a.allocate(lay).unwrap();
        // SAFETY: live with `lay`.
        unsafe { a.deallocate(b.cast(), lay) };
    }));
    assert!(
        r.is_ok(),
        "a 40 KiB span panicked after an absurd request was refused"
    );
}

/// README: "an arena under a memory limit never rounds (the rounding would
/// spend its limit)". A grow of a huge block in a limited arena must not
/// be rounded up to whole huge pages either: a block grown to 2.1 MiB
/// under an 8 MiB limit takes 2.1 MiB of it, so a 5 MiB block still fits.
#[test]
fn limited_huge_grow_does_not_round() {
    let _g = serial();
    let limit = 8 * MIB;
    let a = SmallMidArena::builder().memory_limit(limit).build();
    let l1 = l(1_050 * KIB, 8);
    let b = a.allocate(l1).unwrap();
    assert!(
        b.len() < l1.size() + 2 * 4096,
        "fresh block rounded under a limit: {}",
        b.len()
    );
    let l2 = l(2_100 * KIB, 8);
    // SAFETY: live with `l1`.
    let g = unsafe { a.grow(b.cast(), l1, l2) }.unwrap();
    let held = a.allocated_bytes();
    let l3 = l(5 * MIB, 8);
    let other = a.allocate(l3);
    assert!(
        g.len() < l2.size() + 2 * 4096,
        "grow under a limit rounded: {} returned for {} ({} held); a 5 MiB block then: {}",
        g.len(),
        l2.size(),
        held,
        if other.is_ok() { "fits" } else { "refused" }
    );
    assert!(other.is_ok(), "5 MiB refused though 2.1 + 5 MiB < 8 MiB");
    // SAFETY: live with these layouts.
    unsafe {
        a.deallocate(other.unwrap().cast(), l3);
        a.deallocate(g.cast(), l2);
    }
}
