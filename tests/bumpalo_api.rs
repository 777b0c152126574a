//! bumpalo-style methods, the arena `String`, `format_in!` and
//! `arena_box_dyn!`: results, and no block lost on errors or panics.

use smallmid::{arena_box_dyn, format_in, ArenaBox, SmallMidArena};
use std::fmt::{Debug, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

#[test]
fn slice_fills() {
    let arena = SmallMidArena::new();
    let a = arena.alloc_slice_fill_iter(vec![String::from("x"); 3]);
    let b = arena.alloc_slice_fill_copy(1000, 9u32);
    let c = arena.alloc_slice_fill_clone(2, &vec![1u8, 2]);
    let d = arena.alloc_slice_fill_default::<Option<u64>>(5);
    assert_eq!(a.concat(), "xxx");
    assert!(b.len() == 1000 && b.iter().all(|&x| x == 9));
    assert_eq!(&*c, &[vec![1, 2], vec![1, 2]]);
    assert!(d.iter().all(Option::is_none));
    assert_eq!(arena.stats().blocks_in_use, 4);
    drop((a, b, c, d));
    assert_eq!(arena.stats().blocks_in_use, 0);
}

#[test]
fn try_forms_fail_cleanly() {
    let arena = SmallMidArena::builder().memory_limit(1 << 20).build();
    assert!(arena
        .try_alloc_slice_fill_copy(usize::MAX / 2, 0u16)
        .is_err()); // overflow
    assert!(arena.try_alloc_slice_fill_default::<u64>(1 << 20).is_err()); // 8 MiB > limit
    assert!(arena.try_alloc_slice_copy(&vec![0u8; 2 << 20]).is_err());
    assert!(arena.try_alloc_str(&"y".repeat(2 << 20)).is_err());
    assert_eq!(arena.stats().blocks_in_use, 0);
    assert_eq!(&*arena.try_alloc_str("ok").unwrap(), "ok");
}

#[test]
fn alloc_try_with_frees_on_error() {
    let arena = SmallMidArena::new();
    let e = arena.alloc_try_with(|| Err::<[u8; 500], _>("no"));
    assert_eq!(e.unwrap_err(), "no");
    assert_eq!(arena.stats().blocks_in_use, 0);
    assert_eq!(
        arena.alloc_try_with(|| Ok::<_, ()>(3)).unwrap().to_string(),
        "3"
    );
}

#[test]
fn short_iterator_panics_and_frees() {
    struct Liar(u32);
    impl Iterator for Liar {
        type Item = String;
        fn next(&mut self) -> Option<String> {
            self.0 = self.0.checked_sub(1)?;
            Some(self.0.to_string())
        }
    }
    impl ExactSizeIterator for Liar {
        fn len(&self) -> usize {
            10 // claims more than it has
        }
    }
    let arena = SmallMidArena::new();
    let r = catch_unwind(AssertUnwindSafe(|| arena.alloc_slice_fill_iter(Liar(3))));
    assert!(r.is_err());
    assert_eq!(arena.stats().blocks_in_use, 0);
}

#[test]
fn string_and_format_in() {
    let arena = SmallMidArena::new();
    let mut s = smallmid::String::new_in(&arena);
    for i in 0..1000 {
        write!(s, "{i},").unwrap();
    }
    s.push('é');
    assert!(s.starts_with("0,1,2,") && s.ends_with("999,é"));
    assert_eq!(arena.stats().blocks_in_use, 1);
    let t = format_in!(&arena, "{:>5}|{:?}", 42, "q");
    assert_eq!(t, "   42|\"q\"");
    assert_eq!(format!("{t:?}"), r#""   42|\"q\"""#);
    drop((s, t));
    assert_eq!(arena.stats().blocks_in_use, 0);

    let small = SmallMidArena::builder().memory_limit(1 << 20).build();
    let mut s = smallmid::String::new_in(&small);
    assert!(write!(s, "{}", "z".repeat(2 << 20)).is_err());
}

#[test]
fn dyn_boxes_drop_their_values() {
    use std::rc::Rc;
    let arena = SmallMidArena::new();
    let rc = Rc::new(());
    let d: ArenaBox<'_, dyn Debug> = arena_box_dyn!(arena.alloc(rc.clone()), dyn Debug);
    let big: ArenaBox<'_, dyn Debug> = arena_box_dyn!(arena.alloc([7u8; 40_000]), dyn Debug);
    assert_eq!(Rc::strong_count(&rc), 2);
    assert_eq!(format!("{d:?}"), "()");
    assert_eq!(arena.stats().blocks_in_use, 2);
    drop((d, big));
    assert_eq!(Rc::strong_count(&rc), 1);
    assert_eq!(arena.stats().blocks_in_use, 0);
}

#[test]
fn unsize_refuses_a_projection() {
    // What the macro cannot write, the hidden helper rejects at run time:
    // the first field has the same address but not the same layout.
    let arena = SmallMidArena::new();
    let b = arena.alloc((String::from("a"), 5u64));
    let r = catch_unwind(AssertUnwindSafe(|| {
        ArenaBox::__unsize::<String>(b, |p| &mut p.0)
    }));
    assert!(r.is_err());
    assert_eq!(
        arena.stats().blocks_in_use,
        0,
        "the value was dropped, the block freed"
    );
}
