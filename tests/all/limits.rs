//! Hostile layouts and memory limits: a clear `AllocError`, nothing lost.

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::vec::Vec as AVec;
use core::alloc::Layout;
use smallmid::SmallMidArena;

#[test]
fn every_alignment_crossed_with_awkward_sizes() {
    let arena = SmallMidArena::new();
    let max_shift = if cfg!(miri) { 13 } else { 20 };
    for shift in 0..=max_shift {
        let align = 1usize << shift;
        let mut sizes = vec![
            0,
            1,
            align - 1,
            align,
            align + 1,
            255,
            256,
            1023,
            1024,
            1025,
        ];
        if !cfg!(miri) {
            sizes.extend([
                (64 << 10) - 1,
                64 << 10,
                (64 << 10) + 1,
                (1 << 20) - 1,
                1 << 20,
                (1 << 20) + 1,
            ]);
        }
        for size in sizes {
            let l = Layout::from_size_align(size, align).unwrap();
            let b = arena
                .allocate(l)
                .unwrap_or_else(|_| panic!("{l:?} refused"));
            let p = b.cast::<u8>().as_ptr();
            assert_eq!(p as usize % align, 0, "{l:?} misaligned");
            assert!(b.len() >= size, "{l:?} got {} bytes", b.len());
            if size > 0 {
                // SAFETY: the block has at least `size` bytes.
                unsafe {
                    p.write(0xA5);
                    p.add(size - 1).write(0x5A);
                }
            }
            // SAFETY: allocated just above with `l`.
            unsafe { arena.deallocate(b.cast(), l) };
        }
    }
    arena.flush_thread_cache();
    assert_eq!(arena.audit().blocks_out, 0);
    assert_eq!(arena.stats().blocks_in_use, 0);
}

#[test]
fn sizes_near_isize_max_are_refused() {
    let arena = SmallMidArena::new();
    for align in [1, 8, 4096, 1 << 16, 1 << 20] {
        let max = isize::MAX as usize - (align - 1); // the largest size Layout accepts
                                                     // Miri cannot even try to allocate exabytes (it aborts rather than
                                                     // fail), so there only sizes our own arithmetic must refuse.
        let sizes: &[usize] = if cfg!(miri) {
            &[max, max - 1]
        } else {
            &[max, max - 1, max / 2 + 1, usize::MAX / 4]
        };
        for &size in sizes {
            let l = Layout::from_size_align(size, align).unwrap();
            assert_eq!(arena.allocate(l), Err(AllocError), "{l:?}");
            assert_eq!(arena.allocate_zeroed(l), Err(AllocError), "{l:?}");
        }
    }
    assert_eq!(arena.stats().blocks_in_use, 0);
}

#[test]
fn zero_sized_allocations_touch_nothing() {
    let arena = SmallMidArena::new();
    for align in [1, 16, 4096, 1 << 20] {
        let l = Layout::from_size_align(0, align).unwrap();
        let b = arena.allocate(l).unwrap();
        assert_eq!(b.len(), 0);
        // SAFETY: zero-sized block of this arena.
        unsafe { arena.deallocate(b.cast(), l) };
    }
    let s = arena.stats();
    assert!(s.classes.is_empty() && s.large_allocs == 0, "{s}");
}

#[test]
fn shrink_to_zero_and_grow_back() {
    let arena = SmallMidArena::new();
    let l100 = Layout::from_size_align(100, 8).unwrap();
    let l0 = Layout::from_size_align(0, 8).unwrap();
    let b = arena.allocate(l100).unwrap().cast::<u8>();
    // SAFETY: each call uses the block and layout the previous one returned.
    unsafe {
        let z = arena.shrink(b, l100, l0).unwrap();
        assert_eq!(z.len(), 0);
        let g = arena.grow_zeroed(z.cast(), l0, l100).unwrap();
        let bytes = core::slice::from_raw_parts(g.cast::<u8>().as_ptr(), 100);
        assert!(bytes.iter().all(|&x| x == 0));
        arena.deallocate(g.cast(), l100);
    }
    assert_eq!(arena.stats().blocks_in_use, 0);
}

#[test]
fn memory_limit_holds_exactly_and_frees_make_room() {
    let limit = if cfg!(miri) { 1 << 20 } else { 4 << 20 };
    let arena = SmallMidArena::builder().memory_limit(limit).build();
    assert_eq!(arena.memory_limit(), limit);
    let l = Layout::from_size_align(1000, 8).unwrap();
    let mut blocks = Vec::new();
    while let Ok(b) = arena.allocate(l) {
        blocks.push(b);
        assert!(arena.stats().bytes_held <= limit as u64);
        assert!(blocks.len() < 100_000, "the limit never bit");
    }
    assert!(
        blocks.len() > limit / 1400,
        "only {} KiB blocks fit in {limit} bytes",
        blocks.len()
    );
    assert_eq!(
        arena.stats().bytes_held,
        limit as u64,
        "the limit is used to the byte"
    );
    // Large and huge requests are refused too, and the arena stays usable.
    assert_eq!(
        arena.allocate(Layout::from_size_align(100 << 10, 8).unwrap()),
        Err(AllocError)
    );
    assert_eq!(
        arena.allocate(Layout::from_size_align(8 << 20, 8).unwrap()),
        Err(AllocError)
    );
    let mut v: AVec<u8, _> = AVec::new_in(&arena);
    assert!(
        v.try_reserve(64 << 20).is_err(),
        "try_reserve over the limit must fail, not abort"
    );
    for b in blocks.drain(..) {
        // SAFETY: allocated above with `l`.
        unsafe { arena.deallocate(b.cast(), l) };
    }
    arena.flush_thread_cache();
    // Freed memory serves again, including a large block.
    let big = Layout::from_size_align(600 << 10, 8).unwrap();
    let b = arena.allocate(big).expect("room again after frees");
    // SAFETY: allocated just above.
    unsafe { arena.deallocate(b.cast(), big) };
    assert!(v.try_reserve(1000).is_ok());
}

