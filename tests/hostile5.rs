//! Hostile review 5 of: in-place growth/shrink of the last block carved
//! from a cache's mixed range (3941243) and the memory limit counting
//! slabs in use instead of SuperSlabs (824dedd). Separate binary: own
//! thread indices and spares. Tests that read or change process-wide state
//! (spares, the huge cache, the warm cache) are serialized.

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::SmallMidArena;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

const SLAB: usize = 64 << 10;
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn l(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn on_fresh_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match std::thread::spawn(f).join() {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e),
    }
}

/// A tiny deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The alignment every block of a small class of block length `len` must
/// have (a class's blocks are aligned to the largest power of two dividing
/// its size: free lists hand them to any layout of the class).
fn class_align(len: usize) -> usize {
    let natural = len & len.wrapping_neg();
    // Classes up to 1 KiB promise at most 128 (mixed slabs carve them).
    if len <= 1024 {
        natural.min(128)
    } else {
        natural
    }
}

/// The arena's slab accounting agrees with its slabs: `allocated_bytes()`
/// (the pool's `used` count behind the limit) is exactly the slabs the
/// audit finds in use plus the huge mappings. No thread may be changing the
/// arena.
fn check_used(a: &SmallMidArena) {
    let au = a.audit();
    let st = a.stats();
    let slabs = au.class_slabs + au.mixed_slabs + au.span_slabs;
    assert_eq!(
        a.allocated_bytes() as u64,
        (slabs * SLAB) as u64 + st.huge_bytes,
        "pool's used count drifted from the slabs: {au:?}, huge {}",
        st.huge_bytes
    );
    assert_eq!(st.bytes_held, a.allocated_bytes() as u64);
    if a.memory_limit() != usize::MAX {
        assert!(a.allocated_bytes() <= a.memory_limit(), "over the limit");
    }
}

/// The block length the arena returns for a small layout (its class size).
fn class_len(lay: Layout) -> usize {
    thread_local!(static A: SmallMidArena = SmallMidArena::new());
    A.with(|a| {
        let p = a.allocate(lay).unwrap();
        // SAFETY: just allocated.
        unsafe { a.deallocate(p.cast(), lay) };
        p.len()
    })
}

/// Everything freed and flushed: no slab, block or mixed slab is left.
fn check_empty(a: &SmallMidArena) {
    a.flush_thread_cache();
    let au = a.audit();
    assert_eq!(
        (au.blocks_out, au.mixed_slabs, au.class_slabs, au.span_slabs),
        (0, 0, 0, 0),
        "something is still out after freeing everything: {au:?}"
    );
    assert_eq!(a.allocated_bytes(), 0, "slabs still counted in use");
    assert_eq!(a.stats().blocks_in_use, 0);
    check_used(a);
}

/// Live blocks with their fill bytes: overlap and content checks.
#[derive(Default)]
struct Shadow {
    live: BTreeMap<usize, (usize, u8, Layout)>,
}

