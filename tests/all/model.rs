//! Differential tests: random alloc/free/grow/shrink against the shadow.

use crate::shadow::Shadow;
use crate::{scaled, Rng};
use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use smallmid::SmallMidArena;

fn random_layout(rng: &mut Rng) -> Layout {
    let size = match rng.range(0, 99) {
        0..=4 => 0,
        5..=59 => rng.range(1, 1024),
        60..=84 => rng.range(1025, 32 << 10),
        85..=96 => crate::cap(rng.range((32 << 10) + 1, 1 << 20)),
        _ => crate::cap(rng.range(1 << 20, 2 << 20)),
    };
    let align = match rng.range(0, 9) {
        0..=6 => 1 << rng.range(0, 4),
        7..=8 => 1 << rng.range(5, 12),
        _ => 1 << rng.range(13, 16),
    };
    Layout::from_size_align(size, align).unwrap()
}

fn run(seed: u64, ops: usize) {
    let arena = SmallMidArena::new();
    let mut rng = Rng::new(seed);
    let mut shadow = Shadow::default();
    for _ in 0..ops {
        match rng.range(0, 9) {
            0..=4 => {
                let layout = random_layout(&mut rng);
                let b = arena.allocate(layout).expect("allocation failed");
                shadow.insert(b, layout, rng.next_u64() as u8);
            }
            5..=6 if shadow.len() > 0 => {
                let live = shadow.take_nth(rng.range(0, shadow.len() - 1)).unwrap();
                // SAFETY: allocated from `arena` with this layout.
                unsafe { arena.deallocate(live.ptr, live.layout) };
            }
            7..=9 if shadow.len() > 0 => {
                let live = shadow.take_nth(rng.range(0, shadow.len() - 1)).unwrap();
                let new = random_layout(&mut rng);
                let new = Layout::from_size_align(new.size(), live.layout.align()).unwrap();
                let keep = live.layout.size().min(new.size());
                // SAFETY: allocated from `arena` with `live.layout`.
                let r = unsafe {
                    if new.size() >= live.layout.size() {
                        if rng.range(0, 1) == 0 {
                            arena.grow(live.ptr, live.layout, new)
                        } else {
                            arena.grow_zeroed(live.ptr, live.layout, new)
                        }
                    } else {
                        arena.shrink(live.ptr, live.layout, new)
                    }
                };
                let b = r.expect("grow/shrink failed");
                // SAFETY: the block is live and at least `new.size()` long.
                let bytes =
                    unsafe { core::slice::from_raw_parts(b.as_ptr().cast::<u8>(), new.size()) };
                assert!(
                    bytes[..keep].iter().all(|&x| x == live.fill),
                    "contents lost in realloc"
                );
                shadow.insert(b, new, rng.next_u64() as u8);
            }
            _ => {}
        }
    }
    shadow.verify_all();
    let live_small =
        shadow.count(|l| l.size() > 0 && l.size() <= 32 << 10 && l.align() <= 32 << 10);
    arena.flush_thread_cache();
    let audit = arena.audit();
    assert_eq!(
        audit.blocks_out, live_small,
        "{audit:?}: blocks out of slabs != live small blocks"
    );
    if seed % 2 == 0 {
        shadow.free_all(&arena);
        arena.flush_thread_cache();
        let audit = arena.audit();
        assert_eq!(
            (audit.blocks_out, audit.class_slabs, audit.span_slabs),
            (0, 0, 0),
            "{audit:?}"
        );
        return;
    }
    // Free half, drop the arena with the rest live: whole-arena release.
    for _ in 0..shadow.len() / 2 {
        let live = shadow.take_nth(0).unwrap();
        // SAFETY: allocated from `arena` with this layout.
        unsafe { arena.deallocate(live.ptr, live.layout) };
    }
    drop(arena);
}

#[test]
fn differential_random_sequences() {
    for seed in 0..if cfg!(miri) { 2 } else { 20 } {
        run(seed, if cfg!(miri) { 300 } else { 5_000 });
    }
}

