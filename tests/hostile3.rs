//! Hostile review of mixed slabs (commit "Mixed slabs: ..."): repros and
//! regression tests. Separate binary: own thread indices, own spares.
//!
//! Tests marked FAILED reproduced a bug at the reviewed commit (9ac4af6);
//! every one passes since the fixes (a holding cache's extra count, sizes on
//! full addresses, parked remainders, `ranged()` for resets, the empty-slab
//! block-count check). The others were regression tests from the start.

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::SmallMidArena;
use std::collections::BTreeMap;
use std::sync::Mutex;

const SLAB: usize = 64 << 10;

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the tests of this binary (they look at fresh arenas' layouts)
/// and empties the shared spares, so `SmallMidArena::new()` on a fresh
/// thread makes a brand-new arena.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    smallmid::trim_warm_cache();
    g
}

fn l(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn slab(p: usize) -> usize {
    p / SLAB
}

/// Runs `f` on a fresh thread (fresh thread index, no cache anywhere) and
/// re-raises its panic with its message.
fn on_fresh_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match std::thread::spawn(f).join() {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e),
    }
}

/// Live blocks with their fill bytes: overlap and content checks.
#[derive(Default)]
struct Shadow {
    live: BTreeMap<usize, (usize, u8)>,
}

impl Shadow {
    fn add(&mut self, p: NonNull<[u8]>, size: usize, fill: u8) {
        let a = p.cast::<u8>().as_ptr() as usize;
        if let Some((&s, &(n, _))) = self.live.range(..a + size).next_back() {
            assert!(
                s + n <= a,
                "block [{a:#x},+{size}) handed out over live block [{s:#x},+{n})"
            );
        }
        // SAFETY: a live block at least `size` long.
        unsafe { p.cast::<u8>().as_ptr().write_bytes(fill, size) };
        self.live.insert(a, (size, fill));
    }
    fn check(&self) {
        for (&a, &(n, fill)) in &self.live {
            // SAFETY: live blocks of at least `n` bytes.
            let s = unsafe { core::slice::from_raw_parts(a as *const u8, n) };
            assert!(
                s.iter().all(|&b| b == fill),
                "live block [{a:#x},+{n}) was overwritten"
            );
        }
    }
}

/// Allocates 8-byte blocks until one leaves the mixed slab the first one
/// was carved from: returns the carved blocks (the whole mixed range,
/// exactly: 8 divides every range and nothing is padded) and the first
/// block past it.
fn exhaust_mixed_with_u64(a: &SmallMidArena) -> (Vec<usize>, usize) {
    let l8 = Layout::new::<u64>();
    let first = a.allocate(l8).unwrap().cast::<u8>().as_ptr() as usize;
    assert_eq!(
        a.audit().mixed_slabs,
        1,
        "the first block is carved from a mixed slab"
    );
    let s = slab(first);
    let mut carved = vec![first];
    loop {
        let p = a.allocate(l8).unwrap().cast::<u8>().as_ptr() as usize;
        if slab(p) != s {
            return (carved, p);
        }
        carved.push(p);
    }
}

// ---------------------------------------------------------------------------
// Finding 1 (critical): an exhausted, unpadded mixed range lets the byte count
// reach zero while a cache still holds the range.
// ---------------------------------------------------------------------------

