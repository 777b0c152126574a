//! The OS refusing memory: `AllocError`, nothing leaked, the arena usable.
//! Its own binary: the failure hook is process-wide.

use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use smallmid::test_hooks::fail_next_maps;
use smallmid::{global_stats, trim_warm_cache, SmallMidArena};

#[test]
fn refused_mappings_are_alloc_errors() {
    trim_warm_cache(); // so the next SuperSlab must be mapped
    fail_next_maps(1);
    assert!(
        SmallMidArena::try_new().is_err(),
        "arena creation must report the refusal"
    );
    let before = global_stats();

    let arena = SmallMidArena::new();
    let l = Layout::from_size_align(4000, 8).unwrap();
    let mut blocks = Vec::new();
    // Fill the home SuperSlab, then make the next mapping fail.
    while arena.stats().superslabs == 1 {
        blocks.push(arena.allocate(l).unwrap());
    }
    trim_warm_cache();
    fail_next_maps(u64::MAX);
    let mut refused = 0;
    for _ in 0..2000 {
        match arena.allocate(l) {
            Ok(b) => blocks.push(b),
            Err(AllocError) => refused += 1,
        }
    }
    assert!(refused > 0, "no allocation needed a new mapping");
    let huge = Layout::from_size_align(4 << 20, 4096).unwrap();
    assert_eq!(arena.allocate(huge), Err(AllocError));
    fail_next_maps(0);

    // Everything still works and balances.
    let b = arena.allocate(huge).expect("the OS is back");
    // SAFETY: allocated just above with `huge`.
    unsafe { arena.deallocate(b.cast(), huge) };
    for b in blocks {
        // SAFETY: allocated above with `l`.
        unsafe { arena.deallocate(b.cast(), l) };
    }
    let s = arena.stats();
    assert_eq!((s.blocks_in_use, s.bytes_in_use), (0, 0), "{s}");
    drop(arena);
    let after = global_stats();
    assert_eq!(after.arenas_alive, 0);
    // Every mapping left is a region or a freed huge block's kept mapping
    // (no huge block is live), and every SuperSlab of the regions is in
    // use, warm or decommitted.
    assert_eq!(
        after.mmaps - after.munmaps,
        (after.regions + after.huge_cached) as u64,
        "{before} -> {after}"
    );
    assert_eq!(
        after.reserved_bytes,
        (after.warm_superslabs + after.superslabs_in_use + after.decommitted_superslabs) << 20,
        "{before} -> {after}"
    );
}
