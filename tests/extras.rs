//! `allocated_bytes`, `set_memory_limit`, `contains` and `reserve`.

use allocator_api2::alloc::{Allocator, Layout};
use smallmid::SmallMidArena;
use std::ptr::NonNull;
use std::sync::Mutex;

const MIB: usize = 1 << 20;
const SLAB: usize = 64 << 10;
/// A span of 15 slabs: one per SuperSlab (slab 0 holds the header).
const SPAN: usize = 15 * (64 << 10);

/// The tests read process-wide counters and the warm cache: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn alloc(a: &SmallMidArena, size: usize) -> (NonNull<u8>, Layout) {
    let l = Layout::from_size_align(size, 8).unwrap();
    (a.allocate(l).expect("allocation").cast(), l)
}

fn free(a: &SmallMidArena, (p, l): (NonNull<u8>, Layout)) {
    // SAFETY: allocated by `a` with `l`, not used afterwards.
    unsafe { a.deallocate(p, l) };
}

#[test]
fn allocated_bytes_is_what_the_arena_uses() {
    let _g = serial();
    let a = SmallMidArena::new();
    // Grown past its seed, maybe as a recycled arena, which keeps the slabs
    // its caches used warm (in use): the flush gives them back.
    a.reserve(1).unwrap();
    a.flush_thread_cache();
    assert_eq!(a.allocated_bytes(), 0);
    let small = alloc(&a, 300);
    assert_eq!(a.allocated_bytes(), SLAB, "one mixed slab");
    let span = alloc(&a, SPAN); // slabs 1..=15 of the home SuperSlab
    assert_eq!(a.allocated_bytes(), MIB);
    free(&a, span);
    assert_eq!(a.allocated_bytes(), SLAB);
    let huge = alloc(&a, 3 * MIB);
    let s = a.stats();
    assert_eq!(a.allocated_bytes() as u64, s.bytes_held);
    assert!(a.allocated_bytes() >= SLAB + 3 * MIB);
    assert!(s.bytes_in_use <= s.bytes_held);
    assert!(s.bytes_in_use >= (3 * MIB + 320) as u64);
    free(&a, huge);
    assert_eq!(a.allocated_bytes(), SLAB);
    free(&a, small);
    // The block waits in this thread's cache, its slab still in use ...
    assert_eq!(a.allocated_bytes(), SLAB);
    a.flush_thread_cache();
    // ... until the cache gives it back.
    assert_eq!(a.allocated_bytes(), 0);
}

#[test]
fn set_memory_limit_counts_slabs_in_use_then_holds() {
    let _g = serial();
    let a = SmallMidArena::new();
    a.reserve(1).unwrap(); // grows past the seed: maybe a spare
    a.flush_thread_cache(); // a recycled arena's cache may keep a slab warm
    let spans: Vec<_> = (0..4).map(|_| alloc(&a, SPAN)).collect();
    assert_eq!(a.stats().superslabs, 4);
    assert_eq!(a.allocated_bytes(), 4 * SPAN);
    for s in spans {
        free(&a, s);
    }
    // Free slabs (and a spare SuperSlab) are not in use.
    assert_eq!(a.allocated_bytes(), 0);
    a.set_memory_limit(MIB).unwrap();
    assert_eq!(a.memory_limit(), MIB);
    // The home SuperSlab's slabs fit one span, not two; then every kind of
    // allocation fails, and the limit holds.
    let span = alloc(&a, SPAN);
    assert!(a
        .allocate(Layout::from_size_align(SPAN, 8).unwrap())
        .is_err());
    free(&a, span);
    assert!(a
        .allocate(Layout::from_size_align(2 * MIB, 8).unwrap())
        .is_err());
    let mut small = Vec::new();
    while let Ok(p) = a.allocate(Layout::from_size_align(1024, 8).unwrap()) {
        small.push(p.cast::<u8>());
        assert!(
            small.len() < 2000,
            "1 MiB cannot hold this many 1 KiB blocks"
        );
    }
    assert!(!small.is_empty());
    assert!(a.stats().bytes_held <= MIB as u64);
    let l = Layout::from_size_align(1024, 8).unwrap();
    for p in small {
        // SAFETY: allocated above with `l`.
        unsafe { a.deallocate(p, l) };
    }
    a.set_memory_limit(usize::MAX).unwrap();
    assert_eq!(a.memory_limit(), usize::MAX);
    free(&a, alloc(&a, 4 * MIB));
}