/// FAILED at the reviewed commit (debug: "attempt to subtract with overflow" in `mixed_put`;
/// release: the slab is released twice and later handed out over live
/// blocks).
///
/// A cache carves its whole mixed range with 8-byte blocks (no padding, so
/// `bump == end` and the cache's `acct` pad is 0). Every carved block is
/// freed on another thread and flushed: the slab's byte count reaches 0, so
/// the slab goes back to the pool, although the first cache still holds its
/// (empty) range. The slab is then taken as a class slab (2 KiB blocks, kept
/// live). When the first cache flushes, `put_mixed(end, end, 0, n)` gives 0
/// bytes to that slab: its count (0: a class slab) equals 0, so
/// `mixed_put` "empties" it again: `pool.mixed -= 1` underflows, and the class
/// slab with 28 live blocks is marked free and released to the pool.
#[test]
fn exhausted_mixed_range_is_released_twice_over_live_blocks() {
    let _g = serial();
    on_fresh_thread(|| {
        let a = SmallMidArena::new();
        a.reserve(1).unwrap(); // grown: past its seed
        let l8 = Layout::new::<u64>();
        let (carved, extra) = exhaust_mixed_with_u64(&a);
        let range = carved.len() * 8;
        // The whole range of slab 0 (after the header area) or of another slab.
        assert!(range > SLAB / 2 && range <= SLAB, "range of {range} bytes");
        let s = slab(carved[0]);
        // Another thread frees every carved block and flushes. Bug: the
        // count reaches 0 and the slab goes to the pool while this cache
        // still holds its (used up) range. (Fixed: the slab stays mixed.)
        let ar = &a;
        std::thread::scope(|sc| {
            sc.spawn(move || {
                for &p in &carved {
                    // SAFETY: allocated from `ar` with `l8`, freed once.
                    unsafe { ar.deallocate(NonNull::new(p as *mut u8).unwrap(), l8) };
                }
                ar.flush_thread_cache();
            });
        });
        let released_early = a.audit().mixed_slabs == 0;
        // A slab the pool has free serves a class now (with the bug: the
        // mixed slab); its blocks stay live.
        let big = l(2048, 8);
        let mut sh = Shadow::default();
        let mut on_s = 0;
        for i in 0..64u8 {
            let p = a.allocate(big).unwrap();
            on_s += (slab(p.cast::<u8>().as_ptr() as usize) == s) as usize;
            sh.add(p, 2048, i);
        }
        eprintln!("mixed slab released early: {released_early}; 2 KiB blocks on it: {on_s}");
        let before = a.audit();
        // This cache still holds the exhausted mixed range: flushing it must
        // not touch the slab (now a class slab with live blocks).
        a.flush_thread_cache();
        let after = a.audit();
        // Whatever takes a slab next must not land on the live blocks.
        for i in 0..64u8 {
            let p = a.allocate(l(4096, 8)).unwrap();
            sh.add(p, 4096, 100 + i);
        }
        sh.check();
        assert_eq!(
            after.class_slabs, before.class_slabs,
            "a class slab with live blocks was released by a stale mixed range: {before:?} -> {after:?}"
        );
        // SAFETY: allocated above with `l8`.
        unsafe { a.deallocate(NonNull::new(extra as *mut u8).unwrap(), l8) };
        std::mem::forget(sh); // the arena's drop frees the rest
    });
}

/// FAILED at the reviewed commit (debug: "attempt to subtract with overflow"; release: the arena's
/// mixed-slab count wraps to usize::MAX, so it never takes a mixed slab
/// again until a reset).
///
/// The same with no other thread: the cache frees its own blocks and calls
/// `flush_thread_cache` (or its thread exits: in a debug build that panic
/// happens inside a thread-local destructor and aborts the process).
/// `flush_cache` flushes the class lists first (the count reaches 0, the slab
/// is released, `pool.mixed` goes 1 -> 0), then `put_mixed` with 0 bytes
/// releases it a second time.
#[test]
fn exhausted_mixed_range_flush_underflows_mixed_count() {
    let _g = serial();
    let a = on_fresh_thread(|| {
        let a = SmallMidArena::new();
        a.reserve(1).unwrap(); // grown: past its seed
        let l8 = Layout::new::<u64>();
        let (carved, extra) = exhaust_mixed_with_u64(&a);
        for p in carved.into_iter().chain([extra]) {
            // SAFETY: allocated from `a` with `l8`, freed once.
            unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), l8) };
        }
        a.flush_thread_cache();
        let au = a.audit();
        assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
        a
    });
    // A fresh thread's first small block takes a mixed slab again (the
    // arena holds none).
    let a = std::sync::Arc::new(a);
    let b = a.clone();
    let mixed = on_fresh_thread(move || {
        let p = b.allocate(Layout::new::<u64>()).unwrap();
        let m = b.audit().mixed_slabs;
        // SAFETY: allocated just above.
        unsafe { b.deallocate(p.cast(), Layout::new::<u64>()) };
        b.flush_thread_cache();
        m
    });
    assert_eq!(
        mixed, 1,
        "no mixed slab taken: the arena's mixed count was corrupted by the double release"
    );
}