impl Shadow {
    fn add(&mut self, p: NonNull<[u8]>, layout: Layout, fill: u8) {
        let a = p.cast::<u8>().as_ptr() as usize;
        assert!(p.len() >= layout.size());
        // The whole returned length is the caller's (Allocator contract):
        // under ASan, a length the engine did not unpoison is reported.
        let size = p.len();
        assert_eq!(a % layout.align(), 0, "block misaligned for its layout");
        if p.len() <= 32 << 10 {
            assert_eq!(
                a % class_align(p.len()),
                0,
                "block {a:#x} of class {} is not aligned to its class ({})",
                p.len(),
                class_align(p.len())
            );
        }
        if let Some((&s, &(n, _, _))) = self.live.range(..a + size.max(1)).next_back() {
            assert!(
                s + n <= a,
                "block [{a:#x},+{size}) handed out over live block [{s:#x},+{n})"
            );
        }
        if let Some((&s, _)) = self.live.range(a..).next() {
            assert!(
                a + size <= s,
                "block [{a:#x},+{size}) runs into live block {s:#x}"
            );
        }
        // SAFETY: a live block `p.len()` long.
        unsafe { p.cast::<u8>().as_ptr().write_bytes(fill, size) };
        self.live.insert(a, (size, fill, layout));
    }
    fn remove(&mut self, a: usize) -> (usize, u8, Layout) {
        self.live.remove(&a).expect("live")
    }
    fn check(&self) {
        for (&a, &(n, fill, _)) in &self.live {
            // SAFETY: live blocks of at least `n` bytes.
            let s = unsafe { core::slice::from_raw_parts(a as *const u8, n) };
            if let Some(i) = s.iter().position(|&b| b != fill) {
                panic!(
                    "live block [{a:#x},+{n}) was overwritten at +{i}: {:#x} instead of {fill:#x}",
                    s[i]
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 3941243: tail blocks of a mixed range grown and shrunk in place
// ---------------------------------------------------------------------------

/// A random mix of allocations, grows and shrinks (mostly of the newest
/// block, so many happen in place at the carve point), alignment changes
/// included, and frees. Every block must be aligned to its class, never
/// overlap a live one, keep its contents; `blocks_in_use` must follow;
/// afterwards the mixed slabs must all come back (byte and block counts).
#[test]
fn tail_resize_fuzz_keeps_mixed_accounting() {
    for seed in 1..=24u64 {
        let a = SmallMidArena::new();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut sh = Shadow::default();
        let mut newest: Option<usize> = None;
        let mut in_place = 0;
        let aligns = [1usize, 2, 4, 8, 16, 32, 64, 128];
        for step in 0..3000 {
            let fill = (step % 251) as u8 + 1;
            match rng.below(10) {
                0..=3 => {
                    let lay = l(1 + rng.below(1100), aligns[rng.below(aligns.len())]);
                    let p = a.allocate(lay).unwrap();
                    sh.add(p, lay, fill);
                    newest = Some(p.cast::<u8>().as_ptr() as usize);
                }
                4..=7 if !sh.live.is_empty() => {
                    let at = match newest {
                        Some(n) if rng.below(4) != 0 && sh.live.contains_key(&n) => n,
                        _ => *sh.live.keys().nth(rng.below(sh.live.len())).unwrap(),
                    };
                    let (size, old_fill, old) = sh.remove(at);
                    let new = l(1 + rng.below(1100), aligns[rng.below(aligns.len())]);
                    let p = NonNull::new(at as *mut u8).unwrap();
                    // SAFETY: live with layout `old`.
                    let r = unsafe {
                        if new.size() >= old.size() {
                            a.grow(p, old, new)
                        } else {
                            a.shrink(p, old, new)
                        }
                    }
                    .unwrap();
                    let q = r.cast::<u8>().as_ptr();
                    in_place += (q as usize == at && r.len() != class_len(old)) as usize;
                    let keep = size.min(old.size()).min(new.size());
                    // SAFETY: at least `keep` bytes kept.
                    let s = unsafe { core::slice::from_raw_parts(q, keep) };
                    assert!(
                        s.iter().all(|&b| b == old_fill),
                        "seed {seed} step {step}: contents lost by resize {old:?} -> {new:?}"
                    );
                    sh.add(r, new, fill);
                    newest = Some(q as usize);
                }
                _ if !sh.live.is_empty() => {
                    let at = *sh.live.keys().nth(rng.below(sh.live.len())).unwrap();
                    let (_, _, lay) = sh.remove(at);
                    // SAFETY: live with `lay`.
                    unsafe { a.deallocate(NonNull::new(at as *mut u8).unwrap(), lay) };
                }
                _ => {}
            }
            if step % 97 == 0 {
                sh.check();
                assert_eq!(
                    a.stats().blocks_in_use as usize,
                    sh.live.len(),
                    "seed {seed} step {step}: blocks_in_use"
                );
            }
            if step % 500 == 499 {
                a.flush_thread_cache();
                check_used(&a);
            }
        }
        sh.check();
        assert!(
            in_place > 20,
            "seed {seed}: only {in_place} class-changing resizes in place"
        );
        for (at, (_, _, lay)) in std::mem::take(&mut sh.live) {
            // SAFETY: live with `lay`.
            unsafe { a.deallocate(NonNull::new(at as *mut u8).unwrap(), lay) };
        }
        check_empty(&a);
    }
}

/// A `Vec` growing at the carve point grows in place; the range is then
/// returned (flush) while the grown block sits at its end, the rest is
/// parked, and another thread takes it: its blocks must not overlap the
/// grown block, and the slab must be released once both are freed.
#[test]
fn grown_tail_block_then_parked_rest_taken_by_another_thread() {
    let a = SmallMidArena::new();
    let first = a.allocate(l(8, 8)).unwrap();
    let b = a.allocate(l(40, 8)).unwrap().cast::<u8>();
    // SAFETY: live with l(40, 8); grows 40 -> 64 -> 128 -> 256 -> 512.
    let mut cur = (b, l(40, 8));
    for n in [64usize, 128, 256, 512, 1024] {
        // SAFETY: live with cur.1.
        let g = unsafe { a.grow(cur.0, cur.1, l(n, 8)) }.unwrap();
        cur = (g.cast(), l(n, 8));
    }
    // SAFETY: a live block of cur.1.
    unsafe { cur.0.as_ptr().write_bytes(0xAB, cur.1.size()) };
    a.flush_thread_cache(); // the rest after the grown block is parked
    let start = cur.0.as_ptr() as usize;
    let end = start + cur.1.size();
    let (got, n) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut v = Vec::new();
            for i in 0..200 {
                let p = a.allocate(l(8 + i % 120, 8)).unwrap();
                let q = p.cast::<u8>().as_ptr() as usize;
                assert!(
                    q + p.len() <= start || q >= end,
                    "another thread's block {q:#x} inside the grown block [{start:#x},{end:#x})"
                );
                // SAFETY: a live block.
                unsafe { p.cast::<u8>().as_ptr().write_bytes(0x11, p.len()) };
                v.push((q, l(8 + i % 120, 8)));
            }
            let n = v.len();
            for (q, lay) in v {
                // SAFETY: live with `lay`.
                unsafe { a.deallocate(NonNull::new(q as *mut u8).unwrap(), lay) };
            }
            a.flush_thread_cache();
            (true, n)
        })
        .join()
        .unwrap()
    });
    assert!(got && n == 200);
    // SAFETY: live, len cur.1.size().
    let s = unsafe { core::slice::from_raw_parts(cur.0.as_ptr(), cur.1.size()) };
    assert!(s.iter().all(|&x| x == 0xAB), "grown block overwritten");
    // Freed on another thread (cross-thread free of a grown block).
    let p = cur.0.as_ptr() as usize;
    let lay = cur.1;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: live with `lay`.
            unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
            a.flush_thread_cache();
        });
    });
    // SAFETY: live with l(8, 8).
    unsafe { a.deallocate(first.cast(), l(8, 8)) };
    check_empty(&a);
}

/// Grow at the tail, reset, and use the arena again: the reset's rewind
/// must free the grown block's bytes (blocks after the reset may reuse
/// them) and nothing may be counted twice or lost.
#[test]
fn grown_tail_then_reset_and_reuse() {
    let mut a = SmallMidArena::new();
    for round in 0..50 {
        let mut sh = Shadow::default();
        let x = a.allocate(l(24, 8)).unwrap();
        sh.add(x, l(24, 8), 1);
        let mut cur = (x.cast::<u8>(), l(24, 8));
        sh.remove(cur.0.as_ptr() as usize);
        for n in [32usize, 48, 100, 200, 700, 1024] {
            // SAFETY: live with cur.1.
            let g = unsafe { a.grow(cur.0, cur.1, l(n, 8)) }.unwrap();
            cur = (g.cast(), l(n, 8));
        }
        // SAFETY: live.
        unsafe { cur.0.as_ptr().write_bytes(2, 1024) };
        for i in 0..100 {
            let lay = l(8 + (i * 37 + round) % 900, 8);
            let p = a.allocate(lay).unwrap();
            sh.add(p, lay, 3 + (i % 200) as u8);
        }
        // SAFETY: live.
        assert!(unsafe { core::slice::from_raw_parts(cur.0.as_ptr(), 1024) }
            .iter()
            .all(|&b| b == 2));
        sh.check();
        if round % 2 == 0 {
            // SAFETY: live with cur.1.
            let s = unsafe { a.shrink(cur.0, cur.1, l(10, 2)) }.unwrap();
            sh.add(s, l(10, 2), 9);
        }
        sh.check();
        assert_eq!(
            a.stats().blocks_in_use as usize,
            sh.live.len() + (round % 2 == 1) as usize
        );
        drop(sh);
        a.reset();
        assert_eq!(a.stats().blocks_in_use, 0);
        check_used(&a);
    }
    a.reset();
    let au = a.audit();
    assert!(au.mixed_slabs <= 1, "{au:?}");
}

