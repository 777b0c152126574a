//! Under AddressSanitizer with `--cfg smallmid_asan` (see `.ci/run`), arena
//! memory not lent out is poisoned: a use after free, or after the arena's
//! drop, is reported. Each case runs in a child process, which ASan aborts.
#![cfg(smallmid_asan)]

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::SmallMidArena;
use std::process::Command;

/// Runs this test binary's `name` in a child with the misuse enabled and
/// returns its stderr, asserting that it failed.
fn child_fails(name: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env("SMALLMID_ASAN_CHILD", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the misuse went unnoticed:\n{err}");
    err
}

fn in_child() -> bool {
    std::env::var_os("SMALLMID_ASAN_CHILD").is_some()
}

#[test]
fn use_after_free_is_reported() {
    if in_child() {
        let arena = SmallMidArena::new();
        let l = Layout::from_size_align(64, 8).unwrap();
        let p = arena.allocate(l).unwrap().cast::<u8>();
        // SAFETY: none: reading a freed block is the misuse under test.
        unsafe {
            arena.deallocate(p, l);
            core::ptr::read_volatile(p.as_ptr().add(32));
        }
        return;
    }
    let err = child_fails("use_after_free_is_reported");
    assert!(err.contains("use-after-poison"), "{err}");
}

#[test]
fn use_after_arena_drop_is_reported() {
    if in_child() {
        let arena = SmallMidArena::new();
        let l = Layout::from_size_align(4000, 8).unwrap();
        let p = arena.allocate(l).unwrap().cast::<u8>();
        // Dropped on another thread: not recycled, its SuperSlabs go warm.
        std::thread::spawn(move || drop(arena)).join().unwrap();
        // SAFETY: none: the arena is gone; this is the misuse under test.
        unsafe { core::ptr::read_volatile(p.as_ptr().add(100)) };
        return;
    }
    let err = child_fails("use_after_arena_drop_is_reported");
    assert!(err.contains("use-after-poison"), "{err}");
}

#[test]
fn overflow_into_uncarved_memory_is_reported() {
    if in_child() {
        let arena = SmallMidArena::new();
        let l = Layout::from_size_align(256, 8).unwrap();
        let p = arena.allocate(l).unwrap().cast::<u8>();
        // SAFETY: none: writing past the block is the misuse under test.
        unsafe { core::ptr::write_volatile(p.as_ptr().add(300), 1) };
        return;
    }
    let err = child_fails("overflow_into_uncarved_memory_is_reported");
    assert!(err.contains("use-after-poison"), "{err}");
}