// ---------------------------------------------------------------------------
// Finding 2 (low, debug builds): u32 subtraction in `take_mixed`.
// ---------------------------------------------------------------------------

/// FAILED at the reviewed commit in debug builds only ("attempt to subtract with overflow" at
/// src/central.rs:290), when the mixed slab is slab 15 of a SuperSlab that
/// ends on a 4 GiB boundary: `range.1 as u32` is then 0. The test looks for
/// such a SuperSlab among fresh arenas' home SuperSlabs (keeping up to
/// 9000 arenas alive, ~100 MiB); passes (skips) if none is found.
#[test]
fn mixed_slab_ending_on_a_4gib_boundary() {
    let _g = serial();
    on_fresh_thread(|| {
        let mut keep = Vec::new();
        let mut found = None;
        for _ in 0..9000 {
            let a = SmallMidArena::new();
            a.reserve(1).unwrap(); // grown: past its seed (Debug names the grown state)

            // The arena state sits in the home SuperSlab's header area.
            let dbg = format!("{a:?}");
            let hex = dbg.split("0x").nth(1).unwrap();
            let hex: String = hex.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            let home = usize::from_str_radix(&hex, 16).unwrap() & !((1 << 20) - 1);
            if (home + (1 << 20)) % (1 << 32) == 0 {
                found = Some(a);
                break;
            }
            keep.push(a);
        }
        let Some(a) = found else {
            eprintln!("no SuperSlab ending on a 4 GiB boundary found: skipped");
            return;
        };
        // Slabs 0..=14 to fifteen classes above 1 KiB (no mixed slab for
        // them), so the mixed slab is slab 15.
        let sizes = [
            1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288,
            14336,
        ];
        let big: Vec<_> = sizes
            .iter()
            .map(|&s| (a.allocate(l(s, 8)).unwrap(), s))
            .collect();
        let p = a.allocate(Layout::new::<u64>()).unwrap();
        assert_eq!(a.audit().mixed_slabs, 1);
        assert_eq!((p.cast::<u8>().as_ptr() as usize / SLAB) % 16, 15);
        // SAFETY: allocated above with these layouts.
        unsafe {
            a.deallocate(p.cast(), Layout::new::<u64>());
            for (b, s) in big {
                a.deallocate(b.cast(), l(s, 8));
            }
        }
        drop(keep);
    });
}

// ---------------------------------------------------------------------------
// Finding 3 (medium): under a memory limit, the reclaim before refusing
// strands the uncarved rest of the cache's mixed range.
// ---------------------------------------------------------------------------

/// FAILED at the reviewed commit: "8-byte allocation refused".
///
/// Limit 1 MiB. One live 8-byte block is carved from the mixed slab; spans
/// take every other slab; the next span is refused, and before refusing,
/// `allocate_after_reclaim` flushes this thread's cache, which gives the
/// mixed range back: its ~56 KiB uncarved bytes are now unusable until the
/// one live block comes back. So the next 8-byte allocation fails, though
/// with class slabs (before the change) it would reuse that slab, and
/// without the reclaim it would have been carved from the range.
#[test]
fn limit_reclaim_strands_the_mixed_range() {
    let _g = serial();
    on_fresh_thread(|| {
        let a = SmallMidArena::builder().memory_limit(1 << 20).build();
        a.reserve(1).unwrap(); // grown: past its seed
        let l8 = Layout::new::<u64>();
        let x = a.allocate(l8).unwrap();
        // (A limited arena that takes no mixed slab passes trivially.)
        let span = l(SLAB, 8);
        let mut spans = Vec::new();
        while let Ok(p) = a.allocate(span) {
            spans.push(p);
        }
        assert!(!spans.is_empty());
        let r = a.allocate(l8);
        let ok = r.is_ok();
        // SAFETY: allocated above with these layouts, freed once.
        unsafe {
            if let Ok(p) = r {
                a.deallocate(p.cast(), l8);
            }
            a.deallocate(x.cast(), l8);
            for p in spans {
                a.deallocate(p.cast(), span);
            }
        }
        assert!(
            ok,
            "8-byte allocation refused while the mixed slab holding one 8-byte block has ~56 KiB uncarved"
        );
    });
}

