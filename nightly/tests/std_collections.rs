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

#[test]
fn hashbrown_and_std_collections_in_one_build() {
    let arena = smallmid::SmallMidArena::new();
    let mut m = hashbrown::HashMap::new_in(&arena); // allocator-api2 0.2's trait
    m.insert(1u32, "one");
    let mut v: Vec<u32, &smallmid::SmallMidArena> = Vec::new_in(&arena); // core's trait
    v.extend(m.keys().copied());
    assert_eq!((m[&1], v.as_slice()), ("one", &[1][..]));
    let shared = smallmid::SharedArena::new();
    let mut w: Vec<u8, smallmid::SharedArena> = Vec::new_in(shared.clone());
    w.push(7);
    let t = std::thread::spawn(move || w[0]);
    assert_eq!(t.join().unwrap(), 7);
    assert_eq!(shared.stats().blocks_in_use, 0);
}