/// A shrink to a class that is smaller, then an allocation of a class
/// with a large alignment: the freed tail bytes come back to the range,
/// padding is skipped, and per-class counters stay right.
#[test]
fn shrink_then_allocate_aligned_keeps_counts() {
    let a = SmallMidArena::new();
    let keep = a.allocate(l(8, 8)).unwrap();
    let x = a.allocate(l(1000, 8)).unwrap(); // class 1024, align 1024
                                             // SAFETY: live with l(1000, 8).
    let s = unsafe { a.shrink(x.cast(), l(1000, 8), l(40, 2)) }.unwrap();
    assert_eq!(s.cast::<u8>(), x.cast::<u8>(), "tail shrink moved");
    assert_eq!(s.len(), 40);
    let y = a.allocate(l(1024, 128)).unwrap();
    assert_eq!(y.cast::<u8>().as_ptr() as usize % 128, 0);
    let z = a.allocate(l(56, 2)).unwrap(); // class 56, 8-aligned
    let st = a.stats();
    let by = |sz: u64| {
        st.classes
            .iter()
            .find(|c| c.size == sz)
            .copied()
            .unwrap_or_default()
    };
    assert_eq!(by(1024).blocks_in_use, 1, "{st:?}");
    assert_eq!(by(40).blocks_in_use, 1, "{st:?}");
    assert_eq!(by(56).blocks_in_use, 1, "{st:?}");
    assert_eq!(by(8).blocks_in_use, 1, "{st:?}");
    assert_eq!(st.blocks_in_use, 4);
    // SAFETY: live blocks with these layouts.
    unsafe {
        a.deallocate(z.cast(), l(56, 2));
        a.deallocate(y.cast(), l(1024, 128));
        a.deallocate(s.cast(), l(40, 2));
        a.deallocate(keep.cast(), l(8, 8));
    }
    check_empty(&a);
}

/// A "grow" to a layout with a smaller alignment may map to a smaller
/// class (33 B at 32-alignment is the 64 B class; 34 B at 8 is the 40 B
/// class): at the tail that shrinks the block in place to 40 bytes. The
/// freed bytes must return, and a free with the new layout must balance.
#[test]
fn grow_to_a_smaller_class_through_alignment() {
    let a = SmallMidArena::new();
    let keep = a.allocate(l(8, 8)).unwrap();
    let x = a.allocate(l(33, 32)).unwrap();
    assert_eq!(x.len(), 64);
    // SAFETY: live with l(33, 32).
    unsafe { x.cast::<u8>().as_ptr().write_bytes(7, 33) };
    // SAFETY: live with l(33, 32); new size >= old size.
    let g = unsafe { a.grow_zeroed(x.cast(), l(33, 32), l(34, 8)) }.unwrap();
    assert_eq!(g.len(), 40);
    // SAFETY: live.
    let s = unsafe { core::slice::from_raw_parts(g.cast::<u8>().as_ptr(), g.len()) };
    assert!(s[..33].iter().all(|&b| b == 7) && s[33..].iter().all(|&b| b == 0));
    let next = a.allocate(l(8, 1)).unwrap();
    let (gp, np) = (
        g.cast::<u8>().as_ptr() as usize,
        next.cast::<u8>().as_ptr() as usize,
    );
    assert!(np >= gp + g.len() || np + 8 <= gp, "overlap");
    // SAFETY: live blocks with these layouts.
    unsafe {
        a.deallocate(next.cast(), l(8, 1));
        a.deallocate(g.cast(), l(34, 8));
        a.deallocate(keep.cast(), l(8, 8));
    }
    check_empty(&a);
}

/// Tail growth with a thread that exits right after (its cache is retired
/// with the grown block live at the range's end), the block freed later by
/// the main thread: the slab must come back; and a grow that would pass
/// the range's end (1 KiB class at the last bytes) must copy, not run over.
#[test]
fn grown_tail_outlives_its_thread_and_range_end_is_respected() {
    let a = SmallMidArena::new();
    let (p, lay) = std::thread::scope(|s| {
        s.spawn(|| {
            // Fill the range up to near its end with 1 KiB blocks, then a
            // small block at the tail, grown as far as it goes.
            let mut v = Vec::new();
            loop {
                let p = a.allocate(l(1024, 8)).unwrap();
                v.push(p.cast::<u8>());
                let q = p.cast::<u8>().as_ptr() as usize;
                if (q + 1024) % SLAB == 0 || v.len() > 200 {
                    break;
                }
            }
            let mut cur = (a.allocate(l(8, 8)).unwrap().cast::<u8>(), l(8, 8));
            for n in [16usize, 64, 256, 1024] {
                // SAFETY: live with cur.1.
                let g = unsafe { a.grow(cur.0, cur.1, l(n, 8)) }.unwrap();
                let q = g.cast::<u8>().as_ptr() as usize;
                assert_eq!(q % class_align(g.len()), 0);
                // SAFETY: live.
                unsafe { g.cast::<u8>().as_ptr().write_bytes(5, n) };
                cur = (g.cast(), l(n, 8));
            }
            for p in v {
                // SAFETY: allocated above with l(1024, 8).
                unsafe { a.deallocate(p, l(1024, 8)) };
            }
            (cur.0.as_ptr() as usize, cur.1)
        })
        .join()
        .unwrap()
    });
    // SAFETY: live with `lay`.
    unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
    check_empty(&a);
}