/// FAILED at the reviewed commit: same mechanism through the public `flush_thread_cache` (which the
/// docs recommend "before a thread goes idle"): after it, one live block
/// keeps a whole 64 KiB slab out of use, and small blocks take a new slab.
/// With a limit of one SuperSlab that is the difference between serving
/// and refusing.
#[test]
fn flush_thread_cache_strands_the_mixed_range_under_limit() {
    let _g = serial();
    on_fresh_thread(|| {
        let a = SmallMidArena::builder().memory_limit(1 << 20).build();
        a.reserve(1).unwrap(); // grown: past its seed
        let l8 = Layout::new::<u64>();
        let x = a.allocate(l8).unwrap();
        let span = l(SLAB, 8);
        let mut spans = Vec::new();
        // Every slab but the mixed one, without ever failing (no reclaim).
        for _ in 0..15 {
            match a.allocate(span) {
                Ok(p) => spans.push(p),
                Err(_) => break,
            }
        }
        a.flush_thread_cache();
        let r = a.allocate(l8);
        let ok = r.is_ok();
        // SAFETY: allocated above with these layouts, freed once.
        unsafe {
            if let Ok(p) = r {
                a.deallocate(p.cast(), l8);
            }
            a.deallocate(x.cast(), l8);
            for p in spans {
                a.deallocate(p.cast(), span);
            }
        }
        assert!(ok, "8-byte allocation refused after flush_thread_cache");
    });
}

/// FAILED at the reviewed commit: the same after `set_memory_limit` on an arena whose cache took
/// its mixed range while the arena had no limit (a fix that only makes
/// `take_mixed` refuse in limited arenas misses this): the reclaim before
/// refusing strands the range.
#[test]
fn set_memory_limit_after_mixed_range_taken_strands_it() {
    let _g = serial();
    on_fresh_thread(|| {
        let a = SmallMidArena::new();
        a.reserve(1).unwrap(); // grown: past its seed
        let l8 = Layout::new::<u64>();
        let x = a.allocate(l8).unwrap();
        assert_eq!(a.audit().mixed_slabs, 1);
        a.set_memory_limit(1 << 20).unwrap();
        let span = l(SLAB, 8);
        let mut spans = Vec::new();
        while let Ok(p) = a.allocate(span) {
            spans.push(p);
        }
        assert!(!spans.is_empty());
        let r = a.allocate(l8);
        let ok = r.is_ok();
        // SAFETY: allocated above with these layouts, freed once.
        unsafe {
            if let Ok(p) = r {
                a.deallocate(p.cast(), l8);
            }
            a.deallocate(x.cast(), l8);
            for p in spans {
                a.deallocate(p.cast(), span);
            }
        }
        assert!(
            ok,
            "8-byte allocation refused after set_memory_limit: the mixed range was stranded by the reclaim"
        );
    });
}

// ---------------------------------------------------------------------------
// Finding 4 (low/medium): misuse detection promised by the README is gone
// for mixed blocks, and the misuse now frees a slab under live blocks.
// ---------------------------------------------------------------------------

