//! Fitting into the ecosystem: unwind safety, cheap `Debug`, the
//! process-wide warm cache setting.

use smallmid::SmallMidArena;
use std::panic::{catch_unwind, RefUnwindSafe, UnwindSafe};

#[test]
fn catch_unwind_takes_the_arena() {
    fn unwind_safe<T: UnwindSafe + RefUnwindSafe>() {}
    unwind_safe::<SmallMidArena>();
    unwind_safe::<&SmallMidArena>();
    let arena = SmallMidArena::new();
    let r = catch_unwind(|| *arena.alloc(1u8));
    assert_eq!(r.unwrap(), 1);
    let r = catch_unwind(|| {
        let _b = arena.alloc(String::from("dropped while unwinding"));
        panic!("boom");
    });
    assert!(r.is_err());
    // The arena is consistent after the unwind: the block came back.
    assert_eq!(arena.stats().blocks_in_use, 0);
    let owned = SmallMidArena::new();
    let r = catch_unwind(move || owned.alloc(2u32).to_string());
    assert_eq!(r.unwrap(), "2");
}

#[test]
fn debug_is_cheap_and_short() {
    let arena = SmallMidArena::builder().memory_limit(8 << 20).build();
    let _b = arena.alloc([0u8; 100]);
    let s = format!("{arena:?}");
    assert!(s.starts_with("SmallMidArena { state: 0x"), "{s}");
    assert!(s.ends_with("memory_limit: 8388608 }"), "{s}");
    assert!(!s.contains("stats"), "{s}");
}

#[test]
fn set_warm_cache_limit_is_process_wide() {
    smallmid::set_warm_cache_limit(3 << 20);
    assert_eq!(smallmid::global_stats().warm_limit_bytes, 3 << 20);
    smallmid::set_warm_cache_limit(1 << 30);
    assert_eq!(smallmid::global_stats().warm_limit_bytes, 1 << 30);
}