/// Under `checked`, a grow with a stale or wrong old layout is a misuse
/// that must panic *before any state changes* (README: "`checked` misuse
/// panics fire before any state changes", and the arena stays usable after
/// `catch_unwind`). Here `x` is 16 B (class 16) and a 16 B block `y`
/// follows it at the tail; `grow(x, old = 32 B, new = 40 B)` names the
/// 32 B class, whose end is the carve point. `relocate` runs `in_place`
/// first, which moves the cache's bump pointer to `x + 40`, and only then
/// `checked.freed`, which panics: 8 bytes of the range belong to no block,
/// so the mixed slab never empties (leaked until reset or drop).
#[cfg(feature = "checked")]
#[test]
fn checked_wrong_layout_grow_at_tail_changes_nothing() {
    let a = SmallMidArena::new();
    let x = a.allocate(l(16, 8)).unwrap().cast::<u8>();
    let y = a.allocate(l(16, 8)).unwrap().cast::<u8>();
    assert_eq!(y.as_ptr() as usize, x.as_ptr() as usize + 16);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: a misuse `checked` must catch: x was allocated with 16 B.
        unsafe { a.grow(x, l(32, 8), l(40, 8)) }
    }));
    assert!(r.is_err(), "checked did not catch the wrong layout");
    let next = a.allocate(l(8, 8)).unwrap();
    assert_eq!(
        next.cast::<u8>().as_ptr() as usize,
        x.as_ptr() as usize + 32,
        "the caught misuse moved the carve point"
    );
    // SAFETY: live with their real layouts.
    unsafe {
        a.deallocate(next.cast(), l(8, 8));
        a.deallocate(y, l(16, 8));
        a.deallocate(x, l(16, 8));
    }
    // The arena must be as before the misuse: everything comes back.
    check_empty(&a);
}

/// Under `checked`, growing a block that was already freed (it still sits
/// at the carve point, in the cache's free list) must panic before any
/// state changes. `in_place` runs first and grows the freed block (24 B
/// class to 40 B class), moving the bump pointer, then `checked.freed`
/// panics: the next 24 B allocation pops the same block again, and the
/// 16 bytes between its old and new end belong to nobody (the mixed slab
/// never empties).
#[cfg(feature = "checked")]
#[test]
fn checked_grow_after_free_at_tail_changes_nothing() {
    let a = SmallMidArena::new();
    let keep = a.allocate(l(8, 8)).unwrap();
    let x = a.allocate(l(24, 8)).unwrap().cast::<u8>();
    // SAFETY: live with l(24, 8).
    unsafe { a.deallocate(x, l(24, 8)) };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: a use after free `checked` must catch.
        unsafe { a.grow(x, l(24, 8), l(40, 8)) }
    }));
    assert!(r.is_err(), "checked did not catch the grow after free");
    let again = a.allocate(l(24, 8)).unwrap();
    assert_eq!(again.cast::<u8>(), x, "the freed block is reused");
    let next = a.allocate(l(8, 8)).unwrap();
    assert_eq!(
        next.cast::<u8>().as_ptr() as usize,
        x.as_ptr() as usize + 24,
        "the caught misuse moved the carve point"
    );
    // SAFETY: live with these layouts.
    unsafe {
        a.deallocate(next.cast(), l(8, 8));
        a.deallocate(again.cast(), l(24, 8));
        a.deallocate(keep.cast(), l(8, 8));
    }
    check_empty(&a);
}

// ---------------------------------------------------------------------------
// 824dedd: the memory limit counts slabs in use
// ---------------------------------------------------------------------------

/// `used` must equal the slabs in use after every kind of operation: small
/// (mixed and class slabs), spans, huge blocks and their resizes, flushes,
/// resets, threads that exit with cached blocks, under a limit and not.
#[test]
fn used_count_matches_slabs_through_everything() {
    let _g = serial();
    for limit in [usize::MAX, 3 * MIB, 20 * MIB] {
        let mut a = SmallMidArena::builder().memory_limit(limit).build();
        let mut rng = Rng(0xDEAD_BEEF ^ limit as u64);
        for round in 0..6 {
            let mut live: Vec<(usize, Layout)> = Vec::new();
            for _ in 0..400 {
                let lay = match rng.below(20) {
                    0 => l(40 * KIB + rng.below(400 * KIB), 8 << rng.below(4)),
                    1 => l(MIB + rng.below(MIB), 4096),
                    2 => l(100, 256 * KIB),
                    3..=6 => l(2 * KIB + rng.below(30 * KIB), 8),
                    _ => l(1 + rng.below(1024), 1 << rng.below(5)),
                };
                if let Ok(p) = a.allocate(lay) {
                    live.push((p.cast::<u8>().as_ptr() as usize, lay));
                }
                if rng.below(3) == 0 && !live.is_empty() {
                    let i = rng.below(live.len());
                    let (p, lay) = live.swap_remove(i);
                    // SAFETY: live with `lay`.
                    unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
                }
                if rng.below(5) == 0 && !live.is_empty() {
                    let i = rng.below(live.len());
                    let (p, old) = live[i];
                    let new = l(
                        (old.size() as f64 * (0.3 + rng.below(300) as f64 / 100.0)) as usize + 1,
                        old.align(),
                    );
                    let ptr = NonNull::new(p as *mut u8).unwrap();
                    // SAFETY: live with `old`.
                    let r = unsafe {
                        if new.size() >= old.size() {
                            a.grow(ptr, old, new)
                        } else {
                            a.shrink(ptr, old, new)
                        }
                    };
                    if let Ok(r) = r {
                        live[i] = (r.cast::<u8>().as_ptr() as usize, new);
                    }
                }
            }
            check_used(&a);
            // Another thread allocates, frees some, and exits with a cache.
            let moved: Vec<(usize, Layout)> = std::thread::scope(|s| {
                s.spawn(|| {
                    let mut v = Vec::new();
                    for i in 0..300 {
                        let lay = l(8 + (i * 13) % 3000, 8);
                        if let Ok(p) = a.allocate(lay) {
                            v.push((p.cast::<u8>().as_ptr() as usize, lay));
                        }
                    }
                    let keep = v.split_off(v.len() / 2);
                    for (p, lay) in v {
                        // SAFETY: live with `lay`.
                        unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
                    }
                    keep
                })
                .join()
                .unwrap()
            });
            check_used(&a);
            live.extend(moved);
            a.flush_thread_cache();
            check_used(&a);
            if round % 2 == 0 {
                for (p, lay) in live.drain(..) {
                    // SAFETY: live with `lay`.
                    unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
                }
                check_empty(&a);
            } else {
                live.clear();
                a.reset();
                check_used(&a);
                if limit != usize::MAX {
                    assert_eq!(
                        a.allocated_bytes(),
                        0,
                        "a limited arena's reset keeps slabs"
                    );
                }
            }
        }
    }
}

