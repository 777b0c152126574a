//! allocator-api2 0.4's `Allocator` (feature `allocator-api2-04`).
#![cfg(feature = "allocator-api2-04")]

use smallmid::allocator_api2_04::{boxed::Box, vec::Vec};
use smallmid::SmallMidArena;

#[test]
fn vec_04_grows_and_frees_in_the_arena() {
    let arena = SmallMidArena::new();
    let mut v: Vec<u64, _> = Vec::new_in(&arena);
    for i in 0..10_000u64 {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u64>(), 10_000 * 9_999 / 2);
    assert_eq!(arena.stats().blocks_in_use, 1, "one buffer, in the arena");
    v.truncate(3);
    v.shrink_to_fit();
    assert_eq!(v, [0, 1, 2]);
    drop(v);
    assert_eq!(arena.stats().blocks_in_use, 0);
}

#[test]
fn box_04_and_02_share_one_arena() {
    let arena = SmallMidArena::new();
    let a = Box::new_in([1u8; 300], &arena);
    let b = smallmid::allocator_api2::boxed::Box::new_in([2u8; 300], &arena);
    assert_eq!(arena.stats().blocks_in_use, 2);
    assert_eq!((a[0], b[299]), (1, 2));
    drop((a, b));
    assert_eq!(arena.stats().blocks_in_use, 0);
}

#[test]
fn limit_is_an_error_in_04_too() {
    let arena = SmallMidArena::builder().memory_limit(2 << 20).build();
    let mut v: Vec<u8, _> = Vec::new_in(&arena);
    assert!(v.try_reserve(64 << 20).is_err());
    v.try_reserve(1000).unwrap();
}