/// FAILED at the reviewed commit: "no panic".
///
/// README ("Misuse detection"): release builds panic "for: a block freed
/// with a layout of another size class (when its batch reaches the slab)
/// ... before corruption spreads". For a block carved from a mixed slab the
/// flush only subtracts the (wrong) class size from the byte count: no
/// check. Here a 64-byte block freed as 128 bytes makes the count reach 0
/// while another 64-byte block is live, and the slab goes to the pool.
#[test]
fn wrong_class_free_of_mixed_block_is_not_caught() {
    let _g = serial();
    on_fresh_thread(|| {
        let a = SmallMidArena::new();
        a.reserve(1).unwrap(); // grown: past its seed
        let (l64, l128) = (l(64, 8), l(128, 8));
        let p = a.allocate(l64).unwrap();
        let q = a.allocate(l64).unwrap();
        assert_eq!(a.audit().mixed_slabs, 1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: deliberately wrong (misuse the README says is caught).
            unsafe { a.deallocate(p.cast(), l128) };
            a.flush_thread_cache();
        }));
        let au = a.audit();
        assert!(
            r.is_err(),
            "no panic for a 64-byte block freed as 128; afterwards the slab of the live block {:p} is {}: {au:?}",
            q.cast::<u8>().as_ptr(),
            if au.mixed_slabs == 0 { "back in the pool" } else { "still mixed" }
        );
    });
}

// ---------------------------------------------------------------------------
// Finding 5 (low): a reset keeps a whole slab for every class up to 1 KiB
// in the resetting thread's cache, used or not.
// ---------------------------------------------------------------------------

/// FAILED at the reviewed commit: a reset keeps, in the resetting thread's cache, a class slab of a
/// class that thread never allocated. `set_mixed` sets all 29 mixed classes
/// in `touched`, and the reset reads `touched` as "classes this cache
/// used" (`want`): every class slab of those classes that exists anywhere
/// in the arena is kept whole for this cache instead of going back to the
/// pool (likewise for detached idle caches through `retire`'s `want`).
#[test]
fn reset_keeps_class_slabs_of_classes_never_used() {
    let _g = serial();
    on_fresh_thread(|| {
        let mut a = SmallMidArena::new();
        a.reserve(1).unwrap(); // grown: past its seed

        // This thread uses 8-byte blocks only (from its mixed range).
        let p = a.allocate(Layout::new::<u64>()).unwrap();
        // SAFETY: allocated just above.
        unsafe { a.deallocate(p.cast(), Layout::new::<u64>()) };
        // Another thread fills its mixed range and two 512-byte class slabs,
        // keeps the blocks live (the reset frees them) and exits.
        // SAFETY: the thread is joined (thread-local destructors included:
        // its cache is retired, with a flush) before the arena is used again.
        let ar: &'static SmallMidArena = unsafe { &*(&a as *const SmallMidArena) };
        std::thread::spawn(move || {
            for _ in 0..400 {
                ar.allocate(l(512, 8)).unwrap();
            }
        })
        .join()
        .unwrap();
        a.reset();
        let au = a.audit();
        // `Audit::per_class` is private: read it from the Debug output.
        let dbg = format!("{au:?}");
        let per_class: Vec<u32> = dbg
            .split("per_class: [")
            .nth(1)
            .unwrap()
            .split(']')
            .next()
            .unwrap()
            .split(", ")
            .map(|n| n.parse().unwrap())
            .collect();
        let c512 = 24; // index of the 512-byte class
        assert_eq!(
            per_class[c512], 0,
            "after reset the 8-byte-only thread's cache keeps 512-byte class slabs: {au:?}"
        );
    });
}

// ---------------------------------------------------------------------------
// Regression tests (pass at the reviewed commit).
// ---------------------------------------------------------------------------