/// Several threads allocate and free in one limited arena while another
/// thread watches `allocated_bytes()`: the limit must never be passed, no
/// allocation may panic, and once every thread has freed and exited the
/// count must be back to zero (no drift under concurrency).
#[test]
fn limit_holds_under_concurrency_and_count_returns_to_zero() {
    let limit = 2 * MIB;
    let a = SmallMidArena::builder().memory_limit(limit).build();
    let stop = AtomicBool::new(false);
    let max_seen = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let barrier = Barrier::new(8);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                max_seen.fetch_max(a.allocated_bytes(), Ordering::Relaxed);
                std::hint::spin_loop();
            }
        });
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let (a, barrier, failures) = (&a, &barrier, &failures);
                s.spawn(move || {
                    barrier.wait();
                    let mut rng = Rng(t as u64 * 7919 + 1);
                    let mut v: Vec<(usize, Layout)> = Vec::new();
                    for _ in 0..4000 {
                        let lay = match rng.below(10) {
                            0 => l(33 * KIB + rng.below(200 * KIB), 8),
                            1..=3 => l(1100 + rng.below(8 * KIB), 8),
                            _ => l(1 + rng.below(1024), 8),
                        };
                        match a.allocate(lay) {
                            Ok(p) => v.push((p.cast::<u8>().as_ptr() as usize, lay)),
                            Err(_) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if v.len() > 40 || rng.below(2) == 0 {
                            if let Some((p, lay)) =
                                (!v.is_empty()).then(|| v.swap_remove(rng.below(v.len())))
                            {
                                // SAFETY: live with `lay`; may cross threads later.
                                unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
                            }
                        }
                    }
                    v
                })
            })
            .collect();
        let rest: Vec<_> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        for (p, lay) in rest {
            // SAFETY: live with `lay` (freed cross-thread).
            unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        max_seen.load(Ordering::Relaxed) <= limit,
        "limit passed: {} > {limit}",
        max_seen.load(Ordering::Relaxed)
    );
    check_empty(&a);
}

/// The Builder docs: "64 KiB serve about 57 KiB of blocks up to 1 KiB".
/// After one cycle of use (blocks freed, the cache flushed: as any refused
/// allocation does on its own) the arena's one slab must again serve
/// blocks of *several* classes. It serves one: the cache's `Mix::taken`
/// ("one fresh mixed slab per cache and epoch") forbids a new mixed range
/// once the first mixed slab went back, so each class needs a class slab
/// of its own, and a one-slab limit has room for one.
#[test]
fn one_slab_arena_serves_several_classes_after_a_flush() {
    let a = SmallMidArena::builder().memory_limit(SLAB).build();
    // A first request: a few blocks of a few sizes, all freed.
    let v: Vec<_> = (0..10)
        .map(|i| a.allocate(l(8 + 40 * i, 8)).unwrap())
        .collect();
    for (i, p) in v.into_iter().enumerate() {
        // SAFETY: allocated above with this layout.
        unsafe { a.deallocate(p.cast(), l(8 + 40 * i, 8)) };
    }
    a.flush_thread_cache();
    assert_eq!(a.allocated_bytes(), 0);
    // The next request: 8 B and 16 B blocks, 24 bytes in a 64 KiB arena.
    let x = a.allocate(l(8, 8)).expect("the first 8 B block");
    let y = a.allocate(l(16, 8));
    assert!(
        y.is_ok(),
        "a 64 KiB arena holding one 8 B block refused a 16 B block (allocated_bytes {})",
        a.allocated_bytes()
    );
    // SAFETY: live blocks with these layouts.
    unsafe {
        a.deallocate(y.unwrap().cast(), l(16, 8));
        a.deallocate(x.cast(), l(8, 8));
    }
    check_empty(&a);
}

/// The same without an explicit flush: a one-slab arena filled with small
/// blocks until refused, everything freed, then filled again with blocks
/// of two sizes. The first fill's refusal reclaimed the cache (the mixed
/// range went back), so the second fill gets one class slab and refuses
/// the other size at once.
#[test]
fn one_slab_arena_refilled_after_a_refusal() {
    let a = SmallMidArena::builder().memory_limit(SLAB).build();
    let mut v = Vec::new();
    while let Ok(p) = a.allocate(l(500, 4)) {
        v.push(p);
    }
    assert!(v.len() > 100, "only {} blocks of 512 B", v.len());
    for p in v.drain(..) {
        // SAFETY: allocated above.
        unsafe { a.deallocate(p.cast(), l(500, 4)) };
    }
    // A later request: both sizes must fit (24 KiB of 64 KiB).
    let mut n = (0, 0);
    for _ in 0..500 {
        if let Ok(p) = a.allocate(l(24, 8)) {
            v.push(p);
            n.0 += 1;
        }
        if let Ok(p) = a.allocate(l(40, 8)) {
            // SAFETY: just allocated with l(40, 8).
            unsafe { a.deallocate(p.cast(), l(40, 8)) };
            n.1 += 1;
        }
    }
    assert_eq!(
        n,
        (500, 500),
        "after one fill-and-free cycle a 64 KiB arena serves one size only"
    );
    for p in v {
        // SAFETY: allocated with l(24, 8).
        unsafe { a.deallocate(p.cast(), l(24, 8)) };
    }
    check_empty(&a);
}

/// Same root cause, reached by a *refusal*: a thread whose first small
/// allocation found the limit full had its cache's `Mix::taken` set
/// (`alloc_small_slow` sets it before `take_mixed` is even tried), so
/// after the other thread gives everything back it still never gets a
/// mixed range: each class takes a class slab, and a two-slab arena
/// holding three small blocks refuses a fourth size.
#[test]
fn a_refused_thread_never_gets_a_mixed_range() {
    let a = SmallMidArena::builder().memory_limit(2 * SLAB).build();
    a.reserve(1).unwrap(); // grown: past its seed
    let (full, freed) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            let x = a.allocate(l(8, 8)).unwrap(); // the mixed slab
            let y = a.allocate(l(2000, 8)).unwrap(); // a class slab: full
            full.wait();
            full.wait();
            // SAFETY: live blocks with these layouts.
            unsafe {
                a.deallocate(x.cast(), l(8, 8));
                a.deallocate(y.cast(), l(2000, 8));
            }
            a.flush_thread_cache();
            freed.wait();
        });
        full.wait();
        assert!(a.allocate(l(8, 8)).is_err(), "the limit is full");
        full.wait();
        freed.wait();
        assert_eq!(a.allocated_bytes(), 0);
        let sizes = [8usize, 16, 24, 40];
        let mut got = Vec::new();
        for &n in &sizes {
            match a.allocate(l(n, 8)) {
                Ok(p) => got.push((p, n)),
                Err(_) => panic!(
                    "a {n} B block refused with {} small blocks live in a 128 KiB arena \
                     (allocated_bytes {})",
                    got.len(),
                    a.allocated_bytes()
                ),
            }
        }
        for (p, n) in got {
            // SAFETY: live with l(n, 8).
            unsafe { a.deallocate(p.cast(), l(n, 8)) };
        }
    });
    check_empty(&a);
}