#[test]
fn grow_zeroed_zeroes_reused_blocks() {
    let arena = SmallMidArena::new();
    let small = Layout::from_size_align(100, 8).unwrap();
    for round in 0..scaled(200) {
        let b = arena.allocate(small).unwrap().cast::<u8>();
        // SAFETY: fresh block of 100 bytes.
        unsafe { b.as_ptr().write_bytes(0xAB, 100) };
        let new = Layout::from_size_align(100 + round % 20, 8).unwrap();
        // SAFETY: allocated above with `small`.
        let g = unsafe { arena.grow_zeroed(b, small, new).unwrap() };
        // SAFETY: `g` is live and `g.len()` long.
        let bytes = unsafe { core::slice::from_raw_parts(g.as_ptr().cast::<u8>(), g.len()) };
        assert!(bytes[..100].iter().all(|&x| x == 0xAB));
        assert!(
            bytes[100..].iter().all(|&x| x == 0),
            "grow_zeroed left garbage"
        );
        // SAFETY: as returned.
        unsafe { arena.deallocate(g.cast(), new) };
    }
}

#[test]
fn zero_sized_and_impossible_layouts() {
    let arena = SmallMidArena::new();
    for align in [1, 8, 4096, 1 << 20] {
        let l = Layout::from_size_align(0, align).unwrap();
        let b = arena.allocate(l).unwrap();
        assert_eq!(b.len(), 0);
        assert_eq!(b.cast::<u8>().as_ptr() as usize % align, 0);
        // SAFETY: zero-sized block from this arena.
        unsafe { arena.deallocate(b.cast(), l) };
    }
    let huge = Layout::from_size_align(isize::MAX as usize - 4095, 4096).unwrap();
    assert_eq!(arena.allocate(huge), Err(AllocError));
    let big_align = Layout::from_size_align(1, if cfg!(miri) { 1 << 21 } else { 1 << 30 }).unwrap();
    let b = arena
        .allocate(big_align)
        .expect("1 GiB alignment is served by the huge path");
    assert_eq!(b.cast::<u8>().as_ptr() as usize % big_align.align(), 0);
    // SAFETY: as returned.
    unsafe { arena.deallocate(b.cast(), big_align) };
}

#[test]
fn same_class_grow_and_shrink_stay_in_place() {
    let arena = SmallMidArena::new();
    let l100 = Layout::from_size_align(100, 8).unwrap();
    let l110 = Layout::from_size_align(110, 8).unwrap();
    let b = arena.allocate(l100).unwrap();
    assert_eq!(b.len(), 112);
    // SAFETY: allocated above with l100.
    let g = unsafe { arena.grow(b.cast(), l100, l110).unwrap() };
    assert_eq!(g.cast::<u8>(), b.cast::<u8>());
    // SAFETY: now has layout l110.
    let s = unsafe { arena.shrink(g.cast(), l110, l100).unwrap() };
    assert_eq!(s.cast::<u8>(), b.cast::<u8>());
    // SAFETY: as returned.
    unsafe { arena.deallocate(s.cast(), l100) };
}

#[test]
fn alignments_up_to_a_mebibyte() {
    let arena = SmallMidArena::new();
    let mut shadow = Shadow::default();
    for shift in 0..=if cfg!(miri) { 16 } else { 20 } {
        let align = 1usize << shift;
        for size in [
            1,
            align.saturating_sub(1).max(1),
            align,
            align + 1,
            255,
            1024,
            1025,
            65535,
            65537,
        ] {
            let l = Layout::from_size_align(size, align).unwrap();
            let b = arena.allocate(l).unwrap();
            shadow.insert(b, l, shift as u8);
        }
    }
    shadow.verify_all();
    shadow.free_all(&arena);
}

#[test]
fn realloc_sequence_accounts_exactly() {
    let arena = SmallMidArena::new();
    let small = Layout::from_size_align(100, 8).unwrap();
    let b1 = arena.allocate(small).unwrap().cast::<u8>();
    let b2 = arena.allocate(small).unwrap().cast::<u8>();
    arena.flush_thread_cache();
    // SAFETY: b2 allocated with `small`.
    unsafe { arena.deallocate(b2, small) };
    arena.flush_thread_cache();
    let bigger = Layout::from_size_align(110, 8).unwrap();
    let big = Layout::from_size_align(3000, 8).unwrap();
    // SAFETY: each step uses the last layout and pointer.
    unsafe {
        let g = arena.grow(b1, small, bigger).unwrap().cast::<u8>();
        let g2 = arena.grow(g, bigger, big).unwrap().cast::<u8>();
        let s = arena.shrink(g2, big, small).unwrap().cast::<u8>();
        arena.deallocate(s, small);
    }
    arena.flush_thread_cache();
    assert_eq!(arena.audit().blocks_out, 0);
}
