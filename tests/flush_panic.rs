//! A block freed with another class's layout is caught when its cache's
//! list is flushed; the panic must leave no block both back in its slab and
//! still in the cache (which would hand it out twice).

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::SmallMidArena;
use std::panic::{catch_unwind, AssertUnwindSafe};

#[test]
fn a_flush_that_panics_on_a_misused_block_hands_nothing_out_twice() {
    // Class slabs (2 KiB blocks: past the mixed range's 1 KiB), whose
    // flush checks each block's class; a cache holds 16 of them.
    let arena = SmallMidArena::new();
    let l = Layout::from_size_align(2048, 8).unwrap();
    let big = Layout::from_size_align(4096, 8).unwrap();
    let blocks: Vec<NonNull<u8>> = (0..16).map(|_| arena.allocate(l).unwrap().cast()).collect();
    let x = arena.allocate(big).unwrap().cast::<u8>();
    let r = catch_unwind(AssertUnwindSafe(|| {
        for (i, &b) in blocks.iter().enumerate() {
            if i == 10 {
                // SAFETY: deliberately wrong layout (misuse the arena catches).
                unsafe { arena.deallocate(x, l) };
            }
            // SAFETY: allocated above with `l`, freed once.
            unsafe { arena.deallocate(b, l) };
        }
    }));
    assert!(r.is_err(), "the misused block was not caught");
    // Every block handed out from now on is distinct and stays intact.
    let mut live: Vec<(usize, u8)> = Vec::new();
    for i in 0..200u32 {
        let p = arena.allocate(l).unwrap().cast::<u8>();
        let fill = (i % 251) as u8;
        // SAFETY: a fresh block of 2048 bytes.
        unsafe { p.as_ptr().write_bytes(fill, l.size()) };
        live.push((p.as_ptr() as usize, fill));
    }
    let mut addrs: Vec<usize> = live.iter().map(|&(a, _)| a).collect();
    addrs.sort_unstable();
    for w in addrs.windows(2) {
        assert!(
            w[0] + l.size() <= w[1],
            "blocks {:#x} and {:#x} overlap",
            w[0],
            w[1]
        );
    }
    for &(a, fill) in &live {
        // SAFETY: live blocks of 2048 bytes.
        let s = unsafe { core::slice::from_raw_parts(a as *const u8, l.size()) };
        assert!(s.iter().all(|&v| v == fill), "block {a:#x} was overwritten");
    }
    for (a, _) in live {
        // SAFETY: allocated above with `l`, freed once.
        unsafe { arena.deallocate(NonNull::new(a as *mut u8).unwrap(), l) };
    }
}