/// A reset of a limited arena while another thread that used it is alive
/// (its cache detached, its blocks dropped wholesale): nothing stays
/// counted, the other thread can allocate again afterwards within the
/// limit, and its exit leaves the count exact.
#[test]
fn limited_reset_while_another_user_thread_lives() {
    struct P(*mut SmallMidArena);
    // SAFETY: the test orders every use of the arena by channels.
    unsafe impl Send for P {}
    let mut arena = SmallMidArena::builder().memory_limit(4 * SLAB).build();
    let p = P(&mut arena);
    let (to_t, from_main) = std::sync::mpsc::channel::<u32>();
    let (to_main, from_t) = std::sync::mpsc::channel::<u32>();
    let h = std::thread::spawn(move || {
        let p = p;
        while let Ok(cmd) = from_main.recv() {
            // SAFETY: main does not touch the arena while we run a command.
            let a = unsafe { &*p.0 };
            if cmd == 0 {
                break;
            }
            let mut n = 0;
            for i in 0..200 {
                let lay = l(8 + (i * 31) % 1500, 8);
                if let Ok(b) = a.allocate(lay) {
                    n += 1;
                    if i % 2 == 0 {
                        // SAFETY: just allocated.
                        unsafe { a.deallocate(b.cast(), lay) };
                    } // else: dropped wholesale by the reset
                }
            }
            to_main.send(n).unwrap();
        }
    });
    for _ in 0..5 {
        to_t.send(1).unwrap();
        assert!(from_t.recv().unwrap() > 50);
        let v: Vec<_> = (0..100)
            .filter_map(|i| arena.allocate(l(16 + i, 8)).ok())
            .collect();
        drop(v); // leaked into the arena: freed by the reset
        check_used(&arena);
        arena.reset();
        assert_eq!(arena.allocated_bytes(), 0, "a limited reset kept slabs");
        assert_eq!(arena.stats().blocks_in_use, 0);
        check_used(&arena);
    }
    to_t.send(0).unwrap();
    h.join().unwrap();
    check_used(&arena);
    arena.reset();
    check_empty(&arena);
}

/// A 64 KiB arena refuses everything it cannot serve with `AllocError`:
/// spans, huge blocks, grows past the limit, over-aligned layouts, a
/// second thread, a `Vec` and a `HashMap` growing until refused, resets;
/// nothing panics, deadlocks or passes the limit.
#[test]
fn one_slab_arena_refuses_cleanly() {
    let _g = serial();
    let mut a = SmallMidArena::builder().memory_limit(SLAB).build();
    for round in 0..3 {
        let span = a.allocate(l(40 * KIB, 8));
        assert!(span.is_ok(), "round {round}: the one slab as a span");
        assert!(a.allocate(l(8, 8)).is_err(), "a second slab");
        // SAFETY: live.
        unsafe { a.deallocate(span.unwrap().cast(), l(40 * KIB, 8)) };
        assert!(a.allocate(l(2 * MIB, 8)).is_err());
        assert!(a.allocate(l(8, 1 << 20)).is_err());
        let mut v = allocator_api2::vec::Vec::<u8, _>::new_in(&a);
        let mut n = 0;
        while v.try_reserve(n + 1).is_ok() && n < 1 << 20 {
            v.resize(v.capacity(), 1);
            n = v.capacity();
        }
        assert!(n < SLAB, "a Vec of {n} B in a 64 KiB arena");
        check_used(&a);
        drop(v);
        let mut m = hashbrown::HashMap::new_in(&a);
        let mut k = 0u64;
        while m.try_reserve(1).is_ok() && k < 1 << 20 {
            m.insert(k, k);
            k += 1;
        }
        check_used(&a);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..1000 {
                    if let Ok(p) = a.allocate(l(8 + i % 2000, 8)) {
                        // SAFETY: just allocated.
                        unsafe { a.deallocate(p.cast(), l(8 + i % 2000, 8)) };
                    }
                }
            });
        });
        drop(m);
        check_used(&a);
        a.reset();
        assert_eq!(a.allocated_bytes(), 0);
    }
    check_empty(&a);
}

/// A block of 32 KiB (a 32 KiB class slab or a one-slab span) fits a
/// 64 KiB arena; growing it to a 2-slab span or a huge block must fail
/// with `AllocError` and leave it intact, and shrinking it must work.
#[test]
fn grow_and_shrink_under_a_one_slab_limit() {
    let a = SmallMidArena::builder().memory_limit(SLAB).build();
    let b = a.allocate(l(40 * KIB, 8)).unwrap().cast::<u8>();
    // SAFETY: live, 40 KiB.
    unsafe { b.as_ptr().write_bytes(3, 40 * KIB) };
    // SAFETY: live with l(40 KiB).
    assert!(unsafe { a.grow(b, l(40 * KIB, 8), l(100 * KIB, 8)) }.is_err());
    // SAFETY: as above.
    assert!(unsafe { a.grow(b, l(40 * KIB, 8), l(4 * MIB, 8)) }.is_err());
    // SAFETY: still live, untouched.
    assert!(unsafe { core::slice::from_raw_parts(b.as_ptr(), 40 * KIB) }
        .iter()
        .all(|&x| x == 3));
    check_used(&a);
    // SAFETY: live with l(40 KiB).
    unsafe { a.deallocate(b, l(40 * KIB, 8)) };
    check_empty(&a);
}

/// A huge block that fills the limit cannot be shrunk to a small block:
/// `shrink` must copy into fresh memory while the huge mapping still
/// counts. Before 824dedd the home SuperSlab's free slabs were already
/// paid for and the shrink worked; now it fails, and
/// `allocator_api2::vec::Vec::shrink_to_fit` turns that into an abort.
/// (Design regression: a shrink that needs a new slab under a saturated
/// limit.)
#[test]
fn shrinking_a_huge_block_under_a_full_limit() {
    let _g = serial();
    smallmid::trim_warm_cache();
    let a = SmallMidArena::builder().memory_limit(2 * MIB).build();
    // A huge block whose mapping (size rounded to pages + one page) is
    // exactly the limit.
    let big = l(2 * MIB - 4096, 8);
    let p = a.allocate(big).unwrap().cast::<u8>();
    assert_eq!(a.allocated_bytes(), 2 * MIB);
    // SAFETY: live with `big`.
    let r = unsafe { a.shrink(p, big, l(100, 8)) };
    assert!(
        r.is_ok(),
        "shrinking a huge block to 100 B failed under a full limit"
    );
    // SAFETY: live with the layout it has now.
    unsafe { a.deallocate(r.unwrap().cast(), l(100, 8)) };
    check_empty(&a);
}