#[test]
fn failed_grow_leaves_the_block_intact() {
    let arena = SmallMidArena::builder().memory_limit(1 << 20).build();
    let l = Layout::from_size_align(3000, 8).unwrap();
    let b = arena.allocate(l).unwrap().cast::<u8>();
    // SAFETY: a live block of 3000 bytes.
    unsafe { b.as_ptr().write_bytes(7, 3000) };
    let huge = Layout::from_size_align(4 << 20, 8).unwrap();
    // SAFETY: `b` was allocated with `l`.
    assert_eq!(unsafe { arena.grow(b, l, huge) }, Err(AllocError));
    // SAFETY: still live after the failed grow.
    let bytes = unsafe { core::slice::from_raw_parts(b.as_ptr(), 3000) };
    assert!(
        bytes.iter().all(|&x| x == 7),
        "a failed grow changed the block"
    );
    // SAFETY: still allocated with `l`.
    unsafe { arena.deallocate(b, l) };
    assert_eq!(arena.stats().blocks_in_use, 0);
}

#[test]
fn limits_below_one_slab_are_refused() {
    assert!(SmallMidArena::builder()
        .memory_limit((64 << 10) - 1)
        .try_build()
        .is_err());
    let a = SmallMidArena::builder()
        .memory_limit(64 << 10)
        .try_build()
        .unwrap();
    assert!(a.set_memory_limit((64 << 10) - 1).is_err());
    assert_eq!(a.memory_limit(), 64 << 10);
}

#[test]
fn a_one_slab_limit_holds_and_frees_make_room() {
    const SLAB: usize = 64 << 10;
    let arena = SmallMidArena::builder().memory_limit(SLAB).build();
    assert_eq!(arena.stats().bytes_held, 0, "nothing used yet");
    let mut rng = crate::Rng::new(5);
    let mut blocks = Vec::new();
    loop {
        let l = Layout::from_size_align(rng.range(8, 1024), 8).unwrap();
        match arena.allocate(l) {
            Ok(b) => blocks.push((b.cast::<u8>(), l)),
            Err(AllocError) => break,
        }
        assert!(arena.stats().bytes_held <= SLAB as u64);
        assert!(blocks.len() < 10_000, "the limit never bit");
    }
    let bytes: usize = blocks.iter().map(|(_, l)| l.size()).sum();
    assert!(
        bytes > 40 << 10,
        "only {bytes} bytes of blocks in a 64 KiB limit"
    );
    assert_eq!(arena.stats().bytes_held, SLAB as u64);
    // A class slab or a span needs a slab of its own: refused.
    assert!(arena.allocate(Layout::new::<[u8; 2000]>()).is_err());
    assert!(arena.allocate(Layout::new::<[u8; 40 << 10]>()).is_err());
    for (b, l) in blocks.drain(..) {
        // SAFETY: allocated above with `l`.
        unsafe { arena.deallocate(b, l) };
    }
    arena.flush_thread_cache();
    assert_eq!(arena.stats().bytes_held, 0, "the slab is back");
    // The room serves any kind of block now, and again after it is freed.
    for l in [Layout::new::<[u8; 40 << 10]>(), Layout::new::<[u8; 2000]>()] {
        let b = arena.allocate(l).expect("room again after frees");
        assert_eq!(arena.stats().bytes_held, SLAB as u64);
        // SAFETY: allocated just above with `l`.
        unsafe { arena.deallocate(b.cast(), l) };
        arena.flush_thread_cache();
    }
    // Two slabs: 3 KiB blocks (21 to a slab) fill both, then nothing fits.
    arena.set_memory_limit(2 * SLAB).unwrap();
    let l = Layout::new::<[u8; 3000]>();
    let b: Vec<_> = std::iter::from_fn(|| arena.allocate(l).ok())
        .take(100)
        .collect();
    assert!(
        (30..=42).contains(&b.len()),
        "{} blocks of 3 KiB in two slabs",
        b.len()
    );
    assert_eq!(arena.stats().bytes_held, 2 * SLAB as u64);
    assert!(arena.allocate(Layout::new::<u64>()).is_err());
    // SAFETY: allocated above with `l`.
    unsafe {
        for p in b {
            arena.deallocate(p.cast(), l);
        }
    }
    let small = arena
        .allocate(Layout::new::<u64>())
        .expect("room after frees");
    // SAFETY: allocated just above.
    unsafe { arena.deallocate(small.cast(), Layout::new::<u64>()) };
}
