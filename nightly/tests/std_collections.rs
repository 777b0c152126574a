//! The `nightly` feature: std's own collections take `&SmallMidArena`.
#![feature(allocator_api)]

#[test]
fn std_vec_and_box_in_an_arena() {
    let arena = smallmid::SmallMidArena::new();
    let mut v: Vec<u64, &smallmid::SmallMidArena> = Vec::new_in(&arena);
    for i in 0..10_000 {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u64>(), 10_000 * 9_999 / 2);
    let b = Box::new_in([7u8; 300], &arena);
    assert!(b.iter().all(|&x| x == 7));
    let mut s = String::new();
    s.push_str("fine");
    let mut w: Vec<String, &smallmid::SmallMidArena> = Vec::with_capacity_in(4, &arena);
    w.push(s);
    assert_eq!(w[0], "fine");
}

#[test]
fn arena_box_coerces_to_dyn_and_slices() {
    let arena = smallmid::SmallMidArena::new();
    let d: smallmid::ArenaBox<'_, dyn std::fmt::Display> = arena.alloc(5u32);
    assert_eq!(d.to_string(), "5");
    let s: smallmid::ArenaBox<'_, [u8]> = arena.alloc([1u8, 2, 3]);
    assert_eq!(s.len(), 3);
}