/// A spare arena (dropped after using many classes, unlimited: its reset
/// left slabs in its caches) taken by a limited `Builder::build` must
/// start empty and within its limit, even a 64 KiB one.
#[test]
fn limited_build_from_a_warm_spare_starts_empty() {
    let _g = serial();
    on_fresh_thread(|| {
        for limit in [SLAB, 2 * SLAB, MIB] {
            {
                let a = SmallMidArena::new();
                let v: Vec<_> = (0..40)
                    .map(|i| a.allocate(l(8 << (i % 12), 8)).unwrap())
                    .collect();
                for (i, p) in v.into_iter().enumerate() {
                    // SAFETY: allocated above.
                    unsafe { a.deallocate(p.cast(), l(8 << (i % 12), 8)) };
                }
                let _keep = a.allocate(l(3 * MIB, 8)).unwrap(); // huge, dropped with the arena
            } // a spare now, holding slabs in its cache
            let b = SmallMidArena::builder().memory_limit(limit).build();
            assert_eq!(b.allocated_bytes(), 0, "limit {limit}");
            check_used(&b);
            let x = b.allocate(l(100, 8)).unwrap();
            assert!(b.allocated_bytes() <= limit);
            // SAFETY: live.
            unsafe { b.deallocate(x.cast(), l(100, 8)) };
            check_empty(&b);
        }
    });
}

/// Lowering the limit while another live thread caches blocks: refused
/// (documented), and once that thread flushes, accepted; the new limit is
/// then held by both threads.
#[test]
fn lowering_the_limit_while_another_thread_caches() {
    let a = SmallMidArena::new();
    let (go, done) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            let v: Vec<_> = (0..200)
                .map(|i| a.allocate(l(8 + i * 50, 8)).unwrap())
                .collect();
            for (i, p) in v.into_iter().enumerate() {
                // SAFETY: allocated above.
                unsafe { a.deallocate(p.cast(), l(8 + i * 50, 8)) };
            }
            go.wait();
            done.wait();
            a.flush_thread_cache();
            go.wait();
            done.wait();
            // Under the new limit from this thread too.
            let mut n = 0;
            while a.allocate(l(2000, 8)).is_ok() {
                n += 1;
                assert!(a.allocated_bytes() <= 2 * SLAB);
            }
            assert!(n > 0);
            a.flush_thread_cache();
        });
        go.wait();
        assert!(a.allocated_bytes() > 2 * SLAB);
        assert!(
            a.set_memory_limit(2 * SLAB).is_err(),
            "other thread's cache counted"
        );
        done.wait();
        go.wait();
        a.set_memory_limit(2 * SLAB)
            .expect("after the other thread flushed");
        done.wait();
    });
    assert!(a.allocated_bytes() <= 2 * SLAB);
}

/// `reserve` under a limit: address space only (nothing counted), refused
/// past the limit, overflow-proof at the extremes.
#[test]
fn reserve_under_a_limit_and_at_the_extremes() {
    let _g = serial();
    let a = SmallMidArena::builder().memory_limit(4 * MIB).build();
    a.reserve(4 * MIB).unwrap();
    assert_eq!(a.allocated_bytes(), 0);
    assert!(a.reserve(4 * MIB + 1).is_err());
    assert!(a.reserve(usize::MAX).is_err());
    assert!(a.reserve(isize::MAX as usize).is_err());
    let u = SmallMidArena::new();
    assert!(u.reserve(usize::MAX).is_err());
    assert!(u.reserve(usize::MAX - SLAB).is_err());
    check_used(&a);
    // Reserved SuperSlabs must not let the arena pass its limit.
    let mut v = Vec::new();
    while let Ok(p) = a.allocate(l(60 * KIB, 8)) {
        v.push(p);
    }
    assert_eq!(v.len(), 4 * MIB / SLAB);
    check_used(&a);
    for p in v {
        // SAFETY: allocated above.
        unsafe { a.deallocate(p.cast(), l(60 * KIB, 8)) };
    }
    check_empty(&a);
}

/// The huge-mapping cache under a limit: a kept mapping larger than the
/// limit allows is not taken (the block is mapped fresh or refused), and
/// grows/shrinks of huge blocks keep `huge_bytes` within the limit.
#[test]
fn huge_cache_and_huge_resize_under_a_limit() {
    let _g = serial();
    smallmid::trim_warm_cache();
    {
        let u = SmallMidArena::new();
        let p = u.allocate(l(5 * MIB, 4096)).unwrap();
        // SAFETY: live.
        unsafe { u.deallocate(p.cast(), l(5 * MIB, 4096)) }; // cached: about 5 MiB
    }
    let a = SmallMidArena::builder().memory_limit(4 * MIB).build();
    let p = a.allocate(l(3 * MIB + 100, 4096)).unwrap().cast::<u8>();
    check_used(&a);
    // SAFETY: live.
    unsafe { p.as_ptr().write_bytes(1, 3 * MIB) };
    // SAFETY: live with the old layout.
    let g = unsafe { a.grow(p, l(3 * MIB + 100, 4096), l(5 * MIB, 4096)) };
    assert!(g.is_err());
    check_used(&a);
    // SAFETY: live.
    let g = unsafe { a.grow(p, l(3 * MIB + 100, 4096), l(4 * MIB - 8192, 4096)) }.unwrap();
    check_used(&a);
    let gl = l(4 * MIB - 8192, 4096);
    // SAFETY: live with gl.
    let s = unsafe { a.shrink(g.cast(), gl, l(MIB + 1, 4096)) }.unwrap();
    check_used(&a);
    // SAFETY: live.
    assert!(
        unsafe { core::slice::from_raw_parts(s.cast::<u8>().as_ptr(), MIB) }
            .iter()
            .all(|&b| b == 1)
    );
    // SAFETY: live with its layout.
    unsafe { a.deallocate(s.cast(), l(MIB + 1, 4096)) };
    check_empty(&a);
    smallmid::trim_warm_cache();
}

