//! ArenaBox: ownership, drops, panics, threads, sizes and alignment.

use crate::scaled;
use smallmid::{ArenaBox, SmallMidArena};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts its drops in a shared counter.
#[derive(Clone, Debug)]
struct Counted(Arc<AtomicUsize>, #[allow(dead_code)] [u64; 4]);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn handles_are_one_pointer_wide() {
    use core::mem::size_of;
    assert_eq!(size_of::<ArenaBox<'_, u8>>(), size_of::<usize>());
    assert_eq!(size_of::<ArenaBox<'_, u64>>(), size_of::<usize>());
    assert_eq!(size_of::<ArenaBox<'_, [u8; 100_000]>>(), size_of::<usize>());
    assert_eq!(
        size_of::<Option<ArenaBox<'_, String>>>(),
        size_of::<usize>()
    );
    assert_eq!(size_of::<ArenaBox<'_, [u32]>>(), 2 * size_of::<usize>());
    assert_eq!(size_of::<ArenaBox<'_, str>>(), 2 * size_of::<usize>());
}

#[test]
fn every_value_is_dropped_exactly_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let arena = SmallMidArena::new();
    let c = || Counted(drops.clone(), [0; 4]);
    let a = arena.alloc(c());
    let b = a.clone();
    let inner = ArenaBox::into_inner(arena.alloc(c()));
    let slice = arena.alloc_slice_fill_with(10, |_| c());
    let cloned = arena.alloc_slice_clone(&slice[..3]);
    let pinned = arena.alloc_pin(c());
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop((a, b, inner, slice, cloned, pinned));
    assert_eq!(drops.load(Ordering::SeqCst), 1 + 1 + 1 + 10 + 3 + 1);
    // A leaked value stays in the arena and is never dropped; the arena's
    // drop releases its memory. (No Arc inside: leak checkers would object.)
    static LEAKED_DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Noisy([u64; 4]);
    impl Drop for Noisy {
        fn drop(&mut self) {
            LEAKED_DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    let leaked = ArenaBox::leak(arena.alloc(Noisy([0; 4])));
    leaked.0[0] = 9;
    drop(arena);
    assert_eq!(LEAKED_DROPS.load(Ordering::SeqCst), 0);
    assert_eq!(drops.load(Ordering::SeqCst), 17);
}

#[test]
fn panics_free_and_drop_what_was_built() {
    let drops = Arc::new(AtomicUsize::new(0));
    let arena = SmallMidArena::new();
    for _ in 0..100 {
        let r = catch_unwind(AssertUnwindSafe(|| {
            arena.alloc_slice_fill_with(8, |i| {
                if i == 5 {
                    panic!("boom");
                }
                Counted(drops.clone(), [0; 4])
            })
        }));
        assert!(r.is_err());
        let r = catch_unwind(AssertUnwindSafe(|| {
            arena.alloc_with(|| -> [u8; 5000] { panic!("no") })
        }));
        assert!(r.is_err());
    }
    assert_eq!(
        drops.load(Ordering::SeqCst),
        500,
        "each panic drops the 5 built elements once"
    );
    let s = arena.stats();
    assert_eq!(
        (s.blocks_in_use, s.bytes_in_use),
        (0, 0),
        "panicking constructions leaked: {s}"
    );
    assert_eq!(
        s.classes.iter().map(|c| c.allocs).sum::<u64>(),
        200,
        "one block per attempt"
    );
}

#[test]
fn clone_panicking_midway_drops_the_clones() {
    #[derive(Debug)]
    struct Bomb(Arc<AtomicUsize>, usize);
    impl Clone for Bomb {
        fn clone(&self) -> Self {
            assert!(self.1 != 3, "clone bomb");
            Bomb(self.0.clone(), self.1)
        }
    }
    impl Drop for Bomb {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let src: Vec<Bomb> = (0..6).map(|i| Bomb(drops.clone(), i)).collect();
    let arena = SmallMidArena::new();
    assert!(catch_unwind(AssertUnwindSafe(|| arena.alloc_slice_clone(&src))).is_err());
    assert_eq!(drops.load(Ordering::SeqCst), 3, "clones 0..3 dropped once");
}

#[test]
fn zero_sized_and_empty_values() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Zst;
    impl Drop for Zst {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    assert_eq!(core::mem::size_of::<Zst>(), 0);
    let arena = SmallMidArena::new();
    let unit = arena.alloc(());
    let z = arena.alloc(Zst);
    let z2 = arena.alloc_with(|| Zst);
    let empty: ArenaBox<'_, [u64]> = arena.alloc_slice_copy(&[]);
    let s = arena.alloc_str("");
    assert_eq!(empty.len(), 0);
    assert_eq!(&*s, "");
    assert_eq!(*unit, ());
    drop((unit, z, z2, empty, s));
    assert_eq!(DROPS.load(Ordering::SeqCst), 2);
    let s = arena.stats();
    assert_eq!(
        (s.blocks_in_use, s.bytes_in_use),
        (0, 0),
        "zero-sized values took memory: {s}"
    );
    assert!(
        s.classes.is_empty(),
        "zero-sized values touched a size class: {s}"
    );
}

#[test]
fn over_aligned_and_large_values() {
    #[repr(align(4096))]
    #[derive(Clone, PartialEq, Debug)]
    struct Page([u8; 4096]);
    let arena = SmallMidArena::new();
    let pages: Vec<_> = (0..crate::scaled(20) as u8 + 2)
        .map(|i| arena.alloc(Page([i; 4096])))
        .collect();
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(&**p as *const Page as usize % 4096, 0);
        assert!(p.0.iter().all(|&x| x == i as u8));
    }
    const BIG: usize = if cfg!(miri) { 40_000 } else { 100_000 }; // > 32 KiB: a span
    let big = arena.alloc_with(|| [3u8; BIG]);
    let huge = arena.alloc_slice_fill_with(if cfg!(miri) { 1000 } else { 3 << 20 }, |i| i as u8);
    assert!(big[..64].iter().chain(&big[BIG - 64..]).all(|&x| x == 3));
    let mid = huge.len() / 2;
    assert_eq!(huge[mid], (mid % 256) as u8);
    let c = big.clone();
    assert!(c[..64] == big[..64] && c[BIG - 64..] == big[BIG - 64..]);
    // Dropped on another thread: found their arena from the block alone.
    std::thread::scope(|s| {
        s.spawn(move || drop((pages, big, huge, c)));
    });
}

#[test]
fn handles_dropped_on_other_threads() {
    let drops = Arc::new(AtomicUsize::new(0));
    let arena = SmallMidArena::new();
    let n = scaled(50_000);
    let mut handles: Vec<_> = (0..n)
        .map(|_| arena.alloc(Counted(drops.clone(), [1; 4])))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let part: Vec<_> = handles.drain(..handles.len().min(n / 4 + 1)).collect();
            s.spawn(move || drop(part));
        }
    });
    assert!(handles.is_empty());
    assert_eq!(drops.load(Ordering::SeqCst), n);
}

#[test]
fn traits_pass_through() {
    use std::collections::HashSet;
    let arena = SmallMidArena::new();
    let a = arena.alloc(String::from("b"));
    let b = arena.alloc(String::from("a"));
    assert!(a > b);
    assert_eq!(format!("{a} {b:?}"), "b \"a\"");
    let set: HashSet<_> = [a.clone(), b.clone(), a.clone()].into_iter().collect();
    assert_eq!(set.len(), 2);
    let mut it = arena.alloc(1..4);
    assert_eq!(it.next(), Some(1));
    assert_eq!(it.len(), 2);
    assert_eq!(it.next_back(), Some(3));
    let owned = arena.alloc_str("xyz");
    let s: &str = owned.as_ref();
    assert_eq!(s.len(), 3);
    let p = ArenaBox::into_raw(arena.alloc(5u64));
    // SAFETY: from `into_raw` above, rebuilt once.
    let back = unsafe { ArenaBox::from_raw(p) };
    assert_eq!(*back, 5);
    let dynamic: ArenaBox<'_, dyn std::fmt::Display> =
        // SAFETY: an unsizing cast of an `into_raw` pointer, rebuilt once.
        unsafe { ArenaBox::from_raw(ArenaBox::into_raw(arena.alloc(42u8)) as *mut dyn std::fmt::Display) };
    assert_eq!(dynamic.to_string(), "42");
}