/// PASSES. A padded exhausted range keeps the count non-zero (the pad), so
/// the slab returns only with the range: control for finding 1.
#[test]
fn exhausted_padded_range_returns_once() {
    let _g = serial();
    on_fresh_thread(|| {
        let a = SmallMidArena::new();
        a.reserve(1).unwrap(); // grown: past its seed
        let (l8, l16) = (l(8, 8), l(16, 16));
        let mut blocks = Vec::new();
        let first = a.allocate(l8).unwrap().cast::<u8>().as_ptr() as usize;
        blocks.push((first, l8));
        let s = slab(first);
        // 8 then 16 at 16-alignment: every 16 pads 8 bytes.
        let extra = loop {
            let p = a.allocate(l16).unwrap().cast::<u8>().as_ptr() as usize;
            if slab(p) != s {
                break (p, l16);
            }
            blocks.push((p, l16));
            let p = a.allocate(l8).unwrap().cast::<u8>().as_ptr() as usize;
            if slab(p) != s {
                break (p, l8);
            }
            blocks.push((p, l8));
        };
        blocks.push(extra);
        for (p, lay) in blocks {
            // SAFETY: allocated above with `lay`.
            unsafe { a.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
        }
        a.flush_thread_cache();
        let au = a.audit();
        assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
    });
}

/// PASSES. Reset on a thread other than the carving one, with the carving
/// thread alive: its cache is detached, its mixed slab given back to its
/// idle cache; then both threads allocate at once and nothing overlaps.
#[test]
fn reset_from_other_thread_then_both_allocate() {
    let _g = serial();
    use std::sync::mpsc::channel;
    let mut a = Box::new(SmallMidArena::new());
    // SAFETY: the arena outlives the helper thread (joined below).
    let ar: &'static SmallMidArena = unsafe { &*(&*a as *const SmallMidArena) };
    let (go_tx, go_rx) = channel::<u32>();
    let (back_tx, back_rx) = channel::<Vec<(usize, usize)>>();
    let h = std::thread::spawn(move || {
        while let Ok(round) = go_rx.recv() {
            let mut mine = Vec::new();
            for i in 0..300usize {
                let size = 8 + (i * 37 + round as usize) % 1000;
                let p = ar.allocate(l(size, 8)).unwrap();
                // SAFETY: live, `size` bytes.
                unsafe { p.cast::<u8>().as_ptr().write_bytes(0xA5, size) };
                mine.push((p.cast::<u8>().as_ptr() as usize, size));
            }
            back_tx.send(mine).unwrap();
        }
    });
    for round in 0..50u32 {
        go_tx.send(round).unwrap();
        let theirs = back_rx.recv().unwrap();
        let mut sh = Shadow::default();
        for &(p, n) in &theirs {
            // Record without writing: check overlap only.
            let a0 = p;
            if let Some((&s, &(m, _))) = sh.live.range(..a0 + n).next_back() {
                assert!(s + m <= a0, "helper's blocks overlap");
            }
            sh.live.insert(a0, (n, 0xA5));
        }
        for i in 0..300usize {
            let size = 8 + (i * 13 + round as usize) % 1000;
            let p = a.allocate(l(size, 8)).unwrap();
            sh.add(p, size, 0x5A);
        }
        sh.check();
        a.reset();
        let au = a.audit();
        assert!(au.mixed_slabs <= 8, "{au:?}");
    }
    drop(go_tx);
    h.join().unwrap();
    a.flush_thread_cache();
    drop(a);
}

/// PASSES. Arenas made on one thread, used and dropped on others (spares,
/// `park_own`), with mixed ranges in flight: shadow-checked.
#[test]
fn spares_hop_threads_with_mixed_ranges() {
    let _g = serial();
    for round in 0..40u64 {
        let a = on_fresh_thread(move || {
            let a = SmallMidArena::new();
            let mut sh = Shadow::default();
            for i in 0..200usize {
                let size = 8 + (i * 29 + round as usize) % 1016;
                let align = 1 << ((i + round as usize) % 11);
                let p = a.allocate(l(size, align)).unwrap();
                assert_eq!(p.cast::<u8>().as_ptr() as usize % align, 0);
                sh.add(p, size, i as u8);
            }
            sh.check();
            a
        });
        // Dropped here (another thread): reset, becomes this thread's spare,
        // its previous spare parked for any thread.
        drop(a);
        let b = SmallMidArena::new();
        let mut sh = Shadow::default();
        for i in 0..200usize {
            let size = 8 + (i * 31) % 1016;
            let p = b.allocate(l(size, 8)).unwrap();
            sh.add(p, size, i as u8);
        }
        sh.check();
        let _ = b.audit();
    }
}

/// PASSES. Blocks carved from a mixed slab freed by a cacheless thread go
/// back to the slab; the slab returns once all are back.
#[test]
fn cacheless_frees_of_mixed_blocks() {
    let _g = serial();
    on_fresh_thread(|| {
        let a = SmallMidArena::new();
        let blocks: Vec<_> = (0..100usize)
            .map(|i| {
                let lay = l(8 + i * 9, 8);
                (a.allocate(lay).unwrap(), lay)
            })
            .collect();
        assert_eq!(a.audit().mixed_slabs, 1);
        a.flush_thread_cache();
        smallmid::test_hooks::cacheless(|| {
            for (p, lay) in blocks {
                // SAFETY: allocated above with `lay`.
                unsafe { a.deallocate(p.cast(), lay) };
            }
        });
        let au = a.audit();
        assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
    });
}

/// PASSES. Grow/shrink in place within a class keeps a carved block, and
/// its later free (with the new layout) returns exactly its class size.
#[test]
fn realloc_in_place_of_carved_blocks() {
    let _g = serial();
    on_fresh_thread(|| {
        let a = SmallMidArena::new();
        let mut v = Vec::new();
        for i in 0..500usize {
            let size = 1 + (i * 7) % 1024;
            let align = 1 << (i % 11);
            let old = l(size, align);
            let p = a.allocate(old).unwrap();
            let new = l(p.len(), align);
            // SAFETY: `p` allocated with `old`; `new` is larger or equal.
            let q = unsafe { a.grow(p.cast(), old, new) }.unwrap();
            assert_eq!(
                q.cast::<u8>(),
                p.cast::<u8>(),
                "grow within the class moved"
            );
            let small = l(size.div_ceil(2).max(1), align);
            // SAFETY: `q` allocated with `new`.
            let r = unsafe { a.shrink(q.cast(), new, small) }.unwrap();
            v.push((r.cast::<u8>(), small));
        }
        for (p, lay) in v {
            // SAFETY: allocated with `lay` (after the shrink).
            unsafe { a.deallocate(p, lay) };
        }
        a.flush_thread_cache();
        let au = a.audit();
        assert_eq!((au.blocks_out, au.mixed_slabs), (0, 0), "{au:?}");
    });
}

/// PASSES. A clean rewind (one cache, nothing returned) reuses the mixed
/// range from its start; after cross-thread frees (dirty) the full reset
/// still leaves a consistent arena and no slab leaks over many cycles.
#[test]
fn rewind_and_full_reset_cycles_do_not_leak() {
    let _g = serial();
    on_fresh_thread(|| {
        let mut a = SmallMidArena::new();
        let mut held = 0;
        for round in 0..200usize {
            let ps: Vec<_> = (0..200usize)
                .map(|i| {
                    let lay = l(8 + (i * 17 + round) % 1016, 8);
                    (a.allocate(lay).unwrap().cast::<u8>().as_ptr() as usize, lay)
                })
                .collect();
            if round % 3 == 0 {
                let ar = &a;
                std::thread::scope(|s| {
                    s.spawn(move || {
                        for &(p, lay) in &ps[..100] {
                            // SAFETY: allocated above with `lay`.
                            unsafe { ar.deallocate(NonNull::new(p as *mut u8).unwrap(), lay) };
                        }
                    });
                });
            }
            a.reset();
            let au = a.audit();
            assert!(au.mixed_slabs <= 1, "round {round}: {au:?}");
            if round == 0 {
                held = a.allocated_bytes();
            }
            assert_eq!(a.allocated_bytes(), held, "round {round}: {au:?}");
        }
    });
}
