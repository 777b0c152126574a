//! `allocated_bytes`, `set_memory_limit`, `contains` and `reserve`.

use allocator_api2::alloc::{Allocator, Layout};
use smallmid::SmallMidArena;
use std::ptr::NonNull;
use std::sync::Mutex;

const MIB: usize = 1 << 20;
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
fn allocated_bytes_is_what_the_arena_holds() {
    let _g = serial();
    let a = SmallMidArena::new();
    assert_eq!(a.allocated_bytes(), MIB);
    let small = alloc(&a, 300);
    assert_eq!(a.allocated_bytes(), MIB);
    let span = alloc(&a, SPAN); // slabs 1..=15 of the home SuperSlab
    assert_eq!(a.allocated_bytes(), MIB);
    free(&a, span);
    let huge = alloc(&a, 3 * MIB);
    let s = a.stats();
    assert_eq!(a.allocated_bytes() as u64, s.bytes_held);
    assert!(a.allocated_bytes() >= MIB + 3 * MIB);
    assert!(s.bytes_in_use <= s.bytes_held);
    assert!(s.bytes_in_use >= (3 * MIB + 320) as u64);
    free(&a, huge);
    assert_eq!(a.allocated_bytes(), MIB);
    free(&a, small);
    assert_eq!(a.allocated_bytes(), MIB);
}
