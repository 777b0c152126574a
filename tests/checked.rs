//! Misuse detection with the `checked` feature:
//! `cargo test --features checked --test checked`.
#![cfg(feature = "checked")]

use allocator_api2::alloc::{Allocator, Global};
use core::alloc::Layout;
use smallmid::SmallMidArena;

const L: Layout = match Layout::from_size_align(100, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};

#[test]
#[should_panic(expected = "did not hand out or already took back: a double free")]
fn double_free() {
    let arena = SmallMidArena::new();
    let b = arena.allocate(L).unwrap().cast();
    // SAFETY: allocated above; the second free is the misuse under test.
    unsafe {
        arena.deallocate(b, L);
        arena.deallocate(b, L);
    }
}

#[test]
#[should_panic(expected = "a pointer from another arena or allocator")]
fn pointer_from_the_global_allocator() {
    let arena = SmallMidArena::new();
    let b = Global.allocate(L).unwrap().cast();
    // SAFETY: none: the misuse under test, caught before the engine sees it.
    unsafe { arena.deallocate(b, L) };
}

#[test]
#[should_panic(expected = "did not hand out")]
fn pointer_from_another_arena() {
    let (a, b) = (SmallMidArena::new(), SmallMidArena::new());
    let p = a.allocate(L).unwrap().cast();
    // SAFETY: none: the misuse under test.
    unsafe { b.deallocate(p, L) };
}

#[test]
#[should_panic(expected = "the layout must have the same alignment")]
fn layout_of_another_size_class() {
    let arena = SmallMidArena::new();
    let b = arena.allocate(L).unwrap().cast();
    // SAFETY: none: freeing with a layout of another class is the misuse.
    unsafe { arena.deallocate(b, Layout::from_size_align(300, 8).unwrap()) };
}

#[test]
fn fitting_layouts_and_reallocs_pass() {
    let arena = SmallMidArena::new();
    let b = arena.allocate(L).unwrap();
    let len = b.len();
    let bigger = Layout::from_size_align(len, 8).unwrap();
    // SAFETY: each step uses the previous block and layout; a size between
    // the request and the returned length fits.
    unsafe {
        let g = arena.grow(b.cast(), L, bigger).unwrap(); // same class: in place
        let m = arena
            .grow(g.cast(), bigger, Layout::from_size_align(5000, 8).unwrap())
            .unwrap();
        arena.deallocate(m.cast(), Layout::from_size_align(5000, 8).unwrap());
    }
    let mut v = allocator_api2::vec::Vec::new_in(&arena);
    v.extend(0..10_000u32);
    let boxed = arena.alloc_slice_copy(&v);
    assert_eq!(boxed.len(), 10_000);
}
