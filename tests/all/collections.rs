//! allocator-api2 collections and hashbrown in an arena, against std.

use crate::Rng;
use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;
use smallmid::SmallMidArena;
use std::collections::HashMap as StdMap;

#[test]
fn vec_matches_std() {
    let arena = SmallMidArena::new();
    let mut rng = Rng::new(7);
    let mut ours: AVec<u64, _> = AVec::new_in(&arena);
    let mut std = Vec::new();
    for _ in 0..crate::scaled(100_000) {
        match rng.range(0, 9) {
            0..=6 => {
                let x = rng.next_u64();
                ours.push(x);
                std.push(x);
            }
            7 => {
                assert_eq!(ours.pop(), std.pop());
            }
            8 => {
                ours.shrink_to_fit();
                std.shrink_to_fit();
            }
            _ => {
                let n = rng.range(0, 1000);
                ours.reserve(n);
                std.reserve(n);
            }
        }
    }
    assert_eq!(&ours[..], &std[..]);
}

#[test]
fn boxes_and_strings() {
    let arena = SmallMidArena::new();
    let boxes: std::vec::Vec<_> = (0..1000u32)
        .map(|i| ABox::new_in([i; 33], &arena))
        .collect();
    for (i, b) in boxes.iter().enumerate() {
        assert!(b.iter().all(|&x| x == i as u32));
    }
    let mut s = AVec::new_in(&arena);
    for i in 0..10_000 {
        s.extend_from_slice(format!("{i},").as_bytes());
    }
    assert!(s.starts_with(b"0,1,2,"));
}

#[test]
fn hashbrown_matches_std() {
    let arena = SmallMidArena::new();
    let mut rng = Rng::new(11);
    let mut ours: hashbrown::HashMap<u32, AVec<u32, &SmallMidArena>, _, _> =
        hashbrown::HashMap::new_in(&arena);
    let mut std: StdMap<u32, Vec<u32>> = StdMap::new();
    for _ in 0..crate::scaled(50_000) {
        let k = rng.range(0, 5000) as u32;
        if rng.range(0, 3) == 0 {
            assert_eq!(ours.remove(&k).map(|v| v.to_vec()), std.remove(&k));
        } else {
            let mut v = AVec::new_in(&arena);
            v.extend(0..rng.range(0, 40) as u32);
            let sv: Vec<u32> = v.to_vec();
            assert_eq!(ours.insert(k, v).map(|v| v.to_vec()), std.insert(k, sv));
        }
    }
    assert_eq!(ours.len(), std.len());
    for (k, v) in &std {
        assert_eq!(&ours[k][..], &v[..]);
    }
}

#[test]
fn arena_moves_while_blocks_live() {
    let arena = SmallMidArena::new();
    let p = {
        let b = ABox::new_in(42u64, &arena);
        ABox::into_raw(b)
    };
    let moved = std::sync::Arc::new(arena);
    let t = std::thread::spawn({
        let a = moved.clone();
        let p = p as usize;
        move || {
            // SAFETY: the block came from this arena and is freed once.
            let b = unsafe { ABox::from_raw_in(p as *mut u64, &*a) };
            assert_eq!(*b, 42);
        }
    });
    t.join().unwrap();
}