/// Spans use whole slabs from possibly several SuperSlabs (address space
/// is not counted): a 1 MiB limit serves 16 one-slab spans, and with one
/// 8-slab span live, exactly 8 more slabs, whatever SuperSlabs they
/// take; freeing them gives the count back.
#[test]
fn spans_fill_the_limit_exactly() {
    let a = SmallMidArena::builder().memory_limit(MIB).build();
    let mut v = Vec::new();
    while let Ok(p) = a.allocate(l(60 * KIB, 8)) {
        v.push(p);
    }
    assert_eq!(v.len(), 16);
    check_used(&a);
    for p in v.drain(8..) {
        // SAFETY: allocated above.
        unsafe { a.deallocate(p.cast(), l(60 * KIB, 8)) };
    }
    let big = a.allocate(l(8 * SLAB, 8));
    assert!(
        big.is_ok(),
        "8 free slabs of a 1 MiB limit refused an 8-slab span"
    );
    assert!(a.allocate(l(8, 8)).is_err());
    check_used(&a);
    // SAFETY: allocated above.
    unsafe { a.deallocate(big.unwrap().cast(), l(8 * SLAB, 8)) };
    for p in v {
        // SAFETY: allocated above.
        unsafe { a.deallocate(p.cast(), l(60 * KIB, 8)) };
    }
    check_empty(&a);
}

/// Threads exiting from a limited arena with blocks in their caches and
/// grown tail blocks live: the count stays exact and everything comes
/// back when the survivors free.
#[test]
fn threads_exit_with_grown_tails_in_a_limited_arena() {
    let a = Arc::new(SmallMidArena::builder().memory_limit(MIB).build());
    let mut kept = Vec::new();
    for t in 0..16 {
        let a2 = Arc::clone(&a);
        let v = on_fresh_thread(move || {
            let mut v = Vec::new();
            for i in 0..50 {
                let lay = l(8 + (i * 7 + t) % 200, 8);
                let Ok(p) = a2.allocate(lay) else { break };
                let mut cur = (p.cast::<u8>(), lay);
                if i % 3 == 0 {
                    let new = l(lay.size() * 3, 8);
                    // SAFETY: live with cur.1.
                    if let Ok(g) = unsafe { a2.grow(cur.0, cur.1, new) } {
                        cur = (g.cast(), new);
                    }
                }
                v.push((cur.0.as_ptr() as usize, cur.1));
            }
            let keep = v.split_off(v.len() / 2);
            for (p, lay) in v {
                // SAFETY: live.
                unsafe { a2.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
            }
            keep
        });
        kept.extend(v);
        check_used(&a);
    }
    for (p, lay) in kept {
        // SAFETY: live.
        unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
    }
    check_empty(&a);
}

/// Under ASan (`--cfg smallmid_asan`): a tail block shrunk in place gives
/// its last bytes back to the range, so reading them is reported like a
/// use after free (and the whole shrunk length stays usable). Runs the
/// read in a child process, which ASan aborts.
#[cfg(smallmid_asan)]
#[test]
fn asan_bytes_shrunk_away_at_the_tail_are_poisoned() {
    if std::env::var_os("SMALLMID_ASAN_CHILD").is_some() {
        let a = SmallMidArena::new();
        let _keep = a.allocate(l(8, 8)).unwrap();
        let x = a.allocate(l(512, 8)).unwrap().cast::<u8>();
        // SAFETY: live with l(512, 8).
        let s = unsafe { a.shrink(x, l(512, 8), l(16, 8)) }.unwrap();
        assert_eq!(s.cast::<u8>(), x, "not in place");
        // SAFETY: the shrunk block's whole length is ours.
        unsafe { s.cast::<u8>().as_ptr().write_bytes(1, s.len()) };
        // SAFETY: none: a read past the shrunk block, which ASan must report.
        let v = unsafe { core::ptr::read_volatile(x.as_ptr().add(100)) };
        std::process::exit(v as i32); // not reached under ASan
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "asan_bytes_shrunk_away_at_the_tail_are_poisoned",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SMALLMID_ASAN_CHILD", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("use-after-poison"),
        "a read of bytes shrunk away went unnoticed:\n{err}"
    );
}

/// The room a shrinking huge block frees for its own copy is held for its
/// thread: another thread allocating all the while never passes the limit
/// and never takes that room; every shrink succeeds.
#[test]
fn shrink_into_own_room_races_another_thread() {
    let _g = serial();
    let a = Arc::new(SmallMidArena::builder().memory_limit(2 * MIB).build());
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (a, stop) = (a.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(p) = a.allocate(l(2000, 8)) {
                    held.push(p.cast::<u8>());
                }
                assert!(a.allocated_bytes() <= 2 * MIB, "limit passed");
                if held.len() > 8 {
                    for p in held.drain(..) {
                        // SAFETY: allocated above with this layout.
                        unsafe { a.deallocate(p, l(2000, 8)) };
                    }
                    a.flush_thread_cache();
                }
            }
            for p in held {
                // SAFETY: as above.
                unsafe { a.deallocate(p, l(2000, 8)) };
            }
            a.flush_thread_cache();
        })
    };
    for i in 0..200 {
        let big = l(2 * MIB - 4096 - i * 4096 % (64 * KIB), 8);
        let Ok(p) = a.allocate(big) else { continue };
        let p = p.cast::<u8>();
        // SAFETY: live with `big`.
        unsafe { p.as_ptr().write_bytes(i as u8, 100) };
        // SAFETY: live with `big`.
        let s = unsafe { a.shrink(p, big, l(100, 8)) }.expect("shrink refused");
        // SAFETY: the first 100 bytes were kept.
        assert!(
            unsafe { core::slice::from_raw_parts(s.cast::<u8>().as_ptr(), 100) }
                .iter()
                .all(|&x| x == i as u8)
        );
        assert!(a.allocated_bytes() <= 2 * MIB, "limit passed");
        // SAFETY: live with its new layout.
        unsafe { a.deallocate(s.cast(), l(100, 8)) };
    }
    stop.store(true, Ordering::Relaxed);
    other.join().unwrap();
    a.flush_thread_cache();
    assert_eq!(a.stats().blocks_in_use, 0);
}