#[test]
fn set_memory_limit_refuses_what_live_memory_passes() {
    let _g = serial();
    let a = SmallMidArena::builder().memory_limit(8 * MIB).build();
    let live: Vec<_> = (0..3).map(|_| alloc(&a, SPAN)).collect();
    assert_eq!(a.allocated_bytes(), 3 * SPAN);
    assert!(a.set_memory_limit(2 * MIB).is_err());
    assert_eq!(a.memory_limit(), 8 * MIB, "the old limit stays");
    assert!(a.set_memory_limit(3 * SPAN - 1).is_err());
    assert!(a.set_memory_limit(SLAB - 1).is_err());
    assert!(a.set_memory_limit(0).is_err());
    assert_eq!(a.memory_limit(), 8 * MIB);
    // Exactly what it uses is fine; then nothing more fits, not even a
    // small block (it needs a slab).
    a.set_memory_limit(3 * SPAN).unwrap();
    assert!(a
        .allocate(Layout::from_size_align(SPAN, 8).unwrap())
        .is_err());
    assert!(a.allocate(Layout::new::<u64>()).is_err());
    assert_eq!(a.stats().bytes_held, 3 * SPAN as u64);
    for s in live {
        free(&a, s);
    }
    // Raising it lets the arena grow again, up to the new limit.
    a.set_memory_limit(5 * MIB).unwrap();
    let more: Vec<_> = (0..5).map(|_| alloc(&a, SPAN)).collect();
    assert!(a
        .allocate(Layout::from_size_align(SPAN, 8).unwrap())
        .is_err());
    assert!(a.stats().bytes_held <= 5 * MIB as u64);
    for s in more {
        free(&a, s);
    }
}

#[test]
fn contains_own_blocks_only() {
    let _g = serial();
    let a = SmallMidArena::new();
    let other = SmallMidArena::new();
    let small = alloc(&a, 300);
    let span = alloc(&a, 200 << 10);
    let huge = alloc(&a, 3 * MIB);
    for (p, l) in [small, span, huge] {
        let p = p.as_ptr() as *const u8;
        assert!(a.contains(p));
        assert!(a.contains(p.wrapping_add(l.size() - 1)), "last byte");
        assert!(!other.contains(p));
    }
    // Past the huge block's last page, and below its header: not a block.
    let h = huge.0.as_ptr() as *const u8;
    assert!(!a.contains(h.wrapping_add(3 * MIB)));
    assert!(!a.contains(h.wrapping_sub(1)));
    let theirs = alloc(&other, 300);
    assert!(!a.contains(theirs.0.as_ptr()));
    assert!(other.contains(theirs.0.as_ptr()));
    let boxed = Box::new([0u8; 300]);
    assert!(!a.contains(boxed.as_ptr()));
    let big = vec![0u8; 4 * MIB];
    assert!(!a.contains(big.as_ptr()));
    let local = 0u64;
    assert!(!a.contains(&local as *const u64 as *const u8));
    assert!(!a.contains(std::ptr::null()));
    assert!(!a.contains(usize::MAX as *const u8));
    // The header area of the arena's own SuperSlab is not a block region.
    let base = (small.0.as_ptr() as usize) & !(MIB - 1);
    assert!(!a.contains(base as *const u8));
    // Freed huge blocks are gone from the arena.
    free(&a, huge);
    assert!(!a.contains(h));
    free(&a, small);
    free(&a, span);
    free(&other, theirs);
}

#[test]
fn reserve_takes_the_system_calls_up_front() {
    let _g = serial();
    let a = SmallMidArena::new();
    a.reserve(8 * MIB - 1).unwrap(); // grows past the seed: maybe a spare
    a.flush_thread_cache(); // a recycled arena's cache may keep a slab warm
    assert_eq!(a.stats().superslabs, 8);
    assert_eq!(a.allocated_bytes(), 0, "reserved, not used");
    a.reserve(2 * MIB).unwrap(); // already held
    a.reserve(0).unwrap();
    assert_eq!(a.stats().superslabs, 8);
    let mmaps = smallmid::global_stats().mmaps;
    // A span in each of 7 SuperSlabs, small blocks in the rest.
    let spans: Vec<_> = (0..7).map(|_| alloc(&a, SPAN)).collect();
    let small: Vec<_> = (0..1000).map(|i| alloc(&a, 256 + i % 700)).collect();
    assert_eq!(smallmid::global_stats().mmaps, mmaps, "no new mapping");
    assert_eq!(a.stats().superslabs, 8, "no growth");
    for b in spans.into_iter().chain(small) {
        free(&a, b);
    }
    assert!(a.reserve(usize::MAX).is_err());
    assert!(a.reserve(smallmid::MAX_RESERVE + 1).is_err());
    assert_eq!(a.stats().superslabs, 8, "nothing reserved on refusal");
}

#[test]
fn reserve_stays_within_the_limit() {
    let _g = serial();
    let a = SmallMidArena::builder().memory_limit(4 * MIB).build();
    assert!(a.reserve(5 * MIB).is_err());
    assert_eq!(a.stats().superslabs, 1, "nothing reserved on refusal");
    a.reserve(4 * MIB).unwrap();
    assert_eq!(a.stats().superslabs, 4);
    assert_eq!(a.allocated_bytes(), 0);
    let spans: Vec<_> = (0..4).map(|_| alloc(&a, SPAN)).collect();
    assert!(a
        .allocate(Layout::from_size_align(SPAN, 8).unwrap())
        .is_err());
    for s in spans {
        free(&a, s);
    }
    // A lower limit is fine once the blocks are back (the reserve is not
    // memory in use), and a huge block fits beside the reserve.
    a.set_memory_limit(2 * MIB).unwrap();
    assert_eq!(a.allocated_bytes(), 0);
    a.set_memory_limit(4 * MIB).unwrap();
    a.reserve(4 * MIB).unwrap();
    let huge = alloc(&a, 2 * MIB);
    assert!(a.allocated_bytes() <= 4 * MIB);
    free(&a, huge);
}
